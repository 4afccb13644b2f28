//! A deterministic, seeded radio simulator that runs the real Custos protocols over the LoRa link layer
//! (`custos-link`), and the table that compares them with the TIES demonstrator (docs/benchmarks.md, "LoRa").
//!
//! A run is a function of its configuration and seed: the same inputs give the same frames, losses and times.
//! [`table`] runs a grid of spreading factors and loss rates over many seeds and reports medians per node role.

mod proto;
mod radio;
mod rng;

pub use custos_link::duty::Rule;
pub use custos_link::{SpreadingFactor, SubBand};
pub use proto::Procedure;
pub use radio::{Config, Outcome, SimError, link_config, run};

/// The busy times (seconds) the TIES demonstrator reports (Raspberry Pi 3B, SX1278 at 868 MHz, TPM 2.0, RSA-2048;
/// five measurements each): per procedure, the CE, the node that starts it, and the other nodes.
pub mod ties {
    /// Join: CE and joining node (the same time), and the nodes that only receive the new list.
    pub const JOIN_CE: f64 = 44.7;
    /// Join: the joining node (the paper: the same as the CE).
    pub const JOIN_NEW: f64 = 44.7;
    /// Join: each node that only receives the new list.
    pub const JOIN_OTHER: f64 = 1.12;
    /// Key distribution: the CE, the requesting node N1 and the receiving node N2.
    pub const KEY_CE: f64 = 47.5;
    /// Key distribution: N1, from generating the key to the confirmation of its delivery.
    pub const KEY_N1: f64 = 53.7;
    /// Key distribution: N2.
    pub const KEY_N2: f64 = 1.32;
}

/// What a grid of runs covers.
#[derive(Clone, Debug)]
pub struct Grid {
    /// The procedures to run.
    pub procedures: Vec<Procedure>,
    /// The spreading factors (125 kHz, CR 4/5).
    pub sfs: Vec<SpreadingFactor>,
    /// Frame loss rates, 0 to 1.
    pub losses: Vec<f64>,
    /// Runs per cell, with seeds `base.seed`, `base.seed + 1`, ….
    pub runs: u64,
    /// Everything else of each run: the network, the band, the duty-cycle rule, processing and propagation, and
    /// the first seed (its procedure, spreading factor and loss are the grid's).
    pub base: Config,
}

impl Default for Grid {
    /// The table in docs/benchmarks.md: TIES' network (a CE and three nodes), SF7, SF9 and SF12, 0 %, 10 % and 30 %
    /// loss, 25 seeds per cell, the 1 % sub-band, 10 ms of processing per message, 1 km.
    fn default() -> Self {
        Self {
            procedures: vec![Procedure::Join, Procedure::KeyDistribution],
            sfs: vec![
                SpreadingFactor::Sf7,
                SpreadingFactor::Sf9,
                SpreadingFactor::Sf12,
            ],
            losses: vec![0.0, 0.1, 0.3],
            runs: 25,
            base: Config {
                procedure: Procedure::Join,
                sf: SpreadingFactor::Sf7,
                loss: 0.0,
                seed: 1,
                nodes: 3,
                band: SubBand::G1,
                rule: Rule::Hourly,
                processing_us: 10_000,
                propagation_us: 3,
            },
        }
    }
}

impl Grid {
    /// How many runs [`table`] makes.
    pub fn len(&self) -> u64 {
        (self.procedures.len() * self.sfs.len() * self.losses.len()) as u64 * self.runs
    }

    /// Whether [`table`] would make no run.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One cell of the table: a procedure at one spreading factor and loss rate, over `runs` seeds.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Row {
    /// The procedure.
    pub procedure: Procedure,
    /// 7 to 12.
    pub sf: u8,
    /// Percent.
    pub loss_percent: f64,
    /// Runs made.
    pub runs: u64,
    /// Runs that finished (the goal: all of them).
    pub completed: u64,
    /// Median busy time, seconds, of the CE, of the node that starts the procedure (the joining node; N1), and of
    /// the others (the nodes that receive the list; N2).
    pub ce_s: f64,
    /// The starter's median busy time, seconds.
    pub starter_s: f64,
    /// The other nodes' median busy time, seconds.
    pub other_s: f64,
    /// Worst run's busy time of the CE, seconds.
    pub ce_max_s: f64,
    /// Worst run's busy time of the starter, seconds.
    pub starter_max_s: f64,
    /// Median frames on air per run (every node's, acknowledgements included).
    pub frames: u64,
    /// Median bytes on air per run, frame headers included.
    pub bytes: u64,
    /// Median time, summed over nodes, spent waiting for duty-cycle budget with a frame ready, seconds.
    pub duty_wait_s: f64,
    /// TIES' CE figure over ours (how many times faster).
    pub ce_speedup: f64,
    /// TIES' starter figure over ours.
    pub starter_speedup: f64,
    /// The first failure, if any run failed.
    pub failure: Option<String>,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Runs the grid; `progress` is called after every run.
pub fn table(grid: &Grid, mut progress: impl FnMut()) -> Vec<Row> {
    let mut rows = Vec::new();
    for &procedure in &grid.procedures {
        // Roles by node index: the CE is 0; the joining node is the last, N1 is 1; the others are the rest / N2.
        let (starter, others): (usize, Vec<usize>) = match procedure {
            Procedure::Join => (grid.base.nodes, (1..grid.base.nodes).collect()),
            Procedure::KeyDistribution => (1, vec![2]),
        };
        let (ties_ce, ties_starter) = match procedure {
            Procedure::Join => (ties::JOIN_CE, ties::JOIN_NEW),
            Procedure::KeyDistribution => (ties::KEY_CE, ties::KEY_N1),
        };
        for &sf in &grid.sfs {
            for &loss in &grid.losses {
                let (mut ce, mut st, mut ot, mut fr, mut by, mut dw) =
                    (vec![], vec![], vec![], vec![], vec![], vec![]);
                let mut failure = None;
                for k in 0..grid.runs {
                    let cfg = Config {
                        procedure,
                        sf,
                        loss,
                        seed: grid.base.seed.wrapping_add(k),
                        ..grid.base.clone()
                    };
                    match run(&cfg) {
                        Ok(o) => {
                            let s = |i: usize| o.busy_us[i].unwrap_or(0) as f64 / 1e6;
                            ce.push(s(0));
                            st.push(s(starter));
                            ot.extend(others.iter().map(|&i| s(i)));
                            fr.push(o.frames as f64);
                            by.push(o.bytes as f64);
                            dw.push(o.duty_wait_us as f64 / 1e6);
                        }
                        Err(e) => {
                            failure.get_or_insert_with(|| format!("seed {}: {e}", cfg.seed));
                        }
                    }
                    progress();
                }
                let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
                let (ce_max_s, starter_max_s) = (max(&ce), max(&st));
                let (ce_s, starter_s) = (median(&mut ce), median(&mut st));
                rows.push(Row {
                    procedure,
                    sf: sf.value(),
                    loss_percent: loss * 100.0,
                    runs: grid.runs,
                    completed: st.len() as u64,
                    ce_s,
                    starter_s,
                    other_s: median(&mut ot),
                    ce_max_s,
                    starter_max_s,
                    frames: median(&mut fr) as u64,
                    bytes: median(&mut by) as u64,
                    duty_wait_s: median(&mut dw),
                    ce_speedup: ties_ce / ce_s,
                    starter_speedup: ties_starter / starter_s,
                    failure,
                });
            }
        }
    }
    rows
}

/// The rows as a Markdown table, TIES' figures first.
pub fn markdown(rows: &[Row]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for procedure in [Procedure::Join, Procedure::KeyDistribution] {
        let rows: Vec<&Row> = rows.iter().filter(|r| r.procedure == procedure).collect();
        if rows.is_empty() {
            continue;
        }
        let (title, starter, other, t) = match procedure {
            Procedure::Join => (
                "Join (admission, then the new device list to every node)",
                "joining node",
                "other nodes",
                (ties::JOIN_CE, ties::JOIN_NEW, ties::JOIN_OTHER),
            ),
            Procedure::KeyDistribution => (
                "Key distribution (KTC direct, receipt, notice, key confirmation)",
                "N1 (requester)",
                "N2 (receiver)",
                (ties::KEY_CE, ties::KEY_N1, ties::KEY_N2),
            ),
        };
        let _ = writeln!(
            s,
            "{title}, busy time in seconds (median; worst run in brackets):\n"
        );
        let _ = writeln!(
            s,
            "| SF | loss | CE | {starter} | {other} | faster than TIES (CE / {starter}) | frames | bytes | duty-cycle wait | completed |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        let _ = writeln!(
            s,
            "| TIES | — | {} | {} | {} | 1× | — | — | — | — |",
            t.0, t.1, t.2
        );
        for r in rows {
            let _ = writeln!(
                s,
                "| {} | {} % | {:.2} ({:.2}) | {:.2} ({:.2}) | {:.2} | {:.1}× / {:.1}× | {} | {} | {:.1} | {}/{} |",
                r.sf,
                r.loss_percent,
                r.ce_s,
                r.ce_max_s,
                r.starter_s,
                r.starter_max_s,
                r.other_s,
                r.ce_speedup,
                r.starter_speedup,
                r.frames,
                r.bytes,
                r.duty_wait_s,
                r.completed,
                r.runs
            );
        }
        s.push('\n');
    }
    s
}
