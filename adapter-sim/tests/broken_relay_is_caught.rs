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
