//! dep2p-core: the sans-IO core of the dep2p relay stack.
#![forbid(unsafe_code)]

pub mod framing;
pub mod multistream;
pub mod protocols;
pub mod relay;
#[cfg(any(test, feature = "test-driver"))]
pub mod testing;
pub mod wallclock;
