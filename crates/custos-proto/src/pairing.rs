//! Pairing of the keeper with a device, keyed by the owner code (Noise NNpsk0), relayed by the hub.
