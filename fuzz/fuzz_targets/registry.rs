//! Arbitrary bytes into the identity registry's readers (docs/registry.md §2–§5): OpenPGP certificates and keyrings
//! (armoured or binary) and the registry's check of them, signed statements, log entries and policy descriptors.
//! No reader panics; a statement that verifies under the fixed key reads back the same without the check; a
//! certificate that passes the check passes it again unchanged (the check is idempotent) and keeps its fingerprint.
#![no_main]

use std::sync::OnceLock;

use custos_registry::cert::{self, Ed25519Key};
use custos_registry::registry::Entry;
use custos_registry::statement::Statement;
use custos_registry::Policy;
use libfuzzer_sys::fuzz_target;

fn key() -> &'static Ed25519Key {
    static KEY: OnceLock<Ed25519Key> = OnceLock::new();
    KEY.get_or_init(|| Ed25519Key::from_seed(&[0; 32], 1_780_000_000).unwrap())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(certs) = cert::parse_many(data) {
        for c in certs.into_iter().take(4) {
            if let Ok(checked) = cert::check(c) {
                let again = cert::check(checked.cert.clone()).expect("a checked certificate checks again");
                assert_eq!(again.fingerprint, checked.fingerprint);
                assert_eq!(again.user_ids, checked.user_ids);
                let _ = cert::to_armored(&checked.cert);
            }
        }
    }
    if let Ok(s) = Statement::verify(data, &key().ed25519_public()) {
        assert_eq!(Statement::read_unverified(data).expect("a verified statement reads"), s);
    }
    let _ = Statement::read_unverified(data);
    let _ = Entry::decode(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Policy::parse(text);
    }
});
