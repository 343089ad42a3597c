//! quinn-proto configuration with every source of randomness and time taken from the node's
//! inputs (DESIGN §3, §8): reset key, token key, connection-ID generator and initial destination
//! CIDs from the seed; token time from the node's wall clock; in simulators, rustls' randomness
//! from the seed too ([`tls_provider`]).
//!
//! Audit of quinn-proto 0.11.19's randomness at runtime: the endpoint RNG (`rng_seed`) seeds
//! each connection's RNG, which draws packet-number skips, the key-phase interval, the spin bit,
//! QUIC-bit greasing, the reserved (grease) transport parameter, the transport-parameter write
//! order and path challenges; the endpoint RNG itself draws stateless-reset padding and token
//! nonces. The thread RNG is reached only by `EndpointConfig::default` (reset key),
//! `ServerConfig::with_crypto` (token key), the default CID generators and initial DCIDs, all
//! replaced here, and by the BBR congestion controller, which we do not use (the default is
//! Cubic).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use quinn_proto::crypto::rustls::QuicClientConfig;
use quinn_proto::{
    AckFrequencyConfig, ClientConfig, ConnectionIdGenerator, EndpointConfig, IdleTimeout,
    ServerConfig, TimeSource, TransportConfig, VarInt,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::RngCore;
use rustls::crypto::CryptoProvider;

use super::config::NodeConfig;
use crate::seed::SeedTree;
use crate::tls;
use crate::wallclock::WallClock;

/// Length of the connection IDs we issue. 8 bytes is what RFC 9000 asks of an unpredictable CID.
const CID_LEN: usize = 8;

/// Issues connection IDs from a seeded generator instead of the thread RNG.
struct SeededCidGenerator {
    rng: ChaCha20Rng,
}

impl ConnectionIdGenerator for SeededCidGenerator {
    fn generate_cid(&mut self) -> quinn_proto::ConnectionId {
        let mut bytes = [0u8; CID_LEN];
        self.rng.fill_bytes(&mut bytes);
        quinn_proto::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// Token time for quinn-proto, read from the node's wall clock instead of the system clock.
struct WallClockTimeSource(WallClock);

impl TimeSource for WallClockTimeSource {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + self.0.unix()
    }
}

/// The rustls provider the node uses for every handshake, built once so that all connections
/// draw from one stream: with [`NodeConfig::deterministic_tls`], the seeded provider plus the
/// node's own generators (seeded from the node's seed), which the node enters around every
/// call that may reach rustls; the OS-random production provider and no generators otherwise.
pub(crate) fn tls_provider(
    config: &NodeConfig,
    seeds: &SeedTree,
) -> (Arc<CryptoProvider>, Option<Arc<tls::SeededRandomness>>) {
    if config.deterministic_tls {
        (
            tls::seeded_crypto_provider(),
            Some(tls::SeededRandomness::new(seeds.derive("tls-randomness"))),
        )
    } else {
        (tls::crypto_provider(), None)
    }
}

/// The endpoint configuration: seeded reset key, RNG and CID generator.
pub(crate) fn endpoint_config(seeds: &SeedTree) -> Arc<EndpointConfig> {
    let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &seeds.derive("quic-reset-key"));
    let mut config = EndpointConfig::new(Arc::new(reset_key));
    let cid_seed = seeds.derive("quic-cid");
    config.cid_generator(move || {
        Box::new(SeededCidGenerator {
            rng: rand_chacha::rand_core::SeedableRng::from_seed(cid_seed),
        })
    });
    config.rng_seed(Some(seeds.derive("quic-endpoint-rng")));
    Arc::new(config)
}

/// The transport parameters of outbound connections: the peer may open
/// `max_streams_per_connection` streams from the start; we send keep-alives every
/// `keep_alive`.
pub(crate) fn transport_config(config: &NodeConfig) -> Arc<TransportConfig> {
    transport_config_with(config, config.max_streams_per_connection, config.keep_alive)
}

/// The transport parameters of inbound connections: the peer starts with
/// `initial_inbound_streams` streams, raised by the connection once it uses them
/// (`Conn::grow_stream_credit`); our keep-alive is [`inbound_keep_alive`].
pub(crate) fn inbound_transport_config(config: &NodeConfig) -> Arc<TransportConfig> {
    transport_config_with(
        config,
        config.effective_initial_inbound_streams(),
        inbound_keep_alive(config.keep_alive, config.idle_timeout),
    )
}

/// The keep-alive interval on connections a peer opened to us: twice `keep_alive`, but at most
/// two thirds of the idle timeout, and never shorter than `keep_alive`.
///
/// The dialer keeps a connection alive (it is the one behind a NAT, and DESIGN §5.2's failure
/// detection is its), and every packet we receive postpones our own keep-alive. With the same
/// interval on both ends the two alternate, so a relay would send every other keep-alive itself
/// and be woken twice for it (its timer, then the acknowledgement). With a longer one here the
/// dialer sends them all, and we answer each at once (see `ACK_AT_ONCE`): one wake-up per
/// interval. Ours still fires for a dialer that sends none, well before the idle timeout.
pub(crate) fn inbound_keep_alive(keep_alive: Duration, idle_timeout: Duration) -> Duration {
    if keep_alive.is_zero() {
        return keep_alive;
    }
    (keep_alive * 2).min(idle_timeout * 2 / 3).max(keep_alive)
}

/// Asks the peer (QUIC acknowledgement frequency extension, when it supports it) to
/// acknowledge every ack-eliciting packet at once rather than after its `max_ack_delay`
/// (25 ms): a lone keep-alive or request is acknowledged in the same wake-up that received it,
/// instead of a timer firing later for it. In a bulk transfer the receiver acknowledges once per
/// batch of received datagrams either way.
const ACK_AT_ONCE: u32 = 0;

fn transport_config_with(
    config: &NodeConfig,
    streams: u32,
    keep_alive: Duration,
) -> Arc<TransportConfig> {
    let mut ack_frequency = AckFrequencyConfig::default();
    ack_frequency.ack_eliciting_threshold(VarInt::from_u32(ACK_AT_ONCE));
    let mut transport = TransportConfig::default();
    transport.ack_frequency_config(Some(ack_frequency));
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(streams))
        .max_concurrent_uni_streams(VarInt::from_u32(0))
        .stream_receive_window(VarInt::from_u32(config.stream_receive_window))
        .receive_window(VarInt::from_u32(config.connection_receive_window))
        .datagram_receive_buffer_size(None)
        .keep_alive_interval((!keep_alive.is_zero()).then_some(keep_alive))
        // validate() bounds the idle timeout below 2^62 ms, so the conversion cannot fail.
        .max_idle_timeout(Some(
            IdleTimeout::try_from(config.idle_timeout).expect("validated idle timeout"),
        ));
    Arc::new(transport)
}

/// The server side: our TLS config, a seeded token key and wall-clock token time.
pub(crate) fn server_config(
    tls: Arc<rustls::ServerConfig>,
    transport: Arc<TransportConfig>,
    seeds: &SeedTree,
    clock: &WallClock,
) -> Result<Arc<ServerConfig>, quinn_proto::crypto::rustls::NoInitialCipherSuite> {
    let crypto = super::quic_tls::ServerTlsConfig::new(tls)?;
    let token_key = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"dep2p-quic-token")
        .extract(&seeds.derive("quic-token-key"));
    let mut config = ServerConfig::new(Arc::new(crypto), Arc::new(token_key));
    config
        .transport_config(transport)
        .time_source(Arc::new(WallClockTimeSource(clock.clone())));
    Ok(Arc::new(config))
}

/// A per-dial client config: our TLS config (which carries the expected PeerId) and seeded
/// initial destination CIDs.
pub(crate) fn client_config(
    tls: Arc<rustls::ClientConfig>,
    transport: Arc<TransportConfig>,
    initial_cids: &Arc<Mutex<ChaCha20Rng>>,
) -> Result<ClientConfig, quinn_proto::crypto::rustls::NoInitialCipherSuite> {
    let crypto = QuicClientConfig::try_from(tls)?;
    let mut config = ClientConfig::new(Arc::new(crypto));
    let rng = Arc::clone(initial_cids);
    config
        .transport_config(transport)
        .initial_dst_cid_provider(Arc::new(move || {
            let mut bytes = [0u8; 16];
            // A poisoned lock only means another dial panicked mid-fill; the RNG state is
            // still a valid ChaCha state, so keep using it.
            rng.lock()
                .unwrap_or_else(|e| e.into_inner())
                .fill_bytes(&mut bytes);
            quinn_proto::ConnectionId::new(&bytes)
        }));
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_keep_alive_is_twice_ours_within_two_thirds_of_the_idle_timeout() {
        let s = Duration::from_secs;
        assert_eq!(inbound_keep_alive(s(5), s(15)), s(10), "the defaults");
        assert_eq!(inbound_keep_alive(s(5), s(60)), s(10));
        assert_eq!(inbound_keep_alive(s(5), s(12)), s(8), "two thirds of 12 s");
        assert_eq!(inbound_keep_alive(s(5), s(6)), s(5), "never below our own");
        assert_eq!(
            inbound_keep_alive(Duration::ZERO, s(15)),
            Duration::ZERO,
            "off stays off"
        );
    }
}
