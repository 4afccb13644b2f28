//! The simulator against the goals of docs/benchmarks.md ("LoRa"): every procedure completes at 30 % loss, and
//! join and key distribution beat the TIES demonstrator's busy times. Simulated time, not wall-clock time: every
//! figure here is a deterministic function of the seed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_sim::{Config, Procedure, Rule, SpreadingFactor, SubBand, run, ties};

fn cfg(procedure: Procedure, sf: SpreadingFactor, loss: f64, seed: u64) -> Config {
    Config {
        procedure,
        sf,
        loss,
        seed,
        nodes: 3,
        band: SubBand::G1,
        rule: Rule::Hourly,
        processing_us: 10_000,
        propagation_us: 3,
    }
}

fn secs(us: Option<u64>) -> f64 {
    us.expect("the node took part") as f64 / 1e6
}

#[test]
fn a_run_is_a_function_of_its_seed() {
    let c = cfg(Procedure::Join, SpreadingFactor::Sf9, 0.3, 42);
    let a = format!("{:?}", run(&c).unwrap());
    let b = format!("{:?}", run(&c).unwrap());
    assert_eq!(a, b);
    let other = format!("{:?}", run(&Config { seed: 43, ..c }).unwrap());
    assert_ne!(a, other, "another seed loses other frames");
}

#[test]
fn without_loss_each_message_is_one_burst_and_one_acknowledgement() {
    // Key distribution: request, delivery, receipt, notice and two confirmations, each one frame at SF7, each
    // acknowledged once: 12 frames, nothing resent, nothing collided.
    let o = run(&cfg(
        Procedure::KeyDistribution,
        SpreadingFactor::Sf7,
        0.0,
        1,
    ))
    .unwrap();
    assert_eq!((o.frames, o.lost, o.collided), (12, 0, 0), "{o:?}");
    assert_eq!(o.duty_wait_us, 0);
    // The node that takes no part is never busy.
    assert_eq!(o.busy_us[3], None);
}

#[test]
fn every_procedure_completes_at_30_percent_loss() {
    for procedure in [Procedure::Join, Procedure::KeyDistribution] {
        for sf in [
            SpreadingFactor::Sf7,
            SpreadingFactor::Sf9,
            SpreadingFactor::Sf12,
        ] {
            for seed in 1..=4 {
                let o = run(&cfg(procedure, sf, 0.3, seed))
                    .unwrap_or_else(|e| panic!("{procedure:?} at {sf:?}, seed {seed}: {e}"));
                assert!(o.lost > 0, "30 % loss loses frames: {o:?}");
            }
        }
    }
}

#[test]
fn join_and_key_distribution_are_20_times_faster_than_ties_at_sf7_and_faster_at_sf12() {
    for (sf, factor) in [(SpreadingFactor::Sf7, 20.0), (SpreadingFactor::Sf12, 1.0)] {
        let j = run(&cfg(Procedure::Join, sf, 0.0, 1)).unwrap();
        let (ce, new) = (secs(j.busy_us[0]), secs(j.busy_us[3]));
        assert!(ce * factor <= ties::JOIN_CE, "join at {sf:?}: CE {ce} s");
        assert!(
            new * factor <= ties::JOIN_NEW,
            "join at {sf:?}: joining node {new} s"
        );
        let k = run(&cfg(Procedure::KeyDistribution, sf, 0.0, 1)).unwrap();
        let (ce, n1) = (secs(k.busy_us[0]), secs(k.busy_us[1]));
        assert!(ce * factor <= ties::KEY_CE, "keys at {sf:?}: CE {ce} s");
        assert!(n1 * factor <= ties::KEY_N1, "keys at {sf:?}: N1 {n1} s");
    }
}

#[test]
fn the_per_frame_duty_cycle_rule_makes_sf12_wait_minutes() {
    let hourly = run(&cfg(
        Procedure::KeyDistribution,
        SpreadingFactor::Sf12,
        0.0,
        1,
    ))
    .unwrap();
    let strict = run(&Config {
        rule: Rule::PerFrame,
        ..cfg(Procedure::KeyDistribution, SpreadingFactor::Sf12, 0.0, 1)
    })
    .unwrap();
    assert_eq!(hourly.duty_wait_us, 0);
    // N1 sends the request (two frames) and later its confirmation: each waits 99 times a frame.
    assert!(strict.duty_wait_us > 100_000_000, "{strict:?}");
    assert!(strict.total_us > hourly.total_us + 100_000_000);
}
