//! The embedding API of DESIGN §9, shaped like the relay guide's examples so they translate line
//! by line: a builder with presets, then `start()`, `id()`, `close()`.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use dep2p_tokio::builder::Dep2p;
//!
//! // Tier 1: one self-hosted relay with a fixed port and connection limits.
//! let relay = Dep2p::server()
//!     .relay_server(true)
//!     .listen_port(4001)
//!     .connection_limits(100, 200)
//!     .start()
//!     .await?;
//! println!("relay {}", relay.id());
//!
//! // Tier 2: a node that keeps reservations on two of several independent relays and fails
//! // over on its own (the core's AutoRelay).
//! let node = Dep2p::desktop()
//!     .relay(true)
//!     .bootstrap_peers([
//!         "/ip4/198.51.100.1/udp/4001/quic-v1/p2p/12D3KooWMhiBPmmfGqrGyjvz8fknbaqQdFtxFXjDfBDysgfM73jX",
//!     ])
//!     .start()
//!     .await?;
//! node.close().await;
//! relay.close().await;
//! # Ok(()) }
//! ```
//!
//! A thin layer over [`NodeHandle::spawn`]: [`Dep2pNode::handle`] gives the full handle API.
//! Realms (`realm(name).join()`, DESIGN §6) are not implemented yet.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use dep2p_core::addr::parse_quic_multiaddr;
use dep2p_core::autorelay::AutoRelayConfig;
use dep2p_core::identity::{Keypair, PeerId, keypair_from_seed};
use dep2p_core::node::NodeConfig;
use dep2p_core::relay::limits::RelayLimits;
use multiaddr::Multiaddr;

use crate::handle::os_seed;
use crate::{NodeHandle, NodeOptions, StartError};

/// A starting point for the builder; each sets defaults the later calls can override.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// A public, long-running host: relay server on, relay client off, port 4001, connection
    /// watermarks 100/200 (DESIGN §5.1).
    Server,
    /// A desktop peer behind NAT: relay client (AutoRelay, 2 relays) on, relay server off,
    /// any port, the core's transport defaults.
    Desktop,
    /// A phone: relay client on with one relay (at most two), slower keep-alives (15 s, idle
    /// timeout 45 s) to spare the radio, relay server off, any port.
    Mobile,
    /// Nothing but QUIC, identify and ping: no relay server, no relay client, any port.
    Minimal,
}

/// Why [`Dep2pBuilder::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A bootstrap peer is not `/ip4|ip6/…/udp/…/quic-v1/p2p/<id>`.
    #[error("bootstrap peer `{addr}`: {why}")]
    BootstrapPeer {
        /// The address as given.
        addr: String,
        /// What is wrong with it.
        why: String,
    },
    /// Bad connection limits.
    #[error("connection_limits: {0}")]
    ConnectionLimits(String),
    /// The node could not start (socket, configuration).
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Builds a node; see the module docs.
#[derive(Debug, Clone)]
pub struct Dep2pBuilder {
    preset: Preset,
    relay_server: bool,
    relay: bool,
    listen_ip: IpAddr,
    listen_port: u16,
    connection_limits: Option<(u32, u32)>,
    bootstrap: Vec<String>,
    keypair: Option<Keypair>,
    protocols: Vec<String>,
}

/// Entry points, one per [`Preset`].
#[derive(Debug, Clone, Copy)]
pub struct Dep2p;

impl Dep2p {
    /// A builder from `preset`.
    #[must_use]
    pub fn builder(preset: Preset) -> Dep2pBuilder {
        let (relay_server, relay, listen_port, connection_limits) = match preset {
            Preset::Server => (true, false, 4001, Some((100, 200))),
            Preset::Desktop | Preset::Mobile => (false, true, 0, None),
            Preset::Minimal => (false, false, 0, None),
        };
        Dep2pBuilder {
            preset,
            relay_server,
            relay,
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            listen_port,
            connection_limits,
            bootstrap: Vec::new(),
            keypair: None,
            protocols: Vec::new(),
        }
    }

    /// [`Preset::Server`].
    #[must_use]
    pub fn server() -> Dep2pBuilder {
        Self::builder(Preset::Server)
    }

    /// [`Preset::Desktop`].
    #[must_use]
    pub fn desktop() -> Dep2pBuilder {
        Self::builder(Preset::Desktop)
    }

    /// [`Preset::Mobile`].
    #[must_use]
    pub fn mobile() -> Dep2pBuilder {
        Self::builder(Preset::Mobile)
    }

    /// [`Preset::Minimal`].
    #[must_use]
    pub fn minimal() -> Dep2pBuilder {
        Self::builder(Preset::Minimal)
    }
}

impl Dep2pBuilder {
    /// Serve Circuit Relay v2 (HOP) with the DESIGN §5.1 default limits.
    #[must_use]
    pub fn relay_server(mut self, on: bool) -> Self {
        self.relay_server = on;
        self
    }

    /// Be a relay client: the core's AutoRelay keeps reservations on relays chosen from the
    /// bootstrap peers and from peers that identify as relays, and fails over on its own.
    #[must_use]
    pub fn relay(mut self, on: bool) -> Self {
        self.relay = on;
        self
    }

    /// The UDP port to listen on (0 picks one).
    #[must_use]
    pub fn listen_port(mut self, port: u16) -> Self {
        self.listen_port = port;
        self
    }

    /// The IP address to listen on. Default `0.0.0.0`.
    #[must_use]
    pub fn listen_ip(mut self, ip: IpAddr) -> Self {
        self.listen_ip = ip;
        self
    }

    /// Connection watermarks of the relay server: above `high` connections, idle ones are
    /// closed down to `low` (connections holding reservations or circuits are kept). Applies
    /// to a node with [`Self::relay_server`] on.
    #[must_use]
    pub fn connection_limits(mut self, low: u32, high: u32) -> Self {
        self.connection_limits = Some((low, high));
        self
    }

    /// Peers to start from, `/ip4|ip6/…/udp/…/quic-v1/p2p/<id>`: with [`Self::relay`] on, the
    /// relays AutoRelay starts from; otherwise each is dialed once at start.
    #[must_use]
    pub fn bootstrap_peers<S: Into<String>>(mut self, addrs: impl IntoIterator<Item = S>) -> Self {
        self.bootstrap.extend(addrs.into_iter().map(Into::into));
        self
    }

    /// The host key. Default: a fresh random key (persist one for a stable PeerId).
    #[must_use]
    pub fn identity(mut self, keypair: Keypair) -> Self {
        self.keypair = Some(keypair);
        self
    }

    /// An application protocol inbound streams may negotiate
    /// ([`NodeHandle::accept`] hands them out).
    #[must_use]
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocols.push(protocol.into());
        self
    }

    /// What this builder describes, checked.
    fn plan(&self) -> Result<Plan, BuildError> {
        let mut plan = Plan {
            relay_server: None,
            auto_relay: None,
            timers: (self.preset == Preset::Mobile)
                .then(|| (Duration::from_secs(15), Duration::from_secs(45))),
            peers: Vec::new(),
        };
        if self.relay_server {
            let mut limits = RelayLimits::default();
            if let Some((low, high)) = self.connection_limits {
                limits = limits
                    .connection_low_watermark(low)
                    .connection_high_watermark(high);
            }
            limits
                .validate()
                .map_err(|e| BuildError::ConnectionLimits(e.to_string()))?;
            plan.relay_server = Some(limits);
        }
        if self.relay {
            let auto = match self.preset {
                Preset::Mobile => AutoRelayConfig::default().min_relays(1).max_relays(2),
                _ => AutoRelayConfig::default(),
            };
            plan.auto_relay = Some(auto);
        }
        for text in &self.bootstrap {
            let bad = |why: String| BuildError::BootstrapPeer {
                addr: text.clone(),
                why,
            };
            let addr: Multiaddr = text.parse().map_err(|e| bad(format!("{e}")))?;
            match parse_quic_multiaddr(&addr) {
                Ok((socket, Some(peer))) => plan.peers.push((peer, addr, socket)),
                Ok((_, None)) => return Err(bad("lacks /p2p/<peer id>".into())),
                Err(e) => return Err(bad(e.to_string())),
            }
        }
        Ok(plan)
    }

    fn node_config(&self, plan: &Plan) -> NodeConfig {
        let mut config = NodeConfig::default();
        for protocol in &self.protocols {
            config.protocol(protocol.clone());
        }
        if let Some((keep_alive, idle_timeout)) = plan.timers {
            config.keep_alive(keep_alive).idle_timeout(idle_timeout);
        }
        config
            .relay_server(plan.relay_server.clone())
            .auto_relay(plan.auto_relay.clone());
        config
    }

    /// Binds the socket and starts the node on the current tokio runtime.
    pub async fn start(self) -> Result<Dep2pNode, BuildError> {
        let plan = self.plan()?;
        let config = self.node_config(&plan);
        let peers = plan.peers;
        let keypair = self
            .keypair
            .clone()
            .unwrap_or_else(|| keypair_from_seed(os_seed()));
        let bind = SocketAddr::new(self.listen_ip, self.listen_port);
        let mut options = NodeOptions::new(config, keypair, bind);
        if self.relay {
            options.relay_candidates = peers
                .iter()
                .map(|(peer, addr, _)| (*peer, vec![addr.clone()]))
                .collect();
        }
        let handle = NodeHandle::spawn(options)?;
        if !self.relay {
            for (peer, _, socket) in peers {
                let handle = handle.clone();
                tokio::spawn(async move {
                    if let Err(error) = handle.dial(socket, peer).await {
                        tracing::info!(%peer, %error, "bootstrap peer unreachable");
                    }
                });
            }
        }
        Ok(Dep2pNode { handle })
    }
}

/// The roles and settings a builder resolved to.
#[derive(Debug)]
struct Plan {
    relay_server: Option<RelayLimits>,
    auto_relay: Option<AutoRelayConfig>,
    /// Keep-alive and idle timeout, when not the core's defaults.
    timers: Option<(Duration, Duration)>,
    peers: Vec<(PeerId, Multiaddr, SocketAddr)>,
}

/// A running node built by [`Dep2pBuilder::start`].
#[derive(Debug, Clone)]
pub struct Dep2pNode {
    handle: NodeHandle,
}

impl Dep2pNode {
    /// This node's PeerId.
    #[must_use]
    pub fn id(&self) -> PeerId {
        self.handle.peer_id()
    }

    /// The addresses this node announces, with `/p2p/<id>`.
    #[must_use]
    pub fn addrs(&self) -> Vec<Multiaddr> {
        self.handle.listen_addrs()
    }

    /// The full handle API (dial, streams, events, snapshot…).
    #[must_use]
    pub fn handle(&self) -> &NodeHandle {
        &self.handle
    }

    /// Closes gracefully (the core's drain: peers are told to fail over at once), waiting at
    /// most one second for connections to close.
    pub async fn close(&self) {
        let _ = self.handle.drain(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_set_the_roles_the_guide_expects() {
        let server = Dep2p::server().plan().unwrap();
        let limits = server.relay_server.expect("a server serves HOP");
        assert_eq!(limits.connection_watermarks(), (100, 200));
        assert!(server.auto_relay.is_none());
        assert_eq!(Dep2p::server().listen_port, 4001);

        let desktop = Dep2p::desktop().plan().unwrap();
        assert!(desktop.relay_server.is_none() && desktop.timers.is_none());
        assert_eq!(desktop.auto_relay, Some(AutoRelayConfig::default()));

        let mobile = Dep2p::mobile().plan().unwrap();
        assert_eq!(
            mobile
                .auto_relay
                .as_ref()
                .map(AutoRelayConfig::get_min_relays),
            Some(1)
        );
        assert!(mobile.timers.is_some());

        let minimal = Dep2p::minimal().plan().unwrap();
        assert!(minimal.relay_server.is_none() && minimal.auto_relay.is_none());

        let custom = Dep2p::minimal()
            .relay_server(true)
            .connection_limits(10, 20)
            .plan()
            .unwrap();
        assert_eq!(
            custom.relay_server.map(|l| l.connection_watermarks()),
            Some((10, 20))
        );
    }

    #[test]
    fn bad_bootstrap_peers_and_limits_are_refused() {
        let no_id = Dep2p::desktop()
            .bootstrap_peers(["/ip4/127.0.0.1/udp/4001/quic-v1"])
            .plan();
        assert!(matches!(no_id, Err(BuildError::BootstrapPeer { .. })));
        let limits = Dep2p::server().connection_limits(300, 200).plan();
        assert!(matches!(limits, Err(BuildError::ConnectionLimits(_))));
    }

    /// The guide's Tier 2 shape on loopback: a server preset relay, a desktop preset node that
    /// bootstraps from it and reserves.
    #[tokio::test]
    async fn desktop_node_reserves_on_a_server_preset_relay_and_closes() {
        let relay = Dep2p::server()
            .listen_ip(Ipv4Addr::LOCALHOST.into())
            .listen_port(0)
            .start()
            .await
            .unwrap();
        let addr = relay.addrs()[0].to_string();
        let node = Dep2p::desktop()
            .listen_ip(Ipv4Addr::LOCALHOST.into())
            .bootstrap_peers([addr])
            .start()
            .await
            .unwrap();
        let mut events = node.handle().events();
        let reserved = crate::demo::wait_for(&mut events, Duration::from_secs(10), |e| match e {
            crate::AdapterEvent::Node(dep2p_core::node::Event::ReservationAccepted {
                relay,
                ..
            }) => Some(*relay),
            _ => None,
        })
        .await;
        assert_eq!(reserved, Some(relay.id()));
        node.close().await;
        relay.close().await;
        assert!(node.handle().snapshot().await.is_err(), "closed");
    }
}
