//! Application protocols carried on negotiated streams (DESIGN §4.2).
//!
//! Each submodule is a sans-IO codec for one protocol: bytes in, typed results and bytes out.
//! The protocol id constants below are what [`crate::multistream`] negotiates.

pub mod identify;
pub mod ping;

/// Protocol id of identify: the responder sends one `Identify` message and closes the stream.
pub const IDENTIFY: &str = "/ipfs/id/1.0.0";

/// Protocol id of ping: the initiator sends 32 random bytes, the responder echoes them.
pub const PING: &str = "/ipfs/ping/1.0.0";

/// The `protocolVersion` we announce in identify, as libp2p implementations do.
pub const PROTOCOL_VERSION: &str = "ipfs/0.1.0";
