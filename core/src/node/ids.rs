//! Handles for connections and streams.

use std::fmt;

/// A connection of a [`Node`](super::Node). Never reused during the node's life, so a stale id
/// can only miss, never hit another connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectionId(pub(crate) u64);

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}", self.0)
    }
}

/// A stream on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamHandle {
    pub(crate) connection: ConnectionId,
    pub(crate) id: super::transport::StreamKey,
}

impl StreamHandle {
    /// The connection carrying this stream.
    #[must_use]
    pub fn connection(&self) -> ConnectionId {
        self.connection
    }
}

impl fmt::Display for StreamHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.connection, self.id)
    }
}

/// Who opened a connection or stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We did.
    Outbound,
    /// The peer did.
    Inbound,
}
