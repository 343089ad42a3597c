//! Byte bridging of a relayed circuit at the relay: the source's HOP stream and the target's
//! STOP stream, forwarded to each other chunk by chunk (DESIGN §4.3).
//!
//! Forwarding is zero-copy: a chunk read from one QUIC stream is the same `Bytes` handed to the
//! other stream's `write_chunks`. The relay reads from one end only while the other end takes
//! data, so at most one chunk per direction waits in the bridge; everything else stays in
//! quinn-proto's flow-controlled buffers, and a slow reader slows the writer.

use bytes::Bytes;
use quinn_proto::{ReadError, VarInt, WriteError};

use super::ids::StreamHandle;

/// Largest chunk the relay reads at once: bounds the bytes parked in a bridge per direction.
pub(crate) const BRIDGE_CHUNK: usize = 16 * 1024;
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
    pub(crate) fn new(source: StreamHandle, target: StreamHandle, limit_bytes: Option<u64>) -> Self {
        Self {
            ends: [source, target],
            pending: [None, None],
            forwarded: [0, 0],
            source_finished: [false, false],
            finished_toward: [false, false],
            limit_bytes,
        }
    }

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
    /// `src` is the connection holding `ends[from]`, `dst` the one holding the other end.
    pub(crate) fn forward(
        &mut self,
        from: End,
        src: &mut quinn_proto::Connection,
        dst: &mut quinn_proto::Connection,
    ) -> Turn {
        let to = from.other();
        let (src_id, dst_id) = (self.ends[from as usize].id, self.ends[to as usize].id);
        for _ in 0..CHUNKS_PER_TURN {
            if let Some(mut chunk) = self.pending[from as usize].take() {
                let mut chunks = [chunk.clone()];
                match dst.send_stream(dst_id).write_chunks(&mut chunks) {
                    Ok(written) if written.chunks == 1 => {}
                    Ok(_) | Err(WriteError::Blocked) => {
                        // Keep what was not taken; resume on the writer's Writable event.
                        let [rest] = chunks;
                        chunk = rest;
                        self.pending[from as usize] = Some(chunk);
                        return Turn::Continue;
                    }
                    Err(WriteError::Stopped(_) | WriteError::ClosedStream) => {
                        return Turn::Done(BridgeEnd::Reset);
                    }
                }
            }
            if self.source_finished[from as usize] {
                if !self.finished_toward[to as usize] {
                    self.finished_toward[to as usize] = true;
                    let _ = dst.send_stream(dst_id).finish();
                }
                return self.check_both_finished();
            }
            let mut recv = src.recv_stream(src_id);
            let Ok(mut chunks) = recv.read(true) else {
                return Turn::Done(BridgeEnd::Reset);
            };
            let next = chunks.next(BRIDGE_CHUNK);
            let _ = chunks.finalize();
            match next {
                Ok(Some(chunk)) => {
                    if let Err(end) = self.count(from, chunk.bytes.len()) {
                        return Turn::Done(end);
                    }
                    self.pending[from as usize] = Some(chunk.bytes);
                }
                Ok(None) => self.source_finished[from as usize] = true,
                Err(ReadError::Blocked) => return Turn::Continue,
                Err(ReadError::Reset(_)) => return Turn::Done(BridgeEnd::Reset),
            }
        }
        Turn::Continue
    }

    fn check_both_finished(&self) -> Turn {
        if self.finished_toward[0] && self.finished_toward[1] {
            Turn::Done(BridgeEnd::Finished)
        } else {
            Turn::Continue
        }
    }

    /// Resets both ends (a limit was hit or one end vanished). Ends whose connection is gone
    /// are simply skipped by passing `None`.
    pub(crate) fn reset_end(conn: Option<&mut quinn_proto::Connection>, end: StreamHandle, code: u32) {
        if let Some(conn) = conn {
            let code = VarInt::from_u32(code);
            let _ = conn.send_stream(end.id).reset(code);
            let _ = conn.recv_stream(end.id).stop(code);
        }
    }
}
