//! A rustls [`CryptoProvider`] whose randomness comes from a seed, for simulators and tests.
//!
//! rustls draws two kinds of randomness (DESIGN §8, "Known sources of randomness"):
//! [`CryptoProvider::secure_random`] (client and server randoms, the legacy session id) and the
//! ephemeral private key of the key exchange, which the ring provider takes from ring's system
//! generator. ring does not let us supply its `SecureRandom` (the trait is sealed), so the seeded
//! provider brings its own X25519 group ([`x25519_dalek`]) that draws its private keys from the
//! seed. Everything else (cipher suites, signatures, key loading) is the ring provider of
//! [`super::crypto_provider`]; our Ed25519 signatures are deterministic already.
//!
//! The result is byte-for-byte reproducible and still standard TLS 1.3: the X25519 named group
//! with RFC 7748 key shares, so a peer with an OS-random provider completes the handshake with it.
//!
//! **Never use it in production**: anyone who knows the seed can predict every ephemeral key
//! and so decrypt every recorded session.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, GetRandomFailed, SecureRandom, SharedSecret,
    SupportedKxGroup,
};
use rustls::{NamedGroup, PeerMisbehaved};
use x25519_dalek::{PublicKey, StaticSecret};

/// ChaCha20 stream numbers, so the handshake randoms and the key shares are independent
/// streams of the same seed: drawing one never shifts the bytes of the other.
const RANDOM_STREAM: u64 = 0;
const KEY_SHARE_STREAM: u64 = 1;

/// The ring provider of [`super::crypto_provider`] (TLS 1.3 suites only) with every random byte
/// drawn from `seed`: `secure_random` is a seeded ChaCha20 generator and the only key-exchange
/// group is X25519 with private keys from a second ChaCha20 stream of the same seed.
///
/// For simulators and tests only: the TLS session keys of every connection made with this
/// provider are predictable to anyone who knows the seed.
///
/// Build it once per node and share it between the node's configs: two providers from the same
/// seed replay the same bytes, so a fresh provider per connection would reuse ephemeral keys.
/// rustls wants `&'static` generators, so each call leaks one small allocation (two ChaCha20
/// states, under a kilobyte); fine for a test run, another reason to keep it out of production.
#[must_use]
pub fn seeded_crypto_provider(seed: [u8; 32]) -> Arc<CryptoProvider> {
    let randomness: &'static SeededRandomness = Box::leak(Box::new(SeededRandomness::new(seed)));
    let mut provider = Arc::unwrap_or_clone(super::crypto_provider());
    provider.secure_random = randomness;
    provider.kx_groups = vec![randomness];
    Arc::new(provider)
}

/// The seeded generators behind one provider. It is both the provider's `secure_random` and its
/// X25519 group, so one leaked allocation serves both.
struct SeededRandomness {
    /// TLS randoms and session ids.
    random: Mutex<ChaCha20Rng>,
    /// Ephemeral X25519 private keys.
    key_shares: Mutex<ChaCha20Rng>,
}

impl SeededRandomness {
    fn new(seed: [u8; 32]) -> Self {
        let stream = |number| {
            let mut rng = ChaCha20Rng::from_seed(seed);
            rng.set_stream(number);
            Mutex::new(rng)
        };
        Self {
            random: stream(RANDOM_STREAM),
            key_shares: stream(KEY_SHARE_STREAM),
        }
    }
}

/// A poisoned lock only means a thread panicked while filling a buffer; the ChaCha state is
/// still a valid state, so keep using it.
fn lock(rng: &Mutex<ChaCha20Rng>) -> MutexGuard<'_, ChaCha20Rng> {
    rng.lock().unwrap_or_else(|e| e.into_inner())
}

impl fmt::Debug for SeededRandomness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The generator state is as secret as the seed.
        f.write_str("SeededRandomness(..)")
    }
}

impl SecureRandom for SeededRandomness {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        lock(&self.random).fill_bytes(buf);
        Ok(())
    }
}

impl SupportedKxGroup for SeededRandomness {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut secret = [0u8; 32];
        lock(&self.key_shares).fill_bytes(&mut secret);
        // `StaticSecret::from` clamps the scalar as RFC 7748 requires.
        let secret = StaticSecret::from(secret);
        let public = PublicKey::from(&secret);
        Ok(Box::new(SeededX25519 { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

/// One X25519 exchange in progress: our ephemeral secret and the key share we sent.
struct SeededX25519 {
    secret: StaticSecret,
    public: PublicKey,
}

impl ActiveKeyExchange for SeededX25519 {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        // As the ring provider: a key share of the wrong length, or one that yields the all-zero
        // secret (a low-order point, RFC 7748 §6.1), is the peer's fault.
        let peer: [u8; 32] = peer
            .try_into()
            .map_err(|_| PeerMisbehaved::InvalidKeyShare)?;
        let shared = self.secret.diffie_hellman(&PublicKey::from(peer));
        if !shared.was_contributory() {
            return Err(PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_bytes()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_share(provider: &CryptoProvider) -> Vec<u8> {
        provider.kx_groups[0]
            .start()
            .expect("start")
            .pub_key()
            .to_vec()
    }

    #[test]
    fn same_seed_draws_the_same_bytes_and_key_shares() {
        let (a, b) = (
            seeded_crypto_provider([7; 32]),
            seeded_crypto_provider([7; 32]),
        );
        let (mut x, mut y) = ([0u8; 48], [0u8; 48]);
        a.secure_random.fill(&mut x).unwrap();
        b.secure_random.fill(&mut y).unwrap();
        assert_eq!(x, y);
        assert_eq!(key_share(&a), key_share(&b));
    }

    #[test]
    fn successive_key_shares_differ_and_seeds_differ() {
        let a = seeded_crypto_provider([7; 32]);
        let first = key_share(&a);
        assert_ne!(first, key_share(&a));
        assert_ne!(first, key_share(&seeded_crypto_provider([8; 32])));
    }

    #[test]
    fn randoms_and_key_shares_are_independent_streams() {
        let a = seeded_crypto_provider([7; 32]);
        let b = seeded_crypto_provider([7; 32]);
        let mut skipped = [0u8; 64];
        a.secure_random.fill(&mut skipped).unwrap();
        assert_eq!(key_share(&a), key_share(&b));
    }

    #[test]
    fn agrees_with_the_ring_x25519_group() {
        let seeded = seeded_crypto_provider([9; 32]).kx_groups[0]
            .start()
            .expect("start");
        let ring = rustls::crypto::ring::kx_group::X25519
            .start()
            .expect("start");
        let ring_public = ring.pub_key().to_vec();
        let seeded_public = seeded.pub_key().to_vec();
        let a = seeded.complete(&ring_public).expect("seeded side");
        let b = ring.complete(&seeded_public).expect("ring side");
        assert_eq!(a.secret_bytes(), b.secret_bytes());
    }

    #[test]
    fn refuses_malformed_and_low_order_key_shares() {
        let group = seeded_crypto_provider([9; 32]).kx_groups[0];
        let short = group.start().unwrap().complete(&[1; 31]);
        assert!(matches!(
            short,
            Err(rustls::Error::PeerMisbehaved(
                PeerMisbehaved::InvalidKeyShare
            ))
        ));
        // The all-zero point has order 1: the shared secret would be zero.
        let zero = group.start().unwrap().complete(&[0; 32]);
        assert!(matches!(
            zero,
            Err(rustls::Error::PeerMisbehaved(
                PeerMisbehaved::InvalidKeyShare
            ))
        ));
    }
}
