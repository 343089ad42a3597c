//! What carries a connection's streams: a QUIC connection, or a relayed circuit upgraded with
//! TLS and yamux. The stream logic above (negotiation, identify, ping, application streams)
//! is written once against [`Transport`].

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use quinn_proto::{ConnectionHandle, Dir, ReadError, VarInt, WriteError};

use super::relayed::RelayedTransport;

/// A stream on either kind of transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StreamKey {
    /// A bidirectional QUIC stream.
    Quic(quinn_proto::StreamId),
    /// A yamux stream of a relayed connection.
    Yamux(crate::yamux::StreamId),
}

impl std::fmt::Display for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamKey::Quic(id) => write!(f, "quic:{id}"),
            StreamKey::Yamux(id) => write!(f, "yamux:{id}"),
        }
    }
}

/// One chunk read from a stream.
#[derive(Debug)]
pub(crate) enum Chunk {
    Data(Bytes),
    Blocked,
    Finished,
    Reset(u64),
    /// The stream is unknown to the transport (already gone).
    Closed,
}

/// What [`Transport::read_gathered`] found.
#[derive(Debug)]
pub(crate) struct Gathered {
    /// The data waiting, joined into one chunk; or, when no byte waited, the stream's state.
    pub(crate) chunk: Chunk,
    /// The end or reset of the stream met after the data in `chunk`; `None` when the gathering
    /// stopped because nothing more waited or the budget was spent.
    pub(crate) then: Option<StreamEnd>,
}

/// What ended one pass of [`Transport::read_each`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PassEnd {
    /// Nothing more waits now, or the pass's budget was spent.
    Waiting,
    /// The peer finished or reset its sending side (after the pieces handed out, if any).
    Ended(StreamEnd),
    /// The stream is unknown to the transport (already gone).
    Closed,
}

/// How the peer ended its sending side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// Finished: every byte was delivered.
    Finished,
    /// Reset with this code: bytes may be missing.
    Reset(u64),
}

impl StreamEnd {
    /// The end as a read outcome.
    pub(crate) fn chunk(self) -> Chunk {
        match self {
            StreamEnd::Finished => Chunk::Finished,
            StreamEnd::Reset(code) => Chunk::Reset(code),
        }
    }
}

/// Received pieces collected before they are joined into one buffer of exactly their size.
#[derive(Default)]
struct Pieces {
    first: Option<Bytes>,
    rest: Vec<Bytes>,
    len: usize,
}

impl Pieces {
    fn push(&mut self, piece: Bytes) {
        self.len += piece.len();
        if self.first.is_none() {
            self.first = Some(piece);
        } else {
            self.rest.push(piece);
        }
    }

    /// The pieces as one chunk; `None` when there were none.
    fn join(self) -> Option<Bytes> {
        let first = self.first?;
        if self.rest.is_empty() {
            return Some(first);
        }
        let mut joined = BytesMut::with_capacity(self.len);
        joined.extend_from_slice(&first);
        for piece in &self.rest {
            joined.extend_from_slice(piece);
        }
        Some(joined.freeze())
    }
}

/// The outcome of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// This many bytes were taken; `0` means blocked until writable.
    Bytes(usize),
    /// The peer stopped the stream with this code.
    Stopped(u64),
    /// Our sending side is already finished or reset, or the stream is gone.
    Closed,
}

/// A direct QUIC connection.
pub(crate) struct QuicTransport {
    pub(crate) handle: ConnectionHandle,
    pub(crate) conn: quinn_proto::Connection,
}

/// The carrier of a connection's streams.
pub(crate) enum Transport {
    /// Direct QUIC.
    Quic(Box<QuicTransport>),
    /// A circuit through a relay.
    Relayed(Box<RelayedTransport>),
}

impl Transport {
    /// The QUIC connection, for direct connections.
    pub(crate) fn quic(&mut self) -> Option<&mut quinn_proto::Connection> {
        match self {
            Transport::Quic(q) => Some(&mut q.conn),
            Transport::Relayed(_) => None,
        }
    }

    /// The QUIC connection, for direct connections.
    pub(crate) fn quic_ref(&self) -> Option<&quinn_proto::Connection> {
        match self {
            Transport::Quic(q) => Some(&q.conn),
            Transport::Relayed(_) => None,
        }
    }

    /// The remote UDP address of a direct connection (`None` for a relayed one).
    pub(crate) fn remote_address(&self) -> Option<SocketAddr> {
        match self {
            Transport::Quic(q) => Some(q.conn.remote_address()),
            Transport::Relayed(_) => None,
        }
    }

    pub(crate) fn open_bi(&mut self) -> Option<StreamKey> {
        match self {
            Transport::Quic(q) => q.conn.streams().open(Dir::Bi).map(StreamKey::Quic),
            Transport::Relayed(r) => r.yamux_mut()?.open_stream().ok().map(StreamKey::Yamux),
        }
    }

    pub(crate) fn accept_bi(&mut self) -> Option<StreamKey> {
        match self {
            Transport::Quic(q) => q.conn.streams().accept(Dir::Bi).map(StreamKey::Quic),
            // yamux announces inbound streams as events, one at a time.
            Transport::Relayed(_) => None,
        }
    }

    pub(crate) fn read_chunk(&mut self, key: StreamKey, max: usize) -> Chunk {
        match (self, key) {
            (Transport::Quic(q), StreamKey::Quic(id)) => {
                let mut recv = q.conn.recv_stream(id);
                let Ok(mut chunks) = recv.read(true) else {
                    return Chunk::Closed;
                };
                let chunk = match chunks.next(max) {
                    Ok(Some(chunk)) => Chunk::Data(chunk.bytes),
                    Ok(None) => Chunk::Finished,
                    Err(ReadError::Blocked) => Chunk::Blocked,
                    Err(ReadError::Reset(code)) => Chunk::Reset(code.into_inner()),
                };
                // Whether a flow-control update must go out does not matter: the node polls
                // every touched connection for transmits after each input.
                let _ = chunks.finalize();
                chunk
            }
            (Transport::Relayed(r), StreamKey::Yamux(id)) => {
                let Some(yamux) = r.yamux_mut() else {
                    return Chunk::Closed;
                };
                match yamux.read(id, max) {
                    Ok(crate::yamux::ReadOutcome::Data(data)) => Chunk::Data(data),
                    Ok(crate::yamux::ReadOutcome::Blocked) => Chunk::Blocked,
                    Ok(crate::yamux::ReadOutcome::Finished) => Chunk::Finished,
                    // yamux forgets a reset stream; a read of a stream we still track means the
                    // peer reset it (yamux resets carry no code).
                    Err(_) => Chunk::Reset(0),
                }
            }
            _ => Chunk::Closed,
        }
    }

    /// Hands what waits on a stream to `each`, piece by piece in order, up to `max` bytes in at
    /// most `max_pieces` pieces, in one pass over the stream. quinn-proto keeps each received
    /// STREAM frame as its own piece (about one per packet), so one read per piece would pay
    /// for the stream lookup and the flow-control bookkeeping once per packet. Stops at the
    /// first error of `each` (what it was handed counts as read). Returns the bytes handed out
    /// and what ended the pass.
    ///
    /// quinn-proto forgets a stream's receiving side once its end or reset has been read, so a
    /// caller that got pieces and then [`PassEnd::Ended`] must keep the end for later.
    pub(crate) fn read_each<E>(
        &mut self,
        key: StreamKey,
        max: usize,
        max_pieces: usize,
        mut each: impl FnMut(Bytes) -> Result<(), E>,
    ) -> Result<(usize, PassEnd), E> {
        let (Transport::Quic(q), StreamKey::Quic(id)) = (&mut *self, key) else {
            // A yamux stream holds its data in one buffer: one read takes it.
            return match self.read_chunk(key, max) {
                Chunk::Data(data) => {
                    let len = data.len();
                    each(data).map(|()| (len, PassEnd::Waiting))
                }
                Chunk::Blocked => Ok((0, PassEnd::Waiting)),
                Chunk::Finished => Ok((0, PassEnd::Ended(StreamEnd::Finished))),
                Chunk::Reset(code) => Ok((0, PassEnd::Ended(StreamEnd::Reset(code)))),
                Chunk::Closed => Ok((0, PassEnd::Closed)),
            };
        };
        let mut recv = q.conn.recv_stream(id);
        let Ok(mut chunks) = recv.read(true) else {
            return Ok((0, PassEnd::Closed));
        };
        let (mut len, mut count) = (0, 0);
        let mut outcome = Ok(PassEnd::Waiting);
        while len < max && count < max_pieces.max(1) {
            match chunks.next(max - len) {
                Ok(Some(chunk)) => {
                    len += chunk.bytes.len();
                    count += 1;
                    if let Err(error) = each(chunk.bytes) {
                        outcome = Err(error);
                        break;
                    }
                }
                Ok(None) => {
                    outcome = Ok(PassEnd::Ended(StreamEnd::Finished));
                    break;
                }
                Err(ReadError::Blocked) => break,
                Err(ReadError::Reset(code)) => {
                    outcome = Ok(PassEnd::Ended(StreamEnd::Reset(code.into_inner())));
                    break;
                }
            }
        }
        // Whether a flow-control update must go out does not matter: the node polls every
        // touched connection for transmits after each input.
        let _ = chunks.finalize();
        outcome.map(|end| (len, end))
    }

    /// Reads what waits on a stream, up to `max` bytes in at most `max_pieces` pieces, as one
    /// chunk: the pieces of one [`read_each`](Self::read_each) pass joined (a lone piece is
    /// returned without a copy). An end or reset met after some data is returned in `then`.
    pub(crate) fn read_gathered(
        &mut self,
        key: StreamKey,
        max: usize,
        max_pieces: usize,
    ) -> Gathered {
        if max == 0 {
            // As a yamux read of nothing: no bytes, and nothing consumed.
            return Gathered {
                chunk: Chunk::Data(Bytes::new()),
                then: None,
            };
        }
        let mut pieces = Pieces::default();
        let pass = self.read_each(key, max, max_pieces, |piece| {
            pieces.push(piece);
            Ok::<(), std::convert::Infallible>(())
        });
        let end = match pass {
            Ok((_, end)) => end,
            Err(never) => match never {},
        };
        match (pieces.join(), end) {
            (Some(data), PassEnd::Ended(end)) => Gathered {
                chunk: Chunk::Data(data),
                then: Some(end),
            },
            // quinn-proto loses no stream in the middle of a pass.
            (Some(data), PassEnd::Waiting | PassEnd::Closed) => Gathered {
                chunk: Chunk::Data(data),
                then: None,
            },
            (None, PassEnd::Waiting) => Gathered {
                chunk: Chunk::Blocked,
                then: None,
            },
            (None, PassEnd::Ended(end)) => Gathered {
                chunk: end.chunk(),
                then: None,
            },
            (None, PassEnd::Closed) => Gathered {
                chunk: Chunk::Closed,
                then: None,
            },
        }
    }

    pub(crate) fn write(&mut self, key: StreamKey, data: &[u8]) -> Written {
        match (self, key) {
            (Transport::Quic(q), StreamKey::Quic(id)) => {
                let mut stream = q.conn.send_stream(id);
                let mut offset = 0;
                write_until_blocked(data.len(), || {
                    let n = stream.write(&data[offset..])?;
                    offset += n;
                    Ok(n)
                })
            }
            (Transport::Relayed(r), StreamKey::Yamux(id)) => {
                r.yamux_mut().map_or(Written::Closed, |yamux| {
                    yamux_written(yamux.write(id, data))
                })
            }
            _ => Written::Closed,
        }
    }

    /// Writes whole `Bytes` chunks without copying where the transport allows it.
    pub(crate) fn write_bytes(&mut self, key: StreamKey, data: &mut Bytes) -> Written {
        match (self, key) {
            (Transport::Quic(q), StreamKey::Quic(id)) => {
                let mut stream = q.conn.send_stream(id);
                write_until_blocked(data.len(), || {
                    let mut chunks = [std::mem::take(data)];
                    let result = stream.write_chunks(&mut chunks);
                    let [rest] = chunks;
                    *data = rest;
                    result.map(|written| written.bytes)
                })
            }
            (Transport::Relayed(r), StreamKey::Yamux(id)) => {
                r.yamux_mut().map_or(Written::Closed, |yamux| {
                    yamux_written(yamux.write_bytes(id, data))
                })
            }
            _ => Written::Closed,
        }
    }

    /// Finishes our sending side. Returns the peer's stop code if it stopped the stream.
    pub(crate) fn finish(&mut self, key: StreamKey) -> Result<(), Written> {
        match (self, key) {
            (Transport::Quic(q), StreamKey::Quic(id)) => match q.conn.send_stream(id).finish() {
                Ok(()) => Ok(()),
                Err(quinn_proto::FinishError::Stopped(code)) => {
                    Err(Written::Stopped(code.into_inner()))
                }
                Err(quinn_proto::FinishError::ClosedStream) => Err(Written::Closed),
            },
            (Transport::Relayed(r), StreamKey::Yamux(id)) => match r.yamux_mut() {
                Some(yamux) => yamux.finish(id).map_err(|_| Written::Closed),
                None => Err(Written::Closed),
            },
            _ => Err(Written::Closed),
        }
    }

    /// Resets our sending side and stops the peer's.
    pub(crate) fn abort(&mut self, key: StreamKey, code: u32) {
        match (self, key) {
            (Transport::Quic(q), StreamKey::Quic(id)) => {
                let code = VarInt::from_u32(code);
                let _ = q.conn.send_stream(id).reset(code);
                let _ = q.conn.recv_stream(id).stop(code);
            }
            (Transport::Relayed(r), StreamKey::Yamux(id)) => {
                if let Some(yamux) = r.yamux_mut() {
                    let _ = yamux.reset(id);
                }
            }
            _ => {}
        }
    }

    /// Finishes our sending side after what was written, and stops the peer's.
    pub(crate) fn finish_and_stop(&mut self, key: StreamKey, code: u32) {
        match (self, key) {
            (Transport::Quic(q), StreamKey::Quic(id)) => {
                let _ = q.conn.send_stream(id).finish();
                let _ = q.conn.recv_stream(id).stop(VarInt::from_u32(code));
            }
            (Transport::Relayed(r), StreamKey::Yamux(id)) => {
                // yamux has no "stop sending": finish ours; unread data is dropped with the
                // stream once the peer finishes.
                if let Some(yamux) = r.yamux_mut() {
                    let _ = yamux.finish(id);
                }
            }
            _ => {}
        }
    }
}

/// A yamux write's result as a [`Written`]: a full output budget or window is a write that
/// took nothing (the stream hears `Writable` later); any other refusal means the stream is gone.
fn yamux_written(result: Result<usize, crate::yamux::YamuxError>) -> Written {
    match result {
        Ok(n) => Written::Bytes(n),
        Err(crate::yamux::YamuxError::LimitExceeded(_)) => Written::Bytes(0),
        Err(_) => Written::Closed,
    }
}

/// Calls `attempt` (one quinn-proto write, returning the bytes it took) until `remaining` bytes
/// are taken or quinn-proto says `Blocked`. quinn-proto raises `Writable` only for a stream a
/// write found blocked: a write it cut short at the connection's flow-control window or its
/// send buffer registers nothing, and a writer waiting for `Writable` after it would wait for
/// good. Each call takes at least one byte or ends the loop. An error after some bytes were
/// taken reports those bytes; the error comes back on the next write.
fn write_until_blocked(
    mut remaining: usize,
    mut attempt: impl FnMut() -> Result<usize, WriteError>,
) -> Written {
    let mut written = 0;
    while remaining > 0 {
        match attempt() {
            Ok(n) if n > 0 => {
                written += n;
                remaining = remaining.saturating_sub(n);
            }
            Ok(_) | Err(WriteError::Blocked) => break,
            Err(WriteError::Stopped(code)) if written == 0 => {
                return Written::Stopped(code.into_inner());
            }
            Err(WriteError::ClosedStream) if written == 0 => return Written::Closed,
            Err(_) => break,
        }
    }
    Written::Bytes(written)
}
