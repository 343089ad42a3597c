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
use rustls::sign::{CertifiedKey, SingleCertAndKey};
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
///
/// Its randomness (TLS randoms, ephemeral keys) comes from the operating system through ring:
/// the production provider. Simulators use
/// [`seeded_crypto_provider`](super::seeded_crypto_provider) instead.
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
    server_config_with_outcome(identity, clock, alpn).map(|(config, _)| config)
}

/// As [`server_config_with_alpn`], also returning the slot where the client-certificate
/// verifier records the typed reason of a refusal.
///
/// One server config serves every inbound connection, so the slot is shared: it names the
/// connection that failed only if the caller takes it right after each call that fed that one
/// connection's handshake data to rustls (what [`crate::node::Node`] does, under `&mut self`).
pub fn server_config_with_outcome(
    identity: &TlsIdentity,
    clock: WallClock,
    alpn: &[&[u8]],
) -> Result<(Arc<ServerConfig>, VerificationOutcome), TlsConfigError> {
    server_config_with_provider(identity, clock, alpn, crypto_provider())
}

/// As [`server_config_with_outcome`], with the given crypto provider instead of
/// [`crypto_provider`]: e.g. [`seeded_crypto_provider`](super::seeded_crypto_provider) in a
/// simulator. The provider must offer `TLS13_AES_128_GCM_SHA256` for QUIC.
pub fn server_config_with_provider(
    identity: &TlsIdentity,
    clock: WallClock,
    alpn: &[&[u8]],
    provider: Arc<CryptoProvider>,
) -> Result<(Arc<ServerConfig>, VerificationOutcome), TlsConfigError> {
    let verifier = ClientCertificateVerifier::new(clock.clone());
    let outcome = verifier.outcome();
    let verifier = Arc::new(verifier);
    let certificate = certificate_and_key(identity, &provider)?;
    let mut config = ServerConfig::builder_with_details(provider, Arc::new(WallClockTime(clock)))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.max_early_data_size = 0;
    Ok((Arc::new(config), outcome))
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
    client_config_with_provider(identity, clock, expected_peer, alpn, crypto_provider())
}

/// As [`client_config_with_alpn`], with the given crypto provider instead of
/// [`crypto_provider`]. Share one provider between all dials of a node: a seeded provider
/// ([`seeded_crypto_provider`](super::seeded_crypto_provider)) rebuilt per dial would replay the
/// same randoms and key shares on every connection.
pub fn client_config_with_provider(
    identity: &TlsIdentity,
    clock: WallClock,
    expected_peer: Option<PeerId>,
    alpn: &[&[u8]],
    provider: Arc<CryptoProvider>,
) -> Result<(Arc<ClientConfig>, VerificationOutcome), TlsConfigError> {
    let verifier = ServerCertificateVerifier::new(clock.clone(), expected_peer);
    let outcome = verifier.outcome();
    let certificate = certificate_and_key(identity, &provider)?;
    let mut config = ClientConfig::builder_with_details(provider, Arc::new(WallClockTime(clock)))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(certificate);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = Resumption::disabled();
    config.enable_sni = false;
    config.enable_early_data = false;
    Ok((Arc::new(config), outcome))
}

/// Our certificate and its signing key, always presented.
///
/// Not `with_single_cert`/`with_client_auth_cert`: those cross-check key and certificate by
/// parsing the certificate with webpki, which refuses the (critical) libp2p extension. The pair
/// is consistent by construction ([`TlsIdentity::new`]).
fn certificate_and_key(
    identity: &TlsIdentity,
    provider: &CryptoProvider,
) -> Result<Arc<SingleCertAndKey>, TlsConfigError> {
    let key = provider
        .key_provider
        .load_private_key(identity.private_key())?;
    let certified = CertifiedKey::new(vec![identity.certificate().clone()], key);
    Ok(Arc::new(SingleCertAndKey::from(certified)))
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

/// The PeerId of the certificates a peer presented in a handshake completed with our
/// verifiers, which verified them already (see
/// [`accepted_certificate_peer_id`](super::certificate::accepted_certificate_peer_id)): no
/// second signature check. The node and [`SecureStream`](super::SecureStream) use it.
pub(crate) fn peer_id_from_accepted_certificates(
    certs: &[CertificateDer<'_>],
) -> Result<PeerId, CertificateError> {
    match certs {
        [cert] => super::certificate::accepted_certificate_peer_id(cert),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p_identity::Keypair;
    use rustls::{ClientConnection, ServerConnection};

    use super::*;

    const NOW: Duration = Duration::from_secs(1_700_000_000);

    fn identity(n: u8) -> TlsIdentity {
        let host = Keypair::ed25519_from_bytes([n; 32]).expect("32-byte ed25519 secret");
        TlsIdentity::new(&host, [n.wrapping_add(100); 32]).expect("identity")
    }

    /// Which side a handshake failed on, and why.
    #[derive(Debug)]
    enum Failure {
        Client(rustls::Error),
        Server(rustls::Error),
    }

    /// Moves TLS records from one side to the other until both are done or one fails.
    /// Bounded: a TLS 1.3 handshake needs a few flights, 16 rounds is plenty.
    fn pump(client: &mut ClientConnection, server: &mut ServerConnection) -> Result<(), Failure> {
        for _ in 0..16 {
            let mut flight = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut flight).expect("write to a Vec");
            }
            let client_sent = !flight.is_empty();
            let mut input = flight.as_slice();
            while !input.is_empty() {
                server.read_tls(&mut input).expect("read from a slice");
                server.process_new_packets().map_err(Failure::Server)?;
            }

            let mut flight = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut flight).expect("write to a Vec");
            }
            let server_sent = !flight.is_empty();
            let mut input = flight.as_slice();
            while !input.is_empty() {
                client.read_tls(&mut input).expect("read from a slice");
                client.process_new_packets().map_err(Failure::Client)?;
            }

            if !client_sent && !server_sent {
                return if client.is_handshaking() || server.is_handshaking() {
                    panic!("handshake stalled")
                } else {
                    Ok(())
                };
            }
        }
        panic!("handshake did not finish in 16 rounds")
    }

    fn connect(
        client_config: Arc<ClientConfig>,
        server_config: Arc<ServerConfig>,
    ) -> (ClientConnection, ServerConnection, Result<(), Failure>) {
        // libp2p ignores the server name; rustls sends no SNI for an IP address (and none at all
        // with `enable_sni = false`).
        let name = rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
        let mut client = ClientConnection::new(client_config, name).expect("client");
        let mut server = ServerConnection::new(server_config).expect("server");
        let result = pump(&mut client, &mut server);
        (client, server, result)
    }

    #[test]
    fn mutual_handshake_authenticates_both_peers() {
        let (dialer, listener) = (identity(1), identity(2));
        let clock = WallClock::new(NOW);
        let (client_config, outcome) =
            client_config(&dialer, clock.clone(), Some(listener.peer_id())).expect("client");
        let server_config = server_config(&listener, clock).expect("server");
        let (client, server, result) = connect(client_config, server_config);
        result.expect("handshake succeeds");

        let now = NOW.as_secs();
        let seen_by_dialer = client.peer_certificates().expect("server certificate");
        assert_eq!(
            peer_id_from_certificates(seen_by_dialer, now),
            Ok(listener.peer_id())
        );
        let seen_by_listener = server.peer_certificates().expect("client certificate");
        assert_eq!(
            peer_id_from_certificates(seen_by_listener, now),
            Ok(dialer.peer_id())
        );
        assert_eq!(client.alpn_protocol(), Some(ALPN));
        assert_eq!(server.alpn_protocol(), Some(ALPN));
        assert_eq!(
            client.protocol_version(),
            Some(rustls::ProtocolVersion::TLSv1_3)
        );
        assert_eq!(outcome.last_failure(), None);
    }

    #[test]
    fn handshake_without_alpn_for_the_stream_upgrade() {
        let (dialer, listener) = (identity(1), identity(2));
        let clock = WallClock::new(NOW);
        let (client_config, _) =
            client_config_with_alpn(&dialer, clock.clone(), Some(listener.peer_id()), &[])
                .expect("client");
        let server_config = server_config_with_alpn(&listener, clock, &[]).expect("server");
        let (client, _, result) = connect(client_config, server_config);
        result.expect("handshake succeeds");
        assert_eq!(client.alpn_protocol(), None);
    }

    #[test]
    fn dialing_the_wrong_peer_fails_with_peer_id_mismatch() {
        let (dialer, listener) = (identity(1), identity(2));
        let expected = identity(3).peer_id();
        let clock = WallClock::new(NOW);
        let (client_config, outcome) =
            client_config(&dialer, clock.clone(), Some(expected)).expect("client");
        let server_config = server_config(&listener, clock).expect("server");
        let (_, _, result) = connect(client_config, server_config);

        let Err(Failure::Client(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(other),
        ))) = result
        else {
            panic!("expected the dialer to refuse the certificate, got {result:?}");
        };
        assert!(other.to_string().contains(&expected.to_base58()));
        let mismatch = CertificateError::PeerIdMismatch {
            expected,
            actual: listener.peer_id(),
        };
        assert_eq!(outcome.take_failure(), Some(mismatch));
        assert_eq!(outcome.take_failure(), None, "taking empties the slot");
    }

    #[test]
    fn client_offering_another_alpn_fails_with_no_application_protocol() {
        let (dialer, listener) = (identity(1), identity(2));
        let clock = WallClock::new(NOW);
        let (client_config, _) =
            client_config_with_alpn(&dialer, clock.clone(), None, &[b"h2"]).expect("client");
        let server_config = server_config(&listener, clock).expect("server");
        let (_, _, result) = connect(client_config, server_config);
        assert!(
            matches!(
                result,
                Err(Failure::Server(rustls::Error::NoApplicationProtocol))
            ),
            "{result:?}"
        );
    }

    #[test]
    fn client_without_certificate_is_refused() {
        let listener = identity(2);
        let clock = WallClock::new(NOW);
        let verifier = ServerCertificateVerifier::new(clock.clone(), Some(listener.peer_id()));
        let mut anonymous = ClientConfig::builder_with_details(
            crypto_provider(),
            Arc::new(WallClockTime(clock.clone())),
        )
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
        anonymous.alpn_protocols = vec![ALPN.to_vec()];
        let server_config = server_config(&listener, clock).expect("server");
        let (_, _, result) = connect(Arc::new(anonymous), server_config);
        assert!(
            matches!(
                result,
                Err(Failure::Server(rustls::Error::NoCertificatesPresented))
            ),
            "{result:?}"
        );
    }

    #[test]
    fn listener_refuses_a_client_certificate_outside_its_validity() {
        let listener = identity(2);
        let host = Keypair::ed25519_from_bytes([1; 32]).expect("key");
        let dialer = TlsIdentity::with_validity(&host, [5; 32], (2000, 1, 1), (2001, 1, 1));
        // The dialer's clock is inside its own window; the listener's is years later.
        let (client_config, _) = client_config(
            &dialer,
            WallClock::new(Duration::from_secs(960_000_000)),
            None,
        )
        .expect("client");
        let server_config = server_config(&listener, WallClock::new(NOW)).expect("server");
        let (_, _, result) = connect(client_config, server_config);
        assert!(
            matches!(
                result,
                Err(Failure::Server(rustls::Error::InvalidCertificate(
                    rustls::CertificateError::Expired
                )))
            ),
            "{result:?}"
        );
    }

    #[test]
    fn configs_are_accepted_by_quinn() {
        use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
        let clock = WallClock::new(NOW);
        let (client_config, _) = client_config(&identity(1), clock.clone(), None).expect("client");
        let server_config = server_config(&identity(2), clock).expect("server");
        assert!(QuicClientConfig::try_from(client_config).is_ok());
        assert!(QuicServerConfig::try_from(server_config).is_ok());
    }

    #[test]
    fn crypto_provider_offers_only_tls13_suites() {
        let provider = crypto_provider();
        assert!(
            provider
                .cipher_suites
                .iter()
                .all(|s| s.version() == &rustls::version::TLS13)
        );
        assert!(
            provider
                .cipher_suites
                .iter()
                .any(|s| s.suite() == rustls::CipherSuite::TLS13_AES_128_GCM_SHA256)
        );
    }

    #[test]
    fn seeded_provider_handshakes_with_an_os_random_peer() {
        use crate::tls::{SeededRandomness, seeded_crypto_provider};
        let (dialer, listener) = (identity(1), identity(2));
        let randomness = SeededRandomness::new([5; 32]);
        let _entered = randomness.enter();
        let clock = WallClock::new(NOW);
        // Seeded dialer, OS-random listener; then the other way round.
        for seeded_dialer in [true, false] {
            let (dialer_provider, listener_provider) = if seeded_dialer {
                (seeded_crypto_provider(), crypto_provider())
            } else {
                (crypto_provider(), seeded_crypto_provider())
            };
            let (client_config, _) = client_config_with_provider(
                &dialer,
                clock.clone(),
                Some(listener.peer_id()),
                &[ALPN],
                dialer_provider,
            )
            .expect("client");
            let (server_config, _) =
                server_config_with_provider(&listener, clock.clone(), &[ALPN], listener_provider)
                    .expect("server");
            let (client, server, result) = connect(client_config, server_config);
            result.unwrap_or_else(|e| panic!("seeded dialer {seeded_dialer}: {e:?}"));
            assert_eq!(
                client.negotiated_key_exchange_group().map(|g| g.name()),
                Some(rustls::NamedGroup::X25519)
            );
            assert_eq!(server.alpn_protocol(), Some(ALPN));
        }
    }

    #[test]
    fn seeded_provider_replays_the_client_hello() {
        let dialer = identity(1);
        let clock = WallClock::new(NOW);
        let hello = |seed: [u8; 32]| {
            let randomness = crate::tls::SeededRandomness::new(seed);
            let _entered = randomness.enter();
            let (config, _) = client_config_with_provider(
                &dialer,
                clock.clone(),
                None,
                &[ALPN],
                crate::tls::seeded_crypto_provider(),
            )
            .expect("client");
            let name =
                rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
            let mut client = ClientConnection::new(config, name).expect("client");
            let mut flight = Vec::new();
            client.write_tls(&mut flight).expect("write to a Vec");
            flight
        };
        assert_eq!(hello([5; 32]), hello([5; 32]));
        assert_ne!(hello([5; 32]), hello([6; 32]));
        // The OS-random provider never repeats itself.
        let os_hello = || {
            let (config, _) = client_config(&dialer, clock.clone(), None).expect("client");
            let name =
                rustls::pki_types::ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
            let mut client = ClientConnection::new(config, name).expect("client");
            let mut flight = Vec::new();
            client.write_tls(&mut flight).expect("write to a Vec");
            flight
        };
        assert_ne!(os_hello(), os_hello());
    }

    #[test]
    fn peer_id_from_certificates_wants_exactly_one() {
        let cert = identity(1).certificate().clone();
        let now = NOW.as_secs();
        assert_eq!(
            peer_id_from_certificates(&[], now),
            Err(CertificateError::UnexpectedChainLength(0))
        );
        assert_eq!(
            peer_id_from_certificates(&[cert.clone(), cert], now),
            Err(CertificateError::UnexpectedChainLength(2))
        );
    }
}
