//! The keeper: the user's key manager. It decides, request by request, who may read which slice of time.
//!
//! - [`policy`]: the user's consent policy file (allow up to N days, ask, or deny, per application and purpose).
//! - [`keeper`]: the keeper over its state directory: provisioning DPK epochs, considering requests, asking the
//!   user, granting and denying, and syncing with the hub.
//! - [`consent`]: the hash-chained, signed log of every decision the keeper makes.

pub mod consent;
pub mod control;
pub mod keeper;
pub mod policy;

pub use keeper::{Handled, InboxWatch, Keeper, KeeperError, Paired, Pending, SyncReport};
