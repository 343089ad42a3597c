//! Embedding dep2p-core without any async runtime: two nodes on real UDP sockets on 127.0.0.1,
//! driven by a plain loop over `std::net::UdpSocket` (DESIGN §9: the core needs no runtime).
//!
//! They connect (QUIC + libp2p TLS, each side authenticating the other's PeerId), exchange
//! identify, measure a ping, and move 1 MiB over an application stream with a checksum.
//!
//! Run: `cargo run --release -p dep2p-core --example udp_ping`

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use dep2p_core::identity::keypair_from_seed;
use dep2p_core::node::{Datagram, Event, Node, NodeConfig, Output, ReadOutcome, StreamHandle};

const ECHO: &str = "/dep2p/example/sink/1.0.0";
const PAYLOAD: usize = 1024 * 1024;
/// The whole example must finish within this much wall time, or it gives up.
const DEADLINE: Duration = Duration::from_secs(20);

/// This example is an adapter: adapters own the clock and the OS randomness.
#[allow(clippy::disallowed_methods)]
fn now() -> Instant {
    Instant::now()
}

#[allow(clippy::disallowed_methods)]
fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Per-node seed: production code would read 32 bytes from the OS RNG here.
fn seed(byte: u8) -> [u8; 32] {
    let mut seed = [byte; 32];
    seed[0] ^= (unix_now().as_nanos() & 0xff) as u8;
    seed
}

struct Peer {
    node: Node,
    socket: UdpSocket,
    wake: Instant,
    events: Vec<Event>,
}

impl Peer {
    fn new(key_byte: u8) -> std::io::Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_nonblocking(true)?;
        let mut config = NodeConfig::default();
        config.protocol(ECHO);
        let node = Node::new(
            config,
            keypair_from_seed(seed(key_byte)),
            seed(key_byte ^ 0x55),
            now(),
            unix_now(),
        )
        .map_err(std::io::Error::other)?;
        Ok(Self {
            node,
            socket,
            wake: now(),
            events: Vec::new(),
        })
    }

    /// The drain rule: poll until Timeout, sending transmits and keeping events.
    fn drain(&mut self, buf: &mut Vec<u8>) -> std::io::Result<()> {
        loop {
            match self.node.poll_output(buf) {
                Output::Transmit(t) => {
                    let segment = t.segment_size.unwrap_or(t.size).max(1);
                    for chunk in buf[..t.size].chunks(segment) {
                        match self.socket.send_to(chunk, t.destination) {
                            Ok(_) => {}
                            // A full socket buffer is packet loss; QUIC recovers.
                            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                            Err(e) => return Err(e),
                        }
                    }
                }
                Output::Event(event) => self.events.push(event),
                Output::Timeout(at) => {
                    self.wake = at;
                    return Ok(());
                }
            }
        }
    }

    /// Feeds every datagram waiting on the socket, and the timeout if it is due.
    fn pump(&mut self, buf: &mut Vec<u8>) -> std::io::Result<bool> {
        let mut received = false;
        let mut datagram = [0u8; 65_536];
        loop {
            match self.socket.recv_from(&mut datagram) {
                Ok((len, remote)) => {
                    received = true;
                    self.node.handle_datagram(
                        now(),
                        Datagram {
                            remote,
                            local_ip: None,
                            ecn: None,
                            data: BytesMut::from(&datagram[..len]),
                        },
                    );
                    self.drain(buf)?;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if now() >= self.wake {
            self.node.handle_timeout(now());
            self.drain(buf)?;
        }
        Ok(received)
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let started = now();
    let mut buf = Vec::with_capacity(65_536);
    let mut a = Peer::new(1)?;
    let mut b = Peer::new(2)?;
    let b_addr: SocketAddr = b.socket.local_addr()?;
    println!("node A {} on {}", a.node.peer_id(), a.socket.local_addr()?);
    println!("node B {} on {}", b.node.peer_id(), b_addr);

    let connection = a.node.dial(now(), b_addr, b.node.peer_id())?;
    a.drain(&mut buf)?;

    let mut stream: Option<StreamHandle> = None;
    let mut inbound: Option<StreamHandle> = None;
    let mut sent = 0usize;
    let mut received = 0usize;
    let (mut sum_sent, mut sum_received) = (0u64, 0u64);
    let mut pinged = false;
    let mut finished = false;
    let pattern = |i: usize| (i % 251) as u8;

    while now() - started < DEADLINE {
        let progress = a.pump(&mut buf)? | b.pump(&mut buf)?;
        for event in a.events.drain(..).collect::<Vec<_>>() {
            match event {
                Event::ConnectionEstablished { peer, .. } => {
                    println!("A: connected to {peer} (certificate verified)");
                    a.node.ping(now(), connection)?;
                    stream = Some(a.node.open_stream(now(), connection, ECHO)?);
                }
                Event::Identified { info, .. } => {
                    println!(
                        "A: B identifies as {} speaking {:?}",
                        info.agent_version, info.protocols
                    );
                    println!(
                        "A: B observes us at {:?}",
                        info.observed_addr.map(|a| a.to_string())
                    );
                }
                Event::PingSucceeded { rtt, .. } => {
                    println!("A: ping rtt {rtt:?}");
                    pinged = true;
                }
                Event::ConnectionClosed { failure, .. } => {
                    return Err(format!("A: connection closed: {failure}").into());
                }
                Event::StreamOpenFailed { failure, .. } => {
                    return Err(format!("A: stream refused: {failure}").into());
                }
                _ => {}
            }
        }
        if let Some(s) = stream {
            while sent < PAYLOAD {
                let chunk: Vec<u8> = (sent..(sent + 16_384).min(PAYLOAD)).map(pattern).collect();
                match a.node.write(now(), s, &chunk) {
                    Ok(0) | Err(dep2p_core::node::StreamError::Negotiating(_)) => break,
                    Ok(n) => {
                        sum_sent = chunk[..n].iter().fold(sum_sent, |acc, &x| {
                            acc.wrapping_mul(31).wrapping_add(u64::from(x))
                        });
                        sent += n;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            if sent == PAYLOAD && !finished {
                a.node.finish(now(), s)?;
                finished = true;
            }
            a.drain(&mut buf)?;
        }
        for event in b.events.drain(..).collect::<Vec<_>>() {
            if let Event::InboundStream { stream, protocol } = event {
                println!("B: inbound stream for {protocol}");
                inbound = Some(stream);
            }
        }
        if let Some(s) = inbound {
            loop {
                match b.node.read(now(), s, 65_536)? {
                    ReadOutcome::Data(data) => {
                        sum_received = data.iter().fold(sum_received, |acc, &x| {
                            acc.wrapping_mul(31).wrapping_add(u64::from(x))
                        });
                        received += data.len();
                    }
                    ReadOutcome::Blocked => break,
                    ReadOutcome::Finished => {
                        println!(
                            "B: received {received} bytes, checksum {sum_received:016x} (sent {sum_sent:016x})"
                        );
                        if received != PAYLOAD || sum_received != sum_sent {
                            return Err("checksum mismatch".into());
                        }
                        if !pinged {
                            return Err("no ping answer".into());
                        }
                        println!("done in {:?}", now() - started);
                        return Ok(());
                    }
                }
            }
            b.drain(&mut buf)?;
        }
        if !progress {
            let wake = a.wake.min(b.wake);
            let pause = wake
                .saturating_duration_since(now())
                .min(Duration::from_millis(1));
            std::thread::sleep(pause);
        }
    }
    Err(format!("gave up after {DEADLINE:?}").into())
}

fn main() {
    if let Err(error) = run() {
        eprintln!("udp_ping failed: {error}");
        std::process::exit(1);
    }
}
