//! [`PeerKey`]: a PeerId as a key of the relay's ordered tables that compares in one integer
//! comparison almost always.
//!
//! A `PeerId`'s own ordering compares its multihash bytes (`memcmp` over an Ed25519 PeerId's
//! identical protobuf header first), and a rate limiter's tree compares about log₂(keys) times
//! per lookup: that was a third of a refused RESERVE's cost (DESIGN §10 decisions per second).
//! `PeerKey` puts 16 bytes of the PeerId's digest in front as a `u128` and falls back to the
//! full PeerId only when those are equal, so two different peers never share a key.

use std::cmp::Ordering;

use crate::identity::PeerId;

/// A PeerId ordered by 16 bytes of its digest first, then by the whole PeerId.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerKey {
    /// The last 16 bytes of the digest (of an identity multihash: the end of the public key),
    /// big-endian; shorter digests are zero-padded.
    prefix: u128,
    peer: PeerId,
}

impl PeerKey {
    /// The key of `peer`.
    #[must_use]
    pub fn new(peer: PeerId) -> Self {
        let digest = peer.as_ref().digest();
        let tail = &digest[digest.len().saturating_sub(16)..];
        let mut bytes = [0u8; 16];
        bytes[16 - tail.len()..].copy_from_slice(tail);
        Self {
            prefix: u128::from_be_bytes(bytes),
            peer,
        }
    }

    /// The PeerId.
    #[must_use]
    pub fn peer(&self) -> PeerId {
        self.peer
    }
}

impl Ord for PeerKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.prefix
            .cmp(&other.prefix)
            .then_with(|| self.peer.cmp(&other.peer))
    }
}

impl PartialOrd for PeerKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::keypair_from_seed;

    fn peer(n: u8) -> PeerId {
        keypair_from_seed([n; 32]).public().to_peer_id()
    }

    #[test]
    fn keys_are_equal_exactly_when_peers_are() {
        for a in 0..20 {
            for b in 0..20 {
                let (ka, kb) = (PeerKey::new(peer(a)), PeerKey::new(peer(b)));
                assert_eq!(ka == kb, a == b);
                assert_eq!(ka.cmp(&kb) == Ordering::Equal, a == b);
                assert_eq!(kb.cmp(&ka), ka.cmp(&kb).reverse());
            }
        }
        assert_eq!(PeerKey::new(peer(3)).peer(), peer(3));
    }

    #[test]
    fn equal_prefixes_fall_back_to_the_whole_peer_id() {
        let (a, b) = (peer(1), peer(2));
        let same_prefix = |peer| PeerKey { prefix: 7, peer };
        assert_eq!(same_prefix(a).cmp(&same_prefix(b)), a.cmp(&b));
        assert_ne!(same_prefix(a), same_prefix(b));
    }

    #[test]
    fn hashed_peer_ids_get_keys_too() {
        // A sha2-256 PeerId (RSA-style keys) has a 32-byte digest; an Ed25519 one is an
        // identity multihash of 36 bytes.
        let hashed = |byte| {
            let digest = multiaddr::multihash::Multihash::<64>::wrap(0x12, &[byte; 32]);
            PeerId::from_multihash(digest.expect("32-byte sha2-256")).expect("a PeerId")
        };
        let (a, b) = (PeerKey::new(hashed(1)), PeerKey::new(hashed(2)));
        assert_eq!(a.peer(), hashed(1));
        assert_ne!(a, b);
        assert_ne!(a, PeerKey::new(peer(1)));
    }
}
