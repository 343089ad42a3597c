//! The libp2p TLS handshake profile (libp2p/specs `tls/tls.md`, DESIGN §4.1).
//!
//! Every peer presents a self-signed X.509 certificate whose key is *not* its host key: the host
//! key (Ed25519 for us) travels in the critical extension OID 1.3.6.1.4.1.53594.1.1 as a DER
//! `SignedKey { publicKey, signature }`, where `signature` is the host key's signature over
//! `"libp2p-tls-handshake:" ‖ SubjectPublicKeyInfo` of the certificate key. Both sides present a
//! certificate (mutual authentication), TLS 1.3 only, ALPN `libp2p`.
//!
//! - [`certificate`]: generating our certificate ([`TlsIdentity`]) and verifying a peer's
//!   ([`verify_certificate`]). The PeerId comes only from the extension, never from a name.
//! - [`verifier`]: rustls certificate verifiers for both sides, which record the typed
//!   [`CertificateError`] of a failure in a [`VerificationOutcome`] because rustls only carries
//!   errors as strings.
//! - [`config`]: the [`rustls::ClientConfig`] / [`rustls::ServerConfig`] used by quinn-proto (QUIC)
//!   and by the `/tls/1.0.0` upgrade of relayed circuits.
//! - [`stream`]: [`SecureStream`], the sans-IO TLS 1.3 session over a relayed circuit's byte
//!   stream (`/tls/1.0.0`, DESIGN §4.3).
//!
//! Time: certificate validity is checked against a [`crate::wallclock::WallClock`]; the configs
//! also hand rustls a time provider reading that clock, so nothing here reads the system clock.
//! Randomness: certificate generation is deterministic in its seed, and so are our Ed25519
//! handshake signatures. The production provider ([`crypto_provider`]) draws TLS randoms and
//! ephemeral keys from the OS through ring; [`seeded`] provides a provider drawing them from a
//! seed instead, so a simulator replays a run byte for byte (DESIGN §3, §8). Configs take a
//! provider through the `*_with_provider` builders.

// `CertificateError::PeerIdMismatch` holds two PeerIds (80 bytes each) so the node can name both
// without unboxing; it is returned once per handshake, and the success side
// (`VerifiedCertificate`) is about as large.
#![allow(clippy::result_large_err)]

pub mod certificate;
pub mod config;
pub mod seeded;
pub mod stream;
pub mod verifier;

pub use certificate::{
    CertificateError, TlsIdentity, TlsIdentityError, VerifiedCertificate, verify_certificate,
};
pub use config::{
    TlsConfigError, client_config, client_config_with_alpn, client_config_with_provider,
    crypto_provider, peer_id_from_certificates, server_config, server_config_with_alpn,
    server_config_with_outcome, server_config_with_provider,
};
pub use seeded::{EnteredRandomness, SeededRandomness, seeded_crypto_provider};
pub use stream::{
    MAX_PENDING_CIPHERTEXT, MAX_UNSENT, Plaintext, READ_AHEAD, ReadOutcome, SecureStream,
    SecureStreamError, SecureStreamEvent,
};
pub use verifier::{ClientCertificateVerifier, ServerCertificateVerifier, VerificationOutcome};

/// The ALPN protocol id of libp2p over TLS (QUIC requires ALPN; peers offer it over TCP too).
pub const ALPN: &[u8] = b"libp2p";

/// The object identifier of the libp2p Public Key Extension, 1.3.6.1.4.1.53594.1.1 (allocated by
/// IANA to Protocol Labs).
pub const LIBP2P_EXTENSION_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 53594, 1, 1];
