//! `custos sim lora`: the real protocols over a simulated LoRa channel, against the TIES demonstrator's figures.

use anyhow::{Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use custos_sim::{Config, Grid, Procedure, Rule, SpreadingFactor, SubBand};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Subcommand)]
pub(crate) enum SimCmd {
    /// Join and key distribution over a simulated LoRa channel (Semtech time on air, EU868 duty cycle, frame
    /// loss), run by the real protocol state machines over the custos-link layer; prints each node's busy time
    /// next to the TIES demonstrator's. Deterministic: the same seed gives the same table.
    Lora(LoraArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Band {
    /// 868.0–868.6 MHz, 1 % (the default EU868 channels).
    G1,
    /// 868.7–869.2 MHz, 0.1 %.
    G2,
    /// 869.4–869.65 MHz, 10 %.
    G3,
}

#[derive(Clone, Copy, ValueEnum)]
enum DutyRule {
    /// At most the band's share of any sliding hour (ETSI EN 300 220's observation period).
    Hourly,
    /// Silence for 1/dc − 1 times each frame's time on air (LMIC, LoRaMac-node before 4.5).
    PerFrame,
}

#[derive(Clone, Copy, ValueEnum)]
enum Which {
    Join,
    KeyDistribution,
    All,
}

#[derive(Args)]
pub(crate) struct LoraArgs {
    /// Spreading factors, 7 to 12 (125 kHz, CR 4/5).
    #[arg(long, value_delimiter = ',', default_value = "7,9,12", value_parser = clap::value_parser!(u8).range(7..=12))]
    sf: Vec<u8>,
    /// Frame loss rates in percent, 0 to 90: each frame is lost at its receiver with this probability.
    #[arg(long, value_delimiter = ',', default_value = "0,10,30", value_parser = clap::value_parser!(u8).range(0..=90))]
    loss: Vec<u8>,
    /// Runs per cell (seeds SEED, SEED+1, …); the table gives medians and the worst run.
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    runs: u64,
    /// The first seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Devices besides the CE (TIES had three). A join adds the last of them.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=64))]
    nodes: u16,
    /// The EU868 sub-band, which sets the duty cycle.
    #[arg(long, value_enum, default_value = "g1")]
    band: Band,
    /// How the duty cycle is counted.
    #[arg(long, value_enum, default_value = "hourly")]
    duty_rule: DutyRule,
    /// Processing time per message a node handles, milliseconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    processing_ms: u64,
    /// Which procedure.
    #[arg(long, value_enum, default_value = "all")]
    procedure: Which,
    /// Print the rows as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

fn spreading_factor(v: u8) -> Result<SpreadingFactor> {
    SpreadingFactor::ALL
        .into_iter()
        .find(|sf| sf.value() == v)
        .ok_or_else(|| anyhow::anyhow!("no spreading factor {v}"))
}

pub(crate) fn run(cmd: SimCmd) -> Result<()> {
    let SimCmd::Lora(a) = cmd;
    let defaults = Grid::default();
    let grid = Grid {
        procedures: match a.procedure {
            Which::Join => vec![Procedure::Join],
            Which::KeyDistribution => vec![Procedure::KeyDistribution],
            Which::All => vec![Procedure::Join, Procedure::KeyDistribution],
        },
        sfs: a
            .sf
            .iter()
            .map(|&v| spreading_factor(v))
            .collect::<Result<_>>()?,
        losses: a.loss.iter().map(|&l| f64::from(l) / 100.0).collect(),
        runs: a.runs,
        base: Config {
            seed: a.seed,
            nodes: usize::from(a.nodes),
            band: match a.band {
                Band::G1 => SubBand::G1,
                Band::G2 => SubBand::G2,
                Band::G3 => SubBand::G3,
            },
            rule: match a.duty_rule {
                DutyRule::Hourly => Rule::Hourly,
                DutyRule::PerFrame => Rule::PerFrame,
            },
            processing_us: a.processing_ms * 1000,
            ..defaults.base
        },
    };
    let bar = if a.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(grid.len())
    };
    bar.set_style(
        ProgressStyle::with_template("simulating {pos}/{len} runs [{bar:30}] {elapsed}")?
            .progress_chars("=> "),
    );
    let rows = custos_sim::table(&grid, || bar.inc(1));
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", custos_sim::markdown(&rows));
    }
    let failed: Vec<_> = rows.iter().filter(|r| r.completed < r.runs).collect();
    if let Some(r) = failed.first() {
        bail!(
            "{} of {} cells had runs that did not complete; first: {:?} at SF{} and {} % loss: {}",
            failed.len(),
            rows.len(),
            r.procedure,
            r.sf,
            r.loss_percent,
            r.failure.as_deref().unwrap_or("?")
        );
    }
    Ok(())
}
