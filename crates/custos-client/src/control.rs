//! Owner control through the hub (docs/api.md, "Control"): the device's queue of control messages, their
//! answers, and claims. The hub carries these bytes and can open none of them (docs/wire.md §11).

use std::time::Duration;

use custos_proto::DeviceId;

use crate::{ClientError, HubClient, custos_max_wait, json};

/// A control message waiting for a device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queued {
    /// Its id at the hub.
    pub id: i64,
    /// The message (a command, a list of authorized senders or a claim).
    pub body: Vec<u8>,
}

/// Where a control message is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Its id at the hub.
    pub id: i64,
    /// The device's answer, once it came.
    pub answer: Option<Vec<u8>>,
    /// The message expired before the device answered.
    pub expired: bool,
    /// Whether the device is online (seen within the hub's threshold).
    pub online: bool,
}

pub(crate) fn wait_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).min(custos_max_wait())
}

impl HubClient {
    async fn send_json(
        &self,
        req: reqwest::RequestBuilder,
        auth: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let resp = req
            .header("authorization", auth)
            .send()
            .await
            .map_err(crate::unreachable)?;
        let body = Self::finish(resp).await?;
        if body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        json(&body)
    }

    /// The device's control messages after `after`, waiting up to `wait` for one; the call is also the device's
    /// heartbeat, carrying its actuator `state` (sent hex-encoded). `auth` is its device token (`Custos-Device <hex>`).
    pub async fn control_fetch(
        &self,
        device: DeviceId,
        after: i64,
        wait: Duration,
        state: Option<&str>,
        auth: &str,
    ) -> Result<Vec<Queued>, ClientError> {
        // The state travels hex-encoded: it is UTF-8 text, and hex needs no escaping in a query.
        let state = state.map_or(String::new(), |s| format!("&state={}", hex::encode(s)));
        let req = self.http.get(format!(
            "{}/v1/devices/{device}/control?after={after}&wait={}{state}",
            self.base,
            wait_secs(wait)
        ));
        let v = self.send_json(req, auth).await?;
        let mut out = Vec::new();
        for m in v["messages"].as_array().into_iter().flatten() {
            if let (Some(id), Some(body)) = (
                m["id"].as_i64(),
                m["body"].as_str().and_then(|h| hex::decode(h).ok()),
            ) {
                out.push(Queued { id, body });
            }
        }
        Ok(out)
    }

    /// The device's answer to control message `id` (device token in `auth`).
    pub async fn control_answer(
        &self,
        device: DeviceId,
        id: i64,
        answer: &[u8],
        auth: &str,
    ) -> Result<(), ClientError> {
        let req = self
            .http
            .post(format!(
                "{}/v1/devices/{device}/control/{id}/answer",
                self.base
            ))
            .header("content-type", "application/octet-stream")
            .body(answer.to_vec());
        self.send_json(req, auth).await.map(drop)
    }

    /// Queues `message` for `device`, as the account of session `auth` (`Bearer <token>`). Returns its id.
    pub async fn control_send(
        &self,
        device: DeviceId,
        message: &[u8],
        auth: &str,
    ) -> Result<i64, ClientError> {
        let req = self
            .http
            .post(format!("{}/v1/devices/{device}/control", self.base))
            .header("content-type", "application/octet-stream")
            .body(message.to_vec());
        let v = self.send_json(req, auth).await?;
        v["id"]
            .as_i64()
            .ok_or_else(|| ClientError::Unreachable("the hub's answer has no id".into()))
    }

    /// Where control message `id` is, waiting up to `wait` for the device's answer.
    pub async fn control_result(
        &self,
        device: DeviceId,
        id: i64,
        wait: Duration,
        auth: &str,
    ) -> Result<Delivery, ClientError> {
        let req = self.http.get(format!(
            "{}/v1/devices/{device}/control/{id}?wait={}",
            self.base,
            wait_secs(wait)
        ));
        let v = self.send_json(req, auth).await?;
        Ok(Delivery {
            id,
            answer: v["answer"].as_str().and_then(|h| hex::decode(h).ok()),
            expired: v["status"].as_str() == Some("expired"),
            online: v["online"].as_bool().unwrap_or(false),
        })
    }

    /// Starts claiming `device` for the account of session `auth`: the hub's one-time claim token, which the
    /// owner's keeper seals under the user–device key (docs/wire.md §11).
    pub async fn claim_start(&self, device: DeviceId, auth: &str) -> Result<[u8; 16], ClientError> {
        let req = self
            .http
            .post(format!("{}/v1/devices/{device}/claim", self.base));
        let v = self.send_json(req, auth).await?;
        let mut token = [0u8; 16];
        v["token"]
            .as_str()
            .and_then(|h| hex::decode_to_slice(h, &mut token).ok())
            .ok_or_else(|| {
                ClientError::Unreachable("the hub's answer has no claim token".into())
            })?;
        Ok(token)
    }

    /// `method path` with a JSON body (or none) as the account of session `auth`; the JSON answer (`null` when
    /// the hub sends none).
    pub async fn account_call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
        auth: &str,
    ) -> Result<serde_json::Value, ClientError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        self.send_json(req, auth).await
    }
}
