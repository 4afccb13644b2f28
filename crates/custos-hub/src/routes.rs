//! The HTTP API (documented in docs/api.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use custos_proto::admission::{HubAwaitingCode, JOIN_CODE_LEN};
use custos_proto::record::RecordHeader;
use custos_proto::uplink::{LinkKeys, Upward, Verdict, is_too_old, open_upward, seal_ack};
use custos_proto::{DeviceId, Error as ProtoError, RustCrypto, Secret};
use custos_store::{Device, NewRecord, RecordQuery, Store};
use rand_core::{OsRng, RngCore};
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use crate::authz::{Caller, records_scope, unseen};
use crate::extract::{ApiPath, ApiQuery};
use crate::{
    ApiError, HANDSHAKE_TIMEOUT, Hub, MAX_BODY, MAX_PENDING_HANDSHAKES, MAX_PENDING_PER_DEVICE,
    Pending,
};

/// The most messages in one uplink batch.
pub const MAX_BATCH: usize = 10_000;
/// The largest uplink batch, bytes: a device sends at most 1 MiB, plus one message of at most 64 KiB.
pub const MAX_UPLOAD: usize = (1 << 20) + (64 << 10) + 2;
/// The largest admission message (`Hello`, `handshake id ‖ Finish`), bytes.
pub const MAX_ADMISSION: usize = 1 << 10;
/// The most records one query returns. Bigger pages made readers hold the database long enough to starve ingest.
pub const MAX_PAGE: u32 = 1000;
/// The most gap ranges one query returns.
pub const MAX_GAPS: u32 = 1000;

/// The hub's router: every endpoint, with `hub` as shared state.
pub fn app<S: Store + 'static>(hub: Arc<Hub<S>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        // The web dashboard: its files, and the live list of the account's devices.
        .route("/", get(crate::web::asset))
        .route("/{file}", get(crate::web::asset))
        .route("/v1/events", get(crate::web::events::<S>))
        .route("/v1/hub", get(hub_info::<S>))
        .route(
            "/v1/admission/hello",
            post(hello::<S>).layer(DefaultBodyLimit::max(MAX_ADMISSION)),
        )
        .route(
            "/v1/admission/finish",
            post(finish::<S>).layer(DefaultBodyLimit::max(MAX_ADMISSION)),
        )
        .route("/v1/devices", get(devices::<S>))
        .route("/v1/accounts", post(crate::accounts::register::<S>))
        .route("/v1/accounts/me", get(crate::accounts::me::<S>))
        .route(
            "/v1/accounts/me/password",
            put(crate::accounts::change_password::<S>),
        )
        .route("/v1/sessions", post(crate::accounts::login::<S>))
        .route("/v1/sessions/current", delete(crate::accounts::logout::<S>))
        .route("/v1/devices/{device}/uplinks", post(uplinks::<S>))
        .route("/v1/devices/{device}/records", get(records::<S>))
        .route("/v1/devices/{device}/gaps", get(gaps::<S>))
        .route("/v1/presence", get(presence::<S>))
        .route("/v1/device-list", get(device_list::<S>))
        .route("/v1/devices/{device}/hub-key", get(hub_key::<S>))
        .route("/v1/requests", post(crate::sharing::post_request::<S>))
        .route(
            "/v1/requests/{id}/answer",
            get(crate::sharing::get_answer::<S>),
        )
        .route("/v1/owners/{owner}/inbox", get(crate::sharing::inbox::<S>))
        .route("/v1/answers", post(crate::sharing::post_answer::<S>))
        .route(
            "/v1/pairing/{device}/{direction}",
            get(crate::sharing::relay_get::<S>)
                .post(crate::sharing::relay_post::<S>)
                .layer(DefaultBodyLimit::max(crate::sharing::MAX_RELAYED)),
        )
        .route(
            "/v1/devices/{device}/claim",
            post(crate::control::claim::<S>),
        )
        .route(
            "/v1/devices/{device}/transfer",
            post(crate::control::transfer::<S>),
        )
        .route(
            "/v1/devices/{device}/control",
            post(crate::control::post::<S>)
                .get(crate::control::fetch::<S>)
                .layer(DefaultBodyLimit::max(crate::control::MAX_LIST)),
        )
        .route(
            "/v1/devices/{device}/control/{id}",
            get(crate::control::result::<S>),
        )
        .route(
            "/v1/devices/{device}/control/{id}/answer",
            post(crate::control::answer::<S>)
                .layer(DefaultBodyLimit::max(crate::control::MAX_ANSWER)),
        )
        .route(
            "/v1/devices/{device}/shares",
            get(crate::control::list_shares::<S>).post(crate::control::put_share::<S>),
        )
        .route(
            "/v1/devices/{device}/shares/{account}",
            delete(crate::control::remove_share::<S>),
        )
        .route(
            "/v1/devices/{device}/state",
            get(crate::control::state::<S>),
        )
        .route(
            "/v1/devices/{device}/keys",
            post(crate::ties::request::<S>)
                .get(crate::ties::fetch::<S>)
                .layer(DefaultBodyLimit::max(crate::ties::MAX_KEY_MESSAGE)),
        )
        .route(
            "/v1/keys",
            post(crate::ties::batch::<S>)
                .layer(DefaultBodyLimit::max(crate::ties::MAX_BATCH_BYTES)),
        )
        .route(
            "/v1/devices/{device}/keys/receipts",
            post(crate::ties::receipt::<S>)
                .layer(DefaultBodyLimit::max(crate::ties::MAX_KEY_MESSAGE)),
        )
        .route(
            "/v1/devices/{device}/keys/tpm",
            put(crate::ties::register_tpm::<S>).layer(DefaultBodyLimit::max(
                custos_proto::ties::tpm::MAX_TPM_PARENT_MESSAGE,
            )),
        )
        .route(
            "/v1/devices/{device}/keys/{kid}",
            get(crate::ties::status::<S>),
        )
        .fallback(|| async { ApiError::NotFound("no such endpoint; see docs/api.md".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(hub)
}

fn fresh_secret() -> Secret {
    let mut b = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(b.as_mut());
    Secret::from_bytes(*b)
}

pub(crate) fn parse_device(text: &str) -> Result<DeviceId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("`{text}` is not a device id (16 hex digits)")))
}

async fn hub_info<S: Store>(State(hub): State<Arc<Hub<S>>>) -> Json<serde_json::Value> {
    Json(json!({
        "noise_public": hex::encode(hub.keys.noise_public()),
        "signing_public": hex::encode(hub.keys.signing_public()),
    }))
}

/// `Hello` → `handshake id (16) ‖ Response`.
async fn hello<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<u8>, ApiError> {
    let body = body?;
    let started = HubAwaitingCode::read_hello(hub.keys.noise(), fresh_secret(), &body).map_err(
        |e| match e {
            ProtoError::Handshake => ApiError::Unauthorized("Hello failed authentication".into()),
            other => ApiError::BadRequest(format!("malformed Hello: {other}")),
        },
    )?;
    let device = started.device();
    if hub.store.device(device).await?.is_some() {
        return Err(ApiError::Forbidden(format!(
            "device {device} is already admitted"
        )));
    }
    let pending = hub
        .store
        .admission(device, hub.now())
        .await?
        .ok_or_else(|| {
            ApiError::Forbidden(format!(
                "device {device} has no pending admission (unknown, expired or already used)"
            ))
        })?;
    let code: Zeroizing<[u8; JOIN_CODE_LEN]> = Zeroizing::new(pending.join_code);
    let (awaiting, response) = started
        .respond(&code)
        .map_err(|e| ApiError::Internal(format!("admission response: {e}")))?;
    let mut id = [0u8; 16];
    OsRng.fill_bytes(&mut id);
    {
        let mut map = hub
            .pending
            .lock()
            .map_err(|_| ApiError::Internal("handshake table poisoned".into()))?;
        map.retain(|_, p| p.started.elapsed() < HANDSHAKE_TIMEOUT);
        let mut mine: Vec<_> = map
            .iter()
            .filter(|(_, p)| p.device == device)
            .map(|(k, p)| (p.started, *k))
            .collect();
        if mine.len() >= MAX_PENDING_PER_DEVICE {
            mine.sort();
            map.remove(&mine[0].1);
        } else if map.len() >= MAX_PENDING_HANDSHAKES {
            return Err(ApiError::Busy);
        }
        map.insert(
            id,
            Pending {
                device,
                state: awaiting,
                started: Instant::now(),
            },
        );
    }
    tracing::info!(%device, "admission started");
    let mut out = id.to_vec();
    out.extend_from_slice(&response);
    Ok(out)
}

/// `handshake id (16) ‖ Finish` → `Welcome`; the device is admitted and the device list republished.
async fn finish<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<u8>, ApiError> {
    let body = body?;
    if body.len() < 16 {
        return Err(ApiError::BadRequest(
            "expected a 16-byte handshake id and Finish".into(),
        ));
    }
    let (id, msg) = body.split_at(16);
    let key: [u8; 16] = id
        .try_into()
        .map_err(|_| ApiError::BadRequest("expected a 16-byte handshake id".into()))?;
    let pending = hub
        .pending
        .lock()
        .map_err(|_| ApiError::Internal("handshake table poisoned".into()))?
        .remove(&key);
    let Some(Pending {
        state: awaiting,
        started,
        ..
    }) = pending
    else {
        // The same Finish again, soon after: its Welcome was lost on the way. Send the same Welcome; nothing
        // else changes. Any other Finish for a finished handshake is refused.
        let finished = hub
            .finished
            .lock()
            .map_err(|_| ApiError::Internal("handshake table poisoned".into()))?;
        return match finished.get(&key) {
            Some(f) if f.finish == msg && f.at.elapsed() < HANDSHAKE_TIMEOUT => {
                Ok(f.welcome.clone())
            }
            _ => Err(ApiError::Forbidden("unknown or finished handshake".into())),
        };
    };
    if started.elapsed() >= HANDSHAKE_TIMEOUT {
        return Err(ApiError::Forbidden(
            "handshake timed out; start again".into(),
        ));
    }
    let (admitted, welcome) = awaiting.read_finish(msg).map_err(|e| match e {
        ProtoError::Handshake => ApiError::Unauthorized(
            "admission failed: wrong join code, or an altered message".into(),
        ),
        other => ApiError::BadRequest(format!("malformed Finish: {other}")),
    })?;
    // The handshake proved the device holds the key; the registry says whether that key has an identity its
    // manufacturer certified, and no status that ends it. A refusal leaves the join code unused.
    if let Some(link) = hub.registry.get() {
        crate::identity::check_admission(link, admitted.device, &admitted.peer_static).await?;
    }
    let now = hub.now();
    hub.store
        .complete_admission(
            &Device {
                device: admitted.device,
                static_key: admitted.peer_static,
                session_key: *admitted.session_key.expose(),
                admitted_at: now,
                revoked_at: None,
                max_seq: -1,
            },
            now,
        )
        .await?;
    // The device is admitted: it must get its Welcome even if re-signing the list fails now (the next
    // admission or revocation signs it again, and MQTT hubs re-publish the newest one).
    if let Err(e) = hub.publish_device_list().await {
        tracing::error!(%e, "could not sign the device list after an admission");
    }
    tracing::info!(device = %admitted.device, "device admitted");
    if let Ok(mut finished) = hub.finished.lock() {
        finished.retain(|_, f| f.at.elapsed() < HANDSHAKE_TIMEOUT);
        if finished.len() < MAX_PENDING_HANDSHAKES {
            finished.insert(
                key,
                crate::Finished {
                    finish: msg.to_vec(),
                    welcome: welcome.clone(),
                    at: Instant::now(),
                },
            );
        }
    }
    Ok(welcome)
}

async fn devices<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    _: crate::accounts::Operator,
) -> Result<Json<serde_json::Value>, ApiError> {
    let list: Vec<_> = hub
        .store
        .devices()
        .await?
        .iter()
        .map(|d| {
            json!({"device": d.device.to_string(), "static_key": hex::encode(d.static_key),
                "admitted_at": d.admitted_at, "revoked_at": d.revoked_at, "max_seq": d.max_seq})
        })
        .collect();
    Ok(Json(json!({ "devices": list })))
}

/// A batch of uplinks, each framed as `length (u16) ‖ uplink` → the acks, 24 bytes each, in order.
async fn uplinks<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath(device): ApiPath<String>,
    request: Request,
) -> Result<impl IntoResponse, ApiError> {
    let device = parse_device(&device)?;
    let address = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
    let too_large = || ApiError::TooLarge(format!("a batch is at most {MAX_UPLOAD} bytes"));
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_UPLOAD as u64) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(request.into_body(), MAX_UPLOAD)
        .await
        .map_err(|e| {
            if announced.is_some() {
                ApiError::BadRequest(format!("reading the body: {e}"))
            } else {
                too_large()
            }
        })?;
    precheck(&hub, device, &body)?;
    let acks = ingest(&hub, device, &body, &address).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], acks))
}

#[derive(Deserialize)]
struct RecordsParams {
    epoch: u16,
    from_leaf: Option<u32>,
    until_leaf: Option<u32>,
    after: Option<i64>,
    limit: Option<u32>,
}

/// `GET /v1/devices/{device}/records`: for the operator, an account that owns the device or has a share, and an
/// application, which gets only the records in spans granted to its key (crate::authz).
async fn records<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath(device): ApiPath<String>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<RecordsParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let device = parse_device(&device)?;
    let caller = Caller::of(&hub, &headers, Some(&records_scope(device))).await?;
    let app = match &caller {
        Caller::App(key) if hub.store.grant_spans(*key, device).await?.is_empty() => {
            return Err(unseen(device));
        }
        Caller::App(key) => Some(*key),
        other if other.may_see(&hub, device).await? => None,
        _ => return Err(unseen(device)),
    };
    let limit = p.limit.unwrap_or(1000).clamp(1, MAX_PAGE);
    let q = RecordQuery {
        device,
        epoch: p.epoch,
        leaf_from: p.from_leaf.unwrap_or(0),
        leaf_until: p.until_leaf.unwrap_or(u32::MAX),
        after: p.after,
        limit,
    };
    if q.leaf_from > q.leaf_until {
        return Err(ApiError::BadRequest("from_leaf is after until_leaf".into()));
    }
    let page = match app {
        Some(key) => hub.store.granted_records(&q, key).await?,
        None => hub.store.records(&q).await?,
    };
    let next = (page.len() == limit as usize)
        .then(|| page.last().map(|r| r.id))
        .flatten();
    let list: Vec<_> = page
        .iter()
        .map(|r| {
            json!({"id": r.id, "seq": r.record.seq, "epoch": r.record.epoch, "leaf": r.record.leaf,
                "received_at": r.record.received_at, "record": hex::encode(&r.record.body)})
        })
        .collect();
    Ok(Json(json!({"records": list, "next_after": next})))
}

#[derive(Deserialize)]
struct GapsParams {
    limit: Option<u32>,
}

/// `GET /v1/devices/{device}/gaps`: the sequence numbers below the highest stored one that are neither stored nor
/// skipped by the device (a skip notice): messages lost on the way.
/// For the operator and accounts that own the device or have a share.
async fn gaps<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath(device): ApiPath<String>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<GapsParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let device = parse_device(&device)?;
    if !Caller::of(&hub, &headers, None)
        .await?
        .may_see(&hub, device)
        .await?
    {
        return Err(unseen(device));
    }
    let stored = hub
        .store
        .device(device)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("device {device} is not admitted")))?;
    let limit = p.limit.unwrap_or(100).clamp(1, MAX_GAPS);
    let gaps = hub.store.gaps(device, limit).await?;
    let missing: u64 = gaps.iter().map(|(a, b)| b - a).sum();
    Ok(Json(json!({
        "device": device.to_string(),
        "max_seq": stored.max_seq,
        "gaps": gaps.iter().map(|(a, b)| [a, b]).collect::<Vec<_>>(),
        "missing": missing,
        "complete": gaps.len() < limit as usize,
    })))
}

#[derive(Deserialize)]
struct PresenceParams {
    offline_after: Option<i64>,
}

/// Every device's presence for the operator; an account's own and shared devices for an account.
async fn presence<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<PresenceParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let visible: Option<std::collections::HashSet<DeviceId>> =
        match Caller::of(&hub, &headers, None).await? {
            Caller::Operator => None,
            Caller::Account(a) => {
                let mut mine: std::collections::HashSet<_> =
                    hub.store.owned_devices(a.id).await?.into_iter().collect();
                mine.extend(
                    hub.store
                        .shared_with(a.id)
                        .await?
                        .into_iter()
                        .map(|(d, _)| d),
                );
                Some(mine)
            }
            Caller::App(_) => Some(Default::default()),
        };
    let threshold = p.offline_after.unwrap_or(300);
    if threshold <= 0 {
        return Err(ApiError::BadRequest(
            "offline_after must be a positive number of seconds".into(),
        ));
    }
    let now = hub.now();
    let list: Vec<_> = hub
        .store
        .presence()
        .await?
        .iter()
        .filter(|p| visible.as_ref().is_none_or(|v| v.contains(&p.device)))
        .map(|p| {
            json!({"device": p.device.to_string(), "last_seen": p.last_seen, "address": p.address,
                "online": now - p.last_seen < threshold})
        })
        .collect();
    Ok(Json(
        json!({"now": now, "offline_after": threshold, "devices": list}),
    ))
}

/// The hub's signing key for device lists, authenticated for `device` with its downlink key:
/// `key (32) ‖ HMAC-SHA256(downlink key, "custos/v1/hub-key" ‖ device id ‖ key)[..16]`.
async fn hub_key<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath(device): ApiPath<String>,
) -> Result<Vec<u8>, ApiError> {
    let device = parse_device(&device)?;
    let stored = hub
        .store
        .device(device)
        .await?
        .ok_or_else(|| ApiError::Forbidden(format!("device {device} is not admitted")))?;
    let keys = LinkKeys::derive(&RustCrypto, &Secret::from_bytes(stored.session_key))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(
        custos_proto::uplink::seal_hub_key(&RustCrypto, &keys, device, &hub.keys.signing_public())
            .to_vec(),
    )
}

#[derive(Deserialize)]
struct DeviceListParams {
    device: Option<String>,
}

/// For a device (`?device=D` with its device token, revoked devices included, so that one learns it was revoked)
/// and the operator.
async fn device_list<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    headers: HeaderMap,
    ApiQuery(p): ApiQuery<DeviceListParams>,
) -> Result<impl IntoResponse, ApiError> {
    let operator = crate::accounts::bearer(&headers)
        .is_some_and(|t| crate::accounts::is_operator_token(&hub, t));
    if !operator {
        let device = p.device.as_deref().map(parse_device).transpose()?;
        let ok = match device {
            Some(d) => crate::authz::device_token(&hub, d, &headers, true).await?,
            None => false,
        };
        if !ok {
            return Err(ApiError::Unauthorized(
                "the device list is for devices (`?device=D` with `Authorization: Custos-Device <hex device \
                 token>`) and the operator"
                    .into(),
            ));
        }
    }
    let (_, signed) = hub
        .store
        .device_list()
        .await?
        .ok_or_else(|| ApiError::NotFound("no device list yet".into()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/cose; cose-type=\"cose-sign1\"",
        )],
        signed,
    ))
}

/// Refuses a forgery for a device whose link keys this hub has seen on its first message, before any database
/// work (the HTTP endpoint and the MQTT read loop call it before [`ingest`]): junk on a device's MQTT topic (anyone on the broker can post) must cost an HMAC, not a query. The errors
/// are those [`ingest`] would give.
pub(crate) fn precheck<S: Store>(
    hub: &Hub<S>,
    device: DeviceId,
    body: &[u8],
) -> Result<(), ApiError> {
    if let Some(keys) = hub.link_keys(device) {
        if body.is_empty() {
            return Err(ApiError::BadRequest("empty batch".into()));
        }
        let (len, rest) = body
            .split_first_chunk::<2>()
            .ok_or_else(|| ApiError::BadRequest("message 0: truncated length".into()))?;
        let len = usize::from(u16::from_be_bytes(*len));
        let first = rest.get(..len).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "message 0: {len} bytes announced, {} left",
                rest.len()
            ))
        })?;
        open_upward(&RustCrypto, &keys, device, first).map_err(|e| match e {
            ProtoError::Authentication => {
                ApiError::Unauthorized("message 0 failed authentication".into())
            }
            other => ApiError::BadRequest(format!("message 0: {other}")),
        })?;
    }
    Ok(())
}

/// Checks a batch of uplinks from `device` (each framed as `length (u16) ‖ uplink`), stores the new records and
/// returns the acks, 24 bytes each, in order. The whole batch is checked before anything is stored. Shared by
/// the HTTP endpoint and the MQTT listener.
pub async fn ingest<S: Store>(
    hub: &Hub<S>,
    device: DeviceId,
    body: &[u8],
    address: &str,
) -> Result<Vec<u8>, ApiError> {
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
    hub.remember_link_keys(device, &keys);
    let now = hub.now();

    // Check the whole batch before storing any of it: one bad message changes nothing.
    let mut messages = Vec::new();
    let mut skips = Vec::new();
    // Per message, in order: an uplink (its index in `messages`) or a skip notice (its range).
    let mut order = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        let i = order.len();
        if i == MAX_BATCH {
            return Err(ApiError::BadRequest(format!(
                "more than {MAX_BATCH} messages in one batch"
            )));
        }
        let (len, tail) = rest
            .split_first_chunk::<2>()
            .ok_or_else(|| ApiError::BadRequest(format!("message {i}: truncated length")))?;
        let len = usize::from(u16::from_be_bytes(*len));
        if tail.len() < len {
            return Err(ApiError::BadRequest(format!(
                "message {i}: {len} bytes announced, {} left",
                tail.len()
            )));
        }
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        let upward = open_upward(&RustCrypto, &keys, device, msg).map_err(|e| match e {
            ProtoError::Authentication => {
                ApiError::Unauthorized(format!("message {i} failed authentication"))
            }
            other => ApiError::BadRequest(format!("message {i}: {other}")),
        })?;
        let (seq, record) = match upward {
            Upward::Skip { from, until } => {
                order.push(Err((from, until)));
                skips.push((from, until));
                continue;
            }
            Upward::Uplink { seq, body } => (seq, body),
        };
        let header = RecordHeader::peek(record)
            .map_err(|e| ApiError::BadRequest(format!("message {i}: not a sealed record: {e}")))?;
        if header.device != device {
            return Err(ApiError::BadRequest(format!(
                "message {i}: the record belongs to device {}",
                header.device
            )));
        }
        order.push(Ok(messages.len()));
        messages.push(NewRecord {
            device,
            seq,
            epoch: header.epoch.0,
            leaf: header.leaf,
            body: record.to_vec(),
            received_at: now,
        });
    }
    if order.is_empty() {
        return Err(ApiError::BadRequest("empty batch".into()));
    }
    hub.batches
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);

    // Skips first: a skip is a statement about the past, and noting it twice is harmless.
    for &(from, until) in &skips {
        hub.store.put_skipped(device, from, until, now).await?;
        tracing::info!(%device, from, until, "the device skipped sequence numbers it had reserved");
    }
    let (old, fresh): (Vec<_>, Vec<_>) = messages
        .iter()
        .enumerate()
        .partition(|(_, m)| is_too_old(m.seq, stored.max_seq));
    let batch: Vec<NewRecord> = fresh.iter().map(|(_, m)| (*m).clone()).collect();
    let inserted = if batch.is_empty() {
        Vec::new()
    } else {
        hub.store.insert_records(&batch).await?
    };
    let mut verdicts = vec![Verdict::TooOld; messages.len()];
    for ((i, _), new) in fresh.iter().zip(inserted) {
        verdicts[*i] = if new {
            Verdict::Stored
        } else {
            Verdict::Duplicate
        };
    }
    hub.store.touch(device, now, address).await?;
    let mut acks = Vec::with_capacity(order.len() * custos_proto::uplink::ACK_LEN);
    for item in &order {
        let (seq, verdict) = match *item {
            Ok(i) => (messages[i].seq, verdicts[i]),
            Err((from, _)) => (from, Verdict::Noted),
        };
        acks.extend_from_slice(
            &seal_ack(&RustCrypto, &keys, device, seq, verdict)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        );
    }
    let stored_n = verdicts.iter().filter(|v| **v == Verdict::Stored).count();
    tracing::debug!(%device, stored = stored_n, duplicates = verdicts.len() - stored_n - old.len(), too_old = old.len(), skips = skips.len(), "uplinks");
    Ok(acks)
}
