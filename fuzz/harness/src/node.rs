//! A node fed arbitrary datagrams and stream bytes on live connections.
//!
//! Scene (fixed, so connection ids and keys are the same in every run and a corpus of real
//! datagrams stays meaningful): node `a` is a relay server, node `b` a plain node connected to
//! it, and a raw quinn-proto client is connected to `a` as well. The input is a list of
//! attacks: datagrams from the raw peer's, `b`'s or a stranger's address; mutations of real
//! datagrams the raw peer saw; raw bytes from the first byte of a new QUIC stream to `a`
//! (multistream, HOP, identify parsers); bytes on an application stream from `b`; time.
//! Afterwards both nodes' tables must be bounded and the untouched `a`–`b` connection must
//! still answer a ping.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use arbitrary::Unstructured;

use dep2p_core::identity::keypair_from_seed;
use dep2p_core::node::{ConnectionId, Event, NodeConfig};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::testing::World;
use dep2p_core::tls::{ALPN, TlsIdentity};

use crate::raw::{RawPeer, client_tls};

/// The application protocol both nodes speak.
pub const ECHO: &str = "/echo/1.0.0";
/// Streams per connection (small, so the bound is quickly reached).
const MAX_STREAMS: u32 = 8;
/// The world seed of every run.
const SEED: u64 = 0xf022;
/// Longest a setup step may take (virtual time).
const SETTLE: Duration = Duration::from_secs(5);
/// Most attacks one input runs (the rest is ignored), to keep an execution short.
const MAX_ATTACKS: usize = 32;
/// A host no node knows.
pub const STRANGER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 9, 9, 9)), 6666);

/// The scene, connected and settled.
pub struct Scene {
    /// The world.
    pub world: World,
    /// The relay node.
    pub a: usize,
    /// The plain node.
    pub b: usize,
    /// `a`'s connection to `b`.
    pub conn_ab: ConnectionId,
    /// `b`'s connection to `a`.
    pub conn_ba: ConnectionId,
    /// The raw client connected to `a`.
    pub raw: RawPeer,
}

fn established(world: &World, at: usize, to: usize) -> Option<ConnectionId> {
    let peer = world.peer_id(to);
    world.events(at).find_map(|e| match e {
        Event::ConnectionEstablished {
            connection,
            peer: p,
            ..
        } if *p == peer => Some(*connection),
        _ => None,
    })
}

/// Builds the scene with `b`'s secrets from a fixed seed (the seed-corpus generator's scene).
/// Panics if the well-behaved setup fails (that would be a bug too).
#[must_use]
pub fn scene() -> Scene {
    scene_with_b_seed([0xb0; 32])
}

/// `b`'s seed for one fuzz input: a hash of the whole input. Its stateless reset tokens (and
/// its other secrets) then change with every mutation, so the fuzzer cannot learn them from
/// comparisons in earlier runs and forge a reset of the `a`–`b` connection from `b`'s address,
/// which a real off-path attacker cannot do either. (With a fixed `b`, libFuzzer did learn a
/// token: `corpus/node/crash-learned-reset-token`.) `a` keeps its fixed seed, so the captured
/// datagrams of the committed corpus still reach its connections.
fn b_seed(input: &[u8]) -> [u8; 32] {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"dep2p-fuzz-node-b");
    context.update(input);
    let mut seed = [0u8; 32];
    seed.copy_from_slice(context.finish().as_ref());
    seed
}

/// The scene with node `b` drawing every secret from `b_seed`.
fn scene_with_b_seed(b_seed: [u8; 32]) -> Scene {
    let mut config = NodeConfig::default();
    config
        .protocol(ECHO)
        .max_streams_per_connection(MAX_STREAMS);
    let mut relay = config.clone();
    relay.relay_server(Some(RelayLimits::default()));
    let mut world = World::new(SEED);
    let a = world.add_node(relay);
    let b = world.add_node_with_seed(config, b_seed);
    world.connect(b, a);
    assert!(
        world.run_until(SETTLE, |w| w.is_connected(a, b) && w.is_connected(b, a)),
        "a and b connect"
    );
    let conn_ab = established(&world, a, b).expect("a reported b");
    let conn_ba = established(&world, b, a).expect("b reported a");
    let identity = TlsIdentity::new(&keypair_from_seed([9; 32]), [10; 32]).expect("identity");
    let tls = client_tls(&world, &identity, Some(world.peer_id(a)), &[ALPN]);
    let mut raw = RawPeer::connect(&mut world, a, 5000, tls);
    assert!(
        raw.run_until(&mut world, SETTLE, |_, c| c.is_connected()),
        "raw client connects"
    );
    raw.run_for(&mut world, Duration::from_millis(200));
    Scene {
        world,
        a,
        b,
        conn_ab,
        conn_ba,
        raw,
    }
}

/// The attack opcodes (first byte of each attack, modulo the count).
pub mod op {
    /// `to: u8, from: u8, len: u16, bytes`: a datagram.
    pub const DATAGRAM: u8 = 0;
    /// `to: u8, from: u8, pick: u16, n: u8, n × (at: u16, mask: u8), truncate: u16`.
    pub const MUTATED: u8 = 1;
    /// `finish: bool, len: u16, bytes`: a new raw stream to `a`.
    pub const RAW_STREAM: u8 = 2;
    /// `len: u16, bytes`: an application stream from `b` to `a`.
    pub const APP_STREAM: u8 = 3;
    /// `millis: u16`: time passes.
    pub const WAIT: u8 = 4;
    /// Number of opcodes.
    pub const COUNT: u8 = 5;
}

fn sized<'a>(u: &mut Unstructured<'a>) -> &'a [u8] {
    let len = usize::from(u.arbitrary::<u16>().unwrap_or(0));
    u.bytes(len.min(u.len())).unwrap_or_default()
}

/// The harness.
pub fn node(data: &[u8]) {
    let mut scene = scene_with_b_seed(b_seed(data));
    let mut u = Unstructured::new(data);
    let (a, b) = (scene.a, scene.b);
    for _ in 0..MAX_ATTACKS {
        if u.is_empty() {
            break;
        }
        let Scene {
            world,
            raw,
            conn_ba,
            ..
        } = &mut scene;
        let from_of = |u: &mut Unstructured, world: &World, raw: &RawPeer| match u
            .arbitrary::<u8>()
            .unwrap_or(0)
            % 3
        {
            0 => raw.addr,
            1 => world.addr(b),
            _ => STRANGER,
        };
        match u.arbitrary::<u8>().unwrap_or(0) % op::COUNT {
            op::DATAGRAM => {
                let to = [a, b][usize::from(u.arbitrary::<bool>().unwrap_or(false))];
                let from = from_of(&mut u, world, raw);
                let bytes = sized(&mut u);
                world.inject(to, from, bytes);
            }
            op::MUTATED => {
                let to = [a, b][usize::from(u.arbitrary::<bool>().unwrap_or(false))];
                let from = from_of(&mut u, world, raw);
                let pick = usize::from(u.arbitrary::<u16>().unwrap_or(0));
                let mut bytes = raw.captured[pick % raw.captured.len()].clone();
                let flips = u.arbitrary::<u8>().unwrap_or(0) % 8;
                for _ in 0..flips {
                    let at = usize::from(u.arbitrary::<u16>().unwrap_or(0));
                    let mask = u.arbitrary::<u8>().unwrap_or(1);
                    let len = bytes.len().max(1);
                    if let Some(byte) = bytes.get_mut(at % len) {
                        *byte ^= mask;
                    }
                }
                let truncate = usize::from(u.arbitrary::<u16>().unwrap_or(u16::MAX));
                bytes.truncate(truncate);
                world.inject(to, from, &bytes);
            }
            op::RAW_STREAM => {
                let finish = u.arbitrary::<bool>().unwrap_or(true);
                let bytes = sized(&mut u);
                if raw.lost().is_none()
                    && let Some(id) = raw.conn.streams().open(quinn_proto::Dir::Bi)
                {
                    let _ = raw.conn.send_stream(id).write(bytes);
                    if finish {
                        let _ = raw.conn.send_stream(id).finish();
                    }
                }
            }
            op::APP_STREAM => {
                let bytes = sized(&mut u);
                if let Ok(stream) = world.command(b, |n, now| n.open_stream(now, *conn_ba, ECHO)) {
                    let ready = |w: &World, _: &RawPeer| {
                        w.events(b).any(
                            |e| matches!(e, Event::StreamReady { stream: s, .. } if *s == stream),
                        )
                    };
                    let _ = raw.run_until(world, SETTLE, ready);
                    let _ = world.command(b, |n, now| n.write(now, stream, bytes));
                    let _ = world.command(b, |n, now| n.finish(now, stream));
                }
            }
            _ => {
                let millis = u.arbitrary::<u16>().unwrap_or(0) % 2000;
                raw.run_for(world, Duration::from_millis(millis.into()));
            }
        }
        raw.run_for(world, Duration::from_millis(5));
        drain_app_streams(world, a);
    }
    check(&mut scene);
}

/// Reads and resets every inbound application stream node `at` was offered, as a
/// well-behaved application would.
fn drain_app_streams(world: &mut World, at: usize) {
    let streams: Vec<_> = world
        .take_events(at)
        .into_iter()
        .filter_map(|e| match e {
            Event::InboundStream { stream, .. } => Some(stream),
            _ => None,
        })
        .collect();
    for stream in streams {
        let _ = world.command(at, |node, now| node.read(now, stream, usize::MAX));
        let _ = world.command(at, |node, now| node.reset(now, stream, 0));
    }
}

fn check(scene: &mut Scene) {
    let Scene {
        world,
        a,
        b,
        conn_ab,
        raw,
        ..
    } = scene;
    raw.run_for(world, Duration::from_secs(1));
    for at in [*a, *b] {
        let stats = world.node(at).stats();
        assert!(stats.connections <= 2, "node {at}: {stats:?}");
        assert!(
            stats.streams <= 2 * (MAX_STREAMS as usize + 2),
            "node {at} tracks a bounded number of streams: {stats:?}"
        );
        assert_eq!(stats.events_dropped, 0, "node {at}: {stats:?}");
    }
    // The a–b connection was never attacked with its own keys: it still works.
    let before = world.events(*a).count();
    let conn = *conn_ab;
    world
        .command(*a, |node, now| node.ping(now, conn))
        .expect("ping starts on the untouched connection");
    let a = *a;
    let done = |w: &World, _: &RawPeer| {
        w.events(a)
            .skip(before)
            .any(|e| matches!(e, Event::PingSucceeded { connection, .. } if *connection == conn))
    };
    assert!(
        raw.run_until(world, SETTLE, done),
        "ping on the untouched a-b connection succeeds"
    );
}
