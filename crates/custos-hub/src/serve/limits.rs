//! What the hub allows each client and each kind of request, so that anonymous hostile clients cannot take it
//! down: connection limits (see `serve`), per-client rate limits, load classes with their own concurrency limits,
//! a deadline for request bodies and a budget of request bytes in flight. Every limit, status code and header a
//! client can see is in docs/api.md ("Limits and rate limiting"); the operator's view is in docs/operations.md.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use http_body::{Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ApiError;

/// A rate: `per_second` requests per second on average, up to `burst` at once. A `per_second` of 0 turns the
/// limit off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests per second, on average.
    pub per_second: u32,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

impl Rate {
    /// No limit.
    pub const UNLIMITED: Rate = Rate {
        per_second: 0,
        burst: 0,
    };
}

/// Every limit the hub enforces on its HTTP clients. [`Limits::default`] is meant for production; tests set tiny
/// ones.
#[derive(Clone, Debug)]
pub struct Limits {
    /// A connection must deliver a complete request head within this time after it opens and after each
    /// response, or it is closed: this is both the slow-header (slowloris) timeout and the keep-alive idle
    /// timeout. Default 10 s.
    pub header_timeout: Duration,
    /// A request body must arrive whole within this time of its head; if not, 408 `request_timeout` and the
    /// connection is closed. Default 30 s.
    pub body_timeout: Duration,
    /// The most connections open at once. Lowered at start to stay below the soft file-descriptor limit (which
    /// the hub first raises to the hard limit). Beyond it, new connections wait in the kernel's backlog.
    /// Default 10 000.
    pub max_connections: usize,
    /// The most connections open at once from one client address (one IPv4 address, or one IPv6 /64); more are
    /// closed at once. Trusted proxies are exempt. Default 256.
    pub max_connections_per_client: usize,
    /// Request-body bytes the hub may hold at once, over all requests: each request with a body reserves its
    /// `Content-Length` (or `max_body` when the length is not announced) before it is read, and gets 503 `busy`
    /// if the budget is spent. Default 128 MiB.
    pub body_budget: usize,
    /// The largest request body (what a body without `Content-Length` reserves). Default [`crate::MAX_BODY`].
    pub max_body: usize,
    /// Per client address: the anonymous writes (`POST` of sharing requests, answers, pairing messages, admission
    /// `hello` and `finish`). Default 10/s, bursts of 50.
    pub write_rate: Rate,
    /// Per client address: every other request except device uplinks, which are never limited per address
    /// (many devices share one NAT address; each uplink is authenticated). Default 100/s, bursts of 200.
    pub read_rate: Rate,
    /// Requests in progress at once: device uplinks and admission. Default 512.
    pub ingest_concurrency: usize,
    /// Requests in progress at once: device, record, presence, device-list and hub-key reads. Default 64.
    pub read_concurrency: usize,
    /// Requests in progress at once: sharing requests, answers and pairing messages posted. Default 32.
    pub sharing_concurrency: usize,
    /// Long-polls in progress at once (answers, inboxes, pairing mailboxes). Each one asks the store about four
    /// times a second while it waits. Default 256.
    pub long_poll_concurrency: usize,
    /// Reverse proxies in front of the hub: their connections are exempt from the per-client connection cap,
    /// and the client address of their requests is the last one in `X-Forwarded-For`. Default none.
    pub trusted_proxies: Vec<IpAddr>,
    /// How long a stopping hub waits for the requests in flight (long-polls last up to 30 s). Default 35 s.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            max_connections_per_client: 256,
            body_budget: 128 << 20,
            max_body: crate::MAX_BODY,
            write_rate: Rate {
                per_second: 10,
                burst: 50,
            },
            read_rate: Rate {
                per_second: 100,
                burst: 200,
            },
            ingest_concurrency: 512,
            read_concurrency: 64,
            sharing_concurrency: 32,
            long_poll_concurrency: 256,
            trusted_proxies: Vec::new(),
            shutdown_grace: Duration::from_secs(35),
        }
    }
}

/// File descriptors kept for everything but client connections (the database, MQTT, logs), at most.
const FD_RESERVE: u64 = 256;

impl Limits {
    /// The connection limit under a soft file-descriptor limit of `soft_fds`: `max_connections`, lowered to
    /// leave room for the hub's other files (a quarter of the limit, at most 256).
    pub fn connection_limit(&self, soft_fds: u64) -> usize {
        let room = soft_fds
            .saturating_sub((soft_fds / 4).min(FD_RESERVE))
            .max(1);
        self.max_connections
            .min(usize::try_from(room).unwrap_or(usize::MAX))
            .max(1)
    }
}

/// The soft and hard limits on open files, before and after raising the soft one to the hard one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdLimits {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raises this process's soft limit on open files to its hard limit. `None` where there is no such limit.
pub fn raise_fd_limit() -> Option<FdLimits> {
    #[cfg(unix)]
    {
        let (before, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
        if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
            tracing::warn!(%e, "could not raise the open-file limit");
        }
        let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).ok()?;
        Some(FdLimits { before, soft, hard })
    }
    #[cfg(not(unix))]
    None
}

/// The address a limit applies to: an IPv4 address, or the /64 network of an IPv6 address (one host usually
/// has a whole /64).
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(
                u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
            )),
        },
    }
}

/// Open connections per client address, capped.
pub(crate) struct ClientConnections {
    counts: Mutex<HashMap<IpAddr, usize>>,
    cap: usize,
    exempt: Vec<IpAddr>,
}

/// One open connection of a client; dropping it frees its slot.
pub(crate) struct ClientSlot {
    table: Arc<ClientConnections>,
    key: Option<IpAddr>,
}

impl ClientConnections {
    pub(crate) fn new(limits: &Limits) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new(HashMap::new()),
            cap: limits.max_connections_per_client.max(1),
            exempt: limits.trusted_proxies.clone(),
        })
    }

    /// A slot for a new connection from `ip`, or `None` if that client is at its cap.
    pub(crate) fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        if self.exempt.contains(&ip) {
            return Some(ClientSlot {
                table: self.clone(),
                key: None,
            });
        }
        let key = client_key(ip);
        let mut counts = self.counts.lock().ok()?;
        let n = counts.entry(key).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            table: self.clone(),
            key: Some(key),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        if let Ok(mut counts) = self.table.counts.lock()
            && let Some(n) = counts.get_mut(&key)
        {
            *n -= 1;
            if *n == 0 {
                counts.remove(&key);
            }
        }
    }
}

/// The kinds of request that have their own concurrency limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Ingest,
    Read,
    Sharing,
    LongPoll,
    /// Cheap requests without a store query (`/healthz`, `/v1/hub`, unknown paths): no concurrency limit.
    Other,
}

/// Which per-client rate applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RateKind {
    None,
    Write,
    Read,
}

fn classify(method: &Method, path: &str) -> (Class, RateKind) {
    let get = *method == Method::GET || *method == Method::HEAD;
    let post = *method == Method::POST;
    let Some(rest) = path.strip_prefix("/v1/") else {
        return (Class::Other, RateKind::Read);
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        ["devices", _, "uplinks"] if post => (Class::Ingest, RateKind::None),
        ["admission", "hello" | "finish"] if post => (Class::Ingest, RateKind::Write),
        ["requests"] | ["answers"] | ["pairing", _, _] if post => (Class::Sharing, RateKind::Write),
        // Account writes hash a password (within the hub's CPU turns); they share the sharing class's slots.
        ["accounts"] | ["sessions"] if post => (Class::Sharing, RateKind::Write),
        ["accounts", "me", "password"] if *method == Method::PUT => {
            (Class::Sharing, RateKind::Write)
        }
        // A device's answer is authenticated by its device token; many devices may share one NAT address.
        ["devices", _, "control", _, "answer"] if post => (Class::Ingest, RateKind::None),
        // Owner control: writes of a logged-in account.
        ["devices", _, "claim" | "transfer" | "control" | "shares"] if post => {
            (Class::Sharing, RateKind::Write)
        }
        ["devices", _, "shares", _] if *method == Method::DELETE => {
            (Class::Sharing, RateKind::Write)
        }
        ["requests", _, "answer"]
        | ["owners", _, "inbox"]
        | ["pairing", _, _]
        | ["devices", _, "control"]
        | ["devices", _, "control", _]
            if get =>
        {
            (Class::LongPoll, RateKind::Read)
        }
        ["devices"]
        | [
            "devices",
            _,
            "records" | "hub-key" | "gaps" | "shares" | "state",
        ]
        | ["presence"]
        | ["device-list"]
        | ["accounts", "me"]
            if get =>
        {
            (Class::Read, RateKind::Read)
        }
        _ => (Class::Other, RateKind::Read),
    }
}

type KeyedLimiter = RateLimiter<
    IpAddr,
    DefaultKeyedStateStore<IpAddr>,
    DefaultClock,
    governor::middleware::NoOpMiddleware<<DefaultClock as Clock>::Instant>,
>;

fn limiter(rate: Rate, clock: &DefaultClock) -> Option<KeyedLimiter> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst).unwrap_or(per_second);
    Some(RateLimiter::dashmap_with_clock(
        Quota::per_second(per_second).allow_burst(burst),
        clock.clone(),
    ))
}

/// The shared state of [`guard`]: rate limiters, class semaphores and the body budget.
pub(crate) struct Guard {
    clock: DefaultClock,
    writes: Option<KeyedLimiter>,
    reads: Option<KeyedLimiter>,
    ingest: Arc<Semaphore>,
    read: Arc<Semaphore>,
    sharing: Arc<Semaphore>,
    long_poll: Arc<Semaphore>,
    body_budget: Arc<Semaphore>,
    max_body: usize,
    body_timeout: Duration,
    trusted_proxies: Vec<IpAddr>,
}

impl Guard {
    pub(crate) fn new(limits: &Limits) -> Arc<Self> {
        let clock = DefaultClock::default();
        let max_body = limits.max_body.clamp(1, u32::MAX as usize);
        let sem = |n: usize| Arc::new(Semaphore::new(n.clamp(1, Semaphore::MAX_PERMITS)));
        Arc::new(Self {
            writes: limiter(limits.write_rate, &clock),
            reads: limiter(limits.read_rate, &clock),
            clock,
            ingest: sem(limits.ingest_concurrency),
            read: sem(limits.read_concurrency),
            sharing: sem(limits.sharing_concurrency),
            long_poll: sem(limits.long_poll_concurrency),
            // Always room for one largest body, or such a body could never be taken in.
            body_budget: sem(limits.body_budget.max(max_body)),
            max_body,
            body_timeout: limits.body_timeout,
            trusted_proxies: limits.trusted_proxies.clone(),
        })
    }

    /// Forgets the rate-limit state of clients that have been quiet long enough to be back to a full burst, so
    /// that the tables hold only recent clients. Run now and then.
    pub(crate) fn forget_quiet_clients(&self) {
        for limiter in [&self.writes, &self.reads].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// The address the limits apply to: the peer's, or for a trusted proxy the last `X-Forwarded-For` entry.
    fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Option<IpAddr> {
        let peer = peer?;
        if !self.trusted_proxies.contains(&peer) {
            return Some(client_key(peer));
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .next_back();
        Some(client_key(forwarded.unwrap_or(peer)))
    }

    fn class_semaphore(&self, class: Class) -> Option<&Arc<Semaphore>> {
        match class {
            Class::Ingest => Some(&self.ingest),
            Class::Read => Some(&self.read),
            Class::Sharing => Some(&self.sharing),
            Class::LongPoll => Some(&self.long_poll),
            Class::Other => None,
        }
    }
}

/// Refuses a request before its body is read: when it has one, the connection is closed rather than drained.
fn refuse(error: ApiError, has_body: bool) -> Response {
    let mut response = error.into_response();
    if has_body {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The middleware that applies [`Limits`] to each request, in this order: the client's rate (429
/// `rate_limited`), the class's concurrency (503 `busy`), the body budget (503 `busy`), the body deadline (408
/// `request_timeout`). Refusals come at once: nothing waits in a queue.
pub(crate) async fn guard(
    State(g): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    // Handlers that limit per client (logins) see the address these limits saw.
    if let Some(client) = g.client(peer, request.headers()) {
        request
            .extensions_mut()
            .insert(crate::accounts::ClientAddr(client));
    }
    let (class, rate) = classify(request.method(), request.uri().path());
    let size = http_body::Body::size_hint(request.body()).exact();
    let has_body = size != Some(0);

    let limiter = match rate {
        RateKind::Write => g.writes.as_ref(),
        RateKind::Read => g.reads.as_ref(),
        RateKind::None => None,
    };
    if let (Some(limiter), Some(client)) = (limiter, g.client(peer, request.headers()))
        && let Err(not_until) = limiter.check_key(&client)
    {
        let wait = not_until.wait_time_from(g.clock.now());
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        tracing::debug!(%client, ?class, "rate limited");
        return refuse(ApiError::RateLimited(seconds.max(1)), has_body);
    }

    let _slot: Option<OwnedSemaphorePermit> = match g.class_semaphore(class) {
        None => None,
        Some(s) => match s.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                tracing::debug!(?class, "class at its concurrency limit");
                return refuse(ApiError::Busy, has_body);
            }
        },
    };

    if !has_body {
        return next.run(request).await;
    }
    let reserve = size.map_or(g.max_body, |n| {
        usize::try_from(n).unwrap_or(usize::MAX).min(g.max_body)
    });
    let Ok(_bytes) = g
        .body_budget
        .clone()
        .try_acquire_many_owned(u32::try_from(reserve.max(1)).unwrap_or(u32::MAX))
    else {
        tracing::debug!(reserve, "request-body budget spent");
        return refuse(ApiError::Busy, true);
    };
    let expired = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(DeadlineBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(g.body_timeout)),
            expired: expired.clone(),
        })
    });
    let response = next.run(request).await;
    if expired.load(Ordering::Relaxed) {
        return refuse(ApiError::RequestTimeout, true);
    }
    response
}

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request body deadline passed",
            )))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let c = |m: &Method, p: &str| classify(m, p);
        let (get, post) = (&Method::GET, &Method::POST);
        assert_eq!(
            c(post, "/v1/devices/0011223344556677/uplinks"),
            (Class::Ingest, RateKind::None)
        );
        assert_eq!(
            c(post, "/v1/admission/hello"),
            (Class::Ingest, RateKind::Write)
        );
        assert_eq!(c(post, "/v1/requests"), (Class::Sharing, RateKind::Write));
        assert_eq!(c(post, "/v1/answers"), (Class::Sharing, RateKind::Write));
        assert_eq!(
            c(post, "/v1/pairing/x/to-device"),
            (Class::Sharing, RateKind::Write)
        );
        assert_eq!(
            c(get, "/v1/pairing/x/to-device"),
            (Class::LongPoll, RateKind::Read)
        );
        assert_eq!(
            c(get, "/v1/owners/ab/inbox"),
            (Class::LongPoll, RateKind::Read)
        );
        assert_eq!(
            c(get, "/v1/requests/ab/answer"),
            (Class::LongPoll, RateKind::Read)
        );
        assert_eq!(
            c(get, "/v1/devices/x/records"),
            (Class::Read, RateKind::Read)
        );
        assert_eq!(c(get, "/v1/device-list"), (Class::Read, RateKind::Read));
        assert_eq!(c(get, "/healthz"), (Class::Other, RateKind::Read));
        assert_eq!(c(post, "/v1/devices"), (Class::Other, RateKind::Read));
        assert_eq!(c(post, "/v1/accounts"), (Class::Sharing, RateKind::Write));
        assert_eq!(c(post, "/v1/sessions"), (Class::Sharing, RateKind::Write));
        assert_eq!(
            c(&Method::PUT, "/v1/accounts/me/password"),
            (Class::Sharing, RateKind::Write)
        );
        assert_eq!(c(get, "/v1/accounts/me"), (Class::Read, RateKind::Read));
        let delete = &Method::DELETE;
        assert_eq!(
            c(post, "/v1/devices/d/control/7/answer"),
            (Class::Ingest, RateKind::None)
        );
        for path in ["claim", "transfer", "control", "shares"] {
            let path = format!("/v1/devices/d/{path}");
            assert_eq!(c(post, &path), (Class::Sharing, RateKind::Write));
        }
        assert_eq!(
            c(delete, "/v1/devices/d/shares/bob"),
            (Class::Sharing, RateKind::Write)
        );
        for path in ["control", "control/7"] {
            let path = format!("/v1/devices/d/{path}");
            assert_eq!(c(get, &path), (Class::LongPoll, RateKind::Read));
        }
        for path in ["shares", "state"] {
            let path = format!("/v1/devices/d/{path}");
            assert_eq!(c(get, &path), (Class::Read, RateKind::Read));
        }
    }

    #[test]
    fn client_keys() {
        let k = |s: &str| client_key(s.parse().unwrap()).to_string();
        assert_eq!(k("192.0.2.7"), "192.0.2.7");
        assert_eq!(k("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(k("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
    }

    #[test]
    fn connection_limit_stays_below_the_fd_limit() {
        let l = Limits::default();
        assert_eq!(l.connection_limit(1024), 768);
        assert_eq!(l.connection_limit(1 << 20), 10_000);
        assert_eq!(l.connection_limit(0), 1);
    }
}
