//! Sealed records: `header ‖ ciphertext ‖ tag`, with the whole header as AEAD associated data.
//!
//! ```text
//! offset len  field
//!      0   1  version (high 4 bits, = 1) | suite (low 4 bits: 1 AES-256-GCM, 2 ChaCha20-Poly1305)
//!      1   8  device id
//!      9   2  DPK epoch, big-endian
//!     11   4  leaf period index, big-endian
//!     15   8  nonce: unique per (device, epoch, leaf, suite); the AEAD nonce is 00 00 00 00 ‖ nonce
//!     23   n  ciphertext
//!   23+n  16  tag
//! ```
//!
//! The header determines the key completely, so a store can index records without being able to read them.
//! Overhead is [`OVERHEAD`] = 39 bytes. Opening verifies before it decrypts: a record with any byte changed is
//! rejected and no plaintext is released.

use crate::codec::Reader;
use crate::crypto::{NONCE_LEN, TAG_LEN};
use crate::tree::{DeviceId, Epoch, NodeSecret, TreeSpec};
use crate::{Crypto, Error, Suite};

/// The record format version this implementation writes and reads.
pub const VERSION: u8 = 1;
/// Header length in bytes.
pub const HEADER_LEN: usize = 23;
/// Bytes a record adds to its plaintext: header and tag.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;

/// The header of a sealed record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordHeader {
    /// The AEAD suite.
    pub suite: Suite,
    /// The device that sealed the record.
    pub device: DeviceId,
    /// The DPK epoch.
    pub epoch: Epoch,
    /// The leaf period index (see [`TreeSpec::leaf_at`]).
    pub leaf: u32,
    /// Unique per (device, epoch, leaf, suite): a counter, or 8 random bytes.
    pub nonce: [u8; 8],
}

impl RecordHeader {
    /// The header's bytes, which are also the AEAD associated data.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = (VERSION << 4) | (self.suite.code() & 0x0f);
        out[1..9].copy_from_slice(&self.device.0);
        out[9..11].copy_from_slice(&self.epoch.0.to_be_bytes());
        out[11..15].copy_from_slice(&self.leaf.to_be_bytes());
        out[15..23].copy_from_slice(&self.nonce);
        out
    }

    /// Reads the header at the front of `record` and checks that a tag follows it.
    pub fn peek(record: &[u8]) -> Result<Self, Error> {
        let mut r = Reader::new(record);
        let first = r.u8()?;
        if first >> 4 != VERSION {
            return Err(Error::UnsupportedVersion(first >> 4));
        }
        let suite = Suite::from_code(first & 0x0f);
        if !suite.is_known() {
            return Err(Error::UnsupportedSuite(suite.code()));
        }
        let header = Self {
            suite,
            device: DeviceId(r.array()?),
            epoch: Epoch(r.u16()?),
            leaf: r.u32()?,
            nonce: r.array()?,
        };
        if r.rest().len() < TAG_LEN {
            return Err(Error::Truncated);
        }
        Ok(header)
    }

    fn aead_nonce(&self) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        n[4..].copy_from_slice(&self.nonce);
        n
    }
}

/// The AEAD key of one leaf period of one device and epoch, expanded and ready.
pub struct LeafKey<C: Crypto> {
    key: C::AeadKey,
    suite: Suite,
    device: DeviceId,
    epoch: Epoch,
    leaf: u32,
}

impl<C: Crypto> core::fmt::Debug for LeafKey<C> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("LeafKey")
            .field("suite", &self.suite)
            .field("device", &self.device)
            .field("epoch", &self.epoch)
            .field("leaf", &self.leaf)
            .finish_non_exhaustive()
    }
}

impl<C: Crypto> LeafKey<C> {
    pub(crate) fn new(
        key: C::AeadKey,
        suite: Suite,
        device: DeviceId,
        epoch: Epoch,
        leaf: u32,
    ) -> Self {
        Self {
            key,
            suite,
            device,
            epoch,
            leaf,
        }
    }

    /// The leaf period this key belongs to.
    pub fn leaf(&self) -> u32 {
        self.leaf
    }

    /// The suite this key is for.
    pub fn suite(&self) -> Suite {
        self.suite
    }

    /// Whether this key is the one for records with `header`.
    pub fn matches(&self, header: &RecordHeader) -> bool {
        header.suite == self.suite
            && header.device == self.device
            && header.epoch == self.epoch
            && header.leaf == self.leaf
    }

    /// Seals `plaintext` into `out` and returns the record's length (`plaintext.len() + OVERHEAD`).
    ///
    /// `nonce` must never repeat under this key.
    pub fn seal(
        &self,
        crypto: &C,
        nonce: [u8; 8],
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Error> {
        let needed = plaintext.len() + OVERHEAD;
        if out.len() < needed {
            return Err(Error::BufferTooSmall { needed });
        }
        let header = RecordHeader {
            suite: self.suite,
            device: self.device,
            epoch: self.epoch,
            leaf: self.leaf,
            nonce,
        };
        let (head, rest) = out.split_at_mut(HEADER_LEN);
        head.copy_from_slice(&header.encode());
        let (body, rest) = rest.split_at_mut(plaintext.len());
        body.copy_from_slice(plaintext);
        let tag = crypto.aead_seal(&self.key, &header.aead_nonce(), head, body)?;
        rest[..TAG_LEN].copy_from_slice(&tag);
        Ok(needed)
    }

    /// Opens `record` in place and returns the plaintext, which lies inside `record`.
    ///
    /// On failure `record` holds no plaintext.
    pub fn open_in_place<'r>(
        &self,
        crypto: &C,
        record: &'r mut [u8],
    ) -> Result<&'r mut [u8], Error> {
        let header = RecordHeader::peek(record)?;
        if !self.matches(&header) {
            return Err(Error::KeyMismatch);
        }
        let (head, rest) = record.split_at_mut(HEADER_LEN);
        let (body, tag) = rest.split_at_mut(rest.len() - TAG_LEN);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().map_err(|_| Error::Truncated)?;
        crypto.aead_open(&self.key, &header.aead_nonce(), head, body, tag)?;
        Ok(body)
    }

    /// Opens `record` into `out` and returns the plaintext length. On failure `out` is zeroed.
    pub fn open(&self, crypto: &C, record: &[u8], out: &mut [u8]) -> Result<usize, Error> {
        let result =
            RecordHeader::peek(record).and_then(|h| self.open_peeked(crypto, &h, record, out));
        if result.is_err() {
            // A caller reusing `out` must not find an earlier record's plaintext next to this failure.
            out.fill(0);
        }
        result
    }

    /// [`LeafKey::open`] for a record whose header was already read by [`RecordHeader::peek`].
    fn open_peeked(
        &self,
        crypto: &C,
        header: &RecordHeader,
        record: &[u8],
        out: &mut [u8],
    ) -> Result<usize, Error> {
        if !self.matches(header) {
            return Err(Error::KeyMismatch);
        }
        let n = record.len() - OVERHEAD;
        let body = out
            .get_mut(..n)
            .ok_or(Error::BufferTooSmall { needed: n })?;
        body.copy_from_slice(&record[HEADER_LEN..HEADER_LEN + n]);
        let tag: &[u8; TAG_LEN] = record[HEADER_LEN + n..]
            .try_into()
            .map_err(|_| Error::Truncated)?;
        crypto.aead_open(
            &self.key,
            &header.aead_nonce(),
            &record[..HEADER_LEN],
            body,
            tag,
        )?;
        Ok(n)
    }
}

/// Opens records of one device and epoch with whatever node secrets are held (a DPK, a grant, a frontier),
/// deriving each leaf key once and keeping the last one, so a run of records from one leaf costs one derivation.
pub struct Opener<'a, C: Crypto> {
    crypto: &'a C,
    spec: &'a TreeSpec,
    held: &'a [NodeSecret],
    cached: Option<LeafKey<C>>,
}

impl<'a, C: Crypto> Opener<'a, C> {
    /// An opener for records of `spec`'s device and epoch, using the secrets in `held`.
    pub fn new(crypto: &'a C, spec: &'a TreeSpec, held: &'a [NodeSecret]) -> Self {
        Self {
            crypto,
            spec,
            held,
            cached: None,
        }
    }

    /// The key for records with `header`, derived if it is not the cached one.
    pub fn key_for(&mut self, header: &RecordHeader) -> Result<&LeafKey<C>, Error> {
        if header.device != self.spec.device() || header.epoch != self.spec.epoch() {
            return Err(Error::KeyMismatch);
        }
        let cached = self.cached.as_ref().is_some_and(|k| k.matches(header));
        if !cached {
            let not_granted = Error::NotGranted { leaf: header.leaf };
            // A leaf outside the epoch (e.g. a relabelled header) is one more leaf no held secret covers.
            let holder = match self
                .spec
                .holder(self.held, self.spec.leaf_node(header.leaf))
            {
                Ok(Some(h)) => h,
                Ok(None) | Err(Error::OutsideEpoch | Error::InvalidNode) => {
                    return Err(not_granted);
                }
                Err(e) => return Err(e),
            };
            self.cached =
                Some(
                    self.spec
                        .leaf_key(self.crypto, holder, header.leaf, header.suite)?,
                );
        }
        self.cached
            .as_ref()
            .ok_or(Error::NotGranted { leaf: header.leaf })
    }

    /// Opens `record` into `out`; returns the header and the plaintext length. On failure `out` is zeroed.
    pub fn open(&mut self, record: &[u8], out: &mut [u8]) -> Result<(RecordHeader, usize), Error> {
        let crypto = self.crypto;
        let result = RecordHeader::peek(record).and_then(|header| {
            let n = self
                .key_for(&header)?
                .open_peeked(crypto, &header, record, out)?;
            Ok((header, n))
        });
        if result.is_err() {
            out.fill(0);
        }
        result
    }

    /// Opens `record` in place; returns the header and the plaintext inside `record`.
    pub fn open_in_place<'r>(
        &mut self,
        record: &'r mut [u8],
    ) -> Result<(RecordHeader, &'r mut [u8]), Error> {
        let header = RecordHeader::peek(record)?;
        let crypto = self.crypto;
        let plain = self.key_for(&header)?.open_in_place(crypto, record)?;
        Ok((header, plain))
    }
}
