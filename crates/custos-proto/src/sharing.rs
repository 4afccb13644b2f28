//! Sharing: signed requests from applications and signed grants whose secrets are HPKE-sealed to them.
