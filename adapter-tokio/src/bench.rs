//! `dep2p bench`: loopback throughput of one stream, direct versus relayed, in the same run.
//!
//! One relay, one node serving the sink, one dialer, all in this process on 127.0.0.1. The
//! same payload goes to the sink directly (QUIC) and through the relay (QUIC to the relay,
//! bridged, TLS + yamux end to end), each checked by SHA-256. Numbers depend on the machine
//! and on the build profile: run it with `--release`.

use std::time::{Duration, Instant};

use dep2p_core::identity::keypair_from_seed;
use dep2p_core::node::NodeConfig;

use crate::apps::{self, SINK};
use crate::demo::{relayed_transfer, start_node, start_relay};
use crate::handle::os_seed;
use crate::{NodeHandle, NodeOptions};

/// Runs the benchmark and prints the result.
pub async fn run(bytes: u64) -> Result<(), String> {
    let relay = start_relay()?;
    let node = start_node(&[&relay.node])?;
    let mut events = node.events();
    crate::demo::wait_for(&mut events, Duration::from_secs(10), |e| match e {
        crate::AdapterEvent::Node(dep2p_core::node::Event::ReservationAccepted { .. }) => Some(()),
        _ => None,
    })
    .await
    .ok_or("the node got no reservation")?;
    let dialer = NodeHandle::spawn(NodeOptions::new(
        NodeConfig::default(),
        keypair_from_seed(os_seed()),
        "127.0.0.1:0".parse().map_err(|_| "bad address")?,
    ))
    .map_err(|e| e.to_string())?;

    let started = Instant::now();
    let direct = async {
        let connection = dialer
            .dial(node.local_addr(), node.peer_id())
            .await
            .map_err(|e| e.to_string())?;
        let stream = dialer
            .open_stream(connection, SINK)
            .await
            .map_err(|e| e.to_string())?;
        let transfer = apps::send_to_sink(&stream, bytes, 3, |_| {})
            .await
            .map_err(|e| e.to_string())?;
        let _ = dialer.close(connection, 0).await;
        Ok::<_, String>(transfer)
    };
    let direct = tokio::time::timeout(Duration::from_secs(300), direct)
        .await
        .map_err(|_| "direct transfer timed out")??;
    let relayed = relayed_transfer(&dialer, &relay.node, node.peer_id(), bytes, 3).await?;
    let check = |ok: bool| if ok { "ok" } else { "MISMATCH" };
    println!("== dep2p bench: {bytes} bytes over one stream on 127.0.0.1");
    println!(
        "direct   {:>8.1} MiB/s  ({:?}, checksum {})",
        direct.mib_per_sec(),
        direct.elapsed,
        check(direct.intact())
    );
    println!(
        "relayed  {:>8.1} MiB/s  ({:?}, checksum {})",
        relayed.mib_per_sec(),
        relayed.elapsed,
        check(relayed.intact())
    );
    println!(
        "relayed / direct = {:.0} %   (DESIGN §10 target: >= 70 %)   total {:?}",
        100.0 * relayed.mib_per_sec() / direct.mib_per_sec().max(1e-9),
        started.elapsed()
    );
    dialer.shutdown().await;
    node.shutdown().await;
    relay.node.shutdown().await;
    if direct.intact() && relayed.intact() {
        Ok(())
    } else {
        Err("a checksum did not match".into())
    }
}
