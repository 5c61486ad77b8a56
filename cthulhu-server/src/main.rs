//! The Cthulhu server binary.

// The modules below are used by the main wiring, which lands next; until then their
// items are unused in the binary.
#[allow(dead_code)]
mod config;
#[allow(dead_code)]
mod store;

fn main() {}
