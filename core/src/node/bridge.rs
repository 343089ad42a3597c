//! Byte bridging of a relayed circuit at the relay: the source's HOP stream and the target's
//! STOP stream, forwarded to each other chunk by chunk (DESIGN §4.3).
//!
//! A chunk read from one QUIC stream is the same `Bytes` handed to the other stream's
//! `write_chunks`, except that pieces waiting together are joined into one chunk of at most
//! [`BRIDGE_CHUNK`] (see `Bridge::gather`). The node runs bridges once per batch of input
//! (`Node::poll_output`), so a batch of received packets is forwarded as a few large pieces. The
//! relay reads from one end only while the other end takes
//! data, so at most one chunk per direction waits in the bridge; everything else stays in
//! quinn-proto's flow-controlled buffers, and a slow reader slows the writer.

use bytes::Bytes;

use super::ids::StreamHandle;
use super::transport::{Chunk, StreamEnd, StreamKey, Transport, Written};

/// Largest chunk the relay reads at once: bounds the bytes parked in a bridge per direction.
pub(crate) const BRIDGE_CHUNK: usize = 16 * 1024;
/// Most pieces (received STREAM frames, about one per packet) joined into one chunk; about
/// BRIDGE_CHUNK of full-sized packets.
const MAX_GATHERED: usize = 16;
/// Chunks forwarded per direction per call, so one busy circuit cannot starve the others
/// within one input; the rest is picked up on the next readable or writable event.
const CHUNKS_PER_TURN: usize = 64;

/// Stream reset code when a circuit ends because a limit was hit.
pub(crate) const CODE_CIRCUIT_LIMIT: u32 = 0x100;
/// Stream reset code when the other end of a circuit reset or vanished.
pub(crate) const CODE_CIRCUIT_PEER_GONE: u32 = 0x101;

/// Which end of a circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum End {
    /// The initiator's HOP stream.
    Source = 0,
    /// The target's STOP stream.
    Target = 1,
}

impl End {
    pub(crate) fn other(self) -> End {
        match self {
            End::Source => End::Target,
            End::Target => End::Source,
        }
    }
}

/// Why forwarding stopped for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BridgeEnd {
    /// Both directions finished cleanly.
    Finished,
    /// One end reset (or its connection closed).
    Reset,
    /// The per-direction byte limit was reached.
    DataLimit,
}

/// One relayed circuit's forwarding state.
#[derive(Debug)]
pub(crate) struct Bridge {
    pub(crate) ends: [StreamHandle; 2],
    /// A chunk read from `ends[i]` that `ends[other]` has not taken yet.
    pending: [Option<Bytes>; 2],
    /// Bytes forwarded from `ends[i]` to the other end.
    pub(crate) forwarded: [u64; 2],
    /// `ends[i]` finished sending; finish the other end once `pending[i]` is flushed.
    source_finished: [bool; 2],
    /// We finished the sending side of `ends[i]`.
    finished_toward: [bool; 2],
    limit_bytes: Option<u64>,
    /// Test-only copy of what entered the bridge (see `Node::tap_forwarded`).
    #[cfg(any(test, feature = "test-driver"))]
    pub(crate) tap: Option<BridgeTap>,
}

/// The first bytes a bridge forwarded in each direction, for tests that look at what a relay
/// sees (it must be ciphertext). Bounded by `budget` over both directions.
#[cfg(any(test, feature = "test-driver"))]
#[derive(Debug, Clone, Default)]
pub(crate) struct BridgeTap {
    pub(crate) budget: usize,
    /// Source→target, then target→source.
    pub(crate) bytes: [Vec<u8>; 2],
    /// Chunks handed to the other end, per direction (all of them, whatever the budget).
    pub(crate) pieces: [u64; 2],
}

#[cfg(any(test, feature = "test-driver"))]
impl BridgeTap {
    fn record(&mut self, from: End, data: &[u8]) {
        self.pieces[from as usize] += 1;
        let take = data.len().min(self.budget);
        self.bytes[from as usize].extend_from_slice(&data[..take]);
        self.budget -= take;
    }
}

/// What a forwarding turn did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub(crate) enum Turn {
    /// Keep going: wait for the next readable/writable event.
    Continue,
    /// The circuit is over; reset or finish the ends as described and remove the bridge.
    Done(BridgeEnd),
}

impl Bridge {
    pub(crate) fn new(
        source: StreamHandle,
        target: StreamHandle,
        limit_bytes: Option<u64>,
    ) -> Self {
        Self {
            ends: [source, target],
            pending: [None, None],
            forwarded: [0, 0],
            source_finished: [false, false],
            finished_toward: [false, false],
            limit_bytes,
            #[cfg(any(test, feature = "test-driver"))]
            tap: None,
        }
    }

    /// Records a chunk entering the bridge, when tapped (tests only).
    #[cfg(any(test, feature = "test-driver"))]
    fn record_tap(&mut self, from: End, data: &[u8]) {
        if let Some(tap) = &mut self.tap {
            tap.record(from, data);
        }
    }

    #[cfg(not(any(test, feature = "test-driver")))]
    fn record_tap(&mut self, _from: End, _data: &[u8]) {}

    /// Bytes parked in the bridge (at most one chunk per direction).
    pub(crate) fn buffered(&self) -> usize {
        self.pending.iter().flatten().map(Bytes::len).sum()
    }

    /// Hands over bytes that arrived on `from` before the bridge existed (leftovers after the
    /// final STATUS / STOP reply); they are forwarded first and count toward the limit.
    pub(crate) fn preload(&mut self, from: End, data: Bytes) -> Result<(), BridgeEnd> {
        if data.is_empty() {
            return Ok(());
        }
        self.count(from, data.len())?;
        self.record_tap(from, &data);
        self.pending[from as usize] = Some(data);
        Ok(())
    }

    fn count(&mut self, from: End, len: usize) -> Result<(), BridgeEnd> {
        let total = self.forwarded[from as usize] + len as u64;
        if self.limit_bytes.is_some_and(|limit| total > limit) {
            return Err(BridgeEnd::DataLimit);
        }
        self.forwarded[from as usize] = total;
        Ok(())
    }

    /// Moves bytes from `from` to the other end until the reader is empty, the writer is
    /// blocked, or the turn's chunk budget is spent.
    ///
    /// `src` carries `ends[from]`, `dst` the other end.
    pub(crate) fn forward(&mut self, from: End, src: &mut Transport, dst: &mut Transport) -> Turn {
        let to = from.other();
        let (src_id, dst_id) = (self.ends[from as usize].id, self.ends[to as usize].id);
        for _ in 0..CHUNKS_PER_TURN {
            if let Some(mut chunk) = self.pending[from as usize].take() {
                match dst.write_bytes(dst_id, &mut chunk) {
                    Written::Bytes(_) if chunk.is_empty() => {}
                    Written::Bytes(_) => {
                        // Keep what was not taken; resume on the writer's Writable event.
                        self.pending[from as usize] = Some(chunk);
                        return Turn::Continue;
                    }
                    Written::Stopped(_) | Written::Closed => return Turn::Done(BridgeEnd::Reset),
                }
            }
            if self.source_finished[from as usize] {
                if !self.finished_toward[to as usize] {
                    self.finished_toward[to as usize] = true;
                    let _ = dst.finish(dst_id);
                }
                return self.check_both_finished();
            }
            match self.gather(from, src, src_id) {
                Chunk::Data(data) => {
                    if let Err(end) = self.count(from, data.len()) {
                        return Turn::Done(end);
                    }
                    self.record_tap(from, &data);
                    self.pending[from as usize] = Some(data);
                }
                Chunk::Finished => self.source_finished[from as usize] = true,
                Chunk::Blocked => return Turn::Continue,
                Chunk::Reset(_) | Chunk::Closed => return Turn::Done(BridgeEnd::Reset),
            }
        }
        Turn::Continue
    }

    /// Reads up to [`BRIDGE_CHUNK`] bytes from `ends[from]` as one chunk. quinn-proto keeps
    /// each received STREAM frame as its own piece (about one per packet); forwarding them one
    /// by one leaves the writer's send buffer holding one piece per packet in flight, which
    /// quinn-proto scans linearly for every packet it builds. So the pieces waiting at once are
    /// joined into one chunk (`Transport::read_gathered`).
    ///
    /// The end of the stream found after some data is remembered in `source_finished` and the
    /// data returned; a reset after some data is returned instead (the circuit ends
    /// with a reset either way).
    fn gather(&mut self, from: End, src: &mut Transport, src_id: StreamKey) -> Chunk {
        let gathered = src.read_gathered(src_id, BRIDGE_CHUNK, MAX_GATHERED);
        match gathered.then {
            None => gathered.chunk,
            Some(StreamEnd::Finished) => {
                self.source_finished[from as usize] = true;
                gathered.chunk
            }
            Some(reset @ StreamEnd::Reset(_)) => reset.chunk(),
        }
    }

    fn check_both_finished(&self) -> Turn {
        if self.finished_toward[0] && self.finished_toward[1] {
            Turn::Done(BridgeEnd::Finished)
        } else {
            Turn::Continue
        }
    }
}
