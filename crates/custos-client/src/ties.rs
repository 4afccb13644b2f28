//! Device-to-device keys through the hub (docs/api.md, "Device-to-device keys"; docs/wire.md §12). Requests and
//! receipts authenticate themselves; the reads take the device token. The hub carries packages it cannot open.

use std::time::Duration;

use custos_proto::DeviceId;

use crate::{ClientError, HubClient, json, unreachable};

/// What the hub answered to a key request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyAnswer {
    /// Issued: the packages for the requester (a KDC grant first, then, for indirect requests, the deliveries to
    /// forward, in the order of the request's peers).
    Issued(Vec<Vec<u8>>),
    /// Refused, with the hub's refusal message (docs/wire.md §12, type `4f`) for the requester to authenticate.
    Refused {
        /// HTTP status.
        status: u16,
        /// The refusal message.
        refusal: Vec<u8>,
        /// The hub's text.
        message: String,
    },
}

/// A delivery waiting for a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaitingPackage {
    /// Who asked for the key.
    pub requester: DeviceId,
    /// The key id.
    pub kid: [u8; 8],
    /// The package (type `48`).
    pub body: Vec<u8>,
}

/// A peer of a key, as the hub reports it to the requester.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The peer.
    pub peer: DeviceId,
    /// The hub's notice (type `4b`) that the peer holds the key, once its receipt came.
    pub notice: Option<Vec<u8>>,
}

fn hex_field(v: &serde_json::Value) -> Option<Vec<u8>> {
    v.as_str().and_then(|h| hex::decode(h).ok())
}

impl HubClient {
    /// Sends a key request (it authenticates itself).
    pub async fn key_request(
        &self,
        device: DeviceId,
        request: &[u8],
    ) -> Result<KeyAnswer, ClientError> {
        let resp = self
            .http
            .post(format!("{}/v1/devices/{device}/keys", self.base))
            .header("content-type", "application/octet-stream")
            .body(request.to_vec())
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(unreachable)?;
        if (200..300).contains(&status) {
            let v = json(&body)?;
            let mut packages = Vec::new();
            for p in v["packages"].as_array().into_iter().flatten() {
                packages.push(hex_field(p).ok_or_else(|| {
                    ClientError::Unreachable(
                        "the hub's answer has a package that is not hex".into(),
                    )
                })?);
            }
            return Ok(KeyAnswer::Issued(packages));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        match hex_field(&v["refusal"]) {
            Some(refusal) => Ok(KeyAnswer::Refused {
                status,
                refusal,
                message: crate::hub_message(&body),
            }),
            None => Err(crate::refusal(status, &body)),
        }
    }

    /// The deliveries waiting for `device`, waiting up to `wait` for one (device token in `auth`).
    pub async fn key_fetch(
        &self,
        device: DeviceId,
        wait: Duration,
        auth: &str,
    ) -> Result<Vec<WaitingPackage>, ClientError> {
        let body = self
            .get(
                &format!(
                    "/v1/devices/{device}/keys?wait={}",
                    crate::control::wait_secs(wait)
                ),
                Some(auth),
            )
            .await?;
        let v = json(&body)?;
        let mut out = Vec::new();
        for p in v["packages"].as_array().into_iter().flatten() {
            let requester = p["requester"].as_str().and_then(|t| t.parse().ok());
            let kid = hex_field(&p["kid"]).and_then(|k| <[u8; 8]>::try_from(k).ok());
            if let (Some(requester), Some(kid), Some(body)) =
                (requester, kid, hex_field(&p["body"]))
            {
                out.push(WaitingPackage {
                    requester,
                    kid,
                    body,
                });
            }
        }
        Ok(out)
    }

    /// Sends a receipt (it authenticates itself): `device` holds a key.
    pub async fn key_receipt(&self, device: DeviceId, receipt: &[u8]) -> Result<(), ClientError> {
        self.post(
            &format!("/v1/devices/{device}/keys/receipts"),
            receipt.to_vec(),
        )
        .await
        .map(drop)
    }

    /// Registers `device`'s TPM storage parent (a TPM parent registration, docs/wire.md §12): from then on the hub
    /// delivers its keys as TPM import blobs.
    pub async fn key_tpm_parent(
        &self,
        device: DeviceId,
        registration: &[u8],
    ) -> Result<(), ClientError> {
        self.put(
            &format!("/v1/devices/{device}/keys/tpm"),
            registration.to_vec(),
        )
        .await
        .map(drop)
    }

    /// Which peers hold key `kid` of `device`, waiting up to `wait` until all do (the requester's device token in
    /// `auth`).
    pub async fn key_status(
        &self,
        device: DeviceId,
        kid: &[u8; 8],
        wait: Duration,
        auth: &str,
    ) -> Result<Vec<PeerStatus>, ClientError> {
        let body = self
            .get(
                &format!(
                    "/v1/devices/{device}/keys/{}?wait={}",
                    hex::encode(kid),
                    crate::control::wait_secs(wait)
                ),
                Some(auth),
            )
            .await?;
        let v = json(&body)?;
        let mut out = Vec::new();
        for p in v["peers"].as_array().into_iter().flatten() {
            let Some(peer) = p["peer"].as_str().and_then(|t| t.parse().ok()) else {
                return Err(ClientError::Unreachable(
                    "the hub's answer names a peer that is not a device id".into(),
                ));
            };
            out.push(PeerStatus {
                peer,
                notice: hex_field(&p["notice"]),
            });
        }
        Ok(out)
    }
}
