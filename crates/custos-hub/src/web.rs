//! The web dashboard's side of the hub (docs/web.md, docs/api.md "The web dashboard"): the page's static assets,
//! embedded in the binary and built by `web/build.sh`, and `GET /v1/events`, the live list of an account's
//! devices as Server-Sent Events.
//!
//! The hub serves the page but holds none of its keys: every key operation runs in the browser, in the
//! WebAssembly core. What the hub can do to the page (serve altered script) is in docs/threat-model.md.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use custos_store::Store;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::accounts::Account;
use crate::{ApiError, Hub};

/// One embedded file: its name (the path after `/`), content type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:literal) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("../web/", $name)),
        }
    };
}

/// The page's files, as `web/build.sh` writes them into `crates/custos-hub/web/`. Adding a file is one line here.
static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("custos_web.js", "text/javascript; charset=utf-8"),
    asset!("custos_web_bg.wasm", "application/wasm"),
    asset!("icon.svg", "image/svg+xml"),
];

/// The page's Content-Security-Policy: its own scripts only (and compiling its WebAssembly), no inline script or
/// style, requests to this hub only, never framed.
pub const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
                       img-src 'self' data:; connect-src 'self'; manifest-src 'self'; base-uri 'none'; \
                       form-action 'none'; frame-ancestors 'none'";

/// Strong ETags: the SHA-256 of each file, computed once.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| format!("\"{}\"", hex::encode(Sha256::digest(a.body))))
        .collect()
});

/// `GET /` and `GET /{file}`: an embedded asset, or the JSON 404 for anything else.
pub(crate) async fn asset(uri: Uri, headers: HeaderMap) -> Response {
    let name = match uri.path() {
        "/" => "index.html",
        p => p.trim_start_matches('/'),
    };
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return ApiError::NotFound("no such endpoint; see docs/api.md".into()).into_response();
    };
    let a = &ASSETS[i];
    let etag = &ETAGS[i];
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == etag || t.trim() == "*");
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            )],
            a.body,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    // Revalidate every time: a page that changed with the hub must not run against the old WebAssembly.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    if a.name == "index.html" {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    resp
}

/// The most event streams one account may hold open.
pub const STREAMS_PER_ACCOUNT: usize = 8;
/// The most event streams the hub holds open in all.
pub const STREAMS_TOTAL: usize = 4096;
/// How long one stream lasts; the browser's EventSource then reconnects.
pub const STREAM_LIFETIME: Duration = Duration::from_secs(3600);
/// At most this many events a second per stream.
const MIN_GAP: Duration = Duration::from_millis(250);
/// A comment line this often keeps proxies from closing an idle stream.
const PING: Duration = Duration::from_secs(15);

/// The open event streams, per account.
#[derive(Default)]
pub(crate) struct Streams(std::sync::Mutex<HashMap<i64, usize>>);

/// One stream's place in [`Streams`], given back when the stream ends.
struct Slot<S: Store> {
    hub: Arc<Hub<S>>,
    account: i64,
}

impl<S: Store> Drop for Slot<S> {
    fn drop(&mut self) {
        let mut m = self.hub.streams.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.account) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.account);
            }
        }
    }
}

fn take_slot<S: Store>(hub: &Arc<Hub<S>>, account: i64) -> Result<Slot<S>, ApiError> {
    let mut m = hub.streams.0.lock().unwrap_or_else(|e| e.into_inner());
    if m.values().sum::<usize>() >= STREAMS_TOTAL {
        return Err(ApiError::Busy);
    }
    let n = m.entry(account).or_insert(0);
    if *n >= STREAMS_PER_ACCOUNT {
        return Err(ApiError::Quota(format!(
            "this account has {STREAMS_PER_ACCOUNT} event streams open already"
        )));
    }
    *n += 1;
    Ok(Slot {
        hub: hub.clone(),
        account,
    })
}

/// What the account sees of its devices: owned and shared, with presence, state and revocation.
async fn snapshot<S: Store>(hub: &Hub<S>, account: i64) -> Result<serde_json::Value, ApiError> {
    let mut rows: Vec<(custos_proto::DeviceId, &'static str)> = hub
        .store
        .owned_devices(account)
        .await?
        .into_iter()
        .map(|d| (d, "owner"))
        .collect();
    for (d, r) in hub.store.shared_with(account).await? {
        rows.push((d, r.as_str()));
    }
    rows.sort_by_key(|(d, _)| d.0);
    let now = hub.now();
    let mut devices = Vec::with_capacity(rows.len());
    for (d, role) in rows {
        let revoked = hub
            .store
            .device(d)
            .await?
            .is_none_or(|s| s.revoked_at.is_some());
        let last = hub.store.last_seen(d).await?;
        let state = hub.store.device_state(d).await?;
        devices.push(json!({
            "device": d.to_string(),
            "role": role,
            "online": last.is_some_and(|t| now - t < hub.offline_after),
            "last_seen": last,
            "state": state.as_ref().map(|(s, _)| s),
            "state_at": state.as_ref().map(|(_, at)| at),
            "revoked": revoked,
        }));
    }
    Ok(json!({"offline_after": hub.offline_after, "devices": devices}))
}

struct Stream<S: Store> {
    hub: Arc<Hub<S>>,
    account: Account,
    _slot: Slot<S>,
    last: Option<serde_json::Value>,
    started: tokio::time::Instant,
    sent_at: Option<tokio::time::Instant>,
    /// The hub's shutdown: the stream ends when it begins.
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl<S: Store> Stream<S> {
    /// The next event: the snapshot once it differs from the last one sent. `None` ends the stream (its hour is
    /// up, the session ended, or the store failed).
    async fn next(&mut self) -> Option<Event> {
        let every = Duration::from_millis(
            u64::try_from(self.hub.offline_after.max(1) * 500).unwrap_or(5000),
        )
        .clamp(Duration::from_secs(1), Duration::from_secs(5));
        loop {
            if self.started.elapsed() >= STREAM_LIFETIME || *self.stopping.borrow() {
                return None;
            }
            let changed = self.hub.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            // The session may have ended (logout, a new password) since the stream began.
            match self
                .hub
                .store
                .session(self.account.session, self.hub.now())
                .await
            {
                Ok(Some(s)) if s.account == self.account.id => {}
                _ => return None,
            }
            let snap = match snapshot(&self.hub, self.account.id).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%e, "event stream: the store failed");
                    return None;
                }
            };
            if self.last.as_ref() != Some(&snap) {
                if let Some(at) = self.sent_at {
                    tokio::time::sleep_until(at + MIN_GAP).await;
                }
                let mut data = snap.clone();
                data["now"] = json!(self.hub.now());
                self.last = Some(snap);
                self.sent_at = Some(tokio::time::Instant::now());
                return Some(Event::default().event("devices").data(data.to_string()));
            }
            tokio::select! {
                _ = tokio::time::timeout(every, changed) => {}
                _ = self.stopping.wait_for(|s| *s) => {}
            }
        }
    }
}

/// `GET /v1/events`: the account's devices as Server-Sent Events (docs/api.md).
pub(crate) async fn events<S: Store + 'static>(
    State(hub): State<Arc<Hub<S>>>,
    account: Account,
) -> Result<impl IntoResponse, ApiError> {
    let slot = take_slot(&hub, account.id)?;
    let first = Event::default()
        .retry(Duration::from_secs(2))
        .comment("custos events");
    let stream = Stream {
        stopping: hub.stopping.subscribe(),
        hub,
        account,
        _slot: slot,
        last: None,
        started: tokio::time::Instant::now(),
        sent_at: None,
    };
    let head = futures_util::stream::iter([Ok::<_, Infallible>(first)]);
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        s.next().await.map(|e| (Ok::<_, Infallible>(e), s))
    });
    let sse = Sse::new(futures_util::StreamExt::chain(head, body))
        .keep_alive(KeepAlive::new().interval(PING).text("ping"));
    Ok((
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        sse,
    ))
}
