//! The EU868 duty-cycle budget of one radio on one sub-band (ETSI EN 300 220-2; the sub-bands of ERC
//! Recommendation 70-03 as LoRaWAN stacks name them).
//!
//! Two rules, both of which keep a radio within the regulation:
//!
//! - [`Rule::Hourly`] is the regulation's own: ETSI EN 300 220 measures the duty cycle over an observation period
//!   of one hour, so a radio on a 1 % band may transmit for 36 s in any hour, in bursts if it likes. It is counted
//!   over a sliding hour: a frame may start at t only if the airtime of every transmission that ended after
//!   t + T − 1 h, plus its own T, stays within dc × 1 h. The last [`HISTORY`] transmissions are kept (no heap);
//!   past that the two oldest are merged into one that counts until the later of them leaves the hour, which only
//!   ever overstates what was sent.
//! - [`Rule::PerFrame`] is the older, stricter one (LMIC, LoRaMac-node before 4.5): after a transmission of time
//!   on air T, silence for T·(1/dc − 1). It never allows more than the hourly rule and needs one number of state,
//!   but it forbids the short bursts a multi-frame exchange needs: a 51-byte frame at SF12 costs four minutes.
//!
//! A [`DutyCycle`] belongs to a radio, not to a link: every [`Link`](crate::Link) of a node draws on the same
//! budget. It must never let a caller transmit earlier than its rule allows, whatever the order of calls.

/// ETSI EN 300 220's observation period for the duty cycle: one hour, in µs.
pub const OBSERVATION_PERIOD_US: u64 = 3_600_000_000;

/// How many transmissions [`Rule::Hourly`] remembers one by one.
pub const HISTORY: usize = 32;

/// How a [`DutyCycle`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// At most dc × 1 h on air in any sliding hour (ETSI EN 300 220's observation period).
    Hourly,
    /// Silence for T·(1/dc − 1) after every transmission of T (LMIC, LoRaMac-node < 4.5).
    PerFrame,
}

/// A past transmission (or several merged): it counts until `end_us` + 1 h.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
struct Sent {
    end_us: u64,
    toa_us: u64,
}

/// A sub-band and its duty cycle, 1 in `one_in` (1 % is 1 in 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubBand {
    one_in: u32,
}

impl SubBand {
    /// g1, 868.0–868.6 MHz, 1 %: the three default EU868 channels (868.1, 868.3 and 868.5 MHz).
    pub const G1: SubBand = SubBand { one_in: 100 };
    /// g2, 868.7–869.2 MHz, 0.1 %.
    pub const G2: SubBand = SubBand { one_in: 1_000 };
    /// g3, 869.4–869.65 MHz, 10 % (869.525 MHz, LoRaWAN's RX2 channel).
    pub const G3: SubBand = SubBand { one_in: 10 };

    /// The 1 % band, g1.
    pub const fn one_percent() -> SubBand {
        SubBand::G1
    }

    /// The 0.1 % band, g2.
    pub const fn tenth_percent() -> SubBand {
        SubBand::G2
    }

    /// The 10 % band, g3.
    pub const fn ten_percent() -> SubBand {
        SubBand::G3
    }

    /// Any other duty cycle, 1 in `one_in`; `None` for 0. `one_in(1)` is no limit at all (100 %).
    pub const fn one_in(one_in: u32) -> Option<SubBand> {
        if one_in == 0 {
            None
        } else {
            Some(SubBand { one_in })
        }
    }

    /// The duty cycle as 1 in this many.
    pub const fn ratio(self) -> u32 {
        self.one_in
    }

    /// The silence owed after a transmission of `toa_us`: T·(1/dc − 1), e.g. 99·T at 1 %.
    pub const fn off_time_us(self, toa_us: u64) -> u64 {
        toa_us.saturating_mul(self.one_in as u64 - 1)
    }
}

/// The duty-cycle state of one radio on one sub-band.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DutyCycle {
    band: SubBand,
    rule: Rule,
    /// [`Rule::PerFrame`]: the earliest time the next transmission may start.
    free_at_us: u64,
    /// [`Rule::Hourly`]: past transmissions, oldest first, `len` of them.
    sent: [Sent; HISTORY],
    len: usize,
}

impl DutyCycle {
    /// A radio that has not transmitted yet on `band`, counted with the per-frame rule: free at once.
    pub const fn new(band: SubBand) -> DutyCycle {
        DutyCycle::with_rule(band, Rule::PerFrame)
    }

    /// A radio that has not transmitted yet on `band`, counted over a sliding hour.
    pub const fn hourly(band: SubBand) -> DutyCycle {
        DutyCycle::with_rule(band, Rule::Hourly)
    }

    /// A radio that has not transmitted yet on `band`, counted with `rule`.
    pub const fn with_rule(band: SubBand, rule: Rule) -> DutyCycle {
        DutyCycle {
            band,
            rule,
            free_at_us: 0,
            sent: [Sent {
                end_us: 0,
                toa_us: 0,
            }; HISTORY],
            len: 0,
        }
    }

    /// The sub-band.
    pub const fn band(&self) -> SubBand {
        self.band
    }

    /// The rule.
    pub const fn rule(&self) -> Rule {
        self.rule
    }

    /// The airtime a sub-band allows in one hour: dc × 1 h.
    pub const fn hourly_budget_us(&self) -> u64 {
        OBSERVATION_PERIOD_US / self.band.ratio() as u64
    }

    /// How long to wait from `now_us` before a transmission of `toa_us` may start; 0 when it may start now.
    /// Under [`Rule::PerFrame`] the length does not matter; under [`Rule::Hourly`] pass the frame's time on air,
    /// or the longest frame's when it is not known yet. A frame longer than the hour's budget never may
    /// (`u64::MAX`).
    pub fn wait_for_us(&self, now_us: u64, toa_us: u64) -> u64 {
        match self.rule {
            Rule::PerFrame => self.free_at_us.saturating_sub(now_us),
            Rule::Hourly => {
                let budget = self.hourly_budget_us();
                if toa_us > budget {
                    return u64::MAX;
                }
                // What still counts at a start t is every transmission that ended after t + T − 1 h. Drop the
                // oldest until the rest and this frame fit; t is when the last one dropped leaves the hour.
                let mut used = self
                    .history()
                    .iter()
                    .fold(0u64, |a, s| a.saturating_add(s.toa_us));
                let mut start = now_us;
                for s in self.history() {
                    // At `start`, does `s` still count?
                    let leaves = s
                        .end_us
                        .saturating_add(OBSERVATION_PERIOD_US)
                        .saturating_sub(toa_us);
                    if leaves <= start {
                        used = used.saturating_sub(s.toa_us);
                        continue;
                    }
                    if used.saturating_add(toa_us) <= budget {
                        break;
                    }
                    used = used.saturating_sub(s.toa_us);
                    start = leaves;
                }
                start - now_us
            }
        }
    }

    /// How long to wait from `now_us` before the next transmission may start, whatever its length under
    /// [`Rule::PerFrame`]; under [`Rule::Hourly`], for a frame of no length.
    pub fn wait_us(&self, now_us: u64) -> u64 {
        self.wait_for_us(now_us, 0)
    }

    /// The earliest time the next transmission may start (under [`Rule::Hourly`], one of no length).
    pub fn free_at_us(&self) -> u64 {
        match self.rule {
            Rule::PerFrame => self.free_at_us,
            Rule::Hourly => {
                let last = self.history().last().map_or(0, |s| s.end_us);
                last.saturating_sub(OBSERVATION_PERIOD_US)
                    .saturating_add(self.wait_us(last.saturating_sub(OBSERVATION_PERIOD_US)))
            }
        }
    }

    /// Account for a transmission that started at `now_us` and lasts `toa_us`. Per frame: the band is busy until
    /// its end, then silent for T·(1/dc − 1), so the next start is `now_us + toa_us / dc`; a transmission recorded
    /// while silence was still owed never shortens it. Hourly: it counts until an hour after it ends.
    pub fn record(&mut self, now_us: u64, toa_us: u64) {
        match self.rule {
            Rule::PerFrame => {
                let end = now_us
                    .saturating_add(toa_us)
                    .saturating_add(self.band.off_time_us(toa_us));
                self.free_at_us = self.free_at_us.max(end);
            }
            Rule::Hourly => {
                // Keep the history in order of end even for a caller whose clock went back.
                let last = self.history().last().map_or(0, |s| s.end_us);
                let end_us = now_us.saturating_add(toa_us).max(last);
                // Forget what no longer counts for any start from now on.
                let keep_from = self
                    .history()
                    .iter()
                    .position(|s| s.end_us.saturating_add(OBSERVATION_PERIOD_US) > now_us)
                    .unwrap_or(self.len);
                self.sent.copy_within(keep_from..self.len, 0);
                self.len -= keep_from;
                if self.len == HISTORY {
                    // Merge the two oldest into one that counts as long as the later of them: an overstatement.
                    self.sent[1].toa_us = self.sent[1].toa_us.saturating_add(self.sent[0].toa_us);
                    self.sent.copy_within(1..HISTORY, 0);
                    self.len -= 1;
                }
                self.sent[self.len] = Sent { end_us, toa_us };
                self.len += 1;
            }
        }
    }

    fn history(&self) -> &[Sent] {
        self.sent.get(..self.len).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::airtime::{SpreadingFactor, time_on_air_us};

    #[test]
    fn one_percent_is_99_times_the_airtime() {
        let mut d = DutyCycle::new(SubBand::G1);
        assert_eq!(d.wait_us(0), 0);
        d.record(1_000, 2_000);
        // Busy for 2 ms, then silent for 198 ms: the next start is at 1 ms + 200 ms.
        assert_eq!(d.free_at_us(), 201_000);
        assert_eq!(d.wait_us(1_000), 200_000);
        assert_eq!(d.wait_us(3_000), 198_000);
        assert_eq!(d.wait_us(201_000), 0);
        assert_eq!(d.wait_us(u64::MAX), 0);
    }

    #[test]
    fn the_three_bands() {
        assert_eq!(SubBand::one_percent().off_time_us(1_000), 99_000);
        assert_eq!(SubBand::tenth_percent().off_time_us(1_000), 999_000);
        assert_eq!(SubBand::ten_percent().off_time_us(1_000), 9_000);
        assert_eq!(SubBand::one_in(0), None);
        assert_eq!(SubBand::one_in(1).map(|b| b.off_time_us(1_000)), Some(0));
    }

    #[test]
    fn a_full_sf12_frame_costs_four_minutes_at_one_percent() {
        let mut d = DutyCycle::new(SubBand::G1);
        let toa = time_on_air_us(SpreadingFactor::Sf12, 51);
        d.record(0, toa);
        assert_eq!(d.wait_us(0), 246_579_200); // 100 × 2,465.792 ms
    }

    #[test]
    fn an_early_transmission_never_shortens_the_silence() {
        let mut d = DutyCycle::new(SubBand::G2);
        d.record(0, 10_000); // free at 10 s
        d.record(5_000, 1); // a caller that did not wait: free at 5.001 s, which must not win
        assert_eq!(d.free_at_us(), 10_000_000);
        d.record(u64::MAX - 1, u64::MAX);
        assert_eq!(d.free_at_us(), u64::MAX);
    }

    #[test]
    fn hourly_allows_36_seconds_of_bursts_at_one_percent_then_waits_for_the_hour() {
        let mut d = DutyCycle::hourly(SubBand::G1);
        let toa = time_on_air_us(SpreadingFactor::Sf12, 51); // 2,465,792 µs
        let mut now = 0;
        let mut sent = 0u64;
        // Back to back, as long as the hour's 36 s last: 14 frames (34.5 s); a 15th would pass 36 s.
        while d.wait_for_us(now, toa) == 0 {
            d.record(now, toa);
            now += toa;
            sent += 1;
        }
        assert_eq!(sent, 14);
        // The next may start when the first has left the hour, and not a microsecond sooner.
        let wait = d.wait_for_us(now, toa);
        assert_eq!(now + wait, toa + OBSERVATION_PERIOD_US - toa);
        assert_eq!(d.wait_for_us(now + wait - 1, toa), 1);
        assert_eq!(d.wait_for_us(now + wait, toa), 0);
        // A frame longer than the whole budget never may.
        assert_eq!(d.wait_for_us(0, OBSERVATION_PERIOD_US / 100 + 1), u64::MAX);
    }

    /// Time on air within the hour starting at `from`, of the transmissions `(start, toa)` in `log`.
    fn in_hour(log: &[(u64, u64)], from: u64) -> u64 {
        let to = from + OBSERVATION_PERIOD_US;
        log.iter()
            .map(|&(s, t)| (s + t).min(to).saturating_sub(s.max(from)))
            .sum()
    }

    #[test]
    fn hourly_never_allows_more_than_the_band_in_any_sliding_hour() {
        // Whatever the frame sizes (and past the history's length, so merging happens), a caller that waits as
        // told never has more than dc × 1 h on air in any hour.
        for band in [SubBand::G1, SubBand::G2, SubBand::G3] {
            let mut d = DutyCycle::hourly(band);
            let mut log = std::vec::Vec::new();
            let mut now = 0u64;
            for i in 0..600u64 {
                let toa = 20_000 + (i * 7_919) % 400_000;
                now += d.wait_for_us(now, toa) + (i % 5) * 1_000;
                d.record(now, toa);
                log.push((now, toa));
                now += toa;
            }
            let budget = OBSERVATION_PERIOD_US / u64::from(band.ratio());
            // The busiest hours start with a transmission or end with one.
            for &(start, toa) in &log {
                let ending = (start + toa).saturating_sub(OBSERVATION_PERIOD_US);
                assert!(in_hour(&log, ending) <= budget, "{band:?}");
                assert!(in_hour(&log, start) <= budget, "{band:?}");
            }
            // And it does use the band: over the run, at least half of the budget per hour.
            let total: u64 = log.iter().map(|&(_, t)| t).sum();
            assert!(
                total * 2 >= budget * (now / OBSERVATION_PERIOD_US),
                "{band:?}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1_000))]

        /// The way docs/lora.md §2 drives it: ask for the longest frame, send a shorter one (or that one), after
        /// idle gaps or none, with frames from a microsecond to the whole budget, on bands up to 100 %; and still
        /// no hour ever holds more than dc × 1 h.
        #[test]
        fn hourly_holds_for_any_frames_and_gaps(
            one_in in proptest::prop_oneof![1u32..=3, proptest::strategy::Just(10), proptest::strategy::Just(100)],
            steps in proptest::collection::vec((1u64..=1_000_000, 0u8..3, 1u64..=1_000_000, 0u64..100_000_000), 1..100),
        ) {
            let band = SubBand::one_in(one_in).unwrap();
            let budget = OBSERVATION_PERIOD_US / u64::from(one_in);
            let mut d = DutyCycle::hourly(band);
            let mut log = std::vec::Vec::new();
            let mut now = 0u64;
            for (asked, kind, sent, gap) in steps {
                // Frames in millionths of the budget: tiny (µs), any share of it, or a sliver of it.
                let asked = match kind {
                    0 => asked % 1_000 + 1,
                    1 => budget / 1_000_000 * asked,
                    _ => budget / 4_000_000 * asked,
                }
                .clamp(1, budget);
                let sent = (asked / 1_000_000 * sent).clamp(1, asked);
                now += gap * u64::from(kind == 2);
                let wait = d.wait_for_us(now, asked);
                proptest::prop_assert_ne!(wait, u64::MAX);
                now += wait;
                d.record(now, sent);
                log.push((now, sent));
                now += sent;
            }
            for &(start, toa) in &log {
                let ending = (start + toa).saturating_sub(OBSERVATION_PERIOD_US);
                proptest::prop_assert!(in_hour(&log, ending) <= budget);
                proptest::prop_assert!(in_hour(&log, start) <= budget);
            }
        }
    }

    #[test]
    fn hourly_a_frame_of_no_length_is_not_the_frame_sent() {
        // Why a caller asks with the longest frame (docs/lora.md §6): 1 ms left of the hour lets a frame of no
        // length go, and not one of 2 ms.
        let mut d = DutyCycle::hourly(SubBand::G1);
        d.record(0, OBSERVATION_PERIOD_US / 100 - 1_000);
        assert_eq!(d.wait_us(40_000_000), 0);
        assert_eq!(d.wait_for_us(40_000_000, 1_000), 0);
        assert_eq!(
            d.wait_for_us(40_000_000, 2_000),
            OBSERVATION_PERIOD_US / 100 - 1_000 + OBSERVATION_PERIOD_US - 2_000 - 40_000_000
        );
    }

    #[test]
    fn a_caller_that_did_not_wait_pays_later() {
        let mut d = DutyCycle::hourly(SubBand::G1);
        d.record(0, OBSERVATION_PERIOD_US / 100); // 36 s at once: the hour is spent
        d.record(36_000_000, 1_000_000); // 1 s more, without waiting
        // Nothing until the first has left the hour; then the 1 s left fits.
        assert_eq!(d.wait_us(0), 36_000_000 + OBSERVATION_PERIOD_US);
        assert_eq!(d.free_at_us(), 36_000_000 + OBSERVATION_PERIOD_US);
        // A frame of the whole 36 s must also wait for the second to leave the hour it would end.
        assert_eq!(
            d.wait_for_us(0, 36_000_000),
            37_000_000 + OBSERVATION_PERIOD_US - 36_000_000
        );
        assert_eq!(
            d.wait_for_us(0, 35_000_000),
            36_000_000 + OBSERVATION_PERIOD_US - 35_000_000
        );
        // Absurd lengths saturate instead of overflowing: nothing more, practically forever.
        d.record(40_000_000, u64::MAX);
        assert!(d.wait_for_us(40_000_000, 1) > u64::MAX / 2);
    }
}
