//! Benchmarks of the core (placeholder until written).
fn main() {}
