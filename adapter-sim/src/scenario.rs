//! Named scenarios and the runner that drives a [`Sim`] through one: clients with a relay
//! policy, the data workload, a fault script, the checkers, and the summary.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use dep2p_core::node::NodeConfig;
use dep2p_core::relay::limits::{RateLimit, RelayLimits};

use crate::check::{CheckedLimits, Checkers};
use crate::fault::{Fault, FaultScript, SwarmDraw, draw_swarm};
use crate::net::LinkModel;
use crate::policy::{RelayPolicy, ScriptedFailover};
use crate::report::{Report, Timeline};
use crate::workload::{DATA_PROTOCOL, Workload, WorkloadConfig};
use crate::{HostId, Sabotage, Sim};

/// The named scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioKind {
    /// Tier 1: one relay crashes and restarts; clients notice, wait, and re-reserve on it.
    Tier1Restart,
    /// Tier 2: every client starts on relay A; A dies; clients notice through the QUIC idle
    /// timeout (the heartbeat), connect to relay B and re-reserve there.
    Tier2Failover,
    /// Random chaos ("swarm"): the seed draws link faults, crashes, drains, partitions and gray
    /// failures, then everything heals and the liveness bound applies.
    Chaos,
}

impl ScenarioKind {
    /// The CLI name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Tier1Restart => "tier1-restart",
            Self::Tier2Failover => "tier2-failover",
            Self::Chaos => "chaos",
        }
    }
}

impl fmt::Display for ScenarioKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ScenarioKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tier1-restart" | "tier1" => Ok(Self::Tier1Restart),
            "tier2-failover" | "tier2" => Ok(Self::Tier2Failover),
            "chaos" | "swarm" => Ok(Self::Chaos),
            other => Err(format!(
                "unknown scenario `{other}` (tier1-restart, tier2-failover, chaos)"
            )),
        }
    }
}

/// Everything that defines a run. Two runs of equal configs print the same trace hash.
#[derive(Debug, Clone)]
pub struct ScenarioConfig {
    /// Which scenario.
    pub kind: ScenarioKind,
    /// The root seed.
    pub seed: u64,
    /// Relay clients.
    pub clients: usize,
    /// Relays (Tier 1 uses the first only; Tier 2 needs at least two).
    pub relays: usize,
    /// The workload.
    pub workload: WorkloadConfig,
    /// A relay broken on purpose (tests of the checkers only): the first relay gets it.
    pub sabotage: Option<Sabotage>,
}

impl ScenarioConfig {
    /// A scenario with default sizes for tests: 4 clients, 2 relays.
    #[must_use]
    pub fn new(kind: ScenarioKind, seed: u64) -> Self {
        Self {
            kind,
            seed,
            clients: 4,
            relays: if kind == ScenarioKind::Tier1Restart {
                1
            } else {
                2
            },
            workload: WorkloadConfig::default(),
            sabotage: None,
        }
    }

    /// The command line that replays this run.
    #[must_use]
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "cargo run --release -p dep2p-sim -- {} --seed {} --clients {} --relays {}",
            self.kind, self.seed, self.clients, self.relays
        );
        if let Some(sabotage) = self.sabotage {
            cmd += &format!(" --sabotage {}", sabotage_name(sabotage));
        }
        cmd
    }
}

/// The CLI name of a sabotage.
#[must_use]
pub fn sabotage_name(sabotage: Sabotage) -> &'static str {
    match sabotage {
        Sabotage::LeakCircuitCounter => "leak-circuit-counter",
        Sabotage::ForwardAfterClose => "forward-after-close",
        Sabotage::CorruptCircuitData => "corrupt-circuit-data",
    }
}

/// Parses a sabotage name.
pub fn parse_sabotage(s: &str) -> Result<Sabotage, String> {
    match s {
        "leak-circuit-counter" => Ok(Sabotage::LeakCircuitCounter),
        "forward-after-close" => Ok(Sabotage::ForwardAfterClose),
        "corrupt-circuit-data" => Ok(Sabotage::CorruptCircuitData),
        other => Err(format!(
            "unknown sabotage `{other}` (leak-circuit-counter, forward-after-close, corrupt-circuit-data)"
        )),
    }
}

/// The plan of a run, derived from the config and the seed before anything runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The fault script.
    pub script: FaultScript,
    /// When the last fault is over: the liveness bound counts from here.
    pub heal_at: Duration,
    /// How long after `heal_at` every client must hold a reservation again and every pair
    /// must have re-established a circuit.
    pub liveness_bound: Duration,
    /// When the workload stops (circuits and relay connections are closed).
    pub stop_at: Duration,
    /// When the run ends and the counters must be back to zero.
    pub end_at: Duration,
    /// What a swarm seed drew.
    pub swarm: Option<SwarmDraw>,
}

/// The node settings of every simulated host: DESIGN defaults (keep-alive 5 s, idle 15 s).
fn node_config() -> NodeConfig {
    let mut config = NodeConfig::default();
    config.protocol(DATA_PROTOCOL);
    config
}

/// Relay limits of the scenarios: DESIGN defaults, except a circuit rate that lets the
/// workload's back-to-back flows through.
fn relay_limits() -> (RelayLimits, CheckedLimits) {
    let checked = CheckedLimits {
        max_reservations: 1024,
        max_circuits: 1024,
    };
    let limits = RelayLimits::default()
        .max_reservations(checked.max_reservations as u32)
        .max_circuits(checked.max_circuits as u32)
        .circuit_rate_per_peer(RateLimit::new(600, Duration::from_secs(60)))
        .circuit_rate_per_ip(RateLimit::new(600, Duration::from_secs(60)))
        .reservation_rate_per_ip(RateLimit::new(600, Duration::from_secs(60)));
    (limits, checked)
}

/// QUIC idle timeout of the simulated nodes (the failure detector; the DESIGN default).
const IDLE: Duration = Duration::from_secs(15);
/// QUIC keep-alive interval of the simulated nodes (the DESIGN default).
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// After the workload stops, how long the world runs before the counters must be zero.
const QUIESCE: Duration = Duration::from_secs(20);

fn plan(config: &ScenarioConfig, sim: &Sim, relays: &[HostId], clients: &[HostId]) -> Plan {
    let (script, heal_at, liveness_bound, swarm) = match config.kind {
        ScenarioKind::Tier1Restart => {
            let relay = relays[0];
            let (down, up) = (Duration::from_secs(10), Duration::from_secs(30));
            let script = FaultScript::new()
                .at(down, Fault::Crash(relay))
                .at(up, Fault::Restart(relay));
            // Clients notice within the idle timeout and keep redialing with backoff (at most
            // 8 s, plus QUIC's Initial retransmission backoff) until the relay is back.
            (
                script,
                up,
                KEEP_ALIVE + IDLE + Duration::from_secs(10),
                None,
            )
        }
        ScenarioKind::Tier2Failover => {
            let a = relays[0];
            let down = Duration::from_secs(10);
            let script = FaultScript::new()
                .at(down, Fault::Crash(a))
                .at(down + Duration::from_secs(40), Fault::Restart(a));
            // DESIGN §10 asks for a new reservation within idle timeout + 2 s. The sim shows the
            // worst case is a keep-alive longer: QUIC restarts the idle timer at the first
            // ack-eliciting packet sent after the last one received (RFC 9000 §10.1), so a
            // client that heard from A just before the crash sends its next keep-alive up to
            // 5 s later and times out 15 s after that.
            (
                script,
                down,
                KEEP_ALIVE + IDLE + Duration::from_secs(2),
                None,
            )
        }
        ScenarioKind::Chaos => {
            let mut rng = sim.root().rng("faults");
            let start = Duration::from_secs(5);
            let heal_at = Duration::from_secs(65);
            let draw = draw_swarm(
                &mut rng,
                relays,
                clients,
                start,
                heal_at,
                LinkModel::default(),
            );
            // Heal, then: idle timeout to notice leftovers, a full backoff, a handshake.
            (
                draw.script.clone(),
                heal_at,
                IDLE + Duration::from_secs(25),
                Some(draw),
            )
        }
    };
    let stop_at = heal_at + liveness_bound + Duration::from_secs(5);
    Plan {
        script,
        heal_at,
        liveness_bound,
        stop_at,
        end_at: stop_at + QUIESCE,
        swarm,
    }
}

/// A progress report for long runs.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Virtual time so far.
    pub elapsed: Duration,
    /// Virtual time of the whole run.
    pub total: Duration,
    /// Steps so far.
    pub steps: u64,
}

/// Runs a scenario. `on_plan` sees the plan before the run starts (the CLI prints it);
/// `progress` is called about every 5 % of virtual time.
pub fn run(
    config: &ScenarioConfig,
    on_plan: &mut dyn FnMut(&Plan),
    progress: &mut dyn FnMut(Progress),
) -> Report {
    run_planned(
        config,
        &mut |sim, relays, clients| plan(config, sim, relays, clients),
        on_plan,
        progress,
    )
}

/// Makes a [`Plan`] from the sim, its relays and its clients.
#[doc(hidden)]
pub type MakePlan<'a> = dyn FnMut(&Sim, &[HostId], &[HostId]) -> Plan + 'a;

/// [`run`] with a plan the caller makes (from the hosts the run created) instead of the one
/// the scenario kind and seed draw. For the fuzzer, which decodes a whole scenario, fault script
/// included, from its input; not part of the supported API.
#[doc(hidden)]
pub fn run_planned(
    config: &ScenarioConfig,
    make_plan: &mut MakePlan<'_>,
    on_plan: &mut dyn FnMut(&Plan),
    progress: &mut dyn FnMut(Progress),
) -> Report {
    assert!(config.relays >= 1, "a scenario needs a relay");
    assert!(
        config.kind != ScenarioKind::Tier2Failover || config.relays >= 2,
        "tier 2 failover needs at least two relays"
    );
    let mut sim = Sim::new(config.seed);
    let (limits, checked) = relay_limits();
    let relays: Vec<HostId> = (0..config.relays)
        .map(|i| {
            let name = format!("relay-{}", char::from(b'A' + (i % 26) as u8));
            sim.add_relay(&name, node_config(), limits.clone())
        })
        .collect();
    let clients: Vec<HostId> = (0..config.clients)
        .map(|i| sim.add_client(&format!("client-{i}"), node_config()))
        .collect();
    if let Some(sabotage) = config.sabotage {
        sim.set_sabotage(relays[0], sabotage);
    }
    let plan = make_plan(&sim, &relays, &clients);
    on_plan(&plan);

    // Clients start spread over the first second, so handshakes do not all collide.
    let mut workload_rng = sim.root().rng("workload");
    let mut start_at: Vec<Instant> = clients
        .iter()
        .map(|_| sim.now() + workload_rng.duration_up_to(Duration::from_secs(1)))
        .collect();
    let mut policies: Vec<Box<dyn RelayPolicy>> = clients
        .iter()
        .enumerate()
        .map(|(i, &client)| {
            let (list, first) = match config.kind {
                ScenarioKind::Tier1Restart => (vec![relays[0]], 0),
                ScenarioKind::Tier2Failover => (relays.clone(), 0),
                ScenarioKind::Chaos => (relays.clone(), i % relays.len()),
            };
            Box::new(ScriptedFailover::new(client, list, first)) as Box<dyn RelayPolicy>
        })
        .collect();
    let mut started = vec![false; clients.len()];
    let mut workload = Workload::new(
        config.workload,
        clients.clone(),
        sim.now() + Duration::from_secs(2),
        workload_rng,
    );
    let client_index: BTreeMap<HostId, usize> =
        clients.iter().enumerate().map(|(i, &h)| (h, i)).collect();
    let mut checkers = Checkers::new(checked);
    let mut metrics = Metrics::new(clients.len());
    let mut timeline = Timeline::new(relays.iter().map(|&r| sim.name(r).to_owned()).collect());

    let end = sim.at(plan.end_at);
    let stop = sim.at(plan.stop_at);
    let liveness_at = sim.at(plan.heal_at + plan.liveness_bound);
    let mut liveness_done = false;
    let mut stopped = false;
    let mut faults = plan.script.faults().iter().peekable();
    let mut next_sample = sim.now();
    let mut next_progress = Duration::ZERO;
    let progress_every = plan.end_at / 20;

    while sim.now() < end {
        let mut limit = end.min(next_sample);
        if let Some(fault) = faults.peek() {
            limit = limit.min(sim.at(fault.at));
        }
        if !stopped {
            limit = limit.min(stop).min(workload.wake_at());
            for (i, policy) in policies.iter().enumerate() {
                let wake = if started[i] {
                    policy.wake_at()
                } else {
                    Some(start_at[i])
                };
                if let Some(at) = wake {
                    limit = limit.min(at);
                }
            }
        }
        if !liveness_done {
            limit = limit.min(liveness_at);
        }
        sim.step(limit);
        let now = sim.now();

        while let Some(fault) = faults.next_if(|f| sim.at(f.at) <= now) {
            metrics.outage_begins(&sim, &fault.fault, &clients, &policies);
            sim.apply(&fault.fault);
        }
        if !stopped {
            for i in 0..clients.len() {
                if !started[i] && start_at[i] <= now {
                    started[i] = true;
                    start_at[i] = now;
                    policies[i].start(&mut sim);
                } else if started[i] && policies[i].wake_at().is_some_and(|at| at <= now) {
                    policies[i].on_wake(&mut sim);
                }
            }
            dispatch(
                &mut sim,
                &mut policies,
                &mut workload,
                &mut checkers,
                &mut metrics,
                &client_index,
            );
            workload.tick(&mut sim, &policies);
        }
        dispatch(
            &mut sim,
            &mut policies,
            &mut workload,
            &mut checkers,
            &mut metrics,
            &client_index,
        );
        checkers.after_step(&sim);

        if !liveness_done && now >= liveness_at {
            liveness_done = true;
            liveness(
                &sim,
                &plan,
                &policies,
                &workload,
                &clients,
                &mut checkers,
                &mut metrics,
            );
        }
        if !stopped && now >= stop {
            stopped = true;
            workload.stop(&mut sim);
            for policy in &mut policies {
                policy.stop(&mut sim);
            }
            dispatch(
                &mut sim,
                &mut policies,
                &mut workload,
                &mut checkers,
                &mut metrics,
                &client_index,
            );
        }
        if now >= next_sample {
            timeline.sample(
                sim.elapsed(),
                relays
                    .iter()
                    .map(|&r| sim.relay_stats(r).map_or(0, |s| s.reservations)),
            );
            next_sample = now + Duration::from_secs(1);
        }
        if sim.elapsed() >= next_progress {
            progress(Progress {
                elapsed: sim.elapsed(),
                total: plan.end_at,
                steps: sim.steps(),
            });
            next_progress = sim.elapsed() + progress_every;
        }
    }
    checkers.quiescent(&sim);

    let work = workload.stats();
    Report {
        scenario: config.kind,
        seed: config.seed,
        failover: metrics.failover,
        unresolved_outages: metrics.outage.iter().filter(|o| o.is_some()).count(),
        reservations_lost: metrics.lost,
        reservations_regained: metrics.regained,
        circuits_established: work.circuits_established,
        circuits_broken: work.circuits_broken,
        circuits_reestablished: work.circuits_reestablished,
        flows_completed: work.flows_completed,
        bytes_delivered: work.bytes_delivered,
        trace_hash: sim.trace_hash(),
        violations: checkers.violations().to_vec(),
        replay: config.replay_command(),
        net: sim.net.stats(),
        virtual_time: sim.elapsed(),
        steps: sim.steps(),
        timeline,
    }
}

/// Hands every pending event to the client's policy and to the workload, until none is left
/// (their commands may cause more).
fn dispatch(
    sim: &mut Sim,
    policies: &mut [Box<dyn RelayPolicy>],
    workload: &mut Workload,
    checkers: &mut Checkers,
    metrics: &mut Metrics,
    client_index: &BTreeMap<HostId, usize>,
) {
    loop {
        let events = sim.take_events();
        if events.is_empty() {
            return;
        }
        for (host, event) in events {
            if let Some(&i) = client_index.get(&host) {
                let before = policies[i].reserved();
                policies[i].on_event(sim, &event);
                metrics.observe(sim.now(), i, before, policies[i].reserved());
            }
            workload.on_event(sim, checkers, host, &event);
        }
    }
}

/// The liveness phase: `liveness_bound` after the faults healed, every client holds a
/// reservation and every pair has (re-)established a circuit since the heal.
fn liveness(
    sim: &Sim,
    plan: &Plan,
    policies: &[Box<dyn RelayPolicy>],
    workload: &Workload,
    clients: &[HostId],
    checkers: &mut Checkers,
    metrics: &mut Metrics,
) {
    let at = sim.elapsed();
    let missing: Vec<&str> = clients
        .iter()
        .zip(policies)
        .filter(|(_, p)| p.reserved().is_none())
        .map(|(&c, _)| sim.name(c))
        .collect();
    if !missing.is_empty() {
        checkers.violate(
            at,
            "liveness",
            format!(
                "{} clients hold no reservation {:.1}s after the heal: {}",
                missing.len(),
                plan.liveness_bound.as_secs_f64(),
                missing.join(", ")
            ),
        );
    }
    let (ok, pairs) = workload.pairs_established_since(sim.at(plan.heal_at));
    if ok < pairs {
        checkers.violate(
            at,
            "liveness",
            format!(
                "only {ok} of {pairs} pairs re-established a circuit within {:.1}s of the heal",
                plan.liveness_bound.as_secs_f64()
            ),
        );
    }
    // An outage still open on the reservation it began on was never noticed (the reservation
    // survived the fault, as through a short partition): not a failover.
    for (outage, policy) in metrics.outage.iter_mut().zip(policies) {
        if outage.is_some_and(|(_, on)| on.is_some() && on == policy.reserved()) {
            *outage = None;
        }
    }
}

/// A client's reservation: relay and connection.
type Reserved = Option<(HostId, dep2p_core::node::ConnectionId)>;

/// Reservation loss and failover times, seen from the clients.
struct Metrics {
    /// Per client: since when it has been without a working reservation, and the reservation
    /// it held when the outage began (if any).
    outage: Vec<Option<(Instant, Reserved)>>,
    failover: Vec<Duration>,
    lost: u64,
    regained: u64,
}

impl Metrics {
    fn new(clients: usize) -> Self {
        Self {
            outage: vec![None; clients],
            failover: Vec::new(),
            lost: 0,
            regained: 0,
        }
    }

    /// A fault makes the clients reserved on an affected relay unreachable from now on.
    fn outage_begins(
        &mut self,
        sim: &Sim,
        fault: &Fault,
        clients: &[HostId],
        policies: &[Box<dyn RelayPolicy>],
    ) {
        for (i, policy) in policies.iter().enumerate() {
            let Some((relay, _)) = policy.reserved() else {
                continue;
            };
            let client = clients[i];
            let hit = match fault {
                Fault::Crash(h) | Fault::Drain(h) | Fault::Isolate(h) => {
                    *h == relay || *h == client
                }
                Fault::Gray { host, .. } => *host == relay,
                Fault::Partition { from, to, .. } => {
                    (from.contains(&relay) && to.contains(&client))
                        || (from.contains(&client) && to.contains(&relay))
                }
                _ => false,
            };
            if hit && self.outage[i].is_none() {
                self.outage[i] = Some((sim.now(), policy.reserved()));
            }
        }
    }

    fn observe(&mut self, now: Instant, client: usize, before: Reserved, after: Reserved) {
        if before == after {
            return;
        }
        if before.is_some() {
            self.lost += 1;
            self.outage[client].get_or_insert((now, None));
        }
        if after.is_some()
            && let Some((since, _)) = self.outage[client].take()
        {
            self.regained += 1;
            self.failover.push(now - since);
        }
    }
}
