//! `custos keeper …`: the user's key manager on the command line.
//!
//! The keeper's state directory (`--dir`, or `CUSTOS_KEEPER_DIR`) holds the vault, the devices it provisioned,
//! the policy, the consent log, the requests waiting for the user and the answers not yet delivered (see
//! `custos_keeper::keeper`). Every command that opens the keeper first takes an exclusive lock on
//! `keeper.lock` in that directory, so that `keeper serve` and a user's `keeper approve` never write the consent
//! log at once.
//!
//! The vault is unlocked with a passphrase (the `CUSTOS_KEEPER_PASSPHRASE` environment variable, or the first
//! line of `--passphrase-file`) or with `--key-file` (32 random bytes, for unattended use).
//!
//! This module also holds what `custos app` shares with it: the exit codes of both command groups (2 for bad
//! usage or input), durations, and human-readable times.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use custos_device::keyfile::{self, Keys};
use custos_keeper::consent::{self, Entry, Head};
use custos_keeper::policy::Policy;
use custos_keeper::{Handled, Keeper, KeeperError, Pending, SyncReport};
use custos_proto::{DeviceId, Epoch, Schedule, Span, Suite, TreeSpec, UnixTime};
use custos_vault::{KdfParams, SoftwareVault, Unlock, Vault, VaultError};
use rand_core::OsRng;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::timearg;

/// The environment variable a passphrase is read from when no `--passphrase-file` or `--key-file` is given.
pub const PASSPHRASE_ENV: &str = "CUSTOS_KEEPER_PASSPHRASE";

/// The keeper's subcommands.
#[derive(Subcommand)]
pub enum KeeperCmd {
    /// Create a keeper: a new vault (master secret and signing key) in a new state directory; prints the owner
    /// id that applications address their requests to.
    #[command(
        long_about = "Create a keeper: a new vault holding a fresh master secret and signing key, \
        encrypted at rest, in a state directory (created owner-only). Prints the owner id (the hex of the \
        keeper's Ed25519 public key) that applications address their requests to.\n\n\
        The vault is locked with a passphrase (Argon2id; from the CUSTOS_KEEPER_PASSPHRASE environment variable \
        or --passphrase-file) or with a key file of 32 random bytes (--key-file, with --new-key-file to create \
        it), for unattended use such as `custos keeper serve`. Keep the key file off the disk the state \
        directory is backed up to."
    )]
    Init(InitArgs),
    /// Print the owner id: the hex of the keeper's public key, which applications address requests to.
    Id(IdArgs),
    /// Show the consent policy in force (DIR/policy.toml), or check a policy file before installing it.
    #[command(
        long_about = "Show the consent policy in force (DIR/policy.toml; without one every request is \
        asked), or check a policy file with --check and report its errors by rule number (exit 2 if the file \
        is refused).\n\n\
        The policy is TOML: `default = \"ask\"` and [[rule]] tables with `app` (a name, an application key in \
        hex, or \"*\"), `purpose` (a code, a prefix such as \"energy.*\", or \"*\"), `action` (allow, ask or \
        deny) and, on allow rules, `max_days`. The first matching rule wins. Install a checked file by copying \
        it to DIR/policy.toml; the keeper reads it again at every sync."
    )]
    Policy(PolicyArgs),
    /// Register a device's next DPK epoch and write what the device needs (the forward-secure frontier from
    /// now) as a key file for `custos device run --keys`.
    #[command(
        long_about = "Register a new DPK epoch of a device with the keeper and write the device's \
        provisioning as a key file (mode 0600) in the format `custos device run --keys` reads: the \
        forward-secure frontier of the epoch's key tree from now on, so the file opens nothing sealed before \
        now. The keeper derives the same tree when it grants an application a range of this device.\n\n\
        Hand the file to the device over a trusted path, then delete it. An epoch number is never reused."
    )]
    Provision(ProvisionArgs),
    /// Pair with a device through the hub using the owner code from its label, and provision its next DPK
    /// epoch over that channel (the device keeps only the frontier from now).
    #[command(
        long_about = "Pair with a device through the hub's relay, keyed by the owner code printed on the \
        device's label (Noise NNpsk0: the hub relays ciphertext and never learns the code or the keys), then \
        provision the device's next DPK epoch over that channel. The device (`custos device run`, which waits for \
        its keeper when it holds no keys) keeps only the forward-secure frontier from now.\n\n\
        Run it again with a later epoch to rotate the device to a new DPK. The epoch is registered only once the \
        device has acknowledged it."
    )]
    Pair(PairArgs),
    /// One round with the hub: deliver queued answers, take new requests, apply the policy, deliver the
    /// answers; prints what was granted, denied, asked and refused.
    Sync(SyncArgs),
    /// Sync with the hub again and again until Ctrl-C or SIGTERM; rides out an unreachable hub.
    #[command(
        long_about = "Sync with the hub every --every until Ctrl-C or SIGTERM. Each round reopens the \
        keeper from its directory (so policy edits and the user's approvals made meanwhile are seen), takes the \
        directory's lock, and releases it after the round. A hub that cannot be reached is logged and tried \
        again next round. Logs go to stderr (RUST_LOG=debug for more).\n\n\
        For unattended use, lock the vault with a key file (`keeper init --key-file F --new-key-file`)."
    )]
    Serve(ServeArgs),
    /// List the requests waiting for the user's decision.
    Inbox(InboxArgs),
    /// Pin an application's name to its key, so that policy rules naming it apply to that key (and no other).
    #[command(
        long_about = "Pin an application's name to its public key (as `custos app new` prints it). Policy rules \
        that name an application by name apply only to the key its name is pinned to: anyone can sign a request \
        under any name, so an unpinned name matches no name rule and the request is asked about. Approving a \
        request with `keeper approve` pins its name too, if neither the name nor the key is pinned yet. A name or \
        key already pinned to another is refused. Without --name and --key, lists the pinned applications."
    )]
    Trust(TrustArgs),
    /// Grant a waiting request (or part of its range); delivers the answer with --hub.
    Approve(ApproveArgs),
    /// Deny a waiting request; delivers the answer with --hub.
    Deny(DenyArgs),
    /// List the decisions in the consent log, or export it as a file anyone can verify.
    Log(LogArgs),
    /// Verify an exported consent log against the keeper's owner id (and a pinned head).
    #[command(
        long_about = "Verify an exported consent log (from `custos keeper log --export`): every entry \
        signed by the keeper's key, chained to the one before, in order, none removed or inserted. With --head \
        SEQ:HASH (pinned earlier from `custos keeper log`) it also detects entries cut off at the end.\n\n\
        Exit code 0 if the log is intact, 1 with the first problem found if not."
    )]
    LogVerify(LogVerifyArgs),
}

/// Where the keeper's state is.
#[derive(Args)]
pub struct DirArg {
    /// The keeper's state directory.
    #[arg(long, env = "CUSTOS_KEEPER_DIR", value_name = "DIR")]
    pub(crate) dir: PathBuf,
}

/// How to unlock the vault.
#[derive(Args)]
pub struct UnlockArgs {
    /// Unlock the vault with this key file (32 random bytes) instead of a passphrase.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// Read the passphrase from the first line of this file [default: the CUSTOS_KEEPER_PASSPHRASE environment
    /// variable].
    #[arg(long, value_name = "FILE", conflicts_with = "key_file")]
    passphrase_file: Option<PathBuf>,
}

/// The hub to talk to.
#[derive(Args)]
pub struct HubArg {
    /// The hub's URL, e.g. https://hub.example:7180.
    #[arg(long, env = "CUSTOS_HUB_URL", value_name = "URL")]
    hub: String,
}

/// `custos keeper init`.
#[derive(Args)]
pub struct InitArgs {
    #[command(flatten)]
    at: DirArg,
    #[command(flatten)]
    unlock: UnlockArgs,
    /// Create the --key-file first (32 random bytes, mode 0600; refused if it exists).
    #[arg(long, requires = "key_file")]
    new_key_file: bool,
    /// Argon2id memory for the passphrase, KiB [default: 19456, OWASP's recommendation]. Lower it only for
    /// tests and very slow machines.
    #[arg(long, value_name = "KIB", value_parser = clap::value_parser!(u32).range(8..))]
    kdf_memory: Option<u32>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// `custos keeper id`.
#[derive(Args)]
pub struct IdArgs {
    #[command(flatten)]
    at: DirArg,
    #[command(flatten)]
    unlock: UnlockArgs,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// `custos keeper policy`.
#[derive(Args)]
pub struct PolicyArgs {
    /// The keeper's state directory, whose policy.toml to show.
    #[arg(
        long,
        env = "CUSTOS_KEEPER_DIR",
        value_name = "DIR",
        required_unless_present = "check"
    )]
    dir: Option<PathBuf>,
    /// Check this policy file instead of showing the one in force.
    #[arg(long, value_name = "FILE")]
    check: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// `custos keeper provision`.
#[derive(Args)]
pub struct ProvisionArgs {
    #[command(flatten)]
    at: DirArg,
    #[command(flatten)]
    unlock: UnlockArgs,
    #[command(flatten)]
    e: EpochArgs,
    /// Where to write the device's key file.
    #[arg(short, long, value_name = "FILE")]
    out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    force: bool,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// The DPK epoch a device is provisioned with (`keeper provision`, `keeper pair`).
#[derive(Args)]
pub struct EpochArgs {
    /// The device id: 16 hex digits, e.g. 00-11-22-33-44-55-66-77.
    #[arg(long)]
    device: DeviceId,
    /// The DPK epoch number (1-65535) [default: the device's next unused one]. Never reused.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    epoch: Option<u16>,
    /// Schedule, coarse to fine, e.g. month/week/day or day/6h/15m.
    #[arg(long, default_value = "month/week/day")]
    schedule: Schedule,
    /// Start of the epoch [default: the start of the current month].
    #[arg(long, value_name = "TIME")]
    epoch_from: Option<String>,
    /// End of the epoch, exclusive [default: one year after --epoch-from].
    #[arg(long, value_name = "TIME")]
    epoch_until: Option<String>,
    /// AEAD suite the device seals with: aes256gcm or chacha20poly1305.
    #[arg(long, default_value = "aes256gcm", value_parser = crate::parse_suite)]
    suite: Suite,
}

/// `custos keeper pair`.
#[derive(Args)]
pub struct PairArgs {
    #[command(flatten)]
    at: DirArg,
    #[command(flatten)]
    unlock: UnlockArgs,
    #[command(flatten)]
    hub: HubArg,
    #[command(flatten)]
    e: EpochArgs,
    /// The device's owner code, from its label (32 hex digits, dashes allowed).
    #[arg(long, env = "CUSTOS_OWNER_CODE", value_name = "CODE")]
    owner_code: String,
    /// How long to wait for the device.
    #[arg(long, default_value = "2m")]
    timeout: String,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// `custos keeper trust`.
#[derive(Args)]
pub struct TrustArgs {
    #[command(flatten)]
    at: DirArg,
    #[command(flatten)]
    unlock: UnlockArgs,
    /// The application's name, as its requests give it.
    #[arg(long, requires = "key")]
    name: Option<String>,
    /// The application's public key (64 hex digits).
    #[arg(long, value_parser = parse_app_key, value_name = "HEX", requires = "name")]
    key: Option<[u8; 32]>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

fn parse_app_key(text: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).map_err(|_| {
        format!(
            "`{text}` is not an application key: expected 64 hex digits, as `custos app new` prints"
        )
    })?;
    Ok(out)
}

/// `custos keeper sync`.
#[derive(Args)]
pub struct SyncArgs {
    #[command(flatten)]
    at: DirArg,
    #[command(flatten)]
    unlock: UnlockArgs,
    #[command(flatten)]
    hub: HubArg,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// `custos keeper serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    at: DirArg,
    #[command(flatten)]
    unlock: UnlockArgs,
    #[command(flatten)]
    hub: HubArg,
    /// Time between two rounds: 10s, 5m, 1h.
    #[arg(long, default_value = "10s")]
    every: String,
}

/// `custos keeper inbox`.
#[derive(Args)]
pub struct InboxArgs {
    #[command(flatten)]
    at: DirArg,
    #[command(flatten)]
    unlock: UnlockArgs,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// `custos keeper approve`.
#[derive(Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    at: DirArg,
    #[command(flatten)]
    unlock: UnlockArgs,
    /// The request id, or its first 8 or more hex digits (as `custos keeper inbox` shows them).
    id: String,
    /// Grant from this time on instead of the start of the range asked for.
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// Grant until this time (exclusive) instead of the end of the range asked for.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Deliver the answer to this hub now [default: leave it queued for the next `custos keeper sync`].
    #[arg(long, env = "CUSTOS_HUB_URL", value_name = "URL")]
    hub: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// `custos keeper deny`.
#[derive(Args)]
pub struct DenyArgs {
    #[command(flatten)]
    at: DirArg,
    #[command(flatten)]
    unlock: UnlockArgs,
    /// The request id, or its first 8 or more hex digits (as `custos keeper inbox` shows them).
    id: String,
    /// Deliver the answer to this hub now [default: leave it queued for the next `custos keeper sync`].
    #[arg(long, env = "CUSTOS_HUB_URL", value_name = "URL")]
    hub: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// `custos keeper log`.
#[derive(Args)]
pub struct LogArgs {
    #[command(flatten)]
    at: DirArg,
    #[command(flatten)]
    unlock: UnlockArgs,
    /// Write the whole log as a self-contained, verifiable JSON document to this file (mode 0600).
    #[arg(long, value_name = "FILE")]
    export: Option<PathBuf>,
    /// Overwrite an existing export file.
    #[arg(long)]
    force: bool,
    /// Print the export document on stdout instead of the list.
    #[arg(long)]
    json: bool,
}

/// `custos keeper log-verify`.
#[derive(Args)]
pub struct LogVerifyArgs {
    /// The exported log, from `custos keeper log --export`.
    file: PathBuf,
    /// The keeper's owner id (64 hex digits, from `custos keeper id`).
    #[arg(long, value_parser = parse_owner)]
    owner: [u8; 32],
    /// A head pinned earlier, SEQ:HASH (as `custos keeper log` prints it).
    #[arg(long, value_parser = parse_head)]
    head: Option<Head>,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

// ---------------------------------------------------------------------------------------------------------------
// Shared with `custos app`: exit codes, arguments, durations, times.

/// Bad usage or input, found after parsing the command line: exit code 2, like clap's own usage errors.
#[derive(Debug)]
pub(crate) struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A [`Usage`] error.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    Usage(message.into()).into()
}

/// Prints an error as `main` does and gives the exit code: 2 bad usage or input, 3 a record was rejected, 1
/// anything else.
pub(crate) fn exit(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.chain().any(|c| c.is::<Usage>()) {
                ExitCode::from(2)
            } else if e.chain().any(|c| c.is::<crate::Rejected>()) {
                ExitCode::from(3)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// An owner id or application key: 64 hex digits.
pub(crate) fn parse_owner(text: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut out).map_err(|_| {
        format!("`{text}` is not an owner id: expected 64 hex digits, as `custos keeper id` prints")
    })?;
    Ok(out)
}

fn parse_head(text: &str) -> Result<Head, String> {
    let bad =
        || format!("`{text}` is not a head: expected SEQ:HASH (a number, a colon, 64 hex digits)");
    let (seq, hash) = text.trim().split_once(':').ok_or_else(bad)?;
    let seq = seq.parse().map_err(|_| bad())?;
    let mut h = [0u8; 32];
    hex::decode_to_slice(hash, &mut h).map_err(|_| bad())?;
    Ok(Head { seq, hash: h })
}

/// `30s`, `5m`, `12h`, `7d`, `2w` → seconds; `0s` only where `zero` is allowed.
pub(crate) fn parse_duration(flag: &str, text: &str, zero: bool) -> Result<u64> {
    let bad = || {
        usage(format!(
            "{flag}: `{text}` is not a duration: use 30s, 5m, 12h, 7d or 2w"
        ))
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let n: u64 = n.parse().map_err(|_| bad())?;
    if n == 0 && !zero {
        return Err(bad());
    }
    n.checked_mul(unit).ok_or_else(bad)
}

/// A time argument, as `custos` takes them everywhere; a bad one is a usage error naming its flag.
pub(crate) fn time_arg(flag: &str, text: &str) -> Result<UnixTime> {
    timearg::parse(text).map_err(|e| usage(format!("{flag}: {e:#}")))
}

/// `[from, until)` from two time arguments, or a usage error.
pub(crate) fn span_arg(from: UnixTime, until: UnixTime) -> Result<Span> {
    Span::new(from, until).map_err(|_| {
        usage(format!(
            "--from {from} is not before --until {until}: the range would be empty"
        ))
    })
}

/// A hub URL, checked for its scheme; without the trailing slash.
pub(crate) fn hub_url(text: &str) -> Result<String> {
    let t = text.trim();
    if !(t.starts_with("http://") || t.starts_with("https://")) || t.len() <= "https://".len() {
        return Err(usage(format!(
            "`{text}` is not a hub URL: expected https://HOST[:PORT] (or http://127.0.0.1:PORT on this machine)"
        )));
    }
    custos_client::tls::check_url(t).map_err(|e| usage(e.to_string()))?;
    Ok(t.trim_end_matches('/').to_string())
}

/// The current time.
pub(crate) fn now() -> Result<UnixTime> {
    timearg::now()
}

/// A time for people: `2026-03-09` at midnight, else `2026-03-09 14:20 UTC` or with seconds.
pub(crate) fn human_time(t: UnixTime) -> String {
    let (y, m, d, hh, mm, ss) = t.civil();
    match (hh, mm, ss) {
        (0, 0, 0) => format!("{y:04}-{m:02}-{d:02}"),
        (_, _, 0) => format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02} UTC"),
        _ => format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02} UTC"),
    }
}

/// `secs` for people, in at most two units: `30 days`, `1 day 12 hours`, `45 minutes`.
pub(crate) fn human_duration(secs: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400, "day"),
        (3600, "hour"),
        (60, "minute"),
        (1, "second"),
    ];
    if secs == 0 {
        return "0 seconds".into();
    }
    let mut parts = Vec::new();
    let mut left = secs;
    for (size, name) in UNITS {
        if parts.len() == 2 {
            break;
        }
        if left >= size {
            let n = left / size;
            left %= size;
            parts.push(format!("{n} {name}{}", if n == 1 { "" } else { "s" }));
        }
    }
    parts.join(" ")
}

/// A range for people: `2026-03-09 to 2026-03-16 (7 days)`.
pub(crate) fn human_span(from: UnixTime, until: UnixTime) -> String {
    format!(
        "{} to {} ({})",
        human_time(from),
        human_time(until),
        human_duration(until.secs().saturating_sub(from.secs()))
    )
}

fn time_secs(secs: u64) -> String {
    UnixTime::new(secs).map_or_else(|_| format!("@{secs}"), human_time)
}

/// Text from an application, made safe to print on a terminal: control characters are escaped.
pub(crate) fn clean(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Creates `dir` owner-only if it does not exist yet.
pub(crate) fn private_dir(dir: &Path) -> Result<()> {
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Reads a file, refusing more than `limit` bytes.
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut buf = Vec::new();
    f.take(limit + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if buf.len() as u64 > limit {
        bail!("{} is larger than {} MiB", path.display(), limit >> 20);
    }
    Ok(buf)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
}

// ---------------------------------------------------------------------------------------------------------------
// Unlocking and locking.

/// The secret that unlocks the vault, held for as long as the command runs (`serve` reopens every round).
pub(crate) enum Unlocker {
    Passphrase(Zeroizing<String>),
    KeyFile(PathBuf),
}

impl Unlocker {
    pub(crate) fn from_args(a: &UnlockArgs) -> Result<Self> {
        if let Some(path) = &a.key_file {
            if !path.is_file() {
                return Err(usage(format!(
                    "--key-file {} does not exist (`custos keeper init --new-key-file` creates one)",
                    path.display()
                )));
            }
            return Ok(Self::KeyFile(path.clone()));
        }
        if let Some(path) = &a.passphrase_file {
            let bytes = Zeroizing::new(read_limited(path, 64 << 10)?);
            let text = std::str::from_utf8(&bytes)
                .map_err(|_| usage(format!("{}: the passphrase is not UTF-8", path.display())))?;
            let line = text.split(['\n', '\r']).next().unwrap_or_default();
            return Ok(Self::Passphrase(Zeroizing::new(line.to_string())));
        }
        match std::env::var(PASSPHRASE_ENV) {
            Ok(p) => Ok(Self::Passphrase(Zeroizing::new(p))),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(usage(format!("{PASSPHRASE_ENV} is not UTF-8")))
            }
            Err(std::env::VarError::NotPresent) => Err(usage(format!(
                "the keeper's vault needs unlocking: set {PASSPHRASE_ENV}, or pass --passphrase-file FILE or \
                 --key-file FILE"
            ))),
        }
    }

    fn unlock(&self) -> Unlock<'_> {
        match self {
            Self::Passphrase(p) => Unlock::Passphrase(p),
            Self::KeyFile(path) => Unlock::KeyFile(path),
        }
    }
}

/// An exclusive lock on the keeper's directory, released when dropped (or when the process dies).
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    fn open_file(dir: &Path) -> Result<File> {
        let path = dir.join("keeper.lock");
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        opts.open(&path)
            .with_context(|| format!("cannot open {}", path.display()))
    }

    /// Takes the lock, waiting for another command to finish.
    fn take(dir: &Path) -> Result<Self> {
        let file = Self::open_file(dir)?;
        if file.try_lock().is_err() {
            eprintln!(
                "waiting for another `custos keeper` command on {} to finish",
                dir.display()
            );
            file.lock()
                .with_context(|| format!("cannot lock {}", dir.display()))?;
        }
        Ok(Self { _file: file })
    }

    /// Takes the lock if it is free.
    fn try_take(dir: &Path) -> Result<Option<Self>> {
        let file = Self::open_file(dir)?;
        if file.try_lock().is_err() {
            return Ok(None);
        }
        Ok(Some(Self { _file: file }))
    }
}

/// Refuses a directory without a keeper, with the command that makes one.
fn has_keeper(dir: &Path) -> Result<()> {
    if dir.join("vault.json").is_file() {
        return Ok(());
    }
    Err(usage(format!(
        "{} holds no keeper (no vault.json): create one with `custos keeper init --dir {}`",
        dir.display(),
        dir.display()
    )))
}

/// A keeper error as the CLI reports it: the ones caused by what the user typed are usage errors.
pub(crate) fn keeper_err(e: KeeperError) -> anyhow::Error {
    match e {
        KeeperError::NotPending(_)
        | KeeperError::UnknownDevice(_)
        | KeeperError::Vault(VaultError::UnlockKind { .. } | VaultError::EmptyPassphrase) => {
            Usage(e.to_string()).into()
        }
        other => other.into(),
    }
}

/// Opens the keeper in `dir`, holding its lock.
pub(crate) fn open(dir: &Path, u: &Unlocker) -> Result<(Keeper, DirLock)> {
    has_keeper(dir)?;
    let lock = DirLock::take(dir)?;
    let mut keeper = Keeper::open(dir, u.unlock()).map_err(keeper_err)?;
    trust_hub(&mut keeper)?;
    Ok((keeper, lock))
}

/// Applies --hub-ca or --hub-fingerprint, if given (a fingerprint is remembered in the keeper's directory).
fn trust_hub(keeper: &mut Keeper) -> Result<()> {
    if let Some(trust) = crate::hub_trust() {
        keeper.set_hub_trust(trust).map_err(keeper_err)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------------------

/// Runs a keeper subcommand and gives its exit code.
pub fn run(cmd: KeeperCmd) -> ExitCode {
    exit(match cmd {
        KeeperCmd::Init(a) => init(&a),
        KeeperCmd::Id(a) => id(&a),
        KeeperCmd::Trust(a) => trust(&a),
        KeeperCmd::Policy(a) => policy(&a),
        KeeperCmd::Provision(a) => provision(&a),
        KeeperCmd::Pair(a) => pair(&a),
        KeeperCmd::Sync(a) => sync(&a),
        KeeperCmd::Serve(a) => serve(&a),
        KeeperCmd::Inbox(a) => inbox(&a),
        KeeperCmd::Approve(a) => decide(
            &a.at,
            &a.unlock,
            &a.id,
            Some((&a.from, &a.until)),
            a.hub.as_deref(),
            a.json,
        ),
        KeeperCmd::Deny(a) => decide(&a.at, &a.unlock, &a.id, None, a.hub.as_deref(), a.json),
        KeeperCmd::Log(a) => log(&a),
        KeeperCmd::LogVerify(a) => log_verify(&a),
    })
}

fn init(a: &InitArgs) -> Result<()> {
    let dir = &a.at.dir;
    if dir.join("vault.json").exists() {
        bail!(
            "{} already holds a keeper (vault.json); refusing to replace it",
            dir.display()
        );
    }
    if a.kdf_memory.is_some() && a.unlock.key_file.is_some() {
        return Err(usage(
            "--kdf-memory sets the passphrase's Argon2id cost; a key file needs none",
        ));
    }
    let params = match a.kdf_memory {
        Some(kib) => {
            let d = KdfParams::default();
            KdfParams::new(kib, d.iterations(), d.parallelism())
                .map_err(|e| usage(format!("--kdf-memory: {e}")))?
        }
        None => KdfParams::default(),
    };
    if a.new_key_file
        && let Some(path) = &a.unlock.key_file
    {
        custos_vault::create_key_file(path, &mut OsRng).map_err(|e| match e {
            VaultError::AlreadyExists(p) => anyhow::anyhow!(
                "{} already exists; drop --new-key-file to use it, or name a new file",
                p.display()
            ),
            other => other.into(),
        })?;
        eprintln!(
            "wrote a new key file to {} (mode 0600); keep it off the disk the keeper's directory is \
                 backed up to",
            path.display()
        );
    }
    let unlocker = Unlocker::from_args(&a.unlock)?;
    private_dir(dir)?;
    let mut keeper = Keeper::init(dir, unlocker.unlock(), params).map_err(keeper_err)?;
    trust_hub(&mut keeper)?;
    let owner = hex::encode(keeper.owner());
    let kind = match unlocker {
        Unlocker::Passphrase(_) => "passphrase",
        Unlocker::KeyFile(_) => "key file",
    };
    if a.json {
        println!(
            "{}",
            json!({"dir": dir, "owner": owner, "unlock": kind,
                "kdf_memory_kib": (kind == "passphrase").then(|| params.memory_kib())})
        );
    } else {
        println!("{owner}");
        eprintln!(
            "keeper created in {} (vault locked with a {kind}); the line above is its owner id: applications \
             address their requests to it",
            dir.display()
        );
    }
    Ok(())
}

fn trust(a: &TrustArgs) -> Result<()> {
    let unlocker = Unlocker::from_args(&a.unlock)?;
    let (mut keeper, _lock) = open(&a.at.dir, &unlocker)?;
    if let (Some(name), Some(key)) = (&a.name, a.key) {
        keeper.trust_app(name, key).map_err(|e| match e {
            KeeperError::State { why, .. } => usage(why),
            other => keeper_err(other),
        })?;
        if !a.json {
            eprintln!(
                "\"{name}\" is pinned to key {}…: policy rules naming it apply to that key",
                fingerprint(&key)
            );
        }
    }
    let apps = keeper.trusted_apps();
    if a.json {
        let list: Vec<_> = apps
            .iter()
            .map(|(k, n)| json!({"name": n, "key": k}))
            .collect();
        println!("{}", json!({ "apps": list }));
    } else if a.name.is_none() {
        for (k, n) in apps {
            println!("{n}  {k}");
        }
    }
    Ok(())
}

fn id(a: &IdArgs) -> Result<()> {
    has_keeper(&a.at.dir)?;
    let unlocker = Unlocker::from_args(&a.unlock)?;
    let vault = SoftwareVault::open(&a.at.dir.join("vault.json"), unlocker.unlock())
        .map_err(|e| keeper_err(e.into()))?;
    let owner = hex::encode(vault.signing_public());
    if a.json {
        println!("{}", json!({ "owner": owner }));
    } else {
        println!("{owner}");
    }
    Ok(())
}

fn policy_summary(p: &Policy) -> String {
    let n = p.rule_count();
    format!(
        "{n} rule{}, default {}; the first matching rule wins",
        if n == 1 { "" } else { "s" },
        p.default_action()
    )
}

fn policy(a: &PolicyArgs) -> Result<()> {
    if let Some(file) = &a.check {
        let text = String::from_utf8(read_limited(file, 1 << 20)?)
            .map_err(|_| usage(format!("{}: not UTF-8 text", file.display())))?;
        return match Policy::from_toml(&text) {
            Ok(p) => {
                if a.json {
                    println!(
                        "{}",
                        json!({"file": file, "valid": true, "rules": p.rule_count(),
                            "default": p.default_action().name()})
                    );
                } else {
                    println!("{}: valid: {}", file.display(), policy_summary(&p));
                }
                Ok(())
            }
            Err(e) => {
                if a.json {
                    println!(
                        "{}",
                        json!({"file": file, "valid": false, "error": e.to_string()})
                    );
                }
                Err(usage(format!("{}: {e}", file.display())))
            }
        };
    }
    let Some(dir) = &a.dir else {
        return Err(usage("give --dir DIR or --check FILE"));
    };
    has_keeper(dir)?;
    let path = dir.join("policy.toml");
    let text = match fs::read(&path) {
        Ok(bytes) => String::from_utf8(bytes)
            .map_err(|_| usage(format!("{}: not UTF-8 text", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if a.json {
                println!(
                    "{}",
                    json!({"file": null, "rules": 0, "default": "ask", "text": null})
                );
            } else {
                println!(
                    "no policy in force ({} does not exist): every request is asked",
                    path.display()
                );
            }
            return Ok(());
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display())));
        }
    };
    let p = Policy::from_toml(&text).map_err(|e| {
        usage(format!(
            "{}: {e} (the keeper refuses to sync until it is fixed)",
            path.display()
        ))
    })?;
    if a.json {
        println!(
            "{}",
            json!({"file": path, "rules": p.rule_count(), "default": p.default_action().name(), "text": text})
        );
    } else {
        print!("{text}");
        if !text.ends_with('\n') {
            println!();
        }
        eprintln!(
            "policy in force: {}: {}",
            path.display(),
            policy_summary(&p)
        );
    }
    Ok(())
}

/// The epoch's span from the flags: by default from the start of this month for a year.
fn epoch_span(e: &EpochArgs, now: UnixTime) -> Result<Span> {
    let from = match &e.epoch_from {
        Some(t) => time_arg("--epoch-from", t)?,
        None => crate::start_of_month(now)?,
    };
    let until = match &e.epoch_until {
        Some(t) => time_arg("--epoch-until", t)?,
        None => {
            let (y, m, d, ..) = from.civil();
            let day = d.min(custos_proto::time::days_in_month(y + 1, m));
            UnixTime::new(UnixTime::from_date(y + 1, m, day)?.secs() + from.secs() % 86_400)?
        }
    };
    let span = Span::new(from, until).map_err(|_| {
        usage(format!(
            "--epoch-from {from} is not before --epoch-until {until}"
        ))
    })?;
    if until <= now {
        return Err(usage(format!(
            "the epoch ends at {until}, before now: there is nothing left to provision"
        )));
    }
    Ok(span)
}

/// The epoch's tree: the device's next epoch (or the one asked for) over `span`.
fn epoch_tree(keeper: &Keeper, e: &EpochArgs, span: Span) -> Result<TreeSpec> {
    let epoch = e.epoch.unwrap_or_else(|| keeper.next_epoch(e.device));
    TreeSpec::new(e.device, Epoch(epoch), e.schedule, span).map_err(|err| {
        usage(format!(
            "the epoch must start and end on boundaries of the schedule's leaf stage ({}): {err}",
            e.schedule.leaf()
        ))
    })
}

fn pair(a: &PairArgs) -> Result<()> {
    let now = now()?;
    let span = epoch_span(&a.e, now)?;
    let code = custos_device::parse_code(&a.owner_code).ok_or_else(|| {
        usage("--owner-code must be 32 hex digits (dashes allowed), as on the device's label")
    })?;
    let timeout = Duration::from_secs(parse_duration("--timeout", &a.timeout, false)?);
    let hub = hub_url(&a.hub.hub)?;
    let unlocker = Unlocker::from_args(&a.unlock)?;
    let (mut keeper, _lock) = open(&a.at.dir, &unlocker)?;
    let spec = epoch_tree(&keeper, &a.e, span)?;
    if !a.json {
        eprintln!(
            "pairing with device {} through {hub}: waiting up to {} for it",
            a.e.device, a.timeout
        );
    }
    let paired = runtime()?
        .block_on(keeper.pair(&hub, spec, a.e.suite, &code, now, timeout))
        .map_err(|e| match e {
            KeeperError::Protocol(p) => {
                usage(format!("device {} epoch {}: {p}", a.e.device, spec.epoch()))
            }
            other => keeper_err(other),
        })?;
    if a.json {
        println!(
            "{}",
            json!({"device": paired.device.to_string(), "epoch": paired.epoch, "schedule": a.e.schedule.to_string(),
                "valid_from": span.start().to_string(), "valid_until": span.end().to_string(),
                "frontier_from": now.to_string(), "secrets": paired.secrets})
        );
    } else {
        eprintln!(
            "device {} paired and provisioned with DPK epoch {} ({}, valid {span}): it holds {} secret(s), the \
             frontier from {now}",
            paired.device, paired.epoch, a.e.schedule, paired.secrets
        );
    }
    Ok(())
}

fn provision(a: &ProvisionArgs) -> Result<()> {
    let now = now()?;
    let span = epoch_span(&a.e, now)?;
    let (from, until) = (span.start(), span.end());
    if a.out.exists() && !a.force {
        bail!(
            "{} already exists; pass --force to overwrite it",
            a.out.display()
        );
    }
    let unlocker = Unlocker::from_args(&a.unlock)?;
    let (mut keeper, _lock) = open(&a.at.dir, &unlocker)?;
    let spec = epoch_tree(&keeper, &a.e, span)?;
    let epoch = spec.epoch().0;
    let provision = keeper
        .new_epoch(spec, a.e.suite, now)
        .map_err(|e| match e {
            KeeperError::Protocol(p) => usage(format!("device {} epoch {epoch}: {p}", a.e.device)),
            other => keeper_err(other),
        })?;
    let tree = *provision.tree();
    let suite = provision.suite();
    let nodes = provision.into_nodes();
    let count = nodes.len();
    keyfile::write_keys(
        &a.out,
        &Keys {
            spec: tree,
            suite,
            nodes,
        },
        a.force,
    )
    .context("the epoch is registered with the keeper, but its key file was not written; provision the next epoch")?;
    if a.json {
        println!(
            "{}",
            json!({"file": a.out, "device": a.e.device.to_string(), "epoch": epoch, "schedule": a.e.schedule.to_string(),
                "suite": a.e.suite.to_string(), "valid_from": from.to_string(), "valid_until": until.to_string(),
                "frontier_from": now.to_string(), "secrets": count})
        );
    } else {
        eprintln!(
            "device {} epoch {epoch} ({}, {}, valid {span}) registered; wrote its frontier from {now} ({count} \
             secret(s)) to {} (mode 0600): start the device with `custos device run --keys {}`, then delete it",
            a.e.device,
            a.e.schedule,
            a.e.suite,
            a.out.display(),
            a.out.display()
        );
    }
    Ok(())
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn handled_json(h: &Handled) -> Value {
    match h {
        Handled::Granted { id, nodes, by } => {
            json!({"id": id, "outcome": "granted", "nodes": nodes, "by": by})
        }
        Handled::Denied { id, reason } => json!({"id": id, "outcome": "denied", "reason": reason}),
        Handled::Asked { id, reason } => json!({"id": id, "outcome": "asked", "reason": reason}),
        Handled::Refused { id, reason } => {
            json!({"id": id, "outcome": "refused", "reason": reason})
        }
    }
}

fn handled_line(h: &Handled) -> String {
    match h {
        Handled::Granted { id, nodes, by } => {
            format!("granted  {}  {nodes} node secret(s), by {by}", short(id))
        }
        Handled::Denied { id, reason } => format!("denied   {}  {}", short(id), clean(reason)),
        Handled::Asked { id, reason } => format!(
            "asked    {}  {}; see `custos keeper inbox`",
            short(id),
            clean(reason)
        ),
        Handled::Refused { id, reason } => {
            format!("refused  {}  {} (no answer sent)", short(id), clean(reason))
        }
    }
}

fn print_report(r: &SyncReport, as_json: bool) {
    if as_json {
        let handled: Vec<_> = r.handled.iter().map(handled_json).collect();
        println!("{}", json!({"handled": handled, "delivered": r.delivered}));
        return;
    }
    if r.handled.is_empty() {
        println!("no new requests");
    }
    for h in &r.handled {
        println!("{}", handled_line(h));
    }
    println!("delivered {} answer(s) to the hub", r.delivered);
}

fn sync(a: &SyncArgs) -> Result<()> {
    let hub = hub_url(&a.hub.hub)?;
    let unlocker = Unlocker::from_args(&a.unlock)?;
    let (mut keeper, _lock) = open(&a.at.dir, &unlocker)?;
    let report = runtime()?.block_on(keeper.sync(&hub)).map_err(keeper_err)?;
    print_report(&report, a.json);
    Ok(())
}

fn serve(a: &ServeArgs) -> Result<()> {
    crate::init_logs();
    let hub = hub_url(&a.hub.hub)?;
    let every = Duration::from_secs(parse_duration("--every", &a.every, false)?);
    let dir = a.at.dir.clone();
    let unlocker = Unlocker::from_args(&a.unlock)?;
    // Fail now, not in a loop, on a wrong passphrase or a broken state directory.
    let (owner, hub_trust) = {
        let (keeper, _lock) = open(&dir, &unlocker)?;
        (hex::encode(keeper.owner()), keeper.hub_trust().clone())
    };
    tracing::info!(%owner, %hub, every = %human_duration(every.as_secs()), dir = %dir.display(), "keeper serving");
    runtime()?.block_on(async {
        let shutdown = custos_hub::serve::shutdown_signal();
        tokio::pin!(shutdown);
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let client = custos_client::HubClient::new(&hub, Duration::from_secs(10), &hub_trust).ok();
        let mut watch: Option<custos_keeper::InboxWatch> = None;
        loop {
            // The next round comes at the next tick, or as soon as a new request reaches the hub.
            let woken = async {
                match (&watch, &client) {
                    (Some(w), Some(client)) => loop {
                        match w.wait(client, Duration::from_secs(25)).await {
                            Ok(true) => break,
                            Ok(false) => {}
                            // A token past its two minutes, or the hub away: the ticker takes over.
                            Err(_) => std::future::pending::<()>().await,
                        }
                    },
                    _ => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = &mut shutdown => break,
                _ = ticker.tick() => {}
                () = woken => {}
            }
            let result = tokio::select! {
                () = &mut shutdown => break,
                r = round(&dir, &unlocker, &hub) => r,
            };
            match result {
                Ok(None) => {
                    tracing::info!("another `custos keeper` command holds the directory; next round later");
                }
                Ok(Some((report, next))) => {
                    watch = next;
                    if failing {
                        tracing::info!(%hub, "hub reachable again");
                        failing = false;
                    }
                    for h in &report.handled {
                        tracing::info!("{}", handled_line(h));
                    }
                    if report.delivered > 0 {
                        tracing::info!(delivered = report.delivered, "answers delivered");
                    }
                }
                Err(RoundError::Hub(e)) => {
                    if !failing {
                        tracing::warn!(%hub, "{e}; retrying every {}", human_duration(every.as_secs()));
                    } else {
                        tracing::debug!(%hub, "{e}");
                    }
                    failing = true;
                }
                Err(RoundError::Other(e)) => {
                    tracing::error!("{e:#}; retrying in {}", human_duration(every.as_secs()));
                }
            }
        }
        tracing::info!("stopping");
    });
    Ok(())
}

enum RoundError {
    Hub(String),
    Other(anyhow::Error),
}

/// One round of `serve`: `None` when another command holds the directory. Also returns what to wait on for
/// the next request.
async fn round(
    dir: &Path,
    u: &Unlocker,
    hub: &str,
) -> Result<Option<(SyncReport, Option<custos_keeper::InboxWatch>)>, RoundError> {
    let Some(_lock) = DirLock::try_take(dir).map_err(RoundError::Other)? else {
        return Ok(None);
    };
    let mut keeper = Keeper::open(dir, u.unlock()).map_err(|e| RoundError::Other(e.into()))?;
    if let Some(trust) = crate::hub_trust() {
        keeper
            .set_hub_trust(trust)
            .map_err(|e| RoundError::Other(e.into()))?;
    }
    match keeper.sync(hub).await {
        Ok(r) => {
            let watch = now().ok().and_then(|t| keeper.watch(t).ok());
            Ok(Some((r, watch)))
        }
        Err(KeeperError::Hub(e)) => Err(RoundError::Hub(format!("hub: {e}"))),
        Err(e) => Err(RoundError::Other(e.into())),
    }
}

/// How the inbox names an application: the name pinned to its key, or the claimed name, unverified.
fn app_label(p: &Pending) -> (String, &'static str) {
    let claimed = &p.request.request.app_name;
    match &p.known_as {
        Some(name) if name == claimed => (name.clone(), "pinned"),
        Some(name) => (name.clone(), "pinned (the request claims another name)"),
        None => (claimed.clone(), "unverified"),
    }
}

fn fingerprint(key: &[u8; 32]) -> String {
    hex::encode(&key[..8])
}

fn inbox(a: &InboxArgs) -> Result<()> {
    let unlocker = Unlocker::from_args(&a.unlock)?;
    let (mut keeper, _lock) = open(&a.at.dir, &unlocker)?;
    let pending = keeper.pending(now()?).map_err(keeper_err)?;
    if a.json {
        let list: Vec<_> = pending
            .iter()
            .map(|p| {
                let r = &p.request.request;
                let (name, status) = app_label(p);
                json!({"id": p.id, "app_name": name, "claimed_name": r.app_name, "name": status,
                    "app_key": hex::encode(r.app_key), "fingerprint": fingerprint(&r.app_key),
                    "devices": r.devices.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "from": r.range.start().to_string(), "until": r.range.end().to_string(),
                    "purpose": r.purpose, "purpose_text": r.purpose_text, "retention": r.retention,
                    "expires": r.expires.to_string(), "policy": p.reason})
            })
            .collect();
        println!("{}", json!({ "pending": list }));
        return Ok(());
    }
    if pending.is_empty() {
        println!("no requests waiting for a decision");
        return Ok(());
    }
    for (i, p) in pending.iter().enumerate() {
        let r = &p.request.request;
        let (name, status) = app_label(p);
        if i > 0 {
            println!();
        }
        // Unverified: the signing key is not pinned to any name. Say whether the name it claims is another key's.
        let taken = keeper.trusted_apps().values().any(|n| *n == r.app_name);
        let name = match status {
            "unverified" if taken => format!(
                "\"{}\" (unverified: the name is pinned to another key)",
                clean(&name)
            ),
            "unverified" => format!(
                "\"{}\" (unverified: no key is pinned to this name yet)",
                clean(&name)
            ),
            "pinned" => format!("{} (pinned name)", clean(&name)),
            _ => format!(
                "{} (pinned name; the request claims \"{}\")",
                clean(&name),
                clean(&r.app_name)
            ),
        };
        println!("{}  {name}", short(&p.id));
        println!("  key        {}", fingerprint(&r.app_key));
        let devices: Vec<_> = r.devices.iter().map(ToString::to_string).collect();
        println!("  devices    {}", devices.join(", "));
        println!(
            "  range      {}",
            human_span(r.range.start(), r.range.end())
        );
        println!(
            "  purpose    {}: {}",
            clean(&r.purpose),
            clean(&r.purpose_text)
        );
        println!("  retention  {}", human_duration(r.retention));
        println!("  expires    {}", human_time(r.expires));
        println!("  policy     {}", clean(&p.reason));
    }
    eprintln!(
        "decide with `custos keeper approve ID [--from T --until T]` or `custos keeper deny ID`"
    );
    Ok(())
}

/// The pending request `id` names (in full, or by a unique prefix of 8 or more digits).
fn resolve(keeper: &mut Keeper, id: &str, now: UnixTime) -> Result<Pending> {
    let id = id.trim().to_ascii_lowercase();
    if id.len() < 8 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(usage(format!(
            "`{id}` is not a request id: give at least 8 of its hex digits, as `custos keeper inbox` shows them"
        )));
    }
    let mut found: Vec<Pending> = keeper
        .pending(now)
        .map_err(keeper_err)?
        .into_iter()
        .filter(|p| p.id.starts_with(&id))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => {
            let decided = keeper
                .log()
                .entries()
                .iter()
                .rev()
                .find(|e| hex::encode(e.body.request).starts_with(&id));
            Err(usage(match decided {
                Some(e) => format!(
                    "request {id} was already {} on {} (by {})",
                    e.body.outcome.decision(),
                    time_secs(e.body.time),
                    e.body.decided_by
                ),
                None => format!("no pending request {id}; `custos keeper inbox` lists them"),
            }))
        }
        n => Err(usage(format!(
            "{n} pending requests start with {id}; give more digits"
        ))),
    }
}

/// `approve` (with its optional range) or `deny`.
fn decide(
    at: &DirArg,
    unlock: &UnlockArgs,
    id: &str,
    approve: Option<(&Option<String>, &Option<String>)>,
    hub: Option<&str>,
    as_json: bool,
) -> Result<()> {
    let hub = hub.map(hub_url).transpose()?;
    let unlocker = Unlocker::from_args(unlock)?;
    let (mut keeper, _lock) = open(&at.dir, &unlocker)?;
    let now = now()?;
    let p = resolve(&mut keeper, id, now)?;
    let asked = p.request.request.range;
    let handled = match approve {
        Some((from, until)) => {
            let range = if from.is_none() && until.is_none() {
                None
            } else {
                let from = match from {
                    Some(t) => time_arg("--from", t)?,
                    None => asked.start(),
                };
                let until = match until {
                    Some(t) => time_arg("--until", t)?,
                    None => asked.end(),
                };
                let r = span_arg(from, until)?;
                if !asked.includes(r) {
                    return Err(usage(format!(
                        "the range to grant, {r}, must lie within the range asked for, {asked}"
                    )));
                }
                Some(r)
            };
            keeper.approve(&p.id, range, now).map_err(keeper_err)?
        }
        None => keeper.deny_pending(&p.id, now).map_err(keeper_err)?,
    };
    let delivered = match &hub {
        None => None,
        Some(url) => Some(
            runtime()?
                .block_on(keeper.deliver(url))
                .map_err(|e| e.to_string()),
        ),
    };
    if as_json {
        let mut v = handled_json(&handled);
        v["delivered"] = match &delivered {
            Some(Ok(_)) => json!(true),
            _ => json!(false),
        };
        if let Some(Err(e)) = &delivered {
            v["delivery_error"] = json!(e);
        }
        println!("{v}");
    } else {
        println!("{}", handled_line(&handled));
    }
    match delivered {
        None => eprintln!(
            "the answer is queued: `custos keeper sync --hub URL` delivers it to the application"
        ),
        Some(Ok(n)) => eprintln!("delivered {n} answer(s) to the hub"),
        Some(Err(e)) => eprintln!(
            "warning: the decision is recorded and its answer queued, but not delivered ({e}); \
             `custos keeper sync --hub URL` delivers it"
        ),
    }
    Ok(())
}

fn entry_lines(e: &Entry) -> (String, String) {
    let b = &e.body;
    let first = format!(
        "#{:<4} {}  {:<7}  {}  {}  {}",
        e.seq,
        time_secs(b.time),
        b.outcome.decision(),
        short(&hex::encode(b.request)),
        clean(&b.app_name),
        clean(&b.purpose)
    );
    let asked = match (UnixTime::new(b.from), UnixTime::new(b.until)) {
        (Ok(f), Ok(u)) => human_span(f, u),
        _ => format!("@{} to @{}", b.from, b.until),
    };
    let granted = match b.outcome.granted() {
        Some((f, u)) => match (UnixTime::new(f), UnixTime::new(u)) {
            (Ok(f), Ok(u)) => format!(
                "; granted {} in {} node(s)",
                human_span(f, u),
                b.outcome.grant_nodes()
            ),
            _ => String::new(),
        },
        None => String::new(),
    };
    let second = format!("      asked {asked}{granted}; by {}", b.decided_by);
    (first, second)
}

fn log(a: &LogArgs) -> Result<()> {
    let unlocker = Unlocker::from_args(&a.unlock)?;
    let (keeper, _lock) = open(&a.at.dir, &unlocker)?;
    let log = keeper.log();
    let owner = hex::encode(keeper.owner());
    let head = log
        .head()
        .map(|h| format!("{}:{}", h.seq, hex::encode(h.hash)));
    if let Some(path) = &a.export {
        keyfile::write_private(path, &log.export(), a.force)?;
        eprintln!(
            "exported {} entr{} to {} (mode 0600); check it with `custos keeper log-verify {} --owner {owner}{}`",
            log.entries().len(),
            if log.entries().len() == 1 { "y" } else { "ies" },
            path.display(),
            path.display(),
            head.as_ref()
                .map(|h| format!(" --head {h}"))
                .unwrap_or_default()
        );
    }
    if a.json {
        print!("{}", String::from_utf8_lossy(&log.export()));
        return Ok(());
    }
    if a.export.is_some() {
        return Ok(());
    }
    if log.entries().is_empty() {
        println!("the consent log is empty: no decision made yet");
        return Ok(());
    }
    for e in log.entries() {
        let (first, second) = entry_lines(e);
        println!("{first}");
        println!("{second}");
    }
    if let Some(h) = head {
        eprintln!(
            "head {h}: note it somewhere safe; `custos keeper log-verify FILE --owner {owner} --head {h}` then \
             also detects entries cut off at the end"
        );
    }
    Ok(())
}

fn log_verify(a: &LogVerifyArgs) -> Result<()> {
    let bytes = read_limited(&a.file, 256 << 20)?;
    let result = match &a.head {
        Some(h) => consent::verify_export_with_head(&bytes, &a.owner, h),
        None => consent::verify_export(&bytes, &a.owner),
    };
    match result {
        Ok(entries) => {
            let head = entries
                .last()
                .map(|e| format!("{}:{}", e.seq, hex::encode(e.hash())));
            if a.json {
                println!(
                    "{}",
                    json!({"intact": true, "entries": entries.len(), "head": head, "pinned_head_checked": a.head.is_some()})
                );
            } else {
                println!(
                    "{}: intact: {} entr{} signed by keeper {}, chained and in order{}{}",
                    a.file.display(),
                    entries.len(),
                    if entries.len() == 1 { "y" } else { "ies" },
                    hex::encode(a.owner),
                    head.map(|h| format!("; head {h}")).unwrap_or_default(),
                    if a.head.is_some() {
                        "; the pinned head is in it"
                    } else {
                        ""
                    }
                );
            }
            Ok(())
        }
        Err(e) => {
            if a.json {
                println!("{}", json!({"intact": false, "error": e.to_string()}));
            }
            bail!("{}: {e}", a.file.display())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("x", "30d", false).unwrap(), 30 * 86_400);
        assert_eq!(parse_duration("x", "2w", false).unwrap(), 14 * 86_400);
        assert_eq!(parse_duration("x", "0s", true).unwrap(), 0);
        for bad in ["", "d", "0m", "-5m", "5y", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration("x", bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn human_forms() {
        assert_eq!(human_duration(30 * 86_400), "30 days");
        assert_eq!(human_duration(86_400 + 12 * 3600), "1 day 12 hours");
        assert_eq!(human_duration(86_400 + 30), "1 day 30 seconds");
        assert_eq!(human_duration(45 * 60), "45 minutes");
        let t = UnixTime::from_date(2026, 3, 9).unwrap();
        assert_eq!(human_time(t), "2026-03-09");
        assert_eq!(
            human_time(UnixTime::new(t.secs() + 3600 + 5).unwrap()),
            "2026-03-09 01:00:05 UTC"
        );
        assert_eq!(clean("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
    }

    #[test]
    fn heads_and_owners() {
        let h = parse_head(&format!("3:{}", "ab".repeat(32))).unwrap();
        assert_eq!(h.seq, 3);
        assert!(parse_head("3").is_err());
        assert!(parse_head("x:00").is_err());
        assert!(parse_owner("zz").is_err());
        assert!(parse_owner(&"0".repeat(64)).is_ok());
    }
}
