//! `custos registry …`: run an identity certificate server, and the parties' commands (make a party key, certify
//! and endorse a device certificate, give a status, sign a code identity, look one up).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use custos_device::keyfile::write_private;
use custos_registry::cert::{self, Claims, Ed25519Key};
use custos_registry::statement::{Statement, Status};
use custos_registry::{Policy, Registry};
use custos_store::AnyStore;
use serde_json::json;

/// The registry's subcommands.
#[derive(Subcommand)]
pub enum RegistryCmd {
    /// Serve HKP (/pks/lookup, /pks/add) and the JSON API until Ctrl-C or SIGTERM, pulling from and pushing to
    /// the peers the policy names every --sync-every seconds.
    Serve(ServeArgs),
    /// One round of sync with every peer of the policy, then exit (exit 1 if a peer failed or is flagged).
    Sync(LocationArgs),
    /// Print the log's checkpoint verifier key (what peers pin in their policy), creating the key if missing.
    Key(LocationArgs),
    /// Make a party's key (a manufacturer, integrator, maintainer, certification body or developer): an Ed25519
    /// key in a file (mode 0600); prints its fingerprint.
    Party(PartyArgs),
    /// Print a party's certificate (armored), to post to the registries that know the party.
    PartyCert(KeyArgs),
    /// Certify a certificate's first User ID as a party (the manufacturer's certification with the device's
    /// attributes, or an endorsement); writes the certificate with the certification added, armored.
    Certify(CertifyArgs),
    /// Post certificates (armored or binary) to a registry.
    Add(AddArgs),
    /// Sign a status of a device certificate or a code identity and post it to a registry.
    Status(StatusArgs),
    /// Sign a code identity (the SHA-256 of a firmware image or update, with its name and version) and post it.
    Code(CodeArgs),
    /// Show a certificate as a registry holds it: User IDs, certifications, status.
    Show(ShowArgs),
}

/// Where a registry keeps its state.
#[derive(Args)]
pub struct LocationArgs {
    /// Its data directory: the checkpoint key, and the SQLite database unless --database is given.
    #[arg(long, default_value = "custos-registry")]
    data_dir: PathBuf,
    /// A PostgreSQL URL to store in instead of SQLite.
    #[arg(long, env = "CUSTOS_REGISTRY_DATABASE_URL")]
    database: Option<String>,
    /// The policy descriptor (TOML; docs/registry.md §7).
    #[arg(long)]
    policy: PathBuf,
}

/// `custos registry serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    at: LocationArgs,
    /// Address to listen on; port 0 picks a free one (printed on stdout as `listening on <addr>`).
    #[arg(long, default_value = "127.0.0.1:11371")]
    listen: SocketAddr,
    /// Seconds between sync rounds with the policy's peers; 0 turns sync off.
    #[arg(long, default_value_t = 60)]
    sync_every: u64,
    /// MiB of memory for HKP lookups: every certificate HKP may serve is held in memory when they fit (read in
    /// the background at start, kept in step with the log, at most about a second behind another process's
    /// writes), and what they leave keeps answers to searches; when they do not fit, it keeps the answers served.
    /// 0: every lookup reads the store.
    #[arg(long, default_value_t = 64)]
    hkp_cache_mib: u64,
}

/// `custos registry party`.
#[derive(Args)]
pub struct PartyArgs {
    /// The party's User ID, e.g. "Acme Sensors (manufacturer)".
    #[arg(long)]
    uid: String,
    /// Where to write the key.
    #[arg(short, long)]
    out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
}

/// A party's key file.
#[derive(Args)]
pub struct KeyArgs {
    /// The party's key file.
    #[arg(long)]
    key: PathBuf,
}

/// `custos registry certify`.
#[derive(Args)]
pub struct CertifyArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// The role certified in: manufacturer, integrator, maintainer, certification-body, developer.
    #[arg(long)]
    role: String,
    /// An attribute as name=value (manu, make, model, prodid, pvers, lot, label, domain); repeatable.
    #[arg(long = "attr")]
    attrs: Vec<String>,
    /// The certificate to certify.
    #[arg(long = "in")]
    input: PathBuf,
    /// Where to write the certified certificate [default: stdout].
    #[arg(short, long)]
    out: Option<PathBuf>,
}

/// A registry's URL.
#[derive(Args)]
pub struct UrlArgs {
    /// The registry, e.g. http://127.0.0.1:11371.
    #[arg(long, env = "CUSTOS_REGISTRY_URL")]
    url: String,
}

/// `custos registry add`.
#[derive(Args)]
pub struct AddArgs {
    #[command(flatten)]
    url: UrlArgs,
    /// The domain for certificates new to the registry [default: the registry's default domain].
    #[arg(long)]
    domain: Option<String>,
    /// The certificate file.
    file: PathBuf,
}

/// `custos registry status`.
#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    url: UrlArgs,
    /// The certificate fingerprint (40 hex digits) or code digest (64 hex digits).
    #[arg(long)]
    subject: String,
    /// in-use, stolen, destroyed or deprecated.
    #[arg(long)]
    status: String,
    /// The subject's domain.
    #[arg(long)]
    domain: String,
    /// Why, in a few words.
    #[arg(long, default_value = "")]
    note: String,
}

/// `custos registry code`.
#[derive(Args)]
pub struct CodeArgs {
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    url: UrlArgs,
    /// The image.
    #[arg(long)]
    file: PathBuf,
    /// The software's name.
    #[arg(long)]
    name: String,
    /// Its version.
    #[arg(long)]
    version: String,
    /// The domain.
    #[arg(long)]
    domain: String,
}

/// `custos registry show`.
#[derive(Args)]
pub struct ShowArgs {
    #[command(flatten)]
    url: UrlArgs,
    /// The certificate's fingerprint or key id.
    id: String,
    /// Print the registry's JSON.
    #[arg(long)]
    json: bool,
}

const LOG_KEY_FORMAT: &str = "custos-registry-log-key-v1";
const LOG_KEY_FILE: &str = "registry-log.key";

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A party's key and User ID from its file.
pub(crate) fn read_party(path: &Path) -> Result<(Ed25519Key, String)> {
    Ok(custos_registry::reader::read_party(path)?)
}

/// Makes a party key file.
pub(crate) fn make_party(uid: &str, out: &Path, force: bool) -> Result<Ed25519Key> {
    let created = u32::try_from(now()).context("the clock is past 2106")?;
    let key = Ed25519Key::generate(created)?;
    let text = zeroize::Zeroizing::new(custos_registry::reader::party_file(&key, uid)?);
    write_private(out, text.as_bytes(), force)?;
    Ok(key)
}

/// The registry's checkpoint key in `data_dir`, made on first use.
pub(crate) fn log_key(data_dir: &Path) -> Result<custos_proto::Secret> {
    let path = data_dir.join(LOG_KEY_FILE);
    if !path.exists() {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
        let mut seed = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut seed);
        let text = json!({"format": LOG_KEY_FORMAT, "seed": hex::encode(seed)}).to_string();
        zeroize::Zeroize::zeroize(&mut seed);
        write_private(&path, text.as_bytes(), false)?;
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    if v["format"] != LOG_KEY_FORMAT {
        bail!("{} is not a registry log key file", path.display());
    }
    let seed: [u8; 32] = v["seed"]
        .as_str()
        .and_then(|s| hex::decode(s).ok())
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{}: the seed is not 64 hex digits", path.display()))?;
    Ok(custos_proto::Secret::from_bytes(seed))
}

/// Opens the registry of a data directory under a policy, keeping up to `answer_budget` bytes of HKP answers in
/// memory (only a serving registry needs any).
pub(crate) async fn open(
    at: &LocationArgs,
    answer_budget: usize,
) -> Result<Arc<Registry<AnyStore>>> {
    let text = std::fs::read_to_string(&at.policy)
        .with_context(|| format!("cannot read {}", at.policy.display()))?;
    let policy = Policy::parse(&text).with_context(|| at.policy.display().to_string())?;
    open_with(&at.data_dir, at.database.as_deref(), policy, answer_budget).await
}

/// Opens a registry from its parts.
pub(crate) async fn open_with(
    data_dir: &Path,
    database: Option<&str>,
    policy: Policy,
    answer_budget: usize,
) -> Result<Arc<Registry<AnyStore>>> {
    let seed = log_key(data_dir)?;
    let location = match database {
        Some(url) => url.to_string(),
        None => data_dir.join("registry.db").display().to_string(),
    };
    let store = AnyStore::open(&location).await?;
    Ok(Arc::new(
        Registry::open(store, policy, seed)
            .await?
            .with_answer_budget(answer_budget),
    ))
}

/// One round of sync with every peer; the failures, as text.
pub(crate) async fn sync_round(r: &Registry<AnyStore>) -> Vec<String> {
    let mut failed = Vec::new();
    let now = now();
    for pull in &r.policy().pulls {
        let result = match custos_registry::sync::client(&pull.url) {
            Ok(c) => custos_registry::sync::pull(r, pull, &c, now).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(%e, "pull failed");
            failed.push(e.to_string());
        }
    }
    for push in &r.policy().pushes {
        let result = match custos_registry::sync::client(&push.url) {
            Ok(c) => custos_registry::sync::push(r, push, &c, now).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(%e, "push failed");
            failed.push(e.to_string());
        }
    }
    failed
}

async fn serve(a: ServeArgs) -> Result<()> {
    crate::init_logs();
    let budget = usize::try_from(a.hkp_cache_mib)
        .ok()
        .and_then(|m| m.checked_mul(1 << 20))
        .context("--hkp-cache-mib is too large for this machine")?;
    let registry = open(&a.at, budget).await?;
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on {addr}");
    println!("log key {}", registry.verifier_key()?);
    {
        let r = registry.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            match r.hold_public().await {
                Ok(()) => tracing::info!(
                    bytes = r.public_bytes(),
                    ms = started.elapsed().as_millis() as u64,
                    "public certificates held in memory for HKP"
                ),
                Err(e) => tracing::warn!("public certificates not held in memory: {e}"),
            }
        });
    }
    if a.sync_every > 0
        && !(registry.policy().pulls.is_empty() && registry.policy().pushes.is_empty())
    {
        let r = registry.clone();
        let every = Duration::from_secs(a.sync_every);
        tokio::spawn(async move {
            loop {
                sync_round(&r).await;
                tokio::time::sleep(every).await;
            }
        });
    }
    let limits = custos_hub::serve::Limits::default();
    custos_hub::serve::serve_router(
        listener,
        custos_registry::http::app(registry),
        &limits,
        custos_hub::serve::shutdown_signal(),
    )
    .await;
    Ok(())
}

fn client(url: &str) -> Result<custos_client::HubClient> {
    Ok(custos_registry::sync::client(url)?)
}

fn hex_n(text: &str, lens: &[usize], what: &str) -> Result<Vec<u8>> {
    let bytes =
        hex::decode(text.replace([' ', ':'], "")).with_context(|| format!("{what} is not hex"))?;
    if !lens.contains(&bytes.len()) {
        bail!("{what} has {} bytes", bytes.len());
    }
    Ok(bytes)
}

/// A device's own certificate, armored: made on first use and kept in its state directory (the creation time is
/// part of the fingerprint, so it is made once).
pub(crate) fn device_certificate(state_dir: &Path) -> Result<String> {
    let path = state_dir.join("certificate.asc");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return Ok(text);
    }
    let state = custos_device::DeviceState::read(state_dir)?;
    let secret = state.identity.expose();
    let public =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(*secret)).to_bytes();
    let created = u32::try_from(now()).context("the clock is past 2106")?;
    let identity =
        Ed25519Key::from_seed(&cert::device_identity_seed(secret, state.device), created)?;
    let armored = cert::to_armored(&cert::device_certificate(&identity, state.device, public)?)?;
    std::fs::write(&path, &armored).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(armored)
}

/// `custos device update`.
#[derive(Args)]
pub struct UpdateArgs {
    /// The device's state directory.
    #[arg(long)]
    state_dir: PathBuf,
    /// The image to install.
    #[arg(long)]
    file: PathBuf,
    /// The identity registry to check it at.
    #[arg(long, env = "CUSTOS_REGISTRY_URL")]
    registry: String,
    /// The registry's log key (`custos registry key`), pinned by this device.
    #[arg(long)]
    log_key: String,
    /// A developer certificate (armored or binary) whose code identities this device trusts; repeatable.
    #[arg(long = "developer", required = true)]
    developers: Vec<PathBuf>,
    /// Print the decision as JSON.
    #[arg(long)]
    json: bool,
}

/// Checks and installs an update.
pub(crate) fn device_update(a: &UpdateArgs) -> Result<()> {
    let mut developers = Vec::new();
    for path in &a.developers {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        developers
            .push(cert::check(cert::parse(&bytes)?).with_context(|| path.display().to_string())?);
    }
    let image =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    custos_device::DeviceState::read(&a.state_dir)?;
    let rt = crate::keeper::runtime()?;
    let accepted = rt.block_on(async {
        let http = client(&a.registry)?;
        Ok::<_, anyhow::Error>(
            custos_registry::update::check_update(&http, &a.log_key, &developers, &image).await?,
        )
    })?;
    let dir = a.state_dir.join("updates");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let safe = |t: &str| {
        t.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
    };
    let target = dir.join(format!(
        "{}-{}.bin",
        safe(&accepted.name),
        safe(&accepted.version)
    ));
    std::fs::write(&target, &image)
        .with_context(|| format!("cannot write {}", target.display()))?;
    std::fs::write(
        dir.join("installed.json"),
        serde_json::to_string_pretty(&accepted)?,
    )
    .with_context(|| format!("cannot write {}", dir.display()))?;
    if a.json {
        println!("{}", serde_json::to_string(&accepted)?);
    } else {
        println!(
            "installed {} {} ({}), code identity by {} in log entry {} of {}",
            accepted.name,
            accepted.version,
            accepted.digest,
            accepted.developer,
            accepted.index,
            accepted.size
        );
    }
    Ok(())
}

/// Runs a registry subcommand.
pub fn run(cmd: RegistryCmd) -> Result<()> {
    let rt = crate::keeper::runtime()?;
    match cmd {
        RegistryCmd::Serve(a) => rt.block_on(serve(a)),
        RegistryCmd::Sync(at) => rt.block_on(async {
            let r = open(&at, 0).await?;
            let failed = sync_round(&r).await;
            if failed.is_empty() {
                println!("synced; log size {}", r.size().await);
                Ok(())
            } else {
                bail!("sync failed: {}", failed.join("; "))
            }
        }),
        RegistryCmd::Key(at) => rt.block_on(async {
            let r = open(&at, 0).await?;
            println!("{}", r.verifier_key()?);
            Ok(())
        }),
        RegistryCmd::Party(a) => {
            let key = make_party(&a.uid, &a.out, a.force)?;
            println!("{}", hex::encode_upper(key.fingerprint()));
            eprintln!("wrote the party key to {} (mode 0600)", a.out.display());
            Ok(())
        }
        RegistryCmd::PartyCert(a) => {
            let (key, uid) = read_party(&a.key)?;
            print!(
                "{}",
                cert::to_armored(&cert::party_certificate(&key, &uid)?)?
            );
            Ok(())
        }
        RegistryCmd::Certify(a) => {
            let (key, _) = read_party(&a.key.key)?;
            let mut attributes = Vec::new();
            for attr in &a.attrs {
                let (name, value) = attr
                    .split_once('=')
                    .with_context(|| format!("--attr {attr}: expected name=value"))?;
                attributes.push((name.to_string(), value.to_string()));
            }
            let bytes = std::fs::read(&a.input)
                .with_context(|| format!("cannot read {}", a.input.display()))?;
            let mut c = cert::parse(&bytes)?;
            let claims = Claims {
                role: a.role,
                attributes,
            };
            let sig = cert::certify(&key, &c, &claims, u32::try_from(now()).unwrap_or(u32::MAX))?;
            let user = c
                .details
                .users
                .first_mut()
                .context("the certificate has no User ID")?;
            user.signatures.push(sig);
            let armored = cert::to_armored(&c)?;
            match a.out {
                Some(path) => std::fs::write(&path, armored)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => print!("{armored}"),
            }
            Ok(())
        }
        RegistryCmd::Add(a) => rt.block_on(async {
            let bytes = std::fs::read(&a.file)
                .with_context(|| format!("cannot read {}", a.file.display()))?;
            let path = match &a.domain {
                Some(d) => format!("/registry/v1/certs?domain={d}"),
                None => "/registry/v1/certs".into(),
            };
            let answer = client(&a.url.url)?.post(&path, bytes).await?;
            println!("{}", String::from_utf8_lossy(&answer));
            Ok(())
        }),
        RegistryCmd::Status(a) => rt.block_on(async {
            let (key, _) = read_party(&a.key.key)?;
            let status = Status::parse(&a.status).with_context(|| {
                format!(
                    "--status {}: in-use, stolen, destroyed or deprecated",
                    a.status
                )
            })?;
            let statement = Statement::Status {
                signer: key.fingerprint(),
                subject: hex_n(&a.subject, &[20, 32], "--subject")?,
                issued_at: now(),
                status,
                domain: a.domain,
                note: a.note,
            };
            let answer = client(&a.url.url)?
                .post("/registry/v1/statements", statement.sign(&key)?)
                .await?;
            println!("{}", String::from_utf8_lossy(&answer));
            Ok(())
        }),
        RegistryCmd::Code(a) => rt.block_on(async {
            let (key, _) = read_party(&a.key.key)?;
            let image = std::fs::read(&a.file)
                .with_context(|| format!("cannot read {}", a.file.display()))?;
            let digest: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(&image).into();
            let statement = Statement::Code {
                signer: key.fingerprint(),
                digest,
                issued_at: now(),
                name: a.name,
                version: a.version,
                domain: a.domain,
            };
            let answer = client(&a.url.url)?
                .post("/registry/v1/statements", statement.sign(&key)?)
                .await?;
            println!(
                "{} {}",
                hex::encode(digest),
                String::from_utf8_lossy(&answer)
            );
            Ok(())
        }),
        RegistryCmd::Show(a) => rt.block_on(async {
            let id = hex_n(&a.id, &[8, 20], "the id")?;
            let body = client(&a.url.url)?
                .get(&format!("/registry/v1/certs/{}", hex::encode(id)), None)
                .await?;
            let v: serde_json::Value = serde_json::from_slice(&body)?;
            if a.json {
                println!("{v}");
                return Ok(());
            }
            println!(
                "certificate {}  (domain {})",
                v["fingerprint"].as_str().unwrap_or("?"),
                v["domain"].as_str().unwrap_or("?")
            );
            for uid in v["user_ids"].as_array().into_iter().flatten() {
                println!("  user id  {}", uid.as_str().unwrap_or("?"));
            }
            for c in v["certifications"].as_array().into_iter().flatten() {
                println!(
                    "  {:<18} {} {}",
                    c["role"].as_str().unwrap_or("?"),
                    c["party"].as_str().unwrap_or("(unknown party)"),
                    c["attributes"]
                );
            }
            match v["status"].as_object() {
                Some(s) => println!(
                    "  status   {} (by {}, log entry {})",
                    s["status"].as_str().unwrap_or("?"),
                    s["signer"].as_str().unwrap_or("?"),
                    s["index"]
                ),
                None => println!("  status   none"),
            }
            Ok(())
        }),
    }
}
