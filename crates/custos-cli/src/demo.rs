//! `custos demo`: the whole story in one process, on the embedded default, with every claim checked as it is
//! printed.
//!
//! A real hub serves HTTP on loopback with SQLite in a temporary data directory. Devices are made at the
//! "factory", admitted by the operator with their join codes, and join over HTTP; the keeper provisions each
//! with its DPK, of which the device keeps only the forward-secure frontier. The devices stream a month of
//! readings through their on-disk queues. An application is granted one week of one device, fetches records from
//! the hub's API and opens exactly that week. The hub then plays the attacker, and its database is scanned for
//! keys and plaintext. Any check that fails ends the demo with an error (exit code 1).

use std::collections::HashSet;
use std::path::Path;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use custos_device::Factory;
use custos_device::agent::Agent;
use custos_device::keyfile::{self, Keys};
use custos_hub::serve::ServeConfig;
use custos_proto::admission::HANDSHAKE_BYTES;
use custos_proto::record::OVERHEAD;
use custos_proto::uplink::{LinkKeys, UPLINK_OVERHEAD, seal_uplink};
use custos_proto::{
    DeviceId, Epoch, Error, MasterSecret, NodeSecret, Opener, RecordHeader, RustCrypto, Schedule,
    Span, Suite, TreeSpec, UnixTime,
};
use custos_store::{AnyStore, PendingAdmission, Store};
use indicatif::{ProgressBar, ProgressStyle};
use rand_core::OsRng;
use serde_json::json;

use crate::{random_secret, timearg};

/// Options of `custos demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// The month the devices record, as YYYY-MM.
    #[arg(long, default_value = "2026-03")]
    month: String,
    /// Minutes between two readings of a device.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=1440))]
    every: u32,
    /// How many devices.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=20))]
    devices: u8,
    /// Print a JSON summary instead of the story.
    #[arg(long)]
    json: bool,
}

/// A plausible room temperature: a daily swing around 21 °C.
pub(crate) fn reading(t: UnixTime) -> String {
    let day_phase = (t.secs() % 86_400) as f64 / 86_400.0 * std::f64::consts::TAU;
    let temp = 21.0 + 2.5 * (day_phase - 2.0).sin() + ((t.secs() / 300) % 7) as f64 * 0.05;
    format!(r#"{{"t":"{t}","temp_c":{temp:.2}}}"#)
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(story(args))
}

struct Fleet {
    device: DeviceId,
    agent: Agent,
    spec: TreeSpec,
}

async fn story(args: &DemoArgs) -> Result<()> {
    let c = RustCrypto;
    let say = |who: &str, what: String| {
        if !args.json {
            println!("{who:<8} {what}");
        }
    };
    let month_start =
        timearg::parse(&format!("{}-01", args.month)).context("--month must be YYYY-MM")?;
    let (y, m, ..) = month_start.civil();
    let month_end = if m == 12 {
        UnixTime::from_date(y + 1, 1, 1)?
    } else {
        UnixTime::from_date(y, m + 1, 1)?
    };
    let year = Span::new(
        UnixTime::from_date(y, 1, 1)?,
        UnixTime::from_date(y + 1, 1, 1)?,
    )?;
    let work = WorkDir::new()?;
    if !args.json {
        println!(
            "Custos demo: a real hub on loopback, devices, the keeper and an application, in one process.\n"
        );
    }

    // The hub, on the embedded default: SQLite in its data directory.
    let hub_dir = work.path().join("hub");
    let running = custos_hub::serve::spawn(ServeConfig {
        data_dir: hub_dir.clone(),
        listen: "127.0.0.1:0".parse()?,
        database: None,
        mqtt: None,
    })
    .await?;
    let url = running.url();
    say(
        "hub",
        format!("serving {url}, SQLite in its data directory"),
    );
    let store = AnyStore::open(&hub_dir.join("hub.db").to_string_lossy()).await?;

    // The factory makes devices; the operator admits each with the join code from its label.
    let master = MasterSecret::new(random_secret());
    let mut fleet = Vec::new();
    let now = i64::try_from(timearg::now()?.secs())?;
    for i in 0..args.devices {
        let dir = work.path().join(format!("device-{i}"));
        let made = Factory::make(&mut OsRng);
        made.write_state(&dir)?;
        store
            .put_admission(&PendingAdmission {
                device: made.device,
                join_code: made.join_code,
                created_at: now,
                expires_at: now + 600,
            })
            .await?;
        let mut agent = Agent::open(&dir)?;
        agent.join(&url, now).await?;
        let spec = TreeSpec::new(made.device, Epoch(1), Schedule::default(), year)?;
        let dpk = Keys {
            spec,
            suite: Suite::AES256GCM,
            nodes: vec![spec.root(&c, &master)?],
        };
        let kept = agent.provision(&dpk, month_start)?;
        say(
            "device",
            format!(
                "{} made, admitted, joined over HTTP ({HANDSHAKE_BYTES}-byte handshake), keeps a frontier of {kept} secrets",
                made.device
            ),
        );
        fleet.push(Fleet {
            device: made.device,
            agent,
            spec,
        });
    }
    let again = Agent::open(&work.path().join("device-0"))?;
    ensure!(again.joined(), "device 0 forgot its session");

    // The devices stream the month through their on-disk queues.
    let step = u64::from(args.every) * 60;
    let per_device = (month_end.secs() - month_start.secs()).div_ceil(step);
    let total = per_device * u64::from(args.devices);
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template("device   sealing {pos}/{len} readings [{bar:30}] {elapsed}")?
            .progress_chars("=> "),
    );
    let mut t = month_start;
    let mut sent = 0u64;
    while t < month_end {
        for f in &mut fleet {
            f.agent.seal(reading(t).as_bytes(), t)?;
            bar.inc(1);
        }
        sent += 1;
        if sent % 48 == 0 {
            for f in &mut fleet {
                f.agent.publish().await?;
            }
        }
        t = UnixTime::new(t.secs() + step)?;
    }
    for f in &mut fleet {
        let p = f.agent.publish().await?;
        ensure!(
            p.pending == 0,
            "device {} still has {} queued",
            f.device,
            p.pending
        );
    }
    bar.finish_and_clear();
    let http = reqwest::Client::new();
    let presence: serde_json::Value = serde_json::from_slice(
        &http
            .get(format!("{url}/v1/presence"))
            .send()
            .await?
            .bytes()
            .await?,
    )?;
    let online = presence["devices"]
        .as_array()
        .map_or(0, |d| d.iter().filter(|d| d["online"] == true).count());
    ensure!(
        online == fleet.len(),
        "{online} of {} devices online",
        fleet.len()
    );
    say(
        "device",
        format!(
            "{} devices sealed {total} readings, one every {} min, {month_start} .. {month_end}",
            fleet.len(),
            args.every
        ),
    );
    say(
        "hub",
        format!(
            "stored every record once ({OVERHEAD} + {UPLINK_OVERHEAD} bytes of overhead each); {online} devices online"
        ),
    );

    // An application asks for week 2 of the first device; the keeper answers with the minimal cover.
    let first = &fleet[0];
    let week2 = Span::new(
        UnixTime::from_date(y, m, 8)?,
        UnixTime::from_date(y, m, 15)?,
    )?;
    let keeper_dpk = first.spec.root(&c, &master)?;
    let grant: Vec<NodeSecret> = first
        .spec
        .cover(week2)?
        .map(|n| first.spec.derive(&c, &keeper_dpk, n))
        .collect::<Result<_, _>>()?;
    say(
        "app",
        format!("asks for week 2 of device {}: {week2}", first.device),
    );
    say(
        "keeper",
        format!("grants the cover: {} node secret(s)", grant.len()),
    );

    // The application fetches the device's whole month from the hub, page by page, and opens what it can.
    let from_leaf = first.spec.leaf_at(month_start)?;
    let until_leaf = first.spec.leaf_at(UnixTime::new(month_end.secs() - 1)?)? + 1;
    let mut records: Vec<Vec<u8>> = Vec::new();
    let mut after: Option<i64> = None;
    loop {
        let mut q = format!(
            "{url}/v1/devices/{}/records?epoch=1&from_leaf={from_leaf}&until_leaf={until_leaf}&limit=500",
            first.device
        );
        if let Some(a) = after {
            q.push_str(&format!("&after={a}"));
        }
        let page: serde_json::Value =
            serde_json::from_slice(&http.get(q).send().await?.bytes().await?)?;
        for r in page["records"].as_array().context("records")? {
            records.push(hex::decode(r["record"].as_str().context("record")?)?);
        }
        match page["next_after"].as_i64() {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    ensure!(
        records.len() as u64 == per_device,
        "fetched {} records, expected {per_device}",
        records.len()
    );
    let mut opener = Opener::new(&c, &first.spec, &grant);
    let mut out = vec![0u8; 256];
    let (mut opened, mut refused) = (0usize, 0usize);
    for record in &records {
        let leaf = RecordHeader::peek(record)?.leaf;
        let period = first.spec.node_span(first.spec.leaf_node(leaf))?;
        match opener.open(record, &mut out) {
            Ok((_, n)) => {
                ensure!(
                    week2.includes(period),
                    "opened a record of {period}, outside the grant"
                );
                let text = std::str::from_utf8(&out[..n])?;
                ensure!(
                    text.contains("temp_c"),
                    "plaintext is not a reading: {text}"
                );
                opened += 1;
            }
            Err(Error::NotGranted { .. }) => {
                ensure!(
                    !week2.includes(period),
                    "a record of {period} inside the grant did not open"
                );
                refused += 1;
            }
            Err(e) => bail!("unexpected failure on a record of {period}: {e}"),
        }
    }
    let expected = (week2.end().secs() - week2.start().secs()) / step;
    ensure!(
        opened as u64 == expected,
        "opened {opened} records, expected {expected}"
    );
    say(
        "app",
        format!(
            "fetched {} records from the hub's API, opened {opened} (all of week 2), refused {refused}",
            records.len()
        ),
    );

    // The hub plays the attacker: it alters a byte, relabels a record's day, and forges a device message.
    let idx = records
        .iter()
        .position(|r| opener.open(r, &mut out).is_ok())
        .context("a week-2 record")?;
    let mut altered = records[idx].clone();
    let at = altered.len() - 20;
    altered[at] ^= 1;
    let tamper = opener.open(&altered, &mut out);
    ensure!(
        matches!(tamper, Err(Error::Authentication)),
        "altered record was not rejected: {tamper:?}"
    );
    let outside = records
        .iter()
        .position(|r| opener.open(r, &mut out).is_err())
        .context("a record outside week 2")?;
    let mut moved = records[outside].clone();
    moved[11..15].copy_from_slice(&RecordHeader::peek(&records[idx])?.leaf.to_be_bytes());
    let swap = opener.open(&moved, &mut out);
    ensure!(
        matches!(swap, Err(Error::Authentication)),
        "relabelled record was not rejected: {swap:?}"
    );
    say(
        "hub",
        "alters a byte of a week-2 record: rejected, no plaintext released".into(),
    );
    say(
        "hub",
        "relabels a week-1 record as a week-2 day: rejected (the header is authenticated)".into(),
    );
    let stranger = LinkKeys::derive(&c, &random_secret())?;
    let mut forged = vec![0u8; records[0].len() + UPLINK_OVERHEAD];
    seal_uplink(
        &c,
        &stranger,
        first.device,
        1 << 40,
        &records[0],
        &mut forged,
    )?;
    let mut body = (forged.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(&forged);
    let resp = http
        .post(format!("{url}/v1/devices/{}/uplinks", first.device))
        .body(body)
        .send()
        .await?;
    ensure!(
        resp.status() == reqwest::StatusCode::UNAUTHORIZED,
        "a forged device message got {}",
        resp.status()
    );
    say(
        "net",
        "forges a message for a device without its session key: refused (401), nothing stored"
            .into(),
    );

    // Shut the hub down and scan its data directory for any key that opens a record, and for plaintext.
    running.stop().await?;
    store.close().await;
    let (secrets, found) = scan(&hub_dir, &fleet, &master, month_start, month_end)?;
    ensure!(
        found == 0,
        "the hub's data directory holds {found} record key(s) or plaintext reading(s)"
    );
    say(
        "hub",
        format!(
            "its data directory, scanned for {secrets} secrets (master, DPKs, stage and leaf keys) and for plaintext: none found"
        ),
    );

    // Forward security: each device's key file now opens nothing of the month it recorded.
    let mut leaks = 0;
    for i in 0..fleet.len() {
        let held = keyfile::read_keys(&work.path().join(format!("device-{i}")).join("keys.json"))?;
        let mut t = month_start;
        while t < UnixTime::new(month_end.secs() - 86_400)? {
            if held
                .spec
                .holder(&held.nodes, held.spec.leaf_node(held.spec.leaf_at(t)?))?
                .is_some()
            {
                leaks += 1;
            }
            t = UnixTime::new(t.secs() + 86_400)?;
        }
    }
    ensure!(
        leaks == 0,
        "device key files still open {leaks} past day(s)"
    );
    say(
        "device",
        "each keeps only its frontier on disk: none of its key files opens a past day of the month"
            .into(),
    );

    if args.json {
        println!(
            "{}",
            json!({"hub": url, "devices": fleet.len(), "records": total, "per_device": per_device,
                "handshake_bytes": HANDSHAKE_BYTES, "grant": {"from": week2.start().to_string(), "until": week2.end().to_string(), "nodes": grant.len()},
                "fetched": records.len(), "opened": opened, "refused": refused, "hub_keys_found": found, "tamper_rejected": true})
        );
    } else {
        println!("\nwho       holds");
        println!("keeper    the master secret (derives every DPK)");
        println!("devices   each its frontier and its session key; nothing that opens a past day");
        println!("hub       {total} ciphertexts, headers, session keys; 0 keys that open a record");
        println!(
            "app       {} node secret(s): week 2 of one device; opened {opened} of {} records",
            grant.len(),
            records.len()
        );
        println!("\nall checks passed");
    }
    Ok(())
}

/// A private temporary directory for the demo's hub and devices, removed when the demo ends.
struct WorkDir(std::path::PathBuf);

impl WorkDir {
    fn new() -> Result<Self> {
        let mut tag = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut OsRng, &mut tag);
        let path = std::env::temp_dir().join(format!("custos-demo-{}", hex::encode(tag)));
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Counts, in every file of the hub's data directory, occurrences of any secret that opens a record of the
/// fleet in the month, and of any plaintext reading. Returns (secrets looked for, occurrences found).
fn scan(
    dir: &Path,
    fleet: &[Fleet],
    master: &MasterSecret,
    from: UnixTime,
    until: UnixTime,
) -> Result<(usize, usize)> {
    let c = RustCrypto;
    let mut secrets: HashSet<[u8; 32]> = HashSet::new();
    secrets.insert(*master.expose().expose());
    for f in fleet {
        let dpk = f.spec.root(&c, master)?;
        secrets.insert(*dpk.secret().expose());
        for depth in 1..=f.spec.leaf_depth() {
            let mut t = from;
            while t < until {
                let node = f.spec.node_at(depth, t)?;
                secrets.insert(*f.spec.derive(&c, &dpk, node)?.secret().expose());
                let leaf = f.spec.leaf_at(t)?;
                secrets.insert(
                    *f.spec
                        .leaf_key_bytes(&c, &dpk, leaf, Suite::AES256GCM)?
                        .expose(),
                );
                t = f.spec.node_span(node)?.end();
            }
        }
    }
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            bytes.extend(std::fs::read(&path)?);
        }
    }
    if bytes.len() < 1024 {
        bail!("the hub's data directory is suspiciously empty");
    }
    let keys = bytes
        .windows(32)
        .filter(|w| <[u8; 32]>::try_from(*w).is_ok_and(|a| secrets.contains(&a)))
        .count();
    let plain = bytes.windows(9).filter(|w| *w == b"\"temp_c\":").count();
    Ok((secrets.len(), keys + plain))
}
