//! A whole simulator scenario decoded from the input: the scenario kind (which relay policy the
//! clients follow), the seed, the numbers of clients and relays, the workload, and the fault
//! script (crashes, drains, partitions, isolations, gray failures, link models). The script is
//! closed by a heal, default links and a restart of every host it stopped, then the run goes on
//! as the chaos scenario does (liveness window, workload stop, quiescence).
//!
//! Asserted: no panic, and no safety violation (limits, forward-after-close, circuit data,
//! counters back to zero). Liveness is not asserted: an input may choose faults no bounded
//! window recovers from.

use std::time::Duration;

use arbitrary::Unstructured;

use dep2p_sim::fault::{Fault, FaultScript};
use dep2p_sim::net::{BurstLoss, LinkModel};
use dep2p_sim::scenario::{Plan, ScenarioConfig, ScenarioKind, run_planned};
use dep2p_sim::workload::WorkloadConfig;
use dep2p_sim::{HostId, Sim};

/// Most faults decoded from one input.
const MAX_FAULTS: usize = 8;
/// Faults start within this much virtual time.
const FAULT_WINDOW_MS: u64 = 30_000;
/// Checkers the harness asserts on (everything but liveness).
pub const SAFETY_CHECKERS: [&str; 4] = [
    "limits",
    "forward-after-close",
    "counters-return-to-zero",
    "circuit-data-prefix",
];

fn prob(u: &mut Unstructured) -> f64 {
    f64::from(u.arbitrary::<u8>().unwrap_or(0)) / 512.0
}

fn link(u: &mut Unstructured) -> LinkModel {
    let ms = |u: &mut Unstructured, max: u64| {
        Duration::from_millis(u64::from(u.arbitrary::<u8>().unwrap_or(0)) % (max + 1))
    };
    LinkModel {
        latency: ms(u, 200),
        jitter: ms(u, 50),
        loss: prob(u),
        burst: if u.arbitrary::<bool>().unwrap_or(false) {
            Some(BurstLoss {
                enter: prob(u),
                leave: prob(u).max(0.05),
                loss_in_burst: prob(u) * 2.0,
            })
        } else {
            None
        },
        duplicate: prob(u),
        reorder: prob(u),
        reorder_delay: ms(u, 100),
        bandwidth: if u.arbitrary::<bool>().unwrap_or(false) {
            Some(10_000 + u64::from(u.arbitrary::<u16>().unwrap_or(0)) * 16)
        } else {
            None
        },
        mtu: if u.arbitrary::<bool>().unwrap_or(false) {
            Some(1200 + usize::from(u.arbitrary::<u8>().unwrap_or(0)))
        } else {
            None
        },
    }
}

fn hosts(u: &mut Unstructured, all: &[HostId]) -> Vec<HostId> {
    let mask = u.arbitrary::<u8>().unwrap_or(1);
    all.iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << (i % 8)) != 0)
        .map(|(_, &h)| h)
        .collect()
}

fn fault(u: &mut Unstructured, all: &[HostId]) -> Fault {
    let host = all[usize::from(u.arbitrary::<u8>().unwrap_or(0)) % all.len()];
    match u.arbitrary::<u8>().unwrap_or(0) % 9 {
        0 => Fault::Crash(host),
        1 => Fault::Restart(host),
        2 => Fault::Drain(host),
        3 => Fault::Partition {
            from: hosts(u, all),
            to: hosts(u, all),
            one_way: u.arbitrary().unwrap_or(false),
        },
        4 => Fault::Isolate(host),
        5 => Fault::Gray {
            host,
            max_datagram: usize::from(u.arbitrary::<u16>().unwrap_or(0)) % 1500,
        },
        6 => Fault::Heal,
        7 => Fault::AllLinks(link(u)),
        _ => {
            let other = all[usize::from(u.arbitrary::<u8>().unwrap_or(0)) % all.len()];
            Fault::Link {
                a: host,
                b: other,
                model: link(u),
            }
        }
    }
}

/// The plan: the decoded faults, then heal, clean links and restarts, then the chaos timing.
fn plan(u: &mut Unstructured, relays: &[HostId], clients: &[HostId]) -> Plan {
    let all: Vec<HostId> = relays.iter().chain(clients).copied().collect();
    let mut script = FaultScript::new();
    let mut last = Duration::from_secs(1);
    let n = usize::from(u.arbitrary::<u8>().unwrap_or(0)) % (MAX_FAULTS + 1);
    for _ in 0..n {
        let at = Duration::from_millis(
            1_000 + u64::from(u.arbitrary::<u16>().unwrap_or(0)) % FAULT_WINDOW_MS,
        );
        let f = fault(u, &all);
        script.push(at, f);
        last = last.max(at);
    }
    let heal_at = last + Duration::from_secs(2);
    script.push(heal_at, Fault::Heal);
    script.push(heal_at, Fault::AllLinks(LinkModel::default()));
    for &host in &all {
        // A drained host stops a grace period after the drain; restart is a no-op on a host
        // that still runs, so every stopped host is up again by `heal_at`.
        script.push(heal_at, Fault::Restart(host));
    }
    let liveness_bound = Duration::from_secs(40);
    let stop_at = heal_at + liveness_bound + Duration::from_secs(5);
    Plan {
        script,
        heal_at,
        liveness_bound,
        stop_at,
        end_at: stop_at + Duration::from_secs(20),
        swarm: None,
        // Faults decoded from fuzz bytes make no liveness promise beyond the heal bound.
        failover_bound: None,
        always_reachable: false,
        no_addr_gap: false,
    }
}

/// The harness.
pub fn scenario(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let kind = match u.arbitrary::<u8>().unwrap_or(0) % 3 {
        0 => ScenarioKind::Tier1Restart,
        1 => ScenarioKind::Tier2Failover,
        _ => ScenarioKind::Chaos,
    };
    let mut config = ScenarioConfig::new(kind, u.arbitrary().unwrap_or(0));
    config.clients = 1 + usize::from(u.arbitrary::<u8>().unwrap_or(0)) % 3;
    config.relays = match kind {
        ScenarioKind::Tier1Restart => 1,
        ScenarioKind::Chaos => 2 + usize::from(u.arbitrary::<u8>().unwrap_or(0)) % 2,
        _ => 2,
    };
    config.workload = WorkloadConfig {
        flow_bytes: 1 + u64::from(u.arbitrary::<u16>().unwrap_or(0)) % 16_384,
        bytes_per_tick: 1 + usize::from(u.arbitrary::<u16>().unwrap_or(0)) % 4096,
        ..WorkloadConfig::default()
    };
    let report = run_planned(
        &config,
        &mut |_: &Sim, relays, clients| plan(&mut u, relays, clients),
        &mut |_| {},
        &mut |_| {},
    );
    let broken: Vec<_> = report
        .violations
        .iter()
        .filter(|v| SAFETY_CHECKERS.contains(&v.checker))
        .collect();
    assert!(
        broken.is_empty(),
        "safety violations in {}: {broken:#?}",
        config.replay_command()
    );
}
