//! A small HTTP client for the hub's API (`docs/api.md`), shared by the device agent, the keeper and
//! applications, so that all three read the hub's refusals and relay its mailboxes the same way. It speaks HTTPS
//! and verifies the hub as [`TlsTrust`] says; plain HTTP only to the loopback interface ([`tls::check_url`]).

pub mod tls;

mod control;
mod ties;

use std::time::Duration;

use custos_proto::DeviceId;

pub use control::{Delivery, Queued};
pub use ties::{KeyAnswer, PeerStatus, WaitingPackage};
pub use tls::{Fingerprint, TlsTrust};

/// Why a call to the hub failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The hub could not be reached (or the connection broke); the call may be retried.
    #[error("hub unreachable: {0}")]
    Unreachable(String),
    /// The hub answered with an error.
    #[error("hub refused ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The hub's error code (`not_found`, `not_answered`, …; see `docs/api.md`), empty if it sent none.
        code: String,
        /// The hub's `message`, or the body as text.
        message: String,
    },
    /// The TLS settings could not be used (an unreadable CA file, no system roots, two kinds of trust at once), or
    /// the server's certificate is not trusted by them: trying again will not help.
    #[error("TLS: {0}")]
    Tls(String),
    /// The URL would send requests in the clear to another machine (or is not an HTTP URL at all).
    #[error("{0}")]
    Insecure(String),
}

/// The side of a pairing a mailbox delivers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Messages for the device (from the keeper).
    ToDevice,
    /// Messages for the keeper (from the device).
    ToKeeper,
}

impl Direction {
    fn path(self) -> &'static str {
        match self {
            Self::ToDevice => "to-device",
            Self::ToKeeper => "to-keeper",
        }
    }
}

/// A hub's base URL and an HTTP client.
#[derive(Clone, Debug)]
pub struct HubClient {
    base: String,
    http: reqwest::Client,
}

impl HubClient {
    /// A client for the hub at `base` (e.g. `https://hub.example:7180`, or `http://127.0.0.1:7180` on this
    /// machine), verifying its certificate as `trust` says; each call times out after `timeout` on top of any
    /// long-poll wait it asks for.
    pub fn new(base: &str, timeout: Duration, trust: &TlsTrust) -> Result<Self, ClientError> {
        tls::check_url(base)?;
        let http = tls::http_client(
            reqwest::Client::builder().timeout(timeout + Duration::from_secs(custos_max_wait())),
            trust,
        )?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// The hub's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn finish(resp: reqwest::Response) -> Result<Vec<u8>, ClientError> {
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(unreachable)?;
        if (200..300).contains(&status) {
            Ok(body.to_vec())
        } else {
            Err(refusal(status, &body))
        }
    }

    /// `GET {base}{path}`, with optional `Authorization`.
    pub async fn get(&self, path: &str, auth: Option<&str>) -> Result<Vec<u8>, ClientError> {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        Self::finish(req.send().await.map_err(unreachable)?).await
    }

    /// `POST {base}{path}` with a binary body.
    pub async fn post(&self, path: &str, body: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        self.send_binary(reqwest::Method::POST, path, body).await
    }

    /// `PUT {base}{path}` with a binary body.
    pub async fn put(&self, path: &str, body: Vec<u8>) -> Result<Vec<u8>, ClientError> {
        self.send_binary(reqwest::Method::PUT, path, body).await
    }

    async fn send_binary(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, ClientError> {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
            .await
            .map_err(unreachable)?;
        Self::finish(resp).await
    }

    /// Relays one pairing message for `device` in `direction`; returns its mailbox position.
    pub async fn relay_send(
        &self,
        device: DeviceId,
        direction: Direction,
        body: &[u8],
    ) -> Result<i64, ClientError> {
        let answer = self
            .post(
                &format!("/v1/pairing/{device}/{}", direction.path()),
                body.to_vec(),
            )
            .await?;
        json(&answer)?["seq"]
            .as_i64()
            .ok_or_else(|| ClientError::Unreachable("the hub's answer has no seq".into()))
    }

    /// The pairing messages for `device` in `direction` after position `after`, waiting up to `wait` for one.
    /// `auth` is the `Authorization` value, if any: a device reading its `to-device` mailbox sends its pairing-wait
    /// token (`Custos-Device <hex>`, docs/api.md), which opens its pairing window at the hub.
    pub async fn relay_recv(
        &self,
        device: DeviceId,
        direction: Direction,
        after: i64,
        wait: Duration,
        auth: Option<&str>,
    ) -> Result<Vec<(i64, Vec<u8>)>, ClientError> {
        let answer = self
            .get(
                &format!(
                    "/v1/pairing/{device}/{}?after={after}&wait={}",
                    direction.path(),
                    // Rounded up: a caller with less than a second left would otherwise ask again and again
                    // with `wait=0`, a tight loop the hub's per-address rate limit refuses.
                    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).min(custos_max_wait())
                ),
                auth,
            )
            .await?;
        let mut out = Vec::new();
        for m in json(&answer)?["messages"].as_array().into_iter().flatten() {
            if let (Some(seq), Some(body)) = (
                m["seq"].as_i64(),
                m["body"].as_str().and_then(|h| hex::decode(h).ok()),
            ) {
                out.push((seq, body));
            }
        }
        Ok(out)
    }
}

/// A session at the hub, as `POST /v1/sessions` returns it.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken {
    /// The bearer token (64 hex digits).
    pub token: String,
    /// When the session ends unless used (Unix seconds; sliding).
    pub expires: i64,
}

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionToken")
            .field("expires", &self.expires)
            .finish_non_exhaustive()
    }
}

/// Account calls (docs/api.md, "Accounts"). Passwords and tokens go only in request bodies and headers.
impl HubClient {
    async fn call_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ClientError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let answer = Self::finish(req.send().await.map_err(unreachable)?).await?;
        if answer.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        json(&answer)
    }

    /// `POST /v1/accounts`: creates an account; returns its normalised name.
    pub async fn register(&self, name: &str, password: &str) -> Result<String, ClientError> {
        let v = self
            .call_json(
                reqwest::Method::POST,
                "/v1/accounts",
                None,
                Some(serde_json::json!({"name": name, "password": password})),
            )
            .await?;
        Ok(v["name"].as_str().unwrap_or(name).to_string())
    }

    /// `POST /v1/sessions`: logs in.
    pub async fn login(&self, name: &str, password: &str) -> Result<SessionToken, ClientError> {
        let v = self
            .call_json(
                reqwest::Method::POST,
                "/v1/sessions",
                None,
                Some(serde_json::json!({"name": name, "password": password})),
            )
            .await?;
        match (v["token"].as_str(), v["expires"].as_i64()) {
            (Some(token), Some(expires)) => Ok(SessionToken {
                token: token.to_string(),
                expires,
            }),
            _ => Err(ClientError::Unreachable(
                "the hub's answer has no token".into(),
            )),
        }
    }

    /// `DELETE /v1/sessions/current`: ends the session.
    pub async fn logout(&self, token: &str) -> Result<(), ClientError> {
        self.call_json(
            reqwest::Method::DELETE,
            "/v1/sessions/current",
            Some(token),
            None,
        )
        .await
        .map(|_| ())
    }

    /// `PUT /v1/accounts/me/password`: changes the password; returns how many other sessions ended.
    pub async fn change_password(
        &self,
        token: &str,
        old: &str,
        new: &str,
    ) -> Result<u64, ClientError> {
        let v = self
            .call_json(
                reqwest::Method::PUT,
                "/v1/accounts/me/password",
                Some(token),
                Some(serde_json::json!({"old": old, "new": new})),
            )
            .await?;
        Ok(v["sessions_ended"].as_u64().unwrap_or(0))
    }

    /// `GET /v1/accounts/me`: `{name, created_at, owned, shared}`.
    pub async fn whoami(&self, token: &str) -> Result<serde_json::Value, ClientError> {
        self.call_json(reqwest::Method::GET, "/v1/accounts/me", Some(token), None)
            .await
    }
}

/// A transport failure, with its causes (a refused certificate shows only there).
fn unreachable(e: reqwest::Error) -> ClientError {
    if tls::is_refused_certificate(&e) {
        ClientError::Tls(error_text(&e))
    } else {
        ClientError::Unreachable(error_text(&e))
    }
}

/// An error and its causes on one line, `outer: inner: …`: reqwest says why a TLS handshake failed only in the
/// causes.
pub fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The longest long-poll the hub grants, seconds.
fn custos_max_wait() -> u64 {
    30
}

fn json(body: &[u8]) -> Result<serde_json::Value, ClientError> {
    serde_json::from_slice(body)
        .map_err(|e| ClientError::Unreachable(format!("the hub's answer is not JSON: {e}")))
}

/// The hub's message in an error body: its JSON `message`, or the body as text.
pub fn hub_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// A hub refusal from its status and body.
pub fn refusal(status: u16, body: &[u8]) -> ClientError {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    ClientError::Refused {
        status,
        code,
        message: hub_message(body),
    }
}
