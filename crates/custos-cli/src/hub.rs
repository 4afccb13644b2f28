//! `custos hub …`: run the hub, and the operator's commands on its store.
//!
//! Settings come from flags, then environment variables, then a TOML config file (`--config`), then defaults:
//! `data_dir = "custos-hub"`, `listen = "127.0.0.1:7180"`, no `database` (SQLite in the data directory).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use custos_hub::Hub;
use custos_hub::serve::{self, ServeConfig};
use custos_proto::{DeviceId, UnixTime};
use custos_store::{AnyStore, PendingAdmission, Store};
use serde::Deserialize;
use serde_json::json;

/// The hub's subcommands.
#[derive(Subcommand)]
pub enum HubCmd {
    /// Run the hub's HTTP API until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Register a device's join code, so that it can join once before the code expires.
    Admit(AdmitArgs),
    /// Revoke a device: the hub refuses its messages and drops it from the signed device list.
    Revoke(DeviceArgs),
    /// List admitted devices with their presence.
    Devices(DevicesArgs),
}

/// Where the hub's state is.
#[derive(Args)]
pub struct HubLocation {
    /// The hub's data directory (keys; the SQLite database unless --database is given) [default: custos-hub].
    #[arg(long, env = "CUSTOS_HUB_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// A PostgreSQL URL to store in instead of SQLite, e.g. postgres://user@host/db.
    #[arg(long, env = "CUSTOS_DATABASE_URL")]
    database: Option<String>,
    /// A TOML file with data_dir, listen and database.
    #[arg(long, env = "CUSTOS_HUB_CONFIG")]
    config: Option<PathBuf>,
}

/// `custos hub serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    at: HubLocation,
    /// Address to listen on [default: 127.0.0.1:7180]; port 0 picks a free one.
    #[arg(long, env = "CUSTOS_HUB_LISTEN")]
    listen: Option<SocketAddr>,
    /// Also take uplinks from this MQTT broker, e.g. mqtt://127.0.0.1:1883.
    #[arg(long, env = "CUSTOS_MQTT_URL")]
    mqtt: Option<String>,
    /// The MQTT topic prefix [default: custos].
    #[arg(long, env = "CUSTOS_MQTT_PREFIX")]
    mqtt_prefix: Option<String>,
    /// The hub's MQTT client id, unique per running replica [default: from the hub's key plus a random suffix
    /// per start].
    #[arg(long, env = "CUSTOS_MQTT_CLIENT_ID")]
    mqtt_client_id: Option<String>,
}

/// `custos hub admit`.
#[derive(Args)]
pub struct AdmitArgs {
    #[command(flatten)]
    at: HubLocation,
    /// The device id from its label.
    #[arg(long)]
    device: DeviceId,
    /// The join code from its label (32 hex digits, dashes optional).
    #[arg(long)]
    code: String,
    /// How long the code stays valid: 30m, 12h, 7d.
    #[arg(long, default_value = "7d")]
    expires_in: String,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// A device to act on.
#[derive(Args)]
pub struct DeviceArgs {
    #[command(flatten)]
    at: HubLocation,
    /// The device id.
    #[arg(long)]
    device: DeviceId,
}

/// `custos hub devices`.
#[derive(Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    at: HubLocation,
    /// A device not heard from for this long is offline: 30s, 5m, 1h.
    #[arg(long, default_value = "5m")]
    offline_after: String,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    database: Option<String>,
    mqtt: Option<String>,
    mqtt_prefix: Option<String>,
    mqtt_client_id: Option<String>,
}

fn config_file(path: Option<&Path>) -> Result<ConfigFile> {
    let Some(path) = path else {
        return Ok(ConfigFile::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config {}", path.display()))
}

impl HubLocation {
    fn resolve(&self) -> Result<(PathBuf, Option<String>, ConfigFile)> {
        let file = config_file(self.config.as_deref())?;
        let data_dir = self
            .data_dir
            .clone()
            .or_else(|| file.data_dir.clone())
            .unwrap_or_else(|| "custos-hub".into());
        let database = self.database.clone().or_else(|| file.database.clone());
        Ok((data_dir, database, file))
    }

    async fn open(&self) -> Result<(AnyStore, custos_hub::HubKeys)> {
        let (data_dir, database, _) = self.resolve()?;
        Ok(serve::open(&data_dir, database.as_deref()).await?)
    }
}

/// `30s`, `5m`, `12h`, `7d` → seconds.
fn duration(text: &str) -> Result<i64> {
    let bad = || anyhow::anyhow!("`{text}` is not a duration: use 30s, 5m, 12h or 7d");
    let split = text
        .len()
        .checked_sub(1)
        .filter(|&i| text.is_char_boundary(i))
        .ok_or_else(bad)?;
    let (n, unit) = text.split_at(split);
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let n: i64 = n.parse().map_err(|_| bad())?;
    if n <= 0 {
        return Err(bad());
    }
    n.checked_mul(unit).ok_or_else(bad)
}

fn now() -> Result<i64> {
    Ok(i64::try_from(crate::timearg::now()?.secs())?)
}

fn show(t: i64) -> String {
    u64::try_from(t)
        .ok()
        .and_then(|s| UnixTime::new(s).ok())
        .map_or_else(|| t.to_string(), |t| t.to_string())
}

/// Runs a hub subcommand.
pub fn run(cmd: HubCmd) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        match cmd {
            HubCmd::Serve(a) => serve_cmd(a).await,
            HubCmd::Admit(a) => admit(a).await,
            HubCmd::Revoke(a) => revoke(a).await,
            HubCmd::Devices(a) => devices(a).await,
        }
    })
}

async fn serve_cmd(a: ServeArgs) -> Result<()> {
    crate::init_logs();
    let (data_dir, database, file) = a.at.resolve()?;
    let listen = a
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7180)));
    let mqtt = match a.mqtt.clone().or(file.mqtt.clone()) {
        None => None,
        Some(url) => {
            custos_hub::mqtt::parse_url(&url).map_err(anyhow::Error::msg)?;
            serve::open(&data_dir, database.as_deref())
                .await?
                .0
                .close()
                .await;
            let keys = custos_hub::HubKeys::load_or_create(&data_dir)
                .with_context(|| format!("{}", data_dir.display()));
            let client_id = match a.mqtt_client_id.clone().or(file.mqtt_client_id.clone()) {
                Some(id) => id,
                // Unique per running process: replicas may share keys, and a restarted one is a new session.
                None => {
                    let mut suffix = [0u8; 4];
                    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut suffix);
                    format!(
                        "custos-hub-{}-{}",
                        hex::encode(&keys?.noise_public()[..6]),
                        hex::encode(suffix)
                    )
                }
            };
            let prefix = a
                .mqtt_prefix
                .clone()
                .or(file.mqtt_prefix.clone())
                .unwrap_or_else(|| "custos".into());
            Some(custos_hub::mqtt::MqttConfig {
                url,
                prefix,
                client_id,
            })
        }
    };
    let config = ServeConfig {
        data_dir,
        listen,
        database,
        mqtt,
    };
    serve::serve(&config, serve::shutdown_signal(), |addr| {
        // One line on stdout that scripts and tests read to find the hub.
        println!("listening on http://{addr}");
    })
    .await?;
    Ok(())
}

async fn admit(a: AdmitArgs) -> Result<()> {
    let code = custos_device::parse_code(&a.code)
        .context("the join code must be 32 hex digits (dashes optional)")?;
    let ttl = duration(&a.expires_in)?;
    let (store, _) = a.at.open().await?;
    let now = now()?;
    let expires_at = now + ttl;
    store
        .put_admission(&PendingAdmission {
            device: a.device,
            join_code: code,
            created_at: now,
            expires_at,
        })
        .await?;
    store.close().await;
    if a.json {
        println!(
            "{}",
            json!({"device": a.device.to_string(), "expires_at": show(expires_at)})
        );
    } else {
        eprintln!(
            "device {} may join once until {}",
            a.device,
            show(expires_at)
        );
    }
    Ok(())
}

async fn revoke(a: DeviceArgs) -> Result<()> {
    let (store, keys) = a.at.open().await?;
    let changed = store.revoke(a.device, now()?).await?;
    if changed {
        let hub = Hub::new(store.clone(), keys);
        let list = hub
            .publish_device_list()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        eprintln!(
            "device {} revoked; device list version {} signed without it",
            a.device, list.version
        );
    } else {
        eprintln!("device {} was already revoked", a.device);
    }
    store.close().await;
    Ok(())
}

async fn devices(a: DevicesArgs) -> Result<()> {
    let threshold = duration(&a.offline_after)?;
    let (store, _) = a.at.open().await?;
    let devices = store.devices().await?;
    let presence = store.presence().await?;
    store.close().await;
    let now = now()?;
    let rows: Vec<_> = devices
        .iter()
        .map(|d| {
            let p = presence.iter().find(|p| p.device == d.device);
            let state = match (d.revoked_at, p) {
                (Some(_), _) => "revoked",
                (None, Some(p)) if now - p.last_seen < threshold => "online",
                (None, Some(_)) => "offline",
                (None, None) => "never seen",
            };
            (d, p, state)
        })
        .collect();
    if a.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(d, p, state)| {
                json!({"device": d.device.to_string(), "state": state, "admitted_at": show(d.admitted_at),
                    "revoked_at": d.revoked_at.map(show), "last_seen": p.map(|p| show(p.last_seen)),
                    "address": p.map(|p| p.address.clone()), "max_seq": d.max_seq})
            })
            .collect();
        println!("{}", json!({ "devices": list }));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no devices admitted");
        return Ok(());
    }
    println!(
        "{:<25} {:<11} {:<22} address",
        "device", "state", "last seen"
    );
    for (d, p, state) in rows {
        let seen = p.map_or_else(|| "-".into(), |p| show(p.last_seen));
        let addr = p.map_or("-", |p| p.address.as_str());
        println!(
            "{:<25} {:<11} {:<22} {}",
            d.device.to_string(),
            state,
            seen,
            addr
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("30s").unwrap(), 30);
        assert_eq!(duration("7d").unwrap(), 7 * 86_400);
        for bad in ["", "d", "0m", "-5m", "5w", "1.5h", "99999999999999999d"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }
}
