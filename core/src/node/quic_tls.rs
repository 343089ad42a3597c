//! The server side of QUIC's TLS: quinn-proto's rustls session, except that it frees the rustls
//! connection once the handshake is over (DESIGN §10 memory).
//!
//! After a server's handshake, QUIC needs nothing more from TLS but the secrets for key updates:
//! TLS 1.3 over QUIC has no post-handshake messages from the client, and our server sends no
//! session tickets. quinn-proto's `TlsSession` still keeps the whole `rustls::quic::Connection`
//! for the connection's life (its handshake state, record-layer encrypter and decrypter that QUIC
//! never uses, deframing buffer, the peer's certificate and transport parameters: 4.6 KiB per
//! idle reservation at a relay, measured with massif).
//! [`ServerSession`] is that session (adapted from quinn-proto 0.11's `crypto::rustls`, MIT or
//! Apache-2.0) with the connection dropped at the first `write_handshake` after the handshake
//! completed, keeping only the next 1-RTT secrets, the negotiated ALPN and the peer's
//! certificates until the node has read them once; the next 1-RTT keys are derived on first use
//! ([`LazyKeys`]). Client sessions are quinn-proto's own
//! (a client may receive post-handshake messages, such as session tickets from other servers).

use std::any::Any;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

use quinn_proto::crypto::rustls::{HandshakeData, QuicServerConfig};
use quinn_proto::crypto::{self, ExportKeyingMaterialError, KeyPair, Keys, UnsupportedVersion};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::{ConnectionId, Side, TransportError, TransportErrorCode};
use rustls::pki_types::CertificateDer;
use rustls::quic::{KeyChange, PacketKeySet, Secrets, Suite, Version};

/// quinn-proto's server configuration with [`ServerSession`]s.
pub(crate) struct ServerTlsConfig {
    /// quinn-proto's configuration, for initial keys and retry tags.
    quinn: QuicServerConfig,
    tls: Arc<rustls::ServerConfig>,
    initial: Suite,
}

impl ServerTlsConfig {
    pub(crate) fn new(
        tls: Arc<rustls::ServerConfig>,
    ) -> Result<Self, quinn_proto::crypto::rustls::NoInitialCipherSuite> {
        let quinn = QuicServerConfig::try_from(Arc::clone(&tls))?;
        // QuicServerConfig::try_from found the suite, so this finds it too.
        let initial =
            initial_suite(tls.crypto_provider()).expect("QuicServerConfig accepted the provider");
        Ok(Self {
            quinn,
            tls,
            initial,
        })
    }
}

/// The initial cipher suite (TLS13_AES_128_GCM_SHA256), as quinn-proto finds it.
fn initial_suite(provider: &Arc<rustls::crypto::CryptoProvider>) -> Option<Suite> {
    provider
        .cipher_suites
        .iter()
        .find_map(|cs| match (cs.suite(), cs.tls13()) {
            (rustls::CipherSuite::TLS13_AES_128_GCM_SHA256, Some(suite)) => {
                Some(suite.quic_suite())
            }
            _ => None,
        })
        .flatten()
}

/// The TLS version of a QUIC version quinn-proto accepted (its `initial_keys` checks first).
fn interpret_version(version: u32) -> Option<Version> {
    match version {
        0xff00_001d..=0xff00_0020 => Some(Version::V1Draft),
        0x0000_0001 | 0xff00_0021..=0xff00_0022 => Some(Version::V1),
        _ => None,
    }
}

impl crypto::ServerConfig for ServerTlsConfig {
    fn initial_keys(
        &self,
        version: u32,
        dst_cid: &ConnectionId,
    ) -> Result<Keys, UnsupportedVersion> {
        self.quinn.initial_keys(version, dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.quinn.retry_tag(version, orig_dst_cid, packet)
    }

    fn start_session(
        self: Arc<Self>,
        version: u32,
        params: &TransportParameters,
    ) -> Box<dyn crypto::Session> {
        // quinn-proto never starts a session for a version `initial_keys` refused, and our
        // rustls config is a valid QUIC server config (QuicServerConfig accepted it).
        let version = interpret_version(version).expect("version checked by initial_keys");
        let mut encoded = Vec::new();
        params.write(&mut encoded);
        let connection =
            rustls::quic::ServerConnection::new(Arc::clone(&self.tls), version, encoded)
                .expect("valid QUIC server config");
        Box::new(ServerSession {
            version,
            suite: self.initial,
            got_handshake_data: false,
            next_secrets: None,
            tls: Some(Box::new(rustls::quic::Connection::Server(connection))),
            alpn: None,
            peer_certificates: Mutex::new(None),
        })
    }
}

/// A server's TLS session; see the module documentation.
pub(crate) struct ServerSession {
    version: Version,
    suite: Suite,
    got_handshake_data: bool,
    next_secrets: Option<Secrets>,
    /// The rustls connection, until the handshake is over.
    tls: Option<Box<rustls::quic::Connection>>,
    /// The negotiated ALPN, kept when `tls` is dropped.
    alpn: Option<Box<[u8]>>,
    /// The peer's certificates, kept when `tls` is dropped until [`crypto::Session::peer_identity`]
    /// hands them out (once: the node reads them when the connection is established).
    peer_certificates: Mutex<Option<Vec<CertificateDer<'static>>>>,
}

impl ServerSession {
    /// Frees the rustls connection once the handshake is over and nothing is left to write.
    fn release_tls(&mut self) {
        let Some(tls) = &self.tls else {
            return;
        };
        if tls.is_handshaking() {
            return;
        }
        self.alpn = tls.alpn_protocol().map(Box::from);
        let certificates = tls
            .peer_certificates()
            .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect());
        *self
            .peer_certificates
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = certificates;
        self.tls = None;
    }
}

fn server_name(tls: &rustls::quic::Connection) -> Option<&str> {
    match tls {
        rustls::quic::Connection::Server(server) => server.server_name(),
        rustls::quic::Connection::Client(_) => None,
    }
}

fn protocol_violation(reason: String) -> TransportError {
    TransportError {
        code: TransportErrorCode::PROTOCOL_VIOLATION,
        frame: None,
        reason,
    }
}

fn keys(keys: rustls::quic::Keys) -> Keys {
    Keys {
        header: KeyPair {
            local: Box::new(keys.local.header),
            remote: Box::new(keys.remote.header),
        },
        packet: KeyPair {
            local: Box::new(keys.local.packet),
            remote: Box::new(keys.remote.packet),
        },
    }
}

impl crypto::Session for ServerSession {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> Keys {
        let side = match side {
            Side::Client => rustls::Side::Client,
            Side::Server => rustls::Side::Server,
        };
        keys(self.suite.keys(dst_cid, side, self.version))
    }

    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        if !self.got_handshake_data {
            return None;
        }
        let (protocol, server_name) = match &self.tls {
            Some(tls) => (
                tls.alpn_protocol().map(|p| p.to_vec()),
                server_name(tls).map(str::to_owned),
            ),
            None => (self.alpn.as_deref().map(<[u8]>::to_vec), None),
        };
        Some(Box::new(HandshakeData {
            protocol,
            server_name,
        }))
    }

    /// `Vec<CertificateDer<'static>>`, as quinn-proto's session; after the handshake, handed out
    /// once.
    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        let certificates: Vec<CertificateDer<'static>> = match &self.tls {
            Some(tls) => tls
                .peer_certificates()?
                .iter()
                .map(|c| c.clone().into_owned())
                .collect(),
            None => self
                .peer_certificates
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()?,
        };
        Some(Box::new(certificates))
    }

    fn early_crypto(&self) -> Option<(Box<dyn crypto::HeaderKey>, Box<dyn crypto::PacketKey>)> {
        let keys = self.tls.as_ref()?.zero_rtt_keys()?;
        Some((Box::new(keys.header), Box::new(keys.packet)))
    }

    fn early_data_accepted(&self) -> Option<bool> {
        // As quinn-proto's session: only clients know.
        None
    }

    fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|tls| tls.is_handshaking())
    }

    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        let Some(tls) = &mut self.tls else {
            // A client sends no TLS message after its Finished.
            return Err(protocol_violation(
                "TLS error: handshake data after the handshake".to_owned(),
            ));
        };
        tls.read_hs(buf).map_err(|e| match tls.alert() {
            Some(alert) => TransportError {
                code: TransportErrorCode::crypto(alert.into()),
                frame: None,
                reason: e.to_string(),
            },
            None => protocol_violation(format!("TLS error: {e}")),
        })?;
        if !self.got_handshake_data {
            // As quinn-proto: the ClientHello is in once the ALPN or the server name is known.
            if tls.alpn_protocol().is_some() || server_name(tls).is_some() || !tls.is_handshaking()
            {
                self.got_handshake_data = true;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        // quinn-proto reads a client's parameters on the server during the handshake only.
        let Some(buf) = self
            .tls
            .as_ref()
            .and_then(|tls| tls.quic_transport_parameters())
        else {
            return Ok(None);
        };
        TransportParameters::read(Side::Server, &mut io::Cursor::new(buf))
            .map(Some)
            .map_err(Into::into)
    }

    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        let tls = self.tls.as_mut()?;
        let Some(change) = tls.write_hs(buf) else {
            if buf.is_empty() {
                self.release_tls();
            }
            return None;
        };
        let pair = match change {
            KeyChange::Handshake { keys } => keys,
            KeyChange::OneRtt { keys, next } => {
                self.next_secrets = Some(next);
                keys
            }
        };
        Some(keys(pair))
    }

    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn crypto::PacketKey>>> {
        let secrets = self.next_secrets.as_mut()?;
        let generation = Arc::new(LazyKeys {
            secrets: Mutex::new(Some(secrets.clone())),
            keys: OnceLock::new(),
        });
        // Advance to the following generation; these keys are derived again on first use.
        drop(secrets.next_packet_keys());
        Some(KeyPair {
            local: Box::new(LazyKey {
                keys: Arc::clone(&generation),
                local: true,
            }),
            remote: Box::new(LazyKey {
                keys: generation,
                local: false,
            }),
        })
    }

    fn is_valid_retry(&self, _: &ConnectionId, _: &[u8], _: &[u8]) -> bool {
        // Only servers send Retry packets.
        false
    }

    fn export_keying_material(
        &self,
        output: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        // Not available once the handshake is over (the node exports nothing).
        let tls = self.tls.as_ref().ok_or(ExportKeyingMaterialError)?;
        tls.export_keying_material(output, label, Some(context))
            .map_err(|_| ExportKeyingMaterialError)?;
        Ok(())
    }
}

/// One generation of 1-RTT packet keys, derived from its secrets when first used.
///
/// quinn-proto asks for the next generation's keys as soon as the current one is installed, so
/// that either side can start a key update at any time; a connection uses them once (its first
/// key update, after 10 to 1,000 packets) and then not before about 2^23 packets. Derived
/// eagerly they would cost two AES-GCM key schedules (about 1.1 KiB) on every connection.
struct LazyKeys {
    secrets: Mutex<Option<Secrets>>,
    keys: OnceLock<PacketKeySet>,
}

/// Test-only: how many [`LazyKeys`] generations were derived in this process.
#[cfg(any(test, feature = "test-driver"))]
pub(crate) static LAZY_KEYS_DERIVED: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0);

impl LazyKeys {
    fn get(&self) -> &PacketKeySet {
        self.keys.get_or_init(|| {
            #[cfg(any(test, feature = "test-driver"))]
            LAZY_KEYS_DERIVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.secrets
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .expect("secrets are taken only to derive the keys once")
                .next_packet_keys()
        })
    }
}

/// The local or the remote key of a [`LazyKeys`] generation.
struct LazyKey {
    keys: Arc<LazyKeys>,
    local: bool,
}

impl LazyKey {
    // quinn-proto implements its `PacketKey` for the box, not for the rustls key itself.
    #[allow(clippy::borrowed_box)]
    fn key(&self) -> &Box<dyn rustls::quic::PacketKey> {
        let keys = self.keys.get();
        if self.local {
            &keys.local
        } else {
            &keys.remote
        }
    }
}

impl crypto::PacketKey for LazyKey {
    fn encrypt(&self, packet: u64, buf: &mut [u8], header_len: usize) {
        crypto::PacketKey::encrypt(self.key(), packet, buf, header_len);
    }

    fn decrypt(
        &self,
        packet: u64,
        header: &[u8],
        payload: &mut bytes::BytesMut,
    ) -> Result<(), crypto::CryptoError> {
        crypto::PacketKey::decrypt(self.key(), packet, header, payload)
    }

    fn tag_len(&self) -> usize {
        crypto::PacketKey::tag_len(self.key())
    }

    fn confidentiality_limit(&self) -> u64 {
        crypto::PacketKey::confidentiality_limit(self.key())
    }

    fn integrity_limit(&self) -> u64 {
        crypto::PacketKey::integrity_limit(self.key())
    }
}
