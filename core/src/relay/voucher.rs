//! Reservation vouchers: signed envelopes (libp2p RFC 0002) by which a relay testifies that it
//! serves a peer until a given time (DESIGN §4.3).
//!
//! An envelope is the protobuf `Envelope { public_key = 1, payload_type = 2, payload = 3,
//! signature = 5 }`. The signature covers
//! `uvarint(len(domain)) ‖ domain ‖ uvarint(len(payload_type)) ‖ payload_type ‖
//! uvarint(len(payload)) ‖ payload`, so a signature made for another domain or payload type never
//! verifies here. The domain is not on the wire: an envelope signed for another domain surfaces
//! as [`VoucherError::BadSignature`].
//!
//! For vouchers the domain is [`VOUCHER_DOMAIN`], the payload type [`VOUCHER_PAYLOAD_TYPE`] and
//! the payload the canonical (field-ordered) protobuf `ReservationVoucher { relay = 1, peer = 2,
//! expiration = 3 }`. Time is an input: expiry is checked against the unix seconds the caller
//! passes in.

use bytes::Bytes;
use libp2p_identity::{Keypair, PeerId, PublicKey, SigningError};
use prost::Message as _;

use crate::framing::put_uvarint;

/// Signature domain of reservation vouchers.
pub const VOUCHER_DOMAIN: &str = "libp2p-relay-rsvp";

/// Payload type of reservation vouchers: the multicodec 0x0302 as uvarint bytes.
pub const VOUCHER_PAYLOAD_TYPE: [u8; 2] = [0x03, 0x02];

/// Largest envelope [`Voucher::open`] accepts; it also bounds the voucher inside a HOP message.
pub const MAX_VOUCHER_SIZE: usize = 4096;

/// Wire form of a signed envelope (`envelope.proto`, proto3).
#[derive(Clone, PartialEq, prost::Message)]
struct Envelope {
    /// The signer's `PublicKey` protobuf message, carried as its encoded bytes.
    #[prost(bytes = "bytes", tag = "1")]
    public_key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    payload_type: Bytes,
    #[prost(bytes = "bytes", tag = "3")]
    payload: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    signature: Bytes,
}

/// Wire form of the voucher payload; `required` fields are `Option` so absence is detected.
#[derive(Clone, PartialEq, prost::Message)]
struct ReservationVoucher {
    #[prost(bytes = "bytes", optional, tag = "1")]
    relay: Option<Bytes>,
    #[prost(bytes = "bytes", optional, tag = "2")]
    peer: Option<Bytes>,
    #[prost(uint64, optional, tag = "3")]
    expiration: Option<u64>,
}

/// A reservation voucher: `relay` serves `peer` until `expiration_unix_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Voucher {
    /// The relay that granted the reservation and signed the voucher.
    pub relay: PeerId,
    /// The peer holding the reservation.
    pub peer: PeerId,
    /// Unix time (seconds, UTC) at which the reservation ends.
    pub expiration_unix_secs: u64,
}

/// Why an envelope is not a valid voucher (for this relay, peer and time).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VoucherError {
    /// The envelope is larger than [`MAX_VOUCHER_SIZE`].
    #[error("voucher envelope of {len} bytes exceeds {MAX_VOUCHER_SIZE}")]
    TooLong {
        /// Envelope length.
        len: usize,
    },
    /// The envelope, its public key or its payload cannot be decoded; names the part.
    #[error("malformed voucher: {0}")]
    Malformed(&'static str),
    /// The envelope carries another payload type than [`VOUCHER_PAYLOAD_TYPE`].
    #[error("envelope payload type is not a reservation voucher")]
    WrongPayloadType,
    /// The signature does not verify over the voucher domain, payload type and payload.
    #[error("voucher signature does not verify")]
    BadSignature,
    /// The envelope was signed by a key other than the relay's named in the voucher.
    #[error("voucher not signed by the relay it names")]
    SignerIsNotRelay,
    /// The voucher was issued by another relay than expected.
    #[error("voucher issued by another relay")]
    WrongRelay,
    /// The voucher was issued for another peer than expected.
    #[error("voucher issued for another peer")]
    WrongPeer,
    /// The voucher expired.
    #[error("voucher expired at {expiration_unix_secs}, now is {now_unix_secs}")]
    Expired {
        /// Expiration in the voucher.
        expiration_unix_secs: u64,
        /// The time it was checked against.
        now_unix_secs: u64,
    },
}

/// Why a voucher could not be signed (local misuse or key failure, never peer input).
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The key does not belong to the voucher's `relay`: every reader would reject the voucher.
    #[error("signing key is not the relay's key")]
    KeyIsNotRelay,
    /// The key failed to sign.
    #[error("signing failed: {0}")]
    Signing(#[from] SigningError),
}

impl Voucher {
    /// Signs the voucher with the relay's key and returns the envelope bytes, ready for the
    /// `voucher` field of a reservation.
    pub fn sign(&self, relay_key: &Keypair) -> Result<Bytes, SignError> {
        if relay_key.public().to_peer_id() != self.relay {
            return Err(SignError::KeyIsNotRelay);
        }
        let payload = ReservationVoucher {
            relay: Some(Bytes::from(self.relay.to_bytes())),
            peer: Some(Bytes::from(self.peer.to_bytes())),
            expiration: Some(self.expiration_unix_secs),
        }
        .encode_to_vec();
        seal(relay_key, VOUCHER_DOMAIN, &VOUCHER_PAYLOAD_TYPE, payload)
    }

    /// Decodes an envelope and checks that it is a voucher signed by the relay it names.
    ///
    /// Checks, in order: size, envelope encoding, payload type, public key, signature (over
    /// [`VOUCHER_DOMAIN`]), payload encoding, and that the signer's PeerId is `relay`. It does
    /// not check who the voucher is for or whether it expired: see [`Voucher::verify_for`].
    pub fn open(envelope: &[u8]) -> Result<Self, VoucherError> {
        let (signer, payload) = open_envelope(envelope, VOUCHER_DOMAIN, &VOUCHER_PAYLOAD_TYPE)?;
        let payload = ReservationVoucher::decode(payload)
            .map_err(|_| VoucherError::Malformed("voucher payload"))?;
        let voucher = Self {
            relay: peer_id(payload.relay, "voucher relay")?,
            peer: peer_id(payload.peer, "voucher peer")?,
            expiration_unix_secs: payload
                .expiration
                .ok_or(VoucherError::Malformed("voucher expiration missing"))?,
        };
        if signer.to_peer_id() != voucher.relay {
            return Err(VoucherError::SignerIsNotRelay);
        }
        Ok(voucher)
    }

    /// [`Voucher::open`], then checks that the voucher was issued by `expected_relay` to
    /// `expected_peer` and is still valid at `now_unix_secs` (valid strictly before its
    /// expiration second).
    pub fn verify_for(
        envelope: &[u8],
        expected_relay: &PeerId,
        expected_peer: &PeerId,
        now_unix_secs: u64,
    ) -> Result<Self, VoucherError> {
        let voucher = Self::open(envelope)?;
        if voucher.relay != *expected_relay {
            return Err(VoucherError::WrongRelay);
        }
        if voucher.peer != *expected_peer {
            return Err(VoucherError::WrongPeer);
        }
        if now_unix_secs >= voucher.expiration_unix_secs {
            return Err(VoucherError::Expired {
                expiration_unix_secs: voucher.expiration_unix_secs,
                now_unix_secs,
            });
        }
        Ok(voucher)
    }
}

/// The bytes an envelope signature covers.
fn signed_bytes(domain: &str, payload_type: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + payload_type.len() + payload.len() + 6);
    for part in [domain.as_bytes(), payload_type, payload] {
        put_uvarint(&mut out, part.len() as u64);
        out.extend_from_slice(part);
    }
    out
}

/// Signs `payload` into an envelope for `domain`.
fn seal(
    key: &Keypair,
    domain: &str,
    payload_type: &[u8],
    payload: Vec<u8>,
) -> Result<Bytes, SignError> {
    let signature = key.sign(&signed_bytes(domain, payload_type, &payload))?;
    let envelope = Envelope {
        public_key: Bytes::from(key.public().encode_protobuf()),
        payload_type: Bytes::copy_from_slice(payload_type),
        payload: Bytes::from(payload),
        signature: Bytes::from(signature),
    };
    Ok(Bytes::from(envelope.encode_to_vec()))
}

/// Decodes an envelope of `payload_type` and verifies its signature for `domain`; returns the
/// signer and the payload.
fn open_envelope(
    envelope: &[u8],
    domain: &str,
    payload_type: &[u8],
) -> Result<(PublicKey, Bytes), VoucherError> {
    if envelope.len() > MAX_VOUCHER_SIZE {
        return Err(VoucherError::TooLong {
            len: envelope.len(),
        });
    }
    let envelope =
        Envelope::decode(envelope).map_err(|_| VoucherError::Malformed("envelope encoding"))?;
    // Cheap check first: no signature verification for something that is not a voucher.
    if envelope.payload_type != payload_type {
        return Err(VoucherError::WrongPayloadType);
    }
    let signer = PublicKey::try_decode_protobuf(&envelope.public_key)
        .map_err(|_| VoucherError::Malformed("envelope public key"))?;
    let signed = signed_bytes(domain, &envelope.payload_type, &envelope.payload);
    if !signer.verify(&signed, &envelope.signature) {
        return Err(VoucherError::BadSignature);
    }
    Ok((signer, envelope.payload))
}

fn peer_id(bytes: Option<Bytes>, what: &'static str) -> Result<PeerId, VoucherError> {
    let bytes = bytes.ok_or(VoucherError::Malformed(what))?;
    PeerId::from_bytes(&bytes).map_err(|_| VoucherError::Malformed(what))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_700_000_000;

    fn key(n: u8) -> Keypair {
        Keypair::ed25519_from_bytes([n; 32]).expect("32 bytes make an ed25519 key")
    }

    fn id(n: u8) -> PeerId {
        key(n).public().to_peer_id()
    }

    fn voucher() -> Voucher {
        Voucher {
            relay: id(1),
            peer: id(2),
            expiration_unix_secs: NOW + 3600,
        }
    }

    fn envelope_of(bytes: &[u8]) -> Envelope {
        Envelope::decode(bytes).unwrap()
    }

    #[test]
    fn signed_voucher_opens_and_verifies() {
        let sealed = voucher().sign(&key(1)).unwrap();
        assert_eq!(Voucher::open(&sealed), Ok(voucher()));
        assert_eq!(
            Voucher::verify_for(&sealed, &id(1), &id(2), NOW),
            Ok(voucher())
        );
    }

    #[test]
    fn envelope_carries_the_protobuf_public_key_and_voucher_payload_type() {
        let envelope = envelope_of(&voucher().sign(&key(1)).unwrap());
        assert_eq!(
            &envelope.public_key[..],
            &key(1).public().encode_protobuf()[..]
        );
        assert_eq!(&envelope.payload_type[..], &[0x03, 0x02]);
        // Canonical payload: relay (1), peer (2), expiration (3), in field order.
        let mut expected = vec![0x0a, 38];
        expected.extend(id(1).to_bytes());
        expected.extend([0x12, 38]);
        expected.extend(id(2).to_bytes());
        expected.extend([0x18, 0x90, 0xfe, 0xcf, 0xaa, 0x06]); // 1_700_003_600
        assert_eq!(&envelope.payload[..], &expected[..]);
    }

    #[test]
    fn signing_with_a_key_other_than_the_relays_is_refused() {
        assert!(matches!(
            voucher().sign(&key(3)),
            Err(SignError::KeyIsNotRelay)
        ));
    }

    #[test]
    fn tampered_payload_fails_the_signature() {
        let mut envelope = envelope_of(&voucher().sign(&key(1)).unwrap());
        let tampered = ReservationVoucher {
            relay: Some(Bytes::from(id(1).to_bytes())),
            peer: Some(Bytes::from(id(2).to_bytes())),
            expiration: Some(u64::MAX),
        };
        envelope.payload = Bytes::from(tampered.encode_to_vec());
        assert_eq!(
            Voucher::open(&envelope.encode_to_vec()),
            Err(VoucherError::BadSignature)
        );
    }

    #[test]
    fn envelope_signed_for_another_domain_fails_the_signature() {
        let payload = envelope_of(&voucher().sign(&key(1)).unwrap()).payload;
        let sealed = seal(
            &key(1),
            "libp2p-routing-state",
            &VOUCHER_PAYLOAD_TYPE,
            payload.to_vec(),
        )
        .unwrap();
        assert_eq!(Voucher::open(&sealed), Err(VoucherError::BadSignature));
    }

    #[test]
    fn voucher_signed_by_another_key_is_refused() {
        // Key 3 signs a voucher naming relay 1, bypassing `sign`'s own check.
        let payload = envelope_of(&voucher().sign(&key(1)).unwrap()).payload;
        let sealed = seal(
            &key(3),
            VOUCHER_DOMAIN,
            &VOUCHER_PAYLOAD_TYPE,
            payload.to_vec(),
        )
        .unwrap();
        assert_eq!(Voucher::open(&sealed), Err(VoucherError::SignerIsNotRelay));
    }

    #[test]
    fn voucher_for_another_relay_or_peer_is_refused() {
        let sealed = voucher().sign(&key(1)).unwrap();
        assert_eq!(
            Voucher::verify_for(&sealed, &id(1), &id(3), NOW),
            Err(VoucherError::WrongPeer)
        );
        assert_eq!(
            Voucher::verify_for(&sealed, &id(3), &id(2), NOW),
            Err(VoucherError::WrongRelay)
        );
    }

    #[test]
    fn voucher_expires_at_its_expiration_second() {
        let sealed = voucher().sign(&key(1)).unwrap();
        let expiration = voucher().expiration_unix_secs;
        assert!(Voucher::verify_for(&sealed, &id(1), &id(2), expiration - 1).is_ok());
        for now in [expiration, expiration + 1, u64::MAX] {
            assert_eq!(
                Voucher::verify_for(&sealed, &id(1), &id(2), now),
                Err(VoucherError::Expired {
                    expiration_unix_secs: expiration,
                    now_unix_secs: now
                })
            );
        }
    }

    #[test]
    fn envelope_of_another_payload_type_is_refused() {
        let payload = envelope_of(&voucher().sign(&key(1)).unwrap()).payload;
        // 0x0301 is the libp2p peer record.
        let sealed = seal(&key(1), VOUCHER_DOMAIN, &[0x03, 0x01], payload.to_vec()).unwrap();
        assert_eq!(Voucher::open(&sealed), Err(VoucherError::WrongPayloadType));
    }

    #[test]
    fn malformed_and_oversized_envelopes_are_refused() {
        assert_eq!(
            Voucher::open(&[0x0a, 0x05]),
            Err(VoucherError::Malformed("envelope encoding"))
        );
        // Right payload type, but no public key.
        let no_key = Envelope {
            payload_type: Bytes::from_static(&VOUCHER_PAYLOAD_TYPE),
            ..Default::default()
        };
        assert_eq!(
            Voucher::open(&no_key.encode_to_vec()),
            Err(VoucherError::Malformed("envelope public key"))
        );
        // Validly signed, but the payload lacks the peer.
        let partial = ReservationVoucher {
            relay: Some(Bytes::from(id(1).to_bytes())),
            peer: None,
            expiration: Some(NOW),
        };
        let sealed = seal(
            &key(1),
            VOUCHER_DOMAIN,
            &VOUCHER_PAYLOAD_TYPE,
            partial.encode_to_vec(),
        )
        .unwrap();
        assert_eq!(
            Voucher::open(&sealed),
            Err(VoucherError::Malformed("voucher peer"))
        );
        assert_eq!(
            Voucher::open(&vec![0u8; MAX_VOUCHER_SIZE + 1]),
            Err(VoucherError::TooLong {
                len: MAX_VOUCHER_SIZE + 1
            })
        );
    }

    proptest! {
        #[test]
        fn opening_random_bytes_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            now in any::<u64>(),
        ) {
            let _ = Voucher::open(&bytes);
            let _ = Voucher::verify_for(&bytes, &id(1), &id(2), now);
        }

        #[test]
        fn flipping_any_byte_of_a_voucher_never_verifies_a_different_voucher(
            index in 0usize..200,
            flip in 1u8..=255,
        ) {
            let mut sealed = voucher().sign(&key(1)).unwrap().to_vec();
            let index = index % sealed.len();
            sealed[index] ^= flip;
            // Either refused, or (a flip in an ignored encoding detail) still the same voucher.
            if let Ok(opened) = Voucher::open(&sealed) {
                prop_assert_eq!(opened, voucher());
            }
        }
    }
}
