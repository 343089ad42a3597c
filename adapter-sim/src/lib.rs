//! dep2p-sim: a deterministic network simulator for dep2p (DESIGN §8).
//!
//! A single-threaded discrete-event [`Sim`] runs real [`dep2p_core::node::Node`]s — real
//! quinn-proto and rustls inside, made deterministic by
//! [`NodeConfig::deterministic_tls`](dep2p_core::node::NodeConfig::deterministic_tls) — on a
//! virtual clock and a virtual [`Network`]: a queue of datagrams ordered by
//! `(deliver_at, seq)` and a [`LinkModel`] per directed link (latency, jitter, uniform and
//! bursty loss, duplication, reordering, bandwidth caps, MTU black holes), with partitions,
//! isolation and gray hosts on top. Hosts crash (the `Node` is dropped), restart (a new `Node`
//! with the same key and a seed derived from the root), or drain gracefully.
//!
//! One `u64` root seed is split per component ([`rng::RootSeed`]): the links, each node (and
//! each of its incarnations), the faults and the workload draw from their own named ChaCha20
//! streams. Every input and output is hashed into the trace hash ([`Sim::trace_hash`]): the
//! same scenario and seed give the same hash.
//!
//! On top of the world, [`scenario::run`] drives a named scenario: clients keep reservations
//! through a [`policy::RelayPolicy`] (the node's own AutoRelay by default, or the scripted
//! stand-in), a
//! [`workload::Workload`] streams checkable data over circuits, a [`fault::FaultScript`]
//! (written by hand or drawn per seed) breaks things, and [`check::Checkers`] verify the
//! invariants after every step, at the end (counters back to zero) and once after the faults
//! heal (liveness). The [`report::Report`] is the summary table the CLI prints.
//!
//! # Time
//!
//! The world reads no clock. Virtual time is anchored on one `Instant` read by
//! [`dep2p_core::testing::virtual_epoch`]; only differences from it are used. The CLI reads the
//! wall clock once more, for its progress line, at one call site allowed explicitly.
#![forbid(unsafe_code)]

pub mod check;
pub mod fault;
pub mod net;
pub mod policy;
pub mod report;
pub mod rng;
pub mod scenario;
mod trace;
pub mod workload;
mod world;

pub use net::{BurstLoss, LinkModel, Network};
pub use world::{DRAIN_CODE, DRAIN_GRACE, HostId, Sabotage, Sim, UNIX_START};
