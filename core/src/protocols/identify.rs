//! Identify (`/ipfs/id/1.0.0`), sans-IO.
//!
//! The responder writes one uvarint-length-prefixed `Identify` protobuf and closes the stream
//! (libp2p/specs `identify/README.md`):
//!
//! ```protobuf
//! message Identify {
//!   optional string protocolVersion = 5;
//!   optional string agentVersion = 6;
//!   optional bytes publicKey = 1;
//!   repeated bytes listenAddrs = 2;
//!   optional bytes observedAddr = 4;
//!   repeated string protocols = 3;
//!   optional bytes signedPeerRecord = 8;
//! }
//! ```
//!
//! [`encode`] produces that message from an [`IdentifyInfo`]. [`IdentifyDecoder`] reads it from
//! input split anyhow; [`decode_complete`] reads a whole stream at once.
//!
//! # Leniency and bounds
//!
//! - A message longer than [`MAX_MESSAGE_LEN`] is refused from its length prefix alone, and the
//!   decoder never buffers more than that plus the prefix.
//! - A listen address that does not parse as a multiaddr, or is empty, is skipped and counted
//!   ([`DecodeReport::invalid_listen_addrs`]), as libp2p does; such an observed address becomes
//!   `None` and is flagged in [`DecodeReport::invalid_observed_addr`].
//! - At most [`MAX_LISTEN_ADDRS`] listen addresses and [`MAX_PROTOCOLS`] protocols are kept; the
//!   rest are dropped and counted.
//! - Missing `protocolVersion`/`agentVersion` decode as empty strings; a missing or invalid
//!   `publicKey` is an error, since the key is what identifies the peer.
//! - `signedPeerRecord` is not verified and not kept: nothing in dep2p uses it yet.
//!
//! The caller must still check that `public_key.to_peer_id()` is the peer the connection
//! authenticated (TLS); this module only decodes.

use bytes::Bytes;
use multiaddr::Multiaddr;
use prost::Message as _;

use crate::framing::{FrameDecoder, FrameError, encode_frame, uvarint_len};

/// Largest `Identify` message accepted, in bytes (without its length prefix). rust-libp2p uses
/// the same 4 KiB bound; a message carrying the limits below fits well within it.
pub const MAX_MESSAGE_LEN: usize = 4096;

/// Most listen addresses kept from one message; later ones are dropped and counted.
pub const MAX_LISTEN_ADDRS: usize = 64;

/// Most protocol ids kept from one message; later ones are dropped and counted.
pub const MAX_PROTOCOLS: usize = 128;

/// The wire message, field numbers as in the spec.
#[derive(Clone, PartialEq, prost::Message)]
struct IdentifyMessage {
    #[prost(bytes = "vec", optional, tag = "1")]
    public_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    listen_addrs: Vec<Vec<u8>>,
    #[prost(string, repeated, tag = "3")]
    protocols: Vec<String>,
    #[prost(bytes = "vec", optional, tag = "4")]
    observed_addr: Option<Vec<u8>>,
    #[prost(string, optional, tag = "5")]
    protocol_version: Option<String>,
    #[prost(string, optional, tag = "6")]
    agent_version: Option<String>,
    #[prost(bytes = "vec", optional, tag = "8")]
    signed_peer_record: Option<Vec<u8>>,
}

/// What a peer says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentifyInfo {
    /// The peer's public host key.
    pub public_key: libp2p_identity::PublicKey,
    /// Protocol family, e.g. `ipfs/0.1.0`.
    pub protocol_version: String,
    /// Implementation, e.g. `dep2p/0.1.0`.
    pub agent_version: String,
    /// Addresses the peer listens on.
    pub listen_addrs: Vec<Multiaddr>,
    /// The address the peer sees us connecting from, if it says.
    pub observed_addr: Option<Multiaddr>,
    /// Protocol ids the peer supports.
    pub protocols: Vec<String>,
}

/// Entries of a received message that were skipped or dropped rather than failing it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeReport {
    /// Listen addresses that did not parse as multiaddrs or were empty.
    pub invalid_listen_addrs: usize,
    /// Valid listen addresses dropped beyond [`MAX_LISTEN_ADDRS`].
    pub dropped_listen_addrs: usize,
    /// Protocol ids dropped beyond [`MAX_PROTOCOLS`].
    pub dropped_protocols: usize,
    /// Whether an observed address was present but did not parse or was empty.
    pub invalid_observed_addr: bool,
}

/// A decoded message and what was left out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct ReceivedIdentify {
    /// The peer's information.
    pub info: IdentifyInfo,
    /// Skipped and dropped entries.
    pub report: DecodeReport,
}

/// Why an identify message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    /// The length prefix announced more than [`MAX_MESSAGE_LEN`].
    #[error("identify message of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        /// Length the peer announced.
        len: u64,
        /// Longest message accepted.
        max: usize,
    },
    /// The length prefix is not a minimal uvarint.
    #[error("malformed identify length prefix")]
    BadLengthPrefix,
    /// The message is not a valid `Identify` protobuf.
    #[error("malformed identify message: {0}")]
    Malformed(String),
    /// The message carries no public key.
    #[error("identify message carries no public key")]
    MissingPublicKey,
    /// The public key does not decode as a libp2p public key.
    #[error("invalid public key in identify message: {0}")]
    InvalidPublicKey(String),
    /// The stream ended before the message was complete.
    #[error("stream ended inside the identify message")]
    Truncated,
    /// Bytes followed the message; the sender must close the stream after it.
    #[error("bytes after the identify message")]
    TrailingData,
    /// Input after the decoder finished or failed (local misuse).
    #[error("identify decoder already finished")]
    Finished,
}

impl From<FrameError> for IdentifyError {
    fn from(error: FrameError) -> Self {
        match error {
            FrameError::TooLong { announced, max } => Self::TooLong {
                len: announced,
                max,
            },
            FrameError::MalformedLength => Self::BadLengthPrefix,
        }
    }
}

/// Encodes `info` as one length-prefixed `Identify` message, ready to write before closing the
/// stream. The result is not truncated: keep `info` within [`MAX_LISTEN_ADDRS`],
/// [`MAX_PROTOCOLS`] and [`MAX_MESSAGE_LEN`] or peers will drop what does not fit.
#[must_use]
pub fn encode(info: &IdentifyInfo) -> Bytes {
    let message = IdentifyMessage {
        public_key: Some(info.public_key.encode_protobuf()),
        listen_addrs: info.listen_addrs.iter().map(Multiaddr::to_vec).collect(),
        protocols: info.protocols.clone(),
        observed_addr: info.observed_addr.as_ref().map(Multiaddr::to_vec),
        protocol_version: Some(info.protocol_version.clone()),
        agent_version: Some(info.agent_version.clone()),
        signed_peer_record: None,
    };
    encode_frame(&message.encode_to_vec())
}

/// Decodes a whole identify stream (everything read until the sender closed it): exactly one
/// length-prefixed message and nothing after it.
pub fn decode_complete(stream: &[u8]) -> Result<ReceivedIdentify, IdentifyError> {
    let mut decoder = IdentifyDecoder::new();
    match decoder.handle_input(stream)? {
        Some(received) => Ok(received),
        None => Err(IdentifyError::Truncated),
    }
}

/// Incremental decoder of one identify message arriving in pieces.
///
/// Feed every received chunk to [`IdentifyDecoder::handle_input`] until it returns the message;
/// if the stream ends first, [`IdentifyDecoder::handle_end_of_stream`] says so. Never buffers
/// more than [`MAX_MESSAGE_LEN`] plus the length prefix.
#[derive(Debug)]
pub struct IdentifyDecoder {
    state: DecoderState,
}

#[derive(Debug)]
enum DecoderState {
    Reading(FrameDecoder),
    Complete,
    Failed,
}

impl Default for IdentifyDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl IdentifyDecoder {
    /// A decoder waiting for the first byte.
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: DecoderState::Reading(FrameDecoder::new(MAX_MESSAGE_LEN)),
        }
    }

    /// Consumes received bytes; returns the message once complete. Bytes after the message, in
    /// this input or a later one, are [`IdentifyError::TrailingData`].
    pub fn handle_input(&mut self, data: &[u8]) -> Result<Option<ReceivedIdentify>, IdentifyError> {
        let result = self.advance(data);
        if result.is_err() {
            self.state = DecoderState::Failed;
        }
        result
    }

    fn advance(&mut self, data: &[u8]) -> Result<Option<ReceivedIdentify>, IdentifyError> {
        let decoder = match &mut self.state {
            DecoderState::Reading(decoder) => decoder,
            DecoderState::Complete if data.is_empty() => return Ok(None),
            DecoderState::Complete => return Err(IdentifyError::TrailingData),
            DecoderState::Failed => return Err(IdentifyError::Finished),
        };
        let bound = uvarint_len(MAX_MESSAGE_LEN as u64) + MAX_MESSAGE_LEN;
        let mut input = data;
        loop {
            if let Some(frame) = decoder.decode()? {
                if !input.is_empty() || decoder.buffered() > 0 {
                    return Err(IdentifyError::TrailingData);
                }
                self.state = DecoderState::Complete;
                return decode_message(&frame).map(Some);
            }
            if input.is_empty() {
                return Ok(None);
            }
            // Take only what fits under the bound: a full buffer always holds a whole message or
            // a prefix announcing too long a one, so `decode` above makes progress.
            let take = bound.saturating_sub(decoder.buffered()).min(input.len());
            if take == 0 {
                return Err(IdentifyError::BadLengthPrefix);
            }
            decoder.extend(&input[..take]);
            input = &input[take..];
        }
    }

    /// Reports the end of the stream: an error unless the message was complete.
    pub fn handle_end_of_stream(&self) -> Result<(), IdentifyError> {
        match self.state {
            DecoderState::Complete => Ok(()),
            DecoderState::Reading(_) => Err(IdentifyError::Truncated),
            DecoderState::Failed => Err(IdentifyError::Finished),
        }
    }

    /// Whether the message has been returned.
    #[must_use]
    pub fn is_complete(&self) -> bool {
        matches!(self.state, DecoderState::Complete)
    }

    /// Bytes held while waiting for the rest of the message.
    #[must_use]
    pub fn buffered(&self) -> usize {
        match &self.state {
            DecoderState::Reading(decoder) => decoder.buffered(),
            DecoderState::Complete | DecoderState::Failed => 0,
        }
    }
}

fn decode_message(payload: &[u8]) -> Result<ReceivedIdentify, IdentifyError> {
    let message =
        IdentifyMessage::decode(payload).map_err(|e| IdentifyError::Malformed(e.to_string()))?;
    let key = message.public_key.ok_or(IdentifyError::MissingPublicKey)?;
    let public_key = libp2p_identity::PublicKey::try_decode_protobuf(&key)
        .map_err(|e| IdentifyError::InvalidPublicKey(e.to_string()))?;

    let mut report = DecodeReport::default();
    let mut listen_addrs = Vec::new();
    for raw in message.listen_addrs {
        match Multiaddr::try_from(raw) {
            Ok(addr) if addr.is_empty() => report.invalid_listen_addrs += 1,
            Ok(_) if listen_addrs.len() >= MAX_LISTEN_ADDRS => report.dropped_listen_addrs += 1,
            Ok(addr) => listen_addrs.push(addr),
            Err(_) => report.invalid_listen_addrs += 1,
        }
    }
    let observed_addr = message
        .observed_addr
        .and_then(|raw| match Multiaddr::try_from(raw) {
            Ok(addr) if !addr.is_empty() => Some(addr),
            _ => {
                report.invalid_observed_addr = true;
                None
            }
        });
    let mut protocols = message.protocols;
    if protocols.len() > MAX_PROTOCOLS {
        report.dropped_protocols = protocols.len() - MAX_PROTOCOLS;
        protocols.truncate(MAX_PROTOCOLS);
    }

    Ok(ReceivedIdentify {
        info: IdentifyInfo {
            public_key,
            protocol_version: message.protocol_version.unwrap_or_default(),
            agent_version: message.agent_version.unwrap_or_default(),
            listen_addrs,
            observed_addr,
            protocols,
        },
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::put_uvarint;

    fn key() -> libp2p_identity::PublicKey {
        libp2p_identity::Keypair::ed25519_from_bytes([7u8; 32])
            .expect("32 bytes are a valid ed25519 secret")
            .public()
    }

    fn info() -> IdentifyInfo {
        IdentifyInfo {
            public_key: key(),
            protocol_version: "ipfs/0.1.0".into(),
            agent_version: "dep2p/0.1.0".into(),
            listen_addrs: vec![
                "/ip4/192.0.2.1/udp/4001/quic-v1".parse().unwrap(),
                "/ip6/2001:db8::1/udp/4001/quic-v1".parse().unwrap(),
            ],
            observed_addr: Some("/ip4/198.51.100.7/udp/50000/quic-v1".parse().unwrap()),
            protocols: vec!["/ipfs/id/1.0.0".into(), "/ipfs/ping/1.0.0".into()],
        }
    }

    fn framed(message: &IdentifyMessage) -> Vec<u8> {
        encode_frame(&message.encode_to_vec()).to_vec()
    }

    fn message_with_key() -> IdentifyMessage {
        IdentifyMessage {
            public_key: Some(key().encode_protobuf()),
            ..Default::default()
        }
    }

    #[test]
    fn encoded_info_round_trips() {
        let decoded = decode_complete(&encode(&info())).unwrap();
        assert_eq!(decoded.info, info());
        assert_eq!(decoded.report, DecodeReport::default());
    }

    #[test]
    fn wire_field_numbers_match_the_spec() {
        // Tag bytes are (field << 3) | wire type; 2 = length-delimited.
        let bytes = IdentifyMessage {
            public_key: Some(vec![1]),
            listen_addrs: vec![vec![2]],
            protocols: vec!["3".into()],
            observed_addr: Some(vec![4]),
            protocol_version: Some("5".into()),
            agent_version: Some("6".into()),
            signed_peer_record: Some(vec![8]),
        }
        .encode_to_vec();
        let tags: Vec<u8> = bytes.chunks(3).map(|field| field[0]).collect();
        assert_eq!(tags, [0x0a, 0x12, 0x1a, 0x22, 0x2a, 0x32, 0x42]);
    }

    #[test]
    fn message_split_at_every_offset_decodes() {
        let wire = encode(&info());
        for split in 0..=wire.len() {
            let mut decoder = IdentifyDecoder::new();
            let first = decoder.handle_input(&wire[..split]).unwrap();
            let decoded = match first {
                Some(decoded) => {
                    assert_eq!(split, wire.len());
                    decoded
                }
                None => decoder.handle_input(&wire[split..]).unwrap().unwrap(),
            };
            assert_eq!(decoded.info, info(), "split {split}");
            assert!(decoder.is_complete());
            assert_eq!(decoder.handle_end_of_stream(), Ok(()));
        }
    }

    #[test]
    fn oversized_message_is_refused_from_its_prefix() {
        let mut prefix = Vec::new();
        put_uvarint(&mut prefix, MAX_MESSAGE_LEN as u64 + 1);
        let mut decoder = IdentifyDecoder::new();
        assert_eq!(
            decoder.handle_input(&prefix),
            Err(IdentifyError::TooLong {
                len: MAX_MESSAGE_LEN as u64 + 1,
                max: MAX_MESSAGE_LEN
            })
        );
        assert_eq!(decoder.handle_input(b"x"), Err(IdentifyError::Finished));
    }

    #[test]
    fn garbage_is_malformed() {
        let wire = encode_frame(&[0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_complete(&wire),
            Err(IdentifyError::Malformed(_))
        ));
        // A string field that is not UTF-8 is malformed protobuf too.
        let mut payload = message_with_key().encode_to_vec();
        payload.extend_from_slice(&[0x1a, 0x02, 0xc3, 0x28]);
        assert!(matches!(
            decode_complete(&encode_frame(&payload)),
            Err(IdentifyError::Malformed(_))
        ));
    }

    #[test]
    fn missing_or_invalid_public_key_is_refused() {
        let wire = framed(&IdentifyMessage::default());
        assert_eq!(decode_complete(&wire), Err(IdentifyError::MissingPublicKey));
        let wire = framed(&IdentifyMessage {
            public_key: Some(vec![1, 2, 3]),
            ..Default::default()
        });
        assert!(matches!(
            decode_complete(&wire),
            Err(IdentifyError::InvalidPublicKey(_))
        ));
    }

    #[test]
    fn bad_multiaddrs_are_skipped_and_counted() {
        let good: Multiaddr = "/ip4/192.0.2.1/udp/4001/quic-v1".parse().unwrap();
        let wire = framed(&IdentifyMessage {
            listen_addrs: vec![vec![0xff, 0xff], good.to_vec(), vec![]],
            observed_addr: Some(vec![0x04, 1]),
            ..message_with_key()
        });
        let decoded = decode_complete(&wire).unwrap();
        assert_eq!(decoded.info.listen_addrs, vec![good]);
        assert_eq!(decoded.info.observed_addr, None);
        assert_eq!(decoded.report.invalid_listen_addrs, 2);
        assert!(decoded.report.invalid_observed_addr);
        assert_eq!(decoded.info.protocol_version, "");
        assert_eq!(decoded.info.agent_version, "");
    }

    #[test]
    fn listen_addrs_and_protocols_beyond_the_bounds_are_dropped_and_counted() {
        let addr: Multiaddr = "/ip4/192.0.2.1/udp/4001/quic-v1".parse().unwrap();
        let wire = framed(&IdentifyMessage {
            listen_addrs: vec![addr.to_vec(); MAX_LISTEN_ADDRS + 3],
            protocols: vec!["/p".into(); MAX_PROTOCOLS + 5],
            ..message_with_key()
        });
        assert!(wire.len() <= MAX_MESSAGE_LEN);
        let decoded = decode_complete(&wire).unwrap();
        assert_eq!(decoded.info.listen_addrs.len(), MAX_LISTEN_ADDRS);
        assert_eq!(decoded.info.protocols.len(), MAX_PROTOCOLS);
        assert_eq!(decoded.report.dropped_listen_addrs, 3);
        assert_eq!(decoded.report.dropped_protocols, 5);
    }

    #[test]
    fn truncated_stream_and_trailing_bytes_are_refused() {
        let wire = encode(&info());
        assert_eq!(
            decode_complete(&wire[..wire.len() - 1]),
            Err(IdentifyError::Truncated)
        );
        assert_eq!(decode_complete(&[]), Err(IdentifyError::Truncated));
        let mut decoder = IdentifyDecoder::new();
        assert_eq!(decoder.handle_input(&wire[..5]), Ok(None));
        assert_eq!(
            decoder.handle_end_of_stream(),
            Err(IdentifyError::Truncated)
        );
        let mut longer = wire.to_vec();
        longer.push(0);
        assert_eq!(decode_complete(&longer), Err(IdentifyError::TrailingData));
        let mut decoder = IdentifyDecoder::new();
        assert!(decoder.handle_input(&wire).unwrap().is_some());
        assert_eq!(decoder.handle_input(b"x"), Err(IdentifyError::TrailingData));
    }

    #[test]
    fn decoder_never_buffers_more_than_one_message_and_prefix() {
        let mut prefix = Vec::new();
        put_uvarint(&mut prefix, MAX_MESSAGE_LEN as u64);
        let mut wire = prefix.clone();
        wire.extend(std::iter::repeat_n(0u8, MAX_MESSAGE_LEN + 100));
        let mut decoder = IdentifyDecoder::new();
        let mut max_seen = 0;
        for chunk in wire.chunks(1000) {
            if decoder.handle_input(chunk).is_err() {
                break;
            }
            max_seen = max_seen.max(decoder.buffered());
        }
        assert!(max_seen <= prefix.len() + MAX_MESSAGE_LEN);
    }

    proptest::proptest! {
        #[test]
        fn random_input_never_panics_or_overfills_the_buffer(
            chunks in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000), 0..6),
        ) {
            let bound = uvarint_len(MAX_MESSAGE_LEN as u64) + MAX_MESSAGE_LEN;
            let mut decoder = IdentifyDecoder::new();
            for chunk in &chunks {
                let _ = decoder.handle_input(chunk);
                proptest::prop_assert!(decoder.buffered() <= bound);
            }
            let _ = decoder.handle_end_of_stream();
            let _ = decode_complete(&chunks.concat());
        }
    }
}
