//! dep2p-core: the sans-IO core of the dep2p relay stack.
#![forbid(unsafe_code)]

pub mod framing;
#[cfg(any(test, feature = "test-driver"))]
pub mod testing;
pub mod tls;
pub mod wallclock;
