//! The checkers can fail: a relay broken on purpose is caught, and the report names the seed
//! and the command that replays the run.

use dep2p_sim::Sabotage;
use dep2p_sim::scenario::{self, ScenarioConfig, ScenarioKind};

fn run_broken(sabotage: Sabotage) -> dep2p_sim::report::Report {
    let mut config = ScenarioConfig::new(ScenarioKind::Tier1Restart, 3);
    config.sabotage = Some(sabotage);
    scenario::run(&config, &mut |_| {}, &mut |_| {})
}

#[test]
fn a_relay_that_leaks_its_circuit_counter_fails_counters_return_to_zero() {
    let report = run_broken(Sabotage::LeakCircuitCounter);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.checker == "counters-return-to-zero" && v.detail.contains("circuits")),
        "{report}"
    );
    let text = report.to_string();
    assert!(text.contains("seed 3 broke an invariant"), "{text}");
    assert!(
        text.contains(
            "--seed 3 --clients 4 --relays 1 --policy autorelay --sabotage leak-circuit-counter"
        ),
        "{text}"
    );
}

#[test]
fn a_relay_that_forwards_after_close_is_caught() {
    let report = run_broken(Sabotage::ForwardAfterClose);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.checker == "forward-after-close"),
        "{report}"
    );
}

#[test]
fn a_relay_that_corrupts_circuit_data_fails_the_prefix_check() {
    let report = run_broken(Sabotage::CorruptCircuitData);
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.checker == "circuit-data-prefix"),
        "{report}"
    );
}

/// Circuits of one second end mid-flow (a 32 KiB flow takes about 1.6 s), so relays hit the
/// duration limit again and again.
fn short_circuits(seed: u64) -> ScenarioConfig {
    let mut config = ScenarioConfig::new(ScenarioKind::Tier1Restart, seed);
    config.max_circuit_duration = Some(std::time::Duration::from_secs(1));
    config
}

#[test]
fn circuits_ended_by_the_duration_limit_hold_every_invariant() {
    let report = scenario::run(&short_circuits(3), &mut |_| {}, &mut |_| {});
    assert!(report.violations.is_empty(), "{report}");
    // No flow fits in a circuit: the duration limit ended nearly every circuit.
    assert_eq!(report.flows_completed, 0, "{report}");
    assert!(
        report.circuits_broken * 2 > report.circuits_established,
        "{report}"
    );
    assert!(report.replay.contains("--max-circuit-secs 1"), "{report}");
}

#[test]
fn a_relay_that_forwards_after_expiry_is_caught() {
    let mut config = short_circuits(3);
    config.sabotage = Some(Sabotage::ForwardAfterExpiry);
    let report = scenario::run(&config, &mut |_| {}, &mut |_| {});
    assert!(
        report
            .violations
            .iter()
            .any(|v| v.checker == "circuit-after-expiry"),
        "{report}"
    );
    assert!(
        report
            .to_string()
            .contains("--max-circuit-secs 1 --sabotage forward-after-expiry"),
        "{report}"
    );
}
