//! The fuzz harnesses of dep2p: one function per cargo-fuzz target, `fn(&[u8])`.
//!
//! The targets under `fuzz/fuzz_targets/` are one-line wrappers around these functions, and the
//! stable test `tests/corpus_replay.rs` calls the same functions on every file committed under
//! `fuzz/corpus/<target>/`, so CI exercises the fuzz inputs (seeds, and every input that once
//! crashed) without a nightly toolchain. A harness panics exactly when it found a bug: a panic
//! on peer input, or a broken invariant it states.
//!
//! Everything here goes through dep2p's public API (plus `dep2p_core::testing`, feature
//! `test-driver`, and one doc-hidden entry point of `dep2p_sim`); no internal is widened for it.
#![forbid(unsafe_code)]

pub mod codecs;
pub mod node;
pub mod raw;
pub mod relay_ops;
pub mod scenario;
pub mod seeds;

/// A fuzz target: its name (the file under `fuzz/fuzz_targets/` and the folder under
/// `fuzz/corpus/`) and its harness.
#[derive(Clone, Copy)]
pub struct Target {
    /// The cargo-fuzz target name.
    pub name: &'static str,
    /// The harness.
    pub run: fn(&[u8]),
}

/// Every target, in the order the README lists them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "multistream",
        run: codecs::multistream,
    },
    Target {
        name: "relay_wire",
        run: codecs::relay_wire,
    },
    Target {
        name: "voucher",
        run: codecs::voucher,
    },
    Target {
        name: "certificate",
        run: codecs::certificate,
    },
    Target {
        name: "yamux",
        run: codecs::yamux,
    },
    Target {
        name: "identify",
        run: codecs::identify,
    },
    Target {
        name: "node",
        run: node::node,
    },
    Target {
        name: "relay_ops",
        run: relay_ops::relay_ops,
    },
    Target {
        name: "scenario",
        run: scenario::scenario,
    },
];

/// The target called `name`.
#[must_use]
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}
