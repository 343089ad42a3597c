//! What a node reports to its application.

use std::net::SocketAddr;
use std::time::Duration;

use super::error::{ConnectionFailure, StreamOpenFailure};
use super::ids::{ConnectionId, Direction, StreamHandle};
use crate::identity::PeerId;
use crate::protocols::identify::IdentifyInfo;

/// The kind of a [`Event::ReservationFailed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationFailureKind {
    /// The relay answered with this refusal status.
    Refused(crate::relay::wire::Status),
    /// The peer does not speak HOP: it is no relay.
    HopUnsupported,
    /// Anything else: a bad answer or voucher, a stream failure, a timeout.
    Other,
}

/// Something that happened, reported by [`Node::poll_output`](super::Node::poll_output).
#[derive(Debug, Clone)]
#[must_use]
pub enum Event {
    /// The QUIC handshake finished and the peer's PeerId was derived from its verified
    /// certificate (and, for a dial, matched the expected one).
    ConnectionEstablished {
        /// The connection.
        connection: ConnectionId,
        /// The authenticated remote peer.
        peer: PeerId,
        /// The peer's UDP address; for a relayed connection, the relay's.
        remote: SocketAddr,
        /// Who dialed.
        direction: Direction,
        /// For a relayed connection, the relay it runs through.
        relay: Option<PeerId>,
    },
    /// A connection ended, or a dial failed. The id is dead afterwards.
    ConnectionClosed {
        /// The connection.
        connection: ConnectionId,
        /// The peer, if its identity was established (or, for a failed dial, expected).
        peer: Option<PeerId>,
        /// Why it ended.
        failure: ConnectionFailure,
    },
    /// The peer answered identify.
    Identified {
        /// The connection.
        connection: ConnectionId,
        /// What the peer announced (its key already checked against the connection's PeerId).
        info: Box<IdentifyInfo>,
    },
    /// The peer's identify answer was unusable; the connection stays up.
    IdentifyFailed {
        /// The connection.
        connection: ConnectionId,
        /// What was wrong.
        reason: String,
    },
    /// A ping round trip completed.
    PingSucceeded {
        /// The connection.
        connection: ConnectionId,
        /// Time from sending the payload to receiving its echo.
        rtt: Duration,
    },
    /// A ping failed (refused, wrong echo, stream reset, timed out).
    PingFailed {
        /// The connection.
        connection: ConnectionId,
        /// What went wrong.
        reason: String,
    },
    /// An outbound stream finished negotiating and is ready for reads and writes.
    StreamReady {
        /// The stream.
        stream: StreamHandle,
        /// The negotiated protocol.
        protocol: String,
    },
    /// An outbound stream could not be opened for its protocol; it is gone.
    StreamOpenFailed {
        /// The stream.
        stream: StreamHandle,
        /// Why.
        failure: StreamOpenFailure,
    },
    /// The peer opened a stream for one of our application protocols.
    InboundStream {
        /// The stream.
        stream: StreamHandle,
        /// The negotiated protocol.
        protocol: String,
    },
    /// Data (or the end of the stream, or a reset) is waiting to be read.
    StreamReadable {
        /// The stream.
        stream: StreamHandle,
    },
    /// A write that returned 0 bytes may now make progress: backpressure released.
    StreamWritable {
        /// The stream.
        stream: StreamHandle,
    },
    /// A relay granted (or renewed) our reservation: we are reachable at `circuit_addrs`.
    ReservationAccepted {
        /// Our connection to the relay.
        connection: ConnectionId,
        /// The relay.
        relay: PeerId,
        /// When the reservation expires (unix seconds), unless renewed; the node renews it at
        /// three quarters of its lifetime.
        expire_unix_secs: u64,
        /// Our circuit addresses through this relay (`<relay addr>/p2p-circuit`).
        circuit_addrs: Vec<multiaddr::Multiaddr>,
        /// Limits the relay applies to each circuit.
        limit: Option<crate::relay::wire::CircuitLimit>,
        /// A renewal of a reservation we already held.
        renewed: bool,
    },
    /// A reservation request failed (refused, bad voucher, stream failure). If it was a
    /// renewal, [`Event::ReservationLost`] follows.
    ReservationFailed {
        /// Our connection to the relay.
        connection: ConnectionId,
        /// The relay.
        relay: PeerId,
        /// Why.
        reason: String,
        /// What kind of failure, for relay selection.
        kind: ReservationFailureKind,
    },
    /// A reservation we held is gone (relay connection closed, renewal refused, expired).
    ReservationLost {
        /// Our (former) connection to the relay.
        connection: ConnectionId,
        /// The relay.
        relay: PeerId,
        /// Why.
        reason: String,
    },
    /// AutoRelay: the full set of circuit addresses to advertise changed. A new relay's
    /// address is always added before a replaced one is withdrawn, so the set has no gap.
    CircuitAddrsChanged {
        /// Every circuit address through every held relay.
        addrs: Vec<multiaddr::Multiaddr>,
    },
    /// AutoRelay took a relay into its held set.
    RelaySwitched {
        /// The relay it replaces, if any.
        from: Option<PeerId>,
        /// The relay now held.
        to: PeerId,
        /// Why.
        why: crate::autorelay::SwitchReason,
    },
    /// A [`Node::dial_circuit`](super::Node::dial_circuit) succeeded through one of the
    /// relays.
    CircuitDialSucceeded {
        /// The dial.
        dial: super::circuit_dial::CircuitDialId,
        /// The peer dialed.
        target: PeerId,
        /// The relayed connection (already reported established).
        connection: ConnectionId,
    },
    /// A [`Node::dial_circuit`](super::Node::dial_circuit) failed through every relay in
    /// every round.
    CircuitDialFailed {
        /// The dial.
        dial: super::circuit_dial::CircuitDialId,
        /// The peer dialed.
        target: PeerId,
        /// What each attempt ran into, in order.
        errors: Vec<String>,
    },
    /// The peer raised how many streams we may open on `connection` (QUIC MAX_STREAMS): an
    /// open refused with [`StreamError::TooManyStreams`](super::StreamError::TooManyStreams)
    /// ([`Node::open_stream`](super::Node::open_stream), [`Node::ping`](super::Node::ping),
    /// [`Node::reserve`](super::Node::reserve)) may be tried again now.
    StreamsAvailable {
        /// The connection.
        connection: ConnectionId,
    },
    /// The peer asked us to stop sending; further writes fail.
    StreamStopped {
        /// The stream.
        stream: StreamHandle,
        /// The peer's error code.
        code: u64,
    },
}
