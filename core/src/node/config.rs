//! Node configuration.

use std::time::Duration;

use multiaddr::Multiaddr;

/// A relay's default first stream credit on inbound connections (see
/// [`NodeConfig::initial_inbound_streams`]): an idle reservation uses at most 3 streams at once
/// (identify both ways, the RESERVE); 4 was measured worse (identify and RESERVE together reach
/// half of it, so nearly every reservation was raised to the full credit).
const RELAY_INITIAL_INBOUND_STREAMS: u32 = 8;

/// Configuration of a [`Node`](super::Node): transport timers, per-connection bounds and the
/// application protocols it accepts.
///
/// Defaults follow DESIGN §5.2 (keep-alive 5 s, idle timeout 15 s) and are sized for a relay:
/// few streams per connection, so an idle connection costs little memory.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub(crate) keep_alive: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_streams_per_connection: u32,
    /// `None`: the default, which depends on the relay role (see the setter).
    pub(crate) initial_inbound_streams: Option<u32>,
    pub(crate) stream_receive_window: u32,
    pub(crate) relayed_stream_window: u32,
    pub(crate) connection_receive_window: u32,
    pub(crate) negotiation_timeout: Duration,
    pub(crate) protocols: Vec<String>,
    pub(crate) agent_version: String,
    pub(crate) listen_addrs: Vec<Multiaddr>,
    pub(crate) max_events: usize,
    pub(crate) relay_server: Option<crate::relay::limits::RelayLimits>,
    pub(crate) auto_relay: Option<crate::autorelay::AutoRelayConfig>,
    pub(crate) deterministic_tls: bool,
    pub(crate) max_transmit_datagrams: usize,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(15),
            max_connections: 4096,
            max_streams_per_connection: 32,
            initial_inbound_streams: None,
            stream_receive_window: 1024 * 1024,
            relayed_stream_window: 1024 * 1024,
            connection_receive_window: 4 * 1024 * 1024,
            negotiation_timeout: Duration::from_secs(10),
            protocols: Vec::new(),
            agent_version: concat!("dep2p/", env!("CARGO_PKG_VERSION")).to_owned(),
            listen_addrs: Vec::new(),
            max_events: 65_536,
            relay_server: None,
            auto_relay: None,
            deterministic_tls: false,
            max_transmit_datagrams: 1,
        }
    }
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The named setting has a value outside its valid range.
    #[error("invalid value for `{setting}`: {why}")]
    InvalidValue {
        /// The setting's name, as in the config file.
        setting: &'static str,
        /// What is wrong with the value.
        why: String,
    },
}

impl NodeConfig {
    /// QUIC keep-alive interval. Default 5 s: a lost peer is noticed within the idle timeout even
    /// when no application data flows. It applies to connections we dial; on connections a peer
    /// dialed to us the interval is twice this, at most two thirds of the idle timeout (never
    /// less than this), so the dialer sends the keep-alives and we only acknowledge them.
    pub fn keep_alive(&mut self, interval: Duration) -> &mut Self {
        self.keep_alive = interval;
        self
    }

    /// QUIC idle timeout. Default 15 s: how long a silent peer is tolerated before its
    /// connection is declared lost (DESIGN §5.2 failure detection).
    pub fn idle_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.idle_timeout = timeout;
        self
    }

    /// Most connections held at once; new inbound connections beyond it are refused at the QUIC
    /// level. Default 4096.
    pub fn max_connections(&mut self, count: usize) -> &mut Self {
        self.max_connections = count;
        self
    }

    /// Most concurrent bidirectional streams the peer may open on one connection. Default 32:
    /// quinn keeps per-stream bookkeeping for every allowed stream, and a relay needs a handful
    /// (DESIGN §10 memory target).
    pub fn max_streams_per_connection(&mut self, count: u32) -> &mut Self {
        self.max_streams_per_connection = count;
        self
    }

    /// Streams a peer may open at first on an inbound connection. Default: 8 on a relay
    /// ([`relay_server`](Self::relay_server) set), else
    /// [`max_streams_per_connection`](Self::max_streams_per_connection). Once the peer holds
    /// half of them open, the node raises its credit to `max_streams_per_connection` (one QUIC
    /// MAX_STREAMS frame): quinn keeps bookkeeping for every stream it allows, and most inbound
    /// connections of a relay (idle reservations) never need more than a few (DESIGN §10
    /// memory). A peer that opens more than the first credit at once waits a round trip for the
    /// rest: our own node's circuit dials wait in the core; its other opens fail with
    /// `TooManyStreams` until [`Event::StreamsAvailable`](super::Event::StreamsAvailable),
    /// which the tokio adapter's `open_stream`, `reserve` and `ping` wait for. A node that is no
    /// relay allows the full credit from the start. Larger values than
    /// `max_streams_per_connection` mean that value.
    pub fn initial_inbound_streams(&mut self, count: u32) -> &mut Self {
        self.initial_inbound_streams = Some(count);
        self
    }

    /// The stream credit a peer gets at first on an inbound connection, as
    /// [`initial_inbound_streams`](Self::initial_inbound_streams) describes.
    pub(crate) fn effective_initial_inbound_streams(&self) -> u32 {
        let default = if self.relay_server.is_some() {
            RELAY_INITIAL_INBOUND_STREAMS
        } else {
            self.max_streams_per_connection
        };
        self.initial_inbound_streams
            .unwrap_or(default)
            .min(self.max_streams_per_connection)
    }

    /// Flow-control window per stream, in bytes. Default 1 MiB.
    pub fn stream_receive_window(&mut self, bytes: u32) -> &mut Self {
        self.stream_receive_window = bytes;
        self
    }

    /// Largest receive window a stream of a relayed connection grows to, in bytes (the yamux
    /// window inside the circuit's TLS). Streams start at yamux's 256 KiB and double while the
    /// reader keeps up. Default 1 MiB; at least 256 KiB. Larger windows help only where the
    /// relayed round trip times the wanted rate exceed it; each stream may buffer this much.
    pub fn relayed_stream_window(&mut self, bytes: u32) -> &mut Self {
        self.relayed_stream_window = bytes;
        self
    }

    /// Flow-control window per connection, in bytes. Default 4 MiB.
    pub fn connection_receive_window(&mut self, bytes: u32) -> &mut Self {
        self.connection_receive_window = bytes;
        self
    }

    /// Time an inbound stream has to complete protocol negotiation; slow or silent streams are
    /// reset when it runs out. Default 10 s (DESIGN §5.1 request timeout).
    pub fn negotiation_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.negotiation_timeout = timeout;
        self
    }

    /// Adds an application protocol that inbound streams may negotiate. Identify and ping are
    /// always supported.
    pub fn protocol(&mut self, protocol: impl Into<String>) -> &mut Self {
        self.protocols.push(protocol.into());
        self
    }

    /// The agent version announced in identify. Default `dep2p/<version>`.
    pub fn agent_version(&mut self, agent: impl Into<String>) -> &mut Self {
        self.agent_version = agent.into();
        self
    }

    /// Addresses announced as listen addresses in identify.
    pub fn listen_addrs(&mut self, addrs: Vec<Multiaddr>) -> &mut Self {
        self.listen_addrs = addrs;
        self
    }

    /// Most events queued for the application before the oldest are dropped (and counted in
    /// [`NodeStats::events_dropped`](super::NodeStats)). The application drains events after
    /// every input, so this only guards against an embedding that never does. Default 65,536.
    pub fn max_events(&mut self, count: usize) -> &mut Self {
        self.max_events = count;
        self
    }

    /// Derives rustls' randomness (TLS randoms, ephemeral X25519 keys) from the node's seed
    /// instead of the operating system, so that one seed replays a run byte for byte
    /// ([`tls::seeded_crypto_provider`](crate::tls::seeded_crypto_provider)). Default off.
    ///
    /// **For simulators and tests only**: TLS randomness derived from the node seed is
    /// predictable to anyone who knows the seed, who can then decrypt every session of the node.
    /// The node also offers only the X25519 key-exchange group while it is on.
    pub fn deterministic_tls(&mut self, on: bool) -> &mut Self {
        self.deterministic_tls = on;
        self
    }

    /// Most datagrams one [`Output::Transmit`](super::Output::Transmit) may carry, as a GSO
    /// batch of equal segments (`segment_size` set; the last may be shorter) to the same
    /// destination. Default 1: one datagram per transmit, for adapters that cannot send a
    /// batch. An adapter whose socket does GSO sets its segment limit: building and sending
    /// packets in batches costs less per byte (DESIGN §10 throughput). At most 64.
    pub fn max_transmit_datagrams(&mut self, count: usize) -> &mut Self {
        self.max_transmit_datagrams = count;
        self
    }

    /// Makes this node a Circuit Relay v2 server with these limits (DESIGN §5.1); `None` (the
    /// default) serves no HOP requests. A relay needs at least one listen address: it is
    /// announced in every reservation.
    pub fn relay_server(&mut self, limits: Option<crate::relay::limits::RelayLimits>) -> &mut Self {
        self.relay_server = limits;
        self
    }

    /// Turns on AutoRelay (DESIGN §5.2) with this configuration: the node keeps
    /// `min_relays`..`max_relays` reservations on relays chosen from the candidates given to
    /// [`Node::add_relay_candidates`](super::Node::add_relay_candidates) and from peers that
    /// identify as relays, and replaces a lost one at once. Off by default.
    pub fn auto_relay(&mut self, config: Option<crate::autorelay::AutoRelayConfig>) -> &mut Self {
        self.auto_relay = config;
        self
    }

    /// Checks every value, naming the first bad setting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, why: &str| {
            Err(ConfigError::InvalidValue {
                setting,
                why: why.to_owned(),
            })
        };
        if self.idle_timeout.is_zero() {
            return invalid("idle_timeout", "must be greater than zero");
        }
        if self.idle_timeout.as_millis() >= (1u128 << 62) {
            return invalid("idle_timeout", "too large for QUIC");
        }
        if !self.keep_alive.is_zero() && self.keep_alive >= self.idle_timeout {
            return invalid(
                "keep_alive",
                "must be shorter than idle_timeout, or the connection times out between keep-alives",
            );
        }
        if !(1..=64).contains(&self.max_transmit_datagrams) {
            return invalid("max_transmit_datagrams", "must be between 1 and 64");
        }
        if self.max_connections == 0 {
            return invalid("max_connections", "must be at least 1");
        }
        if self.max_streams_per_connection == 0 {
            return invalid(
                "max_streams_per_connection",
                "must be at least 1 (identify needs a stream)",
            );
        }
        if self.initial_inbound_streams == Some(0) {
            return invalid(
                "initial_inbound_streams",
                "must be at least 1 (identify needs a stream)",
            );
        }
        if self.stream_receive_window == 0 || self.connection_receive_window == 0 {
            return invalid(
                "stream_receive_window",
                "flow-control windows must be non-zero",
            );
        }
        if self.relayed_stream_window < crate::yamux::INITIAL_STREAM_WINDOW {
            return invalid(
                "relayed_stream_window",
                "must be at least 262144 (yamux's initial stream window, 256 KiB)",
            );
        }
        if self.negotiation_timeout.is_zero() {
            return invalid("negotiation_timeout", "must be greater than zero");
        }
        if let Some(limits) = &self.relay_server {
            limits.validate().map_err(|e| ConfigError::InvalidValue {
                setting: "relay_server",
                why: e.to_string(),
            })?;
            if self.listen_addrs.is_empty() {
                return invalid(
                    "listen_addrs",
                    "a relay needs at least one listen address to announce in reservations",
                );
            }
        }
        if let Some(auto) = &self.auto_relay {
            auto.validate().map_err(|e| ConfigError::InvalidValue {
                setting: "auto_relay",
                why: e.to_string(),
            })?;
        }
        if self.max_events == 0 {
            return invalid("max_events", "must be at least 1");
        }
        if let Some(bad) = self
            .protocols
            .iter()
            .find(|p| !p.starts_with('/') || p.len() > 140 || p.contains('\n'))
        {
            return Err(ConfigError::InvalidValue {
                setting: "protocols",
                why: format!(
                    "`{bad}` is not a protocol id (must start with `/`, at most 140 bytes, no newline)"
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        NodeConfig::default().validate().unwrap();
    }

    #[test]
    fn invalid_values_name_their_setting() {
        let mut config = NodeConfig::default();
        config.keep_alive(Duration::from_secs(20));
        let err = config.validate().unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::InvalidValue {
                    setting: "keep_alive",
                    ..
                }
            ),
            "{err}"
        );

        let mut config = NodeConfig::default();
        config.protocol("no-slash");
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("no-slash"), "{err}");
    }

    #[test]
    fn a_relayed_stream_window_below_yamuxs_initial_window_is_refused_by_name() {
        let mut config = NodeConfig::default();
        config.relayed_stream_window(256 * 1024 - 1);
        let err = config.validate().unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::InvalidValue {
                    setting: "relayed_stream_window",
                    ..
                }
            ),
            "{err}"
        );
        config.relayed_stream_window(256 * 1024);
        config
            .validate()
            .expect("yamux's initial window is the smallest allowed");
        config.relayed_stream_window(u32::MAX);
        config.validate().expect("large windows are allowed");
    }
}
