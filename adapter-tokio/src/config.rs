//! The TOML configuration file of the `dep2p` program.
//!
//! Every table refuses unknown keys (`deny_unknown_fields`): a misspelt key is an error naming
//! the key and the file, never silently ignored. Every key is optional; an absent key keeps the
//! core's default (DESIGN §5.1 for `[relay]`, §5.2 for `[client]` and `[transport]`).
//! Durations are strings with a unit (`"250ms"`, `"5s"`, `"2m"`, `"1h"`, `"1d"`); byte sizes
//! are integers or strings with a unit (`"128MiB"`). See `deploy/dep2p.toml` for every key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dep2p_core::addr::parse_quic_multiaddr;
use dep2p_core::autorelay::AutoRelayConfig;
use dep2p_core::identity::PeerId;
use dep2p_core::node::NodeConfig;
use dep2p_core::relay::limits::{RateLimit, RelayLimits};
use multiaddr::Multiaddr;
use serde::{Deserialize, Deserializer};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Host key file; created (mode 0600) if missing.
    pub identity: Option<PathBuf>,
    /// UDP address to bind.
    pub listen: Option<SocketAddr>,
    /// Addresses to announce instead of the bound one (multiaddrs).
    pub external_addrs: Option<Vec<String>>,
    /// Prometheus endpoint address; absent = no endpoint.
    pub metrics: Option<SocketAddr>,
    /// How long a graceful drain waits for connections to close.
    pub drain_timeout: Option<DurationValue>,
    /// QUIC and stream settings.
    #[serde(default)]
    pub transport: TransportSection,
    /// Relay server limits (DESIGN §5.1).
    #[serde(default)]
    pub relay: RelaySection,
    /// Relay client knobs (DESIGN §5.2).
    #[serde(default)]
    pub client: ClientSection,
}

/// `[transport]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct TransportSection {
    pub keep_alive: Option<DurationValue>,
    pub idle_timeout: Option<DurationValue>,
    pub max_connections: Option<usize>,
    pub max_streams_per_connection: Option<u32>,
    pub initial_inbound_streams: Option<u32>,
    pub stream_receive_window: Option<ByteSize>,
    pub connection_receive_window: Option<ByteSize>,
    pub negotiation_timeout: Option<DurationValue>,
    pub max_events: Option<usize>,
    pub agent_version: Option<String>,
}

/// `[relay]`: every DESIGN §5.1 limit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RelaySection {
    pub max_reservations: Option<u32>,
    pub max_reservations_per_peer: Option<u32>,
    pub max_reservations_per_ip: Option<u32>,
    pub reservation_ttl: Option<DurationValue>,
    pub max_circuits: Option<u32>,
    pub max_circuits_per_peer: Option<u32>,
    pub max_circuit_duration: Option<DurationValue>,
    pub max_circuit_bytes: Option<ByteSize>,
    pub reservation_rate_per_peer: Option<RateValue>,
    pub reservation_rate_per_ip: Option<RateValue>,
    pub circuit_rate_per_peer: Option<RateValue>,
    pub circuit_rate_per_ip: Option<RateValue>,
    pub rate_limiter_max_keys: Option<u32>,
    pub request_timeout: Option<DurationValue>,
    pub connection_low_watermark: Option<u32>,
    pub connection_high_watermark: Option<u32>,
}

/// `[client]`: the relays to start from and every knob of the core's AutoRelay (DESIGN §5.2),
/// named as its setters (`dep2p_core::autorelay::AutoRelayConfig`); an absent key keeps the
/// core's default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ClientSection {
    /// Bootstrap relays as `/ip4/…/udp/…/quic-v1/p2p/<id>` (AutoRelay candidates; relays found
    /// through identify join them).
    pub relays: Option<Vec<String>>,
    pub min_relays: Option<usize>,
    pub max_relays: Option<usize>,
    pub pool_capacity: Option<usize>,
    /// Accepts the stand-in's old name `retry_backoff_initial` too.
    #[serde(alias = "retry_backoff_initial")]
    pub backoff_base: Option<DurationValue>,
    /// Accepts the stand-in's old name `retry_backoff_max` too.
    #[serde(alias = "retry_backoff_max")]
    pub backoff_max: Option<DurationValue>,
    pub shun_base: Option<DurationValue>,
    pub shun_max: Option<DurationValue>,
    pub best_few: Option<usize>,
    pub tie_band_percent: Option<u32>,
    pub switch_margin_percent: Option<u32>,
    pub min_dwell: Option<DurationValue>,
    pub max_switches_per_hour: Option<u32>,
    pub attempt_timeout: Option<DurationValue>,
    pub unknown_rtt: Option<DurationValue>,
    pub not_hop_memory: Option<DurationValue>,
}

/// What `[client]` configures: AutoRelay and its bootstrap candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// Bootstrap candidates: each relay's PeerId and address.
    pub relays: Vec<(PeerId, Vec<Multiaddr>)>,
    /// The core's AutoRelay configuration, validated.
    pub auto_relay: AutoRelayConfig,
}

/// A token-bucket rate: `{ burst = 30, period = "2m" }`; `burst = 0` disables it.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RateValue {
    pub burst: u32,
    pub period: DurationValue,
}

/// A duration written with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(pub Duration);

/// A byte count, an integer or a string with a unit (`KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// Parses `"250ms"`, `"5s"`, `"2m"`, `"1h"`, `"1d"` (and a bare number of seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!("invalid duration `{text}`: expected a number and a unit (ms, s, m, h, d)")
    })?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => {
            return Err(format!(
                "invalid duration `{text}`: unknown unit `{other}` (use ms, s, m, h or d)"
            ));
        }
    };
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=1e10).contains(&secs) {
        return Err(format!("invalid duration `{text}`: out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `"64MiB"`, `"1GB"`, `"4096"`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("invalid size `{text}`: expected a number and an optional unit"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "invalid size `{text}`: unknown unit `{other}` (use KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    value
        .checked_mul(scale)
        .ok_or_else(|| format!("invalid size `{text}`: too large"))
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Secs(u64),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration such as \"5s\", \"250ms\" or \"1h\"")
        })? {
            Raw::Text(text) => parse_duration(&text)
                .map(DurationValue)
                .map_err(serde::de::Error::custom),
            Raw::Secs(secs) => Ok(DurationValue(Duration::from_secs(secs))),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Count(u64),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a byte size such as 1048576 or \"128MiB\"")
        })? {
            Raw::Text(text) => parse_bytes(&text)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
            Raw::Count(n) => Ok(ByteSize(n)),
        }
    }
}

/// A configuration error: exit code 2. Names the key and, for a file, the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFault {
    /// The file, when the fault is in one.
    pub file: Option<PathBuf>,
    /// The key (`relay.max_circuits`), when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, &self.key) {
            (Some(file), Some(key)) => write!(
                f,
                "invalid config file {}: key `{key}`: {}",
                file.display(),
                self.message
            ),
            (Some(file), None) => {
                write!(
                    f,
                    "invalid config file {}: {}",
                    file.display(),
                    self.message
                )
            }
            (None, Some(key)) => write!(f, "invalid setting `{key}`: {}", self.message),
            (None, None) => write!(f, "invalid configuration: {}", self.message),
        }
    }
}

impl std::error::Error for ConfigFault {}

impl FileConfig {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigFault> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigFault {
            file: Some(path.to_owned()),
            key: None,
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text).map_err(|mut fault| {
            fault.file = Some(path.to_owned());
            fault
        })
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigFault> {
        toml::from_str(text).map_err(|error| {
            let key = error.span().and_then(|span| key_at(text, span.start));
            let message = error.message().trim().to_owned();
            ConfigFault {
                file: None,
                key,
                message,
            }
        })
    }

    /// The core's node configuration from `[transport]` (no relay limits).
    pub fn node_config(&self) -> Result<NodeConfig, ConfigFault> {
        let t = &self.transport;
        let mut config = NodeConfig::default();
        if let Some(v) = t.keep_alive {
            config.keep_alive(v.0);
        }
        if let Some(v) = t.idle_timeout {
            config.idle_timeout(v.0);
        }
        if let Some(v) = t.max_connections {
            config.max_connections(v);
        }
        if let Some(v) = t.max_streams_per_connection {
            config.max_streams_per_connection(v);
        }
        if let Some(v) = t.initial_inbound_streams {
            config.initial_inbound_streams(v);
        }
        if let Some(v) = t.stream_receive_window {
            config.stream_receive_window(window("transport.stream_receive_window", v)?);
        }
        if let Some(v) = t.connection_receive_window {
            config.connection_receive_window(window("transport.connection_receive_window", v)?);
        }
        if let Some(v) = t.negotiation_timeout {
            config.negotiation_timeout(v.0);
        }
        if let Some(v) = t.max_events {
            config.max_events(v);
        }
        if let Some(v) = &t.agent_version {
            config.agent_version(v.clone());
        }
        config.validate().map_err(|e| {
            let dep2p_core::node::ConfigError::InvalidValue { setting, why } = e;
            ConfigFault {
                file: None,
                key: Some(format!("transport.{setting}")),
                message: why,
            }
        })?;
        Ok(config)
    }

    /// The relay limits from `[relay]`, validated.
    pub fn relay_limits(&self) -> Result<RelayLimits, ConfigFault> {
        let r = &self.relay;
        let mut limits = RelayLimits::default();
        macro_rules! set {
            ($field:ident) => {
                if let Some(v) = r.$field {
                    limits = limits.$field(v);
                }
            };
            ($field:ident, dur) => {
                if let Some(v) = r.$field {
                    limits = limits.$field(v.0);
                }
            };
            ($field:ident, rate) => {
                if let Some(v) = r.$field {
                    limits = limits.$field(RateLimit::new(v.burst, v.period.0));
                }
            };
        }
        set!(max_reservations);
        set!(max_reservations_per_peer);
        set!(max_reservations_per_ip);
        set!(reservation_ttl, dur);
        set!(max_circuits);
        set!(max_circuits_per_peer);
        set!(max_circuit_duration, dur);
        if let Some(v) = r.max_circuit_bytes {
            limits = limits.max_circuit_bytes(v.0);
        }
        set!(reservation_rate_per_peer, rate);
        set!(reservation_rate_per_ip, rate);
        set!(circuit_rate_per_peer, rate);
        set!(circuit_rate_per_ip, rate);
        set!(rate_limiter_max_keys);
        set!(request_timeout, dur);
        set!(connection_low_watermark);
        set!(connection_high_watermark);
        limits.validate().map_err(|e| ConfigFault {
            file: None,
            key: Some(format!("relay.{}", e.key)),
            message: e.problem.to_owned(),
        })?;
        Ok(limits)
    }

    /// AutoRelay's configuration and bootstrap relays from `[client]`, validated by the core
    /// (a bad value names its `client.` key).
    pub fn client(&self) -> Result<ClientSettings, ConfigFault> {
        let c = &self.client;
        let mut relays = Vec::new();
        for text in c.relays.iter().flatten() {
            let fault = |message| ConfigFault {
                file: None,
                key: Some("client.relays".into()),
                message,
            };
            let (_, peer) = parse_relay(text).map_err(fault)?;
            let addr: Multiaddr = text
                .parse()
                .map_err(|e| fault(format!("`{text}` is not a multiaddr: {e}")))?;
            relays.push((peer, vec![addr]));
        }
        let mut auto = AutoRelayConfig::default();
        macro_rules! set {
            ($field:ident) => {
                if let Some(v) = c.$field {
                    auto = auto.$field(v);
                }
            };
            ($field:ident, dur) => {
                if let Some(v) = c.$field {
                    auto = auto.$field(v.0);
                }
            };
        }
        set!(min_relays);
        set!(max_relays);
        set!(pool_capacity);
        set!(backoff_base, dur);
        set!(backoff_max, dur);
        set!(shun_base, dur);
        set!(shun_max, dur);
        set!(best_few);
        set!(tie_band_percent);
        set!(switch_margin_percent);
        set!(min_dwell, dur);
        set!(max_switches_per_hour);
        set!(attempt_timeout, dur);
        set!(unknown_rtt, dur);
        set!(not_hop_memory, dur);
        auto.validate().map_err(|e| ConfigFault {
            file: None,
            key: Some(format!("client.{}", e.key)),
            message: e.problem.to_owned(),
        })?;
        Ok(ClientSettings {
            relays,
            auto_relay: auto,
        })
    }

    /// `external_addrs`, parsed.
    pub fn external_addrs(&self) -> Result<Vec<Multiaddr>, ConfigFault> {
        self.external_addrs
            .iter()
            .flatten()
            .map(|text| {
                text.parse::<Multiaddr>().map_err(|e| ConfigFault {
                    file: None,
                    key: Some("external_addrs".into()),
                    message: format!("`{text}` is not a multiaddr: {e}"),
                })
            })
            .collect()
    }
}

fn window(key: &str, size: ByteSize) -> Result<u32, ConfigFault> {
    u32::try_from(size.0).map_err(|_| ConfigFault {
        file: None,
        key: Some(key.into()),
        message: "must be below 4 GiB".into(),
    })
}

/// `/ip4/…/udp/…/quic-v1/p2p/<id>` → address and PeerId.
pub fn parse_relay(text: &str) -> Result<(SocketAddr, PeerId), String> {
    let addr: Multiaddr = text
        .parse()
        .map_err(|e| format!("`{text}` is not a multiaddr: {e}"))?;
    match parse_quic_multiaddr(&addr) {
        Ok((socket, Some(peer))) => Ok((socket, peer)),
        Ok((_, None)) => Err(format!("`{text}` lacks /p2p/<relay peer id>")),
        Err(e) => Err(e.to_string()),
    }
}

/// The dotted key whose line holds byte offset `at`: the key before `=` (or the key named in
/// the span), prefixed by the enclosing `[table]`.
fn key_at(text: &str, at: usize) -> Option<String> {
    let at = at.min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let line = text[line_start..line_end].trim();
    let key = if line.starts_with('[') {
        return Some(line.trim_matches(['[', ']']).trim().to_owned());
    } else {
        line.split('=').next()?.trim().trim_matches('"').to_owned()
    };
    if key.is_empty() {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| l.trim_matches(['[', ']']).trim().to_owned());
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named_with_its_table() {
        let fault = FileConfig::parse("[relay]\nmax_reservatons = 5\n").unwrap_err();
        assert_eq!(fault.key.as_deref(), Some("relay.max_reservatons"));
        assert!(fault.message.contains("unknown field"), "{fault}");
    }

    #[test]
    fn bad_value_is_named_with_its_table() {
        let fault =
            FileConfig::parse("listen = \"127.0.0.1:1\"\n[relay]\nmax_circuits = \"lots\"\n")
                .unwrap_err();
        assert_eq!(fault.key.as_deref(), Some("relay.max_circuits"), "{fault}");
        let fault = FileConfig::parse("[transport]\nidle_timeout = \"5 parsecs\"\n").unwrap_err();
        assert_eq!(
            fault.key.as_deref(),
            Some("transport.idle_timeout"),
            "{fault}"
        );
        assert!(fault.message.contains("parsecs"), "{fault}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let config = FileConfig::parse("[relay]\nreservation_ttl = \"0s\"\n").unwrap();
        let fault = config.relay_limits().unwrap_err();
        assert_eq!(
            fault.key.as_deref(),
            Some("relay.reservation_ttl"),
            "{fault}"
        );
        let config =
            FileConfig::parse("[transport]\nkeep_alive = \"20s\"\nidle_timeout = \"10s\"\n")
                .unwrap();
        let fault = config.node_config().unwrap_err();
        assert_eq!(
            fault.key.as_deref(),
            Some("transport.keep_alive"),
            "{fault}"
        );
    }

    #[test]
    fn every_autorelay_knob_maps_to_a_client_key_and_absent_keys_keep_the_core_defaults() {
        let empty = FileConfig::parse("").unwrap().client().unwrap();
        assert_eq!(empty.auto_relay, AutoRelayConfig::default());
        assert!(empty.relays.is_empty());
        let text = r#"
[client]
relays = ["/ip4/127.0.0.1/udp/4001/quic-v1/p2p/12D3KooWMhiBPmmfGqrGyjvz8fknbaqQdFtxFXjDfBDysgfM73jX"]
min_relays = 1
max_relays = 3
pool_capacity = 32
backoff_base = "2s"
backoff_max = "1m"
shun_base = "30s"
shun_max = "10m"
best_few = 2
tie_band_percent = 10
switch_margin_percent = 20
min_dwell = "5m"
max_switches_per_hour = 2
attempt_timeout = "5s"
unknown_rtt = "100ms"
not_hop_memory = "30m"
"#;
        let client = FileConfig::parse(text).unwrap().client().unwrap();
        let s = Duration::from_secs;
        let expected = AutoRelayConfig::default()
            .min_relays(1)
            .max_relays(3)
            .pool_capacity(32)
            .backoff_base(s(2))
            .backoff_max(s(60))
            .shun_base(s(30))
            .shun_max(s(600))
            .best_few(2)
            .tie_band_percent(10)
            .switch_margin_percent(20)
            .min_dwell(s(300))
            .max_switches_per_hour(2)
            .attempt_timeout(s(5))
            .unknown_rtt(Duration::from_millis(100))
            .not_hop_memory(s(1800));
        assert_eq!(client.auto_relay, expected);
        assert_eq!(client.relays.len(), 1);
    }

    #[test]
    fn old_backoff_key_names_still_load() {
        let text = "[client]\nretry_backoff_initial = \"2s\"\nretry_backoff_max = \"1m\"\n";
        let client = FileConfig::parse(text).unwrap().client().unwrap();
        let expected = AutoRelayConfig::default()
            .backoff_base(Duration::from_secs(2))
            .backoff_max(Duration::from_secs(60));
        assert_eq!(client.auto_relay, expected);
    }

    #[test]
    fn bad_client_values_name_the_key() {
        let config = FileConfig::parse("[client]\nmin_relays = 3\nmax_relays = 2\n").unwrap();
        let fault = config.client().unwrap_err();
        assert_eq!(fault.key.as_deref(), Some("client.max_relays"), "{fault}");
        let fault = FileConfig::parse("[client]\nmin_dwel = \"1m\"\n").unwrap_err();
        assert_eq!(fault.key.as_deref(), Some("client.min_dwel"), "{fault}");
        let config =
            FileConfig::parse("[client]\nrelays = [\"/ip4/1.2.3.4/udp/1/quic-v1\"]\n").unwrap();
        let fault = config.client().unwrap_err();
        assert_eq!(fault.key.as_deref(), Some("client.relays"), "{fault}");
    }

    #[test]
    fn durations_and_sizes_parse() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert!(parse_bytes("64 furlongs").is_err());
    }
}
