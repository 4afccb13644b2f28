//! Arbitrary bytes as a schedule, in text and in binary form: parsing must never panic, every accepted schedule
//! must round-trip through both forms, and node lookups on its tree must never panic.
#![no_main]

use custos_proto::{DeviceId, Epoch, NodeId, Schedule, Span, TreeSpec, UnixTime};
use libfuzzer_sys::fuzz_target;

fn check(s: Schedule, data: &[u8]) {
    assert_eq!(Schedule::parse(&s.to_string()), Ok(s), "text form does not round-trip");
    let mut buf = [0u8; Schedule::MAX_ENCODED];
    let n = s.encode(&mut buf).unwrap();
    assert_eq!(Schedule::decode(&buf[..n]), Ok(s), "binary form does not round-trip");
    // Walk a few nodes named by the input; bad ones must be refused, not crash.
    let span = Span::new(UnixTime::new(0).unwrap(), UnixTime::new(custos_proto::time::MAX).unwrap()).unwrap();
    if let Ok(spec) = TreeSpec::new(DeviceId([0; 8]), Epoch(0), s, span) {
        for chunk in data.chunks_exact(9) {
            let index = u64::from_be_bytes(chunk[1..9].try_into().unwrap());
            let node = NodeId { depth: chunk[0] % (s.depth() + 2), index };
            if let Ok(p) = spec.node_span(node) {
                assert!(p.start() < p.end());
                assert_eq!(spec.node_at(node.depth, p.start()), Ok(node));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(s) = Schedule::parse(text) {
            check(s, data);
        }
    }
    if let Ok(s) = Schedule::decode(data) {
        check(s, data);
    }
});
