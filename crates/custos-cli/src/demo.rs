//! `custos demo`: the whole story in one process, on the embedded default, with every claim checked as it is
//! printed.
//!
//! A real hub serves HTTP on loopback with SQLite in a temporary data directory. Devices are made at the
//! "factory", admitted by the operator with their join codes, and join over HTTP. The user's keeper (a vault
//! under a passphrase) pairs with each through the hub's relay using the owner code from the label, and
//! provisions its DPK; the device keeps only the forward-secure frontier. The devices stream two months of
//! readings (time compressed) through their on-disk queues. While the keeper is offline, an application asks for
//! two months, a week and a day; back online, the keeper's policy grants the week and denies the day, and the
//! user (played by the demo) approves the two months. The application opens exactly what was granted. The hub
//! then plays the attacker, and its data directory is scanned for keys and plaintext. Any check that fails ends
//! the demo with an error (exit code 1).

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use custos_app::{Answer, App, Ask, decrypt_all};
use custos_device::Factory;
use custos_device::agent::Agent;
use custos_device::keyfile;
use custos_hub::serve::ServeConfig;
use custos_keeper::{Handled, Keeper};
use custos_proto::admission::HANDSHAKE_BYTES;
use custos_proto::record::OVERHEAD;
use custos_proto::sharing::GrantedTree;
use custos_proto::uplink::{LinkKeys, UPLINK_OVERHEAD, seal_uplink};
use custos_proto::{
    DeviceId, Epoch, Error, Opener, RecordHeader, RustCrypto, Schedule, Span, Suite, TreeSpec,
    UnixTime,
};
use custos_store::{AnyStore, PendingAdmission, Store};
use custos_vault::{KdfParams, Unlock};
use indicatif::{ProgressBar, ProgressStyle};
use rand_core::OsRng;
use serde_json::json;

use crate::{random_secret, timearg};

/// Options of `custos demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// The first month the devices record, as YYYY-MM; they record two months from there.
    #[arg(long, default_value = "2026-03")]
    month: String,
    /// Minutes between two readings of a device.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..=1440))]
    every: u32,
    /// How many devices.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=20))]
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

/// The user's policy in the demo: the heating optimizer may read up to 31 days for energy purposes without
/// asking; marketing is always refused; anything else is asked.
const POLICY: &str = r#"default = "ask"

[[rule]]
app = "heating-optimizer"
purpose = "energy.*"
action = "allow"
max_days = 31

[[rule]]
purpose = "marketing.*"
action = "deny"
"#;

/// The demo's passphrase for the keeper's vault (Argon2id, 19 MiB).
const PASSPHRASE: &str = "correct horse battery staple";

fn month_after(t: UnixTime) -> Result<UnixTime> {
    let (y, m, ..) = t.civil();
    Ok(if m == 12 {
        UnixTime::from_date(y + 1, 1, 1)?
    } else {
        UnixTime::from_date(y, m + 1, 1)?
    })
}

fn wall_clock() -> Result<UnixTime> {
    Ok(UnixTime::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?)
}

async fn story(args: &DemoArgs) -> Result<()> {
    let c = RustCrypto;
    let started = std::time::Instant::now();
    let say = |who: &str, what: String| {
        if !args.json {
            println!("{who:<8} {what}");
        }
    };
    let start = timearg::parse(&format!("{}-01", args.month)).context("--month must be YYYY-MM")?;
    let (y, m, ..) = start.civil();
    let middle = month_after(start)?;
    let end = month_after(middle)?;
    // One DPK epoch per calendar year (two if the two months cross into the next).
    let next_year = UnixTime::from_date(y + 1, 1, 1)?;
    let epoch_end = if end > next_year {
        UnixTime::from_date(y + 2, 1, 1)?
    } else {
        next_year
    };
    let epoch_span = Span::new(UnixTime::from_date(y, 1, 1)?, epoch_end)?;
    let work = WorkDir::new()?;
    if !args.json {
        println!(
            "Custos demo: a real hub on loopback, devices, the user's keeper and an application, in one process.\n"
        );
    }

    // The hub, on the embedded default: SQLite in its data directory.
    let hub_dir = work.path().join("hub");
    let running = custos_hub::serve::spawn(ServeConfig {
        registry: None,
        data_dir: hub_dir.clone(),
        listen: "127.0.0.1:0".parse()?,
        database: None,
        mqtt: None,
        accounts: Default::default(),
        limits: Default::default(),
        tls: custos_hub::serve::HubTls::SelfSigned,
    })
    .await?;
    let url = running.url();
    // Everyone here pins the hub's self-signed certificate, as `--hub-fingerprint` does.
    let trust = running.trust();
    say(
        "hub",
        format!(
            "serving {url} (self-signed certificate {}), SQLite in its data directory",
            running
                .fingerprint
                .map_or_else(|| "none".into(), |f| f.to_string())
        ),
    );
    let store = AnyStore::open(&hub_dir.join("hub.db").to_string_lossy()).await?;

    // The user's keeper: a vault under a passphrase, and a policy.
    let keeper_dir = work.path().join("keeper");
    let pass = Unlock::Passphrase(PASSPHRASE);
    let mut keeper = Keeper::init(&keeper_dir, pass, KdfParams::default())?;
    keeper.set_hub_trust(trust.clone())?;
    std::fs::write(keeper_dir.join("policy.toml"), POLICY)?;
    let owner = keeper.owner();
    say(
        "keeper",
        format!(
            "vault created (Argon2id, 19 MiB); owner id {}…; policy: heating-optimizer may read ≤ 31 days for energy.*, marketing.* denied, the rest asked",
            &hex::encode(owner)[..16]
        ),
    );

    // The factory makes devices; the operator admits each with its join code; the keeper pairs with each through
    // the hub's relay using the owner code, and provisions its DPK for the year.
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
        agent.set_hub_trust(trust.clone())?;
        agent.join(&url, now).await?;
        let spec = TreeSpec::new(made.device, Epoch(1), Schedule::default(), epoch_span)?;
        let device_side = tokio::spawn(async move {
            let r = agent.await_pairing(start, Duration::from_secs(30)).await;
            (agent, r)
        });
        let paired = keeper
            .pair(
                &url,
                spec,
                Suite::AES256GCM,
                &made.owner_code,
                start,
                Duration::from_secs(30),
            )
            .await?;
        let (agent, held) = device_side.await?;
        let (_, held) = held?;
        ensure!(
            held == paired.secrets,
            "the device holds {held} secrets, the keeper sent {}",
            paired.secrets
        );
        say(
            "device",
            format!(
                "{} made, admitted, joined ({HANDSHAKE_BYTES}-byte handshake), paired with the keeper by its owner code; keeps a frontier of {held} secrets",
                made.device
            ),
        );
        fleet.push(Fleet {
            device: made.device,
            agent,
            spec,
        });
    }
    drop(keeper); // the keeper goes offline

    // The devices stream two months through their on-disk queues.
    let step = u64::from(args.every) * 60;
    let per_device = (end.secs() - start.secs()).div_ceil(step);
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
    let mut t = start;
    let mut sent = 0u64;
    while t < end {
        for f in &mut fleet {
            f.agent.seal(reading(t).as_bytes(), t)?;
            bar.inc(1);
        }
        sent += 1;
        if sent.is_multiple_of(96) {
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
    say(
        "device",
        format!(
            "{} devices sealed {total} readings, one every {} min, {start} .. {end}",
            fleet.len(),
            args.every
        ),
    );
    say(
        "hub",
        format!("stored every record once ({OVERHEAD} + {UPLINK_OVERHEAD} bytes of overhead each)"),
    );

    // While the keeper is offline, an application asks three times.
    let mut app = App::create(&work.path().join("app"), "heating-optimizer")?;
    app.set_hub_trust(trust.clone())?;
    let expires = UnixTime::new(wall_clock()?.secs() + 7 * 86_400)?;
    let ask = |device: DeviceId, range: Span, purpose: &str, text: &str| Ask {
        owner,
        devices: vec![device],
        range,
        purpose: purpose.into(),
        purpose_text: text.into(),
        retention: 30 * 86_400,
        expires,
    };
    let (first, second) = (fleet[0].device, fleet[1].device);
    let two_months = Span::new(start, end)?;
    let week2 = Span::new(
        UnixTime::from_date(y, m, 8)?,
        UnixTime::from_date(y, m, 15)?,
    )?;
    let (my, mm, ..) = middle.civil();
    let one_day = Span::new(
        UnixTime::from_date(my, mm, 2)?,
        UnixTime::from_date(my, mm, 3)?,
    )?;
    let req_months = app
        .request(
            &url,
            &ask(
                first,
                two_months,
                "energy.optimization",
                "Learn the building's heating curve over two months",
            ),
        )
        .await?;
    let req_week = app
        .request(
            &url,
            &ask(
                first,
                week2,
                "energy.optimization",
                "Tune the heating schedule to last week's occupancy",
            ),
        )
        .await?;
    let req_day = app
        .request(
            &url,
            &ask(
                second,
                one_day,
                "marketing.profile",
                "Build an occupancy profile for advertisers",
            ),
        )
        .await?;
    say(
        "app",
        format!(
            "asks for two months of {first} ({two_months}), week 2 of {first} ({week2}) and one day of {second} for marketing"
        ),
    );
    say(
        "hub",
        "stores the three signed requests for the owner; the keeper is offline".into(),
    );

    // The keeper comes back: policy first, then the user. The user installed the heating optimizer and pinned
    // its name to its key, so the rule naming it applies to that key (and to no other).
    let mut keeper = Keeper::open(&keeper_dir, pass)?;
    keeper.trust_app("heating-optimizer", app.public_key())?;
    let report = keeper.sync(&url).await?;
    let mut asked = 0;
    for h in &report.handled {
        match h {
            Handled::Granted { id, nodes, by } => {
                ensure!(
                    *id == req_week.id,
                    "the policy granted something other than the week"
                );
                say(
                    "keeper",
                    format!("{by} grants the week: {nodes} node secret, HPKE-sealed to the app"),
                );
            }
            Handled::Denied { id, reason } => {
                ensure!(
                    *id == req_day.id,
                    "the policy denied something other than the marketing day"
                );
                say("keeper", format!("denies the marketing day: {reason}"));
            }
            Handled::Asked { id, reason } => {
                ensure!(
                    *id == req_months.id,
                    "the policy asked about something other than two months"
                );
                asked += 1;
                say(
                    "keeper",
                    format!("asks the user about two months: {reason}"),
                );
            }
            Handled::Refused { reason, .. } => {
                bail!("the keeper refused a genuine request: {reason}")
            }
        }
    }
    ensure!(
        report.handled.len() == 3 && asked == 1,
        "the keeper handled {:?}",
        report.handled
    );
    let pending = keeper.pending(wall_clock()?)?;
    ensure!(pending.len() == 1, "{} requests pending", pending.len());
    let p = &pending[0];
    say(
        "user",
        format!(
            "sees in the inbox: {} (key {}…) wants {} for \"{}\"; approves",
            p.known_as.as_deref().unwrap_or("?"),
            &hex::encode(p.request.request.app_key)[..8],
            p.request.request.range,
            p.request.request.purpose_text
        ),
    );
    let approved = keeper.approve(&p.id, None, wall_clock()?)?;
    ensure!(
        matches!(approved, Handled::Granted { nodes: 2, .. }),
        "two months granted as {approved:?}"
    );
    ensure!(
        keeper.sync(&url).await?.delivered == 1,
        "the approval was not delivered"
    );
    say(
        "keeper",
        "grants two months: 2 node secrets; every decision is in the signed consent log".into(),
    );

    // The application opens exactly what it was granted.
    let week = granted(app.wait(&req_week.id, Duration::from_secs(10)).await?)?;
    let months = granted(app.wait(&req_months.id, Duration::from_secs(10)).await?)?;
    let denied = match app.wait(&req_day.id, Duration::from_secs(10)).await? {
        Answer::Denied(reason) => reason,
        Answer::Granted(_) => bail!("the marketing day was granted"),
    };
    let first_month = app.fetch_records(&url, &months[0], two_months).await?;
    ensure!(
        first_month.len() as u64 == per_device,
        "fetched {} of {per_device} records",
        first_month.len()
    );
    let opened_week = decrypt_all(&week, &first_month);
    let week_count = (week2.end().secs() - week2.start().secs()) / step;
    ensure!(
        opened_week.opened() as u64 == week_count,
        "the week grant opened {} records",
        opened_week.opened()
    );
    for r in opened_week.iter().flatten() {
        let (h, text) = r;
        let period = fleet[0].spec.node_span(fleet[0].spec.leaf_node(h.leaf))?;
        ensure!(
            week2.includes(period),
            "the week grant opened a record of {period}"
        );
        ensure!(
            std::str::from_utf8(text)?.contains("temp_c"),
            "not a reading"
        );
    }
    let opened_months = decrypt_all(&months, &first_month);
    ensure!(
        opened_months.opened() as u64 == per_device,
        "the two-month grant opened {}",
        opened_months.opened()
    );
    // The hub serves the application nothing of a device its grants do not name (404, as for no device)…
    let refused = app
        .fetch_records(
            &url,
            &GrantedTree {
                spec: fleet[1].spec,
                nodes: vec![],
            },
            two_months,
        )
        .await;
    ensure!(
        matches!(
            refused,
            Err(custos_app::AppError::Refused { status: 404, .. })
        ),
        "the hub served {second}'s records to an application without a grant for it: {refused:?}"
    );
    // …and even the records the hub holds of it open under none of the grants.
    let other: Vec<Vec<u8>> = store
        .records(&custos_store::RecordQuery {
            device: fleet[1].spec.device(),
            epoch: fleet[1].spec.epoch().0,
            leaf_from: 0,
            leaf_until: u32::MAX,
            after: None,
            limit: u32::MAX,
        })
        .await?
        .into_iter()
        .map(|r| r.record.body)
        .collect();
    let cross = decrypt_all(&months, &other).opened() + decrypt_all(&week, &other).opened();
    ensure!(
        cross == 0,
        "a grant for {first} opened {cross} records of {second}"
    );
    say(
        "app",
        format!("week grant: opened {week_count} of {per_device} records, exactly week 2"),
    );
    say(
        "app",
        format!(
            "two-month grant: opened all {per_device}; {second}: the hub serves none (404), and of its {} records none open",
            other.len()
        ),
    );
    say("app", format!("the day: denied (\"{denied}\")"));

    // The hub plays the attacker.
    let tree_week = &week[0];
    let mut opener = Opener::new(&c, &tree_week.spec, &tree_week.nodes);
    let mut out = vec![0u8; 256];
    let idx = first_month
        .iter()
        .position(|r| opener.open(r, &mut out).is_ok())
        .context("a week-2 record")?;
    let mut altered = first_month[idx].clone();
    let at = altered.len() - 20;
    altered[at] ^= 1;
    ensure!(
        matches!(opener.open(&altered, &mut out), Err(Error::Authentication)),
        "an altered record opened"
    );
    let outside = first_month
        .iter()
        .position(|r| opener.open(r, &mut out).is_err())
        .context("a record outside week 2")?;
    let mut moved = first_month[outside].clone();
    moved[11..15].copy_from_slice(&RecordHeader::peek(&first_month[idx])?.leaf.to_be_bytes());
    ensure!(
        matches!(opener.open(&moved, &mut out), Err(Error::Authentication)),
        "a relabelled record opened"
    );
    say("hub", "alters a byte of a week-2 record, relabels a week-1 record as week 2: both rejected, no plaintext".into());
    let mut rival = App::create(&work.path().join("rival"), "ad-network")?;
    rival.set_hub_trust(trust.clone())?;
    let rival_req = rival
        .request(
            &url,
            &ask(first, week2, "energy.optimization", "Same week, please"),
        )
        .await?;
    let week_answer = std::fs::read(
        work.path()
            .join("app/answers")
            .join(format!("{}.cose", req_week.id)),
    )?;
    ensure!(
        rival.open_answer(&rival_req.id, &week_answer).is_err(),
        "a replayed grant opened for another app"
    );
    say("hub", "hands the week's grant to another application: refused (bound to the request, sealed to its key)".into());
    let stranger = LinkKeys::derive(&c, &random_secret())?;
    let mut forged = vec![0u8; first_month[0].len() + UPLINK_OVERHEAD];
    seal_uplink(&c, &stranger, first, 1 << 40, &first_month[0], &mut forged)?;
    let mut body = (forged.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(&forged);
    let resp = custos_client::tls::http_client(reqwest::Client::builder(), &trust)?
        .post(format!("{url}/v1/devices/{first}/uplinks"))
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

    // Owner control: the second act.
    let control = crate::demo_control::act(
        crate::demo_control::Stage {
            url: &url,
            trust: &trust,
            store: &store,
            work: work.path(),
            keeper: &keeper,
            agent: &fleet[0].agent,
            device: first,
        },
        &say,
    )
    .await?;

    // Device-to-device keys: the third act.
    let (one, rest) = fleet.split_at_mut(1);
    let ties = crate::demo_ties::act(
        crate::demo_ties::Stage {
            url: &url,
            trust: &trust,
            store: &store,
            hub_dir: &hub_dir,
            work: work.path(),
            first: &mut one[0].agent,
            second: &mut rest[0].agent,
        },
        &say,
    )
    .await?;

    // Identity certificate servers: the fourth act.
    let registry = crate::demo_registry::act(work.path(), &say).await?;

    // The consent log: three signed, chained decisions; one altered byte is caught.
    let exported = keeper.log().export();
    let entries = custos_keeper::consent::verify_export(&exported, &owner)?;
    ensure!(entries.len() == 3, "{} consent entries", entries.len());
    let text = String::from_utf8(exported.clone())?;
    let tampered = text.replacen("\"denied\"", "\"granted\"", 1);
    ensure!(
        tampered != text
            && custos_keeper::consent::verify_export(tampered.as_bytes(), &owner).is_err(),
        "an altered consent log verified"
    );
    say(
        "keeper",
        "consent log: 3 entries, hash-chained and signed; an altered entry is detected".into(),
    );

    // Shut the hub down and scan its data directory for any key that opens a record, and for plaintext.
    running.stop().await?;
    store.close().await;
    let (secrets, found) = scan(&hub_dir, &fleet, &keeper, start, end, &control.secrets)?;
    ensure!(
        found == 0,
        "the hub's data directory holds {found} record key(s) or plaintext reading(s)"
    );
    say(
        "hub",
        format!(
            "its data directory, scanned for {secrets} secrets (DPKs, stage and leaf keys, the user–device key and member keys) and for plaintext: none found"
        ),
    );

    // Forward security: each device's key file now opens nothing of the two months it recorded.
    let mut leaks = 0;
    let mut frontier = 0;
    for i in 0..fleet.len() {
        let held = keyfile::read_keys(&work.path().join(format!("device-{i}")).join("keys.json"))?;
        frontier = frontier.max(held.nodes.len());
        let mut t = start;
        while t < UnixTime::new(end.secs() - 86_400)? {
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
        "each keeps only its frontier: none of its key files opens a past day".into(),
    );
    let app_nodes: usize = week
        .iter()
        .chain(months.iter())
        .map(|t| t.nodes.len())
        .sum();
    let elapsed = started.elapsed();

    if args.json {
        println!(
            "{}",
            json!({"hub": url, "devices": fleet.len(), "records": total, "per_device": per_device,
                "handshake_bytes": HANDSHAKE_BYTES,
                "requests": {"two_months": {"granted_nodes": 2, "by": "user"}, "week": {"granted_nodes": 1, "by": "policy rule 1", "opened": week_count},
                             "day": {"denied": denied}},
                "fetched": first_month.len(), "opened_week": week_count, "opened_months": per_device, "cross_device_opened": cross,
                "consent_entries": entries.len(), "device_to_device": ties.modes.iter().map(|(m, b)| json!({"mode": m, "bytes": b})).collect::<Vec<_>>(), "hub_keys_found": found, "app_node_secrets": app_nodes,
                "registry": {"certificate": registry.fingerprint, "manufacturer_log": registry.logs.0, "infield_log": registry.logs.1}, "seconds": elapsed.as_secs_f64()})
        );
    } else {
        println!("\nwho       holds");
        println!(
            "keeper    the master secret and its signing key, in a vault under a passphrase; 3 signed consent entries"
        );
        println!(
            "devices   each its frontier (≤ {frontier} secrets) and its session key; nothing that opens a past day"
        );
        println!(
            "hub       {total} ciphertexts, headers, session keys, requests and sealed answers; 0 keys that open a record"
        );
        println!(
            "devices   session keys between two of them, in 5 modes ({}); the hub holds none",
            ties.modes
                .iter()
                .map(|(m, b)| format!("{m} {b} B"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "app       {app_nodes} node secrets: week 2 and two months of {first}; nothing of {second}"
        );
        println!(
            "registry  device certificate {}…, endorsed; {} entries in the manufacturer's log, {} at the site",
            &registry.fingerprint[..16],
            registry.logs.0,
            registry.logs.1
        );
        println!("\nall checks passed in {:.1} s", elapsed.as_secs_f64());
    }
    Ok(())
}

fn granted(answer: Answer) -> Result<Vec<GrantedTree>> {
    match answer {
        Answer::Granted(trees) => Ok(trees),
        Answer::Denied(reason) => bail!("denied: {reason}"),
    }
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
/// fleet in `[from, until)` (the DPK, every stage secret and every leaf key, derived in the keeper's vault), and of
/// any plaintext reading. Returns (secrets looked for, occurrences found).
fn scan(
    dir: &Path,
    fleet: &[Fleet],
    keeper: &Keeper,
    from: UnixTime,
    until: UnixTime,
    extra: &[[u8; 32]],
) -> Result<(usize, usize)> {
    let c = RustCrypto;
    let mut secrets: HashSet<[u8; 32]> = extra.iter().copied().collect();
    for f in fleet {
        let dpk = keeper.node_secret(&f.spec, custos_proto::NodeId::ROOT)?;
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
    // SQLite may still remove its `-wal` and `-shm` files as its last connection closes: a file gone between the
    // listing and the read starts the scan again, so that no file is skipped.
    let mut bytes = Vec::new();
    for attempt in 0.. {
        bytes.clear();
        let read: std::io::Result<()> = std::fs::read_dir(dir)?.try_for_each(|entry| {
            let path = entry?.path();
            if path.is_file() {
                bytes.extend(std::fs::read(&path)?);
            }
            Ok(())
        });
        match read {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < 50 => {
                std::thread::sleep(Duration::from_millis(100));
            }
            other => {
                other?;
                break;
            }
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
