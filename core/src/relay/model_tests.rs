//! Property test: random sequences of RESERVE / CONNECT / close / remove / expire / bytes /
//! time steps run against [`ReservationTable`] and [`CircuitTable`] and against a small
//! reference model that states the limits of DESIGN §5.1 directly: counts are recomputed by
//! scanning plain lists, a rate key is "tracked" exactly when its bucket is not full, and
//! nothing is cached. Every answer and every count must agree after every step.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use libp2p_identity::PeerId;
use proptest::prelude::*;

use super::circuits::{CircuitId, CircuitTable, Direction, LimitHit};
use super::limits::{IpGroup, RateLimit, RelayLimits};
use super::refusal::{RefusalReason, RejectionCounters};
use super::reservations::{Admission, ReservationTable};
use super::test_model::{ModelRate, PEERS, charge_both, ip, peer, peer_index};
use crate::testing::virtual_epoch;

const MAX_KEYS: usize = 3;
const TTL: Duration = Duration::from_secs(10);
const CIRCUIT_DURATION: Duration = Duration::from_secs(6);
const CIRCUIT_BYTES: u64 = 100;

fn rates() -> [RateLimit; 4] {
    [
        RateLimit::new(3, Duration::from_secs(8)),
        RateLimit::new(4, Duration::from_secs(5)),
        RateLimit::new(2, Duration::from_secs(3)),
        RateLimit::new(3, Duration::from_secs(7)),
    ]
}

fn limits() -> RelayLimits {
    let [rp, ri, cp, ci] = rates();
    RelayLimits::default()
        .max_reservations(3)
        .max_reservations_per_ip(2)
        .reservation_ttl(TTL)
        .max_circuits(3)
        .max_circuits_per_peer(2)
        .max_circuit_duration(CIRCUIT_DURATION)
        .max_circuit_bytes(CIRCUIT_BYTES)
        .reservation_rate_per_peer(rp)
        .reservation_rate_per_ip(ri)
        .circuit_rate_per_peer(cp)
        .circuit_rate_per_ip(ci)
        .rate_limiter_max_keys(MAX_KEYS as u32)
}

#[derive(Debug, Clone)]
enum Op {
    Reserve { peer: usize, ip: usize },
    Connect { src: usize, ip: usize, dst: usize },
    Close { pick: usize },
    Bytes { pick: usize, up: bool, n: u64 },
    RemovePeer { peer: usize },
    Expire,
    Advance { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..PEERS, 0..4usize).prop_map(|(peer, ip)| Op::Reserve { peer, ip }),
        3 => (0..PEERS, 0..4usize, 0..PEERS).prop_map(|(src, ip, dst)| Op::Connect { src, ip, dst }),
        1 => any::<usize>().prop_map(|pick| Op::Close { pick }),
        2 => (any::<usize>(), any::<bool>(), 0..80u64).prop_map(|(pick, up, n)| Op::Bytes { pick, up, n }),
        1 => (0..PEERS).prop_map(|peer| Op::RemovePeer { peer }),
        1 => Just(Op::Expire),
        3 => (0..6_000u64).prop_map(|ms| Op::Advance { ms }),
    ]
}

#[derive(Debug, Clone, Copy)]
struct ModelCircuit {
    src: usize,
    dst: usize,
    deadline: Instant,
    bytes: [u64; 2],
}

struct Model {
    /// The instant virtual time counts from (the bucket model takes time since it).
    epoch: Instant,
    now: Instant,
    /// peer → (ip index, expires_at)
    res: BTreeMap<usize, (usize, Instant)>,
    circuits: BTreeMap<u64, ModelCircuit>,
    next_id: u64,
    rates: [ModelRate<usize>; 2],
    ip_rates: [ModelRate<IpGroup>; 2],
    res_rejections: RejectionCounters,
    circ_rejections: RejectionCounters,
}

#[derive(Debug, PartialEq, Eq)]
enum ResOutcome {
    New(Instant),
    Renewed(Instant),
    Replaced(usize, Instant),
    Refused(RefusalReason),
}

impl Model {
    fn new(now: Instant) -> Self {
        let [rp, ri, cp, ci] = rates();
        let r = |limit| ModelRate::new(limit, MAX_KEYS);
        Self {
            epoch: now,
            now,
            res: BTreeMap::new(),
            circuits: BTreeMap::new(),
            next_id: 0,
            rates: [r(rp), r(cp)],
            ip_rates: [ModelRate::new(ri, MAX_KEYS), ModelRate::new(ci, MAX_KEYS)],
            res_rejections: RejectionCounters::default(),
            circ_rejections: RejectionCounters::default(),
        }
    }

    fn group(i: usize) -> IpGroup {
        IpGroup::of(ip(i))
    }

    fn ip_count(&self, g: IpGroup) -> usize {
        self.res
            .values()
            .filter(|(i, _)| Self::group(*i) == g)
            .count()
    }

    fn peer_circuits(&self, p: usize) -> usize {
        self.circuits
            .values()
            .filter(|c| c.src == p || c.dst == p)
            .count()
    }

    /// `which` 0 = reservation rates, 1 = circuit rates.
    fn rate(&mut self, which: usize, peer: usize, g: IpGroup) -> Result<(), RefusalReason> {
        let (per_peer, per_ip) = if which == 0 {
            (
                RefusalReason::ReservationRatePerPeer,
                RefusalReason::ReservationRatePerIp,
            )
        } else {
            (
                RefusalReason::CircuitRatePerPeer,
                RefusalReason::CircuitRatePerIp,
            )
        };
        charge_both(
            self.now.duration_since(self.epoch),
            (&mut self.rates[which], peer),
            (&mut self.ip_rates[which], g),
            [per_peer, per_ip],
        )
    }

    fn reserve(&mut self, peer: usize, ipi: usize) -> ResOutcome {
        let now = self.now;
        self.res.retain(|_, (_, exp)| *exp > now);
        let g = Self::group(ipi);
        let exp = now + TTL;
        let refused = |m: &mut Self, r| {
            m.res_rejections.record(r);
            ResOutcome::Refused(r)
        };
        if let Err(r) = self.rate(0, peer, g) {
            return refused(self, r);
        }
        if let Some(&(old_ip, _)) = self.res.get(&peer) {
            if Self::group(old_ip) != g && self.ip_count(g) >= 2 {
                return refused(self, RefusalReason::ReservationsPerIpFull);
            }
            self.res.insert(peer, (ipi, exp));
            return if old_ip == ipi {
                ResOutcome::Renewed(exp)
            } else {
                ResOutcome::Replaced(old_ip, exp)
            };
        }
        if self.res.len() >= 3 {
            return refused(self, RefusalReason::ReservationsFull);
        }
        if self.ip_count(g) >= 2 {
            return refused(self, RefusalReason::ReservationsPerIpFull);
        }
        self.res.insert(peer, (ipi, exp));
        ResOutcome::New(exp)
    }

    fn connect(&mut self, src: usize, ipi: usize, dst: usize) -> Result<u64, RefusalReason> {
        let r = self.connect_inner(src, ipi, dst);
        if let Err(reason) = r {
            self.circ_rejections.record(reason);
        }
        r
    }

    fn connect_inner(&mut self, src: usize, ipi: usize, dst: usize) -> Result<u64, RefusalReason> {
        if src == dst {
            return Err(RefusalReason::ConnectToSelf);
        }
        self.rate(1, src, Self::group(ipi))?;
        let live = self.res.get(&dst).is_some_and(|(_, exp)| self.now < *exp);
        if !live {
            return Err(RefusalReason::NoReservation);
        }
        if self.circuits.len() >= 3 {
            return Err(RefusalReason::CircuitsFull);
        }
        if self.peer_circuits(src) >= 2 {
            return Err(RefusalReason::CircuitsPerSourceFull);
        }
        if self.peer_circuits(dst) >= 2 {
            return Err(RefusalReason::CircuitsPerDestinationFull);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.circuits.insert(
            id,
            ModelCircuit {
                src,
                dst,
                deadline: self.now + CIRCUIT_DURATION,
                bytes: [0; 2],
            },
        );
        Ok(id)
    }

    fn bytes(&mut self, id: u64, dir: usize, n: u64) -> Result<(), Option<()>> {
        let Some(c) = self.circuits.get_mut(&id) else {
            return Err(None);
        };
        if c.bytes[dir] + n > CIRCUIT_BYTES {
            self.circuits.remove(&id);
            return Err(Some(()));
        }
        c.bytes[dir] += n;
        Ok(())
    }
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let t0 = virtual_epoch();
    let peers: Vec<PeerId> = (0..PEERS).map(peer).collect();
    let index_of = peer_index;
    let mut res = ReservationTable::new(limits());
    let mut circ = CircuitTable::new(limits());
    let mut model = Model::new(t0);
    let mut issued: Vec<CircuitId> = Vec::new();

    for op in ops {
        let now = model.now;
        match *op {
            Op::Reserve { peer, ip: i } => {
                let got = match res.admit(now, peers[peer], ip(i)) {
                    Ok(Admission::New { expires_at }) => ResOutcome::New(expires_at),
                    Ok(Admission::Renewed { expires_at }) => ResOutcome::Renewed(expires_at),
                    Ok(Admission::Replaced {
                        previous_ip,
                        expires_at,
                    }) => ResOutcome::Replaced(
                        (0..4).position(|j| ip(j) == previous_ip).expect("known ip"),
                        expires_at,
                    ),
                    Err(refusal) => {
                        prop_assert_eq!(refusal.status, refusal.reason.status());
                        ResOutcome::Refused(refusal.reason)
                    }
                };
                prop_assert_eq!(got, model.reserve(peer, i), "{:?}", op);
            }
            Op::Connect { src, ip: i, dst } => {
                let got = circ.admit(now, peers[src], ip(i), peers[dst], &res);
                let want = model.connect(src, i, dst);
                match (got, want) {
                    (Ok(id), Ok(mid)) => {
                        prop_assert_eq!(id.get(), mid);
                        issued.push(id);
                    }
                    (Err(r), Err(m)) => {
                        prop_assert_eq!(r.reason, m, "{:?}", op);
                        prop_assert_eq!(r.status, m.status());
                    }
                    (got, want) => prop_assert!(false, "{:?}: {:?} vs model {:?}", op, got, want),
                }
            }
            Op::Close { pick } => {
                if !issued.is_empty() {
                    let id = issued[pick % issued.len()];
                    let was_open = circ.close(id).is_some();
                    prop_assert_eq!(was_open, model.circuits.remove(&id.get()).is_some());
                }
            }
            Op::Bytes { pick, up, n } => {
                if !issued.is_empty() {
                    let id = issued[pick % issued.len()];
                    let dir = if up {
                        Direction::SrcToDst
                    } else {
                        Direction::DstToSrc
                    };
                    let got = circ.record_bytes(id, dir, n);
                    let want = model.bytes(id.get(), usize::from(!up), n);
                    match (got, want) {
                        (Ok(()), Ok(())) | (Err(LimitHit::UnknownCircuit), Err(None)) => {}
                        (Err(LimitHit::Bytes { direction, limit }), Err(Some(()))) => {
                            prop_assert_eq!(direction, dir);
                            prop_assert_eq!(limit, CIRCUIT_BYTES);
                        }
                        (got, want) => {
                            prop_assert!(false, "{:?}: {:?} vs model {:?}", op, got, want)
                        }
                    }
                }
            }
            Op::RemovePeer { peer } => {
                let got = res.remove(&peers[peer]).is_some();
                prop_assert_eq!(got, model.res.remove(&peer).is_some());
            }
            Op::Expire => {
                let got: BTreeSet<usize> = res.expire(now).iter().map(index_of).collect();
                let want: BTreeSet<usize> = model
                    .res
                    .iter()
                    .filter(|(_, (_, exp))| *exp <= now)
                    .map(|(p, _)| *p)
                    .collect();
                model.res.retain(|_, (_, exp)| *exp > now);
                prop_assert_eq!(got, want);

                let got: Vec<u64> = circ.expired(now).iter().map(|id| id.get()).collect();
                let mut want: Vec<(Instant, u64)> = model
                    .circuits
                    .iter()
                    .filter(|(_, c)| c.deadline <= now)
                    .map(|(id, c)| (c.deadline, *id))
                    .collect();
                want.sort();
                model.circuits.retain(|_, c| c.deadline > now);
                prop_assert_eq!(got, want.into_iter().map(|(_, id)| id).collect::<Vec<_>>());
            }
            Op::Advance { ms } => model.now += Duration::from_millis(ms),
        }

        // Every count agrees with the model's plain recount.
        prop_assert_eq!(res.len(), model.res.len());
        for i in 0..4 {
            let g = Model::group(i);
            prop_assert_eq!(res.count_for_ip(g) as usize, model.ip_count(g));
        }
        let groups: BTreeSet<IpGroup> = model.res.values().map(|(i, _)| Model::group(*i)).collect();
        prop_assert_eq!(res.ip_groups(), groups.len());
        prop_assert_eq!(circ.len(), model.circuits.len());
        let mut involved = 0;
        for (p, id) in peers.iter().enumerate() {
            let n = model.peer_circuits(p);
            prop_assert_eq!(circ.count_for_peer(id) as usize, n);
            involved += usize::from(n > 0);
        }
        prop_assert_eq!(circ.peers(), involved);
        prop_assert_eq!(res.rejections(), &model.res_rejections);
        prop_assert_eq!(circ.rejections(), &model.circ_rejections);
    }

    // Draining everything brings every table back to zero.
    for peer in &peers {
        let _ = res.remove(peer);
    }
    for id in issued {
        let _ = circ.close(id);
    }
    let later = model.now + Duration::from_secs(60);
    res.evict_full_rate_buckets(later);
    circ.evict_full_rate_buckets(later);
    prop_assert!(res.is_empty() && res.ip_groups() == 0 && res.next_deadline().is_none());
    prop_assert!(circ.is_empty() && circ.peers() == 0 && circ.next_deadline().is_none());
    prop_assert_eq!(res.rate_keys(), (0, 0));
    prop_assert_eq!(circ.rate_keys(), (0, 0));
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        ..ProptestConfig::default()
    })]

    #[test]
    fn tables_agree_with_the_reference_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(&ops)?;
    }
}
