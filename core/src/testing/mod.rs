//! A deterministic in-memory driver for tests: several [`Node`](crate::node::Node)s, a virtual
//! clock, datagram queues and optional loss and latency. This is the seed of `dep2p-sim`.
//!
//! Only compiled with the `test-driver` feature (and for the crate's own tests).

use std::time::Instant;

/// The instant virtual time starts from.
///
/// `Instant` has no public constructor, so the driver anchors its virtual clock on one real
/// reading taken at start-up. Only differences from this anchor are ever used: nothing the
/// nodes do depends on its value, so runs stay deterministic.
#[must_use]
pub fn virtual_epoch() -> Instant {
    #[allow(clippy::disallowed_methods)] // the one anchor of virtual time; see the doc comment
    Instant::now()
}
