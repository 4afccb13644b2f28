//! The Custos core: everything that must be the same on a microcontroller, in a browser and in the cloud.
//!
//! - [`crypto`]: the [`Crypto`] backend trait and its RustCrypto implementation ([`RustCrypto`], feature
//!   `rustcrypto`, on by default).
//! - [`schedule`]: nesting key schedules (calendar stages in UTC and fixed-length stages).
//! - [`tree`]: the key tree of one data protection key (DPK): DPK → stage secrets → leaf secret → AEAD key.
//! - [`cover`]: the fewest tree nodes that tile a time range exactly, and the forward-secure frontier.
//! - [`record`]: sealed records over caller-owned buffers.
//! - [`uplink`]: device ↔ hub messages, authenticated with the server–device key, with sequence numbers.
//! - [`admission`]: the device's join handshake with the hub, keyed by its one-time join code (feature
//!   `admission`, on by default; it needs a heap).
//! - [`cose`]: signed statements (COSE_Sign1, EdDSA) such as the hub's authorized-device list (feature `cose`,
//!   on by default; it needs a heap).
//! - [`translog`]: the transparency log core: RFC 9162 Merkle tree hashing, inclusion and consistency proofs
//!   (verified without a heap), and C2SP signed checkpoints (feature `translog`, on by default; the in-memory
//!   tree and signing to a `String` need `alloc`).
//!
//! ```
//! use custos_proto::{DeviceId, Epoch, MasterSecret, Opener, RustCrypto, Schedule, Secret, Span, Suite, TreeSpec, UnixTime};
//!
//! # fn main() -> Result<(), custos_proto::Error> {
//! let c = RustCrypto;
//! // The keeper: a master secret and a device's tree for 2026 under month/week/day.
//! let master = MasterSecret::new(Secret::from_bytes([7; 32])); // 32 random bytes in real use
//! let year = Span::new(UnixTime::from_date(2026, 1, 1)?, UnixTime::from_date(2027, 1, 1)?)?;
//! let tree = TreeSpec::new(DeviceId([0, 1, 2, 3, 4, 5, 6, 7]), Epoch(1), Schedule::default(), year)?;
//! let dpk = tree.root(&c, &master)?;
//!
//! // The device seals a reading of 2026-03-09.
//! let t = UnixTime::from_date(2026, 3, 9)?;
//! let key = tree.leaf_key(&c, &dpk, tree.leaf_at(t)?, Suite::AES256GCM)?;
//! let mut record = [0u8; 4 + custos_proto::record::OVERHEAD];
//! key.seal(&c, [0, 0, 0, 0, 0, 0, 0, 1], b"21.5", &mut record)?;
//!
//! // An application granted week 2 of March (one node) opens it.
//! let week2 = Span::new(UnixTime::from_date(2026, 3, 8)?, UnixTime::from_date(2026, 3, 15)?)?;
//! let grant: Vec<_> = tree.cover(week2)?.map(|n| tree.derive(&c, &dpk, n)).collect::<Result<_, _>>()?;
//! assert_eq!(grant.len(), 1);
//! let mut out = [0u8; 4];
//! let (_, n) = Opener::new(&c, &tree, &grant).open(&record, &mut out)?;
//! assert_eq!(&out[..n], b"21.5");
//! # Ok(())
//! # }
//! ```
//!
//! This crate is `no_std`, needs no heap, and never does I/O: clocks and randomness are passed in.
//! It must never log, print or otherwise release a secret: every secret type zeroizes on drop and its
//! `Debug` output is redacted.
#![no_std]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(test)]
extern crate std;

#[cfg(feature = "admission")]
pub mod admission;
pub mod codec;
#[cfg(feature = "control")]
pub mod control;
#[cfg(feature = "cose")]
pub mod cose;
pub mod cover;
pub mod crypto;
mod error;
#[cfg(any(feature = "admission", feature = "pairing"))]
mod noise;
#[cfg(feature = "pairing")]
pub mod pairing;
pub mod record;
pub mod schedule;
mod secret;
#[cfg(feature = "sharing")]
pub mod sharing;
#[cfg(feature = "ties")]
pub mod ties;
pub mod time;
#[cfg(feature = "translog")]
pub mod translog;
pub mod tree;
pub mod uplink;

pub use crate::cover::Cover;
#[cfg(feature = "rustcrypto")]
pub use crate::crypto::RustCrypto;
pub use crate::crypto::{Crypto, Suite};
pub use crate::error::Error;
pub use crate::record::{LeafKey, Opener, RecordHeader};
pub use crate::schedule::{Schedule, Stage};
pub use crate::secret::Secret;
pub use crate::time::{Span, UnixTime};
pub use crate::tree::{DeviceId, Epoch, MasterSecret, NodeId, NodeSecret, TreeSpec};
