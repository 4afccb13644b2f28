//! Owner control through the hub (docs/api.md, "Control"): claims, transfers, shares, and each device's queue of
//! downlink control messages (commands 0x41, authorized-sender lists 0x45, claim seals 0x47) with the device's
//! answers.
//!
//! The hub carries these messages and can open none of them: it reads only a message's type byte (to check who
//! may post what) and a command's cleartext expiry (to drop it when it expires); the device and the sender
//! authenticate everything else end to end (docs/wire.md §11). What the hub does decide is who may *queue*
//! what — which only bounds the load and the noise a device sees, since a command the device cannot
//! authenticate does nothing — and, from a claim proof under the device's server–device key, which account owns
//! a device. This module must never bind an owner without a claim proof that verifies, and must never tell a
//! stranger whether a device exists beyond what the claim endpoint has to (device ids are not secret).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use custos_proto::control::{ANSWER, CLAIM, CLAIM_LEN, COMMAND, CommandHeader, LIST, LIST_ACK};
use custos_proto::uplink::{
    CLAIM_PROOF, LinkKeys, PAIRING_WAIT_LEN, open_claim_proof, open_pairing_wait,
};
use custos_proto::{DeviceId, RustCrypto, Secret};
use custos_store::{Claim, ControlMessage, NewControl, Rights, Store};
use rand_core::{OsRng, RngCore};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::accounts::{Account, normalise_name};
use crate::extract::{ApiPath, ApiQuery};
use crate::routes::parse_device;
use crate::sharing::{MAX_WAIT, PAIRING_SKEW, wait_for_change};
use crate::{ApiError, Hub};

/// The largest command or claim seal a user may queue, bytes.
pub const MAX_CONTROL: usize = 512;
/// The largest list of authorized senders, bytes: `0x45 ‖ suite ‖ version (8) ‖ nonce (12) ‖ count ‖ 64 × 37 ‖
/// tag (16)`. A list of more than 12 members does not fit in [`MAX_CONTROL`], and the owner must be able to send
/// every list the device takes (docs/wire.md §11), so lists alone get this larger bound.
pub const MAX_LIST: usize = 1 + 1 + 8 + 12 + 1 + custos_proto::control::MAX_MEMBERS * 37 + 16;
/// The largest answer a device may send, bytes.
pub const MAX_ANSWER: usize = 256;
/// The most unanswered, unexpired messages in one device's queue; past that, `429 quota`.
pub const MAX_WAITING: u32 = 64;
/// The most messages one device fetch returns.
pub const MAX_FETCH: u32 = 64;
/// The most open (unexpired) claim tokens of one account, over all devices; past that, `429 quota`.
pub const MAX_OPEN_CLAIMS: u64 = 16;
/// How long a claim token works, seconds.
pub const CLAIM_LIFETIME: i64 = 600;
/// How long a queued list or claim seal waits for its device, seconds (they carry no expiry of their own).
pub const SEAL_LIFETIME: i64 = 600;
/// How far ahead a command's expiry may be, seconds.
pub const MAX_COMMAND_LIFETIME: i64 = 86_400;
/// The most accounts one device may be shared with; past that, `429 quota`.
pub const MAX_SHARES: usize = 64;

/// A control message this hub queued, for its MQTT side to publish on `{prefix}/{device}/control`.
#[derive(Clone, Debug)]
pub struct Downlink {
    /// The device it is for.
    pub device: DeviceId,
    /// Its id in the queue (0 for key deliveries, which have none).
    pub id: i64,
    /// Which topic it goes on.
    pub topic: DownlinkTopic,
    /// The message.
    pub message: Vec<u8>,
}

/// The MQTT topic of a [`Downlink`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownlinkTopic {
    /// `{prefix}/{device}/control`, payload `id (8) ‖ message`.
    Control,
    /// `{prefix}/{device}/keys`, payload a device-to-device key delivery (docs/wire.md §12).
    Keys,
}

/// An account's relation to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Relation {
    Owner,
    Shared(Rights),
    Stranger,
}

/// A device as an account sees it.
struct Access {
    owner: Option<i64>,
    relation: Relation,
    revoked: bool,
}

/// The one refusal for unknown devices and for devices the caller has no relation to: a stranger cannot tell
/// them apart.
fn unknown(device: DeviceId) -> ApiError {
    ApiError::NotFound(format!(
        "device {device} is unknown, or you have no rights on it"
    ))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

async fn access<S: Store>(
    hub: &Hub<S>,
    device: DeviceId,
    account: &Account,
) -> Result<Access, ApiError> {
    let stored = hub
        .store
        .device(device)
        .await?
        .ok_or_else(|| unknown(device))?;
    let owner = hub.store.owner(device).await?;
    let relation = if owner == Some(account.id) {
        Relation::Owner
    } else {
        hub.store
            .shares_of(device)
            .await?
            .iter()
            .find(|(a, _)| *a == account.id)
            .map_or(Relation::Stranger, |(_, r)| Relation::Shared(*r))
    };
    Ok(Access {
        owner,
        relation,
        revoked: stored.revoked_at.is_some(),
    })
}

/// Only the owner: strangers get the same 404 as for an unknown device, shared accounts 403.
fn owner_only(a: &Access, device: DeviceId, what: &str) -> Result<(), ApiError> {
    match a.relation {
        Relation::Owner => Ok(()),
        Relation::Shared(_) => Err(ApiError::Forbidden(format!(
            "only the owner of device {device} may {what}"
        ))),
        Relation::Stranger => Err(unknown(device)),
    }
}

/// Whether `device` was heard within the hub's offline threshold, and when it was last.
async fn presence<S: Store>(
    hub: &Hub<S>,
    device: DeviceId,
) -> Result<(bool, Option<i64>), ApiError> {
    let last = hub.store.last_seen(device).await?;
    let now = hub.now();
    Ok((last.is_some_and(|t| now - t < hub.offline_after), last))
}

/// `POST /v1/devices/{device}/claim` → `201 {token, expires}`: a one-time claim token for an admitted, unowned
/// device; only its SHA-256 is kept.
pub(crate) async fn claim<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    account: Account,
    ApiPath(device): ApiPath<String>,
) -> Result<impl IntoResponse, ApiError> {
    let device = parse_device(&device)?;
    let stored = hub
        .store
        .device(device)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("device {device} is not admitted")))?;
    if stored.revoked_at.is_some() {
        return Err(ApiError::Forbidden(format!("device {device} is revoked")));
    }
    if hub.store.owner(device).await?.is_some() {
        return Err(ApiError::Conflict(format!(
            "device {device} already has an owner; only its owner can transfer it"
        )));
    }
    let now = hub.now();
    if hub.store.open_claims(account.id, None, now).await? >= MAX_OPEN_CLAIMS {
        return Err(ApiError::Quota(format!(
            "this account has {MAX_OPEN_CLAIMS} open claims; finish one or wait until they expire"
        )));
    }
    let mut token = zeroize::Zeroizing::new([0u8; 16]);
    OsRng.fill_bytes(token.as_mut());
    let expires = now + CLAIM_LIFETIME;
    let fresh = hub
        .store
        .put_claim(&Claim {
            token_hash: sha256(token.as_ref()),
            device,
            account: account.id,
            created_at: now,
            expires_at: expires,
        })
        .await?;
    if !fresh {
        // 128 random bits do not collide; a store that says so is broken.
        return Err(ApiError::Internal(
            "a fresh claim token was already stored".into(),
        ));
    }
    tracing::info!(%device, account = %account.name, "claim token issued");
    Ok((
        StatusCode::CREATED,
        Json(json!({"token": hex::encode(token.as_ref()), "expires": expires})),
    ))
}

#[derive(Deserialize)]
pub(crate) struct TransferBody {
    to: String,
}

/// `POST /v1/devices/{device}/transfer {to}` by the owner → `{device, owner}`; the change is logged and every
/// share of the device ends.
pub(crate) async fn transfer<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    account: Account,
    ApiPath(device): ApiPath<String>,
    body: Result<Json<TransferBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let device = parse_device(&device)?;
    let a = access(&hub, device, &account).await?;
    owner_only(&a, device, "transfer it")?;
    let Json(t) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let name = normalise_name(&t.to)?;
    let to = hub
        .store
        .account_by_name(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no account `{name}`")))?;
    if to.id == account.id {
        return Err(ApiError::BadRequest("you own this device already".into()));
    }
    if !hub
        .store
        .set_owner(device, Some(account.id), to.id, hub.now())
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "the owner of device {device} changed meanwhile"
        )));
    }
    tracing::info!(%device, from = %account.name, to = %name, "device transferred");
    Ok(Json(json!({"device": device.to_string(), "owner": name})))
}

/// `POST /v1/devices/{device}/control` (one binary control message) → `201 {id, expires}`.
pub(crate) async fn post<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    account: Account,
    ApiPath(device): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let device = parse_device(&device)?;
    let body = body?;
    let a = access(&hub, device, &account).await?;
    let now = hub.now();
    let kind = *body
        .first()
        .ok_or_else(|| ApiError::BadRequest("an empty control message".into()))?;
    if kind != LIST && body.len() > MAX_CONTROL {
        return Err(ApiError::TooLarge(format!(
            "a command or claim seal is at most {MAX_CONTROL} bytes"
        )));
    }
    let expires = match kind {
        CLAIM => {
            // A claim seal comes from a would-be owner, who has no relation to the device yet: an open claim
            // token for it is what lets it post.
            if hub.store.open_claims(account.id, Some(device), now).await? == 0 {
                return Err(match a.relation {
                    Relation::Stranger => unknown(device),
                    _ => ApiError::Forbidden(format!(
                        "no open claim of yours for device {device}: get a claim token first"
                    )),
                });
            }
            if a.owner.is_some() {
                return Err(ApiError::Conflict(format!(
                    "device {device} already has an owner"
                )));
            }
            if body.len() != CLAIM_LEN {
                return Err(ApiError::BadRequest(format!(
                    "a claim seal is {CLAIM_LEN} bytes"
                )));
            }
            now + SEAL_LIFETIME
        }
        _ if a.relation == Relation::Stranger => return Err(unknown(device)),
        LIST => {
            owner_only(&a, device, "send it a list of authorized senders")?;
            now + SEAL_LIFETIME
        }
        COMMAND => {
            if a.relation == Relation::Shared(Rights::View) {
                return Err(ApiError::Forbidden(format!(
                    "your share of device {device} is view only"
                )));
            }
            let header = CommandHeader::peek(&body)
                .map_err(|e| ApiError::BadRequest(format!("malformed command: {e}")))?;
            let expires = i64::from(header.expires);
            if expires <= now {
                return Err(ApiError::BadRequest("the command has expired".into()));
            }
            if expires > now + MAX_COMMAND_LIFETIME {
                return Err(ApiError::BadRequest(format!(
                    "a command expires at most {MAX_COMMAND_LIFETIME} s ahead"
                )));
            }
            expires
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "type 0x{other:02x} is not a control message (0x41 command, 0x45 list, 0x47 claim seal)"
            )));
        }
    };
    if a.revoked {
        return Err(ApiError::Forbidden(format!("device {device} is revoked")));
    }
    let id = hub
        .store
        .push_control(
            &NewControl {
                device,
                account: account.id,
                kind,
                message: body.to_vec(),
                created_at: now,
                expires_at: expires,
            },
            MAX_WAITING,
        )
        .await?;
    hub.changed.notify_waiters();
    // Nobody listens without MQTT; a send error only means that.
    let _ = hub.downlink.send(Downlink {
        device,
        id,
        topic: DownlinkTopic::Control,
        message: body.to_vec(),
    });
    tracing::debug!(%device, id, kind, account = %account.name, "control message queued");
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "expires": expires})),
    ))
}

/// Checks a device token (`0x34 ‖ time ‖ tag`, the pairing-wait token of docs/api.md) for `device`: the device is
/// admitted and not revoked, the tag verifies under its link keys, and the time is within
/// [`PAIRING_SKEW`] of the hub's clock.
pub(crate) async fn check_device_token<S: Store>(
    hub: &Hub<S>,
    device: DeviceId,
    token: &[u8],
) -> Result<LinkKeys, ApiError> {
    let stored = hub
        .store
        .device(device)
        .await?
        .ok_or_else(|| ApiError::Forbidden(format!("device {device} is not admitted")))?;
    if stored.revoked_at.is_some() {
        return Err(ApiError::Forbidden(format!("device {device} is revoked")));
    }
    let keys = LinkKeys::derive(&RustCrypto, &Secret::from_bytes(stored.session_key))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let time = open_pairing_wait(&RustCrypto, &keys, device, token)
        .map_err(|_| ApiError::Unauthorized("the device token does not verify".into()))?;
    if i64::try_from(time).map_or(true, |t| (t - hub.now()).abs() > PAIRING_SKEW) {
        return Err(ApiError::Unauthorized(
            "the device token is too old or from the future (check the device's clock)".into(),
        ));
    }
    hub.remember_link_keys(device, &keys);
    Ok(keys)
}

/// The device token of `Authorization: Custos-Device <hex>`.
pub(crate) async fn device_auth<S: Store>(
    hub: &Hub<S>,
    device: DeviceId,
    headers: &HeaderMap,
) -> Result<LinkKeys, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Custos-Device "))
        .and_then(|v| hex::decode(v.trim()).ok())
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "the device sends `Authorization: Custos-Device <hex device token>`".into(),
            )
        })?;
    check_device_token(hub, device, &token).await
}

#[derive(Deserialize)]
pub(crate) struct FetchQuery {
    after: Option<i64>,
    wait: Option<u64>,
    state: Option<String>,
}

/// A reported state: hex of UTF-8, at most 64 bytes, no control characters.
fn parse_state(hex_text: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "state is the hex of at most {} bytes of printable UTF-8",
            custos_store::MAX_DEVICE_STATE
        ))
    };
    let bytes = hex::decode(hex_text).map_err(|_| bad())?;
    if bytes.len() > custos_store::MAX_DEVICE_STATE {
        return Err(bad());
    }
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    if text.chars().any(char::is_control) {
        return Err(bad());
    }
    Ok(text)
}

/// `GET /v1/devices/{device}/control?after=&wait=&state=` (device token) → `{messages: [{id, body}]}`; also the
/// device's heartbeat.
pub(crate) async fn fetch<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath(device): ApiPath<String>,
    headers: HeaderMap,
    extensions: axum::http::Extensions,
    ApiQuery(q): ApiQuery<FetchQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let device = parse_device(&device)?;
    let state = q.state.as_deref().map(parse_state).transpose()?;
    device_auth(&hub, device, &headers).await?;
    let address = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
    let now = hub.now();
    hub.store.touch(device, now, &address).await?;
    if let Some(s) = &state {
        hub.store.put_device_state(device, s, now).await?;
    }
    // A device waiting here is connected: it stays online while it waits, so the hub notes it again every half
    // threshold (one write per waiting device per interval, what a heartbeat at that rate would cost).
    let every = Duration::from_secs(u64::try_from(hub.offline_after / 2).unwrap_or(1).max(1));
    let mut touched = tokio::time::Instant::now();
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT));
    let after = q.after.unwrap_or(0);
    let got = loop {
        let changed = hub.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let got = hub
            .store
            .pending_control(device, after, hub.now(), MAX_FETCH)
            .await?;
        if !got.is_empty() || tokio::time::Instant::now() >= deadline {
            break got;
        }
        if touched.elapsed() >= every {
            hub.store.touch(device, hub.now(), &address).await?;
            touched = tokio::time::Instant::now();
        }
        wait_for_change(changed, deadline.min(touched + every)).await;
    };
    if touched.elapsed() >= Duration::from_secs(1) {
        hub.store.touch(device, hub.now(), &address).await?;
    }
    let messages: Vec<_> = got
        .iter()
        .map(|m| json!({"id": m.id, "body": hex::encode(&m.posted.message)}))
        .collect();
    Ok(Json(json!({"messages": messages})))
}

#[derive(Deserialize)]
pub(crate) struct ResultQuery {
    wait: Option<u64>,
}

/// `POST /v1/devices/{device}/control/{id}/answer` (device token; the answer's bytes) → `201 {id}`.
pub(crate) async fn answer<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath((device, id)): ApiPath<(String, i64)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let device = parse_device(&device)?;
    let body = body?;
    let keys = device_auth(&hub, device, &headers).await?;
    store_answer(&hub, device, &keys, id, &body).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": id}))))
}

/// The type of answer each kind of message takes.
fn answer_type(kind: u8) -> Option<u8> {
    match kind {
        COMMAND => Some(ANSWER),
        LIST => Some(LIST_ACK),
        CLAIM => Some(CLAIM_PROOF),
        _ => None,
    }
}

/// Keeps the device's answer to message `id` (the device is authenticated: `keys` are its link keys). An answer
/// to a claim seal is a claim proof: verified, its token used up, and the device bound to the claiming account.
/// Shared by HTTP and MQTT.
pub(crate) async fn store_answer<S: Store>(
    hub: &Hub<S>,
    device: DeviceId,
    keys: &LinkKeys,
    id: i64,
    answer: &[u8],
) -> Result<(), ApiError> {
    if answer.len() > MAX_ANSWER {
        return Err(ApiError::TooLarge(format!(
            "an answer is at most {MAX_ANSWER} bytes"
        )));
    }
    let msg = hub
        .store
        .control_message(device, id)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!("no control message {id} for device {device}"))
        })?;
    if msg.answer.is_some() {
        return Err(ApiError::Conflict(format!(
            "control message {id} is answered already"
        )));
    }
    let want = answer_type(msg.posted.kind)
        .ok_or_else(|| ApiError::Internal(format!("stored control kind {}", msg.posted.kind)))?;
    if answer.first() != Some(&want) {
        return Err(ApiError::BadRequest(format!(
            "the answer to a message of type 0x{:02x} has type 0x{want:02x}",
            msg.posted.kind
        )));
    }
    let now = hub.now();
    if msg.posted.kind == CLAIM {
        let token = open_claim_proof(&RustCrypto, keys, device, answer)
            .map_err(|_| ApiError::Forbidden("the claim proof does not verify".into()))?;
        let claim = hub
            .store
            .take_claim(sha256(&token), now)
            .await?
            .ok_or_else(|| {
                ApiError::Forbidden("the claim proof names no open claim token".into())
            })?;
        if claim.device != device || claim.account != msg.posted.account {
            return Err(ApiError::Forbidden(
                "the claim token is for another device or account".into(),
            ));
        }
        if !hub
            .store
            .set_owner(device, None, claim.account, now)
            .await?
        {
            return Err(ApiError::Conflict(format!(
                "device {device} already has an owner"
            )));
        }
        tracing::info!(%device, account = claim.account, "device claimed");
    }
    if !hub
        .store
        .put_control_answer(device, id, answer, now)
        .await?
    {
        return Err(ApiError::Conflict(format!(
            "control message {id} is answered already"
        )));
    }
    hub.changed.notify_waiters();
    Ok(())
}

/// An MQTT answer, `id (8) ‖ device token (25) ‖ answer`, from `{prefix}/{device}/answer`.
pub(crate) async fn mqtt_answer<S: Store>(
    hub: &Hub<S>,
    device: DeviceId,
    payload: &[u8],
) -> Result<i64, ApiError> {
    let (id, token, answer) = split_mqtt_answer(payload)?;
    let keys = check_device_token(hub, device, token).await?;
    store_answer(hub, device, &keys, id, answer).await?;
    Ok(id)
}

/// Splits an MQTT answer into its id, device token and answer.
pub(crate) fn split_mqtt_answer(payload: &[u8]) -> Result<(i64, &[u8], &[u8]), ApiError> {
    let (id, rest) = payload
        .split_first_chunk::<8>()
        .ok_or_else(|| ApiError::BadRequest("truncated answer".into()))?;
    if rest.len() < PAIRING_WAIT_LEN {
        return Err(ApiError::BadRequest("truncated answer".into()));
    }
    let (token, answer) = rest.split_at(PAIRING_WAIT_LEN);
    let id = i64::try_from(u64::from_be_bytes(*id))
        .map_err(|_| ApiError::BadRequest("no such control message".into()))?;
    Ok((id, token, answer))
}

/// `GET /v1/devices/{device}/control/{id}?wait=` (the poster or the owner) → `{id, status, answer?, online,
/// state?, last_seen}`; 202 while waiting.
pub(crate) async fn result<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    account: Account,
    ApiPath((device, id)): ApiPath<(String, i64)>,
    ApiQuery(q): ApiQuery<ResultQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let device = parse_device(&device)?;
    let gone = || {
        ApiError::NotFound(format!(
            "no control message {id} of yours for device {device}"
        ))
    };
    let msg = hub
        .store
        .control_message(device, id)
        .await?
        .ok_or_else(gone)?;
    if msg.posted.account != account.id && hub.store.owner(device).await? != Some(account.id) {
        return Err(gone());
    }
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT));
    let mut msg = msg;
    loop {
        let changed = hub.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let expired = msg.answer.is_none() && msg.posted.expires_at <= hub.now();
        if msg.answer.is_some() || expired || tokio::time::Instant::now() >= deadline {
            return describe(&hub, device, &msg).await;
        }
        wait_for_change(changed, deadline).await;
        msg = hub
            .store
            .control_message(device, id)
            .await?
            .ok_or_else(gone)?;
    }
}

async fn describe<S: Store>(
    hub: &Hub<S>,
    device: DeviceId,
    msg: &ControlMessage,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let (online, last_seen) = presence(hub, device).await?;
    let state = hub.store.device_state(device).await?;
    let (code, status) = match (&msg.answer, msg.posted.expires_at <= hub.now()) {
        (Some(_), _) => (StatusCode::OK, "answered"),
        (None, true) => (StatusCode::OK, "expired"),
        (None, false) => (StatusCode::ACCEPTED, "waiting"),
    };
    let mut body = json!({
        "id": msg.id,
        "status": status,
        "expires": msg.posted.expires_at,
        "online": online,
        "last_seen": last_seen,
    });
    if let Some(a) = &msg.answer {
        body["answer"] = json!(hex::encode(a));
        body["answered_at"] = json!(msg.answered_at);
    }
    if let Some((s, at)) = state {
        body["state"] = json!(s);
        body["state_at"] = json!(at);
    }
    Ok((code, Json(body)))
}

#[derive(Deserialize)]
pub(crate) struct ShareBody {
    account: String,
    rights: String,
}

/// `POST /v1/devices/{device}/shares {account, rights}` by the owner → `{account, rights}`.
pub(crate) async fn put_share<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    account: Account,
    ApiPath(device): ApiPath<String>,
    body: Result<Json<ShareBody>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let device = parse_device(&device)?;
    let a = access(&hub, device, &account).await?;
    owner_only(&a, device, "share it")?;
    let Json(b) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let rights = Rights::parse(&b.rights)
        .ok_or_else(|| ApiError::BadRequest("rights are `control` or `view`".into()))?;
    let name = normalise_name(&b.account)?;
    let to = hub
        .store
        .account_by_name(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no account `{name}`")))?;
    if to.id == account.id {
        return Err(ApiError::BadRequest("you own this device".into()));
    }
    let shares = hub.store.shares_of(device).await?;
    if shares.len() >= MAX_SHARES && !shares.iter().any(|(id, _)| *id == to.id) {
        return Err(ApiError::Quota(format!(
            "a device is shared with at most {MAX_SHARES} accounts"
        )));
    }
    hub.store
        .put_share(device, to.id, rights, hub.now())
        .await?;
    tracing::info!(%device, owner = %account.name, to = %name, rights = rights.as_str(), "device shared");
    Ok(Json(json!({"account": name, "rights": rights.as_str()})))
}

/// `DELETE /v1/devices/{device}/shares/{account}` by the owner → 204.
pub(crate) async fn remove_share<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    account: Account,
    ApiPath((device, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let device = parse_device(&device)?;
    let a = access(&hub, device, &account).await?;
    owner_only(&a, device, "change its shares")?;
    let none = || ApiError::NotFound(format!("device {device} is not shared with `{name}`"));
    let name = normalise_name(&name).map_err(|_| none())?;
    let to = hub.store.account_by_name(&name).await?.ok_or_else(none)?;
    if !hub.store.remove_share(device, to.id).await? {
        return Err(none());
    }
    tracing::info!(%device, owner = %account.name, from = %name, "share withdrawn");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/devices/{device}/shares` by the owner → `{owner, shares: [{account, rights}]}`.
pub(crate) async fn list_shares<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    account: Account,
    ApiPath(device): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let device = parse_device(&device)?;
    let a = access(&hub, device, &account).await?;
    owner_only(&a, device, "see its shares")?;
    let mut shares = Vec::new();
    for (id, rights) in hub.store.shares_of(device).await? {
        if let Some(acc) = hub.store.account(id).await? {
            shares.push(json!({"account": acc.name, "rights": rights.as_str()}));
        }
    }
    Ok(Json(json!({"owner": account.name, "shares": shares})))
}

/// `GET /v1/devices/{device}/state` by the owner or any share → `{device, state, at, online, last_seen}`.
pub(crate) async fn state<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    account: Account,
    ApiPath(device): ApiPath<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let device = parse_device(&device)?;
    let a = access(&hub, device, &account).await?;
    if a.relation == Relation::Stranger {
        return Err(unknown(device));
    }
    let (online, last_seen) = presence(&hub, device).await?;
    let state = hub.store.device_state(device).await?;
    Ok(Json(json!({
        "device": device.to_string(),
        "state": state.as_ref().map(|(s, _)| s),
        "at": state.as_ref().map(|(_, at)| at),
        "online": online,
        "last_seen": last_seen,
        "revoked": a.revoked,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_short_printable_text() {
        assert_eq!(parse_state(&hex::encode("21.5")).unwrap(), "21.5");
        assert_eq!(parse_state("").unwrap(), "");
        assert!(parse_state(&hex::encode("on\n")).is_err());
        assert!(parse_state(&hex::encode("x".repeat(65))).is_err());
        assert!(parse_state("ff").is_err(), "not UTF-8");
        assert!(parse_state("zz").is_err(), "not hex");
    }

    #[test]
    fn mqtt_answers_split() {
        let mut p = 7u64.to_be_bytes().to_vec();
        p.extend_from_slice(&[0x34; PAIRING_WAIT_LEN]);
        p.extend_from_slice(&[0x42, 1, 2]);
        let (id, token, answer) = split_mqtt_answer(&p).unwrap();
        assert_eq!(
            (id, token.len(), answer),
            (7, PAIRING_WAIT_LEN, &[0x42, 1, 2][..])
        );
        assert!(split_mqtt_answer(&p[..20]).is_err());
        let mut big = u64::MAX.to_be_bytes().to_vec();
        big.extend_from_slice(&[0; PAIRING_WAIT_LEN]);
        assert!(split_mqtt_answer(&big).is_err());
    }
}
