//! Per-stream state: half-close flags and flow control in both directions.
//!
//! Receive side invariant: `recv_window + recv_buf.len() + (bytes announced but not yet
//! arrived) + consumed_unacked == window_target`. The peer may send at most `recv_window`
//! more bytes, so buffered data never exceeds the window we granted (`window_target`).

use bytes::{Bytes, BytesMut};

use super::config::INITIAL_STREAM_WINDOW;

/// Result of [`Session::read`](super::Session::read).
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum ReadOutcome {
    /// Bytes, in order. Empty only when `read` was called with `max == 0`.
    Data(Bytes),
    /// Nothing buffered yet; wait for [`YamuxEvent::Readable`](super::YamuxEvent::Readable).
    Blocked,
    /// The peer finished the stream and every byte was read.
    Finished,
}

/// A snapshot of one stream's flow-control state (for diagnostics and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct StreamInfo {
    /// We opened the stream.
    pub outbound: bool,
    /// Bytes we may still send before the peer grants more.
    pub send_window: u32,
    /// Bytes the peer may still send before we grant more.
    pub recv_window: u32,
    /// Receive window currently granted in total (grows up to the configured maximum).
    pub window_target: u32,
    /// Received bytes waiting to be read.
    pub buffered: usize,
    /// We finished our direction.
    pub local_finished: bool,
    /// The peer finished its direction.
    pub remote_finished: bool,
}

#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) outbound: bool,
    /// The peer acknowledged our SYN (always true for inbound streams).
    pub(crate) acked: bool,
    pub(crate) send_window: u32,
    pub(crate) recv_window: u32,
    pub(crate) window_target: u32,
    pub(crate) consumed_unacked: u32,
    pub(crate) recv_buf: BytesMut,
    pub(crate) local_fin: bool,
    pub(crate) remote_fin: bool,
    /// `read` returned `Finished`.
    pub(crate) finish_observed: bool,
    /// The next arriving data raises `Readable`.
    pub(crate) readable_armed: bool,
    /// A `write` returned 0; raise `Writable` once it could accept bytes again.
    pub(crate) write_blocked: bool,
}

impl Stream {
    pub(crate) fn new(outbound: bool) -> Self {
        Self {
            outbound,
            acked: !outbound,
            send_window: INITIAL_STREAM_WINDOW,
            recv_window: INITIAL_STREAM_WINDOW,
            window_target: INITIAL_STREAM_WINDOW,
            consumed_unacked: 0,
            recv_buf: BytesMut::new(),
            local_fin: false,
            remote_fin: false,
            finish_observed: false,
            readable_armed: true,
            write_blocked: false,
        }
    }

    /// Appends arrived payload; returns whether `Readable` should be raised.
    pub(crate) fn push_data(&mut self, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return false;
        }
        self.recv_buf.extend_from_slice(bytes);
        std::mem::replace(&mut self.readable_armed, false)
    }

    /// Takes up to `max` buffered bytes, accounting them as consumed.
    pub(crate) fn take(&mut self, max: usize) -> Bytes {
        let n = max.min(self.recv_buf.len());
        let data = self.recv_buf.split_to(n).freeze();
        // n <= recv_buf.len() <= window_target, a u32.
        self.consumed_unacked = self.consumed_unacked.saturating_add(n as u32);
        if self.recv_buf.is_empty() {
            self.readable_armed = true;
        }
        data
    }

    /// Both directions finished and the application saw the end: the stream can go.
    pub(crate) fn is_done(&self) -> bool {
        self.local_fin && self.finish_observed
    }

    pub(crate) fn info(&self) -> StreamInfo {
        StreamInfo {
            outbound: self.outbound,
            send_window: self.send_window,
            recv_window: self.recv_window,
            window_target: self.window_target,
            buffered: self.recv_buf.len(),
            local_finished: self.local_fin,
            remote_finished: self.remote_fin,
        }
    }
}
