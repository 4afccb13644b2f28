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
fn refused(requester: DeviceId, kid: &ties::KeyId, why: Refusal, msg: &[u8]) -> Response {
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
    (
        status,
        Json(json!({
            "error": "refused",
            "message": text,
            "reason": why as u8,
            "refusal": hex::encode(msg),
        })),
    )
        .into_response()
}

/// A translated request, not yet remembered: the record to store and the packages for the requester (the grant of
/// a KDC request, then, for indirect requests, the deliveries in the order of the request's peers).
struct Prepared {
    record: SessionKeyRecord,
    packages: Vec<Vec<u8>>,
}

/// The package for one recipient: a TPM delivery or grant (an import blob of the key's PRK for the recipient's
/// registered TPM storage parent, built in software) if it registered one, a plain package otherwise.
fn package_for(
    req: &Request,
    recipient: DeviceId,
    keys: &NodeKeys,
    seed: &Seed,
    tpm_parent: Option<&[u8]>,
) -> Result<Vec<u8>, ApiError> {
    let internal = |e: custos_proto::Error| ApiError::Internal(e.to_string());
    let Some(parent) = tpm_parent else {
        return Ok(req
            .package(&RustCrypto, recipient, keys, seed)
            .map_err(internal)?
            .as_bytes()
            .to_vec());
    };
    let prk = req.tpm_prk(&RustCrypto, seed);
    // The parent was checked when it was registered; a failure here is the hub's (its random source), not the
    // node's.
    let blob = custos_vault::wrap_hmac_key_for_tpm(parent, prk.expose(), &mut OsRng)
        .map_err(|e| ApiError::Internal(format!("building a TPM import blob: {e}")))?
        .to_bytes();
    let mut out = vec![0u8; ties::tpm::MAX_TPM_PACKAGE];
    let n = req
        .package_tpm(&RustCrypto, recipient, keys, &blob, &mut out)
        .map_err(internal)?;
    out.truncate(n);
    Ok(out)
}

/// What the CE does with one authenticated request before it remembers it: checks the expiry and that every peer
/// is authorized (`peer_keys` gives the keys of an authorized device, `None` otherwise), unwraps the requester's
/// seed (KTC) or draws one (KDC), wraps it for each recipient (as a TPM import blob for a recipient
/// with a parent in `tpm_parent`) and drops it.
fn prepare(
    req: &Request,
    requester_keys: &NodeKeys,
    seed: Option<Seed>,
    peer_keys: impl Fn(DeviceId) -> Option<NodeKeys>,
    tpm_parent: impl Fn(DeviceId) -> Option<Vec<u8>>,
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
    if ties::is_distribution(req.kind) {
        let parent = tpm_parent(req.requester);
        let grant = package_for(req, req.requester, requester_keys, &seed, parent.as_deref())?;
        packages.push(grant);
    }
    let mut peers = Vec::with_capacity(keys.len());
    for (p, k) in &keys {
        let parent = tpm_parent(*p);
        let bytes = package_for(req, *p, k, &seed, parent.as_deref())?;
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

/// The most requests in one gateway batch.
pub const MAX_BATCH: usize = 256;
/// The largest gateway batch, bytes: 256 of the largest frames (`2 + 8 + 109`), rounded up.
pub const MAX_BATCH_BYTES: usize = 32 << 10;

/// Outcomes of a request in a gateway batch.
const ISSUED: u8 = 0x00;
const REFUSED: u8 = 0x01;
const NOT_TAKEN: u8 = 0x02;
const LIMITED: u8 = 0x03;

/// What became of one request of a batch.
#[derive(Debug)]
enum Outcome {
    /// The requester is not admitted.
    NotAdmitted,
    /// The requester is revoked.
    Revoked,
    /// Not a key request from that device: malformed, or its tag does not verify.
    Forged,
    /// The requester is over its request rate.
    Limited,
    /// Refused, with the refusal the requester can authenticate.
    Refused {
        kid: ties::KeyId,
        why: Refusal,
        msg: [u8; ties::REFUSAL_LEN],
    },
    /// Issued: the packages for the requester (docs/api.md).
    Issued {
        kid: ties::KeyId,
        expires: u32,
        packages: Vec<Vec<u8>>,
    },
}

/// Adds the devices among `ids` that are admitted to `known`, with their keys, or `None` for a revoked one: one
/// query.
async fn look_up<S: Store>(
    hub: &Hub<S>,
    ids: &[DeviceId],
    known: &mut HashMap<DeviceId, Option<NodeKeys>>,
) -> Result<(), ApiError> {
    for d in hub.store.device_keys_among(ids).await? {
        let keys = match d.revoked_at {
            None => Some(node_keys(&d.session_key)?),
            Some(_) => None,
        };
        known.insert(d.device, keys);
    }
    Ok(())
}

/// Key requests, each `(claimed requester, bytes)`, from one gateway batch or from single POSTs taken together,
/// translated as one: one lookup of the requesters, one of the peers their opened requests name, and one
/// transaction for every key issued. The outcomes are in the requests' order. An error fails them all, with
/// nothing stored and nothing delivered.
async fn translate<S: Store>(
    hub: &Hub<S>,
    requests: &[(DeviceId, Bytes)],
) -> Result<Vec<Outcome>, ApiError> {
    let mut requesters: Vec<DeviceId> = requests.iter().map(|(d, _)| *d).collect();
    requesters.sort_unstable();
    requesters.dedup();
    // Every device looked up, with its keys; `None` for a revoked one.
    let mut known: HashMap<DeviceId, Option<NodeKeys>> = HashMap::new();
    look_up(hub, &requesters, &mut known).await?;
    let now = hub.now();
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(requests.len());
    let mut opened = Vec::with_capacity(requests.len());
    for (i, (requester, msg)) in requests.iter().enumerate() {
        let keys = match known.get(requester) {
            None => Err(Outcome::NotAdmitted),
            Some(None) => Err(Outcome::Revoked),
            Some(Some(k)) => {
                Request::open(&RustCrypto, *requester, k, msg).map_err(|_| Outcome::Forged)
            }
        };
        let outcome = match keys {
            Err(o) => o,
            Ok(r) => match &hub.key_limiter {
                Some(limiter) if limiter.check_key(requester).is_err() => Outcome::Limited,
                _ => {
                    opened.push((i, r));
                    outcomes.push(None);
                    continue;
                }
            },
        };
        outcomes.push(Some(outcome));
    }
    let mut peers: Vec<DeviceId> = opened
        .iter()
        .flat_map(|(_, (r, _))| r.peers.as_slice().iter().copied())
        .filter(|d| !known.contains_key(d))
        .collect();
    peers.sort_unstable();
    peers.dedup();
    look_up(hub, &peers, &mut known).await?;
    // The TPM storage parents of everyone who will get a package (the peers; the requesters of KDC requests), in
    // one query: those nodes get their keys as TPM import blobs.
    let mut recipients: Vec<DeviceId> = opened
        .iter()
        .flat_map(|(_, (r, _))| {
            let requester = ties::is_distribution(r.kind).then_some(r.requester);
            r.peers.as_slice().iter().copied().chain(requester)
        })
        .collect();
    recipients.sort_unstable();
    recipients.dedup();
    let parents = hub.store.tpm_parents_among(&recipients).await?;
    let keys_of = |d: &DeviceId| known.get(d).cloned().flatten();
    let refuse = |req: &Request, rk: &NodeKeys, why: Refusal| -> Result<Outcome, ApiError> {
        Ok(Outcome::Refused {
            kid: req.kid,
            why,
            msg: seal_refusal(req.requester, rk, &req.kid, why)?,
        })
    };
    let mut pending: Vec<(usize, Request, NodeKeys, Prepared)> = Vec::new();
    for (i, (req, seed)) in opened {
        let rk = keys_of(&req.requester)
            .ok_or_else(|| ApiError::Internal("a requester's keys vanished".into()))?;
        match prepare(
            &req,
            &rk,
            seed,
            |p| keys_of(&p),
            |d| parents.get(&d).cloned(),
            now,
        )? {
            Ok(p) => pending.push((i, req, rk, p)),
            Err(why) => outcomes[i] = Some(refuse(&req, &rk, why)?),
        }
    }
    let records: Vec<SessionKeyRecord> = pending.iter().map(|(.., p)| p.record.clone()).collect();
    let fresh = hub.store.put_session_keys(&records).await?;
    for ((i, req, rk, p), new) in pending.into_iter().zip(fresh) {
        outcomes[i] = Some(if new {
            announce(hub, &p.record);
            Outcome::Issued {
                kid: req.kid,
                expires: req.expires,
                packages: p.packages,
            }
        } else {
            refuse(&req, &rk, Refusal::KeyIdReused)?
        });
    }
    outcomes
        .into_iter()
        .map(|o| {
            o.ok_or_else(|| ApiError::Internal("a request was left without an outcome".into()))
        })
        .collect()
}

/// Single key requests waiting to be translated together (group commit): the first to find no translation under
/// way takes every request queued by then, so under load one transaction carries many requests, and a lone request
/// costs what it did alone.
#[derive(Default)]
pub(crate) struct KeyQueue {
    waiting: std::sync::Mutex<Vec<Job>>,
    turn: tokio::sync::Mutex<()>,
}

type Job = (
    DeviceId,
    Bytes,
    tokio::sync::oneshot::Sender<Result<Outcome, ApiError>>,
);

/// Translates one request, together with whatever other single requests are queued.
async fn translate_one<S: Store + 'static>(
    hub: &Arc<Hub<S>>,
    requester: DeviceId,
    body: Bytes,
) -> Result<Outcome, ApiError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    hub.key_queue
        .waiting
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((requester, body, tx));
    {
        let _turn = hub.key_queue.turn.lock().await;
        let jobs = std::mem::take(
            &mut *hub
                .key_queue
                .waiting
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if !jobs.is_empty() {
            // In a task of its own: a client that hangs up must not cancel the others' translation half way.
            let hub = hub.clone();
            let work = tokio::spawn(async move {
                let (requests, answers): (Vec<_>, Vec<_>) =
                    jobs.into_iter().map(|(d, b, tx)| ((d, b), tx)).unzip();
                match translate(&hub, &requests).await {
                    Ok(outcomes) => {
                        for (tx, o) in answers.into_iter().zip(outcomes) {
                            let _ = tx.send(Ok(o));
                        }
                    }
                    Err(e) => {
                        for tx in answers {
                            let _ = tx.send(Err(e.clone()));
                        }
                    }
                }
            });
            let _ = work.await;
        }
    }
    rx.await
        .map_err(|_| ApiError::Internal("a key translation ended without an answer".into()))?
}

fn frame(out: &mut Vec<u8>, body: &[u8]) {
    // Every outcome is far below 64 KiB: at most 1 + 1 + 9 × (2 + 109), or 9 × (2 + 414) with TPM packages.
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
    let mut requests = Vec::new();
    let mut at = 0;
    while at < body.len() {
        let bad = || {
            ApiError::BadRequest(
                "a batch is frames of `u16 length ‖ device id (8) ‖ key request`".into(),
            )
        };
        let len = body
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
            .ok_or_else(bad)?;
        let f = body.get(at + 2..at + 2 + len).ok_or_else(bad)?;
        let id: [u8; 8] = f.get(..8).and_then(|b| b.try_into().ok()).ok_or_else(bad)?;
        requests.push((DeviceId(id), body.slice(at + 10..at + 2 + len)));
        at += 2 + len;
        if requests.len() > MAX_BATCH {
            return Err(ApiError::BadRequest(format!(
                "a batch holds at most {MAX_BATCH} requests"
            )));
        }
    }
    let mut out = Vec::with_capacity(4 * requests.len());
    let mut o = Vec::new();
    for outcome in translate(&hub, &requests).await? {
        o.clear();
        match outcome {
            Outcome::NotAdmitted | Outcome::Revoked | Outcome::Forged => o.push(NOT_TAKEN),
            Outcome::Limited => o.push(LIMITED),
            Outcome::Refused { msg, .. } => {
                o.push(REFUSED);
                o.extend_from_slice(&msg);
            }
            Outcome::Issued { packages, .. } => {
                o.push(ISSUED);
                o.push(u8::try_from(packages.len()).unwrap_or(u8::MAX));
                for pkg in &packages {
                    frame(&mut o, pkg);
                }
            }
        }
        frame(&mut out, &o);
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
pub(crate) async fn request<S: Store + 'static>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath(device): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let requester = parse_device(&device)?;
    let body = body?;
    match translate_one(&hub, requester, body).await? {
        Outcome::NotAdmitted => Err(ApiError::Forbidden(format!(
            "device {requester} is not admitted"
        ))),
        Outcome::Revoked => Err(ApiError::Forbidden(format!(
            "device {requester} is revoked: it gets no new keys"
        ))),
        Outcome::Forged => Err(ApiError::Unauthorized(format!(
            "not a key request from device {requester} (malformed, or its tag does not verify)"
        ))),
        Outcome::Limited => Err(ApiError::RateLimited(1)),
        Outcome::Refused { kid, why, msg } => Ok(refused(requester, &kid, why, &msg)),
        Outcome::Issued {
            kid,
            expires,
            packages,
        } => {
            tracing::debug!(%requester, kid = %hex::encode(kid), "device-to-device key issued");
            let packages: Vec<_> = packages.iter().map(hex::encode).collect();
            Ok((
                StatusCode::CREATED,
                Json(json!({
                    "kid": hex::encode(kid),
                    "expires": expires,
                    "packages": packages,
                })),
            )
                .into_response())
        }
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

/// `PUT /v1/devices/{device}/keys/tpm` (a TPM parent registration; it authenticates itself) → `{device, bytes}`:
/// from now on the device gets its keys as TPM import blobs for that storage parent. `401` if it is not a
/// registration from that device, `403` if the device is unknown or revoked, `400` if the public area is not a
/// P-256 storage parent, `413` past [`ties::tpm::MAX_TPM_PARENT_MESSAGE`] bytes.
pub(crate) async fn register_tpm<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath(device): ApiPath<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let node = parse_device(&device)?;
    let body = body?;
    let keys = sender_keys(&hub, node).await?;
    let public = ties::tpm::open_tpm_parent(&RustCrypto, node, &keys, &body).map_err(|_| {
        ApiError::Unauthorized(format!(
            "not a TPM parent registration from device {node} (malformed, or its tag does not verify)"
        ))
    })?;
    custos_vault::check_storage_parent(public).map_err(|e| {
        ApiError::BadRequest(format!(
            "the hub builds import blobs for P-256 storage parents only: {e}"
        ))
    })?;
    hub.store.put_tpm_parent(node, public).await?;
    tracing::info!(%node, bytes = public.len(), "TPM storage parent registered");
    Ok(Json(json!({
        "device": node.to_string(),
        "bytes": public.len(),
    })))
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
