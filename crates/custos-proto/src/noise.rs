//! What the two Noise handshakes (admission, pairing) share: snow fed with the caller's ephemeral key, and the
//! derivation of a handshake's pre-shared key from a printed code.

use alloc::boxed::Box;
use core::cell::Cell;

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver, FallbackResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{Builder, HandshakeState};
use zeroize::Zeroize;

use crate::{Crypto, DeviceId, Error, RustCrypto, Secret};

/// A snow RNG that yields exactly the one ephemeral key the caller passed in.
struct OneEphemeral(Option<[u8; 32]>);

impl Random for OneEphemeral {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        match self.0.take() {
            Some(mut e) if dest.len() == e.len() => {
                dest.copy_from_slice(&e);
                e.zeroize();
                Ok(())
            }
            _ => Err(snow::Error::Rng),
        }
    }
}

impl Drop for OneEphemeral {
    fn drop(&mut self) {
        if let Some(e) = self.0.as_mut() {
            e.zeroize();
        }
    }
}

/// Resolves snow's RNG to the caller's ephemeral key, everything else to snow's RustCrypto backend.
struct Entropy(Cell<Option<[u8; 32]>>);

impl CryptoResolver for Entropy {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(OneEphemeral(self.0.take())))
    }
    fn resolve_dh(&self, _: &DHChoice) -> Option<Box<dyn Dh>> {
        None
    }
    fn resolve_hash(&self, _: &HashChoice) -> Option<Box<dyn Hash>> {
        None
    }
    fn resolve_cipher(&self, _: &CipherChoice) -> Option<Box<dyn Cipher>> {
        None
    }
}

/// A snow builder for `pattern` whose only randomness is `ephemeral`: the state machines stay free of I/O.
pub(crate) fn builder(pattern: &str, ephemeral: Secret) -> Result<Builder<'static>, Error> {
    let params = pattern.parse().map_err(|_| Error::Crypto)?;
    let resolver = FallbackResolver::new(
        Box::new(Entropy(Cell::new(Some(*ephemeral.expose())))),
        Box::new(DefaultResolver),
    );
    Ok(Builder::with_resolver(params, Box::new(resolver)))
}

/// `HKDF-Expand(HKDF-Extract(salt, code), device id, 32)`: a handshake's pre-shared key from a printed code. Each
/// code has its own salt, so a join code and an owner code never give the same key.
pub(crate) fn code_psk(salt: &[u8], device: DeviceId, code: &[u8; 16]) -> Result<Secret, Error> {
    let c = RustCrypto;
    let prk = c.hkdf_extract(salt, code);
    let mut psk = Secret::zero();
    c.hkdf_expand(prk.expose(), &[&device.0], psk.expose_mut())?;
    Ok(psk)
}

/// A finished handshake's secret and transcript hash: `HKDF-Extract(salt = h, ikm = k1 ‖ k2)`, with `k1`, `k2` the raw
/// keys of Noise's `Split()` (wire.md §7). Admission, pairing and node-to-node KK all derive their keys from it.
pub(crate) fn split_secret(hs: &mut HandshakeState) -> Result<(Secret, [u8; 32]), Error> {
    let hash: [u8; 32] = hs
        .get_handshake_hash()
        .try_into()
        .map_err(|_| Error::Handshake)?;
    let (mut k1, mut k2) = hs.dangerously_get_raw_split();
    let mut ikm = [0u8; 64];
    ikm[..32].copy_from_slice(&k1);
    ikm[32..].copy_from_slice(&k2);
    let secret = RustCrypto.hkdf_extract(&hash, &ikm);
    ikm.zeroize();
    k1.zeroize();
    k2.zeroize();
    Ok((secret, hash))
}

/// The body of a handshake message of type `kind` and exact length `len` (type byte included), checked before any
/// cryptography.
pub(crate) fn expect(msg: &[u8], kind: u8, len: usize) -> Result<&[u8], Error> {
    let (&got, body) = msg.split_first().ok_or(Error::Truncated)?;
    if got != kind {
        return Err(Error::UnexpectedMessage {
            expected: kind,
            got,
        });
    }
    match msg.len().cmp(&len) {
        core::cmp::Ordering::Less => Err(Error::Truncated),
        core::cmp::Ordering::Greater => Err(Error::TrailingBytes),
        core::cmp::Ordering::Equal => Ok(body),
    }
}
