//! The yamux frame header: 12 bytes, big endian, `version ‖ type ‖ flags ‖ stream id ‖ length`.
//!
//! Only the header is coded here. The meaning of `length` depends on the type: payload bytes for
//! [`FrameType::Data`], a window delta for [`FrameType::WindowUpdate`], an opaque value for
//! [`FrameType::Ping`] and an error code for [`FrameType::GoAway`]. Only data frames carry a
//! payload.

use std::fmt;
use std::ops::BitOr;

/// Length of every frame header.
pub const HEADER_LEN: usize = 12;

/// The only protocol version defined by the spec.
pub const PROTOCOL_VERSION: u8 = 0;

/// A stream identifier. `0` names the session itself (ping, go away); the client (dialer)
/// opens odd ids and the server (listener) even ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(u32);

impl StreamId {
    /// The session id used by ping and go-away frames.
    pub const SESSION: StreamId = StreamId(0);

    /// Wraps a raw id.
    #[must_use]
    pub const fn new(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw id.
    #[must_use]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// Whether a client (odd id) opened this stream.
    #[must_use]
    pub const fn is_client_initiated(self) -> bool {
        self.0 % 2 == 1
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream {}", self.0)
    }
}

/// The frame type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// Stream data; `length` payload bytes follow the header.
    Data,
    /// Grants the sender `length` more bytes of send window on the stream.
    WindowUpdate,
    /// Liveness / RTT probe; `length` is an opaque value echoed back.
    Ping,
    /// Session termination; `length` is a [`GoAwayCode`].
    GoAway,
}

impl FrameType {
    /// The wire value.
    #[must_use]
    pub const fn to_u8(self) -> u8 {
        match self {
            FrameType::Data => 0,
            FrameType::WindowUpdate => 1,
            FrameType::Ping => 2,
            FrameType::GoAway => 3,
        }
    }

    /// Parses a wire value.
    pub const fn from_u8(value: u8) -> Result<Self, FrameError> {
        match value {
            0 => Ok(FrameType::Data),
            1 => Ok(FrameType::WindowUpdate),
            2 => Ok(FrameType::Ping),
            3 => Ok(FrameType::GoAway),
            other => Err(FrameError::UnknownType(other)),
        }
    }
}

/// The 16-bit flag set. Unknown bits are kept but carry no meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags(u16);

impl Flags {
    /// No flags.
    pub const EMPTY: Flags = Flags(0);
    /// Opens a stream (or marks a ping as a request).
    pub const SYN: Flags = Flags(0x1);
    /// Accepts a stream (or marks a ping as a response).
    pub const ACK: Flags = Flags(0x2);
    /// Half-closes the stream: the sender sends no more data.
    pub const FIN: Flags = Flags(0x4);
    /// Resets the stream at once.
    pub const RST: Flags = Flags(0x8);

    /// Wraps raw bits.
    #[must_use]
    pub const fn from_bits(bits: u16) -> Self {
        Self(bits)
    }

    /// The raw bits.
    #[must_use]
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether every bit of `other` is set.
    #[must_use]
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl BitOr for Flags {
    type Output = Flags;

    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

/// The code carried by a go-away frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoAwayCode {
    /// Normal termination (0).
    Normal,
    /// The sender saw a protocol error (1).
    ProtocolError,
    /// The sender hit an internal error (2).
    InternalError,
    /// A code the spec does not define.
    Other(u32),
}

impl GoAwayCode {
    /// The wire value.
    #[must_use]
    pub const fn to_u32(self) -> u32 {
        match self {
            GoAwayCode::Normal => 0,
            GoAwayCode::ProtocolError => 1,
            GoAwayCode::InternalError => 2,
            GoAwayCode::Other(code) => code,
        }
    }

    /// Interprets a wire value; every value is accepted.
    #[must_use]
    pub const fn from_u32(code: u32) -> Self {
        match code {
            0 => GoAwayCode::Normal,
            1 => GoAwayCode::ProtocolError,
            2 => GoAwayCode::InternalError,
            other => GoAwayCode::Other(other),
        }
    }
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The frame type.
    pub frame_type: FrameType,
    /// The flags.
    pub flags: Flags,
    /// The stream the frame addresses ([`StreamId::SESSION`] for ping and go away).
    pub stream_id: StreamId,
    /// Payload length, window delta, ping opaque or go-away code, depending on the type.
    pub length: u32,
}

/// Why a header could not be decoded. Both are fatal: the byte stream cannot be resynchronised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The version byte is not 0.
    #[error("unsupported yamux version {0}")]
    UnsupportedVersion(u8),
    /// The type byte is not one of the four defined types.
    #[error("unknown yamux frame type {0}")]
    UnknownType(u8),
}

impl Header {
    /// A data header announcing `length` payload bytes.
    #[must_use]
    pub const fn data(stream_id: StreamId, flags: Flags, length: u32) -> Self {
        Self {
            frame_type: FrameType::Data,
            flags,
            stream_id,
            length,
        }
    }

    /// A window update granting `delta` bytes (0 is valid, e.g. to carry SYN, ACK, FIN or RST).
    #[must_use]
    pub const fn window_update(stream_id: StreamId, flags: Flags, delta: u32) -> Self {
        Self {
            frame_type: FrameType::WindowUpdate,
            flags,
            stream_id,
            length: delta,
        }
    }

    /// A ping request (`SYN`) or response (`ACK`) carrying `opaque`.
    #[must_use]
    pub const fn ping(flags: Flags, opaque: u32) -> Self {
        Self {
            frame_type: FrameType::Ping,
            flags,
            stream_id: StreamId::SESSION,
            length: opaque,
        }
    }

    /// A go-away frame.
    #[must_use]
    pub const fn go_away(code: GoAwayCode) -> Self {
        Self {
            frame_type: FrameType::GoAway,
            flags: Flags::EMPTY,
            stream_id: StreamId::SESSION,
            length: code.to_u32(),
        }
    }

    /// Encodes the header.
    #[must_use]
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = PROTOCOL_VERSION;
        out[1] = self.frame_type.to_u8();
        out[2..4].copy_from_slice(&self.flags.bits().to_be_bytes());
        out[4..8].copy_from_slice(&self.stream_id.get().to_be_bytes());
        out[8..12].copy_from_slice(&self.length.to_be_bytes());
        out
    }

    /// Decodes a header, refusing unknown versions and types.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Self, FrameError> {
        if bytes[0] != PROTOCOL_VERSION {
            return Err(FrameError::UnsupportedVersion(bytes[0]));
        }
        let frame_type = FrameType::from_u8(bytes[1])?;
        let flags = Flags::from_bits(u16::from_be_bytes([bytes[2], bytes[3]]));
        let stream_id = StreamId::new(u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]));
        let length = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        Ok(Self {
            frame_type,
            flags,
            stream_id,
            length,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_is_big_endian() {
        let header = Header::data(
            StreamId::new(0x0102_0304),
            Flags::SYN | Flags::FIN,
            0x0a0b_0c0d,
        );
        let bytes = header.encode();
        assert_eq!(bytes, [0, 0, 0, 5, 1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d]);
        assert_eq!(Header::decode(&bytes), Ok(header));
    }

    #[test]
    fn header_refuses_unknown_version_and_type() {
        let mut bytes = Header::ping(Flags::SYN, 7).encode();
        bytes[0] = 1;
        assert_eq!(
            Header::decode(&bytes),
            Err(FrameError::UnsupportedVersion(1))
        );
        bytes[0] = 0;
        bytes[1] = 4;
        assert_eq!(Header::decode(&bytes), Err(FrameError::UnknownType(4)));
    }

    #[test]
    fn go_away_codes_map_both_ways() {
        for code in 0..5 {
            assert_eq!(GoAwayCode::from_u32(code).to_u32(), code);
        }
        assert_eq!(GoAwayCode::from_u32(1), GoAwayCode::ProtocolError);
    }
}
