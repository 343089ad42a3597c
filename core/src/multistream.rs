//! multistream-select 1.0.0, sans-IO (DESIGN §4.2).
//!
//! Every stream starts by agreeing on the protocol it carries. Each message is one *line*: a
//! uvarint length, then UTF-8 text ending in `\n` (the newline counts in the length). Both sides
//! send the header [`PROTOCOL_HEADER`]; the dialer then proposes a protocol id, and the listener
//! echoes it (agreement) or answers [`NOT_AVAILABLE`] (`na`), after which the dialer may propose
//! the next one. See libp2p/specs `connections/README.md` and multiformats/multistream-select.
//!
//! # Driving a negotiator
//!
//! [`Dialer`] and [`Listener`] have the same shape:
//!
//! - **input**: [`Dialer::handle_input`] / [`Listener::handle_input`] take whatever bytes the
//!   stream delivered, in any split, and return [`Progress`]: either still pending, or
//!   [`Negotiated`] with the agreed protocol and every byte that followed the final line.
//! - **output**: [`Dialer::poll_output`] / [`Listener::poll_output`] return bytes to write.
//!   Drain them after construction and after every input, *including the input that returned
//!   `Negotiated`*: the listener's echo is queued then.
//! - **getters**: `state()` and `buffered()`.
//!
//! The dialer writes the header and its first proposal in one write, as the spec allows, so a
//! successful negotiation costs one round trip.
//!
//! # Bounds
//!
//! A negotiator never buffers more than one maximal line plus its length prefix
//! ([`NegotiationLimits::max_buffered`]); input beyond that is only taken once the buffered line
//! is consumed. A listener refuses at most [`MAX_REFUSED_PROPOSALS`] proposals before giving up,
//! so its queued `na` replies are bounded too. Peer faults are errors, never panics.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::framing::{FrameDecoder, FrameError, put_uvarint, uvarint_len};

/// The multistream-select 1.0.0 header, exchanged first by both sides.
pub const PROTOCOL_HEADER: &str = "/multistream/1.0.0";

/// The listener's refusal of a proposal ("not available").
pub const NOT_AVAILABLE: &str = "na";

/// The request to list supported protocols; we answer it with [`NOT_AVAILABLE`].
pub const LIST: &str = "ls";

/// Default longest line, in bytes, counting the trailing `\n`. Protocol ids are short paths;
/// 1024 bytes is far above any real one and keeps per-stream memory small.
pub const MAX_LINE_LEN: usize = 1024;

/// Default number of proposals a listener refuses with `na` before failing with
/// [`NegotiationError::TooManyAttempts`]. Real dialers propose one to a handful of ids.
pub const MAX_REFUSED_PROPOSALS: usize = 16;

/// Limits applied by a [`Dialer`] or [`Listener`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NegotiationLimits {
    max_line_len: usize,
    max_refused: usize,
}

impl Default for NegotiationLimits {
    fn default() -> Self {
        Self {
            max_line_len: MAX_LINE_LEN,
            max_refused: MAX_REFUSED_PROPOSALS,
        }
    }
}

impl NegotiationLimits {
    /// Longest line accepted or sent, counting the `\n`. Default [`MAX_LINE_LEN`]. Values below
    /// the header's length are raised to it, since no negotiation could succeed otherwise.
    #[must_use]
    pub fn max_line_len(mut self, max: usize) -> Self {
        self.max_line_len = max.max(PROTOCOL_HEADER.len() + 1);
        self
    }

    /// Proposals a listener refuses before failing. Default [`MAX_REFUSED_PROPOSALS`].
    #[must_use]
    pub fn max_refused(mut self, max: usize) -> Self {
        self.max_refused = max;
        self
    }

    /// The configured longest line.
    #[must_use]
    pub fn line_len(&self) -> usize {
        self.max_line_len
    }

    /// The configured number of refusals.
    #[must_use]
    pub fn refused(&self) -> usize {
        self.max_refused
    }

    /// Most bytes a negotiator ever buffers: one maximal line plus its length prefix.
    #[must_use]
    pub fn max_buffered(&self) -> usize {
        uvarint_len(self.max_line_len as u64) + self.max_line_len
    }
}

/// A successful negotiation.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct Negotiated {
    /// The agreed protocol id.
    pub protocol: String,
    /// Bytes received after the final negotiation line. They belong to the application
    /// protocol and must be handed to it before anything read later.
    pub remaining: Bytes,
}

/// What an input achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Progress {
    /// More input is needed (after draining `poll_output`).
    Pending,
    /// Negotiation succeeded; still drain `poll_output` once more.
    Negotiated(Negotiated),
}

/// Where a negotiation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NegotiationState {
    /// Waiting for the peer's `/multistream/1.0.0` header.
    AwaitingHeader,
    /// Dialer: waiting for the echo or `na` of the current proposal.
    AwaitingReply,
    /// Listener: waiting for a proposal.
    AwaitingProposal,
    /// A protocol was agreed; the negotiator takes no more input.
    Negotiated,
    /// The negotiation failed; the stream should be reset.
    Failed,
}

/// Why a negotiation failed.
///
/// Sorted as DESIGN §3 asks: malformed input (`LineTooLong`, `BadLengthPrefix`,
/// `MissingNewline`, `NotUtf8`, `EmptyLine`), protocol violations (`UnexpectedHeader`,
/// `UnexpectedReply`, `TooManyAttempts`), incompatibility (`Unsupported`) and local misuse
/// (`Finished`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiationError {
    /// A line's length prefix announced more than the limit.
    #[error("line of {len} bytes exceeds the limit of {max} bytes")]
    LineTooLong {
        /// Length the peer announced, newline included.
        len: u64,
        /// Longest line accepted.
        max: usize,
    },
    /// The length prefix is not a minimal uvarint.
    #[error("malformed line length prefix")]
    BadLengthPrefix,
    /// A line does not end in `\n`.
    #[error("line does not end in a newline")]
    MissingNewline,
    /// A line is not UTF-8.
    #[error("line is not valid UTF-8")]
    NotUtf8,
    /// A line holds nothing but its newline (an empty protocol id).
    #[error("empty line where a header or protocol id was expected")]
    EmptyLine,
    /// The first line was not `/multistream/1.0.0`.
    #[error("expected the {PROTOCOL_HEADER} header, received {received:?}")]
    UnexpectedHeader {
        /// The line received instead.
        received: String,
    },
    /// The listener answered a proposal with neither its echo nor `na`.
    #[error("proposed {proposed:?}, received {received:?}")]
    UnexpectedReply {
        /// Our proposal.
        proposed: String,
        /// The line received instead.
        received: String,
    },
    /// The listener refused every protocol the dialer proposed.
    #[error("the peer supports none of {protocols:?}")]
    Unsupported {
        /// The refused protocol ids, in proposal order.
        protocols: Vec<String>,
    },
    /// The dialer's proposals were refused more often than the listener allows.
    #[error("more than {max} proposals refused")]
    TooManyAttempts {
        /// Refusals allowed.
        max: usize,
    },
    /// `handle_input` was called after the negotiation ended (local misuse).
    #[error("negotiation already ended")]
    Finished,
}

impl From<FrameError> for NegotiationError {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::TooLong { announced, max } => Self::LineTooLong {
                len: announced,
                max,
            },
            FrameError::MalformedLength => Self::BadLengthPrefix,
        }
    }
}

/// A protocol id a [`Dialer`] cannot propose (local misuse).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolIdError {
    /// The dialer was given no protocol to propose.
    #[error("no protocol to propose")]
    NoProtocols,
    /// The id is empty, contains a newline, or is a reserved word (`na`, `ls`, the header).
    #[error("invalid protocol id {0:?}")]
    Invalid(String),
    /// The id does not fit in one line under the configured limit.
    #[error("protocol id of {len} bytes does not fit a line of {max} bytes")]
    TooLong {
        /// Id length plus newline.
        len: usize,
        /// Longest line allowed.
        max: usize,
    },
}

/// Appends one line (`uvarint(len) ‖ text ‖ \n`) to `out`.
fn put_line(out: &mut BytesMut, text: &str) {
    put_uvarint(out, text.len() as u64 + 1);
    out.put_slice(text.as_bytes());
    out.put_u8(b'\n');
}

/// Splits received bytes into lines without ever buffering more than one line and prefix.
#[derive(Debug)]
struct LineReader {
    decoder: FrameDecoder,
    max_buffered: usize,
}

impl LineReader {
    fn new(limits: NegotiationLimits) -> Self {
        Self {
            decoder: FrameDecoder::new(limits.max_line_len),
            max_buffered: limits.max_buffered(),
        }
    }

    /// Takes from `input` only what fits under the bound and returns the next complete line,
    /// advancing `input` past what was taken. `Ok(None)` means `input` is used up.
    fn next_line(&mut self, input: &mut &[u8]) -> Result<Option<String>, NegotiationError> {
        loop {
            if let Some(frame) = self.decoder.decode()? {
                return parse_line(&frame).map(Some);
            }
            if input.is_empty() {
                return Ok(None);
            }
            let room = self.max_buffered.saturating_sub(self.decoder.buffered());
            if room == 0 {
                // Cannot happen: a buffer of `max_buffered` bytes holds a whole line or a prefix
                // announcing too long a line, and `decode` returned neither. Fail closed.
                return Err(NegotiationError::BadLengthPrefix);
            }
            let take = room.min(input.len());
            self.decoder.extend(&input[..take]);
            *input = &input[take..];
        }
    }

    fn buffered(&self) -> usize {
        self.decoder.buffered()
    }

    /// Bytes buffered past the last line, followed by the unread `rest` of the input.
    fn into_remaining(self, rest: &[u8]) -> Bytes {
        let mut remaining = self.decoder.into_remaining();
        if remaining.is_empty() {
            return Bytes::copy_from_slice(rest);
        }
        remaining.extend_from_slice(rest);
        remaining.freeze()
    }
}

fn parse_line(frame: &[u8]) -> Result<String, NegotiationError> {
    let Some((&b'\n', text)) = frame.split_last() else {
        return Err(NegotiationError::MissingNewline);
    };
    if text.is_empty() {
        return Err(NegotiationError::EmptyLine);
    }
    let text = std::str::from_utf8(text).map_err(|_| NegotiationError::NotUtf8)?;
    Ok(text.to_owned())
}

/// The state shared by both sides: line reader, pending output, and the result.
#[derive(Debug)]
struct Core {
    /// `None` once negotiation ended (the reader's leftovers went into `remaining`).
    reader: Option<LineReader>,
    output: BytesMut,
    state: NegotiationState,
}

impl Core {
    fn new(limits: NegotiationLimits, state: NegotiationState) -> Self {
        Self {
            reader: Some(LineReader::new(limits)),
            output: BytesMut::new(),
            state,
        }
    }

    fn poll_output(&mut self) -> Option<Bytes> {
        (!self.output.is_empty()).then(|| self.output.split().freeze())
    }

    fn buffered(&self) -> usize {
        self.reader.as_ref().map_or(0, LineReader::buffered)
    }

    fn succeed(&mut self, protocol: String, rest: &[u8]) -> Progress {
        self.state = NegotiationState::Negotiated;
        let remaining = self
            .reader
            .take()
            .map_or_else(|| Bytes::copy_from_slice(rest), |r| r.into_remaining(rest));
        Progress::Negotiated(Negotiated {
            protocol,
            remaining,
        })
    }

    fn fail(&mut self, error: NegotiationError) -> NegotiationError {
        self.state = NegotiationState::Failed;
        self.reader = None;
        error
    }
}

/// The initiating side: proposes protocols in order until one is echoed.
#[derive(Debug)]
pub struct Dialer {
    core: Core,
    protocols: Vec<String>,
    /// Index of the proposal awaiting a reply.
    current: usize,
}

impl Dialer {
    /// A dialer proposing `protocols` in order, with default limits. Its first output is the
    /// header and the first proposal in one write.
    pub fn new<I, P>(protocols: I) -> Result<Self, ProtocolIdError>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        Self::with_limits(protocols, NegotiationLimits::default())
    }

    /// As [`Dialer::new`], with explicit limits.
    pub fn with_limits<I, P>(
        protocols: I,
        limits: NegotiationLimits,
    ) -> Result<Self, ProtocolIdError>
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        let protocols: Vec<String> = protocols.into_iter().map(Into::into).collect();
        if protocols.is_empty() {
            return Err(ProtocolIdError::NoProtocols);
        }
        for protocol in &protocols {
            if protocol.is_empty()
                || protocol.contains('\n')
                || [NOT_AVAILABLE, LIST, PROTOCOL_HEADER].contains(&protocol.as_str())
            {
                return Err(ProtocolIdError::Invalid(protocol.clone()));
            }
            if protocol.len() + 1 > limits.max_line_len {
                return Err(ProtocolIdError::TooLong {
                    len: protocol.len() + 1,
                    max: limits.max_line_len,
                });
            }
        }
        let mut core = Core::new(limits, NegotiationState::AwaitingHeader);
        put_line(&mut core.output, PROTOCOL_HEADER);
        put_line(&mut core.output, &protocols[0]);
        Ok(Self {
            core,
            protocols,
            current: 0,
        })
    }

    /// Consumes received bytes (any split). On `na` the next proposal is queued for
    /// [`Dialer::poll_output`]; once every proposal is refused the result is
    /// [`NegotiationError::Unsupported`].
    pub fn handle_input(&mut self, data: &[u8]) -> Result<Progress, NegotiationError> {
        let mut input = data;
        loop {
            let Some(reader) = self.core.reader.as_mut() else {
                return Err(NegotiationError::Finished);
            };
            let line = match reader.next_line(&mut input) {
                Ok(Some(line)) => line,
                Ok(None) => return Ok(Progress::Pending),
                Err(error) => return Err(self.core.fail(error)),
            };
            match self.core.state {
                NegotiationState::AwaitingHeader if line == PROTOCOL_HEADER => {
                    self.core.state = NegotiationState::AwaitingReply;
                }
                NegotiationState::AwaitingHeader => {
                    return Err(self
                        .core
                        .fail(NegotiationError::UnexpectedHeader { received: line }));
                }
                NegotiationState::AwaitingReply if line == self.protocols[self.current] => {
                    return Ok(self.core.succeed(line, input));
                }
                NegotiationState::AwaitingReply if line == NOT_AVAILABLE => {
                    self.current += 1;
                    match self.protocols.get(self.current) {
                        Some(next) => put_line(&mut self.core.output, next),
                        None => {
                            let protocols = std::mem::take(&mut self.protocols);
                            return Err(self
                                .core
                                .fail(NegotiationError::Unsupported { protocols }));
                        }
                    }
                }
                NegotiationState::AwaitingReply => {
                    let proposed = self.protocols[self.current].clone();
                    return Err(self.core.fail(NegotiationError::UnexpectedReply {
                        proposed,
                        received: line,
                    }));
                }
                // The reader is gone in these states, so we returned `Finished` above.
                NegotiationState::AwaitingProposal
                | NegotiationState::Negotiated
                | NegotiationState::Failed => return Err(NegotiationError::Finished),
            }
        }
    }

    /// Bytes to write to the stream, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Bytes> {
        self.core.poll_output()
    }

    /// Where the negotiation stands.
    #[must_use]
    pub fn state(&self) -> NegotiationState {
        self.core.state
    }

    /// The proposal currently awaiting a reply, if negotiation is under way.
    #[must_use]
    pub fn current_proposal(&self) -> Option<&str> {
        self.protocols.get(self.current).map(String::as_str)
    }

    /// Received bytes held while waiting for the rest of a line; at most
    /// [`NegotiationLimits::max_buffered`].
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.core.buffered()
    }
}

/// The accepting side: answers proposals from a fixed set of supported protocols.
///
/// The set is an `Arc<[String]>` so that a node can share one registry between all its inbound
/// streams without copying it per stream; a `Vec<String>` converts into it. Matching is exact
/// and literal, as libp2p does by default; the set is expected to be small (linear search).
#[derive(Debug)]
pub struct Listener {
    core: Core,
    supported: Arc<[String]>,
    refused: usize,
    max_refused: usize,
}

impl Listener {
    /// A listener accepting any protocol of `supported`, with default limits.
    #[must_use]
    pub fn new(supported: impl Into<Arc<[String]>>) -> Self {
        Self::with_limits(supported, NegotiationLimits::default())
    }

    /// As [`Listener::new`], with explicit limits.
    #[must_use]
    pub fn with_limits(supported: impl Into<Arc<[String]>>, limits: NegotiationLimits) -> Self {
        Self {
            core: Core::new(limits, NegotiationState::AwaitingHeader),
            supported: supported.into(),
            refused: 0,
            max_refused: limits.max_refused,
        }
    }

    /// Consumes received bytes (any split). Replies (header, echo, `na`) are queued for
    /// [`Listener::poll_output`]; `ls` is answered with `na` and counts as a refusal.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<Progress, NegotiationError> {
        let mut input = data;
        loop {
            let Some(reader) = self.core.reader.as_mut() else {
                return Err(NegotiationError::Finished);
            };
            let line = match reader.next_line(&mut input) {
                Ok(Some(line)) => line,
                Ok(None) => return Ok(Progress::Pending),
                Err(error) => return Err(self.core.fail(error)),
            };
            match self.core.state {
                NegotiationState::AwaitingHeader if line == PROTOCOL_HEADER => {
                    put_line(&mut self.core.output, PROTOCOL_HEADER);
                    self.core.state = NegotiationState::AwaitingProposal;
                }
                NegotiationState::AwaitingHeader => {
                    return Err(self
                        .core
                        .fail(NegotiationError::UnexpectedHeader { received: line }));
                }
                NegotiationState::AwaitingProposal if self.supported.contains(&line) => {
                    put_line(&mut self.core.output, &line);
                    return Ok(self.core.succeed(line, input));
                }
                NegotiationState::AwaitingProposal => {
                    if self.refused >= self.max_refused {
                        let max = self.max_refused;
                        return Err(self.core.fail(NegotiationError::TooManyAttempts { max }));
                    }
                    self.refused += 1;
                    put_line(&mut self.core.output, NOT_AVAILABLE);
                }
                // The reader is gone in these states, so we returned `Finished` above.
                NegotiationState::AwaitingReply
                | NegotiationState::Negotiated
                | NegotiationState::Failed => return Err(NegotiationError::Finished),
            }
        }
    }

    /// Bytes to write to the stream, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Bytes> {
        self.core.poll_output()
    }

    /// Where the negotiation stands.
    #[must_use]
    pub fn state(&self) -> NegotiationState {
        self.core.state
    }

    /// Proposals refused so far.
    #[must_use]
    pub fn refused(&self) -> usize {
        self.refused
    }

    /// Received bytes held while waiting for the rest of a line; at most
    /// [`NegotiationLimits::max_buffered`].
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.core.buffered()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(text: &str) -> Vec<u8> {
        let mut out = BytesMut::new();
        put_line(&mut out, text);
        out.to_vec()
    }

    fn lines(texts: &[&str]) -> Vec<u8> {
        texts.iter().flat_map(|t| line(t)).collect()
    }

    fn drain(poll: impl FnMut() -> Option<Bytes>) -> Vec<u8> {
        std::iter::from_fn(poll).flatten().collect()
    }

    fn listener(supported: &[&str]) -> Listener {
        Listener::new(supported.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    /// Runs both sides against each other, delivering at most `chunk` bytes per input, for a
    /// bounded number of rounds. Returns both results.
    fn negotiate(
        mut dialer: Dialer,
        mut listener: Listener,
        chunk: usize,
    ) -> (
        Result<Negotiated, NegotiationError>,
        Result<Negotiated, NegotiationError>,
    ) {
        let mut dialer_result = None;
        let mut listener_result = None;
        for _ in 0..64 {
            let to_listener = drain(|| dialer.poll_output());
            for piece in to_listener.chunks(chunk) {
                if listener_result.is_some() {
                    break;
                }
                match listener.handle_input(piece) {
                    Ok(Progress::Pending) => {}
                    Ok(Progress::Negotiated(n)) => listener_result = Some(Ok(n)),
                    Err(e) => listener_result = Some(Err(e)),
                }
            }
            let to_dialer = drain(|| listener.poll_output());
            for piece in to_dialer.chunks(chunk) {
                if dialer_result.is_some() {
                    break;
                }
                match dialer.handle_input(piece) {
                    Ok(Progress::Pending) => {}
                    Ok(Progress::Negotiated(n)) => dialer_result = Some(Ok(n)),
                    Err(e) => dialer_result = Some(Err(e)),
                }
            }
            if dialer_result.is_some() && listener_result.is_some() {
                break;
            }
        }
        (
            dialer_result.expect("dialer finished within the round bound"),
            listener_result.expect("listener finished within the round bound"),
        )
    }

    #[test]
    fn dialer_and_listener_agree_on_a_supported_protocol() {
        let dialer = Dialer::new(["/ipfs/ping/1.0.0"]).unwrap();
        let (d, l) = negotiate(
            dialer,
            listener(&["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"]),
            4096,
        );
        let (d, l) = (d.unwrap(), l.unwrap());
        assert_eq!(d.protocol, "/ipfs/ping/1.0.0");
        assert_eq!(l.protocol, "/ipfs/ping/1.0.0");
        assert!(d.remaining.is_empty() && l.remaining.is_empty());
    }

    #[test]
    fn dialer_sends_header_and_first_proposal_in_one_write() {
        let mut dialer = Dialer::new(["/a", "/b"]).unwrap();
        assert_eq!(
            dialer.poll_output().unwrap(),
            lines(&[PROTOCOL_HEADER, "/a"])
        );
        assert_eq!(dialer.poll_output(), None);
        assert_eq!(dialer.state(), NegotiationState::AwaitingHeader);
    }

    #[test]
    fn negotiation_succeeds_with_bytes_split_at_every_offset() {
        for chunk in 1..=40 {
            let dialer = Dialer::new(["/x", "/ipfs/id/1.0.0"]).unwrap();
            let (d, l) = negotiate(dialer, listener(&["/ipfs/id/1.0.0"]), chunk);
            assert_eq!(d.unwrap().protocol, "/ipfs/id/1.0.0", "chunk {chunk}");
            assert_eq!(l.unwrap().protocol, "/ipfs/id/1.0.0", "chunk {chunk}");
        }
    }

    #[test]
    fn listener_accepts_input_split_at_every_single_offset() {
        let mut wire = lines(&[PROTOCOL_HEADER, "/p"]);
        wire.extend_from_slice(b"app");
        for split in 0..=wire.len() {
            let mut l = listener(&["/p"]);
            let mut collected = Vec::new();
            let mut negotiated = None;
            for part in [&wire[..split], &wire[split..]] {
                if negotiated.is_some() {
                    // After negotiation the caller hands later bytes to the application.
                    collected.extend_from_slice(part);
                } else if let Progress::Negotiated(n) = l.handle_input(part).unwrap() {
                    collected.extend_from_slice(&n.remaining);
                    negotiated = Some(n.protocol);
                }
            }
            assert_eq!(negotiated.as_deref(), Some("/p"), "split {split}");
            assert_eq!(collected, b"app", "split {split}");
            assert_eq!(drain(|| l.poll_output()), lines(&[PROTOCOL_HEADER, "/p"]));
        }
    }

    #[test]
    fn dialer_keeps_application_bytes_that_follow_the_echo() {
        let mut wire = lines(&[PROTOCOL_HEADER, "/ipfs/id/1.0.0"]);
        let app = b"\x05hello and more";
        wire.extend_from_slice(app);
        for split in 0..=wire.len() {
            let mut d = Dialer::new(["/ipfs/id/1.0.0"]).unwrap();
            let _ = drain(|| d.poll_output());
            let mut collected = Vec::new();
            let mut negotiated = None;
            for part in [&wire[..split], &wire[split..]] {
                if negotiated.is_some() {
                    collected.extend_from_slice(part);
                } else if let Progress::Negotiated(n) = d.handle_input(part).unwrap() {
                    collected.extend_from_slice(&n.remaining);
                    negotiated = Some(n.protocol);
                }
            }
            assert_eq!(
                negotiated.as_deref(),
                Some("/ipfs/id/1.0.0"),
                "split {split}"
            );
            assert_eq!(collected, app, "split {split}");
        }
    }

    #[test]
    fn coalesced_header_echo_and_application_data_arrive_in_one_input() {
        let mut dialer = Dialer::new(["/a", "/b"]).unwrap();
        let _ = drain(|| dialer.poll_output());
        let mut wire = lines(&[PROTOCOL_HEADER, NOT_AVAILABLE]);
        assert_eq!(dialer.handle_input(&wire).unwrap(), Progress::Pending);
        assert_eq!(dialer.poll_output().unwrap(), line("/b"));
        wire = line("/b");
        wire.extend_from_slice(&line("framed app message"));
        let Progress::Negotiated(n) = dialer.handle_input(&wire).unwrap() else {
            panic!("expected negotiation");
        };
        assert_eq!(n.protocol, "/b");
        assert_eq!(n.remaining, line("framed app message"));
    }

    #[test]
    fn unsupported_protocol_gets_na_and_an_error_naming_it() {
        let dialer = Dialer::new(["/libp2p/circuit/relay/0.2.0/hop"]).unwrap();
        let mut l = listener(&["/ipfs/id/1.0.0"]);
        let mut d = dialer;
        let out = drain(|| d.poll_output());
        assert_eq!(l.handle_input(&out).unwrap(), Progress::Pending);
        let reply = drain(|| l.poll_output());
        assert_eq!(reply, lines(&[PROTOCOL_HEADER, NOT_AVAILABLE]));
        let error = d.handle_input(&reply).unwrap_err();
        assert_eq!(
            error,
            NegotiationError::Unsupported {
                protocols: vec!["/libp2p/circuit/relay/0.2.0/hop".into()]
            }
        );
        assert!(
            error
                .to_string()
                .contains("/libp2p/circuit/relay/0.2.0/hop")
        );
        assert_eq!(d.state(), NegotiationState::Failed);
        assert_eq!(d.handle_input(b"x"), Err(NegotiationError::Finished));
    }

    #[test]
    fn dialer_falls_back_to_its_second_proposal() {
        let dialer = Dialer::new(["/new/2.0.0", "/old/1.0.0"]).unwrap();
        let (d, l) = negotiate(dialer, listener(&["/old/1.0.0"]), 4096);
        assert_eq!(d.unwrap().protocol, "/old/1.0.0");
        assert_eq!(l.unwrap().protocol, "/old/1.0.0");
    }

    #[test]
    fn listener_answers_ls_with_na() {
        let mut l = listener(&["/p"]);
        assert_eq!(
            l.handle_input(&lines(&[PROTOCOL_HEADER, LIST])).unwrap(),
            Progress::Pending
        );
        assert_eq!(
            drain(|| l.poll_output()),
            lines(&[PROTOCOL_HEADER, NOT_AVAILABLE])
        );
        assert_eq!(l.refused(), 1);
    }

    #[test]
    fn listener_fails_after_too_many_refused_proposals() {
        let mut l = listener(&["/p"]);
        let mut wire = line(PROTOCOL_HEADER);
        for i in 0..=MAX_REFUSED_PROPOSALS {
            wire.extend_from_slice(&line(&format!("/nope/{i}")));
        }
        assert_eq!(
            l.handle_input(&wire),
            Err(NegotiationError::TooManyAttempts {
                max: MAX_REFUSED_PROPOSALS
            })
        );
        let replies = drain(|| l.poll_output());
        let mut expected = line(PROTOCOL_HEADER);
        for _ in 0..MAX_REFUSED_PROPOSALS {
            expected.extend_from_slice(&line(NOT_AVAILABLE));
        }
        assert_eq!(replies, expected);
    }

    #[test]
    fn oversized_line_fails_with_line_too_long() {
        let mut l = listener(&["/p"]);
        let mut wire = Vec::new();
        put_uvarint(&mut wire, MAX_LINE_LEN as u64 + 1);
        assert_eq!(
            l.handle_input(&wire),
            Err(NegotiationError::LineTooLong {
                len: MAX_LINE_LEN as u64 + 1,
                max: MAX_LINE_LEN
            })
        );
        assert_eq!(l.state(), NegotiationState::Failed);
    }

    #[test]
    fn configured_line_limit_is_enforced() {
        let limits = NegotiationLimits::default().max_line_len(64);
        let mut l = Listener::with_limits(vec!["/p".to_string()], limits);
        let long = format!("/{}", "a".repeat(70));
        let wire = lines(&[PROTOCOL_HEADER, &long]);
        assert_eq!(
            l.handle_input(&wire),
            Err(NegotiationError::LineTooLong { len: 72, max: 64 })
        );
        assert!(matches!(
            Dialer::with_limits([long], limits),
            Err(ProtocolIdError::TooLong { len: 72, max: 64 })
        ));
    }

    #[test]
    fn line_without_newline_fails_with_missing_newline() {
        let mut l = listener(&["/p"]);
        let wire = [&[18u8][..], b"/multistream/1.0.0"].concat();
        assert_eq!(l.handle_input(&wire), Err(NegotiationError::MissingNewline));
        let mut d = Dialer::new(["/p"]).unwrap();
        assert_eq!(d.handle_input(&[0]), Err(NegotiationError::MissingNewline));
    }

    #[test]
    fn garbage_header_fails_with_unexpected_header() {
        let mut l = listener(&["/p"]);
        assert_eq!(
            l.handle_input(&line("/p")),
            Err(NegotiationError::UnexpectedHeader {
                received: "/p".into()
            })
        );
        let mut d = Dialer::new(["/p"]).unwrap();
        assert_eq!(
            d.handle_input(&line("/multistream/2.0.0")),
            Err(NegotiationError::UnexpectedHeader {
                received: "/multistream/2.0.0".into()
            })
        );
        // Not multistream at all: `G` of an HTTP request reads as a 71-byte line, which the
        // listener waits for, then refuses because it does not end in a newline.
        let mut l = listener(&["/p"]);
        let request = b"GET / HTTP/1.1\r\nHost: example.invalid\r\n\r\n";
        assert_eq!(l.handle_input(request), Ok(Progress::Pending));
        assert_eq!(
            l.handle_input(&[b'x'; 40]),
            Err(NegotiationError::MissingNewline)
        );
    }

    #[test]
    fn non_utf8_line_fails_with_not_utf8() {
        let mut l = listener(&["/p"]);
        let mut wire = line(PROTOCOL_HEADER);
        wire.extend_from_slice(&[3, 0xff, 0xfe, b'\n']);
        assert_eq!(l.handle_input(&wire), Err(NegotiationError::NotUtf8));
    }

    #[test]
    fn empty_protocol_fails_with_empty_line() {
        let mut l = listener(&["/p"]);
        let mut wire = line(PROTOCOL_HEADER);
        wire.extend_from_slice(&[1, b'\n']);
        assert_eq!(l.handle_input(&wire), Err(NegotiationError::EmptyLine));
    }

    #[test]
    fn non_minimal_length_prefix_fails_with_bad_length_prefix() {
        let mut l = listener(&["/p"]);
        assert_eq!(
            l.handle_input(&[0x80, 0x00]),
            Err(NegotiationError::BadLengthPrefix)
        );
    }

    #[test]
    fn dialer_rejects_an_unexpected_reply() {
        let mut d = Dialer::new(["/p"]).unwrap();
        assert_eq!(
            d.handle_input(&lines(&[PROTOCOL_HEADER, "/q"])),
            Err(NegotiationError::UnexpectedReply {
                proposed: "/p".into(),
                received: "/q".into()
            })
        );
    }

    #[test]
    fn dialer_refuses_invalid_local_protocol_ids() {
        let none: [&str; 0] = [];
        assert_eq!(Dialer::new(none).unwrap_err(), ProtocolIdError::NoProtocols);
        for bad in ["", "na", "ls", PROTOCOL_HEADER, "/a\n/b"] {
            assert_eq!(
                Dialer::new([bad]).unwrap_err(),
                ProtocolIdError::Invalid(bad.into())
            );
        }
    }

    #[test]
    fn input_after_success_is_refused_as_misuse() {
        let mut l = listener(&["/p"]);
        let progress = l.handle_input(&lines(&[PROTOCOL_HEADER, "/p"])).unwrap();
        assert!(matches!(progress, Progress::Negotiated(_)));
        assert_eq!(l.handle_input(b"more"), Err(NegotiationError::Finished));
        assert_eq!(l.buffered(), 0);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_or_overfill_the_buffer(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 0..8),
            prefix_header in any::<bool>(),
        ) {
            let bound = NegotiationLimits::default().max_buffered();
            let mut l = listener(&["/p"]);
            let mut d = Dialer::new(["/p"]).unwrap();
            let header = line(PROTOCOL_HEADER);
            let lead: &[u8] = if prefix_header { &header } else { &[] };
            let (mut l_done, mut d_done) = (false, false);
            for chunk in std::iter::once(lead).chain(chunks.iter().map(Vec::as_slice)) {
                if !l_done {
                    l_done = !matches!(l.handle_input(chunk), Ok(Progress::Pending));
                    prop_assert!(l.buffered() <= bound);
                }
                if !d_done {
                    d_done = !matches!(d.handle_input(chunk), Ok(Progress::Pending));
                    prop_assert!(d.buffered() <= bound);
                }
                let _ = drain(|| l.poll_output());
                let _ = drain(|| d.poll_output());
            }
        }

        #[test]
        fn long_valid_looking_lines_stay_under_the_bound(len in 0usize..3000, split in 0usize..3000) {
            let bound = NegotiationLimits::default().max_buffered();
            let mut wire = line(PROTOCOL_HEADER);
            put_uvarint(&mut wire, len as u64);
            wire.extend(std::iter::repeat_n(b'a', len));
            let split = split.min(wire.len());
            let mut l = listener(&["/p"]);
            for part in [&wire[..split], &wire[split..]] {
                match l.handle_input(part) {
                    Ok(_) => prop_assert!(l.buffered() <= bound),
                    Err(_) => break,
                }
            }
        }
    }
}
