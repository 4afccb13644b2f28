//! `custos device run`: the device agent as a long-running command.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use custos_device::agent::{Agent, AgentError, ListUpdate, MqttLink, Published};
use custos_device::keyfile;

use crate::timearg;

/// Options of `custos device run`.
#[derive(Args)]
pub struct RunArgs {
    /// The device's state directory (from `custos device make`).
    #[arg(long)]
    state_dir: PathBuf,
    /// The hub to join, e.g. http://127.0.0.1:7180 (first start only; remembered).
    #[arg(long)]
    hub: Option<String>,
    /// Provision data keys from this key file (a DPK from `custos dpk new`); the device keeps only its
    /// frontier from now on.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Where readings come from: `simulated` (a thermometer), `stdin` (one reading per line),
    /// `file:PATH` (one per line) or `command:CMD` (run through `sh -c` for each reading, stdout is the reading).
    #[arg(long, default_value = "simulated")]
    source: String,
    /// Time between readings: 500ms, 10s, 5m.
    #[arg(long, default_value = "10s")]
    every: String,
    /// Stop after this many readings, once the queue is sent (or the hub stays unreachable for 30 s).
    #[arg(long)]
    count: Option<u64>,
    /// Publish over MQTT through this broker (e.g. mqtt://127.0.0.1:1883) instead of HTTP; joining still uses HTTP.
    #[arg(long, env = "CUSTOS_MQTT_URL")]
    mqtt: Option<String>,
    /// Wait for the owner's keeper to pair (`custos keeper pair`) and provision a DPK epoch before streaming,
    /// even if the device holds keys already: how a device takes a new epoch. A device without keys always waits.
    #[arg(long)]
    pair: bool,
    /// How long to wait for the keeper to pair.
    #[arg(long, default_value = "10m")]
    pair_timeout: String,
    /// The MQTT topic prefix the hub listens on.
    #[arg(long, default_value = "custos", env = "CUSTOS_MQTT_PREFIX")]
    mqtt_prefix: String,
}

enum Source {
    Simulated,
    Lines(Box<dyn BufRead>),
    Command(String),
}

impl Source {
    fn parse(text: &str) -> Result<Self> {
        if text == "simulated" {
            Ok(Self::Simulated)
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
            bail!("`{text}` is not a source: use simulated, stdin, file:PATH or command:CMD")
        }
    }

    /// The next reading, or None when a line source is exhausted.
    fn next(&mut self, t: custos_proto::UnixTime) -> Result<Option<Vec<u8>>> {
        match self {
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

/// Runs the agent.
pub fn run(a: &RunArgs) -> Result<()> {
    let every = interval(&a.every)?;
    let mut source = Source::parse(&a.source)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        let mut agent = Agent::open(&a.state_dir)?;
        let now = timearg::now()?;
        if !agent.joined() {
            let hub = a.hub.as_deref().context("the device has not joined a hub yet: pass --hub URL")?;
            agent.join(hub, i64::try_from(now.secs())?).await?;
            eprintln!("device {} joined {hub}", agent.device());
        }
        if let Some(path) = &a.keys {
            let keys = keyfile::read_keys(path)?;
            let kept = agent.provision(&keys, now)?;
            eprintln!("provisioned: keeping {kept} secret(s), the frontier from {now}");
        }
        if a.pair || (!agent.has_keys() && a.keys.is_none()) {
            let wait = interval(&a.pair_timeout)?;
            eprintln!(
                "device {} waits for its owner's keeper to pair (`custos keeper pair` with the owner code on the label), up to {}",
                agent.device(),
                a.pair_timeout
            );
            let (epoch, held) = agent.await_pairing(timearg::now()?, wait).await?;
            eprintln!("paired: DPK epoch {epoch}, keeping a frontier of {held} secret(s)");
        }
        check_list(agent.refresh_device_list().await)?;
        let mut listed_at = tokio::time::Instant::now();
        let mut link = match &a.mqtt {
            Some(url) => Some(MqttLink::connect(url, &a.mqtt_prefix, agent.device())?),
            None => None,
        };
        let mut taken = 0u64;
        let mut ticker = tokio::time::interval(every);
        loop {
            if a.count.is_some_and(|c| taken >= c) {
                break;
            }
            tokio::select! {
                _ = ticker.tick() => {}
                _ = tokio::signal::ctrl_c() => { eprintln!("stopping; {} reading(s) stay queued", agent.queued()?.len()); return Ok(()); }
            }
            let t = timearg::now()?;
            let Some(reading) = source.next(t)? else { break };
            let seq = agent.seal(&reading, t)?;
            taken += 1;
            // Over HTTP the device asks for the list now and then; over MQTT the hub pushes it.
            if link.is_none() && listed_at.elapsed() >= LIST_EVERY {
                check_list(agent.refresh_device_list().await)?;
                listed_at = tokio::time::Instant::now();
            }
            match publish(&mut agent, link.as_mut()).await {
                Ok(p) => {
                    if let Some(u) = p.list {
                        check_list(Ok(u))?;
                    }
                    eprintln!("reading {seq} sealed; hub stored {}, duplicates {}, queued {}", p.stored, p.duplicates, p.pending)
                }
                Err(AgentError::Unreachable(e)) => eprintln!("reading {seq} queued ({} waiting): hub unreachable: {e}", agent.queued()?.len()),
                Err(e) => return Err(e.into()),
            }
        }
        // Drain the queue before stopping, for at most 30 s.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !agent.queued()?.is_empty() {
            match publish(&mut agent, link.as_mut()).await {
                Ok(_) => {}
                Err(AgentError::Unreachable(e)) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%e, "retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(anyhow::Error::from(e).context(format!("{} reading(s) stay queued", agent.queued().map(|q| q.len()).unwrap_or(0)))),
            }
        }
        Ok(())
    })
}

/// How often an agent on HTTP fetches the hub's device list.
const LIST_EVERY: Duration = Duration::from_secs(60);

/// Stops the agent once the hub's signed device list leaves this device out; other failures to get a list
/// are only logged, since publishing does not depend on them.
fn check_list(update: Result<ListUpdate, AgentError>) -> Result<()> {
    match update {
        Ok(u) if !u.authorized => bail!(
            "this device is not on the hub's signed device list (version {}): it was revoked; stopping",
            u.version
        ),
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

async fn publish(agent: &mut Agent, link: Option<&mut MqttLink>) -> Result<Published, AgentError> {
    match link {
        Some(l) => agent.publish_mqtt(l).await,
        None => agent.publish().await,
    }
}
