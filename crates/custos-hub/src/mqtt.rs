//! MQTT ingest: devices publish uplink batches to `{prefix}/{device}/up`; hub replicas share that topic with an
//! MQTT 5 shared subscription (`$share/custos-hub/{prefix}/+/up`), so each batch reaches one hub. The hub answers
//! on `{prefix}/{device}/ack` (the 24-byte acks) or `{prefix}/{device}/error` (JSON), and keeps the signed device
//! list retained on `{prefix}/device-list`.
//!
//! Owner control: each control message a hub queues is also published on `{prefix}/{device}/control`
//! (`id (8) ‖ message`, QoS 1, not retained), and devices may answer on `{prefix}/{device}/answer`
//! (`id (8) ‖ device token (25) ‖ answer`, taken through `$share/custos-hub/{prefix}/+/answer`). The HTTP queue
//! stays the record: MQTT only makes delivery faster.
//!
//! Hubs subscribe at QoS 0, and the session is clean and ends with the connection, so a replica that dies holds
//! nothing back: what was on its way to it is lost with it and resent by its device, which waits for an
//! authenticated ack; a batch stored twice is harmless (the store keeps each sequence number once). QoS 1 would add
//! nothing here (a broker redelivers only to the same session, which dies with the replica) and would cap how fast
//! a hub reads its share: the broker keeps only a few unacknowledged messages in flight to each client, which a
//! flood of junk then fills.

use std::sync::Arc;
use std::time::Duration;

use custos_proto::DeviceId;
use custos_store::Store;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, Publish};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};

use crate::{ApiError, Hub};

/// The largest MQTT packet the hub accepts (and devices send): 1 MiB.
pub const MAX_PACKET: u32 = 1 << 20;

/// The MQTT keep-alive: the broker drops a silent replica's session (and stops handing it batches) after 1.5 of
/// these.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// How many batches one hub stores at once from MQTT.
pub const IN_FLIGHT: usize = 4;
/// How many MQTT batches wait for a worker; past that a batch is acknowledged unstored, and its device, which gets
/// no ack, sends it again.
pub const QUEUED: usize = 256;

/// How the hub reaches the broker.
#[derive(Clone, Debug)]
pub struct MqttConfig {
    /// `mqtt://host:port`, or `mqtts://host:port` over TLS.
    pub url: String,
    /// How the broker's certificate is verified (`mqtts://` only).
    pub trust: custos_client::TlsTrust,
    /// The topic prefix, e.g. `custos`.
    pub prefix: String,
    /// This hub's client id: unique per running replica (two connections with one id take turns kicking each
    /// other off the broker). `custos hub serve` adds a random suffix per start unless told otherwise.
    pub client_id: String,
}

/// Splits `mqtt://host:port` or `mqtts://host:port` (port defaults to 1883, 8883 over TLS); `true` for TLS.
pub fn parse_url(url: &str) -> Result<(String, u16, bool), String> {
    custos_proto::codec::mqtt_broker(url)
        .map(|(host, port, tls)| (host.to_string(), port, tls))
        .map_err(|e| format!("`{url}`: {e}"))
}

/// MQTT over TLS with `trust`: rumqttc's rustls transport, on the config custos-client builds.
pub fn tls_transport(trust: &custos_client::TlsTrust) -> Result<rumqttc::Transport, String> {
    let config = trust.client_config().map_err(|e| e.to_string())?;
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(Arc::new(config)),
    ))
}

/// The device and the last level of `{prefix}/{device}/{tail}`.
fn device_of<'t>(topic: &'t str, prefix: &str) -> Option<(&'t str, &'t str)> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    rest.split_once('/')
}

/// How many device answers one hub handles at once from MQTT; past that an answer is dropped (the device sends it
/// again over HTTP, or the sender asks again).
pub const ANSWERS_IN_FLIGHT: usize = 16;

/// Runs the hub's MQTT side until `shutdown` completes. Reconnects on its own when the broker goes away.
pub async fn run<S: Store + 'static>(
    hub: Arc<Hub<S>>,
    config: MqttConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), String> {
    let (host, port, tls) = parse_url(&config.url)?;
    let mut opts = MqttOptions::new(config.client_id.clone(), host, port);
    if tls {
        opts.set_transport(tls_transport(&config.trust)?);
    }
    // A replica that dies must hold nothing back. With a persistent session the broker kept handing a stopped
    // replica its share of the batches until it came back (and it then acked stale batches). So: a clean start,
    // and a session that ends with the connection. Batches in flight to a replica that dies are lost with its
    // session; their devices resend them when no ack comes, and the store keeps each sequence number once.
    opts.set_clean_start(true);
    opts.set_session_expiry_interval(None);
    // A replica cut off without closing its socket is noticed after 1.5 keep-alives.
    opts.set_keep_alive(KEEP_ALIVE);
    opts.set_manual_acks(true);
    // rumqttc refuses packets over 10 KiB unless told otherwise; a batch of readings is larger.
    opts.set_max_packet_size(Some(MAX_PACKET));
    // Acks are small and awaited: without NODELAY, Nagle and delayed ACKs add tens of milliseconds per batch.
    let mut net = opts.network_options();
    net.set_tcp_nodelay(true);
    opts.set_network_options(net);
    let (client, mut events) = AsyncClient::new(opts, 1024);
    let subscription = format!("$share/custos-hub/{}/+/up", config.prefix);
    let answers = format!("$share/custos-hub/{}/+/answer", config.prefix);
    let mut downlink = hub.downlink.subscribe();
    let answer_turns = Arc::new(tokio::sync::Semaphore::new(ANSWERS_IN_FLIGHT));
    let list_topic = format!("{}/device-list", config.prefix);
    let mut published_list = 0i64;
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    // The connection is read without ever waiting on the store (waiting here would also stop the acks that the
    // store's workers send, through this same loop, and deadlock it). Batches that pass the cheap check queue for
    // IN_FLIGHT workers; past QUEUED of them, a batch is acknowledged unstored (its device sends it again).
    let (work, mut queue) = tokio::sync::mpsc::channel::<(DeviceId, Publish)>(QUEUED);
    let dispatcher = {
        let (hub, client, prefix) = (hub.clone(), client.clone(), config.prefix.clone());
        tokio::spawn(async move {
            let permits = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
            while let Some((device, p)) = queue.recv().await {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let (hub, client, prefix) = (hub.clone(), client.clone(), prefix.clone());
                tokio::spawn(async move {
                    handle(&hub, &client, &prefix, device, p).await;
                    drop(permit);
                });
            }
        })
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            queued = downlink.recv() => match queued {
                // The message is also in the device's HTTP queue: a publish lost here (or skipped because this
                // loop lagged) is fetched there.
                Ok(d) => {
                    let (topic, payload) = match d.topic {
                        crate::control::DownlinkTopic::Control => {
                            let mut payload = u64::try_from(d.id).unwrap_or(0).to_be_bytes().to_vec();
                            payload.extend_from_slice(&d.message);
                            (format!("{}/{}/control", config.prefix, d.device), payload)
                        }
                        crate::control::DownlinkTopic::Keys => {
                            (format!("{}/{}/keys", config.prefix, d.device), d.message)
                        }
                    };
                    if let Err(e) = client.try_publish(topic, QoS::AtLeastOnce, false, payload) {
                        tracing::debug!(%e, "a control message was not published over MQTT");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "control messages not published over MQTT: the loop lagged");
                }
                // The hub holds the sender as long as this loop holds the hub.
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            },
            _ = tick.tick() => {
                // Keep the retained device list current, whichever hub or command changed it.
                if let Ok(Some((version, signed))) = hub.store.device_list().await
                    && version > published_list
                        && client.try_publish(list_topic.clone(), QoS::AtLeastOnce, true, signed).is_ok()
                    {
                        published_list = version;
                    }
            }
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    tracing::info!(broker = %config.url, "connected to the MQTT broker");
                    for topic in [&subscription, &answers] {
                        if let Err(e) = client.try_subscribe(topic.clone(), QoS::AtMostOnce) {
                            tracing::warn!(%e, "subscribing failed");
                        }
                    }
                    published_list = 0;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    let parsed = device_of(&topic, &config.prefix);
                    if let Some((device, "answer")) = parsed {
                        let device = device.parse::<DeviceId>().ok();
                        take_answer(&hub, &client, &answer_turns, device, &topic, p);
                        continue;
                    }
                    let device = parsed
                        .filter(|(_, tail)| *tail == "up")
                        .and_then(|(d, _)| d.parse().ok());
                    let checked = device
                        .ok_or_else(|| ApiError::BadRequest(format!("`{topic}` names no device")))
                        .and_then(|d| crate::routes::precheck(&hub, d, &p.payload).map(|()| d));
                    let device = match checked {
                        Ok(d) => d,
                        Err(e) => {
                            count_junk(&hub, &topic, &e);
                            let _ = client.try_ack(&p);
                            continue;
                        }
                    };
                    if let Err(tokio::sync::mpsc::error::TrySendError::Full((_, p))) =
                        work.try_send((device, p))
                    {
                        let shed = hub.shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                        if shed.is_power_of_two() {
                            tracing::warn!(shed, "MQTT batches acknowledged unstored: the store is behind");
                        }
                        let _ = client.try_ack(&p);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(%e, "MQTT connection lost; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
    dispatcher.abort();
    let _ = client.disconnect().await;
    Ok(())
}

/// Takes a device's answer from `{prefix}/{device}/answer` (`id (8) ‖ device token (25) ‖ answer`) without
/// waiting on the store: a forgery for a device whose link keys this hub holds is dropped on its token's MAC,
/// the rest is stored by a task, [`ANSWERS_IN_FLIGHT`] at a time. Nothing is published back: the device learns
/// nothing from the hub here (it may send the answer again over HTTP: `409` means it is there).
fn take_answer<S: Store + 'static>(
    hub: &Arc<Hub<S>>,
    client: &AsyncClient,
    turns: &Arc<tokio::sync::Semaphore>,
    device: Option<DeviceId>,
    topic: &str,
    p: Publish,
) {
    let _ = client.try_ack(&p);
    let checked = device
        .ok_or_else(|| ApiError::BadRequest(format!("`{topic}` names no device")))
        .and_then(|d| {
            let (_, token, _) = crate::control::split_mqtt_answer(&p.payload)?;
            if let Some(keys) = hub.link_keys(d) {
                custos_proto::uplink::open_pairing_wait(&custos_proto::RustCrypto, &keys, d, token)
                    .map_err(|_| {
                        ApiError::Unauthorized("the device token does not verify".into())
                    })?;
            }
            Ok(d)
        });
    let device = match checked {
        Ok(d) => d,
        Err(e) => return count_junk(hub, topic, &e),
    };
    let Ok(turn) = turns.clone().try_acquire_owned() else {
        hub.shed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(%device, "an MQTT answer was dropped: too many in flight");
        return;
    };
    let (hub, topic) = (hub.clone(), topic.to_string());
    tokio::spawn(async move {
        match crate::control::mqtt_answer(&hub, device, &p.payload).await {
            Ok(id) => tracing::debug!(%device, id, "answer taken over MQTT"),
            Err(e @ (ApiError::BadRequest(_) | ApiError::Unauthorized(_))) => {
                count_junk(&hub, &topic, &e);
            }
            Err(ApiError::Internal(detail)) => {
                tracing::error!(%detail, %device, "an MQTT answer was not stored");
            }
            Err(e) => tracing::info!(%device, %e, "an MQTT answer was refused"),
        }
        drop(turn);
    });
}

/// Counts a batch dropped as junk, logging at powers of two.
fn count_junk<S>(hub: &Hub<S>, topic: &str, e: &ApiError) {
    let n = hub.junk.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    if n.is_power_of_two() {
        tracing::warn!(%topic, %e, junk = n, "unauthenticated or malformed MQTT batches dropped so far");
    }
}

/// Stores one batch and answers the device; acknowledges it to the broker once it is settled.
async fn handle<S: Store>(
    hub: &Hub<S>,
    client: &AsyncClient,
    prefix: &str,
    device: DeviceId,
    p: Publish,
) {
    let topic = String::from_utf8_lossy(&p.topic).into_owned();
    let reply = crate::routes::ingest(hub, device, &p.payload, "mqtt").await;
    match reply {
        Ok(acks) => {
            let _ = client
                .publish(
                    format!("{prefix}/{device}/ack"),
                    QoS::AtLeastOnce,
                    false,
                    acks,
                )
                .await;
            let _ = client.ack(&p).await;
        }
        // Junk (a batch that does not parse or authenticate) may be anyone's: it gets no answer, which would only
        // double the broker's load, and the device acts on authenticated acks alone.
        Err(e @ (ApiError::BadRequest(_) | ApiError::Unauthorized(_))) => {
            count_junk(hub, &topic, &e);
            let _ = client.ack(&p).await;
        }
        // A refusal, or the store failed: the device resends what got no ack.
        Err(e) => {
            if let ApiError::Internal(detail) = &e {
                tracing::error!(%detail, %device, "batch not stored; the device will send it again");
            }
            let body = serde_json::json!({"error": e.code(), "message": e.to_string()}).to_string();
            let _ = client
                .publish(
                    format!("{prefix}/{device}/error"),
                    QoS::AtLeastOnce,
                    false,
                    body,
                )
                .await;
            let _ = client.ack(&p).await;
        }
    }
}
