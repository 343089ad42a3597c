//! Named, reproducible randomness: one root seed, split per component.
//!
//! Every component of a run (the links, each node, the fault model, the workload) draws from
//! its own ChaCha20 stream derived from the root seed and the component's name, so adding a
//! draw in one component never shifts the numbers another one sees.

use dep2p_core::seed::SeedTree;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use std::time::Duration;

/// The root of a run's randomness: a `u64` seed (what the user types) expanded to a tree.
#[derive(Debug, Clone)]
pub struct RootSeed {
    seed: u64,
    tree: SeedTree,
}

impl RootSeed {
    /// The root for `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        let mut root = [0u8; 32];
        root[..8].copy_from_slice(&seed.to_le_bytes());
        root[8..16].copy_from_slice(b"dep2psim");
        Self {
            seed,
            tree: SeedTree::new(root),
        }
    }

    /// The seed the user gave.
    #[must_use]
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The sub-tree of component `name` (for components that split further, like nodes).
    #[must_use]
    pub fn subtree(&self, name: &str) -> SeedTree {
        self.tree.subtree(name)
    }

    /// A generator for component `name`.
    #[must_use]
    pub fn rng(&self, name: &str) -> SimRng {
        SimRng {
            name: name.to_owned(),
            inner: ChaCha20Rng::from_seed(self.tree.derive(name)),
        }
    }
}

/// A ChaCha20 generator that knows which component it belongs to (for debugging output).
#[derive(Debug, Clone)]
pub struct SimRng {
    name: String,
    inner: ChaCha20Rng,
}

impl SimRng {
    /// The component this generator serves.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A uniform `u64`.
    pub fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }

    /// A uniform float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        // 53 random bits: every value is exactly representable.
        (self.inner.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (0 never draws, so a zero probability costs no randomness
    /// and does not shift later draws).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// A uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0, "below(0) has no values");
        self.inner.next_u64() % n.max(1)
    }

    /// A uniform float in `lo..hi`.
    pub fn range_f64(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// A uniform duration in `0..=max`.
    pub fn duration_up_to(&mut self, max: Duration) -> Duration {
        if max.is_zero() {
            return Duration::ZERO;
        }
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.inner.next_u64() % nanos.saturating_add(1))
    }

    /// A uniform duration in `lo..=hi`.
    pub fn duration_between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + self.duration_up_to(hi.saturating_sub(lo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_draw_independent_reproducible_streams() {
        let root = RootSeed::new(9);
        assert_eq!(
            root.rng("links").next_u64(),
            RootSeed::new(9).rng("links").next_u64()
        );
        assert_ne!(root.rng("links").next_u64(), root.rng("faults").next_u64());
        assert_ne!(
            root.rng("links").next_u64(),
            RootSeed::new(10).rng("links").next_u64()
        );
    }
}
