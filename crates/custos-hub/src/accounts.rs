//! User accounts at the hub: registration, password login into bearer sessions (also as a cookie), logout,
//! password change, and the [`Account`] extractor later handlers use to know who is calling. Also the operator
//! credential ([`Operator`]) that guards the hub's admin reads.
//!
//! Passwords are hashed with Argon2id on the blocking pool, within the hub's CPU turns ([`crate::CPU_TURNS`]), so
//! a login flood waits for turns (or gets `503 busy`) instead of starving other work. Only hashes reach the store:
//! the Argon2id PHC string of each password and the SHA-256 of each session token. This module must never log a
//! password or a token; [`Password`] prints as `<redacted>`.
//!
//! Login throttling (docs/api.md, "Login throttling"): per client address, at most [`LoginRate`] attempts; per
//! account, after [`FREE_FAILURES`] consecutive failures each further attempt waits [`LoginRate::base_delay`]
//! doubled per failure (capped at [`MAX_DELAY`]) after the last failure, counted separately for the address of the
//! account's last successful login, so that a guesser elsewhere cannot lock the user out.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use custos_store::{Session, Store, StoreError};
use rand_core::{OsRng, RngCore};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{ApiError, Hub};

/// How long a session lasts after its last use, seconds (30 days, sliding).
pub const SESSION_LIFETIME: i64 = 30 * 86_400;
/// A session's end is moved forward at most this often, seconds: one store write per session per minute.
pub const SESSION_TOUCH: i64 = 60;
/// The shortest password, in characters (Unicode scalar values).
pub const MIN_PASSWORD_CHARS: usize = 10;
/// The longest password, bytes.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Consecutive failed logins per account (and per counter, see the module doc) before each further attempt has
/// to wait.
pub const FREE_FAILURES: u32 = 5;
/// The longest wait between attempts on one account, seconds.
pub const MAX_DELAY: i64 = 15 * 60;
/// The session cookie's name.
pub const COOKIE: &str = "custos_session";

/// Argon2id cost of password hashes. The default (m = 19 MiB, t = 10, p = 1) costs about 57 ms of CPU on the
/// reference machine (docs/operations.md); lower it only for tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordCost {
    /// Memory, KiB.
    pub memory_kib: u32,
    /// Passes.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for PasswordCost {
    fn default() -> Self {
        Self {
            memory_kib: 19_456,
            iterations: 10,
            parallelism: 1,
        }
    }
}

impl PasswordCost {
    fn argon2(self) -> Result<Argon2<'static>, ApiError> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|e| ApiError::Internal(format!("Argon2 parameters: {e}")))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }

    /// Hashes `password` at this cost with a fresh salt, on the calling thread: the PHC string the hub stores.
    /// Blocking (tens of milliseconds at the default cost); the hub calls it off its async workers. Public for
    /// benchmarks that measure what one login costs.
    pub fn hash(self, password: &[u8]) -> Result<String, ApiError> {
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt)
            .map_err(|e| ApiError::Internal(format!("password salt: {e}")))?;
        self.argon2()?
            .hash_password(password, &salt)
            .map(|h| h.to_string())
            .map_err(|e| ApiError::Internal(format!("hashing a password: {e}")))
    }
}

/// Login attempts allowed per client address, and the base of the per-account delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginRate {
    /// Attempts per minute per client address, on average (0: no per-address limit).
    pub per_minute: u32,
    /// Attempts allowed at once.
    pub burst: u32,
    /// The wait after the first failure past [`FREE_FAILURES`], seconds; doubled per further failure.
    pub base_delay: i64,
}

impl Default for LoginRate {
    fn default() -> Self {
        Self {
            per_minute: 10,
            burst: 10,
            base_delay: 1,
        }
    }
}

pub(crate) type LoginLimiter = governor::DefaultKeyedRateLimiter<IpAddr>;

pub(crate) fn login_limiter(rate: LoginRate) -> Option<LoginLimiter> {
    let per_minute = NonZeroU32::new(rate.per_minute)?;
    let burst = NonZeroU32::new(rate.burst).unwrap_or(per_minute);
    Some(governor::RateLimiter::keyed(
        governor::Quota::per_minute(per_minute).allow_burst(burst),
    ))
}

/// A password from a request body: zeroed on drop, never printed.
pub struct Password(Zeroizing<String>);

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Self(Zeroizing::new(s)))
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Password {
    fn check_new(&self) -> Result<(), ApiError> {
        if self.0.len() > MAX_PASSWORD_BYTES {
            return Err(ApiError::BadRequest(format!(
                "a password is at most {MAX_PASSWORD_BYTES} bytes"
            )));
        }
        if self.0.chars().count() < MIN_PASSWORD_CHARS {
            return Err(ApiError::BadRequest(format!(
                "a password is at least {MIN_PASSWORD_CHARS} characters"
            )));
        }
        Ok(())
    }
}

/// Normalises an account name: ASCII letters are lowered; the result must be 3 to 64 of `a-z 0-9 . _ -`,
/// starting with a letter or digit. Only ASCII, so that no two names differ by case folding or look-alike letters.
pub fn normalise_name(name: &str) -> Result<String, ApiError> {
    let lower = name.to_ascii_lowercase();
    let ok = (3..=64).contains(&lower.len())
        && lower.starts_with(|c: char| c.is_ascii_alphanumeric())
        && lower
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(lower)
    } else {
        Err(ApiError::BadRequest(
            "an account name is 3 to 64 of a-z, 0-9, '.', '_', '-', starting with a letter or digit".into(),
        ))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Hashes `password` with a fresh salt, on the blocking pool within the CPU turns.
async fn hash_password<S: Store>(hub: &Hub<S>, password: Password) -> Result<String, ApiError> {
    let cost = hub.password_cost;
    hub.off_workers(move || cost.hash(password.0.as_bytes()))
        .await?
}

/// Whether `password` matches `phc` (or, with `None`, checks it against a dummy hash of the same cost and says
/// no: an unknown account takes as long as a known one).
async fn verify_password<S: Store>(
    hub: &Hub<S>,
    password: Password,
    phc: Option<String>,
) -> Result<bool, ApiError> {
    let cost = hub.password_cost;
    let argon2 = cost.argon2()?;
    let known = phc.is_some();
    let phc = match phc {
        Some(p) => p,
        None => hub.dummy_hash().await?,
    };
    let ok = hub
        .off_workers(move || {
            let parsed = PasswordHash::new(&phc)
                .map_err(|e| ApiError::Internal(format!("stored password hash: {e}")))?;
            Ok::<_, ApiError>(
                argon2
                    .verify_password(password.0.as_bytes(), &parsed)
                    .is_ok(),
            )
        })
        .await??;
    Ok(ok && known)
}

impl<S: Store> Hub<S> {
    /// A hash of a random password at this hub's cost, made once: what an unknown account's login is checked
    /// against.
    async fn dummy_hash(&self) -> Result<String, ApiError> {
        if let Some(h) = self.dummy.get() {
            return Ok(h.clone());
        }
        let mut random = [0u8; 24];
        OsRng.fill_bytes(&mut random);
        let h = hash_password(self, Password(Zeroizing::new(hex::encode(random)))).await?;
        Ok(self.dummy.get_or_init(|| h).clone())
    }

    /// Sets the operator token: admin endpoints then take `Authorization: Bearer <token>`. Without one they
    /// refuse everyone. Only its SHA-256 is kept; a second call changes nothing.
    pub fn set_operator_token(&self, token: &str) {
        let _ = self.operator.set(sha256(token.trim().as_bytes()));
    }
}

/// The client address a request came from: the one the rate limits saw (behind a trusted proxy, the last
/// `X-Forwarded-For` entry), else the peer's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientAddr(pub IpAddr);

fn client_addr(parts_ext: &axum::http::Extensions) -> Option<IpAddr> {
    parts_ext.get::<ClientAddr>().map(|c| c.0).or_else(|| {
        parts_ext
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| crate::serve::limits::client_key(c.0.ip()))
    })
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

pub(crate) fn cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.trim())
}

/// A session token as sent: 64 hex digits.
fn token_hash(token: &str) -> Option<[u8; 32]> {
    let mut raw = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(token, raw.as_mut()).ok()?;
    Some(sha256(raw.as_ref()))
}

/// The account behind a request's session: `Authorization: Bearer <token>` or the `custos_session` cookie.
/// Refused with `401 unauthorized` otherwise.
#[derive(Clone, Debug)]
pub struct Account {
    /// The account's id.
    pub id: i64,
    /// Its normalised name.
    pub name: String,
    /// The SHA-256 of the session token used.
    pub session: [u8; 32],
}

impl<S: Store> FromRequestParts<Arc<Hub<S>>> for Account {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        hub: &Arc<Hub<S>>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(token) = bearer(&parts.headers) {
            return session_account(hub, token).await;
        }
        let token = cookie(&parts.headers).ok_or_else(|| {
            ApiError::Unauthorized(
                "log in first: send `Authorization: Bearer <session token>` or the session cookie"
                    .into(),
            )
        })?;
        // A cookie goes along with any request the browser makes, also one another site starts: a write
        // authenticated by it must come from the hub's own page.
        if !parts.method.is_safe() && !same_origin(&parts.headers) {
            return Err(ApiError::Forbidden("cross-site request refused".into()));
        }
        session_account(hub, token).await
    }
}

/// Whether a request comes from a page of this hub: its `Origin` names the host and port of its `Host` header
/// (over `https` or `http`), or, without `Origin`, the browser says `Sec-Fetch-Site: same-origin`. A request
/// with neither is refused: every browser that sends cookies sends one of the two on a write.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let value = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    match (value("origin"), value("host")) {
        (Some(origin), Some(host)) => {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            rest.is_some_and(|r| r.eq_ignore_ascii_case(host))
        }
        (Some(_), None) => false,
        (None, _) => value("sec-fetch-site") == Some("same-origin"),
    }
}

/// The account whose live session `token` is (moving the session's end forward now and then); `401` otherwise.
pub(crate) async fn session_account<S: Store>(
    hub: &Hub<S>,
    token: &str,
) -> Result<Account, ApiError> {
    let refuse = |why: &str| ApiError::Unauthorized(why.into());
    let hash = token_hash(token).ok_or_else(|| refuse("malformed session token"))?;
    let now = hub.now();
    let session = hub
        .store
        .session(hash, now)
        .await?
        .ok_or_else(|| refuse("the session has ended; log in again"))?;
    if now - session.last_used_at >= SESSION_TOUCH
        && !hub
            .store
            .touch_session(hash, now, now + SESSION_LIFETIME)
            .await?
    {
        return Err(refuse("the session has ended; log in again"));
    }
    let account = hub
        .store
        .account(session.account)
        .await?
        .ok_or_else(|| refuse("the account is gone"))?;
    Ok(Account {
        id: account.id,
        name: account.name,
        session: hash,
    })
}

/// Whether `token` is the hub's operator token (compared in constant time; never, if the hub has none).
pub(crate) fn is_operator_token<S: Store>(hub: &Hub<S>, token: &str) -> bool {
    hub.operator
        .get()
        .is_some_and(|e| bool::from(e.ct_eq(&sha256(token.as_bytes()))))
}

/// The hub's operator: `Authorization: Bearer <operator token>` (docs/operations.md, "The operator token").
#[derive(Clone, Copy, Debug)]
pub struct Operator;

impl<S: Store> FromRequestParts<Arc<Hub<S>>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        hub: &Arc<Hub<S>>,
    ) -> Result<Self, Self::Rejection> {
        match bearer(&parts.headers) {
            Some(t) if is_operator_token(hub, t) => Ok(Self),
            _ => Err(ApiError::Unauthorized(
                "this endpoint is for the hub's operator: send `Authorization: Bearer <operator token>`".into(),
            )),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct Credentials {
    name: String,
    password: Password,
}

/// `POST /v1/accounts` `{name, password}` → `201 {name}`.
pub(crate) async fn register<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    body: Result<Json<Credentials>, axum::extract::rejection::JsonRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Json(c) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let name = normalise_name(&c.name)?;
    c.password.check_new()?;
    if hub.store.account_by_name(&name).await?.is_some() {
        return Err(ApiError::Conflict("the account name is taken".into()));
    }
    let hash = hash_password(&hub, c.password).await?;
    match hub.store.create_account(&name, &hash, hub.now()).await {
        Ok(_) => {}
        Err(StoreError::NameTaken) => {
            return Err(ApiError::Conflict("the account name is taken".into()));
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(account = %name, "account created");
    Ok((StatusCode::CREATED, Json(json!({"name": name}))))
}

/// The wait before the next attempt after `failures` consecutive failures, seconds (0: none).
pub fn login_delay(failures: u32, base: i64) -> i64 {
    if failures < FREE_FAILURES {
        return 0;
    }
    let doublings = (failures - FREE_FAILURES).min(30);
    base.saturating_mul(1 << doublings).min(MAX_DELAY)
}

fn session_cookie(token: &str, max_age: i64) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age}"
    ))
    .map_err(|e| ApiError::Internal(format!("cookie: {e}")))
}

/// `POST /v1/sessions` `{name, password}` → `201 {token, expires}` and the session cookie.
pub(crate) async fn login<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    parts: axum::http::Extensions,
    body: Result<Json<Credentials>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(c) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let address = client_addr(&parts);
    if let (Some(limiter), Some(ip)) = (&hub.login_limiter, address)
        && let Err(not_until) = limiter.check_key(&ip)
    {
        use governor::clock::Clock;
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        return Err(ApiError::RateLimited(
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        ));
    }
    let address = address.map_or_else(|| "unknown".to_string(), |a| a.to_string());
    let wrong = || ApiError::Unauthorized("wrong name or password".into());
    if c.password.0.len() > MAX_PASSWORD_BYTES {
        return Err(wrong());
    }
    // A name that cannot be an account is checked like an unknown one.
    let account = match normalise_name(&c.name) {
        Ok(name) => hub.store.account_by_name(&name).await?,
        Err(_) => None,
    };
    let now = hub.now();
    let Some(account) = account else {
        verify_password(&hub, c.password, None).await?;
        return Err(wrong());
    };
    let t = &account.throttle;
    let home = t.home.as_deref() == Some(address.as_str());
    let (failures, last) = if home {
        (t.home_failures, t.home_last_failure_at)
    } else {
        (t.failures, t.last_failure_at)
    };
    let wait = last.map_or(0, |at| {
        at + login_delay(failures, hub.login_rate.base_delay) - now
    });
    if wait > 0 {
        tracing::info!(account = %account.name, %address, failures, "login refused: throttled");
        return Err(ApiError::RateLimited(u64::try_from(wait).unwrap_or(1)));
    }
    if !verify_password(&hub, c.password, Some(account.password_hash.clone())).await? {
        hub.store.login_failed(account.id, home, now).await?;
        tracing::info!(account = %account.name, %address, home, "login failed");
        return Err(wrong());
    }
    hub.store.login_succeeded(account.id, &address).await?;
    let mut raw = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(raw.as_mut());
    let token = Zeroizing::new(hex::encode(raw.as_ref()));
    let expires = now + SESSION_LIFETIME;
    hub.store
        .put_session(&Session {
            token_hash: sha256(raw.as_ref()),
            account: account.id,
            created_at: now,
            expires_at: expires,
            last_used_at: now,
        })
        .await?;
    tracing::info!(account = %account.name, %address, "logged in");
    let mut response = (
        StatusCode::CREATED,
        Json(json!({"token": token.as_str(), "expires": expires, "name": account.name})),
    )
        .into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&token, SESSION_LIFETIME)?,
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `DELETE /v1/sessions/current` → 204; the cookie is cleared.
pub(crate) async fn logout<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    account: Account,
) -> Result<Response, ApiError> {
    hub.store.delete_session(account.session).await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", 0)?);
    Ok(response)
}

#[derive(Deserialize)]
pub(crate) struct PasswordChange {
    old: Password,
    new: Password,
}

/// `PUT /v1/accounts/me/password` `{old, new}` → `200 {sessions_ended}`; every other session ends.
pub(crate) async fn change_password<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    account: Account,
    body: Result<Json<PasswordChange>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(c) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    c.new.check_new()?;
    let stored = hub
        .store
        .account(account.id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the account is gone".into()))?;
    if c.old.0.len() > MAX_PASSWORD_BYTES
        || !verify_password(&hub, c.old, Some(stored.password_hash)).await?
    {
        return Err(ApiError::Forbidden("the old password is wrong".into()));
    }
    let hash = hash_password(&hub, c.new).await?;
    let ended = hub
        .store
        .set_password(account.id, &hash, Some(account.session))
        .await?;
    tracing::info!(account = %account.name, sessions_ended = ended, "password changed");
    Ok(Json(json!({"sessions_ended": ended})))
}

/// `GET /v1/accounts/me` → `{name, created_at, owned, shared}`.
pub(crate) async fn me<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    account: Account,
) -> Result<Json<serde_json::Value>, ApiError> {
    let stored = hub
        .store
        .account(account.id)
        .await?
        .ok_or_else(|| ApiError::Unauthorized("the account is gone".into()))?;
    let owned: Vec<String> = hub
        .store
        .owned_devices(account.id)
        .await?
        .iter()
        .map(ToString::to_string)
        .collect();
    let shared: Vec<_> = hub
        .store
        .shared_with(account.id)
        .await?
        .iter()
        .map(|(d, r)| json!({"device": d.to_string(), "rights": r.as_str()}))
        .collect();
    Ok(Json(json!({
        "name": stored.name,
        "created_at": stored.created_at,
        "owned": owned,
        "shared": shared,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised() {
        assert_eq!(normalise_name("Alice.B-2").unwrap(), "alice.b-2");
        for bad in ["ab", "-alice", "al ice", "älice", &"a".repeat(65), ""] {
            assert!(normalise_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn delays_double_and_are_capped() {
        assert_eq!(login_delay(4, 1), 0);
        assert_eq!(login_delay(5, 1), 1);
        assert_eq!(login_delay(6, 1), 2);
        assert_eq!(login_delay(14, 1), 512);
        assert_eq!(login_delay(15, 1), MAX_DELAY);
        assert_eq!(login_delay(u32::MAX, 1), MAX_DELAY);
    }

    #[test]
    fn passwords_are_not_printed() {
        let p: Password = serde_json::from_str("\"hunter2hunter2\"").unwrap();
        assert_eq!(format!("{p:?}"), "<redacted>");
    }

    #[test]
    fn cookies_and_bearers_are_found() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=b; custos_session=abc ; c=d"),
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer xyz"),
        );
        assert_eq!(cookie(&h), Some("abc"));
        assert_eq!(bearer(&h), Some("xyz"));
    }
}
