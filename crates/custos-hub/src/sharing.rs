//! The sharing broker: applications post signed requests, each owner's keeper fetches its inbox and posts signed
//! answers, and applications fetch the answer to their request. The hub checks every signature it can (so it
//! never stores a forgery) but holds nothing that opens a grant.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use custos_proto::sharing::{self, AccessToken, Denial, Grant, SharingRequest};
use custos_proto::{RustCrypto, UnixTime};
use custos_store::{GrantSpan, Store, StoredRequest};
use serde::Deserialize;
use serde_json::json;

use crate::extract::{ApiPath, ApiQuery};
use crate::{ApiError, Hub};

/// The longest an application may wait for an answer in one call, seconds.
pub const MAX_WAIT: u64 = 30;
/// The most requests one inbox page returns.
pub const MAX_INBOX_PAGE: u32 = 100;
/// The most open (unexpired, unanswered) requests the hub keeps for one owner; past that, `429 quota`. Owners are
/// not registered at the hub, so this bounds what a flood aimed at one keeper costs it, and
/// [`MAX_OPEN_REQUESTS`] bounds the whole.
pub const MAX_OPEN_PER_OWNER: u64 = 256;
/// The most open requests the hub keeps in all; past that, `503 busy` until some expire or are answered.
pub const MAX_OPEN_REQUESTS: u64 = 100_000;
/// How long a device's pairing window stays open after its last authenticated wait (`GET …/to-device` with a
/// pairing-wait token), seconds.
pub const PAIRING_WINDOW: i64 = 120;
/// How far a pairing-wait token's time may be from the hub's clock, seconds.
pub const PAIRING_SKEW: i64 = 120;

fn unix(secs: i64) -> Result<UnixTime, ApiError> {
    u64::try_from(secs)
        .ok()
        .and_then(|s| UnixTime::new(s).ok())
        .ok_or_else(|| ApiError::Internal("the hub's clock is out of range".into()))
}

fn hex32(text: &str, what: &str) -> Result<[u8; 32], ApiError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| ApiError::BadRequest(format!("`{text}` is not a {what} (64 hex digits)")))?;
    Ok(out)
}

fn cose(bytes: Vec<u8>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/cose; cose-type=\"cose-sign1\"",
        )],
        bytes,
    )
}

/// `POST /v1/requests`: an application's signed sharing request, kept for the owner's keeper until it expires.
pub(crate) async fn post_request<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body?;
    let now = hub.now();
    let t = unix(now)?;
    let (body, v) = hub
        .off_workers(move || {
            let v = SharingRequest::verify(&RustCrypto, &body, t);
            (body, v)
        })
        .await?;
    let v = v.map_err(|e| match e {
        custos_proto::Error::Signature => ApiError::Unauthorized(
            "the request's signature does not verify with its app key".into(),
        ),
        custos_proto::Error::Expired => ApiError::BadRequest("the request has expired".into()),
        other => ApiError::BadRequest(format!("malformed sharing request: {other}")),
    })?;
    if hub.store.request(v.id).await?.is_none() {
        if hub.store.open_requests(Some(v.request.owner), now).await? >= MAX_OPEN_PER_OWNER {
            return Err(ApiError::Quota(format!(
                "this owner has {MAX_OPEN_PER_OWNER} open requests already; try again when some are answered \
                 or expired"
            )));
        }
        if hub.store.open_requests(None, now).await? >= MAX_OPEN_REQUESTS {
            tracing::warn!(
                "the hub holds {MAX_OPEN_REQUESTS} open sharing requests; refusing more"
            );
            return Err(ApiError::Busy);
        }
    }
    let fresh = hub
        .store
        .put_request(&StoredRequest {
            seq: 0,
            id: v.id,
            owner: v.request.owner,
            signed: body.to_vec(),
            received_at: now,
            expires_at: i64::try_from(v.request.expires.secs()).unwrap_or(i64::MAX),
        })
        .await?;
    hub.changed.notify_waiters();
    tracing::info!(id = %hex::encode(v.id), app = %v.request.app_name, fresh, "sharing request");
    let status = if fresh {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({"id": hex::encode(v.id)}))))
}

#[derive(Deserialize)]
pub(crate) struct WaitQuery {
    wait: Option<u64>,
}

/// `GET /v1/requests/{id}/answer[?wait=s]`: the keeper's signed answer (grant or denial), waiting up to `wait`
/// seconds for it.
pub(crate) async fn get_answer<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let id = hex32(&id, "request id")?;
    let wait = Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let changed = hub.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if let Some(answer) = hub.store.answer(id).await? {
            return Ok(cose(answer));
        }
        if hub.store.request(id).await?.is_none() {
            return Err(ApiError::NotFound("no such request".into()));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::NotYet("not answered yet".into()));
        }
        wait_for_change(changed, deadline).await;
    }
}

#[derive(Deserialize)]
pub(crate) struct InboxQuery {
    after: Option<i64>,
    limit: Option<u32>,
    wait: Option<u64>,
}

/// The scope an access token must name to read `owner`'s inbox.
pub fn inbox_scope(owner: &[u8; 32]) -> String {
    format!("GET /v1/owners/{}/inbox", hex::encode(owner))
}

/// `GET /v1/owners/{owner}/inbox`: the owner's open requests, for its keeper only (`Authorization: Custos <token>`,
/// a hex COSE_Sign1 [`AccessToken`] by the owner's key).
pub(crate) async fn inbox<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath(owner): ApiPath<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<InboxQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let owner = hex32(&owner, "owner key")?;
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Custos "))
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "an inbox needs `Authorization: Custos <token>` from the owner's keeper".into(),
            )
        })?;
    let token = hex::decode(token.trim())
        .map_err(|_| ApiError::Unauthorized("the access token is not hex".into()))?;
    let now = hub.now();
    AccessToken::verify(
        &RustCrypto,
        &token,
        &owner,
        &inbox_scope(&owner),
        unix(now)?,
    )
    .map_err(|e| match e {
        custos_proto::Error::Expired => ApiError::Unauthorized(
            "the access token is too old or from the future (check the keeper's clock)".into(),
        ),
        other => ApiError::Unauthorized(format!("access token refused: {other}")),
    })?;
    let limit = q.limit.unwrap_or(MAX_INBOX_PAGE).clamp(1, MAX_INBOX_PAGE);
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT));
    let items = loop {
        let changed = hub.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let items = hub
            .store
            .inbox(owner, q.after.unwrap_or(0), hub.now(), limit)
            .await?;
        if !items.is_empty() || tokio::time::Instant::now() >= deadline {
            break items;
        }
        wait_for_change(changed, deadline).await;
    };
    let next = items.last().map(|r| r.seq);
    let requests: Vec<_> = items
        .iter()
        .map(|r| {
            json!({"seq": r.seq, "id": hex::encode(r.id), "received_at": r.received_at,
                   "request": hex::encode(&r.signed)})
        })
        .collect();
    Ok(Json(json!({"requests": requests, "next": next})))
}

/// `POST /v1/answers`: a keeper's signed grant or denial. The hub checks it is signed by the owner the request
/// was addressed to, then keeps it for the application; the first answer is final.
pub(crate) async fn post_answer<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body?;
    let (body, kind) = hub
        .off_workers(move || {
            let kind = sharing::kind(&body);
            (body, kind)
        })
        .await?;
    let kind = kind.map_err(|e| ApiError::BadRequest(format!("malformed answer: {e}")))?;
    if kind != sharing::GRANT && kind != sharing::DENIAL {
        return Err(ApiError::BadRequest(
            "a sharing request is not an answer: post it to /v1/requests".into(),
        ));
    }
    let id = Grant::request_id_unverified(&body)
        .map_err(|e| ApiError::BadRequest(format!("malformed answer: {e}")))?;
    let request =
        hub.store.request(id).await?.ok_or_else(|| {
            ApiError::NotFound("the answer names no request this hub holds".into())
        })?;
    let owner = request.owner;
    let signed_request = request.signed;
    let (body, checked) = hub
        .off_workers(move || {
            let checked = match kind {
                // A grant is read as far as the hub may (trees and node ids, under the owner's signature), so
                // that its spans go into the grant index: what the application may fetch.
                sharing::GRANT => SharingRequest::peek(&signed_request).and_then(|r| {
                    let trees = Grant::verify_public(&RustCrypto, &body, &owner, &r, &id)?;
                    grant_spans(r.app_key, id, &trees).map(Some)
                }),
                sharing::DENIAL => Denial::verify(&RustCrypto, &body, &owner).map(|_| None),
                _ => Err(custos_proto::Error::InvalidValue("not an answer")),
            };
            (body, checked)
        })
        .await?;
    let spans = checked.map_err(|e| match e {
        custos_proto::Error::Signature => {
            ApiError::Unauthorized("the answer is not signed by the request's owner".into())
        }
        other => ApiError::BadRequest(format!("malformed answer: {other}")),
    })?;
    let fresh = match spans {
        Some(spans) => hub.store.put_grant(id, &body, hub.now(), &spans).await?,
        None => hub.store.put_answer(id, &body, hub.now()).await?,
    };
    if !fresh {
        return Err(ApiError::Conflict("the request is already answered".into()));
    }
    hub.changed.notify_waiters();
    tracing::info!(id = %hex::encode(id), kind, "sharing answer");
    Ok((StatusCode::CREATED, Json(json!({"id": hex::encode(id)}))))
}

/// The grant index rows of a grant (answering `request`): per node, the leaves its span covers, for the
/// application `app`.
fn grant_spans(
    app: [u8; 32],
    request: [u8; 32],
    trees: &[(custos_proto::TreeSpec, Vec<custos_proto::NodeId>)],
) -> Result<Vec<GrantSpan>, custos_proto::Error> {
    let mut out = Vec::new();
    for (spec, nodes) in trees {
        for node in nodes {
            let span = spec.node_span(*node)?;
            let first = spec.leaf_at(span.start())?;
            // The span's last second lies in its last leaf; the index's upper bound is exclusive.
            let last = spec.leaf_at(UnixTime::new(span.end().secs() - 1)?)?;
            out.push(GrantSpan {
                app,
                device: spec.device(),
                epoch: spec.epoch().0,
                from_leaf: first,
                until_leaf: u64::from(last) + 1,
                request,
            });
        }
    }
    Ok(out)
}

/// The most messages a pairing mailbox keeps; older ones are dropped as new ones arrive.
pub const MAILBOX_DEPTH: usize = 64;
/// The largest relayed pairing message, bytes (a Provision with a long frontier is a few KiB).
pub const MAX_RELAYED: usize = 64 << 10;
/// The most bytes a pairing mailbox keeps; older messages are dropped as new ones arrive.
pub const MAILBOX_BYTES: u64 = 256 << 10;

fn mailbox(device: &str, direction: &str) -> Result<(custos_proto::DeviceId, String), ApiError> {
    let device: custos_proto::DeviceId = device
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("`{device}` is not a device id")))?;
    match direction {
        "to-device" | "to-keeper" => Ok((device, format!("pairing/{device}/{direction}"))),
        _ => Err(ApiError::NotFound(
            "a pairing mailbox is `to-device` or `to-keeper`".into(),
        )),
    }
}

/// `POST /v1/pairing/{device}/{direction}`: relays one opaque pairing message (Noise NNpsk0 keyed by the owner
/// code, then sealed provisioning). The hub cannot read or forge them; anyone may post, and the receiver drops
/// what does not authenticate. Only while the device's pairing window is open (it waits for its keeper, proven by
/// a pairing-wait token): nobody can fill mailboxes of devices that are not pairing, nor of devices that do not
/// exist. Each mailbox keeps at most [`MAILBOX_DEPTH`] messages and [`MAILBOX_BYTES`] bytes, the newest.
pub(crate) async fn relay_post<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath((device, direction)): ApiPath<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body?;
    let (id, mailbox) = mailbox(&device, &direction)?;
    if body.is_empty() || body.len() > MAX_RELAYED {
        return Err(ApiError::BadRequest(format!(
            "a pairing message is 1 to {MAX_RELAYED} bytes"
        )));
    }
    let now = hub.now();
    if !hub.store.pairing_open(id, now).await? {
        return Err(ApiError::Forbidden(format!(
            "device {id} is not waiting for its keeper (not admitted, or no pairing window open)"
        )));
    }
    let seq = hub
        .store
        .relay_push(&mailbox, &body, now, MAILBOX_DEPTH as u32, MAILBOX_BYTES)
        .await?;
    hub.changed.notify_waiters();
    Ok((StatusCode::CREATED, Json(json!({"seq": seq}))))
}

#[derive(Deserialize)]
pub(crate) struct RelayQuery {
    after: Option<i64>,
    wait: Option<u64>,
}

/// Opens `device`'s pairing window if `headers` carry its pairing-wait token
/// (`Authorization: Custos-Device <hex>`, docs/api.md); without one, nothing happens.
async fn open_window<S: Store>(
    hub: &Hub<S>,
    device: custos_proto::DeviceId,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if !crate::authz::device_token(hub, device, headers, false).await? {
        return Ok(());
    }
    let now = hub.now();
    hub.store.open_pairing(device, now + PAIRING_WINDOW).await?;
    Ok(())
}

/// `GET /v1/pairing/{device}/{direction}?after=SEQ&wait=S`: the mailbox's messages after `after`, waiting up to
/// `wait` seconds for one. A device reading its `to-device` mailbox with its pairing-wait token opens (or keeps
/// open) its pairing window.
pub(crate) async fn relay_get<S: Store>(
    State(hub): State<Arc<Hub<S>>>,
    ApiPath((device, direction)): ApiPath<(String, String)>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<RelayQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let (id, mailbox) = mailbox(&device, &direction)?;
    if direction == "to-device" {
        open_window(&hub, id, &headers).await?;
    }
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(q.wait.unwrap_or(0).min(MAX_WAIT));
    loop {
        let changed = hub.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let got = hub
            .store
            .relay_fetch(&mailbox, q.after.unwrap_or(0), MAILBOX_DEPTH as u32)
            .await?;
        if !got.is_empty() || tokio::time::Instant::now() >= deadline {
            let messages: Vec<_> = got
                .iter()
                .map(|(seq, body)| json!({"seq": seq, "body": hex::encode(body)}))
                .collect();
            return Ok(Json(json!({"messages": messages})));
        }
        wait_for_change(changed, deadline).await;
    }
}

/// Waits for this hub to store something new, for at most 250 ms (another replica may have stored it), or until
/// `deadline`.
pub(crate) async fn wait_for_change(
    changed: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    deadline: tokio::time::Instant,
) {
    let poll = (tokio::time::Instant::now() + Duration::from_millis(250)).min(deadline);
    tokio::select! {
        () = changed => {}
        () = tokio::time::sleep_until(poll) => {}
    }
}
