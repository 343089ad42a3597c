//! Behaviour tests for [`AutoRelay`], driven by a small fake node that answers its actions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use multiaddr::{Multiaddr, Protocol};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

use super::*;
use crate::identity::{PeerId, keypair_from_seed};

const SECOND: Duration = Duration::from_secs(1);
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// Peer ids of relays 0..32 (key generation is not free; do it once).
fn peer(i: usize) -> PeerId {
    static PEERS: OnceLock<Vec<PeerId>> = OnceLock::new();
    PEERS.get_or_init(|| {
        (0..32u8)
            .map(|i| keypair_from_seed([i + 1; 32]).public().to_peer_id())
            .collect()
    })[i]
}

fn addr(i: usize) -> Multiaddr {
    let ip = std::net::Ipv4Addr::new(10, 0, 0, u8::try_from(i).unwrap());
    Multiaddr::empty()
        .with(Protocol::Ip4(ip))
        .with(Protocol::Udp(4001))
        .with(Protocol::QuicV1)
}

fn circuit(i: usize) -> Multiaddr {
    addr(i)
        .with(Protocol::P2p(peer(i)))
        .with(Protocol::P2pCircuit)
}

fn index_of(p: PeerId) -> usize {
    (0..32).find(|&i| peer(i) == p).unwrap()
}

/// How a fake relay answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Dials succeed, reservations are granted.
    Accept,
    /// Dials succeed, RESERVE is refused with this status.
    Refuse(Status),
    /// Dials fail (relay down).
    Down,
    /// Dials succeed, HOP is answered with `na`.
    NoHop,
    /// Dials and RESERVEs are never answered.
    Silent,
}

#[derive(Debug)]
struct FakeRelay {
    behaviour: Behaviour,
    rtt: Duration,
    connected: bool,
}

/// A fake node: answers AutoRelay's actions from each relay's [`Behaviour`], keeps the truth
/// about live reservations, and checks the no-gap rule on every `AddrsChanged`.
struct Driver {
    ar: AutoRelay,
    now: Instant,
    relays: BTreeMap<PeerId, FakeRelay>,
    /// Relays on which a reservation is really live (the fake node's truth), with the instant
    /// at which the fake node renews it (three quarters of its lifetime, as the node does).
    live: BTreeMap<PeerId, Instant>,
    /// Whether the fake node renews reservations.
    renew: bool,
    /// Every action, with the time it was polled.
    log: Vec<(Instant, AutoRelayAction)>,
}

impl Driver {
    fn new(config: AutoRelayConfig, seed: u64) -> Self {
        let rng = ChaCha20Rng::seed_from_u64(seed);
        Self {
            ar: AutoRelay::new(config, rng).unwrap(),
            now: crate::testing::virtual_epoch(),
            relays: BTreeMap::new(),
            live: BTreeMap::new(),
            renew: true,
            log: Vec::new(),
        }
    }

    fn relay(&mut self, i: usize, behaviour: Behaviour, rtt_ms: u64) {
        self.relays.insert(
            peer(i),
            FakeRelay {
                behaviour,
                rtt: Duration::from_millis(rtt_ms),
                connected: false,
            },
        );
        let _ = self
            .ar
            .add_candidate(self.now, peer(i), &[addr(i)], CandidateSource::Static);
    }

    fn set_behaviour(&mut self, i: usize, behaviour: Behaviour) {
        self.relays.get_mut(&peer(i)).unwrap().behaviour = behaviour;
    }

    /// Polls every pending action, checking the address rule, without answering any.
    fn drain(&mut self) -> Vec<AutoRelayAction> {
        let mut out = Vec::new();
        while let Some(action) = self.ar.poll_action() {
            match &action {
                AutoRelayAction::AddrsChanged { addrs } => self.check_addrs(addrs),
                AutoRelayAction::Release { peer } => {
                    self.live.remove(peer);
                }
                _ => {}
            }
            self.log.push((self.now, action.clone()));
            out.push(action);
        }
        out
    }

    /// No gap: while a reservation is live, the advertised set holds one of its addresses; and
    /// it never lists a relay without a live reservation.
    fn check_addrs(&self, addrs: &[Multiaddr]) {
        for a in addrs {
            let relay = a
                .iter()
                .find_map(|p| match p {
                    Protocol::P2p(p) => Some(p),
                    _ => None,
                })
                .unwrap();
            assert!(
                self.live.contains_key(&relay),
                "advertised {a} without a live reservation"
            );
        }
        if !self.live.is_empty() {
            assert!(
                !addrs.is_empty(),
                "a gap: no address advertised while {} reservations are live",
                self.live.len()
            );
        }
    }

    /// Answers actions at the current time until none are left.
    fn settle(&mut self) {
        for _ in 0..1000 {
            let actions = self.drain();
            if actions.is_empty() {
                return;
            }
            for action in actions {
                self.answer(action);
            }
        }
        panic!("actions never settled");
    }

    fn answer(&mut self, action: AutoRelayAction) {
        let now = self.now;
        match action {
            AutoRelayAction::Dial { peer, .. } => {
                let relay = self.relays.get_mut(&peer).unwrap();
                match relay.behaviour {
                    Behaviour::Down => self.ar.on_dial_failed(now, peer),
                    Behaviour::Silent => {}
                    _ => {
                        relay.connected = true;
                        let rtt = relay.rtt;
                        self.ar.on_connected(now, peer, rtt);
                    }
                }
            }
            AutoRelayAction::Reserve { peer } => {
                let relay = &self.relays[&peer];
                match relay.behaviour {
                    Behaviour::Accept => {
                        self.live.insert(peer, now + HOUR * 3 / 4);
                        let i = index_of(peer);
                        self.ar
                            .on_reservation_accepted(now, peer, now + HOUR, &[circuit(i)]);
                    }
                    Behaviour::Refuse(status) => self.ar.on_reservation_refused(now, peer, status),
                    Behaviour::NoHop => self.ar.on_hop_unsupported(now, peer),
                    Behaviour::Down => self.ar.on_reservation_failed(now, peer),
                    Behaviour::Silent => {}
                }
            }
            AutoRelayAction::Release { .. }
            | AutoRelayAction::AddrsChanged { .. }
            | AutoRelayAction::Switched { .. } => {}
        }
    }

    /// The relay's connection drops (crash, or drain when `drained`).
    fn lose(&mut self, i: usize, drained: bool) {
        let p = peer(i);
        self.live.remove(&p);
        self.relays.get_mut(&p).unwrap().connected = false;
        self.ar.on_connection_lost(self.now, p, drained);
    }

    /// Renews (or fails to renew) the reservations due at the current time.
    fn renew_due(&mut self) {
        let now = self.now;
        let due: Vec<PeerId> = self
            .live
            .iter()
            .filter(|&(_, &at)| at <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in due {
            match self.relays[&peer].behaviour {
                Behaviour::Accept => {
                    self.live.insert(peer, now + HOUR * 3 / 4);
                    let i = index_of(peer);
                    self.ar
                        .on_reservation_accepted(now, peer, now + HOUR, &[circuit(i)]);
                }
                Behaviour::Refuse(status) => {
                    self.live.remove(&peer);
                    self.ar.on_reservation_refused(now, peer, status);
                }
                Behaviour::NoHop | Behaviour::Down | Behaviour::Silent => {
                    self.live.remove(&peer);
                    self.ar.on_reservation_failed(now, peer);
                }
            }
            self.settle();
        }
    }

    /// Moves time forward to `now + d`, firing every timeout (and renewal) on the way and
    /// answering.
    fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        self.settle();
        loop {
            let renewal = if self.renew {
                self.live.values().min().copied()
            } else {
                None
            };
            let next = match (self.ar.poll_timeout(), renewal) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let Some(at) = next.filter(|&at| at <= target) else {
                break;
            };
            assert!(at >= self.now, "time went back");
            self.now = at;
            self.ar.handle_timeout(at);
            self.settle();
            if self.renew {
                self.renew_due();
            }
        }
        self.now = target;
        self.ar.handle_timeout(target);
        self.settle();
    }

    fn held(&self) -> BTreeSet<PeerId> {
        self.ar.held_relays().iter().map(|h| h.peer).collect()
    }

    fn attempts_on(&self, i: usize, since: Instant) -> usize {
        self.log
            .iter()
            .filter(|(at, a)| {
                *at >= since
                    && matches!(a, AutoRelayAction::Dial { peer, .. } | AutoRelayAction::Reserve { peer } if *peer == self::peer(i))
            })
            .count()
    }

    fn switches(&self) -> Vec<(Instant, Option<PeerId>, PeerId, SwitchReason)> {
        self.log
            .iter()
            .filter_map(|(at, a)| match a {
                AutoRelayAction::Switched { from, to, why } => Some((*at, *from, *to, *why)),
                _ => None,
            })
            .collect()
    }
}

fn config() -> AutoRelayConfig {
    AutoRelayConfig::default()
}

#[test]
fn reaches_min_relays_from_a_pool() {
    let mut d = Driver::new(config(), 1);
    for i in 0..6 {
        d.relay(i, Behaviour::Accept, 40 + 10 * i as u64);
    }
    d.settle();
    assert_eq!(d.held().len(), 2);
    assert_eq!(d.live.keys().copied().collect::<BTreeSet<_>>(), d.held());
    assert_eq!(d.ar.circuit_addrs().len(), 2);
    let switches = d.switches();
    assert_eq!(switches.len(), 2);
    assert!(
        switches
            .iter()
            .all(|s| s.1.is_none() && s.3 == SwitchReason::Initial)
    );
    // Nothing more to do.
    d.advance(MINUTE);
    assert_eq!(d.held().len(), 2);
}

#[test]
fn attempts_run_in_parallel_when_below_min() {
    let mut d = Driver::new(config().min_relays(3).max_relays(4), 2);
    for i in 0..6 {
        d.relay(i, Behaviour::Accept, 50);
    }
    let dials = d
        .drain()
        .into_iter()
        .filter(|a| matches!(a, AutoRelayAction::Dial { .. }))
        .count();
    assert_eq!(dials, 3, "one dial per missing slot, at once");
}

#[test]
fn losing_a_relay_triggers_immediate_replacement_without_gap() {
    let mut d = Driver::new(config(), 3);
    for i in 0..5 {
        d.relay(i, Behaviour::Accept, 50);
    }
    d.settle();
    let before = d.held();
    let lost = *before.iter().next().unwrap();
    d.lose(index_of(lost), false);
    // Same `now`: the withdrawal and a replacement attempt are already queued.
    let actions = d.drain();
    assert!(
        matches!(&actions[0], AutoRelayAction::AddrsChanged { addrs } if addrs.len() == 1),
        "{actions:?}"
    );
    let attempt = actions.iter().find_map(|a| match a {
        AutoRelayAction::Dial { peer, .. } | AutoRelayAction::Reserve { peer } => Some(*peer),
        _ => None,
    });
    let replacement = attempt.expect("an immediate replacement attempt");
    assert!(!before.contains(&replacement));
    for a in actions {
        d.answer(a);
    }
    d.settle();
    assert_eq!(d.held().len(), 2);
    assert!(!d.held().contains(&lost));
    let last = *d.switches().last().unwrap();
    assert_eq!(
        last,
        (d.now, Some(lost), replacement, SwitchReason::ConnectionLost)
    );
    let c = d.ar.candidate(&lost).unwrap();
    assert!(c.retry_at.unwrap() > d.now, "the lost relay backs off");
}

#[test]
fn drained_relay_is_replaced_at_once() {
    let mut d = Driver::new(config(), 4);
    for i in 0..4 {
        d.relay(i, Behaviour::Accept, 50);
    }
    d.settle();
    let drained = *d.held().iter().next().unwrap();
    d.set_behaviour(index_of(drained), Behaviour::Down);
    let t = d.now;
    d.lose(index_of(drained), true);
    d.settle();
    assert_eq!(d.now, t);
    assert_eq!(d.held().len(), 2);
    let last = *d.switches().last().unwrap();
    assert_eq!(last.1, Some(drained));
    assert_eq!(last.3, SwitchReason::Drained);
}

#[test]
fn refused_relay_is_shunned_and_retried_after_backoff_not_looped() {
    let cfg = config().min_relays(1).max_relays(2);
    let mut d = Driver::new(cfg, 5);
    d.relay(0, Behaviour::Refuse(Status::ResourceLimitExceeded), 20);
    let start = d.now;
    d.settle();
    assert_eq!(d.attempts_on(0, start), 2, "one dial, one reserve");
    let c = d.ar.candidate(&peer(0)).unwrap();
    assert!(c.shunned);
    let retry = c.retry_at.unwrap();
    assert!(
        retry >= d.now + 30 * SECOND,
        "shunned for at least half of shun_base"
    );

    // A second, worse relay is taken at once instead of looping on the refusing one.
    d.relay(1, Behaviour::Accept, 200);
    d.settle();
    assert_eq!(d.held(), BTreeSet::from([peer(1)]));
    assert_eq!(d.attempts_on(0, start), 2);

    // Alone again: the refusing relay is retried only when its shun ends, with growing shuns.
    d.lose(1, false);
    d.set_behaviour(1, Behaviour::Down);
    let before_shun_end = retry - d.now - SECOND;
    d.advance(before_shun_end);
    assert_eq!(d.attempts_on(0, start), 2, "no attempt while shunned");
    d.advance(HOUR);
    let attempts = d.attempts_on(0, start);
    assert!(
        (3..=12).contains(&attempts),
        "retried with a growing shun, not looped: {attempts}"
    );

    // Once it accepts again, it is taken at its next retry.
    d.set_behaviour(0, Behaviour::Accept);
    d.advance(31 * MINUTE);
    assert!(d.held().contains(&peer(0)));
    let c = d.ar.candidate(&peer(0)).unwrap();
    assert_eq!((c.refusals, c.shunned), (0, false));
}

#[test]
fn refused_renewal_is_replaced_at_once_and_permission_denied_shuns_longest() {
    let mut d = Driver::new(config(), 14);
    for i in 0..4 {
        d.relay(i, Behaviour::Accept, 50);
    }
    d.settle();
    let held: Vec<PeerId> = d.held().into_iter().collect();
    d.set_behaviour(
        index_of(held[0]),
        Behaviour::Refuse(Status::ReservationRefused),
    );
    d.set_behaviour(
        index_of(held[1]),
        Behaviour::Refuse(Status::PermissionDenied),
    );
    // Both renewals are refused at 3/4 of the lifetime; both are replaced at once.
    d.advance(HOUR * 3 / 4);
    let now = d.now;
    let after = d.held();
    assert_eq!(after.len(), 2);
    assert!(!after.contains(&held[0]) && !after.contains(&held[1]));
    let reasons: Vec<_> = d
        .switches()
        .iter()
        .rev()
        .take(2)
        .map(|s| (s.0, s.3))
        .collect();
    assert_eq!(reasons, vec![(now, SwitchReason::Refused); 2]);
    let refused = d.ar.candidate(&held[0]).unwrap();
    let denied = d.ar.candidate(&held[1]).unwrap();
    assert!(refused.shunned && denied.shunned);
    assert!(refused.retry_at.unwrap() <= now + MINUTE);
    assert_eq!(denied.retry_at.unwrap(), now + 30 * MINUTE);
}

#[test]
fn restarted_relay_comes_back_after_backoff() {
    let mut d = Driver::new(config(), 6);
    d.relay(0, Behaviour::Accept, 30);
    d.relay(1, Behaviour::Accept, 30);
    d.settle();
    assert_eq!(d.held().len(), 2);
    let start = d.now;
    d.set_behaviour(0, Behaviour::Down);
    d.lose(0, false);
    d.advance(20 * MINUTE);
    let attempts = d.attempts_on(0, start);
    assert!(
        (3..=20).contains(&attempts),
        "backs off exponentially while down: {attempts}"
    );
    assert_eq!(d.held(), BTreeSet::from([peer(1)]));
    // The relay restarts; it is back within one maximal backoff.
    d.set_behaviour(0, Behaviour::Accept);
    d.advance(5 * MINUTE + SECOND);
    assert_eq!(d.held().len(), 2);
    assert!(d.held().contains(&peer(0)));
}

#[test]
fn non_hop_candidates_are_dropped_not_retried() {
    let mut d = Driver::new(config().min_relays(1), 7);
    d.relay(0, Behaviour::NoHop, 10);
    d.relay(1, Behaviour::Accept, 100);
    d.settle();
    assert!(!d.ar.pool().contains(&peer(0)));
    assert_eq!(d.held(), BTreeSet::from([peer(1)]));
    // Re-adding from a list is refused for a while.
    let again =
        d.ar.add_candidate(d.now, peer(0), &[addr(0)], CandidateSource::Bootstrap);
    assert_eq!(again, AddOutcome::NotHop);
    // Identify without HOP drops a candidate too.
    let _ =
        d.ar.add_candidate(d.now, peer(2), &[addr(2)], CandidateSource::Other("dht"));
    d.ar.on_identified(d.now, peer(2), false, &[]);
    assert!(!d.ar.pool().contains(&peer(2)));
    // An identify that lists HOP is fresh evidence.
    d.ar.on_identified(d.now, peer(0), true, &[addr(0)]);
    let c = d.ar.candidate(&peer(0)).unwrap();
    assert_eq!(c.sources, vec![CandidateSource::IdentifiedHop]);
    assert_eq!(c.state, CandidateState::Connected);
    d.settle();
}

#[test]
fn pool_bound_holds_and_pinned_candidates_stay() {
    let cfg = config().pool_capacity(8);
    let mut d = Driver::new(cfg, 8);
    for i in 0..4 {
        d.relay(i, Behaviour::Accept, 50);
    }
    d.settle();
    for i in 4..32 {
        let _ =
            d.ar.add_candidate(d.now, peer(i), &[addr(i)], CandidateSource::Other("dht"));
        assert!(d.ar.pool().len() <= 8);
    }
    for i in 0..4 {
        assert!(
            d.ar.pool().contains(&peer(i)),
            "static candidates are pinned"
        );
    }
    // Fill the rest with pinned ones: then an unpinned newcomer is refused.
    let mut d = Driver::new(config().pool_capacity(4).max_relays(4), 9);
    for i in 0..4 {
        d.relay(i, Behaviour::Silent, 50);
    }
    let outcome =
        d.ar.add_candidate(d.now, peer(9), &[addr(9)], CandidateSource::IdentifiedHop);
    assert_eq!(outcome, AddOutcome::PoolFull);
    assert_eq!(d.ar.pool().len(), 4);
}

#[test]
fn unpinned_newcomer_evicts_a_never_connected_candidate_first() {
    let mut d = Driver::new(config().pool_capacity(4).min_relays(1).max_relays(1), 10);
    // Two connected-once relays (one held), two never connected.
    d.relay(0, Behaviour::Accept, 10);
    d.settle();
    for i in 1..4 {
        let _ =
            d.ar.add_candidate(d.now, peer(i), &[addr(i)], CandidateSource::Other("dht"));
    }
    d.ar.on_connected(d.now, peer(1), 30 * Duration::from_millis(1));
    let outcome =
        d.ar.add_candidate(d.now, peer(4), &[addr(4)], CandidateSource::Other("dht"));
    match outcome {
        AddOutcome::AddedEvicting(victim) => {
            assert!(victim == peer(2) || victim == peer(3), "{victim}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn clearly_better_relay_is_adopted_after_dwell_without_gap() {
    let mut d = Driver::new(config().min_relays(1), 11);
    d.relay(0, Behaviour::Accept, 200);
    d.settle();
    assert_eq!(d.held(), BTreeSet::from([peer(0)]));
    d.relay(1, Behaviour::Accept, 20);
    d.ar.on_rtt_sample(d.now, peer(1), Duration::from_millis(20));
    d.settle();
    assert_eq!(d.held(), BTreeSet::from([peer(0)]), "min_dwell holds");
    d.advance(10 * MINUTE + SECOND);
    assert_eq!(d.held(), BTreeSet::from([peer(1)]));
    let last = *d.switches().last().unwrap();
    assert_eq!(
        (last.1, last.2, last.3),
        (Some(peer(0)), peer(1), SwitchReason::Better)
    );
    // The order: add the new address, then withdraw the old one, then release.
    let tail: Vec<_> = d
        .log
        .iter()
        .rev()
        .take(4)
        .rev()
        .map(|(_, a)| a.clone())
        .collect();
    // Held relays are listed in peer order.
    let both = if peer(0) < peer(1) {
        vec![circuit(0), circuit(1)]
    } else {
        vec![circuit(1), circuit(0)]
    };
    assert_eq!(
        tail,
        vec![
            AutoRelayAction::AddrsChanged { addrs: both },
            AutoRelayAction::Switched {
                from: Some(peer(0)),
                to: peer(1),
                why: SwitchReason::Better
            },
            AutoRelayAction::AddrsChanged {
                addrs: vec![circuit(1)]
            },
            AutoRelayAction::Release { peer: peer(0) },
        ]
    );
}

#[test]
fn silent_attempts_time_out_and_move_on() {
    let mut d = Driver::new(config().min_relays(1), 12);
    d.relay(0, Behaviour::Silent, 10);
    d.settle();
    d.relay(1, Behaviour::Accept, 300);
    d.settle();
    assert!(d.held().is_empty(), "still waiting on the silent dial");
    d.advance(16 * SECOND);
    assert_eq!(d.held(), BTreeSet::from([peer(1)]));
    assert_eq!(d.ar.candidate(&peer(0)).unwrap().failures, 1);
}

#[test]
fn unrenewed_reservation_expires_and_is_replaced() {
    let mut d = Driver::new(config().min_relays(1), 13);
    d.relay(0, Behaviour::Accept, 10);
    d.relay(1, Behaviour::Accept, 10);
    d.settle();
    let first = *d.held().iter().next().unwrap();
    // The fake never renews: at expiry the reservation is gone.
    d.renew = false;
    d.live.remove(&first);
    d.advance(HOUR);
    let last = *d.switches().last().unwrap();
    assert_eq!((last.1, last.3), (Some(first), SwitchReason::Expired));
    assert_eq!(d.held().len(), 1);
}

#[test]
fn randomised_tie_breaking_spreads_clients_across_equal_relays() {
    let relays = 6;
    let clients = 600;
    let mut picks = vec![0usize; relays];
    for seed in 0..clients {
        let mut d = Driver::new(config().min_relays(1).max_relays(1), seed);
        for i in 0..relays {
            d.relays.insert(
                peer(i),
                FakeRelay {
                    behaviour: Behaviour::Accept,
                    rtt: 50 * Duration::from_millis(1),
                    connected: false,
                },
            );
        }
        let addrs: Vec<[Multiaddr; 1]> = (0..relays).map(|i| [addr(i)]).collect();
        let list = (0..relays).map(|i| (peer(i), &addrs[i][..]));
        let outcomes = d.ar.add_candidates(d.now, list, CandidateSource::Bootstrap);
        assert!(outcomes.iter().all(|o| *o == AddOutcome::Added));
        d.settle();
        let held = *d.held().iter().next().unwrap();
        picks[index_of(held)] += 1;
    }
    let fair = clients as usize / relays;
    for (i, &n) in picks.iter().enumerate() {
        assert!(
            n > fair / 2 && n < fair * 3 / 2,
            "relay {i} picked by {n} of {clients} clients: {picks:?}"
        );
    }
}

#[test]
fn a_much_worse_relay_is_not_picked_by_luck() {
    for seed in 0..50 {
        let mut d = Driver::new(config().min_relays(1).max_relays(1), seed);
        d.relay(0, Behaviour::Accept, 20);
        d.relay(1, Behaviour::Accept, 20);
        d.relay(2, Behaviour::Accept, 20);
        for i in 0..3 {
            d.ar.on_rtt_sample(d.now, peer(i), Duration::from_millis(20));
        }
        d.relay(3, Behaviour::Accept, 500);
        d.ar.on_rtt_sample(d.now, peer(3), Duration::from_millis(500));
        d.settle();
        assert!(!d.held().contains(&peer(3)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// With equal relays and noisy RTT samples, voluntary switches stay under the hourly cap,
    /// for every relay and in total.
    #[test]
    fn rtt_jitter_does_not_make_selection_flap(
        seed in any::<u64>(),
        jitter_percent in 10u64..80,
        relays in 3usize..7,
        loose in any::<bool>(),
    ) {
        let cap = 2;
        // `loose` turns margin and dwell nearly off, so only the cap holds switching back.
        let (margin, dwell) = if loose { (1, SECOND) } else { (30, 5 * MINUTE) };
        let cfg = config()
            .max_switches_per_hour(cap)
            .switch_margin_percent(margin)
            .min_dwell(dwell);
        let mut d = Driver::new(cfg, seed);
        let mut noise = ChaCha20Rng::seed_from_u64(seed ^ 0x5eed);
        for i in 0..relays {
            d.relay(i, Behaviour::Accept, 50);
        }
        d.settle();
        for _ in 0..(6 * 360) {
            for i in 0..relays {
                let spread = 50 * jitter_percent / 100;
                let v = backoff::uniform(&mut noise, 2 * spread + 1);
                let rtt = Duration::from_millis(50 - spread + v);
                d.ar.on_rtt_sample(d.now, peer(i), rtt);
            }
            d.advance(10 * SECOND);
        }
        let better: Vec<_> = d.switches().into_iter().filter(|s| s.3 == SwitchReason::Better).collect();
        for (at, ..) in &better {
            let in_hour = better.iter().filter(|(t, ..)| *t >= *at && *t < *at + HOUR).count();
            prop_assert!(in_hour <= cap as usize, "{in_hour} switches within an hour");
        }
        for i in 0..relays {
            let touching = better.iter().filter(|s| s.1 == Some(peer(i)) || s.2 == peer(i));
            for (at, ..) in touching.clone() {
                let in_hour = touching.clone().filter(|(t, ..)| *t >= *at && *t < *at + HOUR).count();
                prop_assert!(in_hour <= cap as usize);
            }
        }
        prop_assert_eq!(d.held().len(), 2);
        if !loose && jitter_percent <= 20 {
            // With the default margin, mild jitter alone never justifies a switch. (Heavy jitter
            // can, rarely: two smoothed RTTs drift 30 % apart; the dwell and the cap bound it.)
            prop_assert!(better.is_empty(), "{} switches from jitter alone", better.len());
        }
    }
}

/// One input for the random-sequence property test.
#[derive(Debug, Clone)]
enum Input {
    Add(usize, u8),
    Connected(usize, u16),
    Identified(usize, bool),
    Rtt(usize, u16),
    Accepted(usize, u16),
    Refused(usize, u8),
    Failed(usize),
    Lost(usize, bool),
    DialFailed(usize),
    HopUnsupported(usize),
    Advance(u32),
}

fn input() -> impl Strategy<Value = Input> {
    let i = 0usize..12;
    prop_oneof![
        3 => (i.clone(), 0u8..4).prop_map(|(i, s)| Input::Add(i, s)),
        2 => (i.clone(), 1u16..500).prop_map(|(i, r)| Input::Connected(i, r)),
        1 => (i.clone(), any::<bool>()).prop_map(|(i, h)| Input::Identified(i, h)),
        2 => (i.clone(), 1u16..500).prop_map(|(i, r)| Input::Rtt(i, r)),
        2 => (i.clone(), 1u16..7200).prop_map(|(i, e)| Input::Accepted(i, e)),
        1 => (i.clone(), 0u8..4).prop_map(|(i, s)| Input::Refused(i, s)),
        1 => i.clone().prop_map(Input::Failed),
        2 => (i.clone(), any::<bool>()).prop_map(|(i, d)| Input::Lost(i, d)),
        1 => i.clone().prop_map(Input::DialFailed),
        1 => i.clone().prop_map(Input::HopUnsupported),
        3 => (0u32..600_000).prop_map(Input::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary inputs, related to the actions or not, never break the invariants.
    #[test]
    fn invariants_hold_under_random_inputs(
        seed in any::<u64>(),
        inputs in proptest::collection::vec(input(), 1..120),
    ) {
        let cfg = config().pool_capacity(6).min_relays(2).max_relays(3);
        let mut ar = AutoRelay::new(cfg.clone(), ChaCha20Rng::seed_from_u64(seed)).unwrap();
        let mut now = crate::testing::virtual_epoch();
        let statuses = [
            Status::ReservationRefused,
            Status::ResourceLimitExceeded,
            Status::PermissionDenied,
            Status::MalformedMessage,
        ];
        let sources = [
            CandidateSource::Bootstrap,
            CandidateSource::Static,
            CandidateSource::IdentifiedHop,
            CandidateSource::Other("dht"),
        ];
        let ms = |v: u16| Duration::from_millis(u64::from(v));
        for input in inputs {
            let before = ar.candidates();
            match input {
                Input::Add(i, s) => {
                    let _ = ar.add_candidate(now, peer(i), &[addr(i)], sources[usize::from(s)]);
                }
                Input::Connected(i, r) => ar.on_connected(now, peer(i), ms(r)),
                Input::Identified(i, h) => ar.on_identified(now, peer(i), h, &[addr(i)]),
                Input::Rtt(i, r) => ar.on_rtt_sample(now, peer(i), ms(r)),
                Input::Accepted(i, e) => ar.on_reservation_accepted(
                    now,
                    peer(i),
                    now + Duration::from_secs(u64::from(e)),
                    &[circuit(i)],
                ),
                Input::Refused(i, s) => ar.on_reservation_refused(now, peer(i), statuses[usize::from(s)]),
                Input::Failed(i) => ar.on_reservation_failed(now, peer(i)),
                Input::Lost(i, dr) => ar.on_connection_lost(now, peer(i), dr),
                Input::DialFailed(i) => ar.on_dial_failed(now, peer(i)),
                Input::HopUnsupported(i) => ar.on_hop_unsupported(now, peer(i)),
                Input::Advance(ms) => {
                    now += Duration::from_millis(u64::from(ms));
                    ar.handle_timeout(now);
                }
            }
            while let Some(action) = ar.poll_action() {
                if let AutoRelayAction::Dial { peer, .. } | AutoRelayAction::Reserve { peer } = action {
                    // Never an attempt on a candidate still backing off or shunned: check the
                    // state it had before this input.
                    if let Some(c) = before.iter().find(|c| c.peer == peer) {
                        prop_assert!(
                            c.retry_at.is_none_or(|at| at <= now),
                            "attempt on {peer} before its backoff ends"
                        );
                    }
                }
            }
            let held = ar.held_relays();
            prop_assert!(held.len() <= cfg.get_max_relays());
            let distinct: BTreeSet<_> = held.iter().map(|h| h.peer).collect();
            prop_assert_eq!(distinct.len(), held.len());
            let busy = ar
                .candidates()
                .iter()
                .filter(|c| matches!(c.state, CandidateState::Held | CandidateState::Dialing | CandidateState::Reserving))
                .count();
            prop_assert!(busy <= cfg.get_max_relays(), "busy {busy}");
            prop_assert!(ar.pool().len() <= 6);
            prop_assert!(ar.pool().not_hop_len() <= 6);
            let expected: Vec<Multiaddr> = held.iter().flat_map(|h| h.circuit_addrs.clone()).collect();
            prop_assert_eq!(ar.circuit_addrs(), &expected[..]);
            if let Some(t) = ar.poll_timeout() {
                prop_assert!(t > now);
            }
        }
    }

    /// With a fake node answering and relays that come and go, the advertised set never has a
    /// gap, never lists a dead reservation, and min_relays is restored whenever enough relays
    /// accept.
    #[test]
    fn failover_never_leaves_a_gap(
        seed in any::<u64>(),
        events in proptest::collection::vec((0usize..6, 0u8..6, 1u32..120), 1..60),
    ) {
        let mut d = Driver::new(config(), seed);
        for i in 0..6 {
            d.relay(i, Behaviour::Accept, 20 + 15 * i as u64);
        }
        d.settle();
        for (i, what, secs) in events {
            match what {
                0 => d.lose(i, false),
                1 => d.lose(i, true),
                2 => d.set_behaviour(i, Behaviour::Down),
                3 => d.set_behaviour(i, Behaviour::Refuse(Status::ResourceLimitExceeded)),
                4 => d.set_behaviour(i, Behaviour::Accept),
                _ => d.ar.on_rtt_sample(d.now, peer(i), Duration::from_millis(u64::from(secs))),
            }
            d.settle();
            d.advance(Duration::from_secs(u64::from(secs)));
            prop_assert!(d.held().len() <= 4);
            prop_assert!(d.held().iter().all(|p| d.live.contains_key(p)));
        }
        for i in 0..6 {
            d.set_behaviour(i, Behaviour::Accept);
        }
        d.advance(31 * MINUTE);
        prop_assert_eq!(d.held().len(), 2);
    }
}
