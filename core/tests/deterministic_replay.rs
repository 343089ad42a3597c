//! One seed replays a run byte for byte: the same seed gives the same trace hash, a different
//! seed a different one, and only `NodeConfig::deterministic_tls` makes rustls' bytes repeat.

use std::time::Duration;

use dep2p_core::identity::keypair_from_seed;
use dep2p_core::node::{Event, Node, NodeConfig, Output, ReadOutcome, StreamHandle};
use dep2p_core::testing::{LinkConfig, WORLD_UNIX_START, World, virtual_epoch};

const BLOB: &str = "/dep2p-test/blob/1.0.0";
const BLOB_LEN: usize = 200_000;

/// What a run did, besides its hash: enough to see the scenario really happened.
#[derive(Debug, PartialEq, Eq)]
struct Run {
    hash: [u8; 32],
    lost: u64,
    delivered: u64,
}

/// Connect, identify, ping, and a 200 kB app stream from `a` to `b`, over lossy, jittery links.
fn scenario(seed: u64) -> Run {
    let mut world = World::new(seed);
    world.set_link(LinkConfig {
        latency: Duration::from_millis(15),
        jitter: Duration::from_millis(5),
        loss: 0.05,
    });
    let mut config = NodeConfig::default();
    config.protocol(BLOB);
    let a = world.add_node(config.clone());
    let b = world.add_node(config);

    let connection = world.connect(a, b);
    let identified =
        |w: &World, n: usize| w.events(n).any(|e| matches!(e, Event::Identified { .. }));
    assert!(
        world.run_until(Duration::from_secs(10), |w| identified(w, a)
            && identified(w, b)),
        "both sides identify"
    );

    world
        .command(a, |node, now| node.ping(now, connection))
        .expect("ping starts");
    assert!(world.run_until(Duration::from_secs(10), |w| {
        w.events(a)
            .any(|e| matches!(e, Event::PingSucceeded { .. }))
    }));

    let outbound = world
        .command(a, |node, now| node.open_stream(now, connection, BLOB))
        .expect("stream opens");
    assert!(
        world.run_until(Duration::from_secs(10), |w| w.events(a).any(
            |e| matches!(e, Event::StreamReady { stream, .. } if *stream == outbound)
        ))
    );

    let blob: Vec<u8> = (0..BLOB_LEN).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    let mut inbound: Option<StreamHandle> = None;
    let mut received = Vec::new();
    let deadline = world.now() + Duration::from_secs(60);
    loop {
        if sent < blob.len() {
            sent += world
                .command(a, |node, now| node.write(now, outbound, &blob[sent..]))
                .expect("write");
            if sent == blob.len() {
                world
                    .command(a, |node, now| node.finish(now, outbound))
                    .expect("finish");
            }
        }
        if inbound.is_none() {
            inbound = world.events(b).find_map(|e| match e {
                Event::InboundStream { stream, protocol } if protocol == BLOB => Some(*stream),
                _ => None,
            });
        }
        if let Some(stream) = inbound {
            match world
                .command(b, |node, now| node.read(now, stream, 16 * 1024))
                .expect("read")
            {
                ReadOutcome::Data(bytes) => {
                    received.extend_from_slice(&bytes);
                    continue;
                }
                ReadOutcome::Finished => break,
                ReadOutcome::Blocked => {}
            }
        }
        assert!(
            world.step(deadline),
            "the blob arrives within a minute of virtual time"
        );
    }
    assert_eq!(received, blob, "the stream delivers the blob intact");

    // Let acknowledgements and keep-alives settle into the trace too.
    world.run_for(Duration::from_secs(2));
    let stats = world.net_stats();
    assert!(stats.lost > 0, "the loss model dropped something");
    Run {
        hash: world.trace_hash(),
        lost: stats.lost,
        delivered: stats.delivered,
    }
}

#[test]
fn same_seed_replays_the_same_trace() {
    let first = scenario(42);
    let second = scenario(42);
    assert_eq!(first, second);
}

#[test]
fn different_seed_gives_a_different_trace() {
    assert_ne!(scenario(42).hash, scenario(43).hash);
}

#[test]
fn trace_hash_changes_with_every_delivery() {
    let mut world = World::new(1);
    let a = world.add_node(NodeConfig::default());
    let b = world.add_node(NodeConfig::default());
    let empty = world.trace_hash();
    assert_eq!(world.trace_hash_hex().len(), 64);
    world.connect(a, b);
    world.step(world.now() + Duration::from_secs(1));
    assert_ne!(world.trace_hash(), empty, "the first Initial was hashed");
    assert_eq!(
        world.trace_hash(),
        world.trace_hash(),
        "reading does not advance it"
    );
}

/// The first datagram a fresh node sends when dialing: its QUIC Initial with the TLS
/// ClientHello (random, session id, X25519 key share) inside.
fn first_initial(deterministic_tls: bool) -> Vec<u8> {
    let mut config = NodeConfig::default();
    config.deterministic_tls(deterministic_tls);
    let now = virtual_epoch();
    let mut node = Node::new(
        config,
        keypair_from_seed([1; 32]),
        [2; 32],
        now,
        WORLD_UNIX_START,
    )
    .expect("node");
    let peer = keypair_from_seed([3; 32]).public().to_peer_id();
    node.dial(now, "127.0.0.1:4001".parse().unwrap(), peer)
        .expect("dial");
    let mut buf = Vec::new();
    loop {
        match node.poll_output(&mut buf) {
            Output::Transmit(transmit) => return buf[..transmit.size].to_vec(),
            Output::Event(_) => {}
            Output::Timeout(_) => panic!("a dial sends an Initial"),
        }
    }
}

#[test]
fn deterministic_tls_repeats_the_client_hello_and_os_randomness_does_not() {
    assert_eq!(first_initial(true), first_initial(true));
    // Same node seed, same CIDs and Initial keys: only rustls' OS randomness differs.
    assert_ne!(first_initial(false), first_initial(false));
}
