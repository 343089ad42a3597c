//! Interop with rust-libp2p 0.57 (issue 7), all on 127.0.0.1, our side driven through the
//! tokio adapter. One test binary (libp2p links once); one file per behaviour:
//!
//! - [`our_relay_serves_libp2p`]: two libp2p clients reserve on and talk through our relay.
//! - [`our_client_uses_libp2p_relay`]: two of our nodes reserve on and talk through a
//!   rust-libp2p relay server.
//! - [`mixed_through_our_relay`]: a libp2p peer and our node, through our relay, both
//!   directions of dialing.
//! - [`identify_and_ping_direct`]: identify and ping over a direct QUIC connection, both
//!   directions of dialing.
//!
//! Every test asserts on the bytes that arrived and on both peers' events, so a wire mistake on
//! our side fails it rather than only slowing it down.

mod common;
mod identify_and_ping_direct;
mod mixed_through_our_relay;
mod our_client_uses_libp2p_relay;
mod our_relay_serves_libp2p;
