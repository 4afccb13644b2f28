//! `custos demo`: the whole story in one process, with every claim checked as it is printed.
//!
//! The keeper makes a DPK; the device keeps only its forward-secure frontier and seals a month of readings; the
//! hub stores ciphertext and holds no key; an application is granted one week and opens exactly that week. The
//! hub then plays the attacker. Any check that fails ends the demo with an error (exit code 1).

use std::collections::{HashMap, HashSet};

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use custos_proto::record::OVERHEAD;
use custos_proto::{
    DeviceId, Epoch, Error, LeafKey, MasterSecret, NodeSecret, Opener, RecordHeader, RustCrypto,
    Schedule, Span, Suite, TreeSpec, UnixTime,
};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::{random_secret, timearg};

/// Options of `custos demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// The month the device records, as YYYY-MM.
    #[arg(long, default_value = "2026-03")]
    month: String,
    /// Minutes between two readings.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1440))]
    every: u32,
    /// Print a JSON summary instead of the story.
    #[arg(long)]
    json: bool,
}

const DEVICE: DeviceId = DeviceId([0x02, 0x00, 0x5e, 0x10, 0x00, 0x00, 0x00, 0x01]);

pub(crate) fn reading(t: UnixTime) -> String {
    // A plausible room temperature: a daily swing around 21 °C.
    let day_phase = (t.secs() % 86_400) as f64 / 86_400.0 * std::f64::consts::TAU;
    let temp = 21.0 + 2.5 * (day_phase - 2.0).sin() + ((t.secs() / 300) % 7) as f64 * 0.05;
    format!(r#"{{"t":"{t}","temp_c":{temp:.2}}}"#)
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<()> {
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
    if !args.json {
        println!("Custos demo: keeper, device, hub and application in one process, no network.\n");
    }

    // The keeper: a master secret and the device's DPK for this year.
    let master = MasterSecret::new(random_secret());
    let spec = TreeSpec::new(DEVICE, Epoch(1), Schedule::default(), year)?;
    let dpk = spec.root(&c, &master)?;
    say(
        "keeper",
        format!(
            "master secret created; DPK for device {DEVICE} epoch 1, schedule {}, valid {year}",
            spec.schedule()
        ),
    );

    // The device keeps only its frontier: it can seal from now on and open nothing earlier.
    let mut frontier: Vec<NodeSecret> = spec
        .frontier(&c, &[dpk], month_start)?
        .collect::<Result<_, _>>()?;
    let provisioned = frontier.len();
    say(
        "device",
        format!(
            "provisioned; keeps only its frontier at {month_start}: {} secrets, none older, and moves it forward each day",
            provisioned
        ),
    );

    // The device seals a month of readings; the hub stores what it receives.
    let step = u64::from(args.every) * 60;
    let total = (month_end.secs() - month_start.secs()).div_ceil(step);
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    bar.set_style(
        ProgressStyle::with_template("device   sealing {pos}/{len} readings [{bar:30}] {elapsed}")
            .context("progress template")?
            .progress_chars("=> "),
    );
    let mut hub: Vec<Vec<u8>> = Vec::with_capacity(total as usize);
    let mut sent: Vec<(UnixTime, String)> = Vec::with_capacity(total as usize);
    let mut key: Option<LeafKey<RustCrypto>> = None;
    let mut counter = 0u64;
    let mut t = month_start;
    while t < month_end {
        let leaf = spec.leaf_at(t)?;
        if key.as_ref().is_none_or(|k| k.leaf() != leaf) {
            // A new day: move the frontier forward from itself and forget the past day's secrets.
            let next: Vec<NodeSecret> =
                spec.frontier(&c, &frontier, t)?.collect::<Result<_, _>>()?;
            frontier = next;
            let held = spec
                .holder(&frontier, spec.leaf_node(leaf))?
                .context("the frontier must cover every leaf from now on")?;
            key = Some(spec.leaf_key(&c, held, leaf, Suite::AES256GCM)?);
            counter = 0;
        }
        let text = reading(t);
        let mut record = vec![0u8; text.len() + OVERHEAD];
        // A per-leaf counter: nonces never repeat under one leaf key.
        counter += 1;
        key.as_ref().context("leaf key")?.seal(
            &c,
            counter.to_be_bytes(),
            text.as_bytes(),
            &mut record,
        )?;
        hub.push(record);
        sent.push((t, text));
        bar.inc(1);
        t = UnixTime::new(t.secs() + step)?;
    }
    bar.finish_and_clear();
    let stored: usize = hub.iter().map(Vec::len).sum();
    say(
        "device",
        format!(
            "sealed {} readings, one every {} min, {} .. {}",
            hub.len(),
            args.every,
            month_start,
            month_end
        ),
    );
    say(
        "hub",
        format!(
            "stored {} records, {} KiB, {OVERHEAD} bytes of overhead each, indexed by device/epoch/leaf",
            hub.len(),
            stored / 1024
        ),
    );

    // The application asks for week 2 (days 8-14); the keeper answers with the minimal cover.
    let week2 = Span::new(
        UnixTime::from_date(y, m, 8)?,
        UnixTime::from_date(y, m, 15)?,
    )?;
    say("app", format!("asks for week 2: {week2}"));
    let keeper_dpk = spec.root(&c, &master)?;
    let grant: Vec<NodeSecret> = spec
        .cover(week2)?
        .map(|n| spec.derive(&c, &keeper_dpk, n))
        .collect::<Result<_, _>>()?;
    let nodes: Vec<String> = grant
        .iter()
        .map(|g| {
            format!(
                "depth {} index {} {}",
                g.node().depth,
                g.node().index,
                spec.node_span(g.node())
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            )
        })
        .collect();
    say(
        "keeper",
        format!(
            "grants the cover: {} node secret(s): {}",
            grant.len(),
            nodes.join(", ")
        ),
    );

    let mut opener = Opener::new(&c, &spec, &grant);
    let mut out = vec![0u8; 256];
    let (mut opened, mut refused) = (0usize, 0usize);
    for (record, (t, text)) in hub.iter().zip(&sent) {
        match opener.open(record, &mut out) {
            Ok((_, n)) => {
                ensure!(
                    week2.contains(*t),
                    "opened a record from {t}, outside the grant"
                );
                ensure!(
                    &out[..n] == text.as_bytes(),
                    "plaintext of {t} differs from what the device sealed"
                );
                opened += 1;
            }
            Err(Error::NotGranted { .. }) => {
                ensure!(
                    !week2.contains(*t),
                    "a record of {t} inside the grant did not open"
                );
                refused += 1;
            }
            Err(e) => bail!("unexpected failure on the record of {t}: {e}"),
        }
    }
    let expected = sent.iter().filter(|(t, _)| week2.contains(*t)).count();
    ensure!(
        opened == expected,
        "opened {opened} records, expected {expected}"
    );
    say(
        "app",
        format!(
            "opened {opened} records, all from week 2; refused {refused} (no key for their day)"
        ),
    );

    // The hub plays the attacker: it alters a byte, and moves a record to a day the app may read.
    let idx = sent
        .iter()
        .position(|(t, _)| week2.contains(*t))
        .context("week 2 has readings")?;
    let mut altered = hub[idx].clone();
    let last = altered.len() - 20;
    altered[last] ^= 1;
    let tamper = opener.open(&altered, &mut out);
    ensure!(
        matches!(tamper, Err(Error::Authentication)),
        "altered record was not rejected: {tamper:?}"
    );
    let outside = sent
        .iter()
        .position(|(t, _)| !week2.contains(*t))
        .context("readings outside week 2")?;
    let mut moved = hub[outside].clone();
    let granted_leaf = RecordHeader::peek(&hub[idx])?.leaf;
    moved[11..15].copy_from_slice(&granted_leaf.to_be_bytes());
    let swap = opener.open(&moved, &mut out);
    ensure!(
        matches!(swap, Err(Error::Authentication)),
        "record moved to a granted day was not rejected: {swap:?}"
    );
    say(
        "hub",
        "alters a byte of a week-2 record: rejected, no plaintext released".into(),
    );
    say(
        "hub",
        "relabels a week-1 record as a week-2 day: rejected (the header is authenticated)".into(),
    );

    // The hub's whole store, scanned for every secret of this month's tree: none may appear.
    let mut secrets: HashSet<[u8; 32]> = HashSet::new();
    secrets.insert(*master.expose().expose());
    secrets.insert(*keeper_dpk.secret().expose());
    for depth in 1..=spec.leaf_depth() {
        let mut t = month_start;
        while t < month_end {
            let node = spec.node_at(depth, t)?;
            secrets.insert(*spec.derive(&c, &keeper_dpk, node)?.secret().expose());
            let leaf = spec.leaf_at(t)?;
            secrets.insert(
                *spec
                    .leaf_key_bytes(&c, &keeper_dpk, leaf, Suite::AES256GCM)?
                    .expose(),
            );
            t = spec.node_span(node)?.end();
        }
    }
    let found = hub
        .iter()
        .flat_map(|r| r.windows(32))
        .filter(|w| <[u8; 32]>::try_from(*w).is_ok_and(|a| secrets.contains(&a)))
        .count();
    ensure!(found == 0, "the hub's store contains key material");
    say(
        "hub",
        format!(
            "scanned its {} KiB for {} secrets of the tree (master, DPK, stages, leaf keys): none found",
            stored / 1024,
            secrets.len()
        ),
    );

    // Forward security: a month later the device's own frontier opens nothing of this month.
    let later = spec
        .frontier(&c, &frontier, month_end)?
        .collect::<Result<Vec<_>, _>>()?;
    drop(frontier);
    let mut device_later = Opener::new(&c, &spec, &later);
    let mut leaks = 0;
    let mut per_leaf: HashMap<u32, usize> = HashMap::new();
    for record in &hub {
        let h = RecordHeader::peek(record)?;
        if *per_leaf.entry(h.leaf).or_default() == 0 && device_later.open(record, &mut out).is_ok()
        {
            leaks += 1;
        }
        *per_leaf.entry(h.leaf).or_default() += 1;
    }
    ensure!(leaks == 0, "the later frontier opened {leaks} past day(s)");
    say(
        "device",
        format!(
            "at {month_end} keeps {} secrets; with them it opens none of the {} past days",
            later.len(),
            per_leaf.len()
        ),
    );

    if args.json {
        println!(
            "{}",
            json!({
                "device": DEVICE.to_string(), "schedule": spec.schedule().to_string(), "records": hub.len(),
                "stored_bytes": stored, "overhead_bytes": OVERHEAD, "grant": {"from": week2.start().to_string(),
                "until": week2.end().to_string(), "nodes": grant.len()}, "opened": opened, "refused": refused,
                "frontier_secrets": provisioned, "frontier_secrets_after": later.len(), "hub_keys_found": found, "tamper_rejected": true,
            })
        );
    } else {
        println!("\nwho       holds");
        println!("keeper    the master secret (derives every DPK)");
        println!(
            "device    its frontier: {} secrets, nothing that opens an earlier day",
            later.len()
        );
        println!(
            "hub       {} ciphertexts and their headers; 0 keys",
            hub.len()
        );
        println!(
            "app       {} node secret(s): week 2 only; opened {opened} of {} records",
            grant.len(),
            hub.len()
        );
        println!("\nall checks passed");
    }
    Ok(())
}
