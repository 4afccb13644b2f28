//! LoRa time on air, by Semtech's formula (AN1200.13, "LoRa Modem Designer's Guide"; SX1276 datasheet §4.1.1.7),
//! for the one modem setting this crate uses: 125 kHz bandwidth, coding rate 4/5, an 8-symbol preamble, explicit
//! header, payload CRC on, and low-data-rate optimisation on at SF11 and SF12 (as LoRaWAN requires at 125 kHz).
//!
//! With these settings a symbol lasts 2^SF / 125 kHz = 2^SF × 8 µs and the preamble 8 + 4.25 symbols, so the
//! time on air is always a whole number of microseconds: [`time_on_air_us`] is exact, with no rounding.
//!
//! This module must never guess: a figure it returns is what the formula gives, or saturates at `u64::MAX` for
//! payload lengths no radio can send.

/// A LoRa spreading factor at 125 kHz (EU868 data rates DR5 … DR0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SpreadingFactor {
    /// SF7 (DR5): 5.47 kbit/s.
    Sf7,
    /// SF8 (DR4).
    Sf8,
    /// SF9 (DR3).
    Sf9,
    /// SF10 (DR2).
    Sf10,
    /// SF11 (DR1), with low-data-rate optimisation.
    Sf11,
    /// SF12 (DR0), with low-data-rate optimisation: 250 bit/s.
    Sf12,
}

impl SpreadingFactor {
    /// Every spreading factor, fastest first.
    pub const ALL: [SpreadingFactor; 6] = [
        SpreadingFactor::Sf7,
        SpreadingFactor::Sf8,
        SpreadingFactor::Sf9,
        SpreadingFactor::Sf10,
        SpreadingFactor::Sf11,
        SpreadingFactor::Sf12,
    ];

    /// The spreading factor as a number, 7 to 12.
    pub const fn value(self) -> u8 {
        match self {
            SpreadingFactor::Sf7 => 7,
            SpreadingFactor::Sf8 => 8,
            SpreadingFactor::Sf9 => 9,
            SpreadingFactor::Sf10 => 10,
            SpreadingFactor::Sf11 => 11,
            SpreadingFactor::Sf12 => 12,
        }
    }

    /// The largest payload to send at this spreading factor in EU868: the LoRaWAN application payload limits
    /// (LoRaWAN Regional Parameters, EU863-870 "N"), 222 B at SF7–8, 115 B at SF9, 51 B at SF10–12. A plain LoRa
    /// frame could carry more, but these limits keep a frame's time on air (and so its collision risk and its
    /// duty-cycle cost) within what the network was planned for; use it as the link's MTU.
    pub const fn max_payload(self) -> usize {
        match self {
            SpreadingFactor::Sf7 | SpreadingFactor::Sf8 => 222,
            SpreadingFactor::Sf9 => 115,
            SpreadingFactor::Sf10 | SpreadingFactor::Sf11 | SpreadingFactor::Sf12 => 51,
        }
    }

    /// Whether low-data-rate optimisation is on: at SF11 and SF12, where a 125 kHz symbol exceeds 16 ms.
    pub const fn low_data_rate_optimize(self) -> bool {
        matches!(self, SpreadingFactor::Sf11 | SpreadingFactor::Sf12)
    }

    /// The duration of one symbol in µs: 2^SF / 125 kHz.
    pub const fn symbol_us(self) -> u64 {
        (1u64 << self.value()) * 8
    }
}

/// The number of payload symbols (`payloadSymbNb` in AN1200.13) of a frame of `payload_len` bytes:
/// `8 + max(⌈(8·PL − 4·SF + 28 + 16·CRC − 20·IH) / (4·(SF − 2·DE))⌉ · (CR + 4), 0)` with CRC = 1, IH = 0 (explicit
/// header), CR = 1 (4/5).
pub fn payload_symbols(sf: SpreadingFactor, payload_len: usize) -> u64 {
    let sf_n = u64::from(sf.value());
    let de = u64::from(sf.low_data_rate_optimize());
    let pl = u64::try_from(payload_len).unwrap_or(u64::MAX);
    // 8·PL + 28 + 16 − 4·SF; a negative numerator gives 0 blocks, as the max(…, 0) does.
    let numerator = pl
        .saturating_mul(8)
        .saturating_add(44)
        .saturating_sub(4 * sf_n);
    let denominator = 4 * (sf_n - 2 * de);
    let blocks = numerator.div_ceil(denominator);
    blocks.saturating_mul(5).saturating_add(8)
}

/// The time on air of a LoRa frame of `payload_len` bytes at `sf`, in µs, exactly: (8 + 4.25 + payload symbols) ×
/// 2^SF × 8 µs, computed as (49 + 4 × payload symbols) × 2^SF × 2 µs so that no fraction is ever rounded.
/// Saturates at `u64::MAX` for lengths far beyond any radio's (LoRa frames carry at most 255 bytes).
pub fn time_on_air_us(sf: SpreadingFactor, payload_len: usize) -> u64 {
    payload_symbols(sf, payload_len)
        .saturating_mul(4)
        .saturating_add(49)
        .saturating_mul(2 << sf.value())
}

#[cfg(test)]
mod tests {
    use super::*;
    use SpreadingFactor::*;

    #[test]
    fn known_values() {
        // The well-known figures (Semtech's calculator, The Things Network's airtime calculator), in µs.
        assert_eq!(time_on_air_us(Sf12, 51), 2_465_792); // 2,465.8 ms
        assert_eq!(time_on_air_us(Sf7, 23), 61_696); // 61.7 ms
        assert_eq!(time_on_air_us(Sf12, 23), 1_482_752); // 1,482.8 ms
        assert_eq!(time_on_air_us(Sf7, 255), 399_616); // 399.6 ms
        // An empty LoRaWAN frame (13 bytes of header): 46.3, 82.4, 164.9, 288.8, 577.5, 1,155.1 ms.
        assert_eq!(time_on_air_us(Sf7, 13), 46_336);
        assert_eq!(time_on_air_us(Sf8, 13), 82_432);
        assert_eq!(time_on_air_us(Sf9, 13), 164_864);
        assert_eq!(time_on_air_us(Sf10, 13), 288_768);
        assert_eq!(time_on_air_us(Sf11, 13), 577_536);
        assert_eq!(time_on_air_us(Sf12, 13), 1_155_072);
        // The largest EU868 payloads at SF9 and SF10, and 51 bytes at SF9: 615.4, 616.4, 328.7 ms.
        assert_eq!(time_on_air_us(Sf9, 115), 615_424);
        assert_eq!(time_on_air_us(Sf10, 51), 616_448);
        assert_eq!(time_on_air_us(Sf9, 51), 328_704);
    }

    #[test]
    fn symbols_and_edges() {
        assert_eq!(Sf7.symbol_us(), 1_024);
        assert_eq!(Sf12.symbol_us(), 32_768);
        // A numerator at or below zero still costs the 8 fixed payload symbols.
        assert_eq!(payload_symbols(Sf12, 0), 8);
        assert_eq!(time_on_air_us(Sf12, 0), 663_552); // 20.25 symbols
        // Monotone in the payload length, and never a panic for absurd lengths.
        for sf in SpreadingFactor::ALL {
            for pl in 0..300 {
                assert!(time_on_air_us(sf, pl) <= time_on_air_us(sf, pl + 1));
            }
        }
        assert_eq!(time_on_air_us(Sf12, usize::MAX), u64::MAX);
    }

    #[test]
    fn max_payloads() {
        let limits: [usize; 6] = SpreadingFactor::ALL.map(SpreadingFactor::max_payload);
        assert_eq!(limits, [222, 222, 115, 51, 51, 51]);
    }
}
