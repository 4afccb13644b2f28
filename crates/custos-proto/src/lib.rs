//! The Custos core: everything that must be the same on a microcontroller, in a browser and in the cloud.
//!
//! - [`crypto`]: the [`Crypto`] backend trait and its RustCrypto implementation ([`RustCrypto`], feature
//!   `rustcrypto`, on by default).
//! - [`schedule`]: nesting key schedules (calendar stages in UTC and fixed-length stages).
//! - [`tree`]: the key tree of one data protection key (DPK): DPK → stage secrets → leaf secret → AEAD key.
//! - [`cover`]: the fewest tree nodes that tile a time range exactly, and the forward-secure frontier.
//! - [`record`]: sealed records over caller-owned buffers.
//!
//! This crate is `no_std`, needs no heap, and never does I/O: clocks and randomness are passed in.
//! It must never log, print or otherwise release a secret: every secret type zeroizes on drop and its
//! `Debug` output is redacted.
#![no_std]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

#[cfg(test)]
extern crate std;

pub mod codec;
pub mod cover;
pub mod crypto;
mod error;
pub mod record;
pub mod schedule;
mod secret;
pub mod time;
pub mod tree;

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
