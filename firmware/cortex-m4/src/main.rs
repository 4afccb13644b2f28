//! The Custos device core on a Cortex-M4, without a heap: the frontier, sealed records, uplinks.
//!
//! What a device does between two readings, with the real `custos-proto`: hold its frontier (provisioned as the DPK
//! before the epoch starts), move it forward to the time of a reading (dropping every secret of an earlier leaf),
//! derive the leaf's AEAD key, seal the reading into a record (docs/wire.md §4) and wrap the record in an uplink
//! under the server–device key (§8). With the `admission` feature it first joins the hub on the host (§7) and
//! uses the key that handshake yields.
//!
//! Inputs are fixed (Vectors 1, 4 and 5 of docs/wire.md, so the first record and uplink are the documented ones),
//! and every result goes to the host as a line on semihosting stdout; `crates/custos-device/tests/firmware_qemu.rs`
//! computes the same lines on the host and compares. The run ends with `stack_peak` (and `heap_peak` in the
//! admission build) and a semihosting exit, which stops QEMU with the firmware's status. docs/firmware.md.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(feature = "admission")]
mod admission;
mod frontier;
mod host;

use cortex_m_rt::entry;
use cortex_m_semihosting::debug;
use custos_proto::record::OVERHEAD;
use custos_proto::uplink::{LinkKeys, UPLINK_OVERHEAD, seal_uplink};
use custos_proto::{
    DeviceId, Epoch, RustCrypto, Schedule, Secret, Span, Suite, TreeSpec, UnixTime,
};
use panic_semihosting as _;

use crate::frontier::Frontier;
use crate::host::Field::{Hex, Num, Text};
use crate::host::{Failure, Out};

/// Vector 1's device and epoch.
const DEVICE: DeviceId = DeviceId([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
const EPOCH: Epoch = Epoch(1);
/// Vector 1's DPK (the device holds it only until its first reading: the frontier before the epoch is the root).
const DPK: [u8; 32] = hex32(*b"bc4d51d04bc10e3c5eebde9d80e29207443cb18d2f12f7063a1494b739701336");
/// Vector 5's server–device key, for the build without admission (which gets its key from the handshake).
#[cfg(not(feature = "admission"))]
const SDK: [u8; 32] = hex32(*b"0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20");

/// The longest reading.
const MAX_READING: usize = 64;

/// One reading: when, what, and the record nonce and uplink sequence number it goes out with.
struct Reading {
    /// Days after 2026-01-01 and seconds into that day, UTC.
    day: u64,
    second: u64,
    text: &'static [u8],
    nonce: u64,
    seq: u64,
}

/// The first is Vectors 1 and 5 (nonce 1, sequence number 5); after it, as the agent does, the sequence number is
/// the nonce. Each moves the frontier: to the next day, then into the next month.
const READINGS: [Reading; 3] = [
    Reading {
        day: 73, // 2026-03-15
        second: 14 * 3600 + 20 * 60,
        text: br#"{"t":"2026-03-15T14:20:00Z","temp_c":21.5}"#,
        nonce: 1,
        seq: 5,
    },
    Reading {
        day: 74, // 2026-03-16
        second: 8 * 3600,
        text: br#"{"t":"2026-03-16T08:00:00Z","temp_c":19.0}"#,
        nonce: 6,
        seq: 6,
    },
    Reading {
        day: 91, // 2026-04-02
        second: 12 * 3600 + 30,
        text: br#"{"t":"2026-04-02T12:00:30Z","temp_c":23.25}"#,
        nonce: 7,
        seq: 7,
    },
];

/// 64 hex digits to 32 bytes, at compile time.
const fn hex32(digits: [u8; 64]) -> [u8; 32] {
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not a lowercase hex digit"),
        }
    }
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = (nibble(digits[2 * i]) << 4) | nibble(digits[2 * i + 1]);
        i += 1;
    }
    out
}

#[entry]
fn main() -> ! {
    #[cfg(feature = "admission")]
    admission::init_heap();
    let status = match Out::open() {
        Ok(mut out) => match run(&mut out) {
            Ok(()) => debug::EXIT_SUCCESS,
            Err(e) => {
                out.failure(&e);
                debug::EXIT_FAILURE
            }
        },
        Err(_) => debug::EXIT_FAILURE,
    };
    debug::exit(status);
    // Only reached without a debugger to exit to.
    loop {
        cortex_m::asm::wfi();
    }
}

fn run(out: &mut Out) -> Result<(), Failure> {
    let c = RustCrypto;
    let build = if cfg!(feature = "admission") {
        "admission"
    } else {
        "seal"
    };
    out.line("build", &[Text(build)])?;
    let year = Span::new(
        UnixTime::from_date(2026, 1, 1)?,
        UnixTime::from_date(2027, 1, 1)?,
    )?;
    let spec = TreeSpec::new(DEVICE, EPOCH, Schedule::default(), year)?;

    #[cfg(feature = "admission")]
    let sdk = {
        // wire.md Vector 4: the device's static key d1…d1, its ephemeral e1…e1, the code "0123456789abcdef".
        let factory = admission::Factory {
            device: DEVICE,
            static_key: Secret::from_bytes([0xd1; 32]),
            join_code: *b"0123456789abcdef",
        };
        admission::join(out, &factory, Secret::from_bytes([0xe1; 32]))?
    };
    #[cfg(not(feature = "admission"))]
    let sdk = Secret::from_bytes(SDK);
    let link = LinkKeys::derive(&c, &sdk)?;
    drop(sdk);

    let mut frontier = Frontier::provisioned(Secret::from_bytes(DPK));
    for reading in &READINGS {
        let at = UnixTime::new(year.start().secs() + reading.day * 86_400 + reading.second)?;
        frontier.advance(&c, &spec, at)?;
        out.line(
            "frontier",
            &[Num(frontier.held().len()), Hex(&frontier.check(&c))],
        )?;

        let leaf = spec.leaf_at(at)?;
        let holder = spec
            .holder(frontier.held(), spec.leaf_node(leaf))?
            .ok_or(custos_proto::Error::NotDescendant)?;
        let key = spec.leaf_key(&c, holder, leaf, Suite::AES256GCM)?;
        let mut record = [0u8; MAX_READING + OVERHEAD];
        let n = key.seal(&c, reading.nonce.to_be_bytes(), reading.text, &mut record)?;
        out.line("record", &[Hex(&record[..n])])?;

        let mut uplink = [0u8; MAX_READING + OVERHEAD + UPLINK_OVERHEAD];
        let m = seal_uplink(&c, &link, DEVICE, reading.seq, &record[..n], &mut uplink)?;
        out.line("uplink", &[Hex(&uplink[..m])])?;
    }
    drop(frontier);

    #[cfg(feature = "admission")]
    {
        out.line("heap_peak", &[Num(admission::heap_peak())])?;
        out.line("heap_arena", &[Num(admission::ARENA)])?;
    }
    out.line("stack_peak", &[Num(host::stack_peak())])
}
