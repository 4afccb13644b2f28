//! The hub as Central Entity for device-to-device keys (docs/wire.md §12, docs/api.md "Device-to-device keys").
//!
//! A node asks for a key to share with up to eight peers. The hub checks that the requester and every peer are on
//! its list of authorized devices (admitted, not revoked), unwraps the requester's seed (KTC) or draws one (KDC),
//! wraps it for each recipient under that recipient's hub-to-node key, and drops it. What it stores is what a
//! thief of the database may see: who asked, the key id, the expiry, the peers, their receipts, and packages it
//! cannot open (they are sealed to the peers). It never stores the seed or the session key.
//!
//! Requests and receipts authenticate themselves (their tags are under the sender's node-to-hub key); the reads
//! (waiting packages, notices) take the device token, as the control queue does.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use custos_proto::ties::{self, NodeKeys, Refusal, Request, Seed};
use custos_proto::{DeviceId, RustCrypto, Secret};
use custos_store::{KeyPeer, SessionKeyRecord, Store};
use rand_core::{OsRng, RngCore};
use serde::Deserialize;
use serde_json::json;

use crate::extract::{ApiPath, ApiQuery};
use crate::sharing::{MAX_WAIT, wait_for_change};
use crate::{ApiError, Hub};

/// The largest key request or receipt, bytes (a KTC request with eight peers is 109).
pub const MAX_KEY_MESSAGE: usize = 256;
/// The most packages one fetch returns.
pub const MAX_PACKAGES: u32 = 64;
/// Key requests one device may make per second, sustained.
pub const KEY_RATE: u32 = 50;
/// Key requests one device may make in a burst.
pub const KEY_BURST: u32 = 200;

/// Key requests per requester.
pub(crate) type KeyLimiter = governor::DefaultKeyedRateLimiter<DeviceId>;

pub(crate) fn key_limiter() -> KeyLimiter {
    let rate = NonZeroU32::new(KEY_RATE).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(KEY_BURST).unwrap_or(rate);
    governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
}

fn parse_device(text: &str) -> Result<DeviceId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("`{text}` is not a device id (16 hex digits)")))
}

fn parse_kid(text: &str) -> Result<ties::KeyId, ApiError> {
    let mut kid = [0u8; 8];
    hex::decode_to_slice(text, &mut kid)
        .map_err(|_| ApiError::BadRequest(format!("`{text}` is not a key id (16 hex digits)")))?;
    Ok(kid)
}

/// The wrapping keys of an authorized device; `None` if it is unknown or revoked.
async fn authorized_keys<S: Store>(
    hub: &Hub<S>,
    device: DeviceId,
) -> Result<Option<NodeKeys>, ApiError> {
    let Some(d) = hub.store.device(device).await? else {
        return Ok(None);
    };
    if d.revoked_at.is_some() {
        return Ok(None);
    }
    node_keys(&d.session_key).map(Some)
}

fn node_keys(sdk: &[u8; 32]) -> Result<NodeKeys, ApiError> {
    NodeKeys::derive(&RustCrypto, &Secret::from_bytes(*sdk))
        .map_err(|e| ApiError::Internal(e.to_string()))
}

/// The keys of the device that sent a self-authenticating message: `403` if it is unknown or revoked.
async fn sender_keys<S: Store>(hub: &Hub<S>, device: DeviceId) -> Result<NodeKeys, ApiError> {
    let stored = hub
        .store
        .device(device)
        .await?
        .ok_or_else(|| ApiError::Forbidden(format!("device {device} is not admitted")))?;
    if stored.revoked_at.is_some() {
        return Err(ApiError::Forbidden(format!(
            "device {device} is revoked: it gets no new keys"
        )));
    }
    node_keys(&stored.session_key)
}

/// A refusal the requester can authenticate: its status, the usual JSON error, and the refusal message (hex).
fn refused(
    requester: DeviceId,
    keys: &NodeKeys,
    kid: &ties::KeyId,
    why: Refusal,
) -> Result<Response, ApiError> {
    let msg = ties::seal_refusal(&RustCrypto, requester, keys, kid, why)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let (status, text) = match why {
        Refusal::PeerNotAuthorized => (
            StatusCode::FORBIDDEN,
            "a peer is not on the hub's list of authorized devices",
        ),
        Refusal::BadExpiry => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "the expiry must be between 60 seconds and 7 days ahead of the hub's clock",
        ),
        Refusal::KeyIdReused => (
            StatusCode::CONFLICT,
            "this key id was used before; draw a new one",
        ),
    };
    tracing::debug!(%requester, kid = %hex::encode(kid), reason = why as u8, "key request refused");
    Ok((
        status,
        Json(json!({
            "error": "refused",
            "message": text,
            "reason": why as u8,
            "refusal": hex::encode(msg),
        })),
    )
        .into_response())
}

/// What the CE does with one authenticated request: checks, translates or draws, wraps, remembers. Returns the
/// record it stored and the packages for the requester (the grant of a KDC request, then, for indirect requests,
/// the deliveries in the order of the request's peers); or the refusal.
pub(crate) async fn translate<S: Store>(
    hub: &Hub<S>,
    req: &Request,
    requester_keys: &NodeKeys,
    seed: Option<Seed>,
) -> Result<Result<Vec<Vec<u8>>, Refusal>, ApiError> {
    let now = hub.now();
    if let Err(why) = req.check_expiry(u64::try_from(now).unwrap_or(0)) {
        return Ok(Err(why));
    }
    let mut peer_keys = Vec::with_capacity(req.peers.as_slice().len());
    for &p in req.peers.as_slice() {
        match authorized_keys(hub, p).await? {
            Some(k) => peer_keys.push((p, k)),
            None => return Ok(Err(Refusal::PeerNotAuthorized)),
        }
    }
    let seed = seed.unwrap_or_else(|| {
        let mut b = [0u8; ties::SEED_LEN];
        OsRng.fill_bytes(&mut b);
        Seed::from_bytes(b)
    });
    let direct = ties::is_direct(req.kind);
    let mut out = Vec::new();
    if ties::is_distribution(req.kind) {
        let grant = req
            .package(&RustCrypto, req.requester, requester_keys, &seed)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        out.push(grant.as_bytes().to_vec());
    }
    let mut peers = Vec::with_capacity(peer_keys.len());
    for (p, k) in &peer_keys {
        let delivery = req
            .package(&RustCrypto, *p, k, &seed)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let bytes = delivery.as_bytes().to_vec();
        if !direct {
            out.push(bytes.clone());
        }
        peers.push(KeyPeer {
            peer: *p,
            package: direct.then_some(bytes),
            received_at: None,
        });
    }
    // The seed dies here; only sealed packages go on.
    drop(seed);
    let record = SessionKeyRecord {
        requester: req.requester,
        kid: req.kid,
        kind: req.kind,
        expires_at: i64::from(req.expires),
        created_at: now,
        peers,
    };
    if !hub.store.put_session_key(&record).await? {
        return Ok(Err(Refusal::KeyIdReused));
    }
    if direct {
        hub.changed.notify_waiters();
        for p in &record.peers {
            if let Some(pkg) = &p.package {
                // Nobody listens without MQTT; a send error only means that. The HTTP fetch is the record.
                let _ = hub.downlink.send(crate::control::Downlink {
                    device: p.peer,
                    id: 0,
                    topic: crate::control::DownlinkTopic::Keys,
                    message: pkg.clone(),
                });
            }
        }
    }
    Ok(Ok(out))
}

/// `POST /v1/devices/{device}/keys` (the request's bytes; it authenticates itself) → `201 {kid, expires,
/// packages}`, or a refusal.
pub(crate) async fn request<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath(device): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let requester = parse_device(&device)?;
    let body = body?;
    let keys = sender_keys(&hub, requester).await?;
    let (req, seed) = Request::open(&RustCrypto, requester, &keys, &body).map_err(|_| {
        ApiError::Unauthorized(format!(
            "not a key request from device {requester} (malformed, or its tag does not verify)"
        ))
    })?;
    if let Some(limiter) = &hub.key_limiter
        && limiter.check_key(&requester).is_err()
    {
        return Err(ApiError::RateLimited(1));
    }
    match translate(&hub, &req, &keys, seed).await? {
        Ok(packages) => {
            tracing::debug!(%requester, kid = %hex::encode(req.kid), kind = req.kind, "device-to-device key issued");
            let packages: Vec<_> = packages.iter().map(hex::encode).collect();
            Ok((
                StatusCode::CREATED,
                Json(json!({
                    "kid": hex::encode(req.kid),
                    "expires": req.expires,
                    "packages": packages,
                })),
            )
                .into_response())
        }
        Err(why) => refused(requester, &keys, &req.kid, why),
    }
}

#[derive(Deserialize)]
pub(crate) struct WaitQuery {
    wait: Option<u64>,
}

/// `GET /v1/devices/{device}/keys?wait=` (device token) → `{packages: [{requester, kid, expires, body}]}`: the
/// deliveries waiting for the device, until it sends their receipts.
pub(crate) async fn fetch<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath(device): ApiPath<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let device = parse_device(&device)?;
    crate::control::device_auth(&hub, device, &headers).await?;
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT));
    let got = loop {
        let changed = hub.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let got = hub
            .store
            .key_deliveries(device, hub.now(), MAX_PACKAGES)
            .await?;
        if !got.is_empty() || tokio::time::Instant::now() >= deadline {
            break got;
        }
        wait_for_change(changed, deadline).await;
    };
    let packages: Vec<_> = got
        .iter()
        .map(|d| {
            json!({
                "requester": d.requester.to_string(),
                "kid": hex::encode(d.kid),
                "expires": d.expires_at,
                "body": hex::encode(&d.package),
            })
        })
        .collect();
    Ok(Json(json!({"packages": packages})))
}

/// `POST /v1/devices/{device}/keys/receipts` (the receipt's bytes; it authenticates itself) → `{requester, kid}`.
pub(crate) async fn receipt<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath(device): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let peer = parse_device(&device)?;
    let body = body?;
    let keys = sender_keys(&hub, peer).await?;
    let (requester, kid) = ties::open_receipt(&RustCrypto, peer, &keys, &body).map_err(|_| {
        ApiError::Unauthorized(format!(
            "not a receipt from device {peer} (malformed, or its tag does not verify)"
        ))
    })?;
    if !hub
        .store
        .key_received(peer, requester, kid, hub.now())
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "device {peer} is not a peer of key {} of device {requester}",
            hex::encode(kid)
        )));
    }
    hub.changed.notify_waiters();
    Ok(Json(json!({
        "requester": requester.to_string(),
        "kid": hex::encode(kid),
    })))
}

/// `GET /v1/devices/{device}/keys/{kid}?wait=` (the requester's device token) → `{kid, expires, peers: [{peer,
/// received, notice}]}`: which peers hold the key, each with the hub's authenticated notice; waits until all do.
pub(crate) async fn status<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath((device, kid)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let requester = parse_device(&device)?;
    let kid = parse_kid(&kid)?;
    let link = crate::control::device_auth(&hub, requester, &headers).await?;
    drop(link);
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT));
    let record = loop {
        let changed = hub.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let record = hub
            .store
            .session_key(requester, kid)
            .await?
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "device {requester} has no key {}",
                    hex::encode(kid)
                ))
            })?;
        let all = record.peers.iter().all(|p| p.received_at.is_some());
        if all || tokio::time::Instant::now() >= deadline {
            break record;
        }
        wait_for_change(changed, deadline).await;
    };
    let keys = sender_keys(&hub, requester).await?;
    let mut peers = Vec::with_capacity(record.peers.len());
    for p in &record.peers {
        let notice = match p.received_at {
            Some(_) => Some(hex::encode(
                ties::seal_notice(&RustCrypto, requester, &keys, p.peer, &kid)
                    .map_err(|e| ApiError::Internal(e.to_string()))?,
            )),
            None => None,
        };
        peers.push(json!({
            "peer": p.peer.to_string(),
            "received": p.received_at,
            "notice": notice,
        }));
    }
    Ok(Json(json!({
        "kid": hex::encode(kid),
        "expires": record.expires_at,
        "peers": peers,
    })))
}
