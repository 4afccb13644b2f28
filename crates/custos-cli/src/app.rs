//! `custos app …`: a processing application on the command line — ask an owner's keeper for a slice of time,
//! wait for the answer, fetch and decrypt exactly what was granted.
//!
//! The application's state directory (`--dir`, or `CUSTOS_APP_DIR`) is the SDK's (`custos_app`): `app.json` (its
//! name and signing key), `requests/` (each signed request with its reply secret) and `answers/` (the keeper's
//! answers once fetched), all owner-only.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use custos_app::{Answer, App, AppError, Ask, decrypt_all};
use custos_proto::sharing::{GrantedTree, MAX_DEVICES, MAX_PURPOSE_TEXT, MAX_SHORT_TEXT};
use custos_proto::{DeviceId, Epoch, RecordHeader, Span, TreeSpec, UnixTime};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::keeper::{
    Usage, exit, hub_url, human_duration, human_span, now, parse_duration, parse_owner, runtime,
    span_arg, time_arg, usage,
};

/// The application's subcommands.
#[derive(Subcommand)]
pub enum AppCmd {
    /// Create an application identity (a signing key and a name) in a new state directory; prints its key.
    #[command(
        long_about = "Create an application identity in a new state directory: an Ed25519 signing key \
        and the name keepers show their users. Prints the application's public key (hex): owners name it in \
        their policies. A keeper matches policy rules naming the application only once its user has pinned the \
        name to this key: with `custos keeper trust --name NAME --key KEY`, or by approving one of its requests \
        (which pins the name if neither the name nor the key is pinned yet). Until then its requests show as \
        unverified, and only rules naming the key, or `*`, apply."
    )]
    New(NewArgs),
    /// Sign a sharing request and post it to the hub for the owner's keeper; prints the request id.
    #[command(
        long_about = "Sign a sharing request (owner, devices, time range, purpose, retention, a fresh reply \
        key, expiry) and post it to the hub, which keeps it for the owner's keeper: the keeper may be offline. \
        Prints the request id; wait for the answer with `custos app wait` or go straight to `custos app fetch`.\n\n\
        The reply key's secret stays in the state directory, so the answer can be opened days later."
    )]
    Request(RequestArgs),
    /// Wait for the keeper's answer: exit 0 if granted (prints the secrets' ranges per device), 1 if denied or
    /// not answered in time.
    Wait(WaitArgs),
    /// Fetch the granted records from the hub and decrypt them, as CSV or JSON lines.
    #[command(
        long_about = "Fetch the records the grant covers from the hub, decrypt them on all cores and write \
        them as CSV (device,epoch,leaf_start_rfc3339,nonce_hex,reading) or JSON lines. A reading that is not \
        UTF-8 text (or that starts with `hex:`) is written as `hex:` and its bytes in hex.\n\n\
        Waits for the answer (--timeout) unless it is already stored. Exit code 1 if the request was denied or \
        not answered, 3 if a record did not open (altered, or outside the grant); the records that opened are \
        written either way. The summary goes to stderr."
    )]
    Fetch(FetchArgs),
}

/// Where the application's state is.
#[derive(Args)]
pub struct DirArg {
    /// The application's state directory.
    #[arg(long, env = "CUSTOS_APP_DIR", value_name = "DIR")]
    dir: PathBuf,
}

/// `custos app new`.
#[derive(Args)]
pub struct NewArgs {
    #[command(flatten)]
    at: DirArg,
    /// The application's name, as the owner will see it (1 to 64 bytes).
    #[arg(long)]
    name: String,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// `custos app request`.
#[derive(Args)]
pub struct RequestArgs {
    #[command(flatten)]
    at: DirArg,
    /// The hub's URL, e.g. https://hub.example:7180.
    #[arg(long, env = "CUSTOS_HUB_URL", value_name = "URL")]
    hub: String,
    /// The data owner: the owner id of their keeper (64 hex digits, from `custos keeper id`).
    #[arg(long, value_parser = parse_owner, value_name = "HEX")]
    owner: [u8; 32],
    /// A device whose records to ask for; repeat for several (at most 64).
    #[arg(long = "device", value_name = "ID", required = true)]
    devices: Vec<DeviceId>,
    /// Start of the range.
    #[arg(long, value_name = "TIME")]
    from: String,
    /// End of the range, exclusive.
    #[arg(long, value_name = "TIME")]
    until: String,
    /// The purpose code, e.g. energy.optimization (owners' policies match on it).
    #[arg(long, value_name = "CODE")]
    purpose: String,
    /// The purpose in words, shown to the owner (at most 512 bytes).
    #[arg(long, value_name = "TEXT")]
    purpose_text: String,
    /// How long the application keeps the data: 30d, 12h, 0s.
    #[arg(long, default_value = "30d")]
    retention: String,
    /// How long the request stays valid (at most 90d).
    #[arg(long, default_value = "7d")]
    valid_for: String,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// `custos app wait`.
#[derive(Args)]
pub struct WaitArgs {
    #[command(flatten)]
    at: DirArg,
    /// The request id, or its first 8 or more hex digits.
    id: String,
    /// The hub's URL, e.g. https://hub.example:7180 [default: the hub the request was posted to].
    #[arg(long, env = "CUSTOS_HUB_URL", value_name = "URL")]
    hub: Option<String>,
    /// How long to wait for the answer: 60s, 10m, 0s (ask once).
    #[arg(long, default_value = "60s")]
    timeout: String,
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

/// Output formats of `custos app fetch`.
#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// `device,epoch,leaf_start_rfc3339,nonce_hex,reading`, with a header line.
    Csv,
    /// One JSON object per record.
    Jsonl,
}

/// `custos app fetch`.
#[derive(Args)]
pub struct FetchArgs {
    #[command(flatten)]
    at: DirArg,
    /// The request id, or its first 8 or more hex digits.
    id: String,
    /// The hub's URL, e.g. https://hub.example:7180 [default: the hub the request was posted to].
    #[arg(long, env = "CUSTOS_HUB_URL", value_name = "URL")]
    hub: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    format: Format,
    /// Output file (mode 0600) [default: stdout].
    #[arg(short, long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Overwrite the --out file if it exists.
    #[arg(long)]
    force: bool,
    /// How long to wait for the answer if it is not stored yet.
    #[arg(long, default_value = "60s")]
    timeout: String,
}

/// Runs an application subcommand and gives its exit code.
pub fn run(cmd: AppCmd) -> ExitCode {
    exit(match cmd {
        AppCmd::New(a) => new(&a),
        AppCmd::Request(a) => request(&a),
        AppCmd::Wait(a) => wait(&a),
        AppCmd::Fetch(a) => fetch(&a),
    })
}

/// An SDK error as the CLI reports it: an unknown request is a usage error, a request that fails its own checks
/// is bad input.
fn app_err(e: AppError) -> anyhow::Error {
    match e {
        AppError::UnknownRequest(_) | AppError::Protocol(_) => Usage(e.to_string()).into(),
        other => other.into(),
    }
}

fn open(dir: &Path) -> Result<App> {
    if !dir.join("app.json").is_file() {
        return Err(usage(format!(
            "{} holds no application (no app.json): create one with `custos app new --dir {} --name NAME`",
            dir.display(),
            dir.display()
        )));
    }
    let mut app = App::open(dir).map_err(app_err)?;
    if let Some(trust) = crate::hub_trust() {
        app.set_hub_trust(trust).map_err(app_err)?;
    }
    Ok(app)
}

fn new(a: &NewArgs) -> Result<()> {
    let name = a.name.trim();
    if name.is_empty() || name.len() > MAX_SHORT_TEXT {
        return Err(usage(format!("--name must be 1 to {MAX_SHORT_TEXT} bytes")));
    }
    if a.at.dir.join("app.json").exists() {
        bail!(
            "{} already holds an application identity; refusing to replace it",
            a.at.dir.display()
        );
    }
    crate::keeper::private_dir(&a.at.dir)?;
    let mut app = App::create(&a.at.dir, name).map_err(app_err)?;
    if let Some(trust) = crate::hub_trust() {
        app.set_hub_trust(trust).map_err(app_err)?;
    }
    let key = hex::encode(app.public_key());
    if a.json {
        println!(
            "{}",
            json!({"dir": a.at.dir, "name": app.name(), "app_key": key})
        );
    } else {
        println!("{key}");
        eprintln!(
            "application \"{}\" created in {}; the line above is its key, which owners name in their policies",
            app.name(),
            a.at.dir.display()
        );
    }
    Ok(())
}

fn request(a: &RequestArgs) -> Result<()> {
    let hub = hub_url(&a.hub)?;
    let range = span_arg(time_arg("--from", &a.from)?, time_arg("--until", &a.until)?)?;
    let mut devices = a.devices.clone();
    devices.sort_by_key(|d| d.0);
    devices.dedup();
    if devices.len() != a.devices.len() {
        return Err(usage("a --device is given twice"));
    }
    if devices.len() > MAX_DEVICES {
        return Err(usage(format!(
            "a request names at most {MAX_DEVICES} devices"
        )));
    }
    if a.purpose.is_empty() || a.purpose.len() > MAX_SHORT_TEXT {
        return Err(usage(format!(
            "--purpose must be 1 to {MAX_SHORT_TEXT} bytes, e.g. energy.optimization"
        )));
    }
    if a.purpose_text.len() > MAX_PURPOSE_TEXT {
        return Err(usage(format!(
            "--purpose-text must be at most {MAX_PURPOSE_TEXT} bytes"
        )));
    }
    let retention = parse_duration("--retention", &a.retention, true)?;
    let valid_for = parse_duration("--valid-for", &a.valid_for, false)?;
    if valid_for > custos_proto::sharing::MAX_REQUEST_LIFETIME {
        return Err(usage("--valid-for must be at most 90d"));
    }
    let app = open(&a.at.dir)?;
    let expires = UnixTime::new(now()?.secs() + valid_for)?;
    let ask = Ask {
        owner: a.owner,
        devices: a.devices.clone(),
        range,
        purpose: a.purpose.clone(),
        purpose_text: a.purpose_text.clone(),
        retention,
        expires,
    };
    let sent = runtime()?
        .block_on(app.request(&hub, &ask))
        .map_err(app_err)?;
    if a.json {
        println!(
            "{}",
            json!({"id": sent.id, "owner": hex::encode(a.owner),
                "devices": a.devices.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "from": range.start().to_string(), "until": range.end().to_string(), "purpose": a.purpose,
                "retention": retention, "expires": expires.to_string()})
        );
    } else {
        println!("{}", sent.id);
        eprintln!(
            "asked for {} of {} device(s) for {}; the request stays valid until {expires}; \
             `custos app wait --dir {} {}` waits for the keeper's answer",
            human_span(range.start(), range.end()),
            a.devices.len(),
            a.purpose,
            a.at.dir.display(),
            &sent.id[..12]
        );
    }
    Ok(())
}

/// The request `id` names among this application's (in full, or by a unique prefix of 8 or more digits).
fn resolve(app: &App, dir: &Path, id: &str) -> Result<String> {
    let id = id.trim().to_ascii_lowercase();
    if id.len() < 8 || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(usage(format!(
            "`{id}` is not a request id: give at least 8 of its hex digits, as `custos app request` printed them"
        )));
    }
    let mut found: Vec<String> = app
        .requests()
        .map_err(app_err)?
        .into_iter()
        .filter(|r| r.starts_with(&id))
        .collect();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(usage(format!(
            "no request {id} was made from {}",
            dir.display()
        ))),
        n => Err(usage(format!(
            "{n} requests start with {id}; give more digits"
        ))),
    }
}

/// The hub to ask about request `id`: `--hub`, or the one the request was posted to.
fn request_hub(app: &App, id: &str, hub: Option<&str>) -> Result<String> {
    match hub {
        Some(h) => hub_url(h),
        None => app.hub_of(id).map_err(app_err),
    }
}

/// The answer to `id`: the stored one, or the hub's, waiting up to `timeout` for it.
async fn answer(app: &App, dir: &Path, hub: &str, id: &str, timeout: Duration) -> Result<Answer> {
    let stored = dir.join("answers").join(format!("{id}.cose"));
    if let Ok(bytes) = fs::read(&stored) {
        return app
            .open_answer(id, &bytes)
            .with_context(|| format!("the stored answer {}", stored.display()));
    }
    match app.wait_at(hub, id, timeout).await {
        Ok(a) => Ok(a),
        Err(AppError::NoAnswerYet) => bail!(
            "no answer to request {} within {}: the keeper has not decided yet, or is offline; the request \
             stays valid until it expires, so wait again later",
            &id[..12],
            human_duration(timeout.as_secs())
        ),
        Err(e) => Err(app_err(e)),
    }
}

fn stage_name(spec: &TreeSpec, depth: u8) -> String {
    match depth {
        0 => "dpk".into(),
        d => spec
            .schedule()
            .stages()
            .get(usize::from(d) - 1)
            .map_or_else(|| "?".into(), ToString::to_string),
    }
}

/// The range a granted tree's nodes cover.
fn granted_range(tree: &GrantedTree) -> Result<Option<Span>> {
    let mut bounds: Option<(UnixTime, UnixTime)> = None;
    for n in &tree.nodes {
        let s = tree.spec.node_span(n.node())?;
        bounds = Some(match bounds {
            None => (s.start(), s.end()),
            Some((a, b)) => (a.min(s.start()), b.max(s.end())),
        });
    }
    Ok(bounds.map(|(a, b)| Span::new(a, b)).transpose()?)
}

fn wait(a: &WaitArgs) -> Result<()> {
    let timeout = Duration::from_secs(parse_duration("--timeout", &a.timeout, true)?);
    let hub = a.hub.as_deref().map(hub_url).transpose()?;
    let app = open(&a.at.dir)?;
    let id = resolve(&app, &a.at.dir, &a.id)?;
    let hub = request_hub(&app, &id, hub.as_deref())?;
    let trees = match runtime()?.block_on(answer(&app, &a.at.dir, &hub, &id, timeout))? {
        Answer::Granted(trees) => trees,
        Answer::Denied(reason) => {
            if a.json {
                println!("{}", json!({"id": id, "granted": false, "reason": reason}));
            }
            bail!(
                "request {} was denied by the keeper: {}",
                &id[..12],
                crate::keeper::clean(&reason)
            );
        }
    };
    if a.json {
        let list: Vec<_> = trees
            .iter()
            .map(|t| {
                let range = granted_range(t).ok().flatten();
                let nodes: Vec<_> = t
                    .nodes
                    .iter()
                    .map(|n| {
                        let s = t.spec.node_span(n.node()).ok();
                        json!({"depth": n.node().depth, "stage": stage_name(&t.spec, n.node().depth),
                            "index": n.node().index, "from": s.map(|s| s.start().to_string()),
                            "until": s.map(|s| s.end().to_string())})
                    })
                    .collect();
                json!({"device": t.spec.device().to_string(), "epoch": t.spec.epoch().0,
                    "schedule": t.spec.schedule().to_string(), "from": range.map(|r| r.start().to_string()),
                    "until": range.map(|r| r.end().to_string()), "nodes": nodes})
            })
            .collect();
        println!("{}", json!({"id": id, "granted": true, "trees": list}));
        return Ok(());
    }
    let total: usize = trees.iter().map(|t| t.nodes.len()).sum();
    println!("request {} granted: {total} node secret(s)", &id[..12]);
    for t in &trees {
        let range =
            granted_range(t)?.map_or_else(|| "nothing".into(), |r| human_span(r.start(), r.end()));
        println!(
            "device {} epoch {} ({}): {range}",
            t.spec.device(),
            t.spec.epoch(),
            t.spec.schedule()
        );
        for n in &t.nodes {
            let node = n.node();
            println!(
                "  depth {} {:<7} index {:<10} {}",
                node.depth,
                stage_name(&t.spec, node.depth),
                node.index,
                t.spec.node_span(node)?
            );
        }
    }
    Ok(())
}

/// Records decrypted per batch: the progress bar moves between batches; each batch runs on all cores.
const BATCH: usize = 1 << 16;
/// From this many records on, fetch shows a progress bar (on a terminal).
const BAR_FROM: usize = 10_000;

/// A CSV field: quoted when it holds a comma, a quote or a line break (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A reading as text, or `hex:` and its bytes when it is not UTF-8 (or would read as hex itself).
fn reading_text(plain: &[u8]) -> (Option<&str>, String) {
    match std::str::from_utf8(plain) {
        Ok(t) if !t.starts_with("hex:") => (Some(t), t.to_string()),
        _ => (None, format!("hex:{}", hex::encode(plain))),
    }
}

/// Opens `--out` (new, owner-only) or stdout.
fn output(path: Option<&Path>, force: bool) -> Result<Box<dyn Write>> {
    let Some(path) = path else {
        return Ok(Box::new(std::io::BufWriter::new(std::io::stdout().lock())));
    };
    let f = custos_device::keyfile::create_private(path, force)?;
    Ok(Box::new(std::io::BufWriter::new(f)))
}

fn write_record(
    out: &mut dyn Write,
    format: Format,
    spec: Option<&TreeSpec>,
    h: &RecordHeader,
    plain: &[u8],
) -> std::io::Result<()> {
    let period = spec.and_then(|s| s.node_span(s.leaf_node(h.leaf)).ok());
    let start = period.map(|p| p.start().to_string()).unwrap_or_default();
    let (text, field) = reading_text(plain);
    match format {
        Format::Csv => writeln!(
            out,
            "{},{},{},{},{}",
            h.device,
            h.epoch.0,
            start,
            hex::encode(h.nonce),
            csv_field(&field)
        ),
        Format::Jsonl => writeln!(
            out,
            "{}",
            json!({"device": h.device.to_string(), "epoch": h.epoch.0, "leaf": h.leaf, "leaf_start": start,
                "leaf_until": period.map(|p| p.end().to_string()), "nonce": hex::encode(h.nonce),
                "reading": text, "reading_hex": if text.is_none() { Some(hex::encode(plain)) } else { None }})
        ),
    }
}

fn fetch(a: &FetchArgs) -> Result<()> {
    let hub = a.hub.as_deref().map(hub_url).transpose()?;
    let timeout = Duration::from_secs(parse_duration("--timeout", &a.timeout, true)?);
    if let Some(path) = &a.out
        && path.exists()
        && !a.force
    {
        bail!(
            "{} already exists; pass --force to overwrite it",
            path.display()
        );
    }
    let app = open(&a.at.dir)?;
    let id = resolve(&app, &a.at.dir, &a.id)?;
    let hub = request_hub(&app, &id, hub.as_deref())?;
    let rt = runtime()?;
    let trees = match rt.block_on(answer(&app, &a.at.dir, &hub, &id, timeout))? {
        Answer::Granted(trees) => trees,
        Answer::Denied(reason) => bail!(
            "request {} was denied by the keeper: {}",
            &id[..12],
            crate::keeper::clean(&reason)
        ),
    };
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    let mut records = Vec::new();
    let mut ranges = Vec::new();
    for tree in &trees {
        let Some(range) = granted_range(tree)? else {
            continue;
        };
        spinner.set_message(format!(
            "fetching device {} epoch {} ({} so far)",
            tree.spec.device(),
            tree.spec.epoch(),
            records.len()
        ));
        let got = rt
            .block_on(app.fetch_records(&hub, tree, range))
            .map_err(app_err)?;
        ranges.push((tree.spec.device(), range, got.len()));
        records.extend(got);
    }
    spinner.finish_and_clear();

    let specs: BTreeMap<(DeviceId, Epoch), TreeSpec> = trees
        .iter()
        .map(|t| ((t.spec.device(), t.spec.epoch()), t.spec))
        .collect();
    let mut out = output(a.out.as_deref(), a.force)?;
    if matches!(a.format, Format::Csv) {
        writeln!(out, "device,epoch,leaf_start_rfc3339,nonce_hex,reading")
            .context("cannot write the output")?;
    }
    let bar = if records.len() >= BAR_FROM {
        ProgressBar::new(records.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("decrypting {pos}/{len} records [{bar:30}] {elapsed}")?
            .progress_chars("=> "),
    );
    let (mut opened, mut refused) = (0usize, 0usize);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for batch in records.chunks(BATCH) {
        let done = decrypt_all(&trees, batch);
        for r in done.iter() {
            match r {
                Ok((h, plain)) => {
                    opened += 1;
                    write_record(
                        &mut out,
                        a.format,
                        specs.get(&(h.device, h.epoch)),
                        &h,
                        plain,
                    )
                    .context("cannot write the output")?;
                }
                Err(e) => {
                    refused += 1;
                    *reasons.entry(e.to_string()).or_default() += 1;
                }
            }
        }
        bar.inc(batch.len() as u64);
    }
    bar.finish_and_clear();
    out.flush().context("cannot write the output")?;
    drop(out);
    for (device, range, n) in &ranges {
        eprintln!(
            "device {device}: {n} record(s) in {}",
            human_span(range.start(), range.end())
        );
    }
    eprintln!(
        "records opened: {opened}, refused: {refused}{}",
        a.out
            .as_ref()
            .map(|p| format!("; written to {} (mode 0600)", p.display()))
            .unwrap_or_default()
    );
    for (reason, n) in &reasons {
        eprintln!("  refused {n}: {reason}");
    }
    if refused > 0 {
        return Err(crate::Rejected(format!(
            "{refused} of {} record(s) did not open: altered, or outside the grant",
            opened + refused
        ))
        .into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_readings() {
        assert_eq!(csv_field("21.5"), "21.5");
        assert_eq!(
            csv_field(r#"{"t":1,"x":"a"}"#),
            r#""{""t"":1,""x"":""a""}""#
        );
        assert_eq!(csv_field("a\nb"), "\"a\nb\"");
        assert_eq!(reading_text(b"21.5").1, "21.5");
        assert_eq!(reading_text(&[0xff, 0x00]).1, "hex:ff00");
        assert_eq!(reading_text(b"hex:00").1, "hex:6865783a3030");
    }
}
