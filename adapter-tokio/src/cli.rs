//! The `dep2p` command line: `relay`, `node`, `dial`, `keygen`, `id`, `check-config`, `demo`,
//! `bench`.
//!
//! Exit codes: 0 success (including a graceful drain after SIGTERM/SIGINT), 1 runtime failure,
//! 2 bad usage or configuration (the message names the key and the file).
//!
//! Machine-readable progress goes to stdout, one `word key=value…` line per fact (tests and
//! scripts read it); logs go to stderr through `tracing` (`RUST_LOG`, default `info`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use dep2p_core::identity::{Keypair, PeerId, decode_key_file, encode_key_file, keypair_from_seed};
use dep2p_core::node::Event;
use multiaddr::{Multiaddr, Protocol};

use crate::apps::{self, SINK};
use crate::config::{ConfigFault, FileConfig, parse_bytes, parse_duration};
use crate::handle::os_seed;
use crate::metrics::Metrics;
use crate::{AdapterEvent, NodeHandle, NodeOptions};

/// The `dep2p` program.
#[derive(Debug, Parser)]
#[command(
    name = "dep2p",
    version,
    about = "dep2p relay stack: relay daemon, client node, tools"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a Circuit Relay v2 server (daemon).
    Relay(RelayArgs),
    /// Run a client node: AutoRelay reserves on relays and fails over; accepts circuits (echo
    /// and sink).
    Node(NodeArgs),
    /// Send data to a peer through one of its relays (the next on failure) and check it arrived
    /// intact.
    Dial(DialArgs),
    /// Write a new identity key file and print its PeerId.
    Keygen(KeygenArgs),
    /// Print the PeerId of a key file.
    Id(IdArgs),
    /// Load a config file and report whether it is valid (exit 2 if not).
    CheckConfig(CheckArgs),
    /// In one process on 127.0.0.1: two relays, nodes, a relayed transfer, relay A stopped,
    /// failover; prints a summary.
    Demo(DemoArgs),
    /// Loopback throughput: direct versus relayed, same run.
    Bench(BenchArgs),
}

/// Settings every running command shares; each overrides the config file.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// TOML config file (see deploy/dep2p.toml).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// UDP address to bind, e.g. 0.0.0.0:4001.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Identity key file (created if missing).
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// QUIC keep-alive interval (e.g. 1s).
    #[arg(long, value_parser = parse_duration)]
    pub keep_alive: Option<Duration>,
    /// QUIC idle timeout: a silent peer is declared lost after it (e.g. 3s).
    #[arg(long, value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// How long a graceful drain waits for connections to close.
    #[arg(long, value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
}

/// `dep2p relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
    /// Announce this address instead of the bound one (repeatable).
    #[arg(long = "external-addr")]
    pub external_addrs: Vec<String>,
    /// Most reservations held at once.
    #[arg(long)]
    pub max_reservations: Option<u32>,
    /// Most circuits at once.
    #[arg(long)]
    pub max_circuits: Option<u32>,
    /// Byte limit per circuit direction (e.g. 128MiB).
    #[arg(long, value_parser = parse_bytes)]
    pub max_circuit_bytes: Option<u64>,
    /// Reservation lifetime (e.g. 1h).
    #[arg(long, value_parser = parse_duration)]
    pub reservation_ttl: Option<Duration>,
}

/// `dep2p node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
    /// A bootstrap relay, `/ip4/…/udp/…/quic-v1/p2p/<id>` (repeatable; replaces
    /// client.relays).
    #[arg(long = "relay")]
    pub relays: Vec<String>,
    /// Reservations to keep on distinct relays (client.min_relays).
    #[arg(long)]
    pub min_relays: Option<usize>,
    /// Most relays held or being acquired (client.max_relays).
    #[arg(long)]
    pub max_relays: Option<usize>,
}

/// `dep2p dial`.
#[derive(Debug, Args)]
pub struct DialArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
    /// The target's circuit addresses, `<relay addr>/p2p/<relay>/p2p-circuit/p2p/<target>`,
    /// one per relay, tried in order (the next when one fails, then again after a backoff).
    #[arg(required = true, num_args = 1..)]
    pub targets: Vec<String>,
    /// Bytes to send to the target's sink (e.g. 64MiB).
    #[arg(long, default_value = "1MiB", value_parser = parse_bytes)]
    pub bytes: u64,
    /// Seed of the pseudo-random payload.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Give up after this long.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `dep2p keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key file.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

/// `dep2p id`.
#[derive(Debug, Args)]
pub struct IdArgs {
    /// The key file.
    pub identity: PathBuf,
}

/// `dep2p check-config`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The config file.
    pub config: PathBuf,
}

/// `dep2p demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Client nodes reserving on the relays.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// Bytes of the relayed transfer.
    #[arg(long, default_value = "8MiB", value_parser = parse_bytes)]
    pub bytes: u64,
}

/// `dep2p bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Bytes per transfer.
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub bytes: u64,
}

/// Runs the program; returns the exit code.
#[must_use]
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return error.exit_code();
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return 1;
        }
    };
    let code = runtime.block_on(run(cli));
    runtime.shutdown_timeout(Duration::from_millis(200));
    code
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// A failure with its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Bad usage or configuration: exit 2.
    Config(ConfigFault),
    /// Anything else: exit 1.
    Runtime(String),
}

impl From<ConfigFault> for Failure {
    fn from(fault: ConfigFault) -> Self {
        Self::Config(fault)
    }
}

fn runtime(e: impl std::fmt::Display) -> Failure {
    Failure::Runtime(e.to_string())
}

async fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Relay(args) => run_relay(args).await,
        Command::Node(args) => run_node(args).await,
        Command::Dial(args) => run_dial(args).await,
        Command::Keygen(args) => keygen(&args),
        Command::Id(args) => {
            load_key(&args.identity).map(|key| println!("{}", key.public().to_peer_id()))
        }
        Command::CheckConfig(args) => check_config(&args.config),
        Command::Demo(args) => crate::demo::run(args.nodes, args.bytes)
            .await
            .map_err(Failure::Runtime),
        Command::Bench(args) => crate::bench::run(args.bytes)
            .await
            .map_err(Failure::Runtime),
    };
    match result {
        Ok(()) => 0,
        Err(Failure::Config(fault)) => {
            eprintln!("error: {fault}");
            2
        }
        Err(Failure::Runtime(message)) => {
            eprintln!("error: {message}");
            1
        }
    }
}

fn keygen(args: &KeygenArgs) -> Result<(), Failure> {
    if args.out.exists() && !args.force {
        return Err(runtime(format!(
            "{} exists; pass --force to overwrite it",
            args.out.display()
        )));
    }
    let key = keypair_from_seed(os_seed());
    write_key(&args.out, &key)?;
    println!("{}", key.public().to_peer_id());
    Ok(())
}

fn write_key(path: &Path, key: &Keypair) -> Result<(), Failure> {
    let text = encode_key_file(key).map_err(runtime)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| runtime(format!("cannot write {}: {e}", path.display())))
}

fn load_key(path: &Path) -> Result<Keypair, Failure> {
    let bytes =
        std::fs::read(path).map_err(|e| runtime(format!("cannot read {}: {e}", path.display())))?;
    decode_key_file(&bytes).map_err(|e| runtime(format!("{}: {e}", path.display())))
}

/// The key in `path` (created if missing), or a fresh ephemeral key.
fn identity(path: Option<&Path>) -> Result<Keypair, Failure> {
    match path {
        Some(path) if path.exists() => load_key(path),
        Some(path) => {
            let key = keypair_from_seed(os_seed());
            write_key(path, &key)?;
            tracing::info!(path = %path.display(), peer = %key.public().to_peer_id(), "created identity key");
            Ok(key)
        }
        None => Ok(keypair_from_seed(os_seed())),
    }
}

fn check_config(path: &Path) -> Result<(), Failure> {
    let file = FileConfig::load(path)?;
    let in_file = |mut fault: ConfigFault| {
        fault.file = Some(path.to_owned());
        fault
    };
    file.node_config().map_err(in_file)?;
    file.relay_limits().map_err(in_file)?;
    file.client().map_err(in_file)?;
    file.external_addrs().map_err(in_file)?;
    println!("config ok file={}", path.display());
    Ok(())
}

/// The file (if any) with the common flags applied on top.
fn load_common(common: &CommonArgs) -> Result<FileConfig, Failure> {
    let mut file = match &common.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    if common.listen.is_some() {
        file.listen = common.listen;
    }
    if common.identity.is_some() {
        file.identity.clone_from(&common.identity);
    }
    if common.metrics.is_some() {
        file.metrics = common.metrics;
    }
    if let Some(v) = common.keep_alive {
        file.transport.keep_alive = Some(crate::config::DurationValue(v));
    }
    if let Some(v) = common.idle_timeout {
        file.transport.idle_timeout = Some(crate::config::DurationValue(v));
    }
    if let Some(v) = common.drain_timeout {
        file.drain_timeout = Some(crate::config::DurationValue(v));
    }
    Ok(file)
}

/// Attaches the config file's name to a fault found after parsing.
fn in_file(common: &CommonArgs) -> impl Fn(ConfigFault) -> Failure + '_ {
    move |mut fault| {
        fault.file.clone_from(&common.config);
        Failure::Config(fault)
    }
}

async fn start_metrics(
    addr: Option<SocketAddr>,
    metrics: &Arc<Metrics>,
    node: &NodeHandle,
) -> Result<(), Failure> {
    let Some(addr) = addr else { return Ok(()) };
    let listener = crate::metrics::bind(addr)
        .await
        .map_err(|e| runtime(format!("cannot bind the metrics endpoint {addr}: {e}")))?;
    let bound = listener.local_addr().map_err(runtime)?;
    println!("metrics url=http://{bound}/metrics");
    tokio::spawn(crate::metrics::serve(
        listener,
        Arc::clone(metrics),
        node.clone(),
    ));
    Ok(())
}

/// Waits for SIGTERM or SIGINT.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn drain_and_exit(node: &NodeHandle, file: &FileConfig) {
    let timeout = file.drain_timeout.map_or(Duration::from_secs(1), |d| d.0);
    println!("draining timeout_ms={}", timeout.as_millis());
    let _ = node.drain(timeout).await;
    println!("stopped");
}

fn flush() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

async fn run_relay(args: RelayArgs) -> Result<(), Failure> {
    let mut file = load_common(&args.common)?;
    let r = &mut file.relay;
    if let Some(v) = args.max_reservations {
        r.max_reservations = Some(v);
    }
    if let Some(v) = args.max_circuits {
        r.max_circuits = Some(v);
    }
    if let Some(v) = args.max_circuit_bytes {
        r.max_circuit_bytes = Some(crate::config::ByteSize(v));
    }
    if let Some(v) = args.reservation_ttl {
        r.reservation_ttl = Some(crate::config::DurationValue(v));
    }
    if !args.external_addrs.is_empty() {
        file.external_addrs = Some(args.external_addrs.clone());
    }
    let fault = in_file(&args.common);
    let mut config = file.node_config().map_err(&fault)?;
    let limits = file.relay_limits().map_err(&fault)?;
    let external = file.external_addrs().map_err(&fault)?;
    config.relay_server(Some(limits));
    let keypair = identity(file.identity.as_deref())?;
    let bind = file
        .listen
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 4001)));
    let metrics = Arc::new(Metrics::new());
    let mut options = NodeOptions::new(config, keypair, bind);
    options.external_addrs = external;
    options.metrics = Some(Arc::clone(&metrics));
    // The relay needs its listen address before the node is built: `spawn` fills it in from
    // the bound socket.
    let node = NodeHandle::spawn(options).map_err(runtime)?;
    // The relay prints nothing per event; the metrics come from the driver.
    node.discard_events();
    for addr in node.listen_addrs() {
        println!("relay peer={} addr={addr}", node.peer_id());
    }
    start_metrics(file.metrics, &metrics, &node).await?;
    flush();
    shutdown_signal().await;
    drain_and_exit(&node, &file).await;
    Ok(())
}

async fn run_node(args: NodeArgs) -> Result<(), Failure> {
    let mut file = load_common(&args.common)?;
    if !args.relays.is_empty() {
        file.client.relays = Some(args.relays.clone());
    }
    if let Some(v) = args.min_relays {
        file.client.min_relays = Some(v);
    }
    if let Some(v) = args.max_relays {
        file.client.max_relays = Some(v);
    }
    let fault = in_file(&args.common);
    let mut config = file.node_config().map_err(&fault)?;
    let client = file.client().map_err(&fault)?;
    if client.relays.is_empty() {
        return Err(Failure::Config(ConfigFault {
            file: args.common.config.clone(),
            key: Some("client.relays".into()),
            message: "a node needs at least one relay (--relay or client.relays)".into(),
        }));
    }
    config
        .protocol(apps::ECHO)
        .protocol(apps::SINK)
        .auto_relay(Some(client.auto_relay));
    let keypair = identity(file.identity.as_deref())?;
    let bind = file
        .listen
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let metrics = Arc::new(Metrics::new());
    let mut options = NodeOptions::new(config, keypair, bind);
    options.relay_candidates = client.relays;
    options.metrics = Some(Arc::clone(&metrics));
    let node = NodeHandle::spawn(options).map_err(runtime)?;
    let mut events = node.events();
    println!("node peer={} addr={}", node.peer_id(), node.local_addr());
    start_metrics(file.metrics, &metrics, &node).await?;
    flush();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    print_event(&event);
                    flush();
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
    tokio::spawn(apps::serve(node.clone(), |info, receipt| {
        let peer = info.peer.map(|p| p.to_string()).unwrap_or_default();
        println!(
            "sink peer={peer} bytes={} sha256={}",
            receipt.bytes, receipt.sha256
        );
        flush();
    }));
    shutdown_signal().await;
    drain_and_exit(&node, &file).await;
    Ok(())
}

fn print_event(event: &AdapterEvent) {
    match event {
        AdapterEvent::Node(Event::ReservationAccepted {
            relay,
            circuit_addrs,
            renewed,
            ..
        }) => {
            let addr = circuit_addrs
                .first()
                .map(ToString::to_string)
                .unwrap_or_default();
            let word = if *renewed { "renewed" } else { "reserved" };
            println!("{word} relay={relay} addr={addr}");
        }
        AdapterEvent::Node(Event::ReservationLost { relay, reason, .. }) => {
            println!("lost relay={relay} reason={reason:?}");
        }
        AdapterEvent::Node(Event::ReservationFailed { relay, reason, .. }) => {
            println!("refused relay={relay} reason={reason:?}");
        }
        AdapterEvent::Node(Event::ConnectionEstablished {
            peer,
            relay: Some(relay),
            ..
        }) => println!("circuit peer={peer} relay={relay}"),
        AdapterEvent::Node(Event::CircuitAddrsChanged { addrs }) => {
            let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            println!("addrs count={} addrs={}", addrs.len(), list.join(","));
        }
        AdapterEvent::RelaySwitched(switch) => {
            let from = switch
                .from
                .map_or_else(|| "none".to_owned(), |p| p.to_string());
            let took = switch
                .took
                .map_or_else(|| "none".to_owned(), |t| t.as_millis().to_string());
            println!(
                "switched from={from} to={} why={} took_ms={took}",
                switch.to,
                switch.why.label()
            );
        }
        AdapterEvent::Node(_) => {}
    }
}

/// Splits `<relay quic addr>/p2p/<relay>/p2p-circuit/p2p/<target>`.
pub fn parse_circuit(text: &str) -> Result<(SocketAddr, PeerId, PeerId), String> {
    let addr: Multiaddr = text
        .parse()
        .map_err(|e| format!("`{text}` is not a multiaddr: {e}"))?;
    let mut relay = Multiaddr::empty();
    let mut parts = addr.iter();
    for part in parts.by_ref() {
        if part == Protocol::P2pCircuit {
            break;
        }
        relay.push(part);
    }
    let target = match (parts.next(), parts.next()) {
        (Some(Protocol::P2p(target)), None) => target,
        _ => {
            return Err(format!(
                "`{text}` is not a circuit address (<relay addr>/p2p/<relay>/p2p-circuit/p2p/<target>)"
            ));
        }
    };
    let (socket, relay_peer) = crate::config::parse_relay(&relay.to_string())?;
    Ok((socket, relay_peer, target))
}

async fn run_dial(args: DialArgs) -> Result<(), Failure> {
    let file = load_common(&args.common)?;
    let fault = in_file(&args.common);
    let mut config = file.node_config().map_err(&fault)?;
    config.protocol(SINK);
    let target_fault = |message| {
        Failure::Config(ConfigFault {
            file: None,
            key: Some("target".into()),
            message,
        })
    };
    let mut target = None;
    let mut addrs = Vec::new();
    let mut ipv4 = true;
    for text in &args.targets {
        let (relay_addr, _, peer) = parse_circuit(text).map_err(target_fault)?;
        if target.is_some_and(|t| t != peer) {
            return Err(target_fault(format!(
                "`{text}` names another target than the addresses before it"
            )));
        }
        target = Some(peer);
        ipv4 = relay_addr.is_ipv4();
        addrs.push(
            text.parse::<Multiaddr>()
                .map_err(|e| target_fault(e.to_string()))?,
        );
    }
    let Some(target) = target else {
        return Err(target_fault("no circuit address".into()));
    };
    let keypair = identity(file.identity.as_deref())?;
    let bind = file.listen.unwrap_or_else(|| {
        let ip: std::net::IpAddr = if ipv4 {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        SocketAddr::new(ip, 0)
    });
    let node = NodeHandle::spawn(NodeOptions::new(config, keypair, bind)).map_err(runtime)?;
    let sent = Arc::new(AtomicU64::new(0));
    let total = args.bytes;
    let work = {
        let sent = Arc::clone(&sent);
        let node = node.clone();
        async move {
            let circuit = node
                .dial_circuit(target, addrs)
                .await
                .map_err(|e| format!("cannot reach {target}: {e}"))?;
            let relay = circuit.relay;
            println!("circuit peer={target} relay={relay}");
            flush();
            let stream = node
                .open_stream(circuit.connection, SINK)
                .await
                .map_err(|e| format!("{target} refused the sink stream: {e}"))?;
            apps::send_to_sink(&stream, total, args.seed, |n| {
                sent.store(n, Ordering::Relaxed)
            })
            .await
            .map_err(|e| format!("relayed connection to {target} through relay {relay} lost: {e}"))
        }
    };
    let outcome = tokio::time::timeout(args.timeout, work).await;
    let transfer = match outcome {
        Ok(Ok(transfer)) => transfer,
        Ok(Err(message)) => {
            return Err(runtime(format!(
                "transfer failed after {} of {total} bytes: {message}",
                sent.load(Ordering::Relaxed)
            )));
        }
        Err(_) => {
            return Err(runtime(format!(
                "transfer timed out after {:?} ({} of {total} bytes sent)",
                args.timeout,
                sent.load(Ordering::Relaxed)
            )));
        }
    };
    println!(
        "transfer bytes={} sha256={} received_bytes={} received_sha256={} ms={} mib_per_s={:.1} checksum={}",
        transfer.bytes,
        transfer.sent_sha256,
        transfer.receipt.bytes,
        transfer.receipt.sha256,
        transfer.elapsed.as_millis(),
        transfer.mib_per_sec(),
        if transfer.intact() { "ok" } else { "MISMATCH" }
    );
    node.shutdown().await;
    if transfer.intact() {
        Ok(())
    } else {
        Err(runtime("the sink's checksum does not match what was sent"))
    }
}
