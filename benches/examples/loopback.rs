//! Loopback comparison of dep2p and rust-libp2p relays (DESIGN §10), in one run:
//!
//! ```text
//! cargo run --release -p dep2p-benches --example loopback -- --runs 5
//! ```
//!
//! For each implementation and each run, a fresh relay runs as a child process of this program
//! (the same binary, `--serve-relay ours|libp2p`), on 127.0.0.1. The clients run in this
//! process. Measured:
//!
//! - **throughput**: one stream from a dialer to a target, `--bytes` bytes, direct and through
//!   the relay (the same two peers' implementation, a fresh dialer for each transfer); the
//!   receiver counts the bytes and answers with the count when the stream ends; and the CPU
//!   time (utime + stime) of the relay and of the two endpoints (this process) during the
//!   relayed transfer, per MiB forwarded;
//! - **reservation latency**: `--latency-samples` fresh clients in turn, each timed from its
//!   dial (QUIC + TLS handshake) to the accepted RESERVE; p50 and p99;
//! - **reservation setup**: `--reservations` clients reserving at once; reservations per
//!   second, and the relay's CPU time (utime + stime from `/proc/<pid>/stat`) per reservation;
//! - **memory**: the relay's `VmRSS` (`/proc/<pid>/status`) idle, then with the reservations
//!   held (KiB per reservation), then with `--circuits` circuits each carrying one open stream
//!   that moved 16 KiB each way (KiB per circuit);
//! - **keep-alive**: the relay's CPU share over `--idle-secs` with the reservations held.
//!
//! Every figure is the median over `--runs` runs, shown with its range (min–max).
//! Both relays have per-IP rate limits off and circuit limits raised: every client comes from
//! 127.0.0.1. Numbers depend on the machine; no test asserts them.

#![allow(missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, relay};
use tokio::sync::oneshot;

/// The bench sink protocol, served by both implementations' targets.
const SINK: &str = "/dep2p/bench-sink/1.0.0";
const SINK_PROTOCOL: StreamProtocol = StreamProtocol::new(SINK);
/// The circuit-memory probe: everything echoed back, the stream held open.
const ECHO: &str = "/dep2p/bench-echo/1.0.0";
const ECHO_PROTOCOL: StreamProtocol = StreamProtocol::new(ECHO);
/// Bytes each circuit moves each way before it is held open for the memory reading.
const CIRCUIT_BYTES: usize = 16 * 1024;
const STEP: Duration = Duration::from_secs(60);
/// Circuits one dialer opens in the per-circuit memory reading (a relay's default per-peer
/// circuit limit is 16; a real relay serves many dialers).
const CIRCUITS_PER_DIALER: usize = 10;

#[derive(Parser, Debug, Clone)]
#[command(about = "dep2p vs rust-libp2p relay on loopback: throughput, memory, reservation cost")]
struct Args {
    /// Runs per implementation (medians and ranges over them).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Bytes per throughput transfer.
    #[arg(long, default_value_t = 64 * 1024 * 1024)]
    bytes: usize,
    /// Reservations held at once (the memory and setup-rate measurement).
    #[arg(long, default_value_t = 1000)]
    reservations: usize,
    /// Clients reserving at the same time while setting the reservations up.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Active circuits for the per-circuit memory reading.
    #[arg(long, default_value_t = 100)]
    circuits: usize,
    /// Sequential fresh-client reservations timed for the latency percentiles.
    #[arg(long, default_value_t = 100)]
    latency_samples: usize,
    /// Seconds the relay CPU is watched with the reservations idle (keep-alives).
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// Only this implementation (`ours` or `libp2p`).
    #[arg(long)]
    only: Option<String>,
    /// Streams per connection our relay allows (`NodeConfig::max_streams_per_connection`);
    /// default: the core's default.
    #[arg(long)]
    relay_streams: Option<u32>,
    /// Streams a peer may open at first on our relay (`NodeConfig::initial_inbound_streams`);
    /// default: the core's default.
    #[arg(long)]
    relay_initial_streams: Option<u32>,
    /// Internal: run a relay of this implementation and print its address.
    #[arg(long, hide = true)]
    serve_relay: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Imp {
    Ours,
    Libp2p,
}

impl Imp {
    fn name(self) -> &'static str {
        match self {
            Imp::Ours => "ours",
            Imp::Libp2p => "libp2p",
        }
    }
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Some(which) = args.serve_relay.clone() {
        runtime.block_on(serve_relay(
            &which,
            args.relay_streams,
            args.relay_initial_streams,
        ));
        return;
    }
    let imps: Vec<Imp> = match args.only.as_deref() {
        Some("ours") => vec![Imp::Ours],
        Some("libp2p") => vec![Imp::Libp2p],
        _ => vec![Imp::Ours, Imp::Libp2p],
    };
    let mut results: Vec<(Imp, Vec<Run>)> = imps.iter().map(|i| (*i, Vec::new())).collect();
    for run in 0..args.runs {
        for (imp, runs) in &mut results {
            eprintln!("-- run {} of {}: {}", run + 1, args.runs, imp.name());
            // A run that fails (a client timing out on a loaded machine) is retried, twice.
            for attempt in 0..3 {
                match runtime.block_on(measure(*imp, &args)) {
                    Ok(r) => {
                        eprintln!("   {r:?}");
                        runs.push(r);
                        break;
                    }
                    Err(e) => eprintln!("   attempt {} failed: {e}", attempt + 1),
                }
            }
        }
    }
    report(&args, &results);
    runtime.shutdown_timeout(Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------------
// one run
// ---------------------------------------------------------------------------------------------

/// One throughput reading: both paths, and the CPU time the relay and the two endpoints spent
/// during the relayed transfer.
struct Throughput {
    direct_mib_s: f64,
    relayed_mib_s: f64,
    relay_cpu_ms_per_mib: f64,
    endpoints_cpu_ms_per_mib: f64,
}

impl Throughput {
    /// From the direct rate, the relayed rate with the CPU time of the relay and of this
    /// process (both endpoints) during that transfer, and the bytes each moved.
    fn new(
        direct_mib_s: f64,
        (relayed_mib_s, (relay_cpu, endpoints_cpu)): (f64, (Duration, Duration)),
        bytes: usize,
    ) -> Self {
        let mib = (bytes as f64 / (1024.0 * 1024.0)).max(f64::MIN_POSITIVE);
        Self {
            direct_mib_s,
            relayed_mib_s,
            relay_cpu_ms_per_mib: relay_cpu.as_secs_f64() * 1e3 / mib,
            endpoints_cpu_ms_per_mib: endpoints_cpu.as_secs_f64() * 1e3 / mib,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Run {
    direct_mib_s: f64,
    relayed_mib_s: f64,
    /// The relay's CPU time (utime + stime) per MiB forwarded during the relayed transfer.
    relay_cpu_ms_per_mib: f64,
    /// The same for dialer and target together (this process).
    endpoints_cpu_ms_per_mib: f64,
    latency_p50_ms: f64,
    latency_p99_ms: f64,
    setup_per_s: f64,
    cpu_ms_per_reservation: f64,
    rss_idle_kib: f64,
    kib_per_reservation: f64,
    rss_reserved_kib: f64,
    kib_per_circuit: f64,
    keepalive_core_pct: f64,
}

async fn measure(imp: Imp, args: &Args) -> Result<Run, String> {
    // Throughput, direct and relayed, between the same two peers; a relay of its own, so that
    // the buffers of the transfer do not blur the memory readings below.
    let mut run = Run::default();
    {
        let relay = RelayProcess::spawn(imp, args.relay_streams, args.relay_initial_streams)?;
        let throughput = match imp {
            Imp::Ours => ours::throughput(&relay, args.bytes).await?,
            Imp::Libp2p => theirs::throughput(&relay, args.bytes).await?,
        };
        run.direct_mib_s = throughput.direct_mib_s;
        run.relayed_mib_s = throughput.relayed_mib_s;
        run.relay_cpu_ms_per_mib = throughput.relay_cpu_ms_per_mib;
        run.endpoints_cpu_ms_per_mib = throughput.endpoints_cpu_ms_per_mib;
    }

    let relay = RelayProcess::spawn(imp, args.relay_streams, args.relay_initial_streams)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    run.rss_idle_kib = relay.rss_kib()?;

    // Reservation latency: fresh clients one after another (they stay, and count below).
    let mut held: Vec<Client> = Vec::new();
    let mut latencies = Vec::new();
    for _ in 0..args.latency_samples {
        let (client, took) = reserve_one(imp, &relay).await?;
        latencies.push(took.as_secs_f64() * 1e3);
        held.push(client);
    }
    latencies.sort_by(f64::total_cmp);
    run.latency_p50_ms = percentile(&latencies, 0.50);
    run.latency_p99_ms = percentile(&latencies, 0.99);

    // Setup rate and relay CPU per reservation: the rest of the reservations, concurrently.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = relay.rss_kib()?;
    let want = args.reservations.saturating_sub(held.len());
    let cpu_before = relay.cpu_time()?;
    let started = Instant::now();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(want);
    for _ in 0..want {
        let permit = std::sync::Arc::clone(&semaphore);
        let (addr, peer) = (relay.addr, relay.peer.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit.acquire_owned().await.map_err(|e| e.to_string())?;
            reserve_one_at(imp, addr, &peer).await
        }));
    }
    for task in tasks {
        let (client, _) = task.await.map_err(|e| e.to_string())??;
        held.push(client);
    }
    let took = started.elapsed();
    let cpu = relay.cpu_time()? - cpu_before;
    run.setup_per_s = want as f64 / took.as_secs_f64();
    run.cpu_ms_per_reservation = cpu.as_secs_f64() * 1e3 / want.max(1) as f64;
    tokio::time::sleep(Duration::from_secs(2)).await;
    run.rss_reserved_kib = relay.rss_kib()?;
    // Per reservation added concurrently (after the latency samples' handshakes).
    run.kib_per_reservation = (run.rss_reserved_kib - rss_before) / want.max(1) as f64;

    // Keep-alive cost with everything idle.
    let cpu_before = relay.cpu_time()?;
    let idle_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let cpu = relay.cpu_time()? - cpu_before;
    run.keepalive_core_pct = 100.0 * cpu.as_secs_f64() / idle_start.elapsed().as_secs_f64();

    drop(held);
    drop(relay);

    // Active circuits, on a fresh relay (freed handshake memory would be reused otherwise).
    if args.circuits > 0 {
        let relay = RelayProcess::spawn(imp, args.relay_streams, args.relay_initial_streams)?;
        let (rss_base, circuits): (f64, Box<dyn std::any::Any + Send>) = match imp {
            Imp::Ours => {
                let c = ours::circuits(&relay, args.circuits).await?;
                (c.rss_before, Box::new(c))
            }
            Imp::Libp2p => {
                let c = theirs::circuits(&relay, args.circuits).await?;
                (c.rss_before, Box::new(c))
            }
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_after = relay.rss_kib()?;
        run.kib_per_circuit = (rss_after - rss_base) / args.circuits as f64;
        drop(circuits);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(run)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A client holding a reservation; dropping it ends the client.
enum Client {
    /// Held only to keep the node running.
    Ours(#[allow(dead_code)] dep2p_tokio::NodeHandle),
    Libp2p(tokio::task::JoinHandle<()>),
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Client::Libp2p(task) = self {
            task.abort();
        }
    }
}

async fn reserve_one(imp: Imp, relay: &RelayProcess) -> Result<(Client, Duration), String> {
    reserve_one_at(imp, relay.addr, &relay.peer).await
}

async fn reserve_one_at(
    imp: Imp,
    addr: SocketAddr,
    peer: &str,
) -> Result<(Client, Duration), String> {
    tokio::time::timeout(STEP, async {
        match imp {
            Imp::Ours => ours::reserve(addr, peer).await,
            Imp::Libp2p => theirs::reserve(addr, peer).await,
        }
    })
    .await
    .map_err(|_| "reservation timed out".to_owned())?
}

// ---------------------------------------------------------------------------------------------
// the relay process
// ---------------------------------------------------------------------------------------------

struct RelayProcess {
    child: Child,
    addr: SocketAddr,
    /// The relay's PeerId, as text (both crates print the same base58).
    peer: String,
}

impl RelayProcess {
    fn spawn(imp: Imp, streams: Option<u32>, initial: Option<u32>) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // `DEP2P_BENCH_RELAY_PREFIX="valgrind --tool=massif"` runs the relay under a profiler.
        let prefix = std::env::var("DEP2P_BENCH_RELAY_PREFIX").unwrap_or_default();
        let mut words = prefix.split_whitespace();
        let mut command = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        command.args(["--serve-relay", imp.name()]);
        if let Some(streams) = streams {
            command.args(["--relay-streams", &streams.to_string()]);
        }
        if let Some(initial) = initial {
            command.args(["--relay-initial-streams", &initial.to_string()]);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn relay: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        let mut parts = line.split_whitespace();
        let (Some("READY"), Some(addr), Some(peer)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("relay said {line:?}"));
        };
        Ok(Self {
            addr: addr.parse().map_err(|_| "bad relay address")?,
            peer: peer.to_owned(),
            child,
        })
    }

    fn rss_kib(&self) -> Result<f64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| e.to_string())?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .ok_or_else(|| "no VmRSS".to_owned())
    }

    /// utime + stime of the relay process.
    fn cpu_time(&self) -> Result<Duration, String> {
        process_cpu_time(self.child.id())
    }
}

/// utime + stime of this process: the clients' side of a measurement (dialer and target of a
/// transfer both run here).
fn own_cpu_time() -> Result<Duration, String> {
    process_cpu_time(std::process::id())
}

/// utime + stime of process `pid`, from `/proc/<pid>/stat`.
fn process_cpu_time(pid: u32) -> Result<Duration, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').ok_or("bad stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().map_err(|e| e.to_string())?
        + fields[12].parse::<u64>().map_err(|e| e.to_string())?;
    // The kernel reports USER_HZ = 100 ticks per second on Linux.
    Ok(Duration::from_millis(ticks * 10))
}

impl Drop for RelayProcess {
    fn drop(&mut self) {
        // Closing its stdin asks the relay to exit (so a profiler wrapping it can write its
        // report); kill it if it has not after a few seconds.
        drop(self.child.stdin.take());
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn serve_relay(which: &str, streams: Option<u32>, initial: Option<u32>) {
    let (addr, peer, guard): (SocketAddr, String, Box<dyn std::any::Any>) = match which {
        "ours" => {
            let node = ours::relay(streams, initial);
            (
                node.local_addr(),
                node.peer_id().to_string(),
                Box::new(node),
            )
        }
        "libp2p" => {
            let (addr, peer, task) = theirs::relay().await;
            (addr, peer, Box::new(task))
        }
        other => panic!("unknown relay implementation {other}"),
    };
    println!("READY {addr} {peer}");
    // Run until the parent closes our stdin (or kills us).
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        let _ = std::io::stdin().read_line(&mut sink);
    })
    .await;
    drop(guard);
}

// ---------------------------------------------------------------------------------------------
// dep2p
// ---------------------------------------------------------------------------------------------

mod ours {
    use super::*;
    use dep2p_core::identity::{PeerId, keypair_from_seed};
    use dep2p_core::node::NodeConfig;
    use dep2p_core::relay::limits::RateLimit;
    use dep2p_core::relay::limits::RelayLimits;
    use dep2p_tokio::{NodeHandle, NodeOptions, Stream};

    const LOOPBACK: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

    fn seed() -> [u8; 32] {
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(16) {
            chunk.copy_from_slice(&rand_u128().to_le_bytes());
        }
        seed
    }

    fn rand_u128() -> u128 {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        );
        let a = h.finish();
        h.write_u64(a);
        (u128::from(a) << 64) | u128::from(h.finish())
    }

    pub fn relay(streams: Option<u32>, initial: Option<u32>) -> NodeHandle {
        let limits = RelayLimits::default()
            .max_reservations(0)
            .max_reservations_per_ip(0)
            .reservation_rate_per_peer(RateLimit::unlimited())
            .reservation_rate_per_ip(RateLimit::unlimited())
            .circuit_rate_per_peer(RateLimit::unlimited())
            .circuit_rate_per_ip(RateLimit::unlimited())
            .max_circuits(100_000)
            .max_circuits_per_peer(100_000)
            .max_circuit_bytes(1 << 40)
            .max_circuit_duration(Duration::from_secs(3600))
            .rate_limiter_max_keys(1 << 20)
            .connection_high_watermark(0);
        let mut config = NodeConfig::default();
        config.relay_server(Some(limits)).max_connections(100_000);
        if let Some(streams) = streams {
            config.max_streams_per_connection(streams);
        }
        if let Some(initial) = initial {
            config.initial_inbound_streams(initial);
        }
        let node = NodeHandle::spawn(NodeOptions::new(
            config,
            keypair_from_seed(seed()),
            LOOPBACK,
        ))
        .expect("relay starts");
        // As `dep2p relay`: nothing reads the relay's events.
        node.discard_events();
        node
    }

    fn peer(text: &str) -> Result<PeerId, String> {
        text.parse().map_err(|_| format!("bad peer id {text}"))
    }

    fn client() -> Result<NodeHandle, String> {
        let mut config = NodeConfig::default();
        config.protocol(SINK).protocol(ECHO);
        NodeHandle::spawn(NodeOptions::new(
            config,
            keypair_from_seed(seed()),
            LOOPBACK,
        ))
        .map_err(|e| e.to_string())
    }

    pub async fn reserve(addr: SocketAddr, relay: &str) -> Result<(Client, Duration), String> {
        let relay = peer(relay)?;
        let node = client()?;
        let started = Instant::now();
        let connection = node.dial(addr, relay).await.map_err(|e| e.to_string())?;
        node.reserve(connection)
            .await
            .map_err(|e| format!("reserve: {e}"))?;
        Ok((Client::Ours(node), started.elapsed()))
    }

    /// A target: reserved on the relay, serving the sink and echoing circuits' streams.
    async fn target(addr: SocketAddr, relay: PeerId) -> Result<NodeHandle, String> {
        let node = client()?;
        let connection = node.dial(addr, relay).await.map_err(|e| e.to_string())?;
        node.reserve(connection)
            .await
            .map_err(|e| format!("reserve: {e}"))?;
        let server = node.clone();
        tokio::spawn(async move {
            while let Some(inbound) = server.accept().await {
                if inbound.protocol == ECHO {
                    tokio::spawn(serve_echo(inbound.stream));
                } else {
                    tokio::spawn(serve_sink(inbound.stream));
                }
            }
        });
        Ok(node)
    }

    /// Echoes everything back until the peer finishes.
    async fn serve_echo(stream: Stream) {
        while let Ok(Some(chunk)) = stream.read(256 * 1024).await {
            if stream.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = stream.finish().await;
    }

    /// Reads to the end, then answers with the byte count (8 bytes, little endian).
    async fn serve_sink(stream: Stream) {
        let mut count = 0u64;
        while let Ok(Some(chunk)) = stream.read(256 * 1024).await {
            count += chunk.len() as u64;
        }
        let _ = stream.write_all(count.to_le_bytes().to_vec()).await;
        let _ = stream.finish().await;
    }

    async fn send(
        node: &NodeHandle,
        connection: dep2p_core::node::ConnectionId,
        bytes: usize,
    ) -> Result<f64, String> {
        let stream = node
            .open_stream(connection, SINK)
            .await
            .map_err(|e| e.to_string())?;
        let chunk = bytes::Bytes::from(vec![0x5a; 256 * 1024]);
        let started = Instant::now();
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            stream
                .write_all(chunk.slice(..n))
                .await
                .map_err(|e| e.to_string())?;
            sent += n;
        }
        stream.finish().await.map_err(|e| e.to_string())?;
        let answer = stream.read_to_end(8).await.map_err(|e| e.to_string())?;
        let elapsed = started.elapsed();
        let counted = u64::from_le_bytes(
            answer
                .try_into()
                .map_err(|a: Vec<u8>| format!("bad sink answer of {} bytes", a.len()))?,
        );
        if counted != bytes as u64 {
            return Err(format!("sink counted {counted} of {bytes}"));
        }
        Ok(bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64())
    }

    pub async fn throughput(relay: &RelayProcess, bytes: usize) -> Result<Throughput, String> {
        let relay_peer = peer(&relay.peer)?;
        let target = target(relay.addr, relay_peer).await?;
        let direct = {
            let dialer = client()?;
            let c = dialer
                .dial(target.local_addr(), target.peer_id())
                .await
                .map_err(|e| e.to_string())?;
            let r = send(&dialer, c, bytes).await?;
            dialer.shutdown().await;
            r
        };
        let relayed = {
            let dialer = client()?;
            let to_relay = dialer
                .dial(relay.addr, relay_peer)
                .await
                .map_err(|e| e.to_string())?;
            let c = dialer
                .dial_through_relay(to_relay, target.peer_id())
                .await
                .map_err(|e| e.to_string())?;
            let cpu_before = (relay.cpu_time()?, own_cpu_time()?);
            let r = send(&dialer, c, bytes).await?;
            let cpu = (
                relay.cpu_time()? - cpu_before.0,
                own_cpu_time()? - cpu_before.1,
            );
            dialer.shutdown().await;
            (r, cpu)
        };
        target.shutdown().await;
        Ok(Throughput::new(direct, relayed, bytes))
    }

    pub struct Circuits {
        pub rss_before: f64,
        _nodes: Vec<NodeHandle>,
        _streams: Vec<Stream>,
    }

    pub async fn circuits(relay: &RelayProcess, n: usize) -> Result<Circuits, String> {
        let relay_peer = peer(&relay.peer)?;
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(target(relay.addr, relay_peer).await?);
        }
        let mut dialers = Vec::new();
        for _ in 0..n.div_ceil(CIRCUITS_PER_DIALER) {
            let dialer = client()?;
            let to_relay = dialer
                .dial(relay.addr, relay_peer)
                .await
                .map_err(|e| e.to_string())?;
            dialers.push((dialer, to_relay));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_before = relay.rss_kib()?;
        let mut streams = Vec::new();
        for (i, target) in nodes.iter().enumerate() {
            let (dialer, to_relay) = &dialers[i / CIRCUITS_PER_DIALER];
            let c = dialer
                .dial_through_relay(*to_relay, target.peer_id())
                .await
                .map_err(|e| e.to_string())?;
            let stream = dialer
                .open_stream(c, ECHO)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .write_all(vec![0x5a; CIRCUIT_BYTES])
                .await
                .map_err(|e| e.to_string())?;
            let mut got = 0;
            while got < CIRCUIT_BYTES {
                match stream
                    .read(CIRCUIT_BYTES)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Some(chunk) => got += chunk.len(),
                    None => return Err("echo ended early".into()),
                }
            }
            streams.push(stream);
        }
        nodes.extend(dialers.into_iter().map(|(d, _)| d));
        Ok(Circuits {
            rss_before,
            _nodes: nodes,
            _streams: streams,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// rust-libp2p
// ---------------------------------------------------------------------------------------------

mod theirs {
    use super::*;
    use libp2p::identity;
    use libp2p::multiaddr::Protocol;
    use libp2p::swarm::NetworkBehaviour;
    use libp2p::{PeerId, Swarm};

    #[derive(NetworkBehaviour)]
    pub struct ClientBehaviour {
        relay_client: relay::client::Behaviour,
        stream: libp2p_stream::Behaviour,
    }

    fn quic_addr(addr: SocketAddr) -> Multiaddr {
        Multiaddr::empty()
            .with(Protocol::from(addr.ip()))
            .with(Protocol::Udp(addr.port()))
            .with(Protocol::QuicV1)
    }

    fn relay_addr(addr: SocketAddr, peer: &str) -> Result<Multiaddr, String> {
        let peer: PeerId = peer.parse().map_err(|_| "bad peer id")?;
        Ok(quic_addr(addr).with(Protocol::P2p(peer)))
    }

    pub async fn relay() -> (SocketAddr, String, tokio::task::JoinHandle<()>) {
        let key = identity::Keypair::generate_ed25519();
        let config = relay::Config {
            max_reservations: 1_000_000,
            max_reservations_per_peer: 1_000_000,
            reservation_duration: Duration::from_secs(3600),
            reservation_rate_limiters: Vec::new(),
            max_circuits: 100_000,
            max_circuits_per_peer: 100_000,
            max_circuit_duration: Duration::from_secs(3600),
            max_circuit_bytes: 1 << 40,
            circuit_src_rate_limiters: Vec::new(),
        };
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_quic()
            .with_behaviour(|key| relay::Behaviour::new(key.public().to_peer_id(), config))
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("valid"))
            .expect("listen");
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        // rust-libp2p's relay serves HOP only with a confirmed external address.
        swarm.add_external_address(addr.clone());
        let peer = swarm.local_peer_id().to_string();
        let socket = socket_of(&addr);
        let task = tokio::spawn(async move {
            loop {
                let _ = swarm.select_next_some().await;
            }
        });
        (socket, peer, task)
    }

    fn socket_of(addr: &Multiaddr) -> SocketAddr {
        let mut ip = None;
        let mut port = None;
        for p in addr.iter() {
            match p {
                Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
                Protocol::Udp(p) => port = Some(p),
                _ => {}
            }
        }
        SocketAddr::new(ip.expect("ip4"), port.expect("udp"))
    }

    fn client() -> Swarm<ClientBehaviour> {
        libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_quic()
            .with_relay_client(libp2p::tls::Config::new, libp2p::yamux::Config::default)
            .expect("relay client transport")
            .with_behaviour(|_, relay_client| ClientBehaviour {
                relay_client,
                stream: libp2p_stream::Behaviour::new(),
            })
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
            .build()
    }

    /// Listens on the relay's circuit address and drives the swarm until the reservation is
    /// accepted; then keeps driving it on a task. Returns the task and the swarm's stream
    /// control.
    async fn reserved(
        addr: SocketAddr,
        relay: &str,
        direct: bool,
    ) -> Result<
        (
            tokio::task::JoinHandle<()>,
            libp2p_stream::Control,
            PeerId,
            Duration,
            Option<Multiaddr>,
        ),
        String,
    > {
        let mut swarm = client();
        let control = swarm.behaviour().stream.new_control();
        let me = *swarm.local_peer_id();
        let mut direct_addr = None;
        if direct {
            swarm
                .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("valid"))
                .map_err(|e| e.to_string())?;
            direct_addr = loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    break Some(address.with(Protocol::P2p(me)));
                }
            };
        }
        let circuit = relay_addr(addr, relay)?.with(Protocol::P2pCircuit);
        let started = Instant::now();
        swarm.listen_on(circuit).map_err(|e| e.to_string())?;
        let (tx, rx) = oneshot::channel::<Result<(), String>>();
        let task = tokio::spawn(async move {
            let mut tx = Some(tx);
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::Behaviour(ClientBehaviourEvent::RelayClient(
                        relay::client::Event::ReservationReqAccepted { .. },
                    )) => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    SwarmEvent::ListenerClosed { reason, .. } => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(Err(format!("listener closed: {reason:?}")));
                        }
                    }
                    _ => {}
                }
            }
        });
        rx.await.map_err(|_| "client task ended".to_owned())??;
        let took = started.elapsed();
        Ok((task, control, me, took, direct_addr))
    }

    pub async fn reserve(addr: SocketAddr, relay: &str) -> Result<(Client, Duration), String> {
        let (task, _control, _, took, _) = reserved(addr, relay, false).await?;
        Ok((Client::Libp2p(task), took))
    }

    /// A reserved target serving the sink (and the circuit echo probe).
    async fn target(
        addr: SocketAddr,
        relay: &str,
        direct: bool,
    ) -> Result<(Client, PeerId, Option<Multiaddr>), String> {
        let (task, mut control, me, _, direct_addr) = reserved(addr, relay, direct).await?;
        let mut incoming = control.accept(SINK_PROTOCOL).map_err(|e| e.to_string())?;
        let mut echoes = control.accept(ECHO_PROTOCOL).map_err(|e| e.to_string())?;
        let server = tokio::spawn(async move {
            loop {
                tokio::select! {
                    Some((_peer, stream)) = incoming.next() => {
                        tokio::spawn(serve_sink(stream));
                    }
                    Some((_peer, stream)) = echoes.next() => {
                        tokio::spawn(serve_echo(stream));
                    }
                    else => break,
                }
            }
        });
        // One handle ends both tasks.
        let both = tokio::spawn(async move {
            let _guard = AbortOnDrop(server);
            let _ = task.await;
        });
        Ok((Client::Libp2p(both), me, direct_addr))
    }

    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }

    async fn serve_echo(stream: libp2p::Stream) {
        let (mut reader, mut writer) = stream.split();
        let _ = futures::io::copy(&mut reader, &mut writer).await;
        let _ = writer.close().await;
    }

    async fn serve_sink(stream: libp2p::Stream) {
        let (mut reader, mut writer) = stream.split();
        let mut buf = vec![0u8; 256 * 1024];
        let mut count = 0u64;
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => count += n as u64,
            }
        }
        let _ = writer.write_all(&count.to_le_bytes()).await;
        let _ = writer.close().await;
    }

    /// A dialer swarm on its own task, connected to `to`; returns its control and task.
    async fn connected_dialer(
        to: Multiaddr,
        peer: PeerId,
    ) -> Result<(libp2p_stream::Control, AbortOnDrop), String> {
        let mut swarm = client();
        let control = swarm.behaviour().stream.new_control();
        swarm.dial(to).map_err(|e| e.to_string())?;
        let (tx, rx) = oneshot::channel::<Result<(), String>>();
        let task = tokio::spawn(async move {
            let mut tx = Some(tx);
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(Err(error.to_string()));
                        }
                    }
                    _ => {}
                }
            }
        });
        rx.await.map_err(|_| "dialer task ended".to_owned())??;
        Ok((control, AbortOnDrop(task)))
    }

    async fn send(
        control: &mut libp2p_stream::Control,
        peer: PeerId,
        bytes: usize,
    ) -> Result<f64, String> {
        let stream = control
            .open_stream(peer, SINK_PROTOCOL)
            .await
            .map_err(|e| e.to_string())?;
        let (mut reader, mut writer) = stream.split();
        let chunk = vec![0x5a; 256 * 1024];
        let started = Instant::now();
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            writer
                .write_all(&chunk[..n])
                .await
                .map_err(|e| e.to_string())?;
            sent += n;
        }
        writer.close().await.map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        reader
            .read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let elapsed = started.elapsed();
        let counted = u64::from_le_bytes(
            answer
                .try_into()
                .map_err(|a: Vec<u8>| format!("bad sink answer of {} bytes", a.len()))?,
        );
        if counted != bytes as u64 {
            return Err(format!("sink counted {counted} of {bytes}"));
        }
        Ok(bytes as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64())
    }

    pub async fn throughput(relay: &RelayProcess, bytes: usize) -> Result<Throughput, String> {
        // The target listens on 127.0.0.1 directly and on the relay's circuit address.
        let (target, target_peer, direct_addr) = target(relay.addr, &relay.peer, true).await?;
        let direct = {
            let to = direct_addr.ok_or("no direct address")?;
            let (mut control, _task) = connected_dialer(to, target_peer).await?;
            send(&mut control, target_peer, bytes).await?
        };
        let relayed = {
            let to = relay_addr(relay.addr, &relay.peer)?
                .with(Protocol::P2pCircuit)
                .with(Protocol::P2p(target_peer));
            let (mut control, _task) = connected_dialer(to, target_peer).await?;
            let cpu_before = (relay.cpu_time()?, own_cpu_time()?);
            let r = send(&mut control, target_peer, bytes).await?;
            let cpu = (
                relay.cpu_time()? - cpu_before.0,
                own_cpu_time()? - cpu_before.1,
            );
            (r, cpu)
        };
        drop(target);
        Ok(Throughput::new(direct, relayed, bytes))
    }

    pub struct Circuits {
        pub rss_before: f64,
        _targets: Vec<Client>,
        _dialers: Vec<Dialer>,
        _streams: Vec<libp2p::Stream>,
    }

    pub async fn circuits(relay: &RelayProcess, n: usize) -> Result<Circuits, String> {
        let mut targets = Vec::new();
        let mut peers = Vec::new();
        for _ in 0..n {
            let (t, p, _) = target(relay.addr, &relay.peer, false).await?;
            targets.push(t);
            peers.push(p);
        }
        // Dialer swarms, each connected to the relay first.
        let relay_peer: PeerId = relay.peer.parse().map_err(|_| "bad peer id")?;
        let mut dialers = Vec::new();
        for _ in 0..n.div_ceil(CIRCUITS_PER_DIALER) {
            dialers
                .push(dialer_with_calls(relay_addr(relay.addr, &relay.peer)?, relay_peer).await?);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rss_before = relay.rss_kib()?;
        let mut streams = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            let (control, _, calls) = &mut dialers[i / CIRCUITS_PER_DIALER];
            let to = relay_addr(relay.addr, &relay.peer)?
                .with(Protocol::P2pCircuit)
                .with(Protocol::P2p(*peer));
            let (tx, rx) = oneshot::channel();
            let peer = *peer;
            calls
                .send(Box::new(move |swarm: &mut Swarm<ClientBehaviour>| {
                    let _ = tx.send(swarm.dial(to).map_err(|e| e.to_string()));
                    peer
                }))
                .map_err(|_| "dialer gone")?;
            rx.await.map_err(|_| "dialer gone")??;
            let mut stream = control
                .open_stream(peer, ECHO_PROTOCOL)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .write_all(&vec![0x5a; CIRCUIT_BYTES])
                .await
                .map_err(|e| e.to_string())?;
            stream.flush().await.map_err(|e| e.to_string())?;
            let mut back = vec![0u8; CIRCUIT_BYTES];
            stream
                .read_exact(&mut back)
                .await
                .map_err(|e| e.to_string())?;
            streams.push(stream);
        }
        Ok(Circuits {
            rss_before,
            _targets: targets,
            _dialers: dialers,
            _streams: streams,
        })
    }

    type Dialer = (
        libp2p_stream::Control,
        AbortOnDrop,
        tokio::sync::mpsc::UnboundedSender<Call>,
    );
    type Call = Box<dyn FnOnce(&mut Swarm<ClientBehaviour>) -> PeerId + Send>;

    async fn dialer_with_calls(
        to: Multiaddr,
        peer: PeerId,
    ) -> Result<
        (
            libp2p_stream::Control,
            AbortOnDrop,
            tokio::sync::mpsc::UnboundedSender<Call>,
        ),
        String,
    > {
        let mut swarm = client();
        let control = swarm.behaviour().stream.new_control();
        swarm.dial(to).map_err(|e| e.to_string())?;
        let (calls, mut calls_rx) = tokio::sync::mpsc::unbounded_channel::<Call>();
        let (tx, rx) = oneshot::channel::<Result<(), String>>();
        let task = tokio::spawn(async move {
            let mut tx = Some(tx);
            loop {
                tokio::select! {
                    call = calls_rx.recv() => match call {
                        Some(call) => { let _ = call(&mut swarm); }
                        None => break,
                    },
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer => {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(Ok(()));
                            }
                        }
                        SwarmEvent::OutgoingConnectionError { error, .. } => {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(Err(error.to_string()));
                            }
                        }
                        _ => {}
                    }
                }
            }
        });
        rx.await.map_err(|_| "dialer task ended".to_owned())??;
        Ok((control, AbortOnDrop(task), calls))
    }
}

// ---------------------------------------------------------------------------------------------
// the report
// ---------------------------------------------------------------------------------------------

fn stats(values: &[f64]) -> (f64, f64, f64) {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, v[0], v[v.len() - 1])
}

fn report(args: &Args, results: &[(Imp, Vec<Run>)]) {
    type Field = fn(&Run) -> f64;
    let rows: Vec<(&str, Field, &str)> = vec![
        ("direct throughput (MiB/s)", |r| r.direct_mib_s, ""),
        (
            "relayed throughput (MiB/s)",
            |r| r.relayed_mib_s,
            ">= 1.5x libp2p",
        ),
        (
            "relayed / direct (%)",
            |r| 100.0 * r.relayed_mib_s / r.direct_mib_s,
            ">= 70 %",
        ),
        (
            "relay CPU per relayed MiB (ms)",
            |r| r.relay_cpu_ms_per_mib,
            "",
        ),
        (
            "dialer + target CPU per relayed MiB (ms)",
            |r| r.endpoints_cpu_ms_per_mib,
            "",
        ),
        ("reservation latency p50 (ms)", |r| r.latency_p50_ms, ""),
        ("reservation latency p99 (ms)", |r| r.latency_p99_ms, ""),
        ("reservation setup rate (/s)", |r| r.setup_per_s, ""),
        (
            "relay CPU per reservation (ms)",
            |r| r.cpu_ms_per_reservation,
            "<= 0.33 ms",
        ),
        ("relay RSS idle (KiB)", |r| r.rss_idle_kib, ""),
        (
            "relay RSS with reservations (KiB)",
            |r| r.rss_reserved_kib,
            "",
        ),
        (
            "KiB per idle reservation",
            |r| r.kib_per_reservation,
            "<= 16 KiB",
        ),
        ("KiB per active circuit", |r| r.kib_per_circuit, "<= 64 KiB"),
        (
            "keep-alive CPU, reservations idle (% core)",
            |r| r.keepalive_core_pct,
            "",
        ),
    ];
    println!();
    println!(
        "== dep2p vs rust-libp2p relay on 127.0.0.1: {} runs, {} MiB transfers, {} reservations ({} at once), {} circuits, {} latency samples",
        args.runs,
        args.bytes / (1024 * 1024),
        args.reservations,
        args.concurrency,
        args.circuits,
        args.latency_samples
    );
    println!("   median [min – max] over the runs; ratio = ours / theirs (medians)");
    println!(
        "{:<44} {:>28} {:>28} {:>8}  DESIGN §10",
        "measure", "dep2p", "rust-libp2p", "ratio"
    );
    let find = |imp: Imp| {
        results
            .iter()
            .find(|(i, _)| *i == imp)
            .map(|(_, r)| r.as_slice())
    };
    for (name, field, target) in rows {
        let cell = |runs: Option<&[Run]>| -> (String, f64) {
            match runs {
                Some(runs) if !runs.is_empty() => {
                    let values: Vec<f64> = runs.iter().map(field).collect();
                    let (m, lo, hi) = stats(&values);
                    // Sub-unit readings (ms per reservation or per MiB) get two decimals.
                    let digits = if m.abs() < 10.0 { 2 } else { 1 };
                    (format!("{m:.digits$} [{lo:.digits$} – {hi:.digits$}]"), m)
                }
                _ => ("-".to_owned(), f64::NAN),
            }
        };
        let (ours, om) = cell(find(Imp::Ours));
        let (theirs, tm) = cell(find(Imp::Libp2p));
        let ratio = if om.is_finite() && tm.is_finite() && tm != 0.0 {
            format!("{:.2}", om / tm)
        } else {
            "-".to_owned()
        };
        println!("{name:<44} {ours:>28} {theirs:>28} {ratio:>8}  {target}");
    }
}
