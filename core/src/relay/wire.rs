//! Circuit Relay v2 wire messages (libp2p `relay/circuit-v2.md`, DESIGN §4.3).
//!
//! Every message is one frame: `uvarint(len) ‖ protobuf`, at most [`MAX_MESSAGE_SIZE`] bytes of
//! payload. Read frames with [`FrameDecoder::new(MAX_MESSAGE_SIZE)`](crate::framing::FrameDecoder)
//! (it refuses an oversized frame from its length prefix, before buffering it), then hand each
//! payload to the decoder of the message you expect:
//!
//! | who reads            | protocol | decoder                  |
//! |----------------------|----------|--------------------------|
//! | relay                | HOP      | [`HopRequest::decode`]   |
//! | client (initiator)   | HOP      | [`HopResponse::decode`]  |
//! | client (target)      | STOP     | [`StopRequest::decode`]  |
//! | relay                | STOP     | [`StopResponse::decode`] |
//!
//! The typed messages cannot express nonsense such as a CONNECT without a target or a STATUS
//! without a status. Decoders reject such input with a [`DecodeError`] whose
//! [`status`](DecodeError::status) is the code to answer with (MALFORMED_MESSAGE or
//! UNEXPECTED_MESSAGE), so the relay never closes a stream on bad input without a reply.
//!
//! Leniency follows libp2p: unknown fields and fields that do not belong to a message type are
//! ignored, and addresses that are not valid (or are empty) multiaddrs are skipped (at most [`MAX_ADDRS`] are
//! kept) rather than failing the message.

use bytes::{Bytes, BytesMut};
use libp2p_identity::PeerId;
use multiaddr::Multiaddr;

use crate::framing::{FrameError, put_uvarint, uvarint_len};

/// Largest protobuf payload of one HOP or STOP message, as in the spec and in rust-libp2p.
pub const MAX_MESSAGE_SIZE: usize = 4096;

/// Most addresses kept from one `addrs` list; further valid ones are dropped.
pub const MAX_ADDRS: usize = 32;

/// The protobuf structs exactly as on the wire (`message.proto` of the spec).
///
/// Prefer the typed messages of the parent module: these structs accept any combination of
/// fields. Fields the schema marks `required` are modelled as `Option` because prost does not
/// check presence on decode; the typed decoders do, and the wire encoding is the same (a
/// present optional field is encoded exactly like a required one). Enum fields are `int32` on
/// the wire, which is how protobuf encodes enums, so unknown values reach the typed decoder
/// instead of being silently replaced by a default.
pub mod proto {
    use bytes::Bytes;

    /// `HopMessage.Type` value RESERVE.
    pub const HOP_RESERVE: i32 = 0;
    /// `HopMessage.Type` value CONNECT.
    pub const HOP_CONNECT: i32 = 1;
    /// `HopMessage.Type` value STATUS.
    pub const HOP_STATUS: i32 = 2;
    /// `StopMessage.Type` value CONNECT.
    pub const STOP_CONNECT: i32 = 0;
    /// `StopMessage.Type` value STATUS.
    pub const STOP_STATUS: i32 = 1;

    /// A message of the HOP protocol (`/libp2p/circuit/relay/0.2.0/hop`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HopMessage {
        /// `required Type type = 1`.
        #[prost(int32, optional, tag = "1")]
        pub r#type: Option<i32>,
        /// `optional Peer peer = 2`: the target of a CONNECT.
        #[prost(message, optional, tag = "2")]
        pub peer: Option<Peer>,
        /// `optional Reservation reservation = 3`: in the STATUS answering a RESERVE.
        #[prost(message, optional, tag = "3")]
        pub reservation: Option<Reservation>,
        /// `optional Limit limit = 4`.
        #[prost(message, optional, tag = "4")]
        pub limit: Option<Limit>,
        /// `optional Status status = 5`.
        #[prost(int32, optional, tag = "5")]
        pub status: Option<i32>,
    }

    /// A message of the STOP protocol (`/libp2p/circuit/relay/0.2.0/stop`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StopMessage {
        /// `required Type type = 1`.
        #[prost(int32, optional, tag = "1")]
        pub r#type: Option<i32>,
        /// `optional Peer peer = 2`: the initiator of the circuit.
        #[prost(message, optional, tag = "2")]
        pub peer: Option<Peer>,
        /// `optional Limit limit = 3`.
        #[prost(message, optional, tag = "3")]
        pub limit: Option<Limit>,
        /// `optional Status status = 4`.
        #[prost(int32, optional, tag = "4")]
        pub status: Option<i32>,
    }

    /// A peer and, optionally, its addresses.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Peer {
        /// `required bytes id = 1`: the PeerId in its binary (multihash) form.
        #[prost(bytes = "bytes", optional, tag = "1")]
        pub id: Option<Bytes>,
        /// `repeated bytes addrs = 2`: binary multiaddrs.
        #[prost(bytes = "bytes", repeated, tag = "2")]
        pub addrs: Vec<Bytes>,
    }

    /// A reservation granted by a relay.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Reservation {
        /// `uint64 expire = 1`: unix seconds (UTC) at which the reservation ends. The spec
        /// marks it optional, rust-libp2p required; we always send it and require it.
        #[prost(uint64, optional, tag = "1")]
        pub expire: Option<u64>,
        /// `repeated bytes addrs = 2`: the relay's public addresses, binary multiaddrs.
        #[prost(bytes = "bytes", repeated, tag = "2")]
        pub addrs: Vec<Bytes>,
        /// `optional bytes voucher = 3`: a signed envelope (see [`crate::relay::voucher`]).
        #[prost(bytes = "bytes", optional, tag = "3")]
        pub voucher: Option<Bytes>,
    }

    /// Limits the relay applies to a relayed connection.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Limit {
        /// `optional uint32 duration = 1`: seconds.
        #[prost(uint32, optional, tag = "1")]
        pub duration: Option<u32>,
        /// `optional uint64 data = 2`: bytes per direction.
        #[prost(uint64, optional, tag = "2")]
        pub data: Option<u64>,
    }
}

/// Status codes of HOP and STOP `STATUS` messages.
///
/// The spec defines no zero value (rust-libp2p neither; go-libp2p's `UNUSED = 0` is never sent),
/// and this type deliberately has no `Default`: a status is always chosen, never assumed OK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// The request succeeded.
    Ok = 100,
    /// The relay refused the reservation (policy, relay full, not a direct connection).
    ReservationRefused = 200,
    /// A resource limit (count or rate) was exceeded.
    ResourceLimitExceeded = 201,
    /// The ACL denied the request.
    PermissionDenied = 202,
    /// The relay could not reach the target, or the target could not accept the circuit.
    ConnectionFailed = 203,
    /// The target of a CONNECT has no reservation on this relay.
    NoReservation = 204,
    /// The request could not be decoded or lacked a required field.
    MalformedMessage = 400,
    /// The request was of a type not valid at this point.
    UnexpectedMessage = 401,
}

impl Status {
    /// The protobuf value of this status.
    #[must_use]
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The status with protobuf value `code`, if the spec defines one.
    #[must_use]
    pub const fn from_code(code: i32) -> Option<Self> {
        Some(match code {
            100 => Self::Ok,
            200 => Self::ReservationRefused,
            201 => Self::ResourceLimitExceeded,
            202 => Self::PermissionDenied,
            203 => Self::ConnectionFailed,
            204 => Self::NoReservation,
            400 => Self::MalformedMessage,
            401 => Self::UnexpectedMessage,
            _ => return None,
        })
    }

    /// Whether this is [`Status::Ok`].
    #[must_use]
    pub const fn is_ok(self) -> bool {
        matches!(self, Self::Ok)
    }
}

/// Which message a frame carried, by protocol and `type`; used to report unexpected messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    /// HOP RESERVE.
    HopReserve,
    /// HOP CONNECT.
    HopConnect,
    /// HOP STATUS.
    HopStatus,
    /// STOP CONNECT.
    StopConnect,
    /// STOP STATUS.
    StopStatus,
}

/// Why a message is malformed: the relay answers MALFORMED_MESSAGE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedReason {
    /// The payload is larger than [`MAX_MESSAGE_SIZE`].
    #[error("payload of {len} bytes exceeds {MAX_MESSAGE_SIZE}")]
    TooLong {
        /// Payload length.
        len: usize,
    },
    /// The frame around the payload was refused: oversized or with a bad length prefix.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The payload is not valid protobuf for the message schema.
    #[error("undecodable protobuf: {0}")]
    Protobuf(prost::DecodeError),
    /// A field the message type requires is absent; the name is its path, e.g. `peer.id`.
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    /// A peer id field does not hold a valid PeerId.
    #[error("invalid peer id in `{0}`")]
    InvalidPeerId(&'static str),
    /// A `status` value the spec does not define.
    #[error("unknown status code {0}")]
    UnknownStatus(i32),
}

/// Why a well-formed message is not acceptable here: the relay answers UNEXPECTED_MESSAGE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnexpectedReason {
    /// The `type` value is not defined for this protocol.
    #[error("unknown message type {0}")]
    UnknownType(i32),
    /// A defined type that is not valid in this direction, e.g. a STATUS sent as a request.
    #[error("{0:?} is not valid here")]
    WrongType(MessageType),
}

/// Why a HOP or STOP frame payload could not be turned into the expected typed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Undecodable, oversized, missing a required field, or holding an invalid PeerId.
    #[error("malformed relay message: {0}")]
    Malformed(#[from] MalformedReason),
    /// Decodable but of a type not valid here.
    #[error("unexpected relay message: {0}")]
    UnexpectedType(#[from] UnexpectedReason),
}

/// A refused frame is malformed input, so reading frames and decoding them share one error.
impl From<FrameError> for DecodeError {
    fn from(error: FrameError) -> Self {
        Self::Malformed(MalformedReason::Frame(error))
    }
}

impl DecodeError {
    /// The status to answer with: MALFORMED_MESSAGE or UNEXPECTED_MESSAGE.
    #[must_use]
    pub fn status(&self) -> Status {
        match self {
            Self::Malformed(_) => Status::MalformedMessage,
            Self::UnexpectedType(_) => Status::UnexpectedMessage,
        }
    }
}

/// Limits of a relayed connection. `None` means the relay applies no such limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CircuitLimit {
    /// Longest lifetime of the circuit, in seconds.
    pub duration_secs: Option<u32>,
    /// Most bytes relayed in each direction.
    pub data_bytes: Option<u64>,
}

/// A reservation as the relay grants it in its answer to RESERVE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationInfo {
    /// Unix time (seconds, UTC) at which the reservation ends unless renewed.
    pub expire_unix_secs: u64,
    /// The relay's public addresses, each ending in `/p2p/<relay>`. A relay must never send an
    /// empty list (rust-libp2p refuses such a reservation, DESIGN §4.3); the encoder does not
    /// check this, the reservation logic above it does. Decoding keeps at most [`MAX_ADDRS`].
    pub addrs: Vec<Multiaddr>,
    /// The signed voucher, unverified; see [`crate::relay::voucher::Voucher::verify_for`].
    pub voucher: Option<Bytes>,
}

/// A HOP request, as a relay receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HopRequest {
    /// Reserve (or renew) a slot on the relay for the sender.
    Reserve,
    /// Open a circuit to `peer`. Addresses sent along (active relay, deprecated by the spec) are
    /// ignored.
    Connect {
        /// The target of the circuit.
        peer: PeerId,
    },
}

/// A HOP `STATUS`, as a client receives it in answer to RESERVE or CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopResponse {
    /// Outcome of the request.
    pub status: Status,
    /// The reservation granted, in an OK answer to RESERVE.
    pub reservation: Option<ReservationInfo>,
    /// Limits of the reservation's circuits, or of the circuit just opened.
    pub limit: Option<CircuitLimit>,
}

/// A STOP request, as the target of a circuit receives it from the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopRequest {
    /// `source` wants a circuit to us through this relay.
    Connect {
        /// The initiator of the circuit.
        source: PeerId,
        /// Limits the relay applies to the circuit.
        limit: Option<CircuitLimit>,
    },
}

/// A STOP `STATUS`, as the relay receives it from the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopResponse {
    /// Whether the target accepted the circuit.
    pub status: Status,
}

impl HopRequest {
    /// Encodes the request as one length-prefixed frame.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let message = match self {
            Self::Reserve => proto::HopMessage {
                r#type: Some(proto::HOP_RESERVE),
                ..Default::default()
            },
            Self::Connect { peer } => proto::HopMessage {
                r#type: Some(proto::HOP_CONNECT),
                peer: Some(peer_to_proto(peer)),
                ..Default::default()
            },
        };
        frame(&message)
    }

    /// Decodes one frame payload received by a relay on a HOP stream.
    pub fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        let message: proto::HopMessage = decode_proto(payload)?;
        match hop_type(message.r#type)? {
            MessageType::HopReserve => Ok(Self::Reserve),
            MessageType::HopConnect => {
                let peer = message.peer.ok_or(MalformedReason::MissingField("peer"))?;
                Ok(Self::Connect {
                    peer: peer_id(peer.id, "peer.id")?,
                })
            }
            other => Err(UnexpectedReason::WrongType(other).into()),
        }
    }
}

impl HopResponse {
    /// An answer with `status` and no reservation or limit, e.g. a refusal.
    #[must_use]
    pub fn from_status(status: Status) -> Self {
        Self {
            status,
            reservation: None,
            limit: None,
        }
    }

    /// The OK answer to a RESERVE.
    #[must_use]
    pub fn reservation_accepted(reservation: ReservationInfo, limit: Option<CircuitLimit>) -> Self {
        Self {
            status: Status::Ok,
            reservation: Some(reservation),
            limit,
        }
    }

    /// The OK answer to a CONNECT.
    #[must_use]
    pub fn circuit_established(limit: Option<CircuitLimit>) -> Self {
        Self {
            status: Status::Ok,
            reservation: None,
            limit,
        }
    }

    /// Encodes the response as one length-prefixed frame.
    ///
    /// The size is not checked: a relay keeps its answer under [`MAX_MESSAGE_SIZE`] by sending
    /// at most [`MAX_ADDRS`] addresses (peers keep no more) and a voucher of usual size (an
    /// Ed25519 voucher envelope is about 200 bytes).
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let reservation = self.reservation.as_ref().map(|r| proto::Reservation {
            expire: Some(r.expire_unix_secs),
            addrs: r.addrs.iter().map(|a| Bytes::from(a.to_vec())).collect(),
            voucher: r.voucher.clone(),
        });
        frame(&proto::HopMessage {
            r#type: Some(proto::HOP_STATUS),
            peer: None,
            reservation,
            limit: self.limit.map(limit_to_proto),
            status: Some(self.status.code()),
        })
    }

    /// Decodes one frame payload received by a client on a HOP stream it opened.
    pub fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        let message: proto::HopMessage = decode_proto(payload)?;
        match hop_type(message.r#type)? {
            MessageType::HopStatus => {}
            other => return Err(UnexpectedReason::WrongType(other).into()),
        }
        let reservation = match message.reservation {
            None => None,
            Some(r) => Some(ReservationInfo {
                expire_unix_secs: r
                    .expire
                    .ok_or(MalformedReason::MissingField("reservation.expire"))?,
                addrs: multiaddrs(r.addrs),
                voucher: r.voucher,
            }),
        };
        Ok(Self {
            status: status(message.status)?,
            reservation,
            limit: message.limit.map(limit_from_proto),
        })
    }
}

impl StopRequest {
    /// Encodes the request as one length-prefixed frame.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let Self::Connect { source, limit } = self;
        frame(&proto::StopMessage {
            r#type: Some(proto::STOP_CONNECT),
            peer: Some(peer_to_proto(source)),
            limit: limit.map(limit_to_proto),
            status: None,
        })
    }

    /// Decodes one frame payload received by a client on a STOP stream the relay opened.
    pub fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        let message: proto::StopMessage = decode_proto(payload)?;
        match stop_type(message.r#type)? {
            MessageType::StopConnect => {
                let peer = message.peer.ok_or(MalformedReason::MissingField("peer"))?;
                Ok(Self::Connect {
                    source: peer_id(peer.id, "peer.id")?,
                    limit: message.limit.map(limit_from_proto),
                })
            }
            other => Err(UnexpectedReason::WrongType(other).into()),
        }
    }
}

impl StopResponse {
    /// Encodes the response as one length-prefixed frame.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        frame(&proto::StopMessage {
            r#type: Some(proto::STOP_STATUS),
            peer: None,
            limit: None,
            status: Some(self.status.code()),
        })
    }

    /// Decodes one frame payload received by the relay on a STOP stream it opened.
    pub fn decode(payload: Bytes) -> Result<Self, DecodeError> {
        let message: proto::StopMessage = decode_proto(payload)?;
        match stop_type(message.r#type)? {
            MessageType::StopStatus => Ok(Self {
                status: status(message.status)?,
            }),
            other => Err(UnexpectedReason::WrongType(other).into()),
        }
    }
}

/// `uvarint(len) ‖ protobuf`, written once into a buffer of the exact size.
fn frame(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut out = BytesMut::with_capacity(uvarint_len(len as u64) + len);
    put_uvarint(&mut out, len as u64);
    // `encode_raw` cannot fail: it writes into a growable `BytesMut`.
    message.encode_raw(&mut out);
    out.freeze()
}

fn decode_proto<M: prost::Message + Default>(payload: Bytes) -> Result<M, DecodeError> {
    if payload.len() > MAX_MESSAGE_SIZE {
        return Err(MalformedReason::TooLong { len: payload.len() }.into());
    }
    M::decode(payload).map_err(|e| MalformedReason::Protobuf(e).into())
}

fn hop_type(value: Option<i32>) -> Result<MessageType, DecodeError> {
    match value.ok_or(MalformedReason::MissingField("type"))? {
        proto::HOP_RESERVE => Ok(MessageType::HopReserve),
        proto::HOP_CONNECT => Ok(MessageType::HopConnect),
        proto::HOP_STATUS => Ok(MessageType::HopStatus),
        other => Err(UnexpectedReason::UnknownType(other).into()),
    }
}

fn stop_type(value: Option<i32>) -> Result<MessageType, DecodeError> {
    match value.ok_or(MalformedReason::MissingField("type"))? {
        proto::STOP_CONNECT => Ok(MessageType::StopConnect),
        proto::STOP_STATUS => Ok(MessageType::StopStatus),
        other => Err(UnexpectedReason::UnknownType(other).into()),
    }
}

fn status(value: Option<i32>) -> Result<Status, DecodeError> {
    let code = value.ok_or(MalformedReason::MissingField("status"))?;
    Status::from_code(code).ok_or_else(|| MalformedReason::UnknownStatus(code).into())
}

fn peer_id(bytes: Option<Bytes>, field: &'static str) -> Result<PeerId, DecodeError> {
    let bytes = bytes.ok_or(MalformedReason::MissingField(field))?;
    PeerId::from_bytes(&bytes).map_err(|_| MalformedReason::InvalidPeerId(field).into())
}

/// Valid multiaddrs among `raw`, at most [`MAX_ADDRS`]; invalid and empty ones are skipped
/// (the empty byte string parses as the empty multiaddr, which addresses nothing).
fn multiaddrs(raw: Vec<Bytes>) -> Vec<Multiaddr> {
    raw.into_iter()
        .filter(|bytes| !bytes.is_empty())
        .filter_map(|bytes| Multiaddr::try_from(Vec::from(bytes)).ok())
        .take(MAX_ADDRS)
        .collect()
}

fn peer_to_proto(peer: &PeerId) -> proto::Peer {
    proto::Peer {
        id: Some(Bytes::from(peer.to_bytes())),
        addrs: Vec::new(),
    }
}

fn limit_to_proto(limit: CircuitLimit) -> proto::Limit {
    proto::Limit {
        duration: limit.duration_secs,
        data: limit.data_bytes,
    }
}

fn limit_from_proto(limit: proto::Limit) -> CircuitLimit {
    CircuitLimit {
        duration_secs: limit.duration,
        data_bytes: limit.data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::FrameDecoder;
    use crate::relay::voucher::Voucher;
    use libp2p_identity::Keypair;
    use proptest::prelude::*;
    use prost::Message as _;

    fn peer(n: u8) -> PeerId {
        Keypair::ed25519_from_bytes([n; 32])
            .expect("32 bytes make an ed25519 key")
            .public()
            .to_peer_id()
    }

    /// Strips the frame prefix through the real decoder, checking nothing is left over.
    fn payload(frame: &[u8]) -> Bytes {
        let mut decoder = FrameDecoder::new(MAX_MESSAGE_SIZE);
        decoder.extend(frame);
        let payload = decoder.decode().unwrap().expect("one complete frame");
        assert_eq!(decoder.buffered(), 0);
        payload
    }

    fn hop_bytes(message: &proto::HopMessage) -> Bytes {
        Bytes::from(message.encode_to_vec())
    }

    fn stop_bytes(message: &proto::StopMessage) -> Bytes {
        Bytes::from(message.encode_to_vec())
    }

    fn relay_addr() -> Multiaddr {
        format!("/ip4/1.2.3.4/udp/4001/quic-v1/p2p/{}", peer(1))
            .parse()
            .unwrap()
    }

    #[test]
    fn every_message_kind_round_trips() {
        let limit = Some(CircuitLimit {
            duration_secs: Some(1800),
            data_bytes: Some(128 << 20),
        });
        for request in [HopRequest::Reserve, HopRequest::Connect { peer: peer(2) }] {
            assert_eq!(HopRequest::decode(payload(&request.encode())), Ok(request));
        }
        let responses = [
            HopResponse::reservation_accepted(
                ReservationInfo {
                    expire_unix_secs: 1_700_003_600,
                    addrs: vec![relay_addr(), "/ip6/::1/udp/1/quic-v1".parse().unwrap()],
                    voucher: Some(Bytes::from_static(b"envelope")),
                },
                limit,
            ),
            HopResponse::circuit_established(limit),
            HopResponse::circuit_established(Some(CircuitLimit::default())),
            HopResponse::from_status(Status::NoReservation),
        ];
        for response in responses {
            assert_eq!(
                HopResponse::decode(payload(&response.encode())),
                Ok(response)
            );
        }
        for request in [
            StopRequest::Connect {
                source: peer(3),
                limit,
            },
            StopRequest::Connect {
                source: peer(3),
                limit: None,
            },
        ] {
            assert_eq!(StopRequest::decode(payload(&request.encode())), Ok(request));
        }
        for status in [Status::Ok, Status::ConnectionFailed] {
            let response = StopResponse { status };
            assert_eq!(
                StopResponse::decode(payload(&response.encode())),
                Ok(response)
            );
        }
    }

    #[test]
    fn every_status_code_round_trips_through_its_protobuf_value() {
        let all = [
            (Status::Ok, 100),
            (Status::ReservationRefused, 200),
            (Status::ResourceLimitExceeded, 201),
            (Status::PermissionDenied, 202),
            (Status::ConnectionFailed, 203),
            (Status::NoReservation, 204),
            (Status::MalformedMessage, 400),
            (Status::UnexpectedMessage, 401),
        ];
        for (status, code) in all {
            assert_eq!(status.code(), code);
            assert_eq!(Status::from_code(code), Some(status));
        }
        assert_eq!(Status::from_code(0), None);
    }

    #[test]
    fn reserve_request_has_the_golden_encoding() {
        // frame length 2, then field 1 (type) as varint: key (1 << 3 | 0) = 0x08, RESERVE = 0.
        assert_eq!(&HopRequest::Reserve.encode()[..], &[0x02, 0x08, 0x00]);
    }

    #[test]
    fn reservation_status_has_the_golden_encoding() {
        let response = HopResponse::reservation_accepted(
            ReservationInfo {
                expire_unix_secs: 1_700_000_000,
                addrs: vec!["/ip4/1.2.3.4/udp/4001/quic-v1".parse().unwrap()],
                voucher: None,
            },
            Some(CircuitLimit {
                duration_secs: Some(120),
                data_bytes: Some(1 << 17),
            }),
        );
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x21, // frame length 33
            0x08, 0x02, // type (1, varint) = STATUS
            0x1a, 0x13, // reservation (3, length-delimited), 19 bytes
                0x08, 0x80, 0xe2, 0xcf, 0xaa, 0x06, // expire (1, varint) = 1_700_000_000
                0x12, 0x0b, // addrs (2, length-delimited), 11 bytes:
                    0x04, 1, 2, 3, 4, // ip4 1.2.3.4
                    0x91, 0x02, 0x0f, 0xa1, // udp (273) 4001
                    0xcd, 0x03, // quic-v1 (461)
            0x22, 0x06, // limit (4, length-delimited), 6 bytes
                0x08, 0x78, // duration (1, varint) = 120
                0x10, 0x80, 0x80, 0x08, // data (2, varint) = 131072
            0x28, 0x64, // status (5, varint) = OK (100)
        ];
        assert_eq!(&response.encode()[..], expected);
    }

    #[test]
    fn stop_status_has_the_golden_encoding() {
        let frame = StopResponse {
            status: Status::ConnectionFailed,
        }
        .encode();
        // type (1) = STATUS (1); status (4, varint) = 203 = 0xcb 0x01.
        assert_eq!(&frame[..], &[0x05, 0x08, 0x01, 0x20, 0xcb, 0x01]);
    }

    #[test]
    fn connect_without_peer_is_malformed() {
        let bytes = hop_bytes(&proto::HopMessage {
            r#type: Some(proto::HOP_CONNECT),
            ..Default::default()
        });
        let err = HopRequest::decode(bytes).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Malformed(MalformedReason::MissingField("peer"))
        );
        assert_eq!(err.status(), Status::MalformedMessage);
    }

    #[test]
    fn connect_with_peer_but_no_id_is_malformed() {
        let bytes = hop_bytes(&proto::HopMessage {
            r#type: Some(proto::HOP_CONNECT),
            peer: Some(proto::Peer::default()),
            ..Default::default()
        });
        assert_eq!(
            HopRequest::decode(bytes),
            Err(MalformedReason::MissingField("peer.id").into())
        );
    }

    #[test]
    fn message_without_type_is_malformed_not_a_reserve() {
        // prost would default a missing required enum to 0 = RESERVE; we must not.
        assert_eq!(
            HopRequest::decode(Bytes::new()),
            Err(MalformedReason::MissingField("type").into())
        );
        assert_eq!(
            StopRequest::decode(Bytes::new()).unwrap_err().status(),
            Status::MalformedMessage
        );
    }

    #[test]
    fn status_sent_to_a_relay_as_a_request_is_unexpected() {
        let frame = HopResponse::from_status(Status::Ok).encode();
        let err = HopRequest::decode(payload(&frame)).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnexpectedType(UnexpectedReason::WrongType(MessageType::HopStatus))
        );
        assert_eq!(err.status(), Status::UnexpectedMessage);
    }

    #[test]
    fn requests_sent_where_a_status_is_expected_are_unexpected() {
        let err = HopResponse::decode(payload(&HopRequest::Reserve.encode())).unwrap_err();
        assert_eq!(err.status(), Status::UnexpectedMessage);
        let connect = StopRequest::Connect {
            source: peer(2),
            limit: None,
        };
        let err = StopResponse::decode(payload(&connect.encode())).unwrap_err();
        assert_eq!(
            err,
            UnexpectedReason::WrongType(MessageType::StopConnect).into()
        );
        let status = StopResponse { status: Status::Ok };
        let err = StopRequest::decode(payload(&status.encode())).unwrap_err();
        assert_eq!(err.status(), Status::UnexpectedMessage);
    }

    #[test]
    fn unknown_type_value_is_unexpected() {
        for value in [3, -1, i32::MAX] {
            let err = HopRequest::decode(hop_bytes(&proto::HopMessage {
                r#type: Some(value),
                ..Default::default()
            }))
            .unwrap_err();
            assert_eq!(err, UnexpectedReason::UnknownType(value).into());
            assert_eq!(err.status(), Status::UnexpectedMessage);
        }
        let err = StopRequest::decode(stop_bytes(&proto::StopMessage {
            r#type: Some(2),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(err, UnexpectedReason::UnknownType(2).into());
    }

    #[test]
    fn invalid_peer_id_bytes_are_malformed() {
        let garbage = proto::Peer {
            id: Some(Bytes::from_static(&[0x00, 0x05, 1, 2])),
            addrs: Vec::new(),
        };
        let err = HopRequest::decode(hop_bytes(&proto::HopMessage {
            r#type: Some(proto::HOP_CONNECT),
            peer: Some(garbage.clone()),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(err, MalformedReason::InvalidPeerId("peer.id").into());
        assert_eq!(err.status(), Status::MalformedMessage);
        let err = StopRequest::decode(stop_bytes(&proto::StopMessage {
            r#type: Some(proto::STOP_CONNECT),
            peer: Some(garbage),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(err, MalformedReason::InvalidPeerId("peer.id").into());
    }

    #[test]
    fn undecodable_protobuf_is_malformed() {
        // Field 1 announced as length-delimited with 5 bytes, none follow.
        let err = HopRequest::decode(Bytes::from_static(&[0x0a, 0x05])).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::Malformed(MalformedReason::Protobuf(_))
        ));
        assert_eq!(err.status(), Status::MalformedMessage);
    }

    #[test]
    fn status_without_status_field_or_with_unknown_code_is_malformed() {
        let missing = hop_bytes(&proto::HopMessage {
            r#type: Some(proto::HOP_STATUS),
            ..Default::default()
        });
        assert_eq!(
            HopResponse::decode(missing),
            Err(MalformedReason::MissingField("status").into())
        );
        let unknown = stop_bytes(&proto::StopMessage {
            r#type: Some(proto::STOP_STATUS),
            status: Some(0),
            ..Default::default()
        });
        assert_eq!(
            StopResponse::decode(unknown),
            Err(MalformedReason::UnknownStatus(0).into())
        );
    }

    #[test]
    fn reservation_without_expire_is_malformed() {
        let bytes = hop_bytes(&proto::HopMessage {
            r#type: Some(proto::HOP_STATUS),
            status: Some(100),
            reservation: Some(proto::Reservation::default()),
            ..Default::default()
        });
        assert_eq!(
            HopResponse::decode(bytes),
            Err(MalformedReason::MissingField("reservation.expire").into())
        );
    }

    #[test]
    fn oversized_frame_is_refused_before_buffering() {
        let mut decoder = FrameDecoder::new(MAX_MESSAGE_SIZE);
        let mut prefix = BytesMut::new();
        put_uvarint(&mut prefix, MAX_MESSAGE_SIZE as u64 + 1);
        decoder.extend(&prefix);
        assert_eq!(
            decoder.decode(),
            Err(FrameError::TooLong {
                announced: MAX_MESSAGE_SIZE as u64 + 1,
                max: MAX_MESSAGE_SIZE
            })
        );
        assert_eq!(decoder.buffered(), prefix.len());
        // A payload handed over directly is bounded too.
        let big = Bytes::from(vec![0u8; MAX_MESSAGE_SIZE + 1]);
        assert_eq!(
            HopRequest::decode(big).unwrap_err(),
            MalformedReason::TooLong {
                len: MAX_MESSAGE_SIZE + 1
            }
            .into()
        );
    }

    #[test]
    fn refused_frame_converts_to_a_malformed_message_status() {
        let mut decoder = FrameDecoder::new(MAX_MESSAGE_SIZE);
        decoder.extend(&[0x80, 0x00]); // non-minimal length prefix
        let err = DecodeError::from(decoder.decode().unwrap_err());
        assert_eq!(
            err,
            MalformedReason::Frame(FrameError::MalformedLength).into()
        );
        assert_eq!(err.status(), Status::MalformedMessage);
    }

    #[test]
    fn signed_voucher_travels_in_a_reservation_and_verifies() {
        let relay_key = Keypair::ed25519_from_bytes([1; 32]).unwrap();
        let voucher = Voucher {
            relay: peer(1),
            peer: peer(2),
            expiration_unix_secs: 1_700_003_600,
        };
        let response = HopResponse::reservation_accepted(
            ReservationInfo {
                expire_unix_secs: voucher.expiration_unix_secs,
                addrs: vec![relay_addr()],
                voucher: Some(voucher.sign(&relay_key).unwrap()),
            },
            None,
        );
        let frame = response.encode();
        assert!(frame.len() < 400, "a full reservation answer is small");
        let received = HopResponse::decode(payload(&frame)).unwrap();
        let envelope = received.reservation.unwrap().voucher.unwrap();
        assert_eq!(
            Voucher::verify_for(&envelope, &peer(1), &peer(2), 1_700_000_000),
            Ok(voucher)
        );
    }

    #[test]
    fn bytes_after_the_final_status_stay_with_the_stream() {
        let mut wire = HopResponse::circuit_established(None).encode().to_vec();
        wire.extend_from_slice(b"/multistream/1.0.0\n");
        let mut decoder = FrameDecoder::new(MAX_MESSAGE_SIZE);
        decoder.extend(&wire);
        let frame = decoder.decode().unwrap().unwrap();
        assert!(HopResponse::decode(frame).unwrap().status.is_ok());
        assert_eq!(&decoder.into_remaining()[..], b"/multistream/1.0.0\n");
    }

    #[test]
    fn invalid_multiaddrs_are_skipped_and_the_list_is_bounded() {
        let good = Bytes::from(relay_addr().to_vec());
        let mut addrs = vec![Bytes::from_static(&[0xff, 0xff, 0xff]), Bytes::new()];
        addrs.extend(std::iter::repeat_n(good, MAX_ADDRS + 5));
        let bytes = hop_bytes(&proto::HopMessage {
            r#type: Some(proto::HOP_STATUS),
            status: Some(100),
            reservation: Some(proto::Reservation {
                expire: Some(10),
                addrs,
                voucher: None,
            }),
            ..Default::default()
        });
        let reservation = HopResponse::decode(bytes).unwrap().reservation.unwrap();
        assert_eq!(reservation.addrs.len(), MAX_ADDRS);
        assert!(reservation.addrs.iter().all(|a| *a == relay_addr()));
    }

    #[test]
    fn unrelated_fields_and_unknown_fields_are_ignored() {
        let mut bytes = hop_bytes(&proto::HopMessage {
            r#type: Some(proto::HOP_RESERVE),
            peer: Some(peer_to_proto(&peer(4))),
            status: Some(100),
            ..Default::default()
        })
        .to_vec();
        bytes.extend_from_slice(&[0x78, 0x01]); // field 15, varint 1
        assert_eq!(
            HopRequest::decode(Bytes::from(bytes)),
            Ok(HopRequest::Reserve)
        );
    }

    proptest! {
        #[test]
        fn decoders_never_panic_on_random_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..600)
        ) {
            let bytes = Bytes::from(bytes);
            let _ = HopRequest::decode(bytes.clone());
            let _ = HopResponse::decode(bytes.clone());
            let _ = StopRequest::decode(bytes.clone());
            let _ = StopResponse::decode(bytes);
        }

        #[test]
        fn decoders_never_panic_on_random_ids_and_addrs(
            id in proptest::collection::vec(any::<u8>(), 0..80),
            addrs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 0..8),
            kind in 0i32..3,
        ) {
            let addrs: Vec<Bytes> = addrs.into_iter().map(Bytes::from).collect();
            let peer = proto::Peer { id: Some(Bytes::from(id)), addrs: addrs.clone() };
            let hop = hop_bytes(&proto::HopMessage {
                r#type: Some(kind),
                peer: Some(peer.clone()),
                reservation: Some(proto::Reservation { expire: Some(1), addrs, voucher: None }),
                limit: None,
                status: Some(100),
            });
            let _ = HopRequest::decode(hop.clone());
            let _ = HopResponse::decode(hop);
            let stop = stop_bytes(&proto::StopMessage {
                r#type: Some(kind),
                peer: Some(peer),
                limit: None,
                status: Some(100),
            });
            let _ = StopRequest::decode(stop.clone());
            let _ = StopResponse::decode(stop);
        }

        #[test]
        fn any_limit_round_trips(duration in any::<Option<u32>>(), data in any::<Option<u64>>()) {
            let limit = Some(CircuitLimit { duration_secs: duration, data_bytes: data });
            let request = StopRequest::Connect { source: peer(5), limit };
            prop_assert_eq!(StopRequest::decode(payload(&request.encode())), Ok(request));
        }
    }
}
