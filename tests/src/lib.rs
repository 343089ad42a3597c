//! Interop tests of dep2p against rust-libp2p live in `tests/`; this library is empty.
