//! The device side of Custos: what the factory puts on a device, and the state the device keeps.
//!
//! [`Factory::make`] creates a device identity: an EUI-64-style id (locally administered), an X25519 identity
//! key, a one-time **join code** for the operator who admits it to a hub, and an **owner code** for the user who
//! pairs it with their keeper. [`DeviceState`] is what the device keeps in its state directory, written
//! owner-only; [`Factory::label`] is the text printed on the packaging.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod actuator;
pub mod agent;
pub mod control;
pub mod keyfile;
mod state;
pub mod ties;

pub use state::{DeviceState, Factory, Session, StateError, format_code, parse_code};
