//! The raw quinn-proto test client lives in `dep2p_core::testing::raw` (shared with the fuzz
//! harness).

// Each test binary includes `common`; not every one uses the raw client.
#[allow(unused_imports)]
pub use dep2p_core::testing::raw::*;
