//! Helpers shared by the relayed-connection tests: a relay R, a peer A holding a reservation on
//! R, and a peer B that dials A through R.

// Each test file compiles this module on its own and uses only some of it.
#![allow(dead_code)]

use std::time::Duration;

use dep2p_core::node::{ConnectionId, Event, NodeConfig, StreamHandle};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::testing::World;

/// Longest any handshake or exchange in these tests may take in virtual time.
pub const SETTLE: Duration = Duration::from_secs(5);

/// A world with relay `r`, and peers `a` and `b` directly connected to it.
pub struct Trio {
    /// The world.
    pub world: World,
    /// The relay.
    pub r: usize,
    /// The peer holding a reservation on `r` (the circuit's target).
    pub a: usize,
    /// The peer dialing `a` through `r`.
    pub b: usize,
    /// A's direct connection to R.
    pub a_r: ConnectionId,
    /// B's direct connection to R.
    pub b_r: ConnectionId,
}

/// Builds R (with `limits`), A and B (each with `app`), connects A and B to R directly and
/// has A reserve on R; asserts the reservation was accepted.
pub fn reserved_trio(seed: u64, limits: RelayLimits, app: NodeConfig) -> Trio {
    let mut world = World::new(seed);
    let mut relay = NodeConfig::default();
    relay.relay_server(Some(limits));
    let r = world.add_node(relay);
    let a = world.add_node(app.clone());
    let b = world.add_node(app);
    let a_r = world.connect(a, r);
    let b_r = world.connect(b, r);
    assert!(
        world.run_until(SETTLE, |w| w.is_connected(a, r) && w.is_connected(b, r)),
        "A and B connect to R"
    );
    world
        .command(a, |n, now| n.reserve(now, a_r))
        .expect("reserve starts");
    assert!(
        world.run_until(SETTLE, |w| reservation_accepted(w, a, a_r, false)),
        "R accepts A's reservation"
    );
    Trio {
        world,
        r,
        a,
        b,
        a_r,
        b_r,
    }
}

/// Whether `at` reported an accepted reservation over `connection` (`renewed` as given).
pub fn reservation_accepted(
    world: &World,
    at: usize,
    connection: ConnectionId,
    renewed: bool,
) -> bool {
    world.events(at).any(|e| {
        matches!(e, Event::ReservationAccepted { connection: c, renewed: r, .. }
            if *c == connection && *r == renewed)
    })
}

impl Trio {
    /// B dials A through R; waits until both sides report the relayed connection established.
    /// Returns `(B's relayed connection, A's relayed connection)`.
    pub fn dial(&mut self) -> (ConnectionId, ConnectionId) {
        let (a, b, r) = (self.a, self.b, self.r);
        let target = self.world.peer_id(a);
        let relay = self.world.peer_id(r);
        let b_id = self.world.peer_id(b);
        let earlier = relayed_established(&self.world, a, b_id, relay).len();
        let b_r = self.b_r;
        let at_b = self
            .world
            .command(b, |n, now| n.dial_through_relay(now, b_r, target))
            .expect("dial through the relay starts");
        assert!(
            self.world.run_until(SETTLE, |w| {
                relayed_established(w, b, target, relay).contains(&at_b)
                    && relayed_established(w, a, b_id, relay).len() > earlier
            }),
            "the relayed connection is established on both sides"
        );
        let at_a = relayed_established(&self.world, a, b_id, relay)[earlier];
        (at_b, at_a)
    }
}

/// The relayed connections `at` reported established to `peer` through `relay`, in order.
pub fn relayed_established(
    world: &World,
    at: usize,
    peer: dep2p_core::identity::PeerId,
    relay: dep2p_core::identity::PeerId,
) -> Vec<ConnectionId> {
    world
        .events(at)
        .filter_map(|e| match e {
            Event::ConnectionEstablished {
                connection,
                peer: p,
                relay: Some(via),
                ..
            } if *p == peer && *via == relay => Some(*connection),
            _ => None,
        })
        .collect()
}

/// Whether `at` reported `connection` closed.
pub fn closed(world: &World, at: usize, connection: ConnectionId) -> bool {
    world
        .events(at)
        .any(|e| matches!(e, Event::ConnectionClosed { connection: c, .. } if *c == connection))
}

/// Opens a stream for `protocol` from `from` on `connection` and waits until it is ready and
/// the other side (`to`) accepted it. Returns `(from's handle, to's handle)`.
pub fn open_stream_pair(
    world: &mut World,
    from: usize,
    to: usize,
    connection: ConnectionId,
    protocol: &str,
) -> (StreamHandle, StreamHandle) {
    let inbound_before = inbound_streams(world, to).len();
    let stream = world
        .command(from, |n, now| n.open_stream(now, connection, protocol))
        .expect("stream opens");
    assert!(
        world.run_until(SETTLE, |w| {
            w.events(from)
                .any(|e| matches!(e, Event::StreamReady { stream: s, .. } if *s == stream))
                && inbound_streams(w, to).len() > inbound_before
        }),
        "the stream negotiates and the peer accepts it"
    );
    let inbound = inbound_streams(world, to)[inbound_before];
    (stream, inbound)
}

/// Every inbound stream `at` accepted, in order.
pub fn inbound_streams(world: &World, at: usize) -> Vec<StreamHandle> {
    world
        .events(at)
        .filter_map(|e| match e {
            Event::InboundStream { stream, .. } => Some(*stream),
            _ => None,
        })
        .collect()
}

/// What a [`Flow`] writes: pseudo-random bytes from a seed, optionally with `marker` at the
/// start of every 4 KiB (a distinctive plaintext to look for on the wire).
#[derive(Debug, Clone)]
pub struct Content {
    /// Seed of the pseudo-random bytes.
    pub seed: u64,
    /// Bytes stamped at each 4 KiB boundary, if any.
    pub marker: Option<Vec<u8>>,
}

/// Size of the blocks a flow writes from (and of each read).
const BLOCK: usize = 64 * 1024;

impl Content {
    /// The block at byte `offset` (a multiple of [`BLOCK`]), at most `len` bytes.
    fn block(&self, offset: u64, len: usize, out: &mut Vec<u8>) {
        out.clear();
        let mut word = offset / 8;
        while out.len() < len {
            // splitmix64: cheap, and every 8-byte word differs.
            let mut z = (self.seed ^ word).wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            out.extend_from_slice(&z.to_le_bytes());
            word += 1;
        }
        out.truncate(len);
        if let Some(marker) = &self.marker {
            for start in (0..len).step_by(4096) {
                let end = (start + marker.len()).min(len);
                out[start..end].copy_from_slice(&marker[..end - start]);
            }
        }
    }
}

/// One direction of one stream: `writer` writes `total` bytes of `content` on `send` and
/// finishes; `reader` reads `recv` to the end. Both sides hash what they handled.
pub struct Flow {
    /// Node writing.
    pub writer: usize,
    /// Its handle of the stream.
    pub send: StreamHandle,
    /// Node reading.
    pub reader: usize,
    /// Its handle of the stream.
    pub recv: StreamHandle,
    /// Bytes to move.
    pub total: u64,
    content: Content,
    block: Vec<u8>,
    pos: usize,
    sent: u64,
    finished: bool,
    writable: bool,
    sent_hash: ring::digest::Context,
    received: u64,
    recv_done: bool,
    readable: bool,
    recv_hash: ring::digest::Context,
    /// Writes that returned 0 (backpressure), for the record.
    pub blocked_writes: u64,
}

impl Flow {
    /// A flow of `total` bytes of `content`.
    pub fn new(
        writer: usize,
        send: StreamHandle,
        reader: usize,
        recv: StreamHandle,
        total: u64,
        content: Content,
    ) -> Self {
        Self {
            writer,
            send,
            reader,
            recv,
            total,
            content,
            block: Vec::new(),
            pos: 0,
            sent: 0,
            finished: false,
            writable: true,
            sent_hash: ring::digest::Context::new(&ring::digest::SHA256),
            received: 0,
            recv_done: false,
            readable: true,
            recv_hash: ring::digest::Context::new(&ring::digest::SHA256),
            blocked_writes: 0,
        }
    }

    /// Whether the reader saw the end of the stream.
    pub fn done(&self) -> bool {
        self.recv_done
    }

    /// Bytes the reader received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// SHA-256 of what was written and of what was read.
    pub fn digests(&self) -> ([u8; 32], [u8; 32]) {
        let mut sent = [0; 32];
        sent.copy_from_slice(self.sent_hash.clone().finish().as_ref());
        let mut received = [0; 32];
        received.copy_from_slice(self.recv_hash.clone().finish().as_ref());
        (sent, received)
    }

    /// Writes until the stream blocks (0 written) or everything is written and finished.
    fn pump_writer(&mut self, world: &mut World) {
        while self.writable && !self.finished {
            if self.pos == self.block.len() {
                if self.sent == self.total {
                    let send = self.send;
                    world
                        .command(self.writer, |n, now| n.finish(now, send))
                        .expect("finish");
                    self.finished = true;
                    return;
                }
                let len = usize::try_from((self.total - self.sent).min(BLOCK as u64))
                    .expect("a block fits usize");
                let mut block = std::mem::take(&mut self.block);
                self.content.block(self.sent, len, &mut block);
                self.block = block;
                self.pos = 0;
            }
            let send = self.send;
            let chunk = &self.block[self.pos..];
            let written = world
                .command(self.writer, |n, now| n.write(now, send, chunk))
                .expect("write on a live stream");
            if written == 0 {
                self.blocked_writes += 1;
                self.writable = false;
                return;
            }
            self.sent_hash.update(&chunk[..written]);
            self.pos += written;
            self.sent += written as u64;
        }
    }

    /// Reads until nothing is buffered or the stream ended.
    fn pump_reader(&mut self, world: &mut World) {
        use dep2p_core::node::ReadOutcome;
        while self.readable && !self.recv_done {
            let recv = self.recv;
            match world
                .command(self.reader, |n, now| n.read(now, recv, BLOCK))
                .expect("read on a live stream")
            {
                ReadOutcome::Data(data) => {
                    self.recv_hash.update(&data);
                    self.received += data.len() as u64;
                }
                ReadOutcome::Blocked => self.readable = false,
                ReadOutcome::Finished => self.recv_done = true,
            }
        }
    }
}

/// Runs `flows` concurrently: writers write until blocked and resume on `StreamWritable`,
/// readers read on `StreamReadable`. Panics if they do not all finish within `max` virtual
/// time.
pub fn run_flows(world: &mut World, flows: &mut [Flow], max: Duration) {
    let limit = world.now() + max;
    let nodes: std::collections::BTreeSet<usize> =
        flows.iter().flat_map(|f| [f.writer, f.reader]).collect();
    let mut seen: std::collections::BTreeMap<usize, usize> = nodes
        .iter()
        .map(|&n| (n, world.sim_node(n).events.len()))
        .collect();
    loop {
        for (&node, index) in &mut seen {
            let events = &world.sim_node(node).events;
            for (_, event) in &events[*index..] {
                for flow in flows.iter_mut() {
                    match event {
                        Event::StreamWritable { stream }
                            if node == flow.writer && *stream == flow.send =>
                        {
                            flow.writable = true
                        }
                        Event::StreamReadable { stream }
                            if node == flow.reader && *stream == flow.recv =>
                        {
                            flow.readable = true
                        }
                        _ => {}
                    }
                }
            }
            *index = events.len();
        }
        for flow in flows.iter_mut() {
            flow.pump_writer(world);
            flow.pump_reader(world);
        }
        if flows.iter().all(Flow::done) {
            return;
        }
        if !world.step(limit) {
            let state: Vec<String> = flows
                .iter()
                .map(|f| {
                    format!(
                        "{}: sent {}/{} (writable {}, finished {}), received {} (readable {})",
                        f.send, f.sent, f.total, f.writable, f.finished, f.received, f.readable
                    )
                })
                .collect();
            panic!("flows stalled within {max:?}: {state:#?}");
        }
    }
}

/// B sends `total` bytes to A through R on one stream of protocol `protocol` (which `app`, the
/// config of A and B, must accept); returns the virtual time the transfer took, after checking
/// every byte arrived intact. Panics if it does not finish within `max`.
pub fn one_relayed_transfer(
    seed: u64,
    app: NodeConfig,
    protocol: &str,
    total: u64,
    max: Duration,
) -> Duration {
    let mut trio = reserved_trio(seed, RelayLimits::default(), app);
    let (a, b) = (trio.a, trio.b);
    let (at_b, _at_a) = trio.dial();
    let (send, recv) = open_stream_pair(&mut trio.world, b, a, at_b, protocol);
    let mut flows = [Flow::new(
        b,
        send,
        a,
        recv,
        total,
        Content {
            seed: seed ^ 0x5eed,
            marker: None,
        },
    )];
    let start = trio.world.now();
    run_flows(&mut trio.world, &mut flows, max);
    let taken = trio.world.now() - start;
    let flow = &flows[0];
    assert_eq!(flow.received(), total, "every byte arrived");
    let (sent, received) = flow.digests();
    assert_eq!(sent, received, "SHA-256 of sent and received");
    taken
}
