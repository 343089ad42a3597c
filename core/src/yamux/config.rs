//! Session configuration: every bound the session enforces.

/// The window every stream starts with in both directions, fixed by the spec (256 KiB).
pub const INITIAL_STREAM_WINDOW: u32 = 256 * 1024;

/// Configuration of a [`Session`](super::Session).
///
/// Setters clamp out-of-range values to the nearest valid one (documented on each), so a
/// configuration is always usable. Worst-case receive memory is bounded by
/// `max_streams × max_stream_window` and, for window growth, by `max_total_receive_window`.
#[derive(Debug, Clone)]
pub struct YamuxConfig {
    pub(crate) max_streams: usize,
    pub(crate) max_stream_window: u32,
    pub(crate) max_total_receive_window: u64,
    pub(crate) max_frame_payload: usize,
    pub(crate) max_buffered_output: usize,
    pub(crate) max_pending_events: usize,
    pub(crate) max_control_backlog: usize,
    pub(crate) max_ack_backlog: usize,
    pub(crate) max_outstanding_pings: usize,
}

impl Default for YamuxConfig {
    fn default() -> Self {
        Self {
            max_streams: 256,
            max_stream_window: 1024 * 1024,
            max_total_receive_window: 64 * 1024 * 1024,
            max_frame_payload: 16 * 1024,
            max_buffered_output: 1024 * 1024,
            max_pending_events: 1024,
            max_control_backlog: 1024,
            max_ack_backlog: 256,
            max_outstanding_pings: 16,
        }
    }
}

impl YamuxConfig {
    /// Most streams open at once, in both directions together. An inbound `SYN` beyond it is
    /// answered with `RST`; [`open_stream`](super::Session::open_stream) fails. Default 256.
    /// At least 1.
    pub fn max_streams(&mut self, count: usize) -> &mut Self {
        self.max_streams = count.max(1);
        self
    }

    /// Largest receive window one stream may grow to. Windows start at
    /// [`INITIAL_STREAM_WINDOW`] and double (when the reader keeps up) up to this. Default
    /// 1 MiB; at least 256 KiB. A data frame longer than this is a protocol error.
    pub fn max_stream_window(&mut self, bytes: u32) -> &mut Self {
        self.max_stream_window = bytes.max(INITIAL_STREAM_WINDOW);
        self
    }

    /// Budget for the sum of all stream receive windows: a window only grows while the sum
    /// stays within it (initial windows are always granted). Default 64 MiB.
    pub fn max_total_receive_window(&mut self, bytes: u64) -> &mut Self {
        self.max_total_receive_window = bytes;
        self
    }

    /// Largest payload of one outgoing data frame; longer writes are split, so streams
    /// interleave fairly. Default 16 KiB; at least 1.
    pub fn max_frame_payload(&mut self, bytes: usize) -> &mut Self {
        self.max_frame_payload = bytes.max(1);
        self
    }

    /// Most payload bytes waiting in the output buffer; `write` accepts no more until
    /// `poll_output` drains it. Default 1 MiB; at least 1.
    pub fn max_buffered_output(&mut self, bytes: usize) -> &mut Self {
        self.max_buffered_output = bytes.max(1);
        self
    }

    /// Events queued for the application above which inbound streams are refused (with `RST`)
    /// until it catches up. Default 1024; at least 1.
    pub fn max_pending_events(&mut self, count: usize) -> &mut Self {
        self.max_pending_events = count.max(1);
        self
    }

    /// Most peer-triggered control frames (ping responses, refusals) waiting in the output
    /// buffer; a peer that triggers more before `poll_output` drains them is flooding and the
    /// session fails with a protocol error. Default 1024; at least 1.
    pub fn max_control_backlog(&mut self, count: usize) -> &mut Self {
        self.max_control_backlog = count.max(1);
        self
    }

    /// Most outbound streams the peer has not acknowledged yet (libp2p yamux spec: 256).
    /// Default 256; at least 1.
    pub fn max_ack_backlog(&mut self, count: usize) -> &mut Self {
        self.max_ack_backlog = count.max(1);
        self
    }

    /// Most pings awaiting their response. Default 16; at least 1.
    pub fn max_outstanding_pings(&mut self, count: usize) -> &mut Self {
        self.max_outstanding_pings = count.max(1);
        self
    }
}
