//! The hub's infield identity registry (docs/registry.md §9): at admission the hub asks it for the device's
//! certificate, and it polls the registry's statuses to revoke a device whose status turns to stolen or destroyed.
//!
//! The registry is the operator's own (next to the hub, or reached over TLS), so the hub takes its answers as
//! they come: the registry has already checked every signature under its policy.

use std::sync::Arc;
use std::time::Duration;

use custos_client::HubClient;
use custos_proto::DeviceId;
use custos_store::Store;
use serde::Deserialize;

use crate::{ApiError, Hub};

/// Statuses that end a device: the hub refuses its admission and revokes it.
pub const BAD_STATUSES: &[&str] = &["stolen", "destroyed"];

/// How the hub uses its registry.
#[derive(Clone, Debug)]
pub struct RegistryLink {
    client: HubClient,
    /// Refuse devices without a manufacturer-certified identity for their admission key (else only refuse those
    /// with a bad status).
    pub require_identity: bool,
}

impl RegistryLink {
    /// A link to the registry at `url`.
    pub fn new(url: &str, require_identity: bool) -> Result<Self, custos_client::ClientError> {
        Ok(Self {
            client: HubClient::new(url, Duration::from_secs(10), &Default::default())?,
            require_identity,
        })
    }
}

#[derive(Deserialize)]
struct DeviceAnswer {
    certificates: Vec<DeviceCert>,
}

#[derive(Deserialize)]
struct DeviceCert {
    fingerprint: String,
    x25519: Option<String>,
    roles: Vec<String>,
    status: Option<String>,
}

/// What the registry says of a device and its admission key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A manufacturer-certified certificate for this key, in good standing.
    Certified {
        /// Its fingerprint.
        fingerprint: String,
    },
    /// A certificate for this key with a status that ends it.
    Ended {
        /// Its fingerprint.
        fingerprint: String,
        /// The status.
        status: String,
    },
    /// No manufacturer-certified certificate for this key.
    Unknown,
}

impl RegistryLink {
    /// Asks the registry about `device` with admission key `static_key`.
    pub async fn identity(
        &self,
        device: DeviceId,
        static_key: &[u8; 32],
    ) -> Result<Identity, custos_client::ClientError> {
        let body = self
            .client
            .get(&format!("/registry/v1/devices/{device}"), None)
            .await?;
        let answer: DeviceAnswer = serde_json::from_slice(&body).map_err(|e| {
            custos_client::ClientError::Unreachable(format!("registry answer: {e}"))
        })?;
        let key = hex::encode(static_key);
        let mut found = Identity::Unknown;
        for c in answer
            .certificates
            .into_iter()
            .filter(|c| c.x25519.as_deref() == Some(key.as_str()))
        {
            // A bad status on any certificate of this key ends it, whoever else certified it.
            if let Some(status) = c.status.filter(|s| BAD_STATUSES.contains(&s.as_str())) {
                return Ok(Identity::Ended {
                    fingerprint: c.fingerprint,
                    status,
                });
            }
            if c.roles.iter().any(|r| r == "manufacturer") {
                found = Identity::Certified {
                    fingerprint: c.fingerprint,
                };
            }
        }
        Ok(found)
    }
}

/// The admission check: refuses a device whose key has a bad status, or (if required) no certified identity.
pub(crate) async fn check_admission(
    link: &RegistryLink,
    device: DeviceId,
    static_key: &[u8; 32],
) -> Result<(), ApiError> {
    match link.identity(device, static_key).await {
        Ok(Identity::Certified { .. }) => Ok(()),
        Ok(Identity::Ended {
            fingerprint,
            status,
        }) => Err(ApiError::Forbidden(format!(
            "the registry marks this device's certificate {fingerprint} {status}"
        ))),
        Ok(Identity::Unknown) if link.require_identity => Err(ApiError::Forbidden(
            "the registry holds no manufacturer-certified identity for this device's key".into(),
        )),
        Ok(Identity::Unknown) => Ok(()),
        Err(e) => {
            // Fail closed: a hub told to consult its registry does not admit blind.
            tracing::warn!(%e, %device, "registry unreachable at admission");
            Err(ApiError::Busy)
        }
    }
}

#[derive(Deserialize)]
struct StatusesAnswer {
    next: u64,
    statuses: Vec<StatusItem>,
}

#[derive(Deserialize)]
struct StatusItem {
    device: Option<String>,
    current: Option<String>,
}

/// One round of the status watch: reads the registry's statuses from `from` on and revokes every admitted device
/// whose current status ends it (republishing the signed device list once). Returns where to read next.
pub async fn revoke_by_status<S: Store>(
    hub: &Arc<Hub<S>>,
    link: &RegistryLink,
    mut from: u64,
) -> Result<u64, String> {
    let mut revoked = 0;
    loop {
        let body = link
            .client
            .get(&format!("/registry/v1/statuses?from={from}"), None)
            .await
            .map_err(|e| e.to_string())?;
        let answer: StatusesAnswer = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        for item in &answer.statuses {
            let (Some(device), Some(current)) = (&item.device, &item.current) else {
                continue;
            };
            if !BAD_STATUSES.contains(&current.as_str()) {
                continue;
            }
            let Ok(device) = device.parse::<DeviceId>() else {
                continue;
            };
            // Devices of the registry that this hub never admitted are none of its business.
            let changed = match hub.store().revoke(device, hub.now()).await {
                Ok(changed) => changed,
                Err(custos_store::StoreError::UnknownDevice(_)) => false,
                Err(e) => return Err(e.to_string()),
            };
            if changed {
                tracing::warn!(%device, status = %current, "revoked: the registry marks the device {current}");
                revoked += 1;
            }
        }
        if answer.next == from {
            break;
        }
        from = answer.next;
    }
    if revoked > 0 {
        hub.publish_device_list()
            .await
            .map_err(|e| format!("device list: {e}"))?;
    }
    Ok(from)
}
