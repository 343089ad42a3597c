//! The named scenarios hold every invariant and show the failover they are about.

use std::time::Duration;

use dep2p_sim::scenario::{self, ScenarioConfig, ScenarioKind};

#[test]
fn tier1_clients_re_reserve_on_the_restarted_relay() {
    let config = ScenarioConfig::new(ScenarioKind::Tier1Restart, 1);
    let report = scenario::run(&config, &mut |_| {}, &mut |_| {});
    assert!(report.passed(), "{report}");
    assert_eq!(report.reservations_lost, config.clients as u64, "{report}");
    assert_eq!(
        report.reservations_regained, config.clients as u64,
        "{report}"
    );
    // The relay is down from 10 s to 30 s: nobody can be back sooner than 20 s.
    let p50 = report.failover_quantile(0.5).expect("failovers happened");
    assert!(p50 >= Duration::from_secs(20), "{report}");
    assert!(
        report.bytes_delivered > 0 && report.flows_completed > 0,
        "{report}"
    );
}

#[test]
fn tier2_clients_fail_over_to_relay_b_after_relay_a_dies() {
    let config = ScenarioConfig::new(ScenarioKind::Tier2Failover, 1);
    let report = scenario::run(&config, &mut |_| {}, &mut |_| {});
    assert!(report.passed(), "{report}");
    assert_eq!(
        report.reservations_regained, config.clients as u64,
        "{report}"
    );
    // Detection by the QUIC idle timeout (15 s), at worst one keep-alive (5 s) later.
    let max = report.failover_quantile(1.0).expect("failovers happened");
    assert!(max <= Duration::from_secs(22), "{report}");
    // After the failover every reservation sits on relay B.
    let (_, last) = report.timeline.samples().last().expect("sampled");
    assert_eq!(last[0], 0, "relay A holds nothing at the end");
}

#[test]
fn chaos_seeds_hold_every_invariant() {
    for seed in [1, 2] {
        let config = ScenarioConfig::new(ScenarioKind::Chaos, seed);
        let report = scenario::run(&config, &mut |_| {}, &mut |_| {});
        assert!(report.passed(), "seed {seed}:\n{report}");
    }
}
