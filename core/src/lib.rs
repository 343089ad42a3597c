//! dep2p-core: the sans-IO core of the dep2p relay stack.
//!
//! This crate holds every protocol state machine of dep2p and performs no I/O: no sockets, no
//! clock, no OS randomness, no async runtime. Adapters (`dep2p-tokio`, `dep2p-sim`, or your own
//! event loop) move datagrams and time in and out of a [`node::Node`]:
//!
//! ```text
//!   loop {
//!       drain: while let out = node.poll_output(&mut buf) {
//!           Transmit(t) => send buf[..t.size] to t.destination,
//!           Event(e)    => act on e (maybe issue commands, then keep draining),
//!           Timeout(t)  => remember t; break,
//!       }
//!       wait for a datagram or for t;
//!       node.handle_datagram(now, datagram) / node.handle_timeout(now);
//!   }
//! ```
//!
//! # Map
//!
//! - [`node`]: the `Node` and its contract (inputs, commands, outputs, getters).
//! - [`identity`]: host keys, PeerIds, key files.
//! - [`tls`]: the libp2p TLS certificate and its verifiers (DESIGN §4.1).
//! - [`multistream`]: multistream-select 1.0.0 (DESIGN §4.2).
//! - [`protocols`]: identify and ping codecs.
//! - [`relay`]: Circuit Relay v2 messages and reservation vouchers (DESIGN §4.3).
//! - [`framing`]: uvarint length-prefixed frames with hard bounds.
//! - [`wallclock`], [`seed`]: wall-clock time and randomness as inputs.
//! - `testing` (feature `test-driver`): a deterministic in-memory world of nodes.
//!
//! # Panic policy
//!
//! A panic is a bug. No bytes from a peer can cause one: every parser returns a typed error
//! and every peer-driven buffer has a bound. `expect` is used only where the value is proven
//! (each says why).
#![forbid(unsafe_code)]

pub mod addr;
pub mod autorelay;
pub mod framing;
pub mod identity;
pub mod multistream;
pub mod node;
pub mod protocols;
pub mod relay;
pub mod seed;
#[cfg(any(test, feature = "test-driver"))]
pub mod testing;
pub mod tls;
pub mod wallclock;
pub mod yamux;
