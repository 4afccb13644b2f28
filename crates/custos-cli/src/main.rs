//! `custos`: end-to-end IoT security in which the user, not the cloud, holds the keys.
//!
//! Exit codes: 0 success; 1 error (an unreadable file, input that does not parse, …); 2 usage error (what was
//! typed is wrong: a bad argument or time, `--from` not before `--until`, no input where one is needed); 3 a
//! record was rejected (failed authentication, or no key held for it).
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use custos_proto::record::{OVERHEAD, RecordHeader};
use custos_proto::{
    DeviceId, Epoch, MasterSecret, NodeId, Opener, RustCrypto, Schedule, Secret, Span, Suite,
    TreeSpec, UnixTime,
};
use rand_core::{OsRng, RngCore};
use serde_json::json;

mod account;
mod agent;
mod app;
mod control;
mod demo;
mod demo_control;
mod demo_registry;
mod demo_ties;
mod hub;
mod keeper;
mod registry;
mod sim;
mod timearg;

use custos_device::keyfile::{self, Keys};

/// The largest plaintext `seal` reads: records are for readings and documents, not backups.
const MAX_PLAINTEXT: u64 = 64 << 20;
/// The largest input `open` and `inspect` read: a record of the largest plaintext, in hex, with slack for newlines.
const MAX_RECORDS: u64 = 2 * (MAX_PLAINTEXT + OVERHEAD as u64) + 4096;

#[derive(Parser)]
#[command(
    name = "custos",
    version,
    about = "End-to-end IoT security in which the user, not the cloud, holds the keys",
    long_about = "End-to-end IoT security in which the user, not the cloud, holds the keys.\n\n\
        Devices seal readings under keys derived from a data protection key (DPK) along a schedule such as \
        month/week/day; the user's keeper holds the master secret and hands out exactly the tree nodes that cover \
        a time range. Times are UTC: now, 2026-03-15, 2026-03-15T14:20, 2026-03-15T14:20:00Z or @SECONDS.",
    after_help = "Exit codes: 0 success, 1 error, 2 usage error, 3 a record was rejected (altered, or no key for it).\n\
        Start with `custos demo`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    hub_tls: HubTlsArgs,
}

/// How commands that talk to a hub verify its certificate (docs/operations.md, "TLS"). Without either flag: the
/// fingerprint the device, keeper or application directory remembers, else the system's root certificates.
#[derive(clap::Args)]
struct HubTlsArgs {
    /// Trust hub certificates issued by the CA certificates in this PEM file (commands that talk to a hub).
    #[arg(long, global = true, env = "CUSTOS_HUB_CA", value_name = "FILE")]
    hub_ca: Option<PathBuf>,
    /// Trust exactly the hub certificate with this fingerprint, as `custos hub serve` prints it: sha256:<hex>.
    /// Remembered in the device's, keeper's or application's directory, so later runs need not repeat it.
    #[arg(
        long,
        global = true,
        env = "CUSTOS_HUB_FINGERPRINT",
        value_name = "sha256:HEX"
    )]
    hub_fingerprint: Option<custos_client::Fingerprint>,
}

/// How an MQTT client (the hub's, a device's) verifies an `mqtts://` broker [default: the system's roots].
#[derive(clap::Args)]
pub(crate) struct MqttTlsArgs {
    /// Trust mqtts:// broker certificates issued by the CA certificates in this PEM file.
    #[arg(long, env = "CUSTOS_MQTT_CA", value_name = "FILE")]
    mqtt_ca: Option<PathBuf>,
    /// Trust exactly the mqtts:// broker certificate with this fingerprint: sha256:<hex>.
    #[arg(long, env = "CUSTOS_MQTT_FINGERPRINT", value_name = "sha256:HEX")]
    mqtt_fingerprint: Option<custos_client::Fingerprint>,
}

impl MqttTlsArgs {
    /// The broker trust: as given, else the system's roots. A bad CA file is a usage error.
    pub(crate) fn trust(&self) -> Result<custos_client::TlsTrust> {
        Ok(
            custos_client::TlsTrust::from_options(self.mqtt_ca.as_deref(), self.mqtt_fingerprint)
                .map_err(|e| keeper::usage(format!("--mqtt-ca/--mqtt-fingerprint: {e}")))?
                .unwrap_or_default(),
        )
    }
}

/// The trust given by --hub-ca or --hub-fingerprint, if any (set once in `main`).
static HUB_TRUST: std::sync::OnceLock<Option<custos_client::TlsTrust>> = std::sync::OnceLock::new();

/// The hub trust this command was given (--hub-ca, --hub-fingerprint or their variables), if any.
pub(crate) fn hub_trust() -> Option<custos_client::TlsTrust> {
    HUB_TRUST.get().cloned().flatten()
}

#[derive(Subcommand)]
enum Command {
    /// Play the whole story in one process: devices join and pair, the keeper's policy and its user decide, an
    /// application opens exactly what was granted, and the hub's attacks fail.
    Demo(demo::DemoArgs),
    /// The keeper's master secret.
    #[command(subcommand)]
    Master(MasterCmd),
    /// Devices: make one at the factory, run the device agent.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// An account at a hub: register, log in and out, change the password, show who is logged in.
    #[command(subcommand)]
    Account(account::AccountCmd),
    /// The hub: serve its API, admit and revoke devices, list them.
    #[command(subcommand)]
    Hub(hub::HubCmd),
    /// The keeper, the user's key manager: its vault, devices, consent policy, requests, decisions and log.
    #[command(subcommand)]
    Keeper(keeper::KeeperCmd),
    /// An application: ask an owner for a slice of time, wait for the answer, fetch and decrypt what was granted.
    #[command(subcommand)]
    App(app::AppCmd),
    /// Data protection keys (DPKs), derived from the master secret per device and epoch.
    #[command(subcommand)]
    Dpk(DpkCmd),
    /// Show a schedule's stages and the tree path of a time.
    Schedule(ScheduleArgs),
    /// The fewest tree nodes that cover a time range exactly; with --keys and --export, a key file holding them.
    Cover(CoverArgs),
    /// Seal a file, stdin, or each line of stdin into records.
    Seal(SealArgs),
    /// Open records with a key file (a DPK, or a cover exported for an application).
    Open(OpenArgs),
    /// Show the header of a record without opening it.
    Inspect(InspectArgs),
    /// Simulations: the protocols over a LoRa radio, against the TIES measurements.
    #[command(subcommand)]
    Sim(sim::SimCmd),
    /// Identity certificate servers: device certificates in OpenPGP, endorsements, statuses, code identities, a
    /// transparency log, sync between registries, HKP for gpg and sq.
    #[command(subcommand)]
    Registry(registry::RegistryCmd),
}

#[derive(Subcommand)]
enum MasterCmd {
    /// Create a new random master secret file (mode 0600).
    New {
        /// Where to write it.
        #[arg(short, long, default_value = "master.key")]
        out: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Make a new device: its id, identity key, join code and owner code, written to its state directory
    /// (owner-only); prints the packaging label.
    Make {
        /// The device's state directory (created if missing; must not hold a device yet).
        #[arg(long)]
        state_dir: PathBuf,
        /// Print the identity as JSON (with both codes) instead of the label.
        #[arg(long)]
        json: bool,
    },
    /// The device's own OpenPGP certificate (docs/registry.md §2), for its manufacturer to certify: its Ed25519
    /// identity key (derived from its admission key), self-signed, with the admission key as a subkey. Made once
    /// and kept in the state directory as certificate.asc; printed armored.
    Certificate {
        /// The device's state directory.
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Install an update only if the identity registry holds a code identity for its SHA-256 signed by a
    /// developer this device trusts, proved in the log by a checkpoint signed with the pinned log key, and not
    /// deprecated; the accepted image is kept in the state directory's updates/. Exit 0 installed, 1 refused.
    Update(registry::UpdateArgs),
    /// Run the device agent: join the hub on first start, then read the sensor, seal and publish, keeping
    /// unsent readings in an on-disk queue.
    Run(Box<agent::RunArgs>),
    /// Claim a device for your account (`custos account login` first): your keeper, which paired it, proves
    /// you hold its user–device key through the device itself; the hub learns no key.
    Claim(control::ClaimArgs),
    /// Switch a device (on, off, or a value) and wait for its authenticated answer: "done" means the device
    /// did it. Exit 0 done, 1 refused or failed (the answer says which) or no answer, 2 usage.
    Set(control::SetArgs),
    /// Ask a device for its state, end to end (its answer is authenticated).
    Get(control::GetArgs),
    /// A device's state and presence as the hub last heard them in its heartbeat.
    State(control::ViewArgs),
    /// Let another account control or view a device; for control, prints the share code to hand over.
    Share(control::ShareArgs),
    /// Take a device back from an account; the device acknowledges before this returns.
    Unshare(control::UnshareArgs),
    /// Who owns a device and who it is shared with.
    Owners(control::ViewArgs),
    /// Take a share code from a device's owner, so that your keeper can command that device.
    Accept(control::AcceptArgs),
}

#[derive(Subcommand)]
enum DpkCmd {
    /// Derive a device's DPK for one epoch and write it as a key file (mode 0600).
    New(DpkNewArgs),
}

#[derive(Args)]
struct DpkNewArgs {
    /// The master secret file.
    #[arg(long, default_value = "master.key")]
    master: PathBuf,
    /// Device id: 16 hex digits, e.g. 00-11-22-33-44-55-66-77.
    #[arg(long)]
    device: DeviceId,
    /// DPK epoch (0-65535). Each epoch of a device has its own DPK: give a new number for each new validity
    /// span, never reuse one (the same number gives the same DPK).
    #[arg(long)]
    epoch: u16,
    /// Schedule, coarse to fine, e.g. month/week/day or day/6h/15m.
    #[arg(long, default_value = "month/week/day")]
    schedule: Schedule,
    /// Start of the epoch [default: the start of the current month].
    #[arg(long)]
    from: Option<String>,
    /// End of the epoch, exclusive [default: one year after --from].
    #[arg(long)]
    until: Option<String>,
    /// AEAD suite the device seals with: aes256gcm or chacha20poly1305.
    #[arg(long, default_value = "aes256gcm", value_parser = parse_suite)]
    suite: Suite,
    /// Where to write the key file.
    #[arg(short, long)]
    out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ScheduleArgs {
    /// The schedule, coarse to fine.
    #[arg(default_value = "month/week/day")]
    schedule: Schedule,
    /// Show the tree path of this time.
    #[arg(long)]
    at: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CoverArgs {
    /// Start of the range.
    #[arg(long)]
    from: String,
    /// End of the range, exclusive.
    #[arg(long)]
    until: String,
    /// The tree to cover in: a key file (a DPK, or any key file of the device and epoch).
    #[arg(long, conflicts_with = "schedule")]
    keys: Option<PathBuf>,
    /// Without --keys: the schedule to cover in.
    #[arg(long, required_unless_present = "keys")]
    schedule: Option<Schedule>,
    /// Widen a range that does not start and end on leaf boundaries to the whole leaves it touches (and clip
    /// it to the key file's epoch).
    #[arg(long)]
    round_out: bool,
    /// With --keys: write the cover's node secrets to this key file, for an application.
    #[arg(long, requires = "keys")]
    export: Option<PathBuf>,
    /// Overwrite an existing export file.
    #[arg(long)]
    force: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct SealArgs {
    /// Key file holding a node that covers the time of the record (usually the device's DPK).
    #[arg(long)]
    keys: PathBuf,
    /// The time the reading belongs to.
    #[arg(long, default_value = "now")]
    at: String,
    /// Input file [default: stdin].
    #[arg(short, long)]
    r#in: Option<PathBuf>,
    /// Output file [default: stdout].
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Seal each input line as its own record and write one hex record per line.
    #[arg(long)]
    lines: bool,
    /// Write the record as hex instead of binary.
    #[arg(long)]
    hex: bool,
    /// Overwrite the --out file if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct OpenArgs {
    /// Key file: the DPK, or a cover exported for an application.
    #[arg(long)]
    keys: PathBuf,
    /// Input file [default: stdin]: one record, binary or hex.
    #[arg(short, long)]
    r#in: Option<PathBuf>,
    /// Output file [default: stdout].
    #[arg(short, long)]
    out: Option<PathBuf>,
    /// Input is one hex record per line (as `seal --lines` writes); write each plaintext as a line.
    #[arg(long)]
    lines: bool,
    /// With --lines: write JSON lines with each record's leaf, period and plaintext.
    #[arg(long, requires = "lines")]
    json: bool,
    /// Overwrite the --out file if it exists.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct InspectArgs {
    /// Input file [default: stdin]: one record, binary or hex.
    #[arg(short, long)]
    r#in: Option<PathBuf>,
    /// A key file of the record's tree, to show the leaf's time period.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// A record was rejected: exit code 3.
#[derive(Debug)]
struct Rejected(String);

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Rejected {}

fn parse_suite(s: &str) -> Result<Suite, String> {
    Suite::from_name(s)
        .ok_or_else(|| format!("unknown suite `{s}`: use aes256gcm or chacha20poly1305"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match custos_client::TlsTrust::from_options(
        cli.hub_tls.hub_ca.as_deref(),
        cli.hub_tls.hub_fingerprint,
    ) {
        Ok(trust) => {
            let _ = HUB_TRUST.set(trust);
        }
        Err(e) => return keeper::exit(Err(keeper::usage(e.to_string()))),
    }
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Master(MasterCmd::New { out, force }) => master_new(&out, force),
        Command::Device(DeviceCmd::Make { state_dir, json }) => device_make(&state_dir, json),
        Command::Device(DeviceCmd::Certificate { state_dir }) => device_certificate(&state_dir),
        Command::Device(DeviceCmd::Update(a)) => registry::device_update(&a),
        Command::Device(DeviceCmd::Run(args)) => return agent::run(&args),
        Command::Device(DeviceCmd::Claim(a)) => return keeper::exit(control::claim(&a)),
        Command::Device(DeviceCmd::Set(a)) => return keeper::exit(control::set(&a)),
        Command::Device(DeviceCmd::Get(a)) => return keeper::exit(control::get(&a)),
        Command::Device(DeviceCmd::State(a)) => return keeper::exit(control::state(&a)),
        Command::Device(DeviceCmd::Share(a)) => return keeper::exit(control::share(&a)),
        Command::Device(DeviceCmd::Unshare(a)) => return keeper::exit(control::unshare(&a)),
        Command::Device(DeviceCmd::Owners(a)) => return keeper::exit(control::owners(&a)),
        Command::Device(DeviceCmd::Accept(a)) => return keeper::exit(control::accept(&a)),
        Command::Account(cmd) => account::run(cmd),
        Command::Hub(cmd) => hub::run(cmd),
        Command::Keeper(cmd) => return keeper::run(cmd),
        Command::App(cmd) => return app::run(cmd),
        Command::Dpk(DpkCmd::New(args)) => dpk_new(&args),
        Command::Schedule(args) => schedule(&args),
        Command::Cover(args) => cover(&args),
        Command::Seal(args) => seal(&args),
        Command::Open(args) => open(&args),
        Command::Inspect(args) => inspect(&args),
        Command::Sim(cmd) => sim::run(cmd),
        Command::Registry(cmd) => registry::run(cmd),
    };
    keeper::exit(result)
}

/// Logs of long-running commands (`hub serve`, `keeper serve`): stderr, `info` unless `RUST_LOG` says otherwise,
/// colours only on a terminal.
pub(crate) fn init_logs() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

fn random_secret() -> Secret {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(bytes.as_mut());
    Secret::from_bytes(*bytes)
}

fn master_new(out: &Path, force: bool) -> Result<()> {
    keyfile::write_master(out, &MasterSecret::new(random_secret()), force)?;
    eprintln!(
        "wrote a new master secret to {} (mode 0600); keep it on the keeper only",
        out.display()
    );
    Ok(())
}

fn device_make(dir: &Path, as_json: bool) -> Result<()> {
    let made = custos_device::Factory::make(&mut OsRng);
    let path = made.write_state(dir)?;
    if as_json {
        println!(
            "{}",
            json!({"device": made.device.to_string(), "state_file": path, "public_key": hex::encode(made.public_key()),
                "join_code": custos_device::format_code(&made.join_code),
                "owner_code": custos_device::format_code(&made.owner_code)})
        );
    } else {
        print!("{}", made.label());
        eprintln!(
            "wrote the device's identity and codes to {} (mode 0600)",
            path.display()
        );
    }
    Ok(())
}

fn device_certificate(dir: &Path) -> Result<()> {
    print!("{}", registry::device_certificate(dir)?);
    Ok(())
}

fn start_of_month(t: UnixTime) -> Result<UnixTime> {
    let (y, m, ..) = t.civil();
    Ok(UnixTime::from_date(y, m, 1)?)
}

fn dpk_new(a: &DpkNewArgs) -> Result<()> {
    let master = keyfile::read_master(&a.master)?;
    let from = match &a.from {
        Some(t) => keeper::time_arg("--from", t)?,
        None => start_of_month(timearg::now()?)?,
    };
    let until = match &a.until {
        Some(t) => keeper::time_arg("--until", t)?,
        None => {
            let (y, m, d, ..) = from.civil();
            let day = d.min(custos_proto::time::days_in_month(y + 1, m));
            UnixTime::from_date(y + 1, m, day)
                .map(|t| UnixTime::new(t.secs() + from.secs() % 86_400))??
        }
    };
    let span = keeper::span_arg(from, until)?;
    let spec = TreeSpec::new(a.device, Epoch(a.epoch), a.schedule, span)
        .context("the epoch must start and end on boundaries of the schedule's leaf stage")?;
    let keys = Keys {
        spec,
        suite: a.suite,
        nodes: vec![spec.root(&RustCrypto, &master)?],
    };
    keyfile::write_keys(&a.out, &keys, a.force)?;
    if a.json {
        println!(
            "{}",
            json!({"file": a.out, "device": spec.device().to_string(), "epoch": a.epoch,
                "schedule": a.schedule.to_string(), "valid_from": from.to_string(), "valid_until": until.to_string(),
                "suite": a.suite.to_string()})
        );
    } else {
        eprintln!(
            "wrote the DPK of device {} epoch {} ({}, {}, valid {}) to {} (mode 0600)",
            spec.device(),
            a.epoch,
            a.schedule,
            a.suite,
            span,
            a.out.display()
        );
    }
    Ok(())
}

fn describe(stage: custos_proto::Stage) -> String {
    use custos_proto::Stage::*;
    match stage {
        Year => "calendar year (UTC)".into(),
        Month => "calendar month (UTC)".into(),
        Week => "week of the month: days 1-7, 8-14, 15-21, 22-28, 29-end".into(),
        Day => "calendar day (UTC)".into(),
        Hour => "hour".into(),
        Fixed(n) => format!("fixed length of {n} s, counted from 1970-01-01T00:00:00Z"),
    }
}

/// The end of a bare schedule's tree: the start of the last leaf period before year 10000, so that nothing the
/// CLI prints ends at 10000-01-01T00:00:00Z, which RFC 3339 cannot write.
fn last_leaf_start(schedule: Schedule) -> Result<UnixTime> {
    let leaf = schedule.leaf();
    Ok(leaf.start_of(leaf.index_of(UnixTime::new(timearg::LAST)?))?)
}

/// A tree for a bare schedule: an epoch from 1970 to the last leaf period of 9999, so that no node is clipped
/// but the last ones.
fn open_tree(schedule: Schedule) -> Result<TreeSpec> {
    let span = Span::new(UnixTime::new(0)?, last_leaf_start(schedule)?)?;
    TreeSpec::new(DeviceId([0; 8]), Epoch(0), schedule, span)
        .context("this schedule's leaves are too short to number from 1970 to 9999 in 32 bits")
}

/// The smallest tree that holds the path of `t`: the period of the schedule's first stage that contains it. A
/// schedule whose leaves cannot be numbered from 1970 to 9999 (`2s`) still has a path wherever its leaf index fits
/// 32 bits.
fn path_tree(schedule: Schedule, t: UnixTime) -> Result<TreeSpec> {
    let leaf = schedule.leaf();
    let end = last_leaf_start(schedule)?;
    if t >= end {
        bail!(
            "{t} is in the last {leaf} period before year 10000, whose end (10000-01-01) RFC 3339 cannot write"
        );
    }
    let top = schedule.stages()[0];
    let index = top.index_of(t);
    let span = Span::new(top.start_of(index)?, top.end_of(index)?.min(end))?;
    TreeSpec::new(DeviceId([0; 8]), Epoch(0), schedule, span).with_context(|| {
        format!(
            "at {t} the {leaf} leaf index is {}, beyond 2^32 - 1: record headers cannot number it",
            leaf.index_of(t)
        )
    })
}

fn schedule(a: &ScheduleArgs) -> Result<()> {
    let s = a.schedule;
    let mut bin = [0u8; Schedule::MAX_ENCODED];
    let n = s.encode(&mut bin)?;
    let path = match &a.at {
        None => None,
        Some(t) => {
            let t = keeper::time_arg("--at", t)?;
            let tree = path_tree(s, t)?;
            let mut nodes = Vec::new();
            for depth in 1..=tree.leaf_depth() {
                let node = tree.node_at(depth, t)?;
                nodes.push((node, tree.node_span(node)?));
            }
            Some((t, nodes))
        }
    };
    if a.json {
        let stages: Vec<_> = s
            .stages()
            .iter()
            .map(|st| json!({"stage": st.to_string(), "code": st.code(), "param": st.param()}))
            .collect();
        let path = path.as_ref().map(|(t, nodes)| {
            json!({"time": t.to_string(), "nodes": nodes.iter().map(|(n, p)| json!({"depth": n.depth, "index": n.index,
                "from": p.start().to_string(), "until": p.end().to_string()})).collect::<Vec<_>>()})
        });
        println!(
            "{}",
            json!({"schedule": s.to_string(), "encoded": hex::encode(&bin[..n]), "stages": stages, "path": path})
        );
        return Ok(());
    }
    println!(
        "schedule {s}: {} stage{}, leaf stage {} (encoded {})",
        s.depth(),
        if s.depth() == 1 { "" } else { "s" },
        s.leaf(),
        hex::encode(&bin[..n])
    );
    for (i, st) in s.stages().iter().enumerate() {
        println!("  {}  {:<7} {}", i + 1, st.to_string(), describe(*st));
    }
    if let Some((t, nodes)) = path {
        println!("tree path of {t}:");
        for (node, p) in &nodes {
            let st = s.stages()[usize::from(node.depth) - 1];
            let leaf = if node.depth == s.depth() {
                "  <- leaf index in record headers"
            } else {
                ""
            };
            println!(
                "  depth {} {:<7} index {:<10} {p}{leaf}",
                node.depth,
                st.to_string(),
                node.index
            );
        }
    }
    Ok(())
}

fn cover(a: &CoverArgs) -> Result<()> {
    if a.export.is_some() && a.keys.is_none() {
        bail!("--export needs --keys: the secrets come from a key file");
    }
    let keys = a.keys.as_deref().map(keyfile::read_keys).transpose()?;
    let tree = match (&keys, a.schedule) {
        (Some(k), _) => k.spec,
        (None, Some(s)) => {
            open_tree(s).context("pass --keys with a key file, whose epoch bounds the tree")?
        }
        (None, None) => bail!("give --keys FILE or --schedule SCHEDULE"),
    };
    let mut range = keeper::span_arg(
        keeper::time_arg("--from", &a.from)?,
        keeper::time_arg("--until", &a.until)?,
    )?;
    if a.round_out {
        range = tree.align_outward(range)?;
    }
    let nodes: Vec<NodeId> = match tree.cover(range) {
        Ok(c) => c.collect(),
        Err(custos_proto::Error::NotAligned { at, leaf }) => bail!(
            "{} is not on a {leaf} boundary: covers are exact, so give whole leaves, or pass --round-out to widen the range to {}",
            UnixTime::new(at)?,
            tree.align_outward(range)?
        ),
        Err(e) => return Err(e).context("cannot cover this range"),
    };
    if let (Some(keys), Some(path)) = (&keys, &a.export) {
        let mut secrets = Vec::with_capacity(nodes.len());
        for &node in &nodes {
            let held = tree.holder(&keys.nodes, node)?.with_context(|| {
                format!(
                    "the key file holds no secret for {} (depth {}, index {})",
                    tree.node_span(node)
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                    node.depth,
                    node.index
                )
            })?;
            secrets.push(tree.derive(&RustCrypto, held, node)?);
        }
        keyfile::write_keys(
            path,
            &Keys {
                spec: tree,
                suite: keys.suite,
                nodes: secrets,
            },
            a.force,
        )?;
        eprintln!(
            "wrote {} node secret(s) covering {range} to {} (mode 0600)",
            nodes.len(),
            path.display()
        );
    }
    let stage_name = |n: &NodeId| {
        if n.depth == 0 {
            "dpk".to_string()
        } else {
            tree.schedule().stages()[usize::from(n.depth) - 1].to_string()
        }
    };
    if a.json {
        let list: Vec<_> = nodes
            .iter()
            .map(|n| {
                let p = tree.node_span(*n).ok();
                json!({"depth": n.depth, "stage": stage_name(n), "index": n.index,
                    "from": p.map(|p| p.start().to_string()), "until": p.map(|p| p.end().to_string())})
            })
            .collect();
        println!(
            "{}",
            json!({"from": range.start().to_string(), "until": range.end().to_string(), "count": nodes.len(), "nodes": list})
        );
    } else {
        println!("{range} is covered by {} node(s):", nodes.len());
        for n in &nodes {
            println!(
                "  depth {} {:<7} index {:<10} {}",
                n.depth,
                stage_name(n),
                n.index,
                tree.node_span(*n)?
            );
        }
    }
    Ok(())
}

/// Reads a file or stdin, refusing more than `limit` bytes.
fn read_input(path: Option<&Path>, limit: u64) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    match path {
        Some(p) => {
            let f =
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            f.take(limit + 1)
                .read_to_end(&mut buf)
                .with_context(|| format!("cannot read {}", p.display()))?;
        }
        None => {
            std::io::stdin()
                .take(limit + 1)
                .read_to_end(&mut buf)
                .context("cannot read stdin")?;
        }
    }
    if buf.len() as u64 > limit {
        bail!("input is larger than {} MiB", limit >> 20);
    }
    Ok(buf)
}

/// Writes to `--out` (a new file, owner-only: it may hold plaintext) or to stdout.
fn write_output(path: Option<&Path>, bytes: &[u8], binary: bool, force: bool) -> Result<()> {
    match path {
        Some(p) => keyfile::write_private(p, bytes, force),
        None => {
            let mut out = std::io::stdout().lock();
            if binary && out.is_terminal() {
                bail!("refusing to write a binary record to a terminal: pass --out FILE or --hex");
            }
            out.write_all(bytes)
                .and_then(|()| out.flush())
                .context("cannot write stdout")
        }
    }
}

fn seal(a: &SealArgs) -> Result<()> {
    let keys = keyfile::read_keys(&a.keys)?;
    let tree = keys.spec;
    let t = keeper::time_arg("--at", &a.at)?;
    let leaf = tree
        .leaf_at(t)
        .with_context(|| format!("{t} is outside the key file's epoch {}", tree.span()))?;
    let node = tree.leaf_node(leaf);
    let held = tree
        .holder(&keys.nodes, node)?
        .with_context(|| format!("the key file holds no secret for {t}"))?;
    let key = tree.leaf_key(&RustCrypto, held, leaf, keys.suite)?;
    let input = read_input(a.r#in.as_deref(), MAX_PLAINTEXT)?;
    let mut out = Vec::new();
    let seal_one = |plain: &[u8], out: &mut Vec<u8>, as_hex: bool| -> Result<()> {
        let mut nonce = [0u8; 8];
        // Random nonces: no state to keep across runs; collisions within one leaf stay below 2^-30 up to 2^17 records.
        OsRng.fill_bytes(&mut nonce);
        let mut record = vec![0u8; plain.len() + OVERHEAD];
        key.seal(&RustCrypto, nonce, plain, &mut record)?;
        if as_hex {
            out.extend_from_slice(hex::encode(&record).as_bytes());
            out.push(b'\n');
        } else {
            out.extend_from_slice(&record);
        }
        Ok(())
    };
    if a.lines {
        for line in input.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if !line.is_empty() {
                seal_one(line, &mut out, true)?;
            }
        }
    } else {
        seal_one(&input, &mut out, a.hex)?;
    }
    write_output(a.out.as_deref(), &out, !(a.lines || a.hex), a.force)
}

/// One record given as binary, or as hex text.
fn decode_record(input: &[u8]) -> Result<Vec<u8>> {
    let text = input.trim_ascii();
    if text.is_empty() {
        return Err(keeper::usage(
            "input is empty: expected a record (with --lines, any number of them)",
        ));
    }
    let lines = text
        .split(|&b| b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .count();
    if lines > 1
        && text
            .iter()
            .all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace())
    {
        bail!("input holds {lines} hex lines: pass --lines to open one record per line");
    }
    if text.iter().all(u8::is_ascii_hexdigit) {
        return hex::decode(text).context("record is not valid hex (odd number of digits)");
    }
    // A binary record starts with the byte 0x11 or 0x12, which is not printable text.
    if input
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        bail!("input is text but not hex: expected a binary record or one record in hex");
    }
    Ok(input.to_vec())
}

fn open(a: &OpenArgs) -> Result<()> {
    let keys = keyfile::read_keys(&a.keys)?;
    let mut opener = Opener::new(&RustCrypto, &keys.spec, &keys.nodes);
    let input = read_input(a.r#in.as_deref(), MAX_RECORDS)?;
    if !a.lines {
        let mut record = decode_record(&input)?;
        let (_, plain) = opener
            .open_in_place(&mut record)
            .map_err(|e| Rejected(format!("record rejected: {e}")))?;
        return write_output(a.out.as_deref(), plain, false, a.force);
    }
    let mut out = Vec::new();
    let (mut opened, mut rejected) = (0usize, 0usize);
    for (i, line) in input.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        let result = hex::decode(line)
            .map_err(|_| "not a hex record".to_string())
            .and_then(|mut rec| {
                opener
                    .open_in_place(&mut rec)
                    .map(|(h, p)| (h, p.to_vec()))
                    .map_err(|e| e.to_string())
            });
        match result {
            Ok((header, plain)) => {
                opened += 1;
                if a.json {
                    let period = keys.spec.node_span(keys.spec.leaf_node(header.leaf))?;
                    let text = std::str::from_utf8(&plain).ok();
                    let line = json!({"line": i + 1, "leaf": header.leaf, "from": period.start().to_string(),
                        "until": period.end().to_string(), "text": text,
                        "hex": if text.is_none() { Some(hex::encode(&plain)) } else { None }});
                    out.extend_from_slice(line.to_string().as_bytes());
                } else {
                    out.extend_from_slice(&plain);
                }
                out.push(b'\n');
            }
            Err(e) => {
                rejected += 1;
                eprintln!("line {}: record rejected: {e}", i + 1);
            }
        }
    }
    write_output(a.out.as_deref(), &out, false, a.force)?;
    if rejected > 0 {
        return Err(Rejected(format!(
            "{rejected} of {} record(s) rejected",
            opened + rejected
        ))
        .into());
    }
    Ok(())
}

fn inspect(a: &InspectArgs) -> Result<()> {
    let record = decode_record(&read_input(a.r#in.as_deref(), MAX_RECORDS)?)?;
    let h = RecordHeader::peek(&record).context("not a custos record")?;
    let keys = a.keys.as_deref().map(keyfile::read_keys).transpose()?;
    let period = match &keys {
        Some(k) if k.spec.device() == h.device && k.spec.epoch() == h.epoch => Some(
            k.spec
                .node_span(k.spec.leaf_node(h.leaf))
                .context("leaf is not in the key file's tree")?,
        ),
        Some(_) => bail!("the key file is for another device or epoch"),
        None => None,
    };
    let len = record.len() - OVERHEAD;
    if a.json {
        println!(
            "{}",
            json!({"version": custos_proto::record::VERSION, "suite": h.suite.to_string(), "device": h.device.to_string(),
                "epoch": h.epoch.0, "leaf": h.leaf, "nonce": hex::encode(h.nonce), "plaintext_len": len,
                "from": period.map(|p| p.start().to_string()), "until": period.map(|p| p.end().to_string())})
        );
    } else {
        println!("record v{} {}", custos_proto::record::VERSION, h.suite);
        println!("  device  {}", h.device);
        println!("  epoch   {}", h.epoch);
        match period {
            Some(p) => println!("  leaf    {} {p}", h.leaf),
            None => println!("  leaf    {}", h.leaf),
        }
        println!("  nonce   {}", hex::encode(h.nonce));
        println!("  length  {len} bytes of ciphertext + {OVERHEAD} bytes of header and tag");
    }
    Ok(())
}
