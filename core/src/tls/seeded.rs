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

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
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
/// drawn from the [`SeededRandomness`] entered on the calling thread: `secure_random` is its
/// ChaCha20 generator and the only key-exchange group is X25519 with private keys from a second
/// ChaCha20 stream of the same seed.
///
/// rustls wants `&'static` generators, so the provider holds one static forwarder and the
/// per-node state lives in a [`SeededRandomness`] that its owner enters around every call that
/// may reach rustls ([`SeededRandomness::enter`]); a `Node` with
/// [`deterministic_tls`](crate::node::NodeConfig::deterministic_tls) does this itself. Nothing
/// is leaked, however many nodes a process builds. A draw outside any entered scope fails:
/// rustls reports [`rustls::Error::FailedToGetRandomBytes`] and the handshake ends, never
/// silently falling back to other randomness.
///
/// For simulators and tests only: the TLS session keys of every connection made with this
/// provider are predictable to anyone who knows the seed.
#[must_use]
pub fn seeded_crypto_provider() -> Arc<CryptoProvider> {
    let mut provider = Arc::unwrap_or_clone(super::crypto_provider());
    provider.secure_random = &ENTERED;
    provider.kx_groups = vec![&ENTERED];
    Arc::new(provider)
}

/// The seeded generators of one node (or one test client): handshake randoms and ephemeral
/// X25519 keys, as two independent ChaCha20 streams of one seed. Two values from the same seed
/// replay the same bytes, so give each node its own seed.
pub struct SeededRandomness {
    /// TLS randoms and session ids.
    random: Mutex<ChaCha20Rng>,
    /// Ephemeral X25519 private keys.
    key_shares: Mutex<ChaCha20Rng>,
}

impl SeededRandomness {
    /// Generators drawing from `seed`.
    #[must_use]
    pub fn new(seed: [u8; 32]) -> Arc<Self> {
        let stream = |number| {
            let mut rng = ChaCha20Rng::from_seed(seed);
            rng.set_stream(number);
            Mutex::new(rng)
        };
        Arc::new(Self {
            random: stream(RANDOM_STREAM),
            key_shares: stream(KEY_SHARE_STREAM),
        })
    }

    /// Makes these generators the ones [`seeded_crypto_provider`] draws from on this thread
    /// until the returned scope is dropped; the previously entered ones (if any) come back then,
    /// so scopes nest.
    #[must_use = "the randomness is only entered while the scope lives"]
    pub fn enter(self: &Arc<Self>) -> EnteredRandomness {
        let previous = CURRENT.with(|current| current.replace(Some(Arc::clone(self))));
        EnteredRandomness {
            previous,
            _same_thread: PhantomData,
        }
    }
}

impl fmt::Debug for SeededRandomness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The generator state is as secret as the seed.
        f.write_str("SeededRandomness(..)")
    }
}

/// A [`SeededRandomness`] entered on the current thread (see [`SeededRandomness::enter`]).
/// Dropping it restores what was entered before.
pub struct EnteredRandomness {
    previous: Option<Arc<SeededRandomness>>,
    /// The scope belongs to the thread whose thread-local it changed.
    _same_thread: PhantomData<*const ()>,
}

impl Drop for EnteredRandomness {
    fn drop(&mut self) {
        let previous = self.previous.take();
        // `try_with`: during thread teardown the slot may be gone; there is nothing to restore.
        let _ = CURRENT.try_with(|current| current.replace(previous));
    }
}

impl fmt::Debug for EnteredRandomness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnteredRandomness(..)")
    }
}

std::thread_local! {
    /// The generators entered on this thread, if any.
    static CURRENT: RefCell<Option<Arc<SeededRandomness>>> = const { RefCell::new(None) };
}

/// The one `&'static` value behind every seeded provider: both its `secure_random` and its
/// X25519 group, forwarding each draw to the thread's entered [`SeededRandomness`].
static ENTERED: EnteredGenerators = EnteredGenerators;

/// See [`ENTERED`].
#[derive(Debug)]
struct EnteredGenerators;

/// The message of the handshake error when a key share is drawn outside an entered scope.
const NOT_ENTERED: &str =
    "deterministic TLS randomness drawn with no SeededRandomness entered on this thread";

impl EnteredGenerators {
    /// Fills `buf` from the chosen stream of the entered generators; false if none is entered.
    fn draw(
        &self,
        stream: impl Fn(&SeededRandomness) -> &Mutex<ChaCha20Rng>,
        buf: &mut [u8],
    ) -> bool {
        CURRENT
            .try_with(|current| match &*current.borrow() {
                Some(randomness) => {
                    lock(stream(randomness)).fill_bytes(buf);
                    true
                }
                None => false,
            })
            .unwrap_or(false)
    }
}

/// A poisoned lock only means a thread panicked while filling a buffer; the ChaCha state is
/// still a valid state, so keep using it.
fn lock(rng: &Mutex<ChaCha20Rng>) -> MutexGuard<'_, ChaCha20Rng> {
    rng.lock().unwrap_or_else(|e| e.into_inner())
}

impl SecureRandom for EnteredGenerators {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        if self.draw(|r| &r.random, buf) {
            Ok(())
        } else {
            Err(GetRandomFailed)
        }
    }
}

impl SupportedKxGroup for EnteredGenerators {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let mut secret = [0u8; 32];
        if !self.draw(|r| &r.key_shares, &mut secret) {
            return Err(rustls::Error::General(NOT_ENTERED.into()));
        }
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

    /// The first `n` handshake-random bytes and the first key share drawn from `seed`.
    fn draws(seed: [u8; 32], skip_random: usize) -> (Vec<u8>, Vec<u8>) {
        let provider = seeded_crypto_provider();
        let randomness = SeededRandomness::new(seed);
        let _entered = randomness.enter();
        let mut bytes = vec![0u8; 48 + skip_random];
        provider.secure_random.fill(&mut bytes).unwrap();
        (bytes[skip_random..].to_vec(), key_share(&provider))
    }

    fn key_share(provider: &CryptoProvider) -> Vec<u8> {
        provider.kx_groups[0]
            .start()
            .expect("start")
            .pub_key()
            .to_vec()
    }

    #[test]
    fn same_seed_draws_the_same_bytes_and_key_shares() {
        assert_eq!(draws([7; 32], 0), draws([7; 32], 0));
    }

    #[test]
    fn successive_key_shares_differ_and_seeds_differ() {
        let provider = seeded_crypto_provider();
        let randomness = SeededRandomness::new([7; 32]);
        let entered = randomness.enter();
        let first = key_share(&provider);
        assert_ne!(first, key_share(&provider));
        drop(entered);
        assert_ne!(draws([7; 32], 0).1, draws([8; 32], 0).1);
    }

    #[test]
    fn randoms_and_key_shares_are_independent_streams() {
        assert_eq!(draws([7; 32], 0).1, draws([7; 32], 64).1);
    }

    #[test]
    fn scopes_nest_and_each_node_keeps_its_own_stream() {
        let provider = seeded_crypto_provider();
        let (a, b) = (
            SeededRandomness::new([1; 32]),
            SeededRandomness::new([2; 32]),
        );
        let outer = a.enter();
        let a_first = key_share(&provider);
        let inner = b.enter();
        let b_first = key_share(&provider);
        drop(inner);
        let a_second = key_share(&provider);
        drop(outer);
        // Alone, `a` draws the same two shares in the same order; `b` its first.
        let alone = SeededRandomness::new([1; 32]);
        let _alone = alone.enter();
        assert_eq!(a_first, key_share(&provider));
        assert_eq!(a_second, key_share(&provider));
        assert_eq!(b_first, draws([2; 32], 0).1);
    }

    #[test]
    fn drawing_outside_an_entered_scope_fails_instead_of_falling_back() {
        let provider = seeded_crypto_provider();
        let mut buf = [0u8; 8];
        assert!(provider.secure_random.fill(&mut buf).is_err());
        match provider.kx_groups[0].start() {
            Err(rustls::Error::General(why)) => assert_eq!(why, NOT_ENTERED),
            Err(other) => panic!("unexpected error {other:?}"),
            Ok(_) => panic!("a key share was drawn with nothing entered"),
        }
        // Leaving a scope really leaves it.
        let randomness = SeededRandomness::new([3; 32]);
        drop(randomness.enter());
        assert!(provider.secure_random.fill(&mut buf).is_err());
    }

    #[test]
    fn agrees_with_the_ring_x25519_group() {
        let randomness = SeededRandomness::new([9; 32]);
        let _entered = randomness.enter();
        let seeded = seeded_crypto_provider().kx_groups[0]
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
        let randomness = SeededRandomness::new([9; 32]);
        let _entered = randomness.enter();
        let group = seeded_crypto_provider().kx_groups[0];
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
