//! Shared pieces of the dep2p benchmarks (DESIGN §10).
//!
//! - [`forward`]: three sans-IO nodes (a relay, a target holding a reservation on it, a dialer
//!   with a relayed connection and one bulk stream to the target) on an in-memory network,
//!   with the wall time each node spends inside its own calls, so the relay's share of the
//!   forwarding work can be measured apart from the two endpoints'.
//!
//! The criterion benchmarks are in `benches/core.rs`; the loopback comparison tool (dep2p and
//! rust-libp2p relays as separate processes) is `examples/loopback.rs`.

#![forbid(unsafe_code)]

pub mod forward;
