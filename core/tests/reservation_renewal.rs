//! A reservation is renewed at three quarters of its lifetime, again and again, without a gap:
//! with a 60 s TTL the client renews about every 45 s, each renewal pushes the expiry forward,
//! and the relay counts the reservation once throughout. No renewal leaves a stream behind.

mod relay_world;

use std::time::{Duration, Instant};

use dep2p_core::node::{Event, NodeConfig};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::testing::WORLD_UNIX_START;

use relay_world::reserved_trio;

const TTL: Duration = Duration::from_secs(60);
const RENEWALS: usize = 4;

#[test]
fn a_reservation_is_renewed_at_three_quarters_of_its_lifetime_and_counted_once() {
    let mut trio = reserved_trio(
        41,
        RelayLimits::default().reservation_ttl(TTL),
        NodeConfig::default(),
    );
    let (a, r, a_r) = (trio.a, trio.r, trio.a_r);
    trio.world.run_for(Duration::from_secs(5));
    let settled = trio.world.node(a).stats();
    let accepted = |world: &dep2p_core::testing::World| -> Vec<(Instant, bool, u64)> {
        world
            .sim_node(a)
            .events
            .iter()
            .filter_map(|(at, e)| match e {
                Event::ReservationAccepted {
                    connection,
                    renewed,
                    expire_unix_secs,
                    ..
                } if *connection == a_r => Some((*at, *renewed, *expire_unix_secs)),
                _ => None,
            })
            .collect()
    };
    let mut counts = std::collections::BTreeSet::new();
    assert!(
        trio.world.run_until(TTL * (RENEWALS as u32 + 1), |w| {
            counts.insert(
                w.sim_node(r)
                    .node
                    .relay_stats()
                    .map_or(0, |s| s.reservations),
            );
            accepted(w).len() > RENEWALS
        }),
        "A renewed {RENEWALS} times"
    );
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![1],
        "R held exactly one reservation at every step"
    );

    let history = accepted(&trio.world);
    assert!(!history[0].1, "the first acceptance is not a renewal");
    for pair in history.windows(2) {
        let ((prev_at, _, prev_expire), (at, renewed, expire)) = (pair[0], pair[1]);
        assert!(renewed, "every later acceptance is a renewal");
        let gap = at - prev_at;
        assert!(
            gap >= Duration::from_secs(44) && gap <= Duration::from_secs(46),
            "renewed at 3/4 of the 60 s lifetime, not after {gap:?}"
        );
        assert!(
            expire >= prev_expire + 44,
            "each renewal pushes the expiry forward: {prev_expire} → {expire}"
        );
        let unix_then =
            (WORLD_UNIX_START + trio.world.elapsed() - (trio.world.now() - at)).as_secs();
        assert!(
            (unix_then + 59..=unix_then + 61).contains(&expire),
            "a renewal grants a full TTL from its own time: {expire} vs now {unix_then}"
        );
    }
    assert!(
        !trio.world.events(a).any(|e| matches!(
            e,
            Event::ReservationLost { .. } | Event::ReservationFailed { .. }
        )),
        "the reservation was never lost nor a renewal refused"
    );
    let relay = trio.world.node(r).relay_stats().expect("relay");
    assert_eq!(relay.reservations, 1);
    assert_eq!(
        relay.reservations_accepted,
        RENEWALS as u64 + 1,
        "R admitted the first RESERVE and each renewal"
    );
    trio.world.run_for(Duration::from_secs(5));
    assert_eq!(
        trio.world.node(a).stats(),
        settled,
        "each RESERVE stream is gone once answered: renewals leave no stream entries behind"
    );
    let held = trio.world.node(a).reservation(a_r).expect("still held");
    assert_eq!(held.expire_unix_secs, history.last().expect("some").2);
}
