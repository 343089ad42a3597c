//! Errors of node commands and reasons connections and streams end.
//!
//! Command errors are local and immediate (misuse, or a local limit). Peer faults never surface
//! as command errors: they end a stream or a connection and are reported by an
//! [`Event`](super::Event) carrying one of the failure types below.

use std::net::SocketAddr;

use bytes::Bytes;

use super::ids::{ConnectionId, StreamHandle};
use crate::identity::PeerId;
use crate::multistream::NegotiationError;
use crate::tls::CertificateError;

/// Why [`Node::dial`](super::Node::dial) refused to start a connection.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DialError {
    /// The expected peer is this node.
    #[error("refusing to dial ourselves ({0})")]
    SelfDial(PeerId),
    /// The address cannot be dialed (unspecified IP or port 0).
    #[error("cannot dial {0}: unspecified address or port 0")]
    InvalidAddress(SocketAddr),
    /// The node already holds its maximum number of connections.
    #[error("connection limit reached ({max} connections)")]
    TooManyConnections {
        /// The configured maximum.
        max: usize,
    },
    /// quinn-proto refused the connection attempt.
    #[error("QUIC refused the dial: {0}")]
    Quic(#[from] quinn_proto::ConnectError),
    /// The TLS configuration for this dial could not be built.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// The node is draining ([`Node::drain`](super::Node::drain)) and makes no new
    /// connections.
    #[error("the node is draining")]
    Draining,
}

/// Why a stream command failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// No such connection (never existed, or closed).
    #[error("{0} is not an open connection")]
    UnknownConnection(ConnectionId),
    /// No such stream (never existed, already finished both ways, or reset).
    #[error("{0} is not an open stream")]
    UnknownStream(StreamHandle),
    /// The connection is still handshaking or already closing.
    #[error("{0} is not established")]
    NotEstablished(ConnectionId),
    /// The stream is still negotiating its protocol; wait for its ready event.
    #[error("{0} is still negotiating its protocol")]
    Negotiating(StreamHandle),
    /// The stream belongs to a protocol the node runs itself (identify, ping).
    #[error("{0} is driven by the node, not the application")]
    NotApplicationStream(StreamHandle),
    /// The peer's stream limit is reached: try again after
    /// [`Event::StreamsAvailable`](super::Event::StreamsAvailable) for this connection.
    #[error("the peer allows no more streams on {0}")]
    TooManyStreams(ConnectionId),
    /// The protocol id is not one multistream-select can carry.
    #[error("invalid protocol id {0}")]
    InvalidProtocol(String),
    /// The peer asked us to stop sending.
    #[error("{stream} was stopped by the peer with code {code}")]
    Stopped {
        /// The stream.
        stream: StreamHandle,
        /// The peer's error code.
        code: u64,
    },
    /// The peer reset its sending side.
    #[error("{stream} was reset by the peer with code {code}")]
    Reset {
        /// The stream.
        stream: StreamHandle,
        /// The peer's error code.
        code: u64,
    },
    /// We already finished or reset the sending side.
    #[error("{0} is already finished for writing")]
    AlreadyFinished(StreamHandle),
}

/// Why a connection ended (or never came up).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectionFailure {
    /// We refused the peer's certificate: the typed reason (for a dial, this includes a PeerId
    /// other than the expected one).
    #[error("peer certificate refused: {0}")]
    Certificate(CertificateError),
    /// The peer closed the connection with an application code.
    #[error("closed by peer with code {code}")]
    ClosedByPeer {
        /// The application error code.
        code: u64,
        /// The peer's reason phrase.
        reason: Bytes,
    },
    /// We closed it.
    #[error("closed locally")]
    ClosedLocally,
    /// The idle timeout ran out: the peer is gone or the path is broken.
    #[error("timed out")]
    TimedOut,
    /// A relayed connection failed (circuit refused or ended, TLS or yamux failure on it).
    #[error("relayed connection failed: {0}")]
    Relayed(String),
    /// Any other QUIC or TLS failure (for example, the peer refused our certificate, or no
    /// common ALPN).
    #[error("{0}")]
    Quic(quinn_proto::ConnectionError),
}

impl From<quinn_proto::ConnectionError> for ConnectionFailure {
    fn from(error: quinn_proto::ConnectionError) -> Self {
        use quinn_proto::ConnectionError as E;
        match error {
            E::ApplicationClosed(close) => Self::ClosedByPeer {
                code: close.error_code.into_inner(),
                reason: close.reason,
            },
            E::LocallyClosed => Self::ClosedLocally,
            E::TimedOut => Self::TimedOut,
            other => Self::Quic(other),
        }
    }
}

/// Why an outbound stream could not be opened for its protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamOpenFailure {
    /// Multistream-select failed (refused protocol, malformed reply).
    #[error(transparent)]
    Negotiation(#[from] NegotiationError),
    /// The peer reset or stopped the stream during negotiation.
    #[error("stream reset by peer during negotiation (code {0})")]
    Reset(u64),
    /// The peer finished the stream before answering.
    #[error("stream finished by peer during negotiation")]
    Finished,
    /// Negotiation did not complete within the configured timeout.
    #[error("negotiation timed out")]
    TimedOut,
    /// The connection ended.
    #[error("connection closed")]
    ConnectionClosed,
}

/// Why [`Node::ping`](super::Node::ping) could not start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    /// A ping is already in flight on this connection.
    #[error("a ping is already in flight on {0}")]
    InFlight(ConnectionId),
    /// The stream could not be opened.
    #[error(transparent)]
    Stream(#[from] StreamError),
}
