//! dep2p-tokio: runs the sans-IO [`dep2p_core::node::Node`] on tokio and real UDP sockets, and
//! the `dep2p` command-line program (relay daemon, client node, dial, demo, bench).
//!
//! # Embedding
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use dep2p_core::identity::keypair_from_seed;
//! use dep2p_core::node::NodeConfig;
//! use dep2p_tokio::{NodeHandle, NodeOptions};
//!
//! let mut config = NodeConfig::default();
//! config.protocol("/my/app/1.0.0");
//! let keypair = keypair_from_seed([7; 32]); // use a persisted key file in production
//! let node = NodeHandle::spawn(NodeOptions::new(config, keypair, "127.0.0.1:0".parse()?))?;
//! # let (relay_addr, relay_peer, target) = todo!();
//! let relay = node.dial(relay_addr, relay_peer).await?;      // direct QUIC connection
//! let circuit = node.dial_through_relay(relay, target).await?; // TLS + yamux over the relay
//! let stream = node.open_stream(circuit, "/my/app/1.0.0").await?;
//! stream.write_all(&b"hello"[..]).await?;
//! stream.finish().await?;
//! # Ok(()) }
//! ```
//!
//! One task per socket drives the node ([`driver`] module docs): it drains the node's outputs,
//! then waits on the socket (batched `quinn-udp` receive), the command channel of the handles,
//! and one sleep for the node's next deadline. A client that should stay reachable through
//! relays turns on the core's AutoRelay (`NodeConfig::auto_relay`) and passes relay candidates
//! in [`NodeOptions::relay_candidates`]; the core selects, reserves, renews and fails over.

#![forbid(unsafe_code)]

pub mod apps;
pub mod bench;
pub mod builder;
pub mod cli;
pub mod config;
pub mod demo;
mod driver;
mod handle;
mod io;
pub mod metrics;
mod parked_opens;

pub use driver::{CircuitConnection, RelaySwitch, Snapshot};
pub use handle::{AdapterEvent, Error, InboundStream, NodeHandle, NodeOptions, StartError, Stream};
pub use parked_opens::MAX_PARKED_OPENS;
