//! `dep2p-sim`: runs a named scenario and prints its summary.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dep2p_sim::policy::PolicyKind;
use dep2p_sim::scenario::{self, ScenarioConfig, parse_sabotage};

/// Deterministic dep2p network simulator: real nodes on a virtual network, with faults,
/// invariant checkers and replay by seed.
#[derive(Debug, Parser)]
#[command(name = "dep2p-sim", version)]
struct Args {
    /// Scenario: tier1-restart, tier2-failover, tier2-drain, relay-restart, capacity,
    /// rtt-jitter or chaos.
    scenario: dep2p_sim::scenario::ScenarioKind,
    /// Root seed: the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Relay clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Relays (default: 1 for tier1-restart, 2 for relay-restart and chaos, else 3).
    #[arg(long)]
    relays: Option<usize>,
    /// Client relay policy: autorelay (the node's AutoRelay) or scripted (the old stand-in).
    #[arg(long, default_value = "autorelay")]
    policy: PolicyKind,
    /// AutoRelay's min_relays.
    #[arg(long, default_value_t = 2)]
    min_relays: usize,
    /// Keep the workload running at least this many virtual seconds (e.g. 600).
    #[arg(long)]
    virtual_secs: Option<u64>,
    /// Payload bytes per circuit flow.
    #[arg(long, default_value_t = 32 * 1024)]
    flow_bytes: u64,
    /// Client pairs that stream data (default: all); the others only hold reservations.
    #[arg(long)]
    pairs: Option<usize>,
    /// Write an SVG timeline of reservations per relay to this file.
    #[arg(long)]
    svg: Option<std::path::PathBuf>,
    /// Every relay's max_circuit_duration in virtual seconds (default: 30 minutes); set it
    /// below a flow's length to make circuits end at the duration limit.
    #[arg(long)]
    max_circuit_secs: Option<u64>,
    /// Break the first relay on purpose, to see the checkers fail.
    #[arg(long, value_parser = parse_sabotage)]
    sabotage: Option<dep2p_sim::Sabotage>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let mut config = ScenarioConfig::new(args.scenario, args.seed);
    config.clients = args.clients;
    if let Some(relays) = args.relays {
        config.relays = relays;
    }
    config.policy = args.policy;
    config.min_relays = args.min_relays;
    config.length = args.virtual_secs.map(Duration::from_secs);
    if config.relays < config.min_relays_needed() {
        eprintln!(
            "{} needs --relays {} or more",
            config.kind,
            config.min_relays_needed()
        );
        return ExitCode::from(2);
    }
    if config.min_relays == 0 || config.min_relays > 16 {
        eprintln!("--min-relays must be between 1 and 16");
        return ExitCode::from(2);
    }
    config.workload.flow_bytes = args.flow_bytes;
    config.workload.pairs = args.pairs;
    config.sabotage = args.sabotage;
    config.max_circuit_duration = args.max_circuit_secs.map(Duration::from_secs);

    println!(
        "dep2p-sim {} seed={} clients={} relays={} policy={} min_relays={} flow_bytes={} max_circuit_secs={} sabotage={}",
        config.kind,
        config.seed,
        config.clients,
        config.relays,
        config.policy,
        config.min_relays,
        config.workload.flow_bytes,
        config
            .max_circuit_duration
            .map_or_else(|| "default".to_owned(), |d| d.as_secs().to_string()),
        config.sabotage.map_or("none", scenario::sabotage_name)
    );
    let wall = WallClock::start();
    let report = scenario::run(
        &config,
        &mut |plan| {
            println!(
                "plan: heal at {:.1}s, liveness bound {:.1}s, workload stops at {:.1}s, run ends at {:.1}s",
                plan.heal_at.as_secs_f64(),
                plan.liveness_bound.as_secs_f64(),
                plan.stop_at.as_secs_f64(),
                plan.end_at.as_secs_f64()
            );
            if let Some(draw) = &plan.swarm {
                print!("{draw}");
            } else {
                print!("faults:\n{}", plan.script);
            }
        },
        &mut |p| {
            eprintln!(
                "progress: virtual {:>6.1}s / {:.1}s, {} steps, wall {:.1}s",
                p.elapsed.as_secs_f64(),
                p.total.as_secs_f64(),
                p.steps,
                wall.elapsed().as_secs_f64()
            );
        },
    );
    print!("{report}");
    println!("wall time: {:.2}s", wall.elapsed().as_secs_f64());
    if let Some(path) = &args.svg {
        let title = format!(
            "{} seed {}: reservations per relay",
            config.kind, config.seed
        );
        if let Err(error) = std::fs::write(path, report.timeline.to_svg(&title)) {
            eprintln!("cannot write {}: {error}", path.display());
            return ExitCode::FAILURE;
        }
        println!("timeline written to {}", path.display());
    }
    if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Wall-clock time for the progress line and the wall-time report only: nothing in the world
/// depends on it.
struct WallClock(std::time::Instant);

impl WallClock {
    fn start() -> Self {
        #[allow(clippy::disallowed_methods)] // the one wall-clock read: progress reporting
        Self(std::time::Instant::now())
    }

    fn elapsed(&self) -> Duration {
        #[allow(clippy::disallowed_methods)] // same: progress reporting only
        let now = std::time::Instant::now();
        now - self.0
    }
}
