//! Named scenarios and the runner that drives a [`Sim`] through one: clients with a relay
//! policy, the data workload, a fault script, the checkers, and the summary.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use dep2p_core::autorelay::{AutoRelayConfig, SwitchReason};
use dep2p_core::node::{ConnectionId, Event, NodeConfig, ReservationFailureKind};
use dep2p_core::relay::limits::{RateLimit, RelayLimits};

use crate::check::{CheckedLimits, Checkers};
use crate::fault::{Fault, FaultScript, SwarmDraw, draw_swarm};
use crate::net::LinkModel;
use crate::policy::{AutoRelayPolicy, PolicyKind, RelayPolicy, ScriptedFailover};
use crate::report::{Report, Timeline};
use crate::workload::{DATA_PROTOCOL, Workload, WorkloadConfig};
use crate::{HostId, Sabotage, Sim};

/// The named scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioKind {
    /// Tier 1: one relay crashes and restarts; clients notice, wait, and re-reserve on it.
    Tier1Restart,
    /// Tier 2: relay A dies (and comes back 40 s later); its clients notice through the idle
    /// timeout and hold a new reservation elsewhere within idle timeout + 2 s; with
    /// `min_relays = 2` they stay reachable through their second relay all along.
    Tier2Failover,
    /// Planned drain: relay A is drained with `Node::drain`; its clients move within 1 s and
    /// their advertised circuit addresses never go empty.
    Tier2Drain,
    /// Two relays; A crashes and restarts 30 s later: clients come back to it as a candidate
    /// after backoff (no dead state cached), reachable through B meanwhile.
    RelayRestart,
    /// Relay A admits only a quarter of the clients: the rest are refused and go elsewhere,
    /// retrying A only after their shun, never in a loop.
    Capacity,
    /// An hour of RTT jitter on every link, relays pinged every 15 s: AutoRelay's hysteresis
    /// keeps relay switches per client per hour under the cap.
    RttJitter,
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
            Self::Tier2Drain => "tier2-drain",
            Self::RelayRestart => "relay-restart",
            Self::Capacity => "capacity",
            Self::RttJitter => "rtt-jitter",
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
            "tier2-drain" | "drain" => Ok(Self::Tier2Drain),
            "relay-restart" => Ok(Self::RelayRestart),
            "capacity" => Ok(Self::Capacity),
            "rtt-jitter" | "jitter" => Ok(Self::RttJitter),
            "chaos" | "swarm" => Ok(Self::Chaos),
            other => Err(format!(
                "unknown scenario `{other}` (tier1-restart, tier2-failover, tier2-drain, \
                 relay-restart, capacity, rtt-jitter, chaos)"
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
    /// Relays (Tier 1 uses the first only; the others need at least two).
    pub relays: usize,
    /// How clients keep reservations.
    pub policy: PolicyKind,
    /// AutoRelay's `min_relays` (AutoRelay policy only).
    pub min_relays: usize,
    /// Run the workload at least this long (virtual time since the start), e.g. the DESIGN §10
    /// "10 virtual minutes"; the scenario's own plan decides when unset.
    pub length: Option<Duration>,
    /// The workload.
    pub workload: WorkloadConfig,
    /// A relay broken on purpose (tests of the checkers only): the first relay gets it.
    pub sabotage: Option<Sabotage>,
    /// Every relay's `max_circuit_duration`, when set; DESIGN's default (30 min) otherwise.
    /// Set it below a flow's length to make circuits end at the duration limit.
    pub max_circuit_duration: Option<Duration>,
}

impl ScenarioConfig {
    /// A scenario with default sizes for tests: 4 clients; 1 relay for Tier 1, 2 for the
    /// relay restart and chaos, 3 for the others (a crashed relay's clients need a third relay
    /// to hold two reservations again); AutoRelay with `min_relays = 2`.
    #[must_use]
    pub fn new(kind: ScenarioKind, seed: u64) -> Self {
        let mut workload = WorkloadConfig::default();
        if kind == ScenarioKind::RttJitter {
            // An hour of virtual time: fewer, sparser flows.
            workload.max_pause = Duration::from_secs(20);
        }
        Self {
            kind,
            seed,
            clients: 4,
            relays: match kind {
                ScenarioKind::Tier1Restart => 1,
                ScenarioKind::RelayRestart | ScenarioKind::Chaos => 2,
                _ => 3,
            },
            policy: PolicyKind::AutoRelay,
            min_relays: 2,
            length: None,
            workload,
            sabotage: None,
            max_circuit_duration: None,
        }
    }

    /// The smallest number of relays the scenario makes sense with.
    #[must_use]
    pub fn min_relays_needed(&self) -> usize {
        match self.kind {
            ScenarioKind::Tier1Restart => 1,
            _ => 2,
        }
    }

    /// The command line that replays this run.
    #[must_use]
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "cargo run --release -p dep2p-sim -- {} --seed {} --clients {} --relays {} --policy {}",
            self.kind, self.seed, self.clients, self.relays, self.policy
        );
        if self.policy == PolicyKind::AutoRelay && self.min_relays != 2 {
            cmd += &format!(" --min-relays {}", self.min_relays);
        }
        if let Some(length) = self.length {
            cmd += &format!(" --virtual-secs {}", length.as_secs());
        }
        if let Some(pairs) = self.workload.pairs {
            cmd += &format!(" --pairs {pairs}");
        }
        if let Some(d) = self.max_circuit_duration {
            cmd += &format!(" --max-circuit-secs {}", d.as_secs());
        }
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
        Sabotage::ForwardAfterExpiry => "forward-after-expiry",
    }
}

/// Parses a sabotage name.
pub fn parse_sabotage(s: &str) -> Result<Sabotage, String> {
    match s {
        "leak-circuit-counter" => Ok(Sabotage::LeakCircuitCounter),
        "forward-after-close" => Ok(Sabotage::ForwardAfterClose),
        "corrupt-circuit-data" => Ok(Sabotage::CorruptCircuitData),
        "forward-after-expiry" => Ok(Sabotage::ForwardAfterExpiry),
        other => Err(format!(
            "unknown sabotage `{other}` (leak-circuit-counter, forward-after-close, \
             corrupt-circuit-data, forward-after-expiry)"
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
    /// Every client of a failed relay holds a new reservation elsewhere within this bound of
    /// the fault (crash or drain → first new reservation), when set.
    pub failover_bound: Option<Duration>,
    /// A client always holds at least one live reservation on a live relay (checked when
    /// AutoRelay keeps two or more).
    pub always_reachable: bool,
    /// A client's advertised circuit addresses never go empty once non-empty.
    pub no_addr_gap: bool,
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

/// A client's node settings: AutoRelay on for the AutoRelay policy.
fn client_config(config: &ScenarioConfig) -> NodeConfig {
    let mut node = node_config();
    if config.policy == PolicyKind::AutoRelay {
        let max = config.min_relays.max(4);
        node.auto_relay(Some(
            AutoRelayConfig::default()
                .min_relays(config.min_relays)
                .max_relays(max),
        ));
    }
    node
}

/// Relay limits of the scenarios: DESIGN defaults, except a circuit rate that lets the
/// workload's back-to-back flows through.
fn relay_limits(max_reservations: usize) -> (RelayLimits, CheckedLimits) {
    let checked = CheckedLimits {
        max_reservations,
        max_circuits: 1024,
    };
    let limits = RelayLimits::default()
        .max_reservations(u32::try_from(checked.max_reservations).unwrap_or(u32::MAX))
        .max_circuits(checked.max_circuits as u32)
        .circuit_rate_per_peer(RateLimit::new(600, Duration::from_secs(60)))
        .circuit_rate_per_ip(RateLimit::new(600, Duration::from_secs(60)))
        .reservation_rate_per_ip(RateLimit::new(600, Duration::from_secs(60)));
    (limits, checked)
}

/// The capacity scenario's relay A admits this many reservations.
fn capacity_of_a(clients: usize) -> usize {
    (clients / 4).max(1)
}

/// QUIC idle timeout of the simulated nodes (the failure detector; the DESIGN default).
const IDLE: Duration = Duration::from_secs(15);
/// After the workload stops, how long the world runs before the counters must be zero.
const QUIESCE: Duration = Duration::from_secs(20);
/// When the single fault of the Tier 2, drain and restart scenarios strikes.
const FAULT_AT: Duration = Duration::from_secs(10);
/// Most RESERVEs one client sends a full relay in the capacity run (2 minutes): the shun
/// after a refusal is drawn from 30–60 s and doubles, so 3 fit (at 0, ≥ 30 s, ≥ 90 s).
pub const CAPACITY_MAX_REFUSALS: u32 = 3;
/// Relay switches per client per hour the RTT-jitter scenario allows: AutoRelay's default
/// `max_switches_per_hour` (voluntary switches; replacing a lost relay is never capped, and
/// nothing is lost in that scenario).
pub const JITTER_MAX_SWITCHES_PER_HOUR: u32 = 4;
/// The RTT-jitter scenario's ping period (libp2p ping's default).
const JITTER_PING: Duration = Duration::from_secs(15);
/// How long clients of a restarted relay may take to be back on it: an attempt in flight can
/// take the attempt timeout (15 s), the backoff reached while the relay was down is at most
/// 8 s (four failures in 30 s: 1, 2, 4, 8 s, each drawn from half to full), and a handshake
/// and RESERVE.
const RESTART_BOUND: Duration = Duration::from_secs(30);

fn plan(config: &ScenarioConfig, sim: &Sim, relays: &[HostId], clients: &[HostId]) -> Plan {
    let autorelay2 = config.policy == PolicyKind::AutoRelay && config.min_relays >= 2;
    let mut failover_bound = None;
    let mut always_reachable = false;
    let mut no_addr_gap = false;
    let (script, heal_at, liveness_bound, swarm) = match config.kind {
        ScenarioKind::Tier1Restart => {
            let relay = relays[0];
            let (down, up) = (FAULT_AT, Duration::from_secs(30));
            let script = FaultScript::new()
                .at(down, Fault::Crash(relay))
                .at(up, Fault::Restart(relay));
            // Clients notice within the idle timeout and keep redialing with backoff until
            // the relay is back; a dial in flight may take an attempt timeout.
            (script, up, RESTART_BOUND, None)
        }
        ScenarioKind::Tier2Failover => {
            let a = relays[0];
            let script = FaultScript::new()
                .at(FAULT_AT, Fault::Crash(a))
                .at(FAULT_AT + Duration::from_secs(40), Fault::Restart(a));
            // DESIGN §10: a new reservation within idle timeout + 2 s. The node declares a
            // direct connection lost once it was silent for the idle timeout, counted from the
            // last datagram received (before the crash), so detection takes at most 15 s.
            let bound = IDLE + Duration::from_secs(2);
            failover_bound = Some(bound);
            always_reachable = autorelay2;
            no_addr_gap = autorelay2;
            (script, FAULT_AT, bound, None)
        }
        ScenarioKind::Tier2Drain => {
            let script = FaultScript::new().at(FAULT_AT, Fault::Drain(relays[0]));
            failover_bound = Some(Duration::from_secs(1));
            always_reachable = autorelay2;
            no_addr_gap = autorelay2;
            // Circuits through A close with it and are dialed again through another relay.
            (script, FAULT_AT, Duration::from_secs(3), None)
        }
        ScenarioKind::RelayRestart => {
            let a = relays[0];
            let up = FAULT_AT + Duration::from_secs(30);
            let script = FaultScript::new()
                .at(FAULT_AT, Fault::Crash(a))
                .at(up, Fault::Restart(a));
            always_reachable = autorelay2;
            no_addr_gap = autorelay2;
            (script, up, RESTART_BOUND, None)
        }
        ScenarioKind::Capacity => {
            always_reachable = false;
            // No faults: by 30 s every client holds its reservations; the run lasts 2 min so
            // refused clients come back to the full relay after their shun.
            (
                FaultScript::new(),
                Duration::ZERO,
                Duration::from_secs(30),
                None,
            )
        }
        ScenarioKind::RttJitter => {
            let model = LinkModel {
                latency: Duration::from_millis(20),
                jitter: Duration::from_millis(80),
                ..LinkModel::default()
            };
            let script = FaultScript::new().at(Duration::ZERO, Fault::AllLinks(model));
            always_reachable = autorelay2;
            (script, Duration::ZERO, Duration::from_secs(30), None)
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
            // Heal, then: idle timeout to notice leftovers, a backoff grown during the chaos,
            // a handshake.
            (
                draw.script.clone(),
                heal_at,
                IDLE + Duration::from_secs(25),
                Some(draw),
            )
        }
    };
    let natural = match config.kind {
        ScenarioKind::Capacity => Duration::from_secs(120),
        ScenarioKind::RttJitter => Duration::from_secs(3600),
        _ => heal_at + liveness_bound + Duration::from_secs(5),
    };
    let stop_at = config.length.map_or(natural, |l| l.max(natural));
    Plan {
        script,
        heal_at,
        liveness_bound,
        failover_bound,
        always_reachable,
        no_addr_gap,
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

/// The clients' policies and when each wants to be woken (a min-queue, so a step touches only
/// the policies due).
struct Clients {
    policies: Vec<Box<dyn RelayPolicy>>,
    /// Per client: the start instant until started, then the policy's `wake_at`.
    queued: Vec<Option<Instant>>,
    started: Vec<bool>,
    wakes: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Clients {
    fn new(policies: Vec<Box<dyn RelayPolicy>>, start_at: &[Instant]) -> Self {
        Self {
            queued: start_at.iter().copied().map(Some).collect(),
            started: vec![false; policies.len()],
            wakes: start_at
                .iter()
                .enumerate()
                .map(|(i, &at)| Reverse((at, i)))
                .collect(),
            policies,
        }
    }

    /// Re-queues client `i` after its policy ran.
    fn requeue(&mut self, i: usize) {
        let at = self.policies[i].wake_at();
        if self.queued[i] != at {
            self.queued[i] = at;
            if let Some(at) = at {
                self.wakes.push(Reverse((at, i)));
            }
        }
    }

    fn next(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, i))) = self.wakes.peek() {
            if self.queued[i] == Some(at) {
                return Some(at);
            }
            self.wakes.pop();
        }
        None
    }

    /// Starts or wakes every policy due at `now`.
    fn run_due(&mut self, sim: &mut Sim, now: Instant) {
        let mut due = Vec::new();
        while let Some(&Reverse((at, i))) = self.wakes.peek() {
            if at > now {
                break;
            }
            self.wakes.pop();
            if self.queued[i] == Some(at) {
                self.queued[i] = None;
                due.push(i);
            }
        }
        due.sort_unstable();
        due.dedup();
        for i in due {
            if self.started[i] {
                self.policies[i].on_wake(sim);
            } else {
                self.started[i] = true;
                self.policies[i].start(sim);
            }
            self.requeue(i);
        }
    }
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
    assert!(
        config.relays >= config.min_relays_needed(),
        "{} needs at least {} relays",
        config.kind,
        config.min_relays_needed()
    );
    let mut sim = Sim::new(config.seed);
    let (mut limits, checked) = relay_limits(1024);
    if let Some(d) = config.max_circuit_duration {
        limits = limits.max_circuit_duration(d);
    }
    let relays: Vec<HostId> = (0..config.relays)
        .map(|i| {
            let name = format!("relay-{}", char::from(b'A' + (i % 26) as u8));
            let limits = if config.kind == ScenarioKind::Capacity && i == 0 {
                let a = relay_limits(capacity_of_a(config.clients)).0;
                match config.max_circuit_duration {
                    Some(d) => a.max_circuit_duration(d),
                    None => a,
                }
            } else {
                limits.clone()
            };
            sim.add_relay(&name, node_config(), limits)
        })
        .collect();
    let clients: Vec<HostId> = (0..config.clients)
        .map(|i| sim.add_client(&format!("client-{i}"), client_config(config)))
        .collect();
    if let Some(sabotage) = config.sabotage {
        sim.set_sabotage(relays[0], sabotage);
    }
    let plan = make_plan(&sim, &relays, &clients);
    on_plan(&plan);

    // Clients start spread over the first second, so handshakes do not all collide.
    let mut workload_rng = sim.root().rng("workload");
    let start_at: Vec<Instant> = clients
        .iter()
        .map(|_| sim.now() + workload_rng.duration_up_to(Duration::from_secs(1)))
        .collect();
    let ping = (config.kind == ScenarioKind::RttJitter).then_some(JITTER_PING);
    let policies: Vec<Box<dyn RelayPolicy>> = clients
        .iter()
        .enumerate()
        .map(|(i, &client)| match config.policy {
            PolicyKind::AutoRelay => {
                let list = if config.kind == ScenarioKind::Tier1Restart {
                    &relays[..1]
                } else {
                    &relays[..]
                };
                Box::new(AutoRelayPolicy::new(&sim, client, list, ping)) as Box<dyn RelayPolicy>
            }
            PolicyKind::Scripted => {
                let (list, first) = match config.kind {
                    ScenarioKind::Tier1Restart => (vec![relays[0]], 0),
                    ScenarioKind::Tier2Failover | ScenarioKind::Tier2Drain => (relays.clone(), 0),
                    _ => (relays.clone(), i % relays.len()),
                };
                Box::new(ScriptedFailover::new(client, list, first)) as Box<dyn RelayPolicy>
            }
        })
        .collect();
    let mut clients_state = Clients::new(policies, &start_at);
    let mut workload = Workload::new(
        config.workload,
        clients.clone(),
        sim.now() + Duration::from_secs(2),
        workload_rng,
    );
    let client_index: BTreeMap<HostId, usize> =
        clients.iter().enumerate().map(|(i, &h)| (h, i)).collect();
    let mut checkers = Checkers::new(checked);
    if config.kind == ScenarioKind::Capacity {
        checkers.set_relay_limits(
            relays[0],
            CheckedLimits {
                max_reservations: capacity_of_a(config.clients),
                max_circuits: checked.max_circuits,
            },
        );
    }
    let mut metrics = Metrics::new(clients.len(), plan.no_addr_gap);
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
            if let Some(at) = clients_state.next() {
                limit = limit.min(at);
            }
        }
        if !liveness_done {
            limit = limit.min(liveness_at);
        }
        sim.step(limit);
        let now = sim.now();

        let mut faulted = false;
        while let Some(fault) = faults.next_if(|f| sim.at(f.at) <= now) {
            metrics.outage_begins(&sim, &fault.fault, &clients, &clients_state.policies);
            sim.apply(&fault.fault);
            faulted = true;
        }
        if faulted {
            metrics.reachability_all(&sim, &clients_state.policies);
        }
        if !stopped {
            clients_state.run_due(&mut sim, now);
            dispatch(
                &mut sim,
                &mut clients_state,
                &mut workload,
                &mut checkers,
                &mut metrics,
                &client_index,
            );
            workload.tick(&mut sim, &clients_state.policies);
        }
        dispatch(
            &mut sim,
            &mut clients_state,
            &mut workload,
            &mut checkers,
            &mut metrics,
            &client_index,
        );
        checkers.after_step(&sim);

        if !liveness_done && now >= liveness_at {
            liveness_done = true;
            liveness(
                config,
                &sim,
                &plan,
                &clients_state.policies,
                &workload,
                &clients,
                &relays,
                &mut checkers,
                &mut metrics,
            );
        }
        if !stopped && now >= stop {
            stopped = true;
            metrics.stop(now);
            workload.stop(&mut sim);
            for policy in &mut clients_state.policies {
                policy.stop(&mut sim);
            }
            dispatch(
                &mut sim,
                &mut clients_state,
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
    end_of_run_checks(config, &sim, &plan, &relays, &metrics, &mut checkers);

    let work = workload.stats();
    let hours = plan.stop_at.as_secs_f64() / 3600.0;
    let per_hour = |n: u32| f64::from(n) / hours;
    Report {
        scenario: config.kind,
        seed: config.seed,
        policy: config.policy,
        failover: metrics.failover.clone(),
        unresolved_outages: metrics.outage.iter().filter(|o| o.is_some()).count(),
        reservations_lost: metrics.lost,
        reservations_regained: metrics.regained,
        unreachable_total: metrics.unreachable_total,
        unreachable_max: metrics.unreachable_max,
        addr_gaps: metrics.addr_gaps,
        switches: metrics.switches.iter().map(|s| u64::from(s.0)).sum(),
        voluntary_switches: metrics.switches.iter().map(|s| u64::from(s.1)).sum(),
        switches_per_client_hour_max: metrics
            .switches
            .iter()
            .map(|s| per_hour(s.0))
            .fold(0.0, f64::max),
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
    clients: &mut Clients,
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
                let before = clients.policies[i].reservations().to_vec();
                clients.policies[i].on_event(sim, &event);
                clients.requeue(i);
                metrics.observe(
                    sim,
                    checkers,
                    i,
                    &event,
                    &before,
                    clients.policies[i].as_ref(),
                );
            }
            workload.on_event(sim, checkers, host, &event);
        }
    }
}

/// The liveness phase: `liveness_bound` after the faults healed, every client holds a
/// reservation and every pair has (re-)established a circuit since the heal; scenario-specific
/// checks (failover bound, return to a restarted relay, full relay avoided) too.
#[allow(clippy::too_many_arguments)]
fn liveness(
    config: &ScenarioConfig,
    sim: &Sim,
    plan: &Plan,
    policies: &[Box<dyn RelayPolicy>],
    workload: &Workload,
    clients: &[HostId],
    relays: &[HostId],
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
                abbreviate(&missing)
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
    let autorelay = config.policy == PolicyKind::AutoRelay;
    if autorelay
        && matches!(
            config.kind,
            ScenarioKind::Capacity | ScenarioKind::Tier2Failover | ScenarioKind::Tier2Drain
        )
    {
        // Enough live relays remain for every client to hold `min_relays` again.
        let short: Vec<&str> = clients
            .iter()
            .zip(policies)
            .filter(|(_, p)| p.reservations().len() < config.min_relays.min(config.relays - 1))
            .map(|(&c, _)| sim.name(c))
            .collect();
        if !short.is_empty() {
            checkers.violate(
                at,
                "liveness",
                format!(
                    "{} clients hold fewer than {} reservations: {}",
                    short.len(),
                    config.min_relays,
                    abbreviate(&short)
                ),
            );
        }
    }
    if autorelay && config.kind == ScenarioKind::RelayRestart {
        let a = relays[0];
        let away: Vec<&str> = clients
            .iter()
            .zip(policies)
            .filter(|(_, p)| !p.reservations().iter().any(|&(r, _)| r == a))
            .map(|(&c, _)| sim.name(c))
            .collect();
        if !away.is_empty() {
            checkers.violate(
                at,
                "restart-return",
                format!(
                    "{} clients are not back on the restarted {} {:.1}s after it restarted: {}",
                    away.len(),
                    sim.name(a),
                    plan.liveness_bound.as_secs_f64(),
                    abbreviate(&away)
                ),
            );
        }
    }
    if let Some(bound) = plan.failover_bound {
        let late: Vec<&str> = metrics
            .outage
            .iter()
            .zip(clients)
            .filter(|(o, _)| {
                o.as_ref()
                    .is_some_and(|o| at.saturating_sub(o.since_offset) > bound)
            })
            .map(|(_, &c)| sim.name(c))
            .collect();
        if !late.is_empty() {
            checkers.violate(
                at,
                "failover-bound",
                format!(
                    "{} clients hold no new reservation {:.1}s after the fault: {}",
                    late.len(),
                    bound.as_secs_f64(),
                    abbreviate(&late)
                ),
            );
        }
        if let Some(worst) = metrics.failover.iter().max()
            && *worst > bound
        {
            let over = metrics.failover.iter().filter(|d| **d > bound).count();
            checkers.violate(
                at,
                "failover-bound",
                format!(
                    "{over} failovers took longer than {:.1}s (worst {:.3}s)",
                    bound.as_secs_f64(),
                    worst.as_secs_f64()
                ),
            );
        }
    }
    // An outage still open on the reservation it began on was never noticed (the reservation
    // survived the fault, as through a short partition): not a failover.
    for (outage, policy) in metrics.outage.iter_mut().zip(policies) {
        if outage.as_ref().is_some_and(|o| {
            o.held.iter().all(|h| policy.reservations().contains(h)) && !o.held.is_empty()
        }) {
            *outage = None;
        }
    }
}

/// Checks on the whole run, after it ended.
fn end_of_run_checks(
    config: &ScenarioConfig,
    sim: &Sim,
    plan: &Plan,
    relays: &[HostId],
    metrics: &Metrics,
    checkers: &mut Checkers,
) {
    let at = sim.elapsed();
    if plan.always_reachable && metrics.unreachable_max > Duration::ZERO {
        checkers.violate(
            at,
            "always-reachable",
            format!(
                "clients were without a live reservation for {:.3}s in total (longest {:.3}s)",
                metrics.unreachable_total.as_secs_f64(),
                metrics.unreachable_max.as_secs_f64()
            ),
        );
    }
    if config.kind == ScenarioKind::Capacity {
        let a = relays[0];
        if let Some((&(client, _), &n)) = metrics
            .refused
            .iter()
            .filter(|((_, r), _)| *r == a)
            .max_by_key(|(_, n)| **n)
            && n > CAPACITY_MAX_REFUSALS
        {
            checkers.violate(
                at,
                "capacity-loop",
                format!(
                    "client-{client} was refused {n} times by the full {} (at most {CAPACITY_MAX_REFUSALS})",
                    sim.name(a)
                ),
            );
        }
    }
    if config.kind == ScenarioKind::RttJitter {
        let hours = plan.stop_at.as_secs_f64() / 3600.0;
        for (i, &(all, _)) in metrics.switches.iter().enumerate() {
            let rate = f64::from(all) / hours;
            if rate > f64::from(JITTER_MAX_SWITCHES_PER_HOUR) {
                checkers.violate(
                    at,
                    "switch-rate",
                    format!(
                        "client-{i} switched relays {all} times in {hours:.2}h \
                         (bound {JITTER_MAX_SWITCHES_PER_HOUR} per hour)"
                    ),
                );
            }
        }
    }
}

/// The first few names of a long list.
fn abbreviate(names: &[&str]) -> String {
    const SHOWN: usize = 10;
    if names.len() <= SHOWN {
        names.join(", ")
    } else {
        format!(
            "{}, … ({} more)",
            names[..SHOWN].join(", "),
            names.len() - SHOWN
        )
    }
}

/// A client's reservation: relay and connection.
type Held = (HostId, ConnectionId);

/// A client without the reservation it held when a fault struck (or when it lost one).
#[derive(Debug, Clone)]
struct Outage {
    since: Instant,
    /// `since` as an offset from the start of the run.
    since_offset: Duration,
    /// The reservations held when it began: the first reservation not among them ends it.
    held: Vec<Held>,
}

/// Reservation loss, failover times, reachability, advertised-address gaps and switches, seen
/// from the clients.
struct Metrics {
    outage: Vec<Option<Outage>>,
    failover: Vec<Duration>,
    lost: u64,
    regained: u64,
    /// Per reservation: the incarnation of the relay that granted it (a restarted relay does
    /// not hold its predecessor's reservations).
    granted_by: BTreeMap<(usize, Held), u32>,
    /// Per client: whether it ever held a live reservation, and since when it holds none.
    reached: Vec<bool>,
    unreachable_since: Vec<Option<Instant>>,
    unreachable_total: Duration,
    unreachable_max: Duration,
    /// Per client: whether it advertised a non-empty circuit address set.
    advertised: Vec<bool>,
    check_gaps: bool,
    addr_gaps: u64,
    /// Per client: relay switches (all but the initial fills), of which voluntary.
    switches: Vec<(u32, u32)>,
    /// RESERVEs refused, per (client, relay).
    refused: BTreeMap<(usize, HostId), u32>,
    counting: bool,
}

impl Metrics {
    fn new(clients: usize, check_gaps: bool) -> Self {
        Self {
            outage: vec![None; clients],
            failover: Vec::new(),
            lost: 0,
            regained: 0,
            granted_by: BTreeMap::new(),
            reached: vec![false; clients],
            unreachable_since: vec![None; clients],
            unreachable_total: Duration::ZERO,
            unreachable_max: Duration::ZERO,
            advertised: vec![false; clients],
            check_gaps,
            addr_gaps: 0,
            switches: vec![(0, 0); clients],
            refused: BTreeMap::new(),
            counting: true,
        }
    }

    /// A fault makes the clients reserved on an affected relay unreachable through it from now
    /// on: their failover time counts from here.
    fn outage_begins(
        &mut self,
        sim: &Sim,
        fault: &Fault,
        clients: &[HostId],
        policies: &[Box<dyn RelayPolicy>],
    ) {
        for (i, policy) in policies.iter().enumerate() {
            let client = clients[i];
            let hit = policy.reservations().iter().any(|&(relay, _)| match fault {
                Fault::Crash(h) | Fault::Drain(h) | Fault::Isolate(h) => {
                    *h == relay || *h == client
                }
                Fault::Gray { host, .. } => *host == relay,
                Fault::Partition { from, to, .. } => {
                    (from.contains(&relay) && to.contains(&client))
                        || (from.contains(&client) && to.contains(&relay))
                }
                _ => false,
            });
            if hit && self.outage[i].is_none() {
                self.outage[i] = Some(Outage {
                    since: sim.now(),
                    since_offset: sim.elapsed(),
                    held: policy.reservations().to_vec(),
                });
            }
        }
    }

    /// One event of client `i`, after its policy saw it (`before`: its reservations before).
    fn observe(
        &mut self,
        sim: &Sim,
        checkers: &mut Checkers,
        i: usize,
        event: &Event,
        before: &[Held],
        policy: &dyn RelayPolicy,
    ) {
        let now = sim.now();
        let after = policy.reservations();
        match event {
            Event::CircuitAddrsChanged { addrs } => {
                if !addrs.is_empty() {
                    self.advertised[i] = true;
                } else if self.advertised[i] && self.counting {
                    self.addr_gaps += 1;
                    if self.check_gaps {
                        checkers.violate(
                            sim.elapsed(),
                            "address-gap",
                            format!("client-{i} advertised an empty circuit address set"),
                        );
                    }
                }
            }
            Event::RelaySwitched {
                from: Some(_), why, ..
            } if self.counting => {
                self.switches[i].0 += 1;
                if *why == SwitchReason::Better {
                    self.switches[i].1 += 1;
                }
            }
            Event::ReservationFailed {
                relay,
                kind: ReservationFailureKind::Refused(_),
                ..
            } => {
                if let Some(host) = sim.host_of(*relay) {
                    *self.refused.entry((i, host)).or_default() += 1;
                }
            }
            _ => {}
        }
        if before == after {
            return;
        }
        for held in after {
            if !before.contains(held) {
                self.granted_by
                    .entry((i, *held))
                    .or_insert_with(|| sim.incarnation(held.0));
            }
        }
        for held in before {
            if !after.contains(held) {
                self.granted_by.remove(&(i, *held));
                if self.counting {
                    self.lost += 1;
                    self.outage[i].get_or_insert(Outage {
                        since: now,
                        since_offset: sim.elapsed(),
                        held: before.to_vec(),
                    });
                }
            }
        }
        if let Some(outage) = &self.outage[i]
            && after.iter().any(|h| !outage.held.contains(h))
        {
            self.regained += 1;
            self.failover.push(now - outage.since);
            self.outage[i] = None;
        }
        self.reachability(sim, i, after);
    }

    /// Whether client `i` holds a live reservation on a live relay now; updates its
    /// unreachable time.
    fn reachability(&mut self, sim: &Sim, i: usize, held: &[Held]) {
        if !self.counting {
            return;
        }
        let live = held.iter().any(|h| {
            sim.is_up(h.0)
                && !sim.is_draining(h.0)
                && self.granted_by.get(&(i, *h)) == Some(&sim.incarnation(h.0))
        });
        let now = sim.now();
        match (live, self.unreachable_since[i]) {
            (true, Some(since)) => {
                self.unreachable_since[i] = None;
                self.add_unreachable(now - since);
            }
            (true, None) => self.reached[i] = true,
            (false, None) if self.reached[i] => self.unreachable_since[i] = Some(now),
            _ => {}
        }
    }

    fn reachability_all(&mut self, sim: &Sim, policies: &[Box<dyn RelayPolicy>]) {
        for (i, policy) in policies.iter().enumerate() {
            self.reachability(sim, i, policy.reservations());
        }
    }

    fn add_unreachable(&mut self, d: Duration) {
        self.unreachable_total += d;
        self.unreachable_max = self.unreachable_max.max(d);
    }

    /// The workload stops: close the open unreachable periods; count nothing more.
    fn stop(&mut self, now: Instant) {
        for since in std::mem::take(&mut self.unreachable_since)
            .into_iter()
            .flatten()
        {
            self.add_unreachable(now - since);
        }
        self.counting = false;
    }
}
