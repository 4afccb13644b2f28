//! The identity certificate server (ICS): device identity certificates in OpenPGP, endorsements by further
//! parties, keyless code identities and signed statuses, every one appended to an RFC 9162 transparency log.
//! docs/registry.md is the contract.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod answers;
pub mod cert;
pub mod http;
pub mod policy;
pub mod public;
pub mod reader;
pub mod registry;
pub mod statement;
pub mod sync;
pub mod update;

pub use policy::Policy;
pub use registry::{Registry, RegistryError};
