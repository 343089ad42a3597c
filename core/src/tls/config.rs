//! rustls configurations for the libp2p TLS profile.
//!
//! The same configs serve QUIC (through `quinn_proto::crypto::rustls::{QuicClientConfig,
//! QuicServerConfig}::try_from`) and a plain rustls connection over a byte stream (the
//! `/tls/1.0.0` upgrade of relayed circuits). Both sides: TLS 1.3 only, mutual certificate
//! authentication with the libp2p certificate, no session resumption, tickets or 0-RTT, no SNI
//! (the spec forbids sending it), and rustls' time taken from the [`WallClock`].

use std::sync::Arc;

use libp2p_identity::PeerId;
use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::NoServerSessionStorage;
use rustls::time_provider::TimeProvider;
use rustls::{ClientConfig, ServerConfig};

use super::ALPN;
use super::certificate::{CertificateError, TlsIdentity, verify_certificate};
use super::verifier::{ClientCertificateVerifier, ServerCertificateVerifier, VerificationOutcome};
use crate::wallclock::WallClock;

/// Building a TLS config failed: a local error (our identity or the provider), never the peer's.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    /// rustls refused the configuration (protocol versions, certificate or key).
    #[error("rustls configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The ring crypto provider restricted to the TLS 1.3 cipher suites. It keeps
/// `TLS13_AES_128_GCM_SHA256`, which QUIC needs for its initial packets.
#[must_use]
pub fn crypto_provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![
        cipher_suite::TLS13_AES_128_GCM_SHA256,
        cipher_suite::TLS13_AES_256_GCM_SHA384,
        cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    Arc::new(provider)
}

/// The listener's config with ALPN `libp2p`: for QUIC, and for `/tls/1.0.0` (where libp2p
/// implementations offer `libp2p` too).
pub fn server_config(
    identity: &TlsIdentity,
    clock: WallClock,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    server_config_with_alpn(identity, clock, &[ALPN])
}

/// The listener's config with the given ALPN protocols, most preferred first. An empty list
/// turns ALPN off: the server then accepts any (or no) protocol the client offers. With a
/// non-empty list, a client offering none of them fails with `NoApplicationProtocol`, as the spec
/// requires.
pub fn server_config_with_alpn(
    identity: &TlsIdentity,
    clock: WallClock,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let verifier = Arc::new(ClientCertificateVerifier::new(clock.clone()));
    let mut config =
        ServerConfig::builder_with_details(crypto_provider(), Arc::new(WallClockTime(clock)))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![identity.certificate().clone()], identity.private_key())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// The dialer's config with ALPN `libp2p`. With `expected_peer`, the handshake fails unless the
/// listener authenticates as that peer. The returned [`VerificationOutcome`] receives the typed
/// reason when the listener's certificate is refused.
pub fn client_config(
    identity: &TlsIdentity,
    clock: WallClock,
    expected_peer: Option<PeerId>,
) -> Result<(Arc<ClientConfig>, VerificationOutcome), TlsConfigError> {
    client_config_with_alpn(identity, clock, expected_peer, &[ALPN])
}

/// The dialer's config offering the given ALPN protocols (none if empty); otherwise as
/// [`client_config`].
pub fn client_config_with_alpn(
    identity: &TlsIdentity,
    clock: WallClock,
    expected_peer: Option<PeerId>,
    alpn: &[&[u8]],
) -> Result<(Arc<ClientConfig>, VerificationOutcome), TlsConfigError> {
    let verifier = ServerCertificateVerifier::new(clock.clone(), expected_peer);
    let outcome = verifier.outcome();
    let mut config =
        ClientConfig::builder_with_details(crypto_provider(), Arc::new(WallClockTime(clock)))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(vec![identity.certificate().clone()], identity.private_key())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = Resumption::disabled();
    config.enable_sni = false;
    config.enable_early_data = false;
    Ok((Arc::new(config), outcome))
}

/// The PeerId authenticated by the certificates a peer presented in a completed handshake
/// (e.g. quinn-proto's `peer_identity()` downcast to `Vec<CertificateDer>`), checked again at
/// `now_unix_secs`.
pub fn peer_id_from_certificates(
    certs: &[CertificateDer<'_>],
    now_unix_secs: u64,
) -> Result<PeerId, CertificateError> {
    match certs {
        [cert] => Ok(verify_certificate(cert, now_unix_secs)?.peer_id()),
        _ => Err(CertificateError::UnexpectedChainLength(certs.len())),
    }
}

/// rustls' notion of "now", read from the wall-clock input so rustls never reads the system
/// clock either.
#[derive(Debug)]
struct WallClockTime(WallClock);

impl TimeProvider for WallClockTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(self.0.unix()))
    }
}
