//! Errors: local command failures ([`YamuxError`]) and fatal peer faults ([`SessionError`]).
//!
//! Following DESIGN §3, peer faults never surface as command errors: they end the session with a
//! go-away frame and a [`YamuxEvent::SessionError`](super::YamuxEvent::SessionError).

use super::frame::{FrameError, StreamId};

/// Why a command failed. Always local and immediate: misuse, or a local limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum YamuxError {
    /// No such stream: never opened, reset, or finished both ways and fully read.
    #[error("{0} is not an open stream")]
    UnknownStream(StreamId),
    /// The stream was already finished for writing.
    #[error("{0} is already finished for writing")]
    WriteClosed(StreamId),
    /// A local limit is reached.
    #[error("limit reached: {0}")]
    LimitExceeded(Limit),
    /// The session is closing (a go-away was sent or received) and opens no new streams.
    #[error("the session is closing and opens no new streams")]
    Closing,
    /// The session failed or the peer terminated it with an error; nothing more can be done.
    #[error("the session is terminated")]
    Terminated,
    /// Every stream id of our parity was used.
    #[error("stream ids exhausted")]
    StreamIdsExhausted,
}

/// A local limit named by [`YamuxError::LimitExceeded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Limit {
    /// [`YamuxConfig::max_streams`](super::YamuxConfig::max_streams).
    #[error("concurrent streams")]
    Streams,
    /// [`YamuxConfig::max_ack_backlog`](super::YamuxConfig::max_ack_backlog).
    #[error("unacknowledged outbound streams")]
    AckBacklog,
    /// [`YamuxConfig::max_outstanding_pings`](super::YamuxConfig::max_outstanding_pings).
    #[error("outstanding pings")]
    OutstandingPings,
}

/// A fatal fault of the peer. The session answers it with a go-away (protocol error) and
/// terminates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// A header could not be decoded.
    #[error("malformed frame: {0}")]
    InvalidMessage(#[from] FrameError),
    /// A well-formed frame broke the protocol.
    #[error("peer misbehaved: {0}")]
    PeerMisbehaved(#[from] Misbehaviour),
}

/// How the peer broke the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Misbehaviour {
    /// A data frame longer than the stream's remaining receive window.
    #[error("{stream}: {length} bytes sent into a window of {window}")]
    WindowExceeded {
        /// The stream.
        stream: StreamId,
        /// Announced payload length.
        length: u32,
        /// Window the peer had left.
        window: u32,
    },
    /// A data frame longer than any window we ever grant.
    #[error("data frame of {length} bytes exceeds the largest window {max}")]
    FrameTooLarge {
        /// Announced payload length.
        length: u32,
        /// [`YamuxConfig::max_stream_window`](super::YamuxConfig::max_stream_window).
        max: u32,
    },
    /// `SYN` for a stream that is already open.
    #[error("duplicate SYN for {0}")]
    DuplicateSyn(StreamId),
    /// `SYN` for an id of our parity (only we open those).
    #[error("SYN for {0}, whose parity is ours")]
    WrongParity(StreamId),
    /// A frame for a stream that was never opened.
    #[error("frame for {0}, which was never opened")]
    UnknownStream(StreamId),
    /// A data or window-update frame addressed to the session id 0.
    #[error("stream frame addressed to the session id 0")]
    StreamFrameOnSessionId,
    /// A window update pushed the send window beyond 2^32 - 1.
    #[error("window update overflows the send window of {0}")]
    WindowOverflow(StreamId),
    /// The peer triggered more control frames (ping responses, refusals) than
    /// [`YamuxConfig::max_control_backlog`](super::YamuxConfig::max_control_backlog) before they
    /// could be sent.
    #[error("control frame flood")]
    ControlFlood,
}
