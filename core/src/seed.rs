//! Randomness from one seed (DESIGN §3).
//!
//! The node never asks the OS for randomness. It is given a 32-byte root seed and derives one
//! independent ChaCha20 stream per purpose (QUIC endpoint, reset key, token key, connection IDs,
//! ping payloads…), so adding a purpose never shifts the bytes another purpose sees and one seed
//! replays a whole run.

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

/// A root seed from which per-purpose seeds and generators are derived.
#[derive(Clone)]
pub struct SeedTree {
    root: [u8; 32],
}

impl std::fmt::Debug for SeedTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seed is secret material in production (it keys tokens and stateless resets).
        f.write_str("SeedTree(..)")
    }
}

impl SeedTree {
    /// A tree rooted at `root`.
    #[must_use]
    pub fn new(root: [u8; 32]) -> Self {
        Self { root }
    }

    /// The 32-byte seed for `purpose`: SHA-256 over a version tag, the root and the label.
    #[must_use]
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(b"dep2p-seed-v1\0");
        ctx.update(&self.root);
        ctx.update(purpose.as_bytes());
        let digest = ctx.finish();
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// A sub-tree for `purpose`, for components that split their randomness further.
    #[must_use]
    pub fn subtree(&self, purpose: &str) -> SeedTree {
        SeedTree::new(self.derive(purpose))
    }

    /// A ChaCha20 generator seeded for `purpose`.
    #[must_use]
    pub fn rng(&self, purpose: &str) -> ChaCha20Rng {
        ChaCha20Rng::from_seed(self.derive(purpose))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::RngCore;

    #[test]
    fn purposes_are_independent_and_reproducible() {
        let tree = SeedTree::new([3; 32]);
        assert_eq!(tree.derive("a"), SeedTree::new([3; 32]).derive("a"));
        assert_ne!(tree.derive("a"), tree.derive("b"));
        assert_ne!(tree.derive("a"), SeedTree::new([4; 32]).derive("a"));
        assert_eq!(tree.rng("x").next_u64(), tree.rng("x").next_u64());
    }
}
