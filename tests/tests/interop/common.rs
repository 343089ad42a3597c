//! Shared pieces of the interop tests: rust-libp2p swarms driven on their own task, our nodes
//! started through the tokio adapter, an echo protocol both sides serve, and conversions
//! between the two crates' `PeerId` and `Multiaddr` types (libp2p 0.57 uses
//! libp2p-identity 0.3 and multiaddr 0.19; the core uses 0.2 and 0.18: same bytes).

use std::net::SocketAddr;
use std::time::Duration;

use dep2p_core::identity::keypair_from_seed;
use dep2p_core::node::{Event, NodeConfig};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_tokio::apps::{self, ECHO};
use dep2p_tokio::{AdapterEvent, NodeHandle, NodeOptions};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify, identity, ping, relay};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Longest any single step of a test may take.
pub const STEP: Duration = Duration::from_secs(15);
/// The protocol version string the libp2p peers announce in identify.
pub const LIBP2P_PROTOCOL_VERSION: &str = "/interop/1.0.0";
/// The agent version the libp2p peers announce in identify.
pub const LIBP2P_AGENT: &str = "rust-libp2p-interop/0.57";
/// The echo protocol as a libp2p `StreamProtocol` (the same id our `apps::serve` answers).
pub const ECHO_PROTOCOL: StreamProtocol = StreamProtocol::new(ECHO);

/// Our `PeerId` as libp2p's.
pub fn to_libp2p_peer(peer: dep2p_core::identity::PeerId) -> PeerId {
    PeerId::from_bytes(&peer.to_bytes()).expect("same multihash encoding")
}

/// libp2p's `PeerId` as ours.
pub fn to_our_peer(peer: PeerId) -> dep2p_core::identity::PeerId {
    dep2p_core::identity::PeerId::from_bytes(&peer.to_bytes()).expect("same multihash encoding")
}

/// Our multiaddr as libp2p's.
pub fn to_libp2p_addr(addr: &multiaddr::Multiaddr) -> Multiaddr {
    Multiaddr::try_from(addr.to_vec()).expect("same multiaddr encoding")
}

/// libp2p's multiaddr as ours.
pub fn to_our_addr(addr: &Multiaddr) -> multiaddr::Multiaddr {
    multiaddr::Multiaddr::try_from(addr.to_vec()).expect("same multiaddr encoding")
}

/// The UDP socket address of a `/ip4/../udp/../quic-v1` multiaddr.
pub fn socket_of(addr: &Multiaddr) -> SocketAddr {
    dep2p_core::addr::parse_quic_multiaddr(&to_our_addr(addr))
        .expect("a QUIC multiaddr")
        .0
}

/// A reproducible payload of `len` bytes.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0; len];
    apps::Payload::new(seed).fill(&mut data);
    data
}

// ---------------------------------------------------------------------------------------------
// rust-libp2p side
// ---------------------------------------------------------------------------------------------

/// A libp2p peer: relay client (TLS + yamux over circuits), identify, ping, and raw streams.
#[derive(NetworkBehaviour)]
pub struct ClientBehaviour {
    /// Circuit Relay v2 client.
    pub relay_client: relay::client::Behaviour,
    /// Identify.
    pub identify: identify::Behaviour,
    /// Ping.
    pub ping: ping::Behaviour,
    /// Application streams (`/dep2p/echo/1.0.0`).
    pub stream: libp2p_stream::Behaviour,
}

/// A libp2p relay server, with identify and ping.
#[derive(NetworkBehaviour)]
pub struct RelayBehaviour {
    /// Circuit Relay v2 server.
    pub relay: relay::Behaviour,
    /// Identify.
    pub identify: identify::Behaviour,
    /// Ping.
    pub ping: ping::Behaviour,
}

fn identify_config(key: &identity::Keypair) -> identify::Config {
    identify::Config::new(LIBP2P_PROTOCOL_VERSION.to_owned(), key.public())
        .with_agent_version(LIBP2P_AGENT.to_owned())
}

fn ping_config() -> ping::Config {
    ping::Config::new()
        .with_interval(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(5))
}

/// A command run on a swarm's task.
type SwarmCall<B> = Box<dyn FnOnce(&mut Swarm<B>) + Send>;

/// A libp2p swarm running on its own task: commands go in as closures, events come out.
pub struct Libp2pNode<B: NetworkBehaviour> {
    /// Its PeerId.
    pub peer_id: PeerId,
    calls: mpsc::UnboundedSender<SwarmCall<B>>,
    events: mpsc::UnboundedReceiver<SwarmEvent<B::ToSwarm>>,
    /// Every event seen so far, for failure messages.
    seen: Vec<String>,
}

impl<B> Libp2pNode<B>
where
    B: NetworkBehaviour + Send + 'static,
    B::ToSwarm: Send + std::fmt::Debug,
{
    fn spawn(mut swarm: Swarm<B>) -> Self {
        let peer_id = *swarm.local_peer_id();
        let (calls, mut calls_rx) = mpsc::unbounded_channel::<SwarmCall<B>>();
        let (events_tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    call = calls_rx.recv() => match call {
                        Some(call) => call(&mut swarm),
                        None => break,
                    },
                    event = swarm.select_next_some() => {
                        if events_tx.send(event).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Self {
            peer_id,
            calls,
            events,
            seen: Vec::new(),
        }
    }

    /// Runs `f` on the swarm's task and returns its result.
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<B>) -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = oneshot::channel();
        self.calls
            .send(Box::new(move |swarm| {
                let _ = tx.send(f(swarm));
            }))
            .unwrap_or_else(|_| panic!("swarm task of {} is gone", self.peer_id));
        rx.await.expect("swarm task answers")
    }

    /// Waits (at most [`STEP`]) for the first event `pick` maps to `Some`; panics with every
    /// event seen so far when none comes.
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&SwarmEvent<B::ToSwarm>) -> Option<T>,
    ) -> T {
        let found = tokio::time::timeout(STEP, async {
            while let Some(event) = self.events.recv().await {
                let picked = pick(&event);
                self.seen.push(format!("{event:?}"));
                if picked.is_some() {
                    return picked;
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(found)) => found,
            _ => panic!(
                "libp2p peer {}: no {what} within {STEP:?}; events seen:\n{}",
                self.peer_id,
                self.seen.join("\n")
            ),
        }
    }

    /// Starts listening on `addr`; for a QUIC address waits for the bound address.
    pub async fn listen_quic(&mut self) -> Multiaddr {
        self.call(|swarm| {
            swarm
                .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("valid"))
                .expect("listen on QUIC")
        })
        .await;
        self.expect("NewListenAddr", |event| match event {
            SwarmEvent::NewListenAddr { address, .. } => Some(address.clone()),
            _ => None,
        })
        .await
    }
}

/// A libp2p peer and its stream control.
pub struct Libp2pClient {
    /// The swarm on its task.
    pub node: Libp2pNode<ClientBehaviour>,
    /// Opens and accepts application streams.
    pub control: libp2p_stream::Control,
}

/// Starts a libp2p peer (QUIC + relay client with TLS + yamux) that serves echo.
pub fn libp2p_client() -> Libp2pClient {
    let key = identity::Keypair::generate_ed25519();
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_quic()
        .with_relay_client(libp2p::tls::Config::new, libp2p::yamux::Config::default)
        .expect("relay client transport")
        .with_behaviour(|key, relay_client| ClientBehaviour {
            relay_client,
            identify: identify::Behaviour::new(identify_config(key)),
            ping: ping::Behaviour::new(ping_config()),
            stream: libp2p_stream::Behaviour::new(),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    let mut control = swarm.behaviour().stream.new_control();
    let mut incoming = control.accept(ECHO_PROTOCOL).expect("echo registered once");
    tokio::spawn(async move {
        while let Some((_peer, stream)) = incoming.next().await {
            tokio::spawn(serve_libp2p_echo(stream));
        }
    });
    Libp2pClient {
        node: Libp2pNode::spawn(swarm),
        control,
    }
}

/// Starts a libp2p relay server on 127.0.0.1 with `config`; returns it and its address
/// (announced as its external address: rust-libp2p's relay only serves HOP, and only fills a
/// reservation's `addrs`, once it has a confirmed external address).
pub async fn libp2p_relay(config: relay::Config) -> (Libp2pNode<RelayBehaviour>, Multiaddr) {
    let key = identity::Keypair::generate_ed25519();
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_quic()
        .with_behaviour(|key| RelayBehaviour {
            relay: relay::Behaviour::new(key.public().to_peer_id(), config),
            identify: identify::Behaviour::new(identify_config(key)),
            ping: ping::Behaviour::new(ping_config()),
        })
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    let mut relay = Libp2pNode::spawn(swarm);
    let addr = relay.listen_quic().await;
    let external = addr.clone();
    relay
        .call(move |swarm| swarm.add_external_address(external))
        .await;
    (relay, addr)
}

/// Serves one libp2p echo stream: every byte back, then close.
async fn serve_libp2p_echo(stream: libp2p::Stream) {
    let (mut reader, mut writer) = stream.split();
    let _ = futures::io::copy(&mut reader, &mut writer).await;
    let _ = writer.close().await;
}

/// Writes `data` on a libp2p stream while reading everything the peer sends back until it
/// closes; returns what came back.
pub async fn libp2p_echo_round_trip(stream: libp2p::Stream, data: &[u8]) -> Vec<u8> {
    let (mut reader, mut writer) = stream.split();
    let write = async {
        writer.write_all(data).await.expect("write to echo");
        writer.close().await.expect("close our side");
    };
    let read = async {
        let mut back = Vec::new();
        reader.read_to_end(&mut back).await.expect("read echo");
        back
    };
    let ((), back) = futures::join!(write, read);
    back
}

// ---------------------------------------------------------------------------------------------
// our side
// ---------------------------------------------------------------------------------------------

/// Loopback, any port.
pub const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// Starts our relay on 127.0.0.1 with `limits`.
pub fn our_relay(limits: RelayLimits) -> NodeHandle {
    let mut config = NodeConfig::default();
    config.relay_server(Some(limits));
    NodeHandle::spawn(NodeOptions::new(
        config,
        keypair_from_seed(seed()),
        LOOPBACK,
    ))
    .expect("relay starts")
}

/// Starts our node on 127.0.0.1 serving echo (and sink).
pub fn our_node() -> NodeHandle {
    let mut config = NodeConfig::default();
    config.protocol(apps::ECHO).protocol(apps::SINK);
    let node = NodeHandle::spawn(NodeOptions::new(
        config,
        keypair_from_seed(seed()),
        LOOPBACK,
    ))
    .expect("node starts");
    tokio::spawn(apps::serve(node.clone(), |_, _| {}));
    node
}

fn seed() -> [u8; 32] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    // Distinct per process too, so parallel test binaries never share a key.
    seed[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    seed
}

/// The full address of our node: `/ip4/127.0.0.1/udp/<port>/quic-v1/p2p/<id>`.
pub fn our_addr(node: &NodeHandle) -> Multiaddr {
    to_libp2p_addr(&node.listen_addrs()[0])
}

/// Waits (at most [`STEP`]) for the first event of our node that `pick` maps to `Some`.
pub async fn expect_our_event<T>(
    events: &mut broadcast::Receiver<AdapterEvent>,
    what: &str,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(STEP, async {
        loop {
            match events.recv().await {
                Ok(AdapterEvent::Node(event)) => {
                    let picked = pick(&event);
                    seen.push(format!("{event:?}"));
                    if picked.is_some() {
                        return picked;
                    }
                }
                Ok(AdapterEvent::RelaySwitched(_))
                | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .await;
    match found {
        Ok(Some(found)) => found,
        _ => panic!(
            "our node: no {what} within {STEP:?}; events seen:\n{}",
            seen.join("\n")
        ),
    }
}

/// Opens an echo stream on our connection, sends `data` while reading the echo, returns it.
pub async fn our_echo_round_trip(
    node: &NodeHandle,
    connection: dep2p_core::node::ConnectionId,
    data: &[u8],
) -> Vec<u8> {
    let stream = node
        .open_stream(connection, ECHO)
        .await
        .expect("echo stream opens");
    let writer = stream.clone();
    let owned = data.to_vec();
    let write = tokio::spawn(async move {
        for chunk in owned.chunks(64 * 1024) {
            writer
                .write_all(chunk.to_vec())
                .await
                .expect("write to echo");
        }
        writer.finish().await.expect("finish");
    });
    let back = stream
        .read_to_end(data.len() + 1)
        .await
        .expect("read echo back");
    write.await.expect("writer task");
    back
}

/// Runs `fut` with an overall bound, so a hung interop test fails instead of hanging CI.
/// Also turns on logs when `RUST_LOG` is set.
pub async fn bounded<T>(limit: Duration, fut: impl std::future::Future<Output = T>) -> T {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    tokio::time::timeout(limit, fut)
        .await
        .unwrap_or_else(|_| panic!("test did not finish within {limit:?}"))
}
