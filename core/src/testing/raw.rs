//! A raw quinn-proto client outside the [`World`], driven by hand, for tests and fuzz harnesses
//! that need to send what a [`Node`](crate::node::Node) never would: forged certificates, other
//! ALPNs, raw bytes from the first byte of a stream. Its randomness (TLS, connection ids) is
//! seeded, so every run sends the same bytes.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::crypto::rustls::QuicClientConfig;
use quinn_proto::{
    ClientConfig, Connection, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig,
    StreamId, TransportConfig,
};

use crate::identity::{PeerId, keypair_from_seed};
use crate::testing::{WORLD_UNIX_START, World};
use crate::tls::{self, TlsIdentity};
use crate::wallclock::WallClock;

/// Rounds of the drive loop after which a test is considered stuck (a guard, not a budget).
const MAX_ROUNDS: usize = 100_000;

/// Issues connection ids 1, 2, 3… (offset by the port), so runs are reproducible.
struct CountingCids(Arc<AtomicU64>);

impl quinn_proto::ConnectionIdGenerator for CountingCids {
    fn generate_cid(&mut self) -> quinn_proto::ConnectionId {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        quinn_proto::ConnectionId::new(&n.to_le_bytes())
    }
    fn cid_len(&self) -> usize {
        8
    }
    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// A raw QUIC client talking to one node of a world.
pub struct RawPeer {
    /// Its UDP address (outside the world's node range).
    pub addr: SocketAddr,
    /// The world node it talks to.
    pub target: usize,
    endpoint: Endpoint,
    handle: ConnectionHandle,
    /// The connection; tests open streams and read/write on it directly.
    pub conn: Connection,
    /// Everything the connection reported.
    pub events: Vec<quinn_proto::Event>,
    /// The first [`MAX_CAPTURED`] datagrams this connection sent and received, as real QUIC
    /// packets to mutate in fuzz tests.
    pub captured: Vec<Vec<u8>>,
    /// What [`RawPeer::received`] accumulated per stream.
    received: BTreeMap<StreamId, Received>,
    buf: Vec<u8>,
    /// The TLS generators behind a [`client_tls`] config, entered around every quinn call.
    tls_randomness: Arc<tls::SeededRandomness>,
}

/// The seed of every raw peer's TLS randomness.
const RAW_TLS_SEED: [u8; 32] = [0x7a; 32];

/// Everything read from one stream so far, and how the peer ended it (see [`RawPeer::read`]).
pub type Received = (Vec<u8>, Option<Option<u64>>);

/// Most datagrams a [`RawPeer`] keeps in [`RawPeer::captured`].
pub const MAX_CAPTURED: usize = 256;

/// The TLS identity of a well-behaved libp2p client with host key seed `n`.
pub fn good_identity(n: u8) -> TlsIdentity {
    TlsIdentity::new(&keypair_from_seed([n; 32]), [n.wrapping_add(1); 32]).expect("identity")
}

/// A rustls client config presenting `identity`, offering `alpn`, expecting `expected`.
pub fn client_tls(
    world: &World,
    identity: &TlsIdentity,
    expected: Option<PeerId>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let clock = WallClock::new(WORLD_UNIX_START + world.elapsed());
    // Seeded randomness (not the OS's), so every run of a fuzz input sends the same bytes; the
    // [`RawPeer`] using the config enters its generators.
    let provider = tls::seeded_crypto_provider();
    let (config, _) = tls::client_config_with_provider(identity, clock, expected, alpn, provider)
        .expect("client config");
    config
}

impl RawPeer {
    /// Starts a QUIC connection from external address `127.0.0.2:<port>` to node `target`.
    pub fn connect(
        world: &mut World,
        target: usize,
        port: u16,
        tls: Arc<rustls::ClientConfig>,
    ) -> Self {
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), port);
        world.add_external(addr);
        let reset_key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &[port as u8; 32]);
        let mut endpoint_config = EndpointConfig::new(Arc::new(reset_key));
        endpoint_config.rng_seed(Some([port as u8; 32]));
        // Counter-based connection ids (quinn's default generator draws from the thread RNG).
        let next = Arc::new(AtomicU64::new(u64::from(port) << 40));
        endpoint_config.cid_generator(move || {
            Box::new(CountingCids(Arc::clone(&next))) as Box<dyn quinn_proto::ConnectionIdGenerator>
        });
        let mut endpoint = Endpoint::new(Arc::new(endpoint_config), None, false, None);
        let crypto = QuicClientConfig::try_from(tls).expect("TLS 1.3 initial suite");
        let mut config = ClientConfig::new(Arc::new(crypto));
        let mut transport = TransportConfig::default();
        transport.max_idle_timeout(Some(Duration::from_secs(30).try_into().expect("idle")));
        config.transport_config(Arc::new(transport));
        let counter = Arc::new(AtomicU64::new(u64::from(port) << 32));
        config.initial_dst_cid_provider(Arc::new(move || {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            quinn_proto::ConnectionId::new(&n.to_le_bytes())
        }));
        let tls_randomness = tls::SeededRandomness::new(RAW_TLS_SEED);
        let entered = tls_randomness.enter();
        let (handle, conn) = endpoint
            .connect(world.now(), config, world.addr(target), "l")
            .expect("connect starts");
        let mut peer = Self {
            addr,
            target,
            endpoint,
            handle,
            conn,
            events: Vec::new(),
            captured: Vec::new(),
            received: BTreeMap::new(),
            buf: Vec::with_capacity(1500),
            tls_randomness: Arc::clone(&tls_randomness),
        };
        drop(entered);
        peer.flush(world);
        peer
    }

    /// Hands the connection's endpoint events to the endpoint and sends everything it wants
    /// to send into the world (arriving at once).
    pub fn flush(&mut self, world: &mut World) {
        let _tls = self.tls_randomness.enter();
        while let Some(event) = self.conn.poll_endpoint_events() {
            if let Some(reply) = self.endpoint.handle_event(self.handle, event) {
                self.conn.handle_event(reply);
            }
        }
        while let Some(event) = self.conn.poll() {
            self.events.push(event);
        }
        let now = world.now();
        loop {
            self.buf.clear();
            let Some(transmit) = self.conn.poll_transmit(now, 1, &mut self.buf) else {
                break;
            };
            if self.captured.len() < MAX_CAPTURED {
                self.captured.push(self.buf[..transmit.size].to_vec());
            }
            world.inject(self.target, self.addr, &self.buf[..transmit.size]);
        }
    }

    /// Delivers datagrams waiting in the mailbox and fires the connection's timer if due.
    pub fn receive(&mut self, world: &mut World) {
        let _tls = self.tls_randomness.enter();
        let now = world.now();
        for datagram in world.take_external(self.addr) {
            if self.captured.len() < MAX_CAPTURED {
                self.captured.push(datagram.data.clone());
            }
            self.buf.clear();
            let event = self.endpoint.handle(
                now,
                datagram.from,
                None,
                None,
                BytesMut::from(&datagram.data[..]),
                &mut self.buf,
            );
            match event {
                Some(DatagramEvent::ConnectionEvent(_, event)) => self.conn.handle_event(event),
                Some(DatagramEvent::Response(transmit)) => {
                    world.inject(self.target, self.addr, &self.buf[..transmit.size]);
                }
                Some(DatagramEvent::NewConnection(_)) | None => {}
            }
        }
        if self.conn.poll_timeout().is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
        }
    }

    /// Runs the world and this peer together until `done` holds or `max` virtual time passes.
    pub fn run_until(
        &mut self,
        world: &mut World,
        max: Duration,
        mut done: impl FnMut(&World, &RawPeer) -> bool,
    ) -> bool {
        let limit = world.now() + max;
        for _ in 0..MAX_ROUNDS {
            self.flush(world);
            if done(world, self) {
                return true;
            }
            if world.now() >= limit {
                return false;
            }
            let wake: Instant = self.conn.poll_timeout().map_or(limit, |t| t.min(limit));
            world.step(wake.max(world.now()));
            self.receive(world);
        }
        panic!("raw peer and world did not settle in {MAX_ROUNDS} rounds");
    }

    /// Runs the world and this peer together for `duration`.
    pub fn run_for(&mut self, world: &mut World, duration: Duration) {
        let _ = self.run_until(world, duration, |_, _| false);
    }

    /// Whether the connection reported the handshake done.
    pub fn is_connected(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, quinn_proto::Event::Connected))
    }

    /// Why the connection was lost, if it was.
    pub fn lost(&self) -> Option<&quinn_proto::ConnectionError> {
        self.events.iter().find_map(|e| match e {
            quinn_proto::Event::ConnectionLost { reason } => Some(reason),
            _ => None,
        })
    }

    /// Opens a bidirectional stream and writes `data` on it (all of it must fit the window).
    pub fn open_and_write(&mut self, data: &[u8]) -> StreamId {
        let id = self.conn.streams().open(Dir::Bi).expect("stream credit");
        self.write(id, data);
        id
    }

    /// The next bidirectional stream the node opened toward us, if any.
    pub fn accept_bi(&mut self) -> Option<StreamId> {
        self.conn.streams().accept(Dir::Bi)
    }

    /// Finishes our sending side of `id` (ignored if it is already closed).
    pub fn finish(&mut self, id: StreamId) {
        let _ = self.conn.send_stream(id).finish();
    }

    /// Writes `data` on `id`; all of it must fit the flow-control window.
    pub fn write(&mut self, id: StreamId, data: &[u8]) {
        let written = self
            .conn
            .send_stream(id)
            .write(data)
            .expect("stream writable");
        assert_eq!(written, data.len(), "test writes fit the window");
    }

    /// Everything that arrived on `id` so far (not only what is new), and how the peer ended
    /// it. Do not mix with [`RawPeer::read`] on the same stream: that consumes bytes.
    pub fn received(&mut self, id: StreamId) -> Received {
        let (data, end) = self.read(id);
        let entry = self.received.entry(id).or_default();
        entry.0.extend_from_slice(&data);
        if entry.1.is_none() {
            entry.1 = end;
        }
        entry.clone()
    }

    /// Reads what arrived on `id`: the bytes, and whether the peer finished (`Some(None)`) or
    /// reset (`Some(Some(code))`) its side.
    pub fn read(&mut self, id: StreamId) -> (Vec<u8>, Option<Option<u64>>) {
        let mut data = Vec::new();
        let mut end = None;
        let mut recv = self.conn.recv_stream(id);
        let Ok(mut chunks) = recv.read(true) else {
            return (data, Some(None));
        };
        loop {
            match chunks.next(usize::MAX) {
                Ok(Some(chunk)) => data.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    end = Some(None);
                    break;
                }
                Err(quinn_proto::ReadError::Blocked) => break,
                Err(quinn_proto::ReadError::Reset(code)) => {
                    end = Some(Some(code.into_inner()));
                    break;
                }
            }
        }
        let _ = chunks.finalize();
        (data, end)
    }
}

/// Runs the world and several raw peers together until `done` holds or `max` virtual time
/// passes: like [`RawPeer::run_until`], but no peer's datagrams wait while another runs.
pub fn run_all_until(
    world: &mut World,
    peers: &mut [&mut RawPeer],
    max: Duration,
    mut done: impl FnMut(&World, &mut [&mut RawPeer]) -> bool,
) -> bool {
    let limit = world.now() + max;
    for _ in 0..MAX_ROUNDS {
        for peer in peers.iter_mut() {
            peer.flush(world);
        }
        if done(world, peers) {
            return true;
        }
        if world.now() >= limit {
            return false;
        }
        let wake = peers
            .iter_mut()
            .filter_map(|p| p.conn.poll_timeout())
            .fold(limit, Instant::min);
        world.step(wake.max(world.now()));
        for peer in peers.iter_mut() {
            peer.receive(world);
        }
    }
    panic!("raw peers and world did not settle in {MAX_ROUNDS} rounds");
}

/// Runs the world and several raw peers together for `duration`.
pub fn run_all_for(world: &mut World, peers: &mut [&mut RawPeer], duration: Duration) {
    let _ = run_all_until(world, peers, duration, |_, _| false);
}
