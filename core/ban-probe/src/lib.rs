//! Every item here breaks a rule of core/clippy.toml; clippy must refuse each one.

use std::collections::HashMap;
use std::time::{Instant, SystemTime};

/// Reads the monotonic clock: banned in the core.
pub fn read_monotonic_clock() -> Instant {
    Instant::now()
}

/// Reads the wall clock: banned in the core.
pub fn read_wall_clock() -> SystemTime {
    SystemTime::now()
}

/// Uses a std HashMap, whose iteration order is random per process: banned in the core.
pub fn make_map() -> HashMap<u8, u8> {
    HashMap::new()
}
