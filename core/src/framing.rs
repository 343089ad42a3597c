//! Unsigned-varint length-prefixed framing, as used by multistream-select, identify and Circuit
//! Relay v2.
//!
//! A frame is `uvarint(len) ‖ payload`. The decoder is sans-IO: feed it whatever bytes arrived
//! and it returns a complete frame once one is buffered. Every decoder carries a maximum payload
//! length, checked on the length prefix *before* any payload is buffered, so a peer cannot make
//! us allocate more than that bound.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Longest uvarint we accept for a length prefix: 9 bytes encode up to 2^63 - 1, and the
/// multiformats unsigned-varint spec caps varints at 9 bytes.
pub const MAX_UVARINT_LEN: usize = 9;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announced more than the configured maximum.
    #[error("frame of {announced} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// Length the peer announced.
        announced: u64,
        /// Largest length this decoder accepts.
        max: usize,
    },
    /// The length prefix is not a valid minimal uvarint of at most [`MAX_UVARINT_LEN`] bytes.
    #[error("malformed uvarint length prefix")]
    MalformedLength,
}

/// Appends `value` as an unsigned varint.
pub fn put_uvarint(out: &mut impl BufMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

/// Number of bytes [`put_uvarint`] writes for `value`.
#[must_use]
pub fn uvarint_len(value: u64) -> usize {
    let bits = 64 - (value | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Result of trying to read a uvarint from the front of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub enum Uvarint {
    /// A complete value, and how many bytes encoded it.
    Complete {
        /// The decoded value.
        value: u64,
        /// Bytes consumed.
        len: usize,
    },
    /// More bytes are needed.
    Incomplete,
}

/// Reads a minimal uvarint from the front of `buf` without consuming it.
pub fn peek_uvarint(buf: &[u8]) -> Result<Uvarint, FrameError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(MAX_UVARINT_LEN) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // Non-minimal encodings (a trailing zero group) are refused, as the spec requires.
            if i > 0 && byte == 0 {
                return Err(FrameError::MalformedLength);
            }
            return Ok(Uvarint::Complete { value, len: i + 1 });
        }
    }
    if buf.len() >= MAX_UVARINT_LEN {
        Err(FrameError::MalformedLength)
    } else {
        Ok(Uvarint::Incomplete)
    }
}

/// Encodes one frame: `uvarint(payload.len()) ‖ payload`.
#[must_use]
pub fn encode_frame(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(uvarint_len(payload.len() as u64) + payload.len());
    put_uvarint(&mut out, payload.len() as u64);
    out.put_slice(payload);
    out.freeze()
}

/// Incremental decoder of length-prefixed frames with a hard payload bound.
///
/// Bytes past the end of a decoded frame stay buffered; [`FrameDecoder::into_remaining`] hands
/// them back so that nothing that follows a final control message is lost.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    max_len: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frames whose payload exceeds `max_len` bytes.
    #[must_use]
    pub fn new(max_len: usize) -> Self {
        Self {
            buffer: BytesMut::new(),
            max_len,
        }
    }

    /// The largest payload this decoder accepts.
    #[must_use]
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// Bytes buffered and not yet returned as a frame.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// Appends received bytes. The buffer never holds more than one maximal frame plus its
    /// prefix before [`FrameDecoder::decode`] reports an error, so callers that call `decode`
    /// after each `extend` keep memory bounded.
    pub fn extend(&mut self, data: &[u8]) {
        self.buffer.extend_from_slice(data);
    }

    /// Returns the next complete frame, `Ok(None)` if more bytes are needed.
    pub fn decode(&mut self) -> Result<Option<Bytes>, FrameError> {
        let (value, prefix) = match peek_uvarint(&self.buffer)? {
            Uvarint::Incomplete => return Ok(None),
            Uvarint::Complete { value, len } => (value, len),
        };
        if value > self.max_len as u64 {
            return Err(FrameError::TooLong {
                announced: value,
                max: self.max_len,
            });
        }
        let total = prefix + value as usize;
        if self.buffer.len() < total {
            return Ok(None);
        }
        self.buffer.advance(prefix);
        Ok(Some(self.buffer.split_to(value as usize).freeze()))
    }

    /// Consumes the decoder and returns every byte received but not decoded.
    #[must_use]
    pub fn into_remaining(self) -> BytesMut {
        self.buffer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uvarint_round_trips_and_reports_its_length() {
        for value in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u32::MAX as u64,
            1 << 62,
        ] {
            let mut buf = BytesMut::new();
            put_uvarint(&mut buf, value);
            assert_eq!(buf.len(), uvarint_len(value));
            assert_eq!(
                peek_uvarint(&buf).unwrap(),
                Uvarint::Complete {
                    value,
                    len: buf.len()
                }
            );
        }
    }

    #[test]
    fn non_minimal_and_overlong_uvarints_are_malformed() {
        assert_eq!(
            peek_uvarint(&[0x80, 0x00]),
            Err(FrameError::MalformedLength)
        );
        assert_eq!(peek_uvarint(&[0xff; 9]), Err(FrameError::MalformedLength));
        assert_eq!(peek_uvarint(&[0xff; 3]), Ok(Uvarint::Incomplete));
    }

    #[test]
    fn decoder_returns_frames_split_across_inputs_and_keeps_trailing_bytes() {
        let mut decoder = FrameDecoder::new(16);
        let mut wire = encode_frame(b"hello").to_vec();
        wire.extend_from_slice(b"tail");
        decoder.extend(&wire[..3]);
        assert_eq!(decoder.decode().unwrap(), None);
        decoder.extend(&wire[3..]);
        assert_eq!(decoder.decode().unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(&decoder.into_remaining()[..], b"tail");
    }

    #[test]
    fn decoder_refuses_an_oversized_frame_from_its_prefix_alone() {
        let mut decoder = FrameDecoder::new(4096);
        let mut prefix = BytesMut::new();
        put_uvarint(&mut prefix, 4097);
        decoder.extend(&prefix);
        assert_eq!(
            decoder.decode(),
            Err(FrameError::TooLong {
                announced: 4097,
                max: 4096
            })
        );
    }
}
