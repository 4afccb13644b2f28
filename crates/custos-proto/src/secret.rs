//! A 32-byte secret that zeroizes on drop and never prints.

use core::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// 32 secret bytes: a master secret, a DPK, a stage or leaf secret, or an AEAD key.
///
/// Zeroized on drop; `Debug` prints `Secret(..)`; equality is constant-time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Secret([u8; 32]);

impl Secret {
    /// Length in bytes.
    pub const LEN: usize = 32;

    /// Wraps raw bytes. The caller should zeroize its own copy.
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes, for handing to a primitive or writing to a protected key file.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Mutable access, for filling the secret in place (e.g. from HKDF) without a copy on the stack.
    pub(crate) fn expose_mut(&mut self) -> &mut [u8; 32] {
        &mut self.0
    }

    pub(crate) const fn zero() -> Self {
        Self([0; 32])
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for Secret {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn debug_never_prints_bytes() {
        let s = Secret::from_bytes([0xab; 32]);
        let printed = format!("{s:?}");
        assert_eq!(printed, "Secret(..)");
        assert!(!printed.contains("ab"));
    }
}
