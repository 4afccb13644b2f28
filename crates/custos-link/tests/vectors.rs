//! The test vectors of docs/lora.md §8, read from the page itself, so the page and the code cannot drift: the
//! frames two links exchange for a 120-byte message at SF10 when the second fragment is lost, and the numbers the
//! page quotes (time on air, payload limits, largest messages).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
use common::{PAGE, vector};

use custos_link::{
    Addr, DutyCycle, Event, Link, LinkConfig, SpreadingFactor, SubBand, time_on_air_us,
};

#[test]
fn the_pages_vectors() {
    let config = LinkConfig::for_sf(SpreadingFactor::Sf10);
    assert_eq!(config.mtu, 51);
    let (mut at, mut ar, mut bt, mut br) = ([0u8; 256], [0u8; 256], [0u8; 256], [0u8; 256]);
    let mut a = Link::new(config, Addr(0x01), Addr(0x02), &mut at, &mut ar);
    let mut b = Link::new(config, Addr(0x02), Addr(0x01), &mut bt, &mut br);
    let msg: Vec<u8> = (0..120).collect();
    a.send(0, &msg).unwrap();
    let mut out = [0u8; 51];
    let mut frames = Vec::new();
    while let Some(n) = a.poll_transmit(0, &mut out) {
        frames.push(out[..n].to_vec());
    }
    assert_eq!(
        frames,
        [vector("data 0"), vector("data 1"), vector("data 2")]
    );

    // Fragment 1 is lost.
    b.handle_frame(1, &frames[0]).unwrap();
    b.handle_frame(2, &frames[2]).unwrap();
    let n = b.poll_transmit(3, &mut out).unwrap();
    assert_eq!(out[..n], vector("sack 101"));
    a.handle_frame(4, &out[..n]).unwrap();
    let n = a.poll_transmit(5, &mut out).unwrap();
    assert_eq!(out[..n], vector("resend 1"));
    assert_eq!(a.poll_transmit(5, &mut out), None);
    b.handle_frame(6, &out[..n]).unwrap();
    assert_eq!(b.poll_event(), Some(Event::Received));
    assert_eq!(b.received(), Some(&msg[..]));
    let n = b.poll_transmit(7, &mut out).unwrap();
    assert_eq!(out[..n], vector("sack 111"));
    a.handle_frame(8, &out[..n]).unwrap();
    assert_eq!(a.poll_event(), Some(Event::Delivered));

    // The times on air the page gives for them.
    assert_eq!(time_on_air_us(SpreadingFactor::Sf10, 51), 616_448);
    assert_eq!(time_on_air_us(SpreadingFactor::Sf10, 36), 493_568);
    assert_eq!(time_on_air_us(SpreadingFactor::Sf10, 9), 247_808);
}

/// The time-on-air table of §1, in ms with one decimal, as printed.
#[test]
fn the_pages_airtime_table() {
    use SpreadingFactor::*;
    let ms = |sf, pl| {
        let us = time_on_air_us(sf, pl);
        let tenths = (us + 50) / 100;
        let whole = tenths / 10;
        let whole = if whole >= 1000 {
            format!("{},{:03}", whole / 1000, whole % 1000)
        } else {
            whole.to_string()
        };
        format!("{whole}.{}", tenths % 10)
    };
    for pl in [10, 51, 115, 222] {
        let row = PAGE
            .lines()
            .find(|l| l.starts_with(&format!("| {pl} B |")))
            .unwrap_or_else(|| panic!("no row for {pl} B"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        for (i, sf) in [Sf7, Sf9, Sf12].into_iter().enumerate() {
            let cell = cells[2 + i].split(' ').next().unwrap();
            assert_eq!(cell, ms(sf, pl), "{pl} B at {sf:?}");
        }
    }
}

/// The largest messages of §4 and the backoff schedule of §5.
#[test]
fn the_pages_limits_and_schedule() {
    use SpreadingFactor::*;
    for (sf, mtu, frag, max) in [
        (Sf7, 222, 216, "6,912"),
        (Sf9, 115, 109, "3,488"),
        (Sf12, 51, 45, "1,440"),
    ] {
        let c = LinkConfig::for_sf(sf);
        assert_eq!((c.mtu, c.fragment_len()), (mtu, frag));
        let max_len = c.max_message_len();
        assert_eq!(format!("{},{:03}", max_len / 1000, max_len % 1000), max);
        assert!(PAGE.contains(&format!("| {mtu} | {frag} B | {max} B |")));
    }
    for (sf, name) in [(Sf7, "SF7"), (Sf9, "SF9"), (Sf10, "SF10"), (Sf12, "SF12")] {
        let c = LinkConfig::for_sf(sf);
        let s = |us: u64| format!("{:.2}", us as f64 / 1e6);
        let total: u64 = (0..=c.max_retries).map(|r| c.backoff_us(r)).sum();
        let total = format!("{:.1}", total as f64 / 1e6);
        let total = match total.split_once('.') {
            Some((w, f)) if w.len() > 3 => {
                format!("{},{}.{f}", &w[..w.len() - 3], &w[w.len() - 3..])
            }
            _ => total,
        };
        let row = format!(
            "| {name} | {:.3} | {} | {} | {} | {} | {} | {} | {} | {total} |",
            c.ack_timeout_us as f64 / 1e6,
            s(c.backoff_us(0)),
            s(c.backoff_us(1)),
            s(c.backoff_us(2)),
            s(c.backoff_us(3)),
            s(c.backoff_us(4)),
            s(c.backoff_us(5)),
            s(c.backoff_us(6)),
        );
        assert!(PAGE.contains(&row), "docs/lora.md §5 lacks {row}");
        assert_eq!(c.backoff_us(6), c.backoff_us(c.max_retries));
    }
}

/// §2's cost of the per-frame rule: a 300-byte message at SF12 on a 1 % band, from the first frame to `Delivered`
/// over a perfect channel, the sender waiting as its duty cycle tells it (the receiver's answer is on its own
/// budget).
#[test]
fn the_pages_per_frame_cost() {
    let sf = SpreadingFactor::Sf12;
    let config = LinkConfig::for_sf(sf);
    let (mut at, mut ar, mut bt, mut br) = ([0u8; 512], [0u8; 512], [0u8; 512], [0u8; 512]);
    let mut a = Link::new(config, Addr(1), Addr(2), &mut at, &mut ar);
    let mut b = Link::new(config, Addr(2), Addr(1), &mut bt, &mut br);
    let mut duty = DutyCycle::new(SubBand::G1);
    a.send(0, &[0x5a; 300]).unwrap();
    let (mut now, mut frames, mut out) = (0u64, 0, [0u8; 51]);
    while a.poll_event().is_none() {
        now += duty.wait_us(now);
        let n = a.poll_transmit(now, &mut out).unwrap();
        duty.record(now, time_on_air_us(sf, n));
        frames += 1;
        now += time_on_air_us(sf, n);
        b.handle_frame(now, &out[..n]).unwrap();
        if let Some(n) = b.poll_transmit(now, &mut out) {
            now += time_on_air_us(sf, n);
            a.handle_frame(now, &out[..n]).unwrap();
        }
    }
    assert_eq!(frames, 7);
    let minutes = format!("{:.1} minutes", now as f64 / 60e6);
    assert!(
        PAGE.contains(&format!("(seven frames) takes {minutes}")),
        "docs/lora.md §2: {minutes}"
    );
}
