//! One seed replays a run: the same scenario and seed print the same trace hash, a different
//! seed a different one.

use dep2p_sim::scenario::{self, ScenarioConfig, ScenarioKind};

fn hash(kind: ScenarioKind, seed: u64) -> String {
    let config = ScenarioConfig::new(kind, seed);
    let report = scenario::run(&config, &mut |_| {}, &mut |_| {});
    assert!(report.passed(), "{report}");
    report.trace_hash
}

#[test]
fn same_scenario_and_seed_give_the_same_trace_hash_and_another_seed_a_different_one() {
    let first = hash(ScenarioKind::Tier2Failover, 11);
    assert_eq!(first, hash(ScenarioKind::Tier2Failover, 11));
    assert_ne!(first, hash(ScenarioKind::Tier2Failover, 12));
}

#[test]
fn chaos_replays_byte_for_byte() {
    // Chaos draws its faults and link model from the seed, so this also covers the fault,
    // link and workload generators.
    let first = hash(ScenarioKind::Chaos, 5);
    assert_eq!(first, hash(ScenarioKind::Chaos, 5));
}
