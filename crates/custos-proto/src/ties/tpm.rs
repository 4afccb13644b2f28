//! Session keys delivered by TPM duplication, after the original TIES: the CE gives a node that registered its TPM
//! storage parent an import blob of a keyed-hash key instead of the raw seed, so that the node's session key is
//! computed by its TPM.
//!
//! This module only frames and authenticates the messages; the import blob itself (a `TPM2_Import` triple built
//! under the node's P-256 storage parent) is opaque bytes here, built by the CE's vault and imported by the node's.
//!
//! The session key a software node derives (see [`super::SessionKey::derive`]) is
//!
//! ```text
//! PRK = HMAC-SHA256(key = kid ‖ expires, seed)                                   (HKDF-Extract)
//! S   = HMAC-SHA256(PRK, "custos/v1/ties/session" ‖ requester ‖ peers (sorted) ‖ 01)   (HKDF-Expand, 32 bytes)
//! ```
//!
//! so the CE puts `PRK` in the blob as a TPM keyed-hash key and the TPM node computes `S = TPM2_HMAC(PRK, m)` with
//! `m` from [`TpmPackage::hmac_input`]: both nodes end with the same `S`.
//!
//! Layouts (integers big-endian):
//!
//! ```text
//! registration   45 ‖ len (2) ‖ TPM2B_PUBLIC (len) ‖ tag                 A = 45 ‖ node ‖ len ‖ TPM2B_PUBLIC
//! delivery       58 ‖ kid ‖ expires ‖ n (1) ‖ holders (8n) ‖ blob (encrypted) ‖ tag
//!                                                                         A = 58 ‖ recipient ‖ kid ‖ expires ‖ holders
//! grant (KDC)    59 ‖ kid ‖ expires ‖ n (1) ‖ peers (8n) ‖ blob (encrypted) ‖ tag     (same A with 59)
//! ```
//!
//! The registration goes node → CE under `K_n2h`; deliveries and grants go CE → node under `K_h2n`, with the same
//! per-message key as every other TIES message. The holders list of a TPM package has the same meaning as a plain
//! package's, and a package cannot be passed off as the other kind: the type is in `A`.

use zeroize::Zeroize;

use super::{
    DELIVERY, GRANT, Ids, KeyId, LABEL_SESSION, MAX_PEERS, NodeKeys, Request, Seed, SessionKey,
    ids_from, kid_expires, open, remove, seal,
};
use crate::crypto::TAG_LEN;
use crate::{Crypto, DeviceId, Error, Secret};

/// A node registers its TPM storage parent's public area.
pub const TPM_PARENT: u8 = 0x45;
/// A key for a peer, as a TPM import blob.
pub const TPM_DELIVERY: u8 = 0x58;
/// A key for the requester of a KDC request, as a TPM import blob.
pub const TPM_GRANT: u8 = 0x59;

/// The longest `TPM2B_PUBLIC` a node may register (a P-256 storage parent's is about 90 bytes).
pub const MAX_TPM_PUBLIC: usize = 256;
/// The longest import blob a TPM package may carry (one for a P-256 parent is 230 bytes).
pub const MAX_TPM_BLOB: usize = 320;
/// The longest registration message.
pub const MAX_TPM_PARENT_MESSAGE: usize = 1 + 2 + MAX_TPM_PUBLIC + TAG_LEN;
/// The longest TPM delivery or grant.
pub const MAX_TPM_PACKAGE: usize = 1 + 8 + 4 + 1 + 8 * MAX_PEERS + MAX_TPM_BLOB + TAG_LEN;

/// Length of the message a TPM node HMACs under the imported PRK: label, requester, up to `MAX_PEERS` peers, `01`.
const HMAC_INPUT_MAX: usize = LABEL_SESSION.len() + 8 + 8 * MAX_PEERS + 1;

fn len16(n: usize, max: usize, what: &'static str) -> Result<[u8; 2], Error> {
    if n == 0 || n > max {
        return Err(Error::InvalidValue(what));
    }
    // n <= max <= u16::MAX, checked above.
    Ok((n as u16).to_be_bytes())
}

fn check_len(msg: &[u8], need: usize) -> Result<(), Error> {
    match msg.len().cmp(&need) {
        core::cmp::Ordering::Less => Err(Error::Truncated),
        core::cmp::Ordering::Greater => Err(Error::TrailingBytes),
        core::cmp::Ordering::Equal => Ok(()),
    }
}

fn parent_aad(
    me: DeviceId,
    len: [u8; 2],
    public: &[u8],
) -> ([u8; 1 + 8 + 2 + MAX_TPM_PUBLIC], usize) {
    let mut a = [0u8; 1 + 8 + 2 + MAX_TPM_PUBLIC];
    a[0] = TPM_PARENT;
    a[1..9].copy_from_slice(&me.0);
    a[9..11].copy_from_slice(&len);
    let n = 11 + public.len().min(MAX_TPM_PUBLIC);
    a[11..n].copy_from_slice(&public[..n - 11]);
    (a, n)
}

/// A node registers its TPM storage parent (`public`, a marshalled `TPM2B_PUBLIC`) with the CE, authenticated under
/// its node-to-hub key. Writes the message into `out` and returns its length.
pub fn seal_tpm_parent<C: Crypto>(
    c: &C,
    me: DeviceId,
    keys: &NodeKeys,
    public: &[u8],
    out: &mut [u8],
) -> Result<usize, Error> {
    let len = len16(
        public.len(),
        MAX_TPM_PUBLIC,
        "a TPM public area is 1 to 256 bytes",
    )?;
    let total = 1 + 2 + public.len() + TAG_LEN;
    let out = out
        .get_mut(..total)
        .ok_or(Error::BufferTooSmall { needed: total })?;
    let (a, n) = parent_aad(me, len, public);
    let tag = seal(c, &keys.to_hub, &a[..n], &mut [])?;
    out[0] = TPM_PARENT;
    out[1..3].copy_from_slice(&len);
    out[3..3 + public.len()].copy_from_slice(public);
    out[3 + public.len()..].copy_from_slice(&tag);
    Ok(total)
}

/// The CE reads a registration that came from `node` (the transport names it) and returns the public area it
/// carries. Whether that is a P-256 storage parent is the CE's vault's question.
pub fn open_tpm_parent<'m, C: Crypto>(
    c: &C,
    node: DeviceId,
    keys: &NodeKeys,
    msg: &'m [u8],
) -> Result<&'m [u8], Error> {
    let got = *msg.first().ok_or(Error::Truncated)?;
    if got != TPM_PARENT {
        return Err(Error::UnexpectedMessage {
            expected: TPM_PARENT,
            got,
        });
    }
    let len_bytes: [u8; 2] = msg
        .get(1..3)
        .ok_or(Error::Truncated)?
        .try_into()
        .map_err(|_| Error::Truncated)?;
    let len = usize::from(u16::from_be_bytes(len_bytes));
    len16(len, MAX_TPM_PUBLIC, "a TPM public area is 1 to 256 bytes")?;
    check_len(msg, 1 + 2 + len + TAG_LEN)?;
    let public = &msg[3..3 + len];
    let (a, n) = parent_aad(node, len_bytes, public);
    open(c, &keys.to_hub, &a[..n], &mut [], &msg[3 + len..])?;
    Ok(public)
}

impl Request {
    /// The keyed-hash key the CE puts in a TPM import blob for this request's key: `HKDF-Extract(kid ‖ expires,
    /// seed)`. Its holder computes the session key with one HMAC (see the module documentation).
    pub fn tpm_prk<C: Crypto>(&self, c: &C, seed: &Seed) -> Secret {
        let mut salt = [0u8; 12];
        salt[..8].copy_from_slice(&self.kid);
        salt[8..].copy_from_slice(&self.expires.to_be_bytes());
        c.hkdf_extract(&salt, &seed.0)
    }

    /// The CE wraps an import `blob` of [`Request::tpm_prk`] for `recipient` (a peer: a TPM delivery; the requester
    /// of a KDC request: a TPM grant) under the recipient's keys. Writes the message into `out`, returns its length.
    pub fn package_tpm<C: Crypto>(
        &self,
        c: &C,
        recipient: DeviceId,
        keys: &NodeKeys,
        blob: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Error> {
        // The holders and the checks are a plain package's: build one's header and reuse its decisions.
        let (kind, holders) = self.holders_for(recipient)?;
        let kind = if kind == GRANT {
            TPM_GRANT
        } else {
            TPM_DELIVERY
        };
        if blob.is_empty() || blob.len() > MAX_TPM_BLOB {
            return Err(Error::InvalidValue("a TPM import blob is 1 to 320 bytes"));
        }
        let n = holders.as_slice().len();
        let head = 1 + 8 + 4 + 1 + 8 * n;
        let total = head + blob.len() + TAG_LEN;
        let out = out
            .get_mut(..total)
            .ok_or(Error::BufferTooSmall { needed: total })?;
        let aad = super::package_aad(kind, recipient, &self.kid, self.expires, &holders)?;
        out[0] = kind;
        out[1..9].copy_from_slice(&self.kid);
        out[9..13].copy_from_slice(&self.expires.to_be_bytes());
        // At most 1 + MAX_PEERS holders: `holders_for` built them with `Ids::push`.
        out[13] = n as u8;
        for (slot, d) in out[14..head].chunks_exact_mut(8).zip(holders.as_slice()) {
            slot.copy_from_slice(&d.0);
        }
        let (body, tag) = out[head..].split_at_mut(blob.len());
        body.copy_from_slice(blob);
        let t = seal(c, &keys.to_node, aad.bytes(), body)?;
        tag.copy_from_slice(&t);
        Ok(total)
    }
}

/// A TPM delivery or grant a node opened: what its key is bound to, and the import blob its TPM must take.
#[derive(Clone)]
pub struct TpmPackage<'m> {
    kid: KeyId,
    expires: u32,
    requester: DeviceId,
    /// The other members, sorted.
    peers: Ids,
    blob: &'m [u8],
}

impl core::fmt::Debug for TpmPackage<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TpmPackage")
            .field("requester", &self.requester)
            .field("peers", &self.peers)
            .field("blob", &self.blob.len())
            .finish_non_exhaustive()
    }
}

impl<'m> TpmPackage<'m> {
    /// The import blob (duplicate ‖ seed ‖ inner integrity as the CE's vault framed it), decrypted.
    pub fn blob(&self) -> &'m [u8] {
        self.blob
    }

    /// The key's id.
    pub fn kid(&self) -> KeyId {
        self.kid
    }

    /// When the key dies, Unix seconds.
    pub fn expires(&self) -> u32 {
        self.expires
    }

    /// The node that asked for the key.
    pub fn requester(&self) -> DeviceId {
        self.requester
    }

    /// The message the node's TPM must HMAC under the imported key to give the session key:
    /// `"custos/v1/ties/session" ‖ requester ‖ peers (sorted) ‖ 01`. Returns the buffer and its length.
    pub fn hmac_input(&self) -> ([u8; HMAC_INPUT_MAX], usize) {
        let mut m = [0u8; HMAC_INPUT_MAX];
        let mut n = LABEL_SESSION.len();
        m[..n].copy_from_slice(LABEL_SESSION);
        m[n..n + 8].copy_from_slice(&self.requester.0);
        n += 8;
        // `peers` holds at most MAX_PEERS ids: open_tpm_package built it from a checked holders list.
        for d in self.peers.as_slice().iter().take(MAX_PEERS) {
            m[n..n + 8].copy_from_slice(&d.0);
            n += 8;
        }
        m[n] = 1;
        (m, n + 1)
    }

    /// The session key, from the 32 bytes the TPM's HMAC gave.
    pub fn into_session_key(self, s: [u8; 32]) -> SessionKey {
        SessionKey {
            kid: self.kid,
            expires: self.expires,
            requester: self.requester,
            peers: self.peers,
            secret: Secret::from_bytes(s),
        }
    }
}

/// A node opens a TPM delivery (or the TPM grant of its own KDC request) from the CE in place: checks the envelope,
/// the recipient and the expiry and returns the decrypted import blob with what the key is bound to. `now` is the
/// node's clock; an expired package is refused. As with [`super::open_package`] the caller must refuse a
/// `(requester, kid)` it already holds.
pub fn open_tpm_package<'m, C: Crypto>(
    c: &C,
    me: DeviceId,
    keys: &NodeKeys,
    msg: &'m mut [u8],
    now: u64,
) -> Result<TpmPackage<'m>, Error> {
    let kind = *msg.first().ok_or(Error::Truncated)?;
    if kind != TPM_DELIVERY && kind != TPM_GRANT {
        return Err(Error::UnexpectedMessage {
            expected: TPM_DELIVERY,
            got: kind,
        });
    }
    if msg.len() < 1 + 12 + 8 + 2 + 1 + TAG_LEN {
        return Err(Error::Truncated);
    }
    let (kid, expires) = kid_expires(&msg[1..13]);
    let count = usize::from(msg[13]);
    if count == 0 || count > MAX_PEERS {
        return Err(Error::InvalidValue("a package names 1 to 8 holders"));
    }
    let at = 14 + 8 * count;
    if msg.len() < at + 1 + TAG_LEN {
        return Err(Error::Truncated);
    }
    let len = msg.len() - at - TAG_LEN;
    if len > MAX_TPM_BLOB {
        return Err(Error::InvalidValue("a TPM import blob is 1 to 320 bytes"));
    }
    let holders = ids_from(&msg[14..at])?;
    if holders.contains(me) {
        return Err(Error::InvalidValue(
            "a package names its recipient among the holders",
        ));
    }
    let aad = super::package_aad(kind, me, &kid, expires, &holders)?;
    let (body, tag) = msg[at..].split_at_mut(len);
    if let Err(e) = open(c, &keys.to_node, aad.bytes(), body, tag) {
        body.zeroize();
        return Err(e);
    }
    if u64::from(expires) <= now {
        body.zeroize();
        return Err(Error::Expired);
    }
    let (requester, peers) = if kind == TPM_GRANT {
        let mut all = holders;
        all.push(me)?;
        (me, remove(&all, me))
    } else {
        let requester = holders.as_slice()[0];
        let mut all = holders;
        all.push(me)?;
        (requester, remove(&all, requester))
    };
    Ok(TpmPackage {
        kid,
        expires,
        requester,
        peers: peers.sorted(),
        blob: body,
    })
}

// A plain package's kinds, named so that the TPM ones are never confused with them.
const _: () = assert!(DELIVERY != TPM_DELIVERY && GRANT != TPM_GRANT);

#[cfg(test)]
mod tests {
    use super::super::{KDC_DIRECT, KTC_DIRECT, open_package};
    use super::*;
    use crate::RustCrypto;

    const N1: DeviceId = DeviceId([1; 8]);
    const N2: DeviceId = DeviceId([2; 8]);
    const N3: DeviceId = DeviceId([3; 8]);
    const NOW: u64 = 1_800_000_000;
    const EXPIRES: u32 = 1_800_003_600;

    fn keys(b: u8) -> NodeKeys {
        NodeKeys::derive(&RustCrypto, &Secret::from_bytes([b; 32])).unwrap()
    }

    /// What the node's TPM does with the imported PRK, done in software: the TPM test in custos-device does it
    /// with TPM2_HMAC on a real (software) TPM.
    fn tpm_hmac(prk: &Secret, p: &TpmPackage<'_>) -> [u8; 32] {
        let (m, n) = p.hmac_input();
        RustCrypto.hmac_sha256(prk.expose(), &[&m[..n]])
    }

    #[test]
    fn a_tpm_node_and_a_software_node_end_with_the_same_key() {
        let c = RustCrypto;
        let seed = Seed::from_bytes([9; 16]);
        for (kind, tpm_node) in [(KTC_DIRECT, N2), (KDC_DIRECT, N1), (KDC_DIRECT, N3)] {
            let req = Request::new(kind, N1, &[N3, N2], [7; 8], EXPIRES).unwrap();
            let prk = req.tpm_prk(&c, &seed);
            // The CE would put `prk` in a TPM import blob; here the blob is its bytes, which the envelope carries
            // opaquely.
            let mut out = [0u8; MAX_TPM_PACKAGE];
            let n = req
                .package_tpm(&c, tpm_node, &keys(tpm_node.0[0]), &[0xb1; 230], &mut out)
                .unwrap();
            let expected_kind = if tpm_node == N1 {
                TPM_GRANT
            } else {
                TPM_DELIVERY
            };
            assert_eq!(out[0], expected_kind);
            assert_eq!(n, 1 + 8 + 4 + 1 + 8 * 2 + 230 + TAG_LEN);
            let p =
                open_tpm_package(&c, tpm_node, &keys(tpm_node.0[0]), &mut out[..n], NOW).unwrap();
            assert_eq!(p.blob(), &[0xb1; 230][..]);
            assert_eq!((p.kid(), p.expires(), p.requester()), ([7; 8], EXPIRES, N1));
            let s = tpm_hmac(&prk, &p);
            let k_tpm = p.into_session_key(s);
            // Every other member opens a plain package (or, as KTC requester, derives it) and gets the same key.
            for other in [N1, N2, N3] {
                if other == tpm_node || (other == N1 && kind == KTC_DIRECT) {
                    continue;
                }
                let d = req.package(&c, other, &keys(other.0[0]), &seed).unwrap();
                let k = open_package(&c, other, &keys(other.0[0]), d.as_bytes(), NOW).unwrap();
                assert_eq!(k.secret, k_tpm.secret, "{kind:x} {other:?}");
                assert_eq!(k.peers().len(), 2);
            }
            if kind == KTC_DIRECT {
                assert_eq!(req.session_key(&c, &seed).unwrap().secret, k_tpm.secret);
            }
            assert_eq!(k_tpm.peers().len(), 2);
        }
    }

    fn delivery() -> ([u8; MAX_TPM_PACKAGE], usize) {
        let req = Request::new(KTC_DIRECT, N1, &[N2, N3], [7; 8], EXPIRES).unwrap();
        let mut out = [0u8; MAX_TPM_PACKAGE];
        let n = req
            .package_tpm(&RustCrypto, N2, &keys(2), &[0xb1; 230], &mut out)
            .unwrap();
        (out, n)
    }

    #[test]
    fn every_altered_byte_of_a_tpm_package_is_refused_and_releases_no_blob() {
        let (out, n) = delivery();
        for i in 0..n {
            let mut bad = out;
            bad[i] ^= 1;
            assert!(
                open_tpm_package(&RustCrypto, N2, &keys(2), &mut bad[..n], NOW).is_err(),
                "byte {i}"
            );
        }
        // Every truncation and an extension.
        for len in 0..n {
            let mut bad = out;
            assert!(open_tpm_package(&RustCrypto, N2, &keys(2), &mut bad[..len], NOW).is_err());
        }
        let mut longer = [0u8; MAX_TPM_PACKAGE + 1];
        longer[..n].copy_from_slice(&out[..n]);
        assert!(open_tpm_package(&RustCrypto, N2, &keys(2), &mut longer[..n + 1], NOW).is_err());
    }

    #[test]
    fn a_tpm_package_is_for_its_recipient_only_and_not_after_its_expiry() {
        let (out, n) = delivery();
        // Another node, even holding N2's keys: the recipient is in A.
        let mut m = out;
        assert!(open_tpm_package(&RustCrypto, N3, &keys(2), &mut m[..n], NOW).is_err());
        let mut m = out;
        assert!(open_tpm_package(&RustCrypto, N3, &keys(3), &mut m[..n], NOW).is_err());
        // Replayed late (Denning–Sacco).
        let mut m = out;
        assert_eq!(
            open_tpm_package(&RustCrypto, N2, &keys(2), &mut m[..n], u64::from(EXPIRES))
                .unwrap_err(),
            Error::Expired
        );
        // A plain package's opener does not take it, and a TPM delivery relabelled as a plain one fails.
        assert!(open_package(&RustCrypto, N2, &keys(2), &out[..n], NOW).is_err());
        let mut m = out;
        m[0] = DELIVERY;
        assert!(open_tpm_package(&RustCrypto, N2, &keys(2), &mut m[..n], NOW).is_err());
        let mut m = out;
        m[0] = TPM_GRANT;
        assert!(open_tpm_package(&RustCrypto, N2, &keys(2), &mut m[..n], NOW).is_err());
        // The CE refuses to build one for a non-member or a KTC requester, and an oversized or empty blob.
        let req = Request::new(KTC_DIRECT, N1, &[N2, N3], [7; 8], EXPIRES).unwrap();
        let mut o = [0u8; MAX_TPM_PACKAGE];
        assert!(
            req.package_tpm(&RustCrypto, N1, &keys(1), &[1; 230], &mut o)
                .is_err()
        );
        assert!(
            req.package_tpm(&RustCrypto, DeviceId([4; 8]), &keys(4), &[1; 230], &mut o)
                .is_err()
        );
        assert!(
            req.package_tpm(&RustCrypto, N2, &keys(2), &[1; MAX_TPM_BLOB + 1], &mut o)
                .is_err()
        );
        assert!(
            req.package_tpm(&RustCrypto, N2, &keys(2), &[], &mut o)
                .is_err()
        );
        assert!(
            req.package_tpm(&RustCrypto, N2, &keys(2), &[1; 230], &mut o[..100])
                .is_err()
        );
    }

    #[test]
    fn a_registration_is_bound_to_its_node_and_its_bytes() {
        let c = RustCrypto;
        let public = [0x5a; 90];
        let mut out = [0u8; MAX_TPM_PARENT_MESSAGE];
        let n = seal_tpm_parent(&c, N1, &keys(1), &public, &mut out).unwrap();
        assert_eq!(n, 1 + 2 + 90 + TAG_LEN);
        assert_eq!(
            open_tpm_parent(&c, N1, &keys(1), &out[..n]).unwrap(),
            &public[..]
        );
        // Another node's name, or its keys.
        assert!(open_tpm_parent(&c, N2, &keys(1), &out[..n]).is_err());
        assert!(open_tpm_parent(&c, N1, &keys(2), &out[..n]).is_err());
        for i in 0..n {
            let mut bad = out;
            bad[i] ^= 1;
            assert!(
                open_tpm_parent(&c, N1, &keys(1), &bad[..n]).is_err(),
                "byte {i}"
            );
        }
        for len in 0..n {
            assert!(open_tpm_parent(&c, N1, &keys(1), &out[..len]).is_err());
        }
        assert!(open_tpm_parent(&c, N1, &keys(1), &out[..n + 1]).is_err());
        // Not under the hub-to-node key: a node cannot be made to accept its own registration as anything.
        assert!(seal_tpm_parent(&c, N1, &keys(1), &[], &mut out).is_err());
        assert!(
            seal_tpm_parent(&c, N1, &keys(1), &[1; MAX_TPM_PUBLIC + 1], &mut [0; 400]).is_err()
        );
    }

    proptest::proptest! {
        #[test]
        fn the_tpm_decoders_never_panic(mut bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = open_tpm_parent(&RustCrypto, N1, &keys(1), &bytes);
            if let Some(b) = bytes.first_mut() { *b = TPM_DELIVERY; }
            let _ = open_tpm_package(&RustCrypto, N2, &keys(2), &mut bytes, NOW);
        }
    }
}
