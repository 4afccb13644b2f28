//! `custos device run`: the device agent as a long-running command.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Args;
use custos_device::agent::{
    Agent, AgentError, Backoff, ListUpdate, MqttLink, Published, Publisher,
};
use custos_device::keyfile;

use crate::keeper::usage;
use crate::timearg;

/// Options of `custos device run`.
#[derive(Args)]
pub struct RunArgs {
    /// The device's state directory (from `custos device make`).
    #[arg(long)]
    state_dir: PathBuf,
    /// The hub to join, e.g. https://hub.example:7180 (first start only; remembered). Plain http:// only to
    /// this machine.
    #[arg(long)]
    hub: Option<String>,
    /// Provision data keys from this key file (a DPK from `custos dpk new`); the device keeps only its
    /// frontier from now on.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Where readings come from: `simulated` (a thermometer), `stdin` (one reading per line),
    /// `file:PATH` (one per line), `command:CMD` (run through `sh -c` for each reading, stdout is the reading) or
    /// `none` (an actuator that measures nothing: it only takes commands).
    #[arg(long, default_value = "simulated")]
    source: String,
    /// Time between readings: 500ms, 10s, 5m.
    #[arg(long, default_value = "10s")]
    every: String,
    /// Stop after this many readings, once the queue is sent (or the hub stays unreachable for 30 s).
    #[arg(long)]
    count: Option<u64>,
    /// Publish over MQTT through this broker (e.g. mqtts://broker.example:8883, or mqtt://127.0.0.1:1883 without
    /// TLS) instead of HTTP; joining still uses HTTP(S).
    #[arg(long, env = "CUSTOS_MQTT_URL")]
    mqtt: Option<String>,
    #[command(flatten)]
    mqtt_tls: crate::MqttTlsArgs,
    /// Wait for the owner's keeper to pair (`custos keeper pair`) and provision a DPK epoch before streaming,
    /// even if the device holds keys already: how a device takes a new epoch. A device without keys always waits.
    #[arg(long)]
    pair: bool,
    /// How long to wait for the keeper to pair.
    #[arg(long, default_value = "10m")]
    pair_timeout: String,
    /// What the device switches on its owner's commands: `relay` (simulated), `command:PROGRAM` (run with the new
    /// state as its one argument) or `gpio:CHIP:LINE` (a Linux GPIO line, e.g. gpio:gpiochip0:17). The last state
    /// is restored at start.
    #[arg(long, default_value = "relay")]
    actuator: String,
    /// How often the device tells the hub it is online, with its state; commands arrive at once in between
    /// (the hub holds the request open until one comes).
    #[arg(long, default_value = "2s")]
    heartbeat: String,
    /// Take no owner commands (no control queue, no heartbeat).
    #[arg(long)]
    no_control: bool,
    /// The MQTT topic prefix the hub listens on.
    #[arg(long, default_value = "custos", env = "CUSTOS_MQTT_PREFIX")]
    mqtt_prefix: String,
}

enum Source {
    None,
    Simulated,
    Lines(Box<dyn BufRead>),
    Command(String),
}

impl Source {
    fn parse(text: &str) -> Result<Self> {
        if text == "simulated" {
            Ok(Self::Simulated)
        } else if text == "none" {
            Ok(Self::None)
        } else if text == "stdin" {
            Ok(Self::Lines(Box::new(std::io::BufReader::new(
                std::io::stdin(),
            ))))
        } else if let Some(path) = text.strip_prefix("file:") {
            let f = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
            Ok(Self::Lines(Box::new(std::io::BufReader::new(f))))
        } else if let Some(cmd) = text.strip_prefix("command:") {
            Ok(Self::Command(cmd.to_string()))
        } else {
            bail!("`{text}` is not a source: use simulated, stdin, file:PATH, command:CMD or none")
        }
    }

    /// The next reading, or None when a line source is exhausted.
    fn next(&mut self, t: custos_proto::UnixTime) -> Result<Option<Vec<u8>>> {
        match self {
            Self::None => Ok(None),
            Self::Simulated => Ok(Some(crate::demo::reading(t).into_bytes())),
            Self::Lines(r) => {
                let mut line = String::new();
                if r.read_line(&mut line).context("reading the source")? == 0 {
                    return Ok(None);
                }
                Ok(Some(
                    line.trim_end_matches(['\n', '\r']).as_bytes().to_vec(),
                ))
            }
            Self::Command(cmd) => {
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&*cmd)
                    .output()
                    .context("running the source command")?;
                if !out.status.success() {
                    bail!(
                        "the source command failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                Ok(Some(out.stdout.trim_ascii_end().to_vec()))
            }
        }
    }
}

fn interval(text: &str) -> Result<Duration> {
    let bad = || anyhow::anyhow!("`{text}` is not an interval: use 500ms, 10s, 5m or 1h");
    let (n, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| text.split_at(i))
        .ok_or_else(bad)?;
    let n: u64 = n.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(bad()),
    };
    if d.is_zero() { Err(bad()) } else { Ok(d) }
}

/// The device was revoked: exit code 4.
#[derive(Debug)]
struct Revoked(String);

impl std::fmt::Display for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Revoked {}

/// Runs the agent. Exit codes: 0 done (or stopped by SIGINT/SIGTERM), 1 an error (a full disk, or `--count` reached
/// and the hub unreachable for 30 s), 2 bad usage or configuration, 4 revoked.
pub fn run(a: &RunArgs) -> ExitCode {
    let result = run_agent(a);
    if let Err(e) = &result
        && e.chain().any(|c| c.is::<Revoked>())
    {
        eprintln!("error: {e:#}");
        return ExitCode::from(4);
    }
    crate::keeper::exit(result)
}

/// Why the loop ended.
enum Stop {
    Done,
    Signal(&'static str),
}

fn run_agent(a: &RunArgs) -> Result<()> {
    let every = interval(&a.every).map_err(|e| usage(format!("--every: {e}")))?;
    let pair_wait = interval(&a.pair_timeout).map_err(|e| usage(format!("--pair-timeout: {e}")))?;
    let source = Source::parse(&a.source).map_err(|e| usage(format!("--source: {e:#}")))?;
    crate::init_logs();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let queue = a.state_dir.join("queue");
    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
        let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
        // Signals are handled at await points only: sealing a reading (reserve, seal, queue) is synchronous, so it
        // is never cut half-way, and dropping the agent's future mid-publish is safe.
        let stop = tokio::select! {
            biased;
            _ = int.recv() => Stop::Signal("SIGINT"),
            _ = term.recv() => Stop::Signal("SIGTERM"),
            r = agent_main(a, every, pair_wait, source) => r?,
        };
        if let Stop::Signal(name) = stop {
            let n = std::fs::read_dir(&queue)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| {
                            let n = e.file_name();
                            let n = n.to_string_lossy();
                            n.ends_with(".up") || n.ends_with(".skip")
                        })
                        .count()
                })
                .unwrap_or(0);
            eprintln!("{name}: stopping; {n} message(s) stay queued");
        }
        Ok(())
    })
}

/// What the publishing task tells the measuring loop.
enum Report {
    Round(Published),
    List(ListUpdate),
    Failed,
    Fatal(AgentError),
}

/// Aborts a task when dropped.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn agent_main(
    a: &RunArgs,
    every: Duration,
    pair_wait: Duration,
    mut source: Source,
) -> Result<Stop> {
    let mut agent = Agent::open(&a.state_dir).map_err(|e| {
        if e.is_disk_full() {
            disk_full(&e, &a.state_dir)
        } else {
            usage(format!("{}: {e}", a.state_dir.display()))
        }
    })?;
    if let Some(trust) = crate::hub_trust() {
        agent
            .set_hub_trust(trust)
            .map_err(|e| usage(format!("{}: {e}", a.state_dir.display())))?;
    }
    let now = timearg::now()?;
    if !agent.joined() {
        let hub = crate::keeper::hub_url(
            a.hub
                .as_deref()
                .ok_or_else(|| usage("the device has not joined a hub yet: pass --hub URL"))?,
        )?;
        let hub = hub.as_str();
        join(&mut agent, hub, i64::try_from(now.secs())?).await?;
        eprintln!("device {} joined {hub}", agent.device());
    }
    if let Some(path) = &a.keys {
        let keys = keyfile::read_keys(path).map_err(|e| usage(format!("--keys: {e:#}")))?;
        let kept = agent
            .provision(&keys, now)
            .map_err(|e| usage(format!("--keys: {e}")))?;
        eprintln!("provisioned: keeping {kept} secret(s), the frontier from {now}");
    }
    if a.pair || (!agent.has_keys() && a.keys.is_none()) {
        eprintln!(
            "device {} waits for its owner's keeper to pair (`custos keeper pair` with the owner code on the label), up to {}",
            agent.device(),
            a.pair_timeout
        );
        let (epoch, held) = match agent.await_pairing(timearg::now()?, pair_wait).await {
            Ok(p) => p,
            Err(e @ (AgentError::NoOwnerCode | AgentError::NotPaired)) => {
                return Err(usage(format!(
                    "the device holds no keys and cannot get them: {e}"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        eprintln!("paired: DPK epoch {epoch}, keeping a frontier of {held} secret(s)");
    }
    check_list(agent.refresh_device_list().await)?;
    let link = match &a.mqtt {
        Some(url) => Some(
            agent
                .connect_mqtt(url, &a.mqtt_prefix, &a.mqtt_tls.trust()?)
                .map_err(|e| usage(format!("--mqtt: {e}")))?,
        ),
        None => None,
    };
    let (tx, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let kick = std::sync::Arc::new(tokio::sync::Notify::new());
    let _publishing = Task(tokio::spawn(publish_loop(
        agent.publisher()?,
        link,
        kick.clone(),
        tx.clone(),
    )));
    let _control = if a.no_control {
        None
    } else {
        let heartbeat = interval(&a.heartbeat).map_err(|e| usage(format!("--heartbeat: {e}")))?;
        let actuator = custos_device::actuator::from_spec(&a.actuator)
            .map_err(|e| usage(format!("--actuator: {e}")))?;
        let (controller, channel, udk) = agent.controller(actuator)?;
        if udk.is_none() {
            eprintln!(
                "device {} is not paired with its owner's keeper yet: it takes no commands until it is",
                agent.device()
            );
        }
        let mqtt = match &a.mqtt {
            Some(url) => Some(custos_device::control::MqttControl {
                url: url.clone(),
                prefix: a.mqtt_prefix.clone(),
                trust: a.mqtt_tls.trust()?,
            }),
            None => None,
        };
        Some(Task(tokio::spawn(control_loop(
            controller,
            channel,
            udk,
            heartbeat,
            mqtt,
            tx.clone(),
        ))))
    };
    let measuring = !matches!(source, Source::None);
    let mut taken = 0u64;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if a.count.is_some_and(|c| taken >= c) {
            break;
        }
        tokio::select! {
            biased;
            Some(r) = reports.recv() => on_report(r)?,
            _ = ticker.tick(), if measuring => {
                let t = timearg::now()?;
                let Some(reading) = source.next(t)? else { break };
                let seq = agent.seal(&reading, t).map_err(|e| {
                    if e.is_disk_full() { disk_full(&e, &a.state_dir) } else { e.into() }
                })?;
                taken += 1;
                kick.notify_one();
                eprintln!("reading {seq} sealed");
            }
        }
    }
    // Drain the queue before stopping, while the hub answers: give up after 30 s without progress.
    let mut deadline = tokio::time::Instant::now() + DRAIN_PATIENCE;
    kick.notify_one();
    loop {
        let left = agent.queued()?.len();
        if left == 0 {
            return Ok(Stop::Done);
        }
        tokio::select! {
            r = reports.recv() => {
                let Some(r) = r else { bail!("the publishing task ended; {left} message(s) stay queued") };
                if matches!(&r, Report::Round(p) if p.stored + p.duplicates + p.too_old + p.noted > 0) {
                    deadline = tokio::time::Instant::now() + DRAIN_PATIENCE;
                }
                on_report(r)?;
            }
            _ = tokio::time::sleep_until(deadline) => bail!(
                "the hub did not take the queue for {} s; {left} message(s) stay queued for the next run",
                DRAIN_PATIENCE.as_secs()
            ),
        }
    }
}

/// Serves the device's control queue (see [`custos_device::control::serve`], and `serve_mqtt` with --mqtt),
/// saying what it does; a local failure ends the agent.
async fn control_loop(
    controller: custos_device::control::Controller,
    channel: custos_device::control::ControlChannel,
    udk: Option<custos_proto::Secret>,
    heartbeat: Duration,
    mqtt: Option<custos_device::control::MqttControl>,
    tx: tokio::sync::mpsc::UnboundedSender<Report>,
) {
    use custos_device::control::{Controller, Handled};
    let controller = std::sync::Arc::new(tokio::sync::Mutex::new(controller));
    let seen = |id: i64, handled: &Handled, c: &Controller| match handled {
        Handled::Answer { status, .. } => {
            eprintln!(
                "command {id}: {status:?}; state {}",
                c.state().unwrap_or("(none)")
            )
        }
        Handled::ListAck { version, .. } => {
            eprintln!("authorized senders: list version {version} held")
        }
        Handled::Claim { .. } => eprintln!("claim {id}: opened, proving it to the hub"),
        Handled::Refused(why) => {
            eprintln!(
                "control message {id} refused ({why}); {} refused so far",
                c.refused
            )
        }
    };
    let e = match mqtt {
        Some(m) => {
            custos_device::control::serve_mqtt(controller, channel, udk, heartbeat, m, seen).await
        }
        None => custos_device::control::serve(controller, channel, udk, heartbeat, seen).await,
    };
    let _ = tx.send(Report::Fatal(e));
}

/// How long `--count` waits for the hub to take the rest of the queue without progress.
const DRAIN_PATIENCE: Duration = Duration::from_secs(30);

fn on_report(r: Report) -> Result<()> {
    match r {
        Report::Round(p) => {
            if let Some(u) = p.list {
                check_list(Ok(u))?;
            }
            if p.stored + p.duplicates + p.too_old + p.noted + p.ignored > 0 {
                eprintln!(
                    "hub stored {}, duplicates {}, too old {}, skips noted {}; {} queued{}",
                    p.stored,
                    p.duplicates,
                    p.too_old,
                    p.noted,
                    p.pending,
                    if p.ignored > 0 {
                        format!(
                            "; {} downlink message(s) ignored (unauthenticated or not matching)",
                            p.ignored
                        )
                    } else {
                        String::new()
                    }
                );
            }
            Ok(())
        }
        Report::List(u) => check_list(Ok(u)),
        Report::Failed => Ok(()),
        Report::Fatal(e) => Err(e.into()),
    }
}

/// Joins the hub, trying again with backoff while it cannot be reached or fails (5xx); a refusal (a wrong or
/// used join code) is a configuration error.
async fn join(agent: &mut Agent, hub: &str, now: i64) -> Result<()> {
    let mut backoff = Backoff::default();
    loop {
        match agent.join(hub, now).await {
            Ok(()) => return Ok(()),
            Err(e) if e.is_transient() && !e.is_refusal() => {
                let wait = backoff.next(false);
                eprintln!(
                    "cannot join {hub} yet ({e}); trying again in {} ms",
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
            }
            Err(e @ (AgentError::Refused { .. } | AgentError::NoJoinCode)) => {
                return Err(usage(format!("cannot join {hub}: {e}")));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Publishes the queue whenever there is something to send, backing off after failures; over HTTP it also checks
/// the signed device list now and then, and at once after a refusal.
async fn publish_loop(
    mut publisher: Publisher,
    mut link: Option<MqttLink>,
    kick: std::sync::Arc<tokio::sync::Notify>,
    tx: tokio::sync::mpsc::UnboundedSender<Report>,
) {
    let mut backoff = Backoff::default();
    let mut listed_at = tokio::time::Instant::now();
    let mut failing = false;
    loop {
        // Over HTTP the device asks for the list now and then; over MQTT the hub pushes it.
        if link.is_none() && listed_at.elapsed() >= LIST_EVERY {
            listed_at = tokio::time::Instant::now();
            match publisher.refresh_device_list().await {
                Ok(u) => {
                    let _ = tx.send(Report::List(u));
                }
                Err(e) => tracing::warn!(%e, "no device list checked"),
            }
        }
        let result = match link.as_mut() {
            Some(l) => publisher.publish_mqtt(l).await,
            None => publisher.publish().await,
        };
        match result {
            Ok(p) => {
                if failing {
                    eprintln!("the hub answers again");
                    failing = false;
                }
                backoff.reset();
                let idle = p.pending == 0;
                if tx.send(Report::Round(p)).is_err() {
                    return;
                }
                if idle {
                    kick.notified().await;
                }
            }
            Err(e) if e.is_transient() => {
                failing = true;
                let refused = e.is_refusal();
                let wait = backoff.next(refused);
                let queued = publisher.pending().unwrap_or(0);
                if refused {
                    eprintln!(
                        "the hub refused the batch ({e}); refusals are not authenticated, so the agent keeps its queue ({queued}) and tries again in {} ms",
                        wait.as_millis()
                    );
                    // A revoked device is told so by a signed list, not by a refusal: check the list now.
                    if link.is_none() {
                        listed_at = tokio::time::Instant::now();
                        if let Ok(u) = publisher.refresh_device_list().await {
                            let _ = tx.send(Report::List(u));
                        }
                    }
                } else {
                    eprintln!(
                        "{e}; {queued} message(s) queued, trying again in {} ms",
                        wait.as_millis()
                    );
                }
                if tx.send(Report::Failed).is_err() {
                    return;
                }
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                let _ = tx.send(Report::Fatal(e));
                return;
            }
        }
    }
}

fn disk_full(e: &AgentError, dir: &std::path::Path) -> anyhow::Error {
    let queued = std::fs::read_dir(dir.join("queue"))
        .map(|d| d.count())
        .unwrap_or(0);
    anyhow::anyhow!(
        "the device's disk is full ({e}); stopping with {queued} file(s) in the queue, which stay there: free space and run the agent again to send them"
    )
}

/// How often an agent on HTTP fetches the hub's device list.
const LIST_EVERY: Duration = Duration::from_secs(60);

/// Stops the agent once the hub's signed device list leaves this device out; other failures to get a list
/// are only logged, since publishing does not depend on them.
fn check_list(update: Result<ListUpdate, AgentError>) -> Result<()> {
    match update {
        Ok(u) if !u.authorized => Err(Revoked(format!(
            "this device is not on the hub's signed device list (version {}): it was revoked; stopping",
            u.version
        ))
        .into()),
        Ok(u) if u.changed => {
            eprintln!(
                "device list version {} checked: this device is authorized",
                u.version
            );
            Ok(())
        }
        Ok(_) => Ok(()),
        Err(e) => {
            tracing::warn!(%e, "no device list checked");
            Ok(())
        }
    }
}
