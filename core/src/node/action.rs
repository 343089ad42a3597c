//! Work a connection hands to the node: decisions that need more than one connection (the
//! relay's tables, the other end of a circuit, a relayed connection's transport).

use bytes::{Bytes, BytesMut};

use super::ids::{ConnectionId, StreamHandle};
use super::stream::RelayRole;
use crate::framing::FrameError;
use crate::identity::PeerId;
use crate::relay::circuits::CircuitId;

/// Something for the node to act on after a connection processed its events.
#[derive(Debug)]
pub(crate) enum Action {
    /// One relay-protocol frame arrived (or could not be framed). `rest` holds every byte read
    /// after it: it belongs to the circuit and must not be lost.
    RelayMessage {
        stream: StreamHandle,
        role: RelayRole,
        frame: Result<Bytes, FrameError>,
        rest: BytesMut,
    },
    /// A relay-protocol stream failed before its message arrived (refused, reset, finished,
    /// timed out) or the connection under it closed.
    RelayStreamFailed {
        stream: StreamHandle,
        role: RelayRole,
        /// The peer refused the relay protocol itself (multistream `na`): it is no relay.
        unsupported: bool,
        reason: String,
    },
    /// A bridged circuit end can make progress (readable, writable, reset, gone).
    Bridge { circuit: CircuitId },
    /// A relayed connection's circuit stream can make progress.
    Circuit { relayed: ConnectionId },
    /// The peer gave us credit for more bidirectional streams on a QUIC connection.
    StreamsAvailable { connection: ConnectionId },
    /// A connection ended.
    ConnectionClosed {
        connection: ConnectionId,
        peer: Option<PeerId>,
    },
}
