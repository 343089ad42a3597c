//! `dep2p demo`: a Tier 2 failover story in one process on 127.0.0.1 (DESIGN §9).
//!
//! Two relays (A, B), several client nodes running the core's AutoRelay (one reservation each),
//! a dialer. The nodes start knowing only A and reserve there; then they learn B (a static
//! candidate: AutoRelay keeps A, no needless switch); the dialer sends a payload to node 1
//! through A and checks the sink's SHA-256; relay A is stopped with the core's graceful drain;
//! every node's AutoRelay fails over to B; a second transfer goes through B. A summary is
//! printed at the end. Finishes in seconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dep2p_core::autorelay::{AutoRelayConfig, CandidateSource};
use dep2p_core::identity::{PeerId, keypair_from_seed};
use dep2p_core::node::{Event, NodeConfig};
use dep2p_core::relay::limits::RelayLimits;
use multiaddr::Multiaddr;
use tokio::sync::broadcast;

use crate::apps::{self, SINK, Transfer};
use crate::handle::os_seed;
use crate::metrics::Metrics;
use crate::{AdapterEvent, NodeHandle, NodeOptions};

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);
/// Longest any step may take before the demo gives up.
const STEP: Duration = Duration::from_secs(10);

/// A running relay of the demo.
pub struct DemoRelay {
    /// Its handle.
    pub node: NodeHandle,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
}

/// Starts a relay on 127.0.0.1 with default limits.
pub fn start_relay() -> Result<DemoRelay, String> {
    let mut config = NodeConfig::default();
    config.relay_server(Some(RelayLimits::default()));
    let metrics = Arc::new(Metrics::new());
    let mut options = NodeOptions::new(config, keypair_from_seed(os_seed()), LOOPBACK);
    options.metrics = Some(Arc::clone(&metrics));
    let node = NodeHandle::spawn(options).map_err(|e| e.to_string())?;
    Ok(DemoRelay { node, metrics })
}

/// A relay as an AutoRelay candidate: its PeerId and addresses.
#[must_use]
pub fn candidate(relay: &NodeHandle) -> (PeerId, Vec<Multiaddr>) {
    (relay.peer_id(), relay.listen_addrs())
}

/// Starts a client node whose AutoRelay keeps one reservation, starting from `relays`
/// (bootstrap candidates), and serves echo and sink.
pub fn start_node(relays: &[&NodeHandle]) -> Result<NodeHandle, String> {
    let mut config = NodeConfig::default();
    config
        .protocol(apps::ECHO)
        .protocol(apps::SINK)
        .auto_relay(Some(AutoRelayConfig::default().min_relays(1)));
    let mut options = NodeOptions::new(config, keypair_from_seed(os_seed()), LOOPBACK);
    options.relay_candidates = relays.iter().map(|r| candidate(r)).collect();
    let node = NodeHandle::spawn(options).map_err(|e| e.to_string())?;
    tokio::spawn(apps::serve(node.clone(), |_, _| {}));
    Ok(node)
}

/// Waits for the first event `pick` maps to `Some`, up to `timeout`.
pub async fn wait_for<T>(
    events: &mut broadcast::Receiver<AdapterEvent>,
    timeout: Duration,
    mut pick: impl FnMut(&AdapterEvent) -> Option<T>,
) -> Option<T> {
    tokio::time::timeout(timeout, async {
        loop {
            match events.recv().await {
                Ok(event) => {
                    if let Some(found) = pick(&event) {
                        return Some(found);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return None,
            }
        }
    })
    .await
    .ok()
    .flatten()
}

/// Sends `bytes` from `dialer` to `target`'s sink through `relay`.
pub async fn relayed_transfer(
    dialer: &NodeHandle,
    relay: &NodeHandle,
    target: PeerId,
    bytes: u64,
    seed: u64,
) -> Result<Transfer, String> {
    let work = async {
        let connection = dialer
            .dial(relay.local_addr(), relay.peer_id())
            .await
            .map_err(|e| format!("dial relay: {e}"))?;
        let circuit = dialer
            .dial_through_relay(connection, target)
            .await
            .map_err(|e| format!("dial through relay: {e}"))?;
        let stream = dialer
            .open_stream(circuit, SINK)
            .await
            .map_err(|e| format!("open sink: {e}"))?;
        let transfer = apps::send_to_sink(&stream, bytes, seed, |_| {})
            .await
            .map_err(|e| format!("transfer: {e}"))?;
        let _ = dialer.close(circuit, 0).await;
        let _ = dialer.close(connection, 0).await;
        Ok(transfer)
    };
    tokio::time::timeout(STEP * 3, work)
        .await
        .map_err(|_| "relayed transfer timed out".to_owned())?
}

fn short(peer: &PeerId) -> String {
    let text = peer.to_string();
    format!("…{}", &text[text.len().saturating_sub(8)..])
}

/// Runs the demo and prints its summary.
pub async fn run(nodes: usize, bytes: u64) -> Result<(), String> {
    let started = Instant::now();
    let nodes = nodes.max(1);
    println!("== dep2p demo: two relays, {nodes} nodes, failover, on 127.0.0.1");
    let a = start_relay()?;
    let b = start_relay()?;
    println!("relay A {} at {}", a.node.peer_id(), a.node.local_addr());
    println!("relay B {} at {}", b.node.peer_id(), b.node.local_addr());

    let mut clients = Vec::new();
    for _ in 0..nodes {
        let node = start_node(&[&a.node])?;
        let events = node.events();
        clients.push((node, events));
    }
    // 1. Every node reserves on its first choice, relay A.
    let a_id = a.node.peer_id();
    let b_id = b.node.peer_id();
    for (i, (node, events)) in clients.iter_mut().enumerate() {
        let addr = wait_for(events, STEP, |e| match e {
            AdapterEvent::Node(Event::ReservationAccepted {
                relay,
                circuit_addrs,
                ..
            }) if *relay == a_id => Some(circuit_addrs.first().cloned()),
            _ => None,
        })
        .await
        .ok_or_else(|| format!("node {} got no reservation on relay A", i + 1))?;
        println!(
            "node {} {} reserved on A: {}",
            i + 1,
            node.peer_id(),
            addr.map(|a| format!("{a}/p2p/{}", node.peer_id()))
                .unwrap_or_default()
        );
    }

    // Relay B comes up; the nodes learn it as a static candidate and keep A (hysteresis).
    for (node, _) in &clients {
        node.add_relay_candidates(vec![candidate(&b.node)], CandidateSource::Static)
            .await
            .map_err(|e| e.to_string())?;
    }
    println!("nodes learn relay B (static candidate) and stay on A");

    // 2. A relayed transfer through A, checked end to end.
    let dialer = NodeHandle::spawn(NodeOptions::new(
        NodeConfig::default(),
        keypair_from_seed(os_seed()),
        LOOPBACK,
    ))
    .map_err(|e| e.to_string())?;
    let target = clients[0].0.peer_id();
    let first = relayed_transfer(&dialer, &a.node, target, bytes, 1).await?;
    println!(
        "transfer via A: {} bytes in {:?} ({:.1} MiB/s), sha256 sent {} received {} -> {}",
        first.bytes,
        first.elapsed,
        first.mib_per_sec(),
        &first.sent_sha256[..16],
        &first.receipt.sha256[..16],
        if first.intact() { "MATCH" } else { "MISMATCH" }
    );
    let a_stats = a.node.snapshot().await.map_err(|e| e.to_string())?;
    let a_relay = a_stats.relay.clone().unwrap_or_default();

    // 3. Relay A stops (the core's graceful drain), every node's AutoRelay fails over to B.
    println!("stopping relay A (graceful drain)");
    let stop_at = Instant::now();
    a.node
        .drain(Duration::from_millis(500))
        .await
        .map_err(|e| e.to_string())?;
    let mut failovers = Vec::new();
    for (i, (_, events)) in clients.iter_mut().enumerate() {
        let (took, why) = wait_for(events, STEP, |e| match e {
            AdapterEvent::RelaySwitched(s) if s.from == Some(a_id) && s.to == b_id => {
                Some((s.took.unwrap_or_default(), s.why.label()))
            }
            _ => None,
        })
        .await
        .ok_or_else(|| format!("node {} did not fail over to relay B", i + 1))?;
        println!("node {} failed over A -> B in {took:?} (why: {why})", i + 1);
        failovers.push(took);
    }
    let all_moved = stop_at.elapsed();

    // 4. The same target, reached through B now.
    let second = relayed_transfer(&dialer, &b.node, target, bytes.min(1 << 20), 2).await?;
    println!(
        "transfer via B: {} bytes, sha256 {}",
        second.bytes,
        if second.intact() { "MATCH" } else { "MISMATCH" }
    );
    let b_stats = b.node.snapshot().await.map_err(|e| e.to_string())?;
    let b_relay = b_stats.relay.unwrap_or_default();

    let max = failovers.iter().max().copied().unwrap_or_default();
    println!();
    println!("== summary");
    println!(
        "relays                     A {} (stopped), B {}",
        short(&a_id),
        short(&b_id)
    );
    println!(
        "reservations on A          {} accepted, {} held before the stop",
        a_relay.reservations_accepted, a_relay.reservations
    );
    println!(
        "relayed transfer via A     {} bytes, checksum {} ({})",
        first.bytes,
        if first.intact() { "MATCH" } else { "MISMATCH" },
        &first.sent_sha256[..16]
    );
    println!(
        "relay A stopped            graceful drain, close code {:#x} (CLOSE_DRAINING)",
        dep2p_core::node::CLOSE_DRAINING
    );
    println!(
        "failover                   {}/{} nodes moved to B, slowest {max:?}, all within {all_moved:?}",
        failovers.len(),
        nodes
    );
    println!(
        "reservations on B          {} held now",
        b_relay.reservations
    );
    println!(
        "relayed transfer via B     {} bytes, checksum {}",
        second.bytes,
        if second.intact() { "MATCH" } else { "MISMATCH" }
    );
    println!("total                      {:?}", started.elapsed());
    let ok = first.intact() && second.intact() && failovers.len() == nodes;
    for (node, _) in &clients {
        node.shutdown().await;
    }
    dialer.shutdown().await;
    b.node.shutdown().await;
    if ok {
        println!("demo ok");
        Ok(())
    } else {
        Err("demo failed: see the summary".into())
    }
}
