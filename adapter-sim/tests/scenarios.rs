//! The named scenarios hold every invariant and show the failover they are about. Clients use
//! the node's AutoRelay unless a test says otherwise.

use std::time::Duration;

use dep2p_sim::policy::PolicyKind;
use dep2p_sim::report::Report;
use dep2p_sim::scenario::{self, ScenarioConfig, ScenarioKind};

/// DESIGN §10: a crashed relay's clients hold a new reservation within idle timeout + 2 s.
const FAILOVER_BOUND: Duration = Duration::from_secs(17);

fn run(config: &ScenarioConfig) -> Report {
    let report = scenario::run(config, &mut |_| {}, &mut |_| {});
    assert!(report.passed(), "{report}");
    report
}

#[test]
fn tier1_clients_re_reserve_on_the_restarted_relay() {
    let config = ScenarioConfig::new(ScenarioKind::Tier1Restart, 1);
    let report = run(&config);
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
fn tier2_clients_of_a_crashed_relay_reserve_elsewhere_within_idle_plus_2s_and_stay_reachable() {
    // 150 clients × 2 reservations over 3 relays; the 1,000-client run is the CLI's (README).
    let mut config = ScenarioConfig::new(ScenarioKind::Tier2Failover, 1);
    config.clients = 150;
    let report = run(&config);
    // About two thirds of the clients held a reservation on the crashed relay.
    assert!(report.reservations_regained >= 50, "{report}");
    assert_eq!(report.reservations_regained, report.reservations_lost);
    let max = report.failover_quantile(1.0).expect("failovers happened");
    assert!(max <= FAILOVER_BOUND, "{report}");
    // min_relays = 2: the second relay was there all along.
    assert_eq!(report.unreachable_max, Duration::ZERO, "{report}");
    assert_eq!(report.addr_gaps, 0, "{report}");
}

#[test]
fn tier2_with_the_scripted_policy_also_fails_over_within_the_bound() {
    let mut config = ScenarioConfig::new(ScenarioKind::Tier2Failover, 2);
    config.policy = PolicyKind::Scripted;
    let report = run(&config);
    assert_eq!(
        report.reservations_regained, config.clients as u64,
        "{report}"
    );
    let max = report.failover_quantile(1.0).expect("failovers happened");
    assert!(max <= FAILOVER_BOUND, "{report}");
    // One reservation at a time: its clients were unreachable until the failover.
    assert!(report.unreachable_max > Duration::from_secs(5), "{report}");
}

#[test]
fn clients_of_a_drained_relay_move_within_a_second_without_an_address_gap() {
    let mut config = ScenarioConfig::new(ScenarioKind::Tier2Drain, 1);
    config.clients = 12;
    let report = run(&config);
    assert!(report.reservations_regained > 0, "{report}");
    let max = report.failover_quantile(1.0).expect("failovers happened");
    assert!(max <= Duration::from_secs(1), "{report}");
    assert_eq!(report.addr_gaps, 0, "{report}");
    assert_eq!(report.unreachable_max, Duration::ZERO, "{report}");
}

#[test]
fn clients_return_to_a_restarted_relay_after_backoff() {
    // The scenario's checker fails the run unless every client holds a reservation on the
    // restarted relay within 30 s of its restart.
    let config = ScenarioConfig::new(ScenarioKind::RelayRestart, 1);
    let report = run(&config);
    assert_eq!(
        report.reservations_regained, config.clients as u64,
        "{report}"
    );
    assert_eq!(report.unreachable_max, Duration::ZERO, "{report}");
}

#[test]
fn a_full_relay_pushes_clients_elsewhere_and_nobody_loops_on_it() {
    // Relay A admits a quarter of the clients; the checkers fail the run if A exceeds that,
    // if a client lacks two reservations at 30 s, or if one was refused more than
    // CAPACITY_MAX_REFUSALS times in the 2-minute run.
    let mut config = ScenarioConfig::new(ScenarioKind::Capacity, 1);
    config.clients = 16;
    let report = run(&config);
    let (_, peak) = report
        .timeline
        .samples()
        .iter()
        .max_by_key(|(_, c)| c[0])
        .expect("sampled");
    assert_eq!(peak[0], 4, "relay A full at its limit: {report}");
}

#[test]
fn rtt_jitter_keeps_relay_switches_per_client_per_hour_under_the_cap() {
    let config = ScenarioConfig::new(ScenarioKind::RttJitter, 1);
    let report = run(&config);
    assert!(
        report.switches_per_client_hour_max <= f64::from(scenario::JITTER_MAX_SWITCHES_PER_HOUR),
        "{report}"
    );
    assert_eq!(report.reservations_lost, 0, "{report}");
}

#[test]
fn chaos_seeds_hold_every_invariant() {
    for seed in [1, 2] {
        let config = ScenarioConfig::new(ScenarioKind::Chaos, seed);
        let report = scenario::run(&config, &mut |_| {}, &mut |_| {});
        assert!(report.passed(), "seed {seed}:\n{report}");
    }
    let mut config = ScenarioConfig::new(ScenarioKind::Chaos, 3);
    config.policy = PolicyKind::Scripted;
    run(&config);
}
