//! Device ↔ hub messages: round trips, and a hub or a network that alters, redirects or forges them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use custos_proto::uplink::{
    ACK_LEN, LinkKeys, MAX_SEQ, UPLINK_OVERHEAD, Verdict, WINDOW, is_too_old, open_ack,
    open_uplink, seal_ack, seal_uplink,
};
use custos_proto::{DeviceId, Error, RustCrypto, Secret};
use proptest::prelude::*;

const DEV: DeviceId = DeviceId([2, 0, 0, 0, 0, 0, 0, 9]);

fn keys(b: u8) -> LinkKeys {
    LinkKeys::derive(&RustCrypto, &Secret::from_bytes([b; 32])).unwrap()
}

fn uplink(k: &LinkKeys, dev: DeviceId, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; body.len() + UPLINK_OVERHEAD];
    assert_eq!(
        seal_uplink(&RustCrypto, k, dev, seq, body, &mut out).unwrap(),
        out.len()
    );
    out
}

#[test]
fn overhead_is_within_the_budget() {
    const { assert!(UPLINK_OVERHEAD <= 24) };
    let msg = uplink(&keys(1), DEV, 5, &[0xab; 103]);
    assert_eq!(msg.len(), 103 + 23);
    assert_eq!(
        open_uplink(&RustCrypto, &keys(1), DEV, &msg).unwrap(),
        (5, &[0xab; 103][..])
    );
}

proptest! {
    #[test]
    fn any_change_is_refused(seq in 0..=MAX_SEQ, body in proptest::collection::vec(any::<u8>(), 0..200), at in any::<prop::sample::Index>(), x in 1u8..) {
        let k = keys(1);
        let mut msg = uplink(&k, DEV, seq, &body);
        prop_assert_eq!(open_uplink(&RustCrypto, &k, DEV, &msg).unwrap(), (seq, &body[..]));
        let i = at.index(msg.len());
        msg[i] ^= x;
        prop_assert!(open_uplink(&RustCrypto, &k, DEV, &msg).is_err(), "byte {} changed", i);
    }
}

#[test]
fn messages_are_bound_to_device_key_and_direction() {
    let msg = uplink(&keys(1), DEV, 7, b"record");
    let mut other = DEV;
    other.0[7] ^= 1;
    assert_eq!(
        open_uplink(&RustCrypto, &keys(1), other, &msg),
        Err(Error::Authentication),
        "redirected to another device"
    );
    assert_eq!(
        open_uplink(&RustCrypto, &keys(2), DEV, &msg),
        Err(Error::Authentication),
        "another device's key"
    );
    // An uplink's tag under the downlink key: a replayed uplink cannot pose as an ack.
    let ack = seal_ack(&RustCrypto, &keys(1), DEV, 7, Verdict::Stored).unwrap();
    assert_eq!(
        open_ack(&RustCrypto, &keys(1), DEV, &ack).unwrap(),
        (7, Verdict::Stored)
    );
    let mut forged = ack;
    forged[7] = 1;
    assert_eq!(
        open_ack(&RustCrypto, &keys(1), DEV, &forged),
        Err(Error::Authentication),
        "verdict changed"
    );
    assert!(open_uplink(&RustCrypto, &keys(1), DEV, &ack).is_err());
    assert!(open_ack(&RustCrypto, &keys(1), DEV, &msg[..ACK_LEN]).is_err());
}

#[test]
fn malformed_messages_get_precise_errors() {
    let k = keys(1);
    assert_eq!(
        open_uplink(&RustCrypto, &k, DEV, &[]),
        Err(Error::Truncated)
    );
    assert_eq!(
        open_uplink(&RustCrypto, &k, DEV, &[0x31; 22]),
        Err(Error::Truncated)
    );
    assert_eq!(
        open_uplink(&RustCrypto, &k, DEV, &[0x32; 40]),
        Err(Error::UnexpectedMessage {
            expected: 0x31,
            got: 0x32
        })
    );
    let mut out = [0u8; 64];
    assert!(seal_uplink(&RustCrypto, &k, DEV, MAX_SEQ + 1, b"x", &mut out).is_err());
    assert_eq!(
        seal_uplink(&RustCrypto, &k, DEV, 1, &[0; 50], &mut out),
        Err(Error::BufferTooSmall { needed: 73 })
    );
    assert_eq!(
        open_ack(&RustCrypto, &k, DEV, &[0x32; 10]),
        Err(Error::Truncated)
    );
    assert_eq!(
        open_ack(&RustCrypto, &k, DEV, &[0x32; 30]),
        Err(Error::TrailingBytes)
    );
}

#[test]
fn the_window_refuses_old_sequence_numbers_only() {
    assert!(!is_too_old(0, -1), "the first message is never too old");
    assert!(!is_too_old(5000, 4000), "ahead of the highest");
    assert!(
        !is_too_old(4000 - WINDOW + 1, 4000),
        "just inside the window"
    );
    assert!(is_too_old(4000 - WINDOW, 4000), "just outside the window");
    assert!(is_too_old(0, 4000));
}

#[test]
fn skip_notices_round_trip_and_refuse_any_change() {
    use custos_proto::uplink::{SKIP_LEN, Upward, open_skip, open_upward, seal_skip};
    let k = keys(1);
    let skip = seal_skip(&RustCrypto, &k, DEV, 5, 9).unwrap();
    assert_eq!(skip.len(), SKIP_LEN);
    assert_eq!(open_skip(&RustCrypto, &k, DEV, &skip).unwrap(), (5, 9));
    assert_eq!(
        open_upward(&RustCrypto, &k, DEV, &skip).unwrap(),
        Upward::Skip { from: 5, until: 9 }
    );
    let up = uplink(&k, DEV, 7, b"record");
    assert_eq!(
        open_upward(&RustCrypto, &k, DEV, &up).unwrap(),
        Upward::Uplink {
            seq: 7,
            body: b"record"
        }
    );
    // The whole range of sequence numbers, and a single one.
    let all = seal_skip(&RustCrypto, &k, DEV, 0, MAX_SEQ + 1).unwrap();
    assert_eq!(
        open_skip(&RustCrypto, &k, DEV, &all).unwrap(),
        (0, MAX_SEQ + 1)
    );
    let one = seal_skip(&RustCrypto, &k, DEV, MAX_SEQ, MAX_SEQ + 1).unwrap();
    assert_eq!(
        open_skip(&RustCrypto, &k, DEV, &one).unwrap(),
        (MAX_SEQ, MAX_SEQ + 1)
    );
    for (from, until) in [(5, 5), (6, 5), (0, MAX_SEQ + 2)] {
        assert!(
            seal_skip(&RustCrypto, &k, DEV, from, until).is_err(),
            "{from}..{until}"
        );
    }
    for i in 0..skip.len() {
        let mut bad = skip;
        bad[i] ^= 1;
        assert!(
            open_upward(&RustCrypto, &k, DEV, &bad).is_err(),
            "byte {i} changed"
        );
    }
    let mut other = DEV;
    other.0[0] ^= 1;
    assert_eq!(
        open_skip(&RustCrypto, &k, other, &skip),
        Err(Error::Authentication)
    );
    assert_eq!(
        open_skip(&RustCrypto, &keys(2), DEV, &skip),
        Err(Error::Authentication)
    );
    assert_eq!(
        open_skip(&RustCrypto, &k, DEV, &skip[..20]),
        Err(Error::Truncated)
    );
    let mut long = skip.to_vec();
    long.push(0);
    assert_eq!(
        open_skip(&RustCrypto, &k, DEV, &long),
        Err(Error::TrailingBytes)
    );
    // An ack can never pass for a skip, nor a skip for an uplink.
    let ack = seal_ack(&RustCrypto, &k, DEV, 5, Verdict::Noted).unwrap();
    assert!(open_skip(&RustCrypto, &k, DEV, &ack).is_err());
    assert!(open_uplink(&RustCrypto, &k, DEV, &skip).is_err());
    assert_eq!(
        open_ack(&RustCrypto, &k, DEV, &ack).unwrap(),
        (5, Verdict::Noted)
    );
}

/// The skip notice of docs/wire.md §8, Vector 5.
#[test]
fn skip_vector() {
    use custos_proto::uplink::seal_skip;
    let sdk: [u8; 32] = core::array::from_fn(|i| i as u8 + 1);
    let k = LinkKeys::derive(&RustCrypto, &Secret::from_bytes(sdk)).unwrap();
    let dev = DeviceId([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
    let skip = seal_skip(&RustCrypto, &k, dev, 6, 9).unwrap();
    let ack = seal_ack(&RustCrypto, &k, dev, 6, Verdict::Noted).unwrap();
    assert_eq!(hex::encode(skip), SKIP_HEX);
    assert_eq!(hex::encode(ack), NOTED_HEX);
}
const SKIP_HEX: &str = "330000000000060000000000087b15153d0accf3e00f064df48c0f8ca5";
const NOTED_HEX: &str = "320000000000060336e61438d8c84bda9cd180c5dd4753f9";

#[test]
fn pairing_wait_tokens_are_bound_to_device_key_and_time() {
    use custos_proto::uplink::{open_pairing_wait, seal_pairing_wait};
    let k = keys(1);
    let t = seal_pairing_wait(&RustCrypto, &k, DEV, 1_780_000_000);
    assert_eq!(
        open_pairing_wait(&RustCrypto, &k, DEV, &t).unwrap(),
        1_780_000_000
    );
    for i in 0..t.len() {
        let mut bad = t;
        bad[i] ^= 1;
        assert!(
            open_pairing_wait(&RustCrypto, &k, DEV, &bad).is_err(),
            "byte {i} changed"
        );
    }
    let mut other = DEV;
    other.0[3] ^= 1;
    assert_eq!(
        open_pairing_wait(&RustCrypto, &k, other, &t),
        Err(Error::Authentication)
    );
    assert_eq!(
        open_pairing_wait(&RustCrypto, &keys(2), DEV, &t),
        Err(Error::Authentication)
    );
    // A skip notice or an uplink of the same length is not a token.
    let up = uplink(&k, DEV, 1, &[0; 2]);
    assert_eq!(up.len(), t.len());
    assert!(open_pairing_wait(&RustCrypto, &k, DEV, &up).is_err());
}

/// The pairing-wait token of docs/api.md (SDK and device of Vector 5, time 1 780 000 000).
#[test]
fn pairing_wait_vector() {
    use custos_proto::uplink::seal_pairing_wait;
    let sdk: [u8; 32] = core::array::from_fn(|i| i as u8 + 1);
    let k = LinkKeys::derive(&RustCrypto, &Secret::from_bytes(sdk)).unwrap();
    let dev = DeviceId([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77]);
    let t = seal_pairing_wait(&RustCrypto, &k, dev, 1_780_000_000);
    assert_eq!(hex::encode(t), WAIT_HEX);
}
const WAIT_HEX: &str = "34000000006a18a5004d94baec36d1af9a42a0fe0d2011ce9e";
