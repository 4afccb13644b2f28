//! Who may read what (docs/api.md, "Who may call what"). A caller is the operator (its token), an account (a
//! session), an application (an access token signed by its key) or a device (its device token); [`Caller`] says
//! which, and [`Caller::may_see`] whether it may see a device.
//!
//! The rules: the operator sees every device; an account sees the devices it owns and those shared with it (view
//! or control); an application sees only the records in spans a grant gave its key (the grant index, filled at
//! `POST /v1/answers`); a device sees the device list. No credential is `401`; a credential that checks but may not
//! see the device is `404`, the answer for a device that does not exist, so nobody learns which ids are admitted.
//! This module must never let a failed check fall through to a wider one: each scheme is tried alone.

use axum::http::{HeaderMap, header};
use custos_proto::sharing::AccessToken;
use custos_proto::uplink::LinkKeys;
use custos_proto::{DeviceId, RustCrypto, Secret, UnixTime};
use custos_store::{Rights, Store};

use crate::accounts::{Account, bearer, cookie, is_operator_token, session_account};
use crate::{ApiError, Hub};

/// How far a device token's time may be from the hub's clock, seconds.
pub const DEVICE_TOKEN_SKEW: i64 = crate::sharing::PAIRING_SKEW;

/// Who is calling.
#[derive(Clone, Debug)]
pub enum Caller {
    /// The hub's operator: `Authorization: Bearer <operator token>`.
    Operator,
    /// An account: `Authorization: Bearer <session token>` or the session cookie.
    Account(Account),
    /// An application: `Authorization: Custos <hex access token>`, signed by this key for this operation.
    App([u8; 32]),
}

/// An account's relation to a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relation {
    /// The account owns the device.
    Owner,
    /// The device is shared with the account.
    Shared(Rights),
}

/// The scope of an application's access token for reading `device`'s records.
pub fn records_scope(device: DeviceId) -> String {
    format!("GET /v1/devices/{device}/records")
}

/// The 404 for a device the caller may not see (or that does not exist).
pub(crate) fn unseen(device: DeviceId) -> ApiError {
    ApiError::NotFound(format!("no device {device} that you may see"))
}

impl Caller {
    /// The caller of a request, from its headers. `app_scope`: the operation an application's token must name
    /// here, or `None` where applications may not call.
    pub(crate) async fn of<S: Store>(
        hub: &Hub<S>,
        headers: &HeaderMap,
        app_scope: Option<&str>,
    ) -> Result<Self, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return match cookie(headers) {
                Some(token) => Ok(Self::Account(session_account(hub, token).await?)),
                None => Err(ApiError::Unauthorized(
                    "send a credential: a session (`Authorization: Bearer <session token>` or the cookie), \
                     the operator token, or an application's access token"
                        .into(),
                )),
            };
        };
        if let Some(token) = bearer(headers) {
            if is_operator_token(hub, token) {
                return Ok(Self::Operator);
            }
            return Ok(Self::Account(session_account(hub, token).await?));
        }
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Custos "))
            .ok_or_else(|| {
                ApiError::Unauthorized("unknown authorization scheme (docs/api.md)".into())
            })?;
        let scope = app_scope.ok_or_else(|| {
            ApiError::Unauthorized(
                "applications may not call this endpoint: send a session or the operator token"
                    .into(),
            )
        })?;
        let token = hex::decode(token.trim())
            .map_err(|_| ApiError::Unauthorized("the access token is not hex".into()))?;
        let now = u64::try_from(hub.now())
            .ok()
            .and_then(|s| UnixTime::new(s).ok())
            .ok_or_else(|| ApiError::Internal("the hub's clock is out of range".into()))?;
        let token = AccessToken::verify_self_signed(&RustCrypto, &token, scope, now).map_err(|e| {
            match e {
                custos_proto::Error::Expired => ApiError::Unauthorized(
                    "the access token is too old or from the future (check the application's clock)".into(),
                ),
                other => ApiError::Unauthorized(format!("access token refused: {other}")),
            }
        })?;
        Ok(Self::App(token.owner))
    }

    /// Whether this caller may see `device` as a whole (presence, gaps, state, every record): the operator, and
    /// an account that owns it or has a share. An application never does (it sees granted spans only).
    pub(crate) async fn may_see<S: Store>(
        &self,
        hub: &Hub<S>,
        device: DeviceId,
    ) -> Result<bool, ApiError> {
        Ok(match self {
            Self::Operator => true,
            Self::Account(a) => relation(hub, a.id, device).await?.is_some(),
            Self::App(_) => false,
        })
    }
}

/// `account`'s relation to `device`, if any.
pub async fn relation<S: Store>(
    hub: &Hub<S>,
    account: i64,
    device: DeviceId,
) -> Result<Option<Relation>, ApiError> {
    if hub.store().owner(device).await? == Some(account) {
        return Ok(Some(Relation::Owner));
    }
    Ok(hub
        .store()
        .shares_of(device)
        .await?
        .into_iter()
        .find(|(a, _)| *a == account)
        .map(|(_, r)| Relation::Shared(r)))
}

/// Checks a device token, `Authorization: Custos-Device <hex of 34 ‖ time (8) ‖ tag (16)>` (the pairing-wait
/// token of docs/api.md: a MAC under the device's link key), for `device`. `Ok(false)` without an `Authorization`
/// header; `401` for another scheme, a tag that does not verify or a time more than [`DEVICE_TOKEN_SKEW`] from the
/// hub's clock; `403` for a device not admitted, or revoked unless `revoked_ok`.
pub(crate) async fn device_token<S: Store>(
    hub: &Hub<S>,
    device: DeviceId,
    headers: &HeaderMap,
    revoked_ok: bool,
) -> Result<bool, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(false);
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Custos-Device "))
        .and_then(|v| hex::decode(v.trim()).ok())
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "expected `Authorization: Custos-Device <hex device token>`".into(),
            )
        })?;
    let stored = hub
        .store()
        .device(device)
        .await?
        .filter(|d| revoked_ok || d.revoked_at.is_none())
        .ok_or_else(|| ApiError::Forbidden(format!("device {device} is not admitted")))?;
    let keys = LinkKeys::derive(&RustCrypto, &Secret::from_bytes(stored.session_key))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let time = custos_proto::uplink::open_pairing_wait(&RustCrypto, &keys, device, &token)
        .map_err(|_| ApiError::Unauthorized("the device token does not verify".into()))?;
    let now = hub.now();
    if i64::try_from(time).map_or(true, |t| (t - now).abs() > DEVICE_TOKEN_SKEW) {
        return Err(ApiError::Unauthorized(
            "the device token is too old or from the future (check the device's clock)".into(),
        ));
    }
    Ok(true)
}
