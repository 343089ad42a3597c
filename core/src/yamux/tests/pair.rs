//! Two sessions wired back to back, and helpers to craft frames.

use bytes::BytesMut;

use crate::yamux::{Flags, Header, Mode, ReadOutcome, Session, StreamId, YamuxConfig, YamuxEvent};

/// A client and a server session connected by an in-memory pipe.
pub(super) struct Pair {
    pub client: Session,
    pub server: Session,
    pub client_events: Vec<YamuxEvent>,
    pub server_events: Vec<YamuxEvent>,
}

impl Pair {
    pub fn new() -> Self {
        Self::with_config(YamuxConfig::default())
    }

    pub fn with_config(config: YamuxConfig) -> Self {
        Self {
            client: Session::new(Mode::Client, config.clone()),
            server: Session::new(Mode::Server, config),
            client_events: Vec::new(),
            server_events: Vec::new(),
        }
    }

    /// Moves bytes both ways until neither side has output, feeding `chunk` bytes per
    /// `handle_input` call (`usize::MAX` for whole buffers).
    pub fn pump_chunked(&mut self, chunk: usize) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some(bytes) = self.client.poll_output() {
                moved = true;
                for piece in bytes.chunks(chunk.max(1)) {
                    self.server.handle_input(piece);
                }
            }
            while let Some(bytes) = self.server.poll_output() {
                moved = true;
                for piece in bytes.chunks(chunk.max(1)) {
                    self.client.handle_input(piece);
                }
            }
            while let Some(e) = self.client.poll_event() {
                self.client_events.push(e);
            }
            while let Some(e) = self.server.poll_event() {
                self.server_events.push(e);
            }
            if !moved {
                return;
            }
        }
        panic!("pump did not settle");
    }

    pub fn pump(&mut self) {
        self.pump_chunked(usize::MAX);
    }

    /// Takes the events collected so far.
    pub fn take_events(&mut self) -> (Vec<YamuxEvent>, Vec<YamuxEvent>) {
        (
            std::mem::take(&mut self.client_events),
            std::mem::take(&mut self.server_events),
        )
    }
}

/// Reads everything buffered; returns the bytes and whether the stream reported `Finished`.
pub(super) fn read_available(session: &mut Session, id: StreamId) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    loop {
        match session.read(id, 7_000).expect("stream is open") {
            ReadOutcome::Data(bytes) => data.extend_from_slice(&bytes),
            ReadOutcome::Blocked => return (data, false),
            ReadOutcome::Finished => return (data, true),
        }
    }
}

/// Writes all of `data` as far as the window allows; returns the bytes accepted.
pub(super) fn write_some(session: &mut Session, id: StreamId, data: &[u8]) -> usize {
    let mut sent = 0;
    while sent < data.len() {
        let n = session
            .write(id, &data[sent..])
            .expect("stream is writable");
        if n == 0 {
            break;
        }
        sent += n;
    }
    sent
}

/// Deterministic payload for stream `seed`.
pub(super) fn pattern(seed: u32, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// FNV-1a 64.
pub(super) fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Encodes a frame by hand (header plus payload).
pub(super) fn frame(header: Header, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    out
}

/// A data frame by hand.
pub(super) fn data_frame(id: u32, flags: Flags, payload: &[u8]) -> BytesMut {
    frame(
        Header::data(StreamId::new(id), flags, payload.len() as u32),
        payload,
    )
}

/// Drains a session's output into a vector of decoded headers (payloads skipped).
pub(super) fn sent_headers(session: &mut Session) -> Vec<Header> {
    let mut bytes = Vec::new();
    while let Some(b) = session.poll_output() {
        bytes.extend_from_slice(&b);
    }
    let mut headers = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= crate::yamux::HEADER_LEN {
        let raw: [u8; 12] = rest[..12].try_into().expect("12 bytes");
        let header = Header::decode(&raw).expect("we only send valid headers");
        let body = if header.frame_type == crate::yamux::FrameType::Data {
            header.length as usize
        } else {
            0
        };
        rest = &rest[12 + body..];
        headers.push(header);
    }
    headers
}

/// Drains a session's events.
pub(super) fn events(session: &mut Session) -> Vec<YamuxEvent> {
    std::iter::from_fn(|| session.poll_event()).collect()
}
