//! The third mode, beyond TIES: the CE only vouches for the nodes' static keys (pinned at admission, published in
//! the signed device list) and the two nodes run Noise KK between themselves, so the CE never sees the session key.
//!
//! ```text
//! Noise_KK_25519_AESGCM_SHA256, prologue "custos/v1/ties/kk" ‖ initiator id ‖ responder id
//! -> e, es, ss     Init   46 ‖ e (32) ‖ ENC(expires, 4 bytes) (4 + 16)     53 bytes
//! <- e, ee, se     Reply  47 ‖ e (32) ‖ ENC(empty) (16)                    49 bytes
//! S   = HKDF-Extract(salt = h, ikm = k1 ‖ k2)      (as the admission's SDK, wire.md §7)
//! kid = h[..8]
//! ```
//!
//! The static keys are the nodes' admission keys, which each learns from the hub's signed device list. Init proves
//! the initiator's static key to the responder (its payload is under a key mixed with `ss`), Reply proves the
//! responder's; the initiator then sends a key confirmation (`4c`) so that the responder knows the initiator is live
//! and not a replay of Init. The resulting [`SessionKey`] has the initiator as requester.

use alloc::vec::Vec;

use snow::HandshakeState;

use super::{KeyId, MAX_LIFETIME, SessionKey};
use crate::noise::expect;
use crate::{DeviceId, Error, Secret};

/// The Noise protocol name.
pub const PATTERN: &str = "Noise_KK_25519_AESGCM_SHA256";
/// Message type of Init.
pub const INIT: u8 = 0x46;
/// Message type of Reply.
pub const REPLY: u8 = 0x47;
/// Length of Init.
pub const INIT_LEN: usize = 1 + 32 + 4 + 16;
/// Length of Reply.
pub const REPLY_LEN: usize = 1 + 32 + 16;

fn prologue(initiator: DeviceId, responder: DeviceId) -> [u8; 17 + 16] {
    let mut p = [0u8; 33];
    p[..17].copy_from_slice(b"custos/v1/ties/kk");
    p[17..25].copy_from_slice(&initiator.0);
    p[25..].copy_from_slice(&responder.0);
    p
}

fn build(
    me: &Secret,
    peer_static: &[u8; 32],
    ephemeral: Secret,
    prologue: &[u8],
    initiator: bool,
) -> Result<HandshakeState, Error> {
    let b = crate::noise::builder(PATTERN, ephemeral)?
        .prologue(prologue)
        .and_then(|b| b.local_private_key(me.expose()))
        .and_then(|b| b.remote_public_key(peer_static))
        .map_err(|_| Error::Crypto)?;
    if initiator {
        b.build_initiator()
    } else {
        b.build_responder()
    }
    .map_err(|_| Error::Crypto)
}

fn finish(hs: &mut HandshakeState) -> Result<(Secret, KeyId), Error> {
    let (s, h) = crate::noise::split_secret(hs)?;
    let mut kid = [0; 8];
    kid.copy_from_slice(&h[..8]);
    Ok((s, kid))
}

/// The initiator has sent Init and waits for Reply.
pub struct Initiator {
    hs: HandshakeState,
    me: DeviceId,
    peer: DeviceId,
    expires: u32,
}

impl core::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("kk::Initiator")
            .field("me", &self.me)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Starts a handshake with `peer`, whose static key the caller took from the hub's signed device list.
    pub fn start(
        me: DeviceId,
        my_static: &Secret,
        peer: DeviceId,
        peer_static: &[u8; 32],
        ephemeral: Secret,
        expires: u32,
    ) -> Result<(Self, Vec<u8>), Error> {
        let mut hs = build(my_static, peer_static, ephemeral, &prologue(me, peer), true)?;
        let mut out = alloc::vec![0u8; INIT_LEN];
        out[0] = INIT;
        let n = hs
            .write_message(&expires.to_be_bytes(), &mut out[1..])
            .map_err(|_| Error::Handshake)?;
        if n + 1 != INIT_LEN {
            return Err(Error::Crypto);
        }
        Ok((
            Self {
                hs,
                me,
                peer,
                expires,
            },
            out,
        ))
    }

    /// Reads Reply: the peer proved its static key; the session key is ready (send a confirmation next).
    pub fn finish(mut self, msg: &[u8]) -> Result<SessionKey, Error> {
        let body = expect(msg, REPLY, REPLY_LEN)?;
        let mut payload = [0u8; REPLY_LEN];
        let n = self
            .hs
            .read_message(body, &mut payload)
            .map_err(|_| Error::Handshake)?;
        if n != 0 {
            return Err(Error::Handshake);
        }
        let (s, kid) = finish(&mut self.hs)?;
        Ok(SessionKey::from_secret(
            kid,
            self.expires,
            self.me,
            self.peer,
            s,
        ))
    }
}

/// The responder reads Init from `from` (whose static key it took from the signed device list) and answers with
/// Reply. `now` is its clock: an expired or too long-lived key is refused.
pub fn respond(
    me: DeviceId,
    my_static: &Secret,
    from: DeviceId,
    from_static: &[u8; 32],
    ephemeral: Secret,
    msg: &[u8],
    now: u64,
) -> Result<(SessionKey, Vec<u8>), Error> {
    let body = expect(msg, INIT, INIT_LEN)?;
    let mut hs = build(
        my_static,
        from_static,
        ephemeral,
        &prologue(from, me),
        false,
    )?;
    let mut payload = [0u8; INIT_LEN];
    let n = hs
        .read_message(body, &mut payload)
        .map_err(|_| Error::Handshake)?;
    if n != 4 {
        return Err(Error::Handshake);
    }
    let expires = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    if u64::from(expires) <= now {
        return Err(Error::Expired);
    }
    if u64::from(expires) > now + u64::from(MAX_LIFETIME) {
        return Err(Error::InvalidValue(
            "a node-to-node key may live at most 7 days",
        ));
    }
    let mut out = alloc::vec![0u8; REPLY_LEN];
    out[0] = REPLY;
    let n = hs
        .write_message(&[], &mut out[1..])
        .map_err(|_| Error::Handshake)?;
    if n + 1 != REPLY_LEN {
        return Err(Error::Crypto);
    }
    let (s, kid) = finish(&mut hs)?;
    Ok((SessionKey::from_secret(kid, expires, from, me, s), out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Crypto, RustCrypto};

    const N1: DeviceId = DeviceId([1; 8]);
    const N2: DeviceId = DeviceId([2; 8]);
    const NOW: u64 = 1_800_000_000;

    fn pair(b: u8) -> (Secret, [u8; 32]) {
        let s = Secret::from_bytes([b; 32]);
        let p = RustCrypto.x25519_public(&s);
        (s, p)
    }

    #[test]
    fn both_nodes_get_the_same_key_and_confirm_it() {
        let c = RustCrypto;
        let (s1, p1) = pair(0x11);
        let (s2, p2) = pair(0x22);
        let (init, m1) = Initiator::start(
            N1,
            &s1,
            N2,
            &p2,
            Secret::from_bytes([0xe1; 32]),
            1_800_003_600,
        )
        .unwrap();
        assert_eq!(m1.len(), INIT_LEN);
        let (k2, m2) = respond(N2, &s2, N1, &p1, Secret::from_bytes([0xe2; 32]), &m1, NOW).unwrap();
        let k1 = init.finish(&m2).unwrap();
        assert_eq!(k1.kid(), k2.kid());
        let mut l1 = k1.link(N1).unwrap();
        let mut l2 = k2.link(N2).unwrap();
        let c1 = l1.confirm_to(&c, N2, NOW).unwrap();
        let c2 = l2.accept_confirmation(&c, N1, &c1, NOW).unwrap().unwrap();
        l1.accept_confirmation(&c, N2, &c2, NOW).unwrap();
        let mut buf = [0u8; 40];
        let n = l2.seal(&c, b"hi", &mut buf, NOW).unwrap();
        assert_eq!(l1.open(&c, N2, &mut buf[..n], NOW).unwrap(), b"hi");
    }

    #[test]
    fn a_node_without_the_vouched_key_cannot_take_part() {
        let (s1, p1) = pair(0x11);
        let (s2, p2) = pair(0x22);
        let (_, p3) = pair(0x33);
        // The responder expects N1's vouched key but Init comes from a node with another key.
        let (s3, _) = pair(0x33);
        let (_, m1) = Initiator::start(
            N1,
            &s3,
            N2,
            &p2,
            Secret::from_bytes([0xe1; 32]),
            1_800_003_600,
        )
        .unwrap();
        assert_eq!(
            respond(N2, &s2, N1, &p1, Secret::from_bytes([0xe2; 32]), &m1, NOW).unwrap_err(),
            Error::Handshake
        );
        // The initiator expects N2's key; someone else answers.
        let (init, m1) = Initiator::start(
            N1,
            &s1,
            N2,
            &p3,
            Secret::from_bytes([0xe1; 32]),
            1_800_003_600,
        )
        .unwrap();
        assert!(respond(N2, &s2, N1, &p1, Secret::from_bytes([0xe2; 32]), &m1, NOW).is_err());
        let _ = init;
        // Swapped roles in the prologue: Init from N1 read as if from N2 to N1.
        let (_, m1) = Initiator::start(
            N1,
            &s1,
            N2,
            &p2,
            Secret::from_bytes([0xe1; 32]),
            1_800_003_600,
        )
        .unwrap();
        assert!(respond(N1, &s2, N2, &p1, Secret::from_bytes([0xe2; 32]), &m1, NOW).is_err());
        // Expired.
        let (_, m1) =
            Initiator::start(N1, &s1, N2, &p2, Secret::from_bytes([0xe1; 32]), 1_000).unwrap();
        assert_eq!(
            respond(N2, &s2, N1, &p1, Secret::from_bytes([0xe2; 32]), &m1, NOW).unwrap_err(),
            Error::Expired
        );
    }
}
