//! The raw quinn-proto client of `dep2p_core::testing::raw` (shared with the core's tests).

pub use dep2p_core::testing::raw::*;
