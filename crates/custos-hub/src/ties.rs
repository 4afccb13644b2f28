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

use std::collections::HashMap;
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
use crate::routes::parse_device;
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

fn parse_kid(text: &str) -> Result<ties::KeyId, ApiError> {
    let mut kid = [0u8; 8];
    hex::decode_to_slice(text, &mut kid)
        .map_err(|_| ApiError::BadRequest(format!("`{text}` is not a key id (16 hex digits)")))?;
    Ok(kid)
}

/// The wrapping keys of those of `ids` that are authorized (admitted, not revoked), in one query.
async fn authorized<S: Store>(
    hub: &Hub<S>,
    ids: &[DeviceId],
) -> Result<HashMap<DeviceId, NodeKeys>, ApiError> {
    let mut keys = HashMap::with_capacity(ids.len());
    for d in hub.store.devices_among(ids).await? {
        if d.revoked_at.is_none() {
            keys.insert(d.device, node_keys(&d.session_key)?);
        }
    }
    Ok(keys)
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
    let msg = seal_refusal(requester, keys, kid, why)?;
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

/// A translated request, not yet remembered: the record to store and the packages for the requester (the grant of
/// a KDC request, then, for indirect requests, the deliveries in the order of the request's peers).
struct Prepared {
    record: SessionKeyRecord,
    packages: Vec<Vec<u8>>,
}

/// What the CE does with one authenticated request before it remembers it: checks the expiry and that every peer
/// is authorized (`peer_keys` gives the keys of an authorized device, `None` otherwise), unwraps the requester's
/// seed (KTC) or draws one (KDC), wraps it for each recipient and drops it.
fn prepare(
    req: &Request,
    requester_keys: &NodeKeys,
    seed: Option<Seed>,
    peer_keys: impl Fn(DeviceId) -> Option<NodeKeys>,
    now: i64,
) -> Result<Result<Prepared, Refusal>, ApiError> {
    if let Err(why) = req.check_expiry(u64::try_from(now).unwrap_or(0)) {
        return Ok(Err(why));
    }
    let mut keys = Vec::with_capacity(req.peers.as_slice().len());
    for &p in req.peers.as_slice() {
        match peer_keys(p) {
            Some(k) => keys.push((p, k)),
            None => return Ok(Err(Refusal::PeerNotAuthorized)),
        }
    }
    let seed = seed.unwrap_or_else(|| {
        let mut b = [0u8; ties::SEED_LEN];
        OsRng.fill_bytes(&mut b);
        Seed::from_bytes(b)
    });
    let direct = ties::is_direct(req.kind);
    let mut packages = Vec::new();
    let internal = |e: custos_proto::Error| ApiError::Internal(e.to_string());
    if ties::is_distribution(req.kind) {
        let grant = req
            .package(&RustCrypto, req.requester, requester_keys, &seed)
            .map_err(internal)?;
        packages.push(grant.as_bytes().to_vec());
    }
    let mut peers = Vec::with_capacity(keys.len());
    for (p, k) in &keys {
        let bytes = req
            .package(&RustCrypto, *p, k, &seed)
            .map_err(internal)?
            .as_bytes()
            .to_vec();
        if !direct {
            packages.push(bytes.clone());
        }
        peers.push(KeyPeer {
            peer: *p,
            package: direct.then_some(bytes),
            received_at: None,
        });
    }
    // The seed dies here; only sealed packages go on.
    drop(seed);
    Ok(Ok(Prepared {
        record: SessionKeyRecord {
            requester: req.requester,
            kid: req.kid,
            kind: req.kind,
            expires_at: i64::from(req.expires),
            created_at: now,
            peers,
        },
        packages,
    }))
}

/// After a key was remembered: wakes the peers' long-polls and publishes direct deliveries on MQTT.
fn announce<S: Store>(hub: &Hub<S>, record: &SessionKeyRecord) {
    if !ties::is_direct(record.kind) {
        return;
    }
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

/// One request, start to end: prepared, remembered (refused if its key id was used before), announced. Returns
/// the packages for the requester, or the refusal.
pub(crate) async fn translate<S: Store>(
    hub: &Hub<S>,
    req: &Request,
    requester_keys: &NodeKeys,
    seed: Option<Seed>,
) -> Result<Result<Vec<Vec<u8>>, Refusal>, ApiError> {
    let peers = authorized(hub, req.peers.as_slice()).await?;
    let prepared = match prepare(
        req,
        requester_keys,
        seed,
        |p| peers.get(&p).cloned(),
        hub.now(),
    )? {
        Ok(p) => p,
        Err(why) => return Ok(Err(why)),
    };
    if !hub.store.put_session_key(&prepared.record).await? {
        return Ok(Err(Refusal::KeyIdReused));
    }
    announce(hub, &prepared.record);
    Ok(Ok(prepared.packages))
}

/// The most requests in one gateway batch.
pub const MAX_BATCH: usize = 256;
/// The largest gateway batch, bytes: 256 of the largest frames (`2 + 8 + 109`), rounded up.
pub const MAX_BATCH_BYTES: usize = 32 << 10;

/// Outcomes of a request in a gateway batch.
const ISSUED: u8 = 0x00;
const REFUSED: u8 = 0x01;
const NOT_TAKEN: u8 = 0x02;
const LIMITED: u8 = 0x03;

fn frame(out: &mut Vec<u8>, body: &[u8]) {
    // Every outcome is far below 64 KiB: at most 1 + 1 + 9 × (2 + 109).
    out.extend_from_slice(&u16::try_from(body.len()).unwrap_or(u16::MAX).to_be_bytes());
    out.extend_from_slice(body);
}

/// `POST /v1/keys`: a gateway's batch of key requests from many devices, each framed `u16 length ‖ requester (8) ‖
/// request` (docs/api.md, "Gateway batches"). Each request authenticates itself, as on
/// `POST /v1/devices/{device}/keys`; the batch is looked up and remembered in one transaction. The answer is one
/// framed outcome per request, in order. A batch that fails to be remembered fails whole (500, nothing stored,
/// nothing delivered).
pub(crate) async fn batch<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let mut frames = Vec::new();
    let mut rest = &body[..];
    while !rest.is_empty() {
        let bad = || {
            ApiError::BadRequest(
                "a batch is frames of `u16 length ‖ device id (8) ‖ key request`".into(),
            )
        };
        if rest.len() < 2 {
            return Err(bad());
        }
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let f = rest.get(2..2 + len).ok_or_else(bad)?;
        if len < 8 {
            return Err(bad());
        }
        let mut id = [0u8; 8];
        id.copy_from_slice(&f[..8]);
        frames.push((DeviceId(id), &f[8..]));
        rest = &rest[2 + len..];
        if frames.len() > MAX_BATCH {
            return Err(ApiError::BadRequest(format!(
                "a batch holds at most {MAX_BATCH} requests"
            )));
        }
    }
    // Two lookups for the whole batch: the requesters, whose keys open the requests; then the peers the opened
    // requests name.
    let mut requesters: Vec<DeviceId> = frames.iter().map(|(d, _)| *d).collect();
    requesters.sort_unstable();
    requesters.dedup();
    let mut keys = authorized(&hub, &requesters).await?;
    let now = hub.now();
    let mut opened = Vec::with_capacity(frames.len());
    for (requester, msg) in &frames {
        let Some(rk) = keys.get(requester) else {
            opened.push(Err(NOT_TAKEN));
            continue;
        };
        let Ok(request) = Request::open(&RustCrypto, *requester, rk, msg) else {
            opened.push(Err(NOT_TAKEN));
            continue;
        };
        if let Some(limiter) = &hub.key_limiter
            && limiter.check_key(requester).is_err()
        {
            opened.push(Err(LIMITED));
            continue;
        }
        opened.push(Ok(request));
    }
    let mut peers: Vec<DeviceId> = opened
        .iter()
        .flatten()
        .flat_map(|(r, _)| r.peers.as_slice().iter().copied())
        .filter(|d| !keys.contains_key(d))
        .collect();
    peers.sort_unstable();
    peers.dedup();
    keys.extend(authorized(&hub, &peers).await?);
    // Per request: its outcome so far, and what to remember.
    let mut outcomes: Vec<Vec<u8>> = Vec::with_capacity(frames.len());
    let mut pending: Vec<(usize, Request, Prepared)> = Vec::new();
    for (i, o) in opened.into_iter().enumerate() {
        let (req, seed) = match o {
            Ok(r) => r,
            Err(code) => {
                outcomes.push(vec![code]);
                continue;
            }
        };
        let rk = keys
            .get(&req.requester)
            .ok_or_else(|| ApiError::Internal("a requester's keys vanished".into()))?;
        match prepare(&req, rk, seed, |p| keys.get(&p).cloned(), now)? {
            Ok(p) => {
                outcomes.push(Vec::new());
                pending.push((i, req, p));
            }
            Err(why) => {
                let mut o = vec![REFUSED];
                o.extend_from_slice(&seal_refusal(req.requester, rk, &req.kid, why)?);
                outcomes.push(o);
            }
        }
    }
    let records: Vec<SessionKeyRecord> = pending.iter().map(|(_, _, p)| p.record.clone()).collect();
    let fresh = hub.store.put_session_keys(&records).await?;
    for ((i, req, p), new) in pending.iter().zip(fresh) {
        let o = &mut outcomes[*i];
        if new {
            announce(&hub, &p.record);
            o.push(ISSUED);
            o.push(u8::try_from(p.packages.len()).unwrap_or(u8::MAX));
            for pkg in &p.packages {
                frame(o, pkg);
            }
        } else {
            let rk = keys
                .get(&req.requester)
                .ok_or_else(|| ApiError::Internal("keys vanished".into()))?;
            o.push(REFUSED);
            o.extend_from_slice(&seal_refusal(
                req.requester,
                rk,
                &req.kid,
                Refusal::KeyIdReused,
            )?);
        }
    }
    let mut out = Vec::new();
    for o in &outcomes {
        frame(&mut out, o);
    }
    Ok((
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/octet-stream")],
        out,
    )
        .into_response())
}

fn seal_refusal(
    requester: DeviceId,
    keys: &NodeKeys,
    kid: &ties::KeyId,
    why: Refusal,
) -> Result<[u8; ties::REFUSAL_LEN], ApiError> {
    ties::seal_refusal(&RustCrypto, requester, keys, kid, why)
        .map_err(|e| ApiError::Internal(e.to_string()))
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
    crate::control::device_auth(&hub, requester, &headers).await?;
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
