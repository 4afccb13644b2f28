//! `custos hub …`: run the hub, and the operator's commands on its store.
//!
//! Settings come from flags, then environment variables, then a TOML config file (`--config`), then defaults:
//! `data_dir = "custos-hub"`, `listen = "127.0.0.1:7180"`, no `database` (SQLite in the data directory).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use custos_hub::Hub;
use custos_hub::serve::{self, Limits, Rate, ServeConfig};
use custos_proto::{DeviceId, UnixTime};
use custos_store::{AnyStore, PendingAdmission, Store};
use serde::Deserialize;
use serde_json::json;

/// The hub's subcommands.
#[derive(Subcommand)]
pub enum HubCmd {
    /// Run the hub's API and web dashboard (at /) over HTTPS (or --plain-http) until Ctrl-C or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Register a device's join code, so that it can join once before the code expires.
    Admit(AdmitArgs),
    /// Revoke a device: the hub refuses its messages and drops it from the signed device list.
    Revoke(DeviceArgs),
    /// List admitted devices with their presence, and how many of their messages were lost on the way (sequence
    /// numbers neither stored nor accounted for by the device).
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
    /// A TOML file with data_dir, listen, database, the mqtt settings and a [limits] table.
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
    /// Argon2id memory per password hash, KiB [default: 19456]. Lower it only for tests.
    #[arg(long, env = "CUSTOS_HUB_PASSWORD_MEMORY_KIB")]
    password_memory_kib: Option<u32>,
    /// Argon2id passes per password hash [default: 10]. Lower it only for tests.
    #[arg(long, env = "CUSTOS_HUB_PASSWORD_ITERATIONS")]
    password_iterations: Option<u32>,
    /// A device not heard from for this long (its control long-poll is its heartbeat) counts as offline in
    /// control answers and device state: 5s, 1m [default: 5s].
    #[arg(long, env = "CUSTOS_HUB_OFFLINE_AFTER")]
    offline_after: Option<String>,
    #[command(flatten)]
    mqtt_tls: crate::MqttTlsArgs,
    /// The hub's TLS certificate chain (PEM, end-entity first) [default: a self-signed certificate made at first
    /// start in the data directory, tls.crt and tls.key, for development].
    #[arg(
        long,
        env = "CUSTOS_HUB_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "CUSTOS_HUB_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP without TLS: only on a loopback address (127.0.0.1, ::1) unless --insecure-plain-http,
    /// e.g. behind a reverse proxy on the same machine that terminates TLS.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    plain_http: bool,
    /// Allow --plain-http on an address other machines can reach: requests, tokens and answers then cross the
    /// network in the clear. Only for a network you trust entirely.
    #[arg(long, requires = "plain_http")]
    insecure_plain_http: bool,
    /// The infield identity registry (`custos registry serve`): admission refuses a device its registry marks
    /// stolen or destroyed, and devices it marks so later are revoked.
    #[arg(long, env = "CUSTOS_HUB_REGISTRY")]
    registry: Option<String>,
    /// With --registry: admit only devices whose admission key has a manufacturer-certified identity there.
    #[arg(long, requires = "registry")]
    require_identity: bool,
    /// With --registry: how often to read its new statuses, e.g. 10s, 1m [default: 10s].
    #[arg(long, requires = "registry")]
    registry_poll: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
}

/// What the hub allows its HTTP clients (docs/operations.md, "Limits"); also the `[limits]` table of the config
/// file, with the same names.
#[derive(Args, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitArgs {
    /// The most connections open at once [default: 10000, lowered to stay below the open-file limit].
    #[arg(long, env = "CUSTOS_HUB_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// The most connections open at once from one client address (IPv4 address or IPv6 /64) [default: 256].
    #[arg(long, env = "CUSTOS_HUB_MAX_CONNECTIONS_PER_CLIENT")]
    max_connections_per_client: Option<usize>,
    /// Time a connection has to send a whole request head, after it opens and after each response; also the
    /// keep-alive idle timeout: 10s, 1m [default: 10s].
    #[arg(long, env = "CUSTOS_HUB_HEADER_TIMEOUT")]
    header_timeout: Option<String>,
    /// Time a request has to send its whole body: 30s, 2m [default: 30s].
    #[arg(long, env = "CUSTOS_HUB_BODY_TIMEOUT")]
    body_timeout: Option<String>,
    /// Request-body bytes held at once over all requests, MiB; beyond it, 503 busy [default: 128].
    #[arg(long, env = "CUSTOS_HUB_BODY_BUDGET_MIB")]
    body_budget_mib: Option<usize>,
    /// Anonymous writes (sharing requests, answers, pairing messages, admission) per second and client
    /// address; 0 for no limit [default: 10].
    #[arg(long, env = "CUSTOS_HUB_RATE_LIMIT")]
    rate_limit: Option<u32>,
    /// The burst of anonymous writes one client address may send at once [default: 50].
    #[arg(long, env = "CUSTOS_HUB_RATE_LIMIT_BURST")]
    rate_limit_burst: Option<u32>,
    /// Other requests per second and client address, device uplinks excepted; 0 for no limit [default: 100].
    #[arg(long, env = "CUSTOS_HUB_READ_RATE_LIMIT")]
    read_rate_limit: Option<u32>,
    /// The burst of other requests one client address may send at once [default: 200].
    #[arg(long, env = "CUSTOS_HUB_READ_RATE_LIMIT_BURST")]
    read_rate_limit_burst: Option<u32>,
    /// Device uplinks and admissions in progress at once; beyond it, 503 busy [default: 512].
    #[arg(long, env = "CUSTOS_HUB_MAX_INGEST")]
    max_ingest: Option<usize>,
    /// Reads (devices, records, presence, device list, hub key) in progress at once [default: 64].
    #[arg(long, env = "CUSTOS_HUB_MAX_READS")]
    max_reads: Option<usize>,
    /// Sharing requests, answers and pairing messages being posted at once [default: 32].
    #[arg(long, env = "CUSTOS_HUB_MAX_SHARING")]
    max_sharing: Option<usize>,
    /// Long-polls (answers, inboxes, pairing mailboxes) waiting at once [default: 256].
    #[arg(long, env = "CUSTOS_HUB_MAX_LONG_POLLS")]
    max_long_polls: Option<usize>,
    /// A reverse proxy in front of the hub (repeat, or separate with commas): exempt from the per-address
    /// connection cap, and its requests are limited by the last X-Forwarded-For address.
    #[arg(
        long = "trusted-proxy",
        env = "CUSTOS_HUB_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    #[serde(default)]
    trusted_proxies: Vec<IpAddr>,
}

impl LimitArgs {
    /// The limits: these flags, then `file`'s, then the defaults.
    fn resolve(&self, file: &LimitArgs) -> Result<Limits> {
        let mut l = Limits::default();
        let secs =
            |flag: &Option<String>, file: &Option<String>| -> Result<Option<std::time::Duration>> {
                flag.as_ref()
                    .or(file.as_ref())
                    .map(|t| Ok(std::time::Duration::from_secs(u64::try_from(duration(t)?)?)))
                    .transpose()
            };
        if let Some(t) = secs(&self.header_timeout, &file.header_timeout)? {
            l.header_timeout = t;
        }
        if let Some(t) = secs(&self.body_timeout, &file.body_timeout)? {
            l.body_timeout = t;
        }
        let pick = |flag: Option<usize>, file: Option<usize>, default: usize| {
            flag.or(file).unwrap_or(default)
        };
        l.max_connections = pick(
            self.max_connections,
            file.max_connections,
            l.max_connections,
        );
        l.max_connections_per_client = pick(
            self.max_connections_per_client,
            file.max_connections_per_client,
            l.max_connections_per_client,
        );
        if let Some(mib) = self.body_budget_mib.or(file.body_budget_mib) {
            l.body_budget = mib
                .checked_mul(1 << 20)
                .context("--body-budget-mib is too large")?;
        }
        let rate = |per_second: Option<u32>, burst: Option<u32>, default: Rate| Rate {
            per_second: per_second.unwrap_or(default.per_second),
            burst: burst.unwrap_or(default.burst),
        };
        l.write_rate = rate(
            self.rate_limit.or(file.rate_limit),
            self.rate_limit_burst.or(file.rate_limit_burst),
            l.write_rate,
        );
        l.read_rate = rate(
            self.read_rate_limit.or(file.read_rate_limit),
            self.read_rate_limit_burst.or(file.read_rate_limit_burst),
            l.read_rate,
        );
        l.ingest_concurrency = pick(self.max_ingest, file.max_ingest, l.ingest_concurrency);
        l.read_concurrency = pick(self.max_reads, file.max_reads, l.read_concurrency);
        l.sharing_concurrency = pick(self.max_sharing, file.max_sharing, l.sharing_concurrency);
        l.long_poll_concurrency = pick(
            self.max_long_polls,
            file.max_long_polls,
            l.long_poll_concurrency,
        );
        l.trusted_proxies = if self.trusted_proxies.is_empty() {
            file.trusted_proxies.clone()
        } else {
            self.trusted_proxies.clone()
        };
        for (name, n) in [
            ("max_connections", l.max_connections),
            ("max_connections_per_client", l.max_connections_per_client),
            ("body_budget_mib", l.body_budget),
            ("max_ingest", l.ingest_concurrency),
            ("max_reads", l.read_concurrency),
            ("max_sharing", l.sharing_concurrency),
            ("max_long_polls", l.long_poll_concurrency),
        ] {
            anyhow::ensure!(n > 0, "{name} must be at least 1");
        }
        Ok(l)
    }
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
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    #[serde(default)]
    limits: LimitArgs,
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
            HubCmd::Serve(a) => serve_cmd(*a).await,
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
                trust: a.mqtt_tls.trust()?,
                url,
                prefix,
                client_id,
            })
        }
    };
    let limits = a.limits.resolve(&file.limits)?;
    let mut accounts = custos_hub::AccountConfig::default();
    if let Some(m) = a.password_memory_kib {
        accounts.password_cost.memory_kib = m;
    }
    if let Some(t) = a.password_iterations {
        accounts.password_cost.iterations = t;
    }
    argon2_check(accounts.password_cost)?;
    if let Some(t) = &a.offline_after {
        // `duration` refuses anything below 1 s.
        accounts.offline_after = std::time::Duration::from_secs(duration(t)?.unsigned_abs());
    }
    let tls = tls_mode(&a, &file, listen)?;
    let registry = match &a.registry {
        None => None,
        Some(url) => Some(serve::RegistryConfig {
            url: url.clone(),
            require_identity: a.require_identity,
            poll: std::time::Duration::from_secs(
                a.registry_poll
                    .as_deref()
                    .map(duration)
                    .transpose()?
                    .map_or(10, |d| d.unsigned_abs().max(1)),
            ),
        }),
    };
    let config = ServeConfig {
        registry,
        data_dir,
        listen,
        database,
        mqtt,
        limits,
        accounts,
        tls,
    };
    serve::serve(&config, serve::shutdown_signal(), |bound| {
        // Lines on stdout that scripts and tests read to find the hub and to pin its certificate.
        println!("listening on {}", bound.url());
        if let Some(f) = bound.fingerprint {
            println!("tls fingerprint: {f}");
        }
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    })
    .await?;
    Ok(())
}

/// Refuses Argon2id parameters the hash function refuses, at start rather than at the first login.
fn argon2_check(cost: custos_hub::PasswordCost) -> Result<()> {
    anyhow::ensure!(
        cost.memory_kib >= 8 * cost.parallelism && cost.iterations >= 1,
        "--password-memory-kib must be at least 8 and --password-iterations at least 1"
    );
    Ok(())
}

/// HTTPS with the given certificate, else with the self-signed one; plain HTTP only if asked, and beyond the
/// loopback interface only if insisted on.
fn tls_mode(a: &ServeArgs, file: &ConfigFile, listen: SocketAddr) -> Result<serve::HubTls> {
    if a.plain_http {
        if !listen.ip().is_loopback() && !a.insecure_plain_http {
            return Err(crate::keeper::usage(format!(
                "--plain-http on {listen} would serve the API in the clear to other machines: listen on \
                 127.0.0.1 (behind a TLS-terminating proxy), drop --plain-http to serve HTTPS, or add \
                 --insecure-plain-http if the network is entirely trusted"
            )));
        }
        if a.insecure_plain_http {
            tracing::warn!(%listen, "serving plain HTTP beyond the loopback interface (--insecure-plain-http)");
        }
        return Ok(serve::HubTls::Plain);
    }
    match (
        a.tls_cert.clone().or(file.tls_cert.clone()),
        a.tls_key.clone().or(file.tls_key.clone()),
    ) {
        (Some(cert), Some(key)) => Ok(serve::HubTls::Files { cert, key }),
        (None, None) => Ok(serve::HubTls::SelfSigned),
        _ => Err(crate::keeper::usage(
            "give both --tls-cert and --tls-key (or tls_cert and tls_key in the config file)",
        )),
    }
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
    // Sequence numbers lost on the way: neither stored nor skipped by the device (the first 100 ranges).
    let mut lost = Vec::with_capacity(devices.len());
    for d in &devices {
        lost.push(store.gaps(d.device, 100).await?);
    }
    store.close().await;
    let now = now()?;
    let rows: Vec<_> = devices
        .iter()
        .zip(&lost)
        .map(|(d, gaps)| {
            let p = presence.iter().find(|p| p.device == d.device);
            let state = match (d.revoked_at, p) {
                (Some(_), _) => "revoked",
                (None, Some(p)) if now - p.last_seen < threshold => "online",
                (None, Some(_)) => "offline",
                (None, None) => "never seen",
            };
            (d, p, state, gaps)
        })
        .collect();
    if a.json {
        let list: Vec<_> = rows
            .iter()
            .map(|(d, p, state, gaps)| {
                json!({"device": d.device.to_string(), "state": state, "admitted_at": show(d.admitted_at),
                    "revoked_at": d.revoked_at.map(show), "last_seen": p.map(|p| show(p.last_seen)),
                    "address": p.map(|p| p.address.clone()), "max_seq": d.max_seq,
                    "lost": missing(gaps), "gaps": gaps.iter().map(|(a, b)| [a, b]).collect::<Vec<_>>()})
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
        "{:<25} {:<11} {:<22} {:>6} address",
        "device", "state", "last seen", "lost"
    );
    for (d, p, state, gaps) in rows {
        let seen = p.map_or_else(|| "-".into(), |p| show(p.last_seen));
        let addr = p.map_or("-", |p| p.address.as_str());
        println!(
            "{:<25} {:<11} {:<22} {:>6} {}",
            d.device.to_string(),
            state,
            seen,
            missing(gaps),
            addr
        );
    }
    Ok(())
}

/// How many sequence numbers the ranges `[from, until)` hold.
fn missing(gaps: &[(u64, u64)]) -> u64 {
    gaps.iter().map(|(a, b)| b - a).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_from_flags_then_file_then_defaults() {
        let file: ConfigFile = toml::from_str(
            "[limits]\nmax_connections = 500\nrate_limit = 3\nheader_timeout = \"5s\"\ntrusted_proxies = [\"10.0.0.1\"]\n",
        )
        .unwrap();
        let flags = LimitArgs {
            max_connections: Some(900),
            ..Default::default()
        };
        let l = flags.resolve(&file.limits).unwrap();
        assert_eq!(l.max_connections, 900);
        assert_eq!(l.write_rate.per_second, 3);
        assert_eq!(l.write_rate.burst, Limits::default().write_rate.burst);
        assert_eq!(l.header_timeout, std::time::Duration::from_secs(5));
        assert_eq!(l.trusted_proxies, vec![IpAddr::from([10, 0, 0, 1])]);
        assert_eq!(l.body_timeout, Limits::default().body_timeout);
        let zero = LimitArgs {
            max_reads: Some(0),
            ..Default::default()
        };
        assert!(zero.resolve(&LimitArgs::default()).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(duration("30s").unwrap(), 30);
        assert_eq!(duration("7d").unwrap(), 7 * 86_400);
        for bad in ["", "d", "0m", "-5m", "5w", "1.5h", "99999999999999999d"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }
}
