//! AutoRelay in the node (DESIGN §5.2, Tier 2): clients keep `min_relays` reservations on
//! distinct relays and replace a lost relay at once, asserted in virtual time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use dep2p_core::autorelay::{AutoRelayConfig, CandidateSource};
use dep2p_core::identity::PeerId;
use dep2p_core::node::{Event, NodeConfig};
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::testing::World;

/// Default QUIC idle timeout (NodeConfig): how long a silent relay takes to be noticed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);

struct Tier2 {
    world: World,
    relays: Vec<usize>,
    clients: Vec<usize>,
}

fn tier2(seed: u64, relays: usize, clients: usize, relay_limits: RelayLimits) -> Tier2 {
    let mut world = World::new(seed);
    let relays: Vec<usize> = (0..relays)
        .map(|_| {
            let mut config = NodeConfig::default();
            config.relay_server(Some(relay_limits.clone()));
            world.add_node(config)
        })
        .collect();
    let candidates: Vec<(PeerId, Vec<multiaddr::Multiaddr>)> = relays
        .iter()
        .map(|&r| {
            let addr = dep2p_core::addr::quic_multiaddr(world.addr(r));
            (world.peer_id(r), vec![addr])
        })
        .collect();
    let clients: Vec<usize> = (0..clients)
        .map(|_| {
            let mut config = NodeConfig::default();
            config.auto_relay(Some(AutoRelayConfig::default().min_relays(2)));
            let c = world.add_node(config);
            world.command(c, |n, now| {
                n.add_relay_candidates(now, &candidates, CandidateSource::Bootstrap)
            });
            c
        })
        .collect();
    Tier2 {
        world,
        relays,
        clients,
    }
}

/// The relays each client holds a reservation on now, from its event log.
fn held(world: &World, client: usize) -> BTreeSet<PeerId> {
    let mut held = BTreeSet::new();
    for event in world.events(client) {
        match event {
            Event::ReservationAccepted { relay, .. } => {
                held.insert(*relay);
            }
            Event::ReservationLost { relay, .. } => {
                held.remove(relay);
            }
            _ => {}
        }
    }
    held
}

fn all_hold(world: &World, clients: &[usize], count: usize) -> bool {
    clients.iter().all(|&c| held(world, c).len() >= count)
}

/// When (virtual time) `client` was first accepted by a relay other than `dead` after `since`.
fn replaced_at(
    world: &World,
    client: usize,
    dead: PeerId,
    before: &BTreeSet<PeerId>,
    since: Instant,
) -> Option<Instant> {
    world
        .sim_node(client)
        .events
        .iter()
        .find_map(|(at, e)| match e {
            Event::ReservationAccepted {
                relay,
                renewed: false,
                ..
            } if *at >= since && *relay != dead && !before.contains(relay) => Some(*at),
            _ => None,
        })
}

#[test]
fn clients_of_a_crashed_relay_hold_a_new_reservation_within_idle_timeout_plus_two_seconds() {
    let Tier2 {
        mut world,
        relays,
        clients,
    } = tier2(41, 3, 1000, RelayLimits::default());
    assert!(
        world.run_until(Duration::from_secs(30), |w| all_hold(w, &clients, 2)),
        "every client reaches min_relays = 2"
    );
    world.run_for(Duration::from_secs(5));

    // Crash the relay with the most clients.
    let mut load = |r: usize| world.node(r).relay_stats().map_or(0, |s| s.reservations);
    let mut by_load: Vec<(usize, usize)> = relays.iter().map(|&r| (load(r), r)).collect();
    by_load.sort();
    let (_, crashed) = *by_load.last().expect("relays");
    let dead = world.peer_id(crashed);
    let users: Vec<(usize, BTreeSet<PeerId>)> = clients
        .iter()
        .map(|&c| (c, held(&world, c)))
        .filter(|(_, h)| h.contains(&dead))
        .collect();
    assert!(!users.is_empty(), "some clients used the crashed relay");
    let crash_at = world.now();
    world.isolate(crashed);

    let bound = IDLE_TIMEOUT + Duration::from_secs(2);
    world.run_for(bound + Duration::from_secs(1));
    let mut worst = Duration::ZERO;
    for (client, before) in &users {
        let at = replaced_at(&world, *client, dead, before, crash_at)
            .unwrap_or_else(|| panic!("client {client} never replaced the crashed relay"));
        worst = worst.max(at - crash_at);
        // min_relays = 2: the other reservation stayed live the whole time (never lost).
        for event in world.events(*client) {
            if let Event::ReservationLost { relay, .. } = event {
                assert_eq!(
                    *relay, dead,
                    "client {client} lost a live relay's reservation"
                );
            }
        }
    }
    eprintln!("{} clients failed over, worst {worst:?}", users.len());
    assert!(worst <= bound, "worst failover {worst:?} exceeds {bound:?}");
    assert!(
        all_hold(&world, &clients, 2),
        "every client is back at two reservations"
    );
}

#[test]
fn clients_of_a_draining_relay_move_within_one_second_without_an_address_gap() {
    let Tier2 {
        mut world,
        relays,
        clients,
    } = tier2(42, 3, 20, RelayLimits::default());
    assert!(world.run_until(Duration::from_secs(30), |w| all_hold(w, &clients, 2)));
    let drained = relays[0];
    let dead = world.peer_id(drained);
    let users: Vec<(usize, BTreeSet<PeerId>)> = clients
        .iter()
        .map(|&c| (c, held(&world, c)))
        .filter(|(_, h)| h.contains(&dead))
        .collect();
    let at = world.now();
    world.command(drained, |n, now| n.drain(now));
    world.run_for(Duration::from_secs(1));
    for (client, before) in &users {
        let moved = replaced_at(&world, *client, dead, before, at)
            .unwrap_or_else(|| panic!("client {client} did not move off the draining relay"));
        assert!(moved - at <= Duration::from_secs(1));
    }
    // No gap: every address set a client advertised after its first one is non-empty.
    for &client in &clients {
        let sets: Vec<usize> = world
            .events(client)
            .filter_map(|e| match e {
                Event::CircuitAddrsChanged { addrs } => Some(addrs.len()),
                _ => None,
            })
            .collect();
        assert!(
            sets.iter().skip_while(|n| **n == 0).all(|n| *n > 0),
            "client {client}: {sets:?}"
        );
    }
}

#[test]
fn restarted_relay_becomes_a_candidate_again_after_backoff() {
    let Tier2 {
        mut world,
        relays,
        clients,
    } = tier2(43, 2, 4, RelayLimits::default());
    assert!(world.run_until(Duration::from_secs(30), |w| all_hold(w, &clients, 2)));
    let a = relays[0];
    let dead = world.peer_id(a);
    world.isolate(a);
    world.run_for(IDLE_TIMEOUT + Duration::from_secs(5));
    for &c in &clients {
        assert!(
            !held(&world, c).contains(&dead),
            "client {c} noticed the crash"
        );
    }
    world.heal(a);
    let healed_at = world.now();
    // Backoff tops out at 5 minutes by default: within that (plus a handshake) every client is
    // back on the restarted relay.
    assert!(world.run_until(Duration::from_secs(330), |w| {
        clients.iter().all(|&c| held(w, c).contains(&dead))
    }));
    assert!(world.now() - healed_at <= Duration::from_secs(330));
}

#[test]
fn full_relay_pushes_clients_elsewhere_without_looping_on_it() {
    let Tier2 {
        mut world,
        relays,
        clients,
    } = tier2(44, 3, 12, RelayLimits::default().max_reservations(2));
    // 12 clients × 2 reservations over 3 relays of capacity 2 cannot all be served: the
    // relays fill up and the rest keep trying with backoff, not in a loop.
    world.run_for(Duration::from_secs(600));
    for &r in &relays {
        let stats = world.node(r).relay_stats().expect("relay");
        assert_eq!(stats.reservations, 2, "relay {r} is full");
        let refused = stats
            .refusals
            .get("reservations_full")
            .copied()
            .unwrap_or(0);
        // With exponential shunning from 1 min, each of 12 clients is refused at most a
        // handful of times per relay in 10 minutes.
        assert!(
            refused <= 12 * 6,
            "relay {r} refused {refused} RESERVEs: clients loop on it"
        );
    }
    let attempts: BTreeMap<usize, usize> = clients
        .iter()
        .map(|&c| {
            (
                c,
                world
                    .events(c)
                    .filter(|e| matches!(e, Event::ReservationFailed { .. }))
                    .count(),
            )
        })
        .collect();
    assert!(attempts.values().all(|&n| n <= 3 * 6), "{attempts:?}");
}

#[test]
fn a_drained_client_stops_autorelay_instead_of_replacing_its_relays() {
    let Tier2 {
        mut world,
        relays,
        clients,
    } = tier2(45, 2, 1, RelayLimits::default());
    assert!(world.run_until(Duration::from_secs(30), |w| all_hold(w, &clients, 2)));
    let client = clients[0];
    world.command(client, |n, now| n.drain(now));
    world.run_for(Duration::from_secs(5));
    assert_eq!(world.node(client).stats().connections, 0, "no redial");
    for &r in &relays {
        let stats = world.node(r).relay_stats().expect("relay");
        assert_eq!(
            stats.reservations, 0,
            "relay {r} released the drained client"
        );
    }
}
