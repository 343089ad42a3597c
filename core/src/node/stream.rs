//! Per-stream state: protocol negotiation, then either the application or one of the protocols
//! the node runs itself (identify, ping).

use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::ids::ConnectionId;
use super::transport::StreamEnd;
use crate::framing::FrameDecoder;
use crate::multistream::{Dialer, Listener, NegotiationError, Progress};
use crate::protocols::ping::{PingResponder, Pinger};
use crate::relay::circuits::CircuitId;

/// Why an outbound stream was opened; decides what happens once it is negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// An application protocol: hand the stream to the application.
    App,
    /// Fetch the peer's identify record.
    Identify,
    /// Measure a round trip.
    Ping,
    /// A Circuit Relay v2 exchange: write `request` (one frame), then read one reply frame.
    Relay { role: RelayRole, request: Bytes },
}

/// What a Circuit Relay v2 stream is for (DESIGN §4.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelayRole {
    /// Relay: a peer's HOP stream; its request has not arrived yet.
    HopServe,
    /// Client: our HOP RESERVE, awaiting the STATUS.
    Reserve,
    /// Client: our HOP CONNECT for relayed connection `relayed`, awaiting the STATUS.
    Connect { relayed: ConnectionId },
    /// Client: a relay's STOP stream; its CONNECT has not arrived yet.
    StopServe,
    /// Relay: our STOP CONNECT to the target of `circuit`, awaiting its STATUS.
    Stop { circuit: CircuitId },
    /// Relay: the source's HOP stream of `circuit`, waiting for the target's answer.
    AwaitingTarget { circuit: CircuitId },
}

/// One side of a multistream-select negotiation.
#[derive(Debug)]
pub(crate) enum Negotiation {
    /// We proposed.
    Dialer(Dialer),
    /// The peer proposes.
    Listener(Listener),
}

impl Negotiation {
    pub(crate) fn poll_output(&mut self) -> Option<Bytes> {
        match self {
            Self::Dialer(d) => d.poll_output(),
            Self::Listener(l) => l.poll_output(),
        }
    }

    pub(crate) fn handle_input(&mut self, data: &[u8]) -> Result<Progress, NegotiationError> {
        match self {
            Self::Dialer(d) => d.handle_input(data),
            Self::Listener(l) => l.handle_input(data),
        }
    }
}

/// What a stream is doing now.
#[derive(Debug)]
pub(crate) enum StreamKind {
    /// Multistream-select in progress; reset if not done by `deadline`.
    Negotiating {
        negotiation: Negotiation,
        purpose: Purpose,
        deadline: Instant,
    },
    /// Handed to the application. `leftover` holds bytes that arrived with the last
    /// negotiation message; they are returned by the first reads. `ended` holds the peer's
    /// finish or reset that a read met after the data it returned: the next read reports it.
    App {
        protocol: String,
        leftover: Bytes,
        ended: Option<StreamEnd>,
    },
    /// We answered identify: the record is written (or queued) and the stream finished.
    IdentifyServe,
    /// We asked for the peer's identify record and collect it until the peer finishes.
    IdentifyFetch { buffer: BytesMut, deadline: Instant },
    /// Our ping, waiting for its echo.
    PingOut { pinger: Pinger, deadline: Instant },
    /// Our ping was answered; waiting for the peer to finish.
    PingDone,
    /// Echoing the peer's pings.
    PingServe { responder: PingResponder },
    /// A relay-protocol stream reading one framed message.
    RelayRead {
        role: RelayRole,
        decoder: FrameDecoder,
        deadline: Instant,
    },
    /// A relay-protocol stream the node is deciding about: nothing is read meanwhile, so
    /// bytes that follow the message stay in the transport for the circuit.
    Parked { role: RelayRole },
    /// Relay: one end of a bridged circuit; the node forwards its bytes.
    Bridged { circuit: CircuitId },
    /// Client: the byte stream carrying relayed connection `relayed`.
    Circuit { relayed: ConnectionId },
    /// We wrote our last message and finished; anything the peer still sends is discarded.
    Closing,
}

impl StreamKind {
    /// The deadline by which this stream must make progress, if it has one.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match self {
            Self::Negotiating { deadline, .. }
            | Self::IdentifyFetch { deadline, .. }
            | Self::PingOut { deadline, .. }
            | Self::RelayRead { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }
}

/// A stream the node tracks.
#[derive(Debug)]
pub(crate) struct StreamEntry {
    pub(crate) kind: StreamKind,
    /// Bytes the node itself must still write (negotiation lines, identify record, echoes).
    /// Bounded: negotiation messages are short, identify records are capped, echoes are at most
    /// one ping payload per read.
    pub(crate) pending_write: BytesMut,
    /// Finish the sending side once `pending_write` is flushed.
    pub(crate) finish_when_flushed: bool,
    /// Our sending side is finished, reset or stopped.
    pub(crate) send_closed: bool,
    /// The peer's sending side is finished or reset (or we stopped reading).
    pub(crate) recv_closed: bool,
}

impl StreamEntry {
    pub(crate) fn new(kind: StreamKind) -> Self {
        Self {
            kind,
            pending_write: BytesMut::new(),
            finish_when_flushed: false,
            send_closed: false,
            recv_closed: false,
        }
    }

    /// Both directions are done: the entry can be forgotten.
    pub(crate) fn is_done(&self) -> bool {
        self.send_closed && self.recv_closed
    }
}
