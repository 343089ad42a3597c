//! The virtual network: per-link fault models, partitions, and the queue of datagrams in
//! flight ordered by `(deliver_at, seq)`.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use crate::HostId;
use crate::rng::SimRng;

/// Bursty loss (a Gilbert–Elliott channel): the link flips between a good state (where only
/// the uniform [`LinkModel::loss`] applies) and a bad state where `loss_in_burst` applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BurstLoss {
    /// Per datagram, the probability of entering the bad state from the good one.
    pub enter: f64,
    /// Per datagram, the probability of leaving the bad state.
    pub leave: f64,
    /// Loss probability while in the bad state.
    pub loss_in_burst: f64,
}

/// How one direction of a link treats datagrams. `LinkModel::default()` is a clean 10 ms link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkModel {
    /// One-way delay.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `0..=jitter` per datagram (reorders a little).
    pub jitter: Duration,
    /// Uniform loss probability.
    pub loss: f64,
    /// Bursty loss on top of the uniform loss.
    pub burst: Option<BurstLoss>,
    /// Probability that a datagram is delivered twice (the copy a little later).
    pub duplicate: f64,
    /// Probability that a datagram is held back by `reorder_delay` (overtaken by later ones).
    pub reorder: f64,
    /// Extra delay of a reordered datagram.
    pub reorder_delay: Duration,
    /// Bandwidth cap in bytes per second (serialisation delay; a queue builds up behind it).
    pub bandwidth: Option<u64>,
    /// Datagrams larger than this vanish without trace (an MTU black hole).
    pub mtu: Option<usize>,
}

impl Default for LinkModel {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            burst: None,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_delay: Duration::from_millis(30),
            bandwidth: None,
            mtu: None,
        }
    }
}

/// Per-direction state of a link: the burst state and the bandwidth queue.
#[derive(Debug, Clone, Copy, Default)]
struct LinkState {
    in_burst: bool,
    /// When the link finishes serialising what is queued on it.
    busy_until: Option<Instant>,
}

/// A datagram in flight.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) deliver_at: Instant,
    pub(crate) seq: u64,
    pub(crate) from: HostId,
    pub(crate) to: HostId,
    pub(crate) data: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.deliver_at, self.seq) == (other.deliver_at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    // Reversed, so the max-heap pops the earliest (then lowest-sequence) datagram first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deliver_at, other.seq).cmp(&(self.deliver_at, self.seq))
    }
}

/// What happened to datagrams, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Datagrams sent by nodes.
    pub sent: u64,
    /// Datagrams handed to a live node.
    pub delivered: u64,
    /// Dropped by uniform or bursty loss.
    pub lost: u64,
    /// Dropped by a partition or an isolated host.
    pub partitioned: u64,
    /// Dropped by an MTU black hole.
    pub black_holed: u64,
    /// Dropped by a gray relay (large datagrams of a host marked gray).
    pub grayed: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Held back to be overtaken.
    pub reordered: u64,
    /// Arrived at a crashed host (or an address no host has).
    pub to_dead_host: u64,
}

/// The network between hosts.
#[derive(Debug)]
pub struct Network {
    default: LinkModel,
    links: BTreeMap<(HostId, HostId), LinkModel>,
    state: BTreeMap<(HostId, HostId), LinkState>,
    /// Directed pairs whose datagrams are dropped.
    blocked: BTreeSet<(HostId, HostId)>,
    isolated: BTreeSet<HostId>,
    /// Hosts that drop every datagram they send or receive above the given size: a gray
    /// relay keeps its (small) keep-alives and control messages flowing but black-holes bulk
    /// circuit data.
    gray: BTreeMap<HostId, usize>,
    queue: BinaryHeap<InFlight>,
    seq: u64,
    rng: SimRng,
    pub(crate) stats: NetStats,
}

impl Network {
    pub(crate) fn new(rng: SimRng) -> Self {
        Self {
            default: LinkModel::default(),
            links: BTreeMap::new(),
            state: BTreeMap::new(),
            blocked: BTreeSet::new(),
            isolated: BTreeSet::new(),
            gray: BTreeMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            rng,
            stats: NetStats::default(),
        }
    }

    /// The model of every link without its own.
    pub fn set_default_link(&mut self, model: LinkModel) {
        self.default = model;
    }

    /// The model of the directed link `from → to`.
    pub fn set_link(&mut self, from: HostId, to: HostId, model: LinkModel) {
        self.links.insert((from, to), model);
    }

    /// Forgets every per-link model (all links use the default again).
    pub fn clear_links(&mut self) {
        self.links.clear();
    }

    /// Drops datagrams from `from` to `to` (one direction).
    pub fn block(&mut self, from: HostId, to: HostId) {
        self.blocked.insert((from, to));
    }

    /// Cuts `host` off from everyone, both directions.
    pub fn isolate(&mut self, host: HostId) {
        self.isolated.insert(host);
    }

    /// Marks `host` gray: datagrams above `max_datagram` bytes to or from it vanish.
    pub fn gray(&mut self, host: HostId, max_datagram: usize) {
        self.gray.insert(host, max_datagram);
    }

    /// Removes every partition, isolation and gray marking.
    pub fn heal(&mut self) {
        self.blocked.clear();
        self.isolated.clear();
        self.gray.clear();
    }

    /// Whether anything currently cuts or grays the network.
    #[must_use]
    pub fn is_degraded(&self) -> bool {
        !self.blocked.is_empty() || !self.isolated.is_empty() || !self.gray.is_empty()
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    pub(crate) fn next_delivery(&self) -> Option<Instant> {
        self.queue.peek().map(|d| d.deliver_at)
    }

    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<InFlight> {
        if self.queue.peek().is_some_and(|d| d.deliver_at <= now) {
            self.queue.pop()
        } else {
            None
        }
    }

    /// A node sent `data` from `from` to `to` at `now`: apply the link model and queue it.
    pub(crate) fn send(&mut self, now: Instant, from: HostId, to: HostId, data: Vec<u8>) {
        self.stats.sent += 1;
        if self.blocked.contains(&(from, to))
            || self.isolated.contains(&from)
            || self.isolated.contains(&to)
        {
            self.stats.partitioned += 1;
            return;
        }
        let gray_limit = [self.gray.get(&from), self.gray.get(&to)]
            .into_iter()
            .flatten()
            .min()
            .copied();
        if gray_limit.is_some_and(|max| data.len() > max) {
            self.stats.grayed += 1;
            return;
        }
        let model = self.links.get(&(from, to)).copied().unwrap_or(self.default);
        if model.mtu.is_some_and(|mtu| data.len() > mtu) {
            self.stats.black_holed += 1;
            return;
        }
        let state = self.state.entry((from, to)).or_default();
        let mut loss = model.loss;
        if let Some(burst) = model.burst {
            let flip = if state.in_burst {
                burst.leave
            } else {
                burst.enter
            };
            if self.rng.chance(flip) {
                state.in_burst = !state.in_burst;
            }
            if state.in_burst {
                loss = loss.max(burst.loss_in_burst);
            }
        }
        if self.rng.chance(loss) {
            self.stats.lost += 1;
            return;
        }
        let mut depart = now;
        if let Some(rate) = model.bandwidth.filter(|&r| r > 0) {
            let start = state.busy_until.map_or(now, |busy| busy.max(now));
            let serialise =
                Duration::from_nanos((data.len() as u64).saturating_mul(1_000_000_000) / rate);
            state.busy_until = Some(start + serialise);
            depart = start + serialise;
        }
        let mut deliver_at = depart + model.latency + self.rng.duration_up_to(model.jitter);
        if self.rng.chance(model.reorder) {
            self.stats.reordered += 1;
            deliver_at += model.reorder_delay;
        }
        if self.rng.chance(model.duplicate) {
            self.stats.duplicated += 1;
            let copy_at = deliver_at
                + self
                    .rng
                    .duration_up_to(model.latency.max(Duration::from_millis(1)));
            self.push(copy_at, from, to, data.clone());
        }
        self.push(deliver_at, from, to, data);
    }

    fn push(&mut self, deliver_at: Instant, from: HostId, to: HostId, data: Vec<u8>) {
        self.seq += 1;
        self.queue.push(InFlight {
            deliver_at,
            seq: self.seq,
            from,
            to,
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::RootSeed;

    fn net() -> (Network, Instant) {
        (
            Network::new(RootSeed::new(1).rng("links")),
            dep2p_core::testing::virtual_epoch(),
        )
    }

    fn drain(net: &mut Network, until: Instant) -> Vec<(Instant, usize)> {
        let mut out = Vec::new();
        while let Some(d) = net.pop_due(until) {
            out.push((d.deliver_at, d.data.len()));
        }
        out
    }

    #[test]
    fn partitions_isolation_and_mtu_black_holes_drop_datagrams() {
        let (mut net, t0) = net();
        let (a, b, c) = (HostId(0), HostId(1), HostId(2));
        net.block(a, b);
        net.send(t0, a, b, vec![0; 10]);
        net.send(t0, b, a, vec![0; 10]);
        net.isolate(c);
        net.send(t0, a, c, vec![0; 10]);
        net.set_link(
            b,
            c,
            LinkModel {
                mtu: Some(100),
                ..LinkModel::default()
            },
        );
        net.heal();
        net.send(t0, b, c, vec![0; 101]);
        net.send(t0, b, c, vec![0; 100]);
        let stats = net.stats();
        assert_eq!((stats.partitioned, stats.black_holed), (2, 1));
        assert_eq!(drain(&mut net, t0 + Duration::from_secs(1)).len(), 2);
    }

    #[test]
    fn bandwidth_cap_serialises_datagrams_and_duplication_adds_copies() {
        let (mut net, t0) = net();
        let (a, b) = (HostId(0), HostId(1));
        let model = LinkModel {
            bandwidth: Some(1000),
            latency: Duration::ZERO,
            ..LinkModel::default()
        };
        net.set_link(a, b, model);
        net.send(t0, a, b, vec![0; 500]);
        net.send(t0, a, b, vec![0; 500]);
        let got = drain(&mut net, t0 + Duration::from_secs(2));
        assert_eq!(
            got.iter().map(|(t, _)| *t - t0).collect::<Vec<_>>(),
            [Duration::from_millis(500), Duration::from_millis(1000)]
        );

        net.set_link(
            a,
            b,
            LinkModel {
                duplicate: 1.0,
                ..LinkModel::default()
            },
        );
        net.send(t0, a, b, vec![1; 10]);
        assert_eq!(drain(&mut net, t0 + Duration::from_secs(2)).len(), 2);
    }

    #[test]
    fn a_gray_host_passes_small_datagrams_only() {
        let (mut net, t0) = net();
        net.gray(HostId(0), 300);
        net.send(t0, HostId(1), HostId(0), vec![0; 60]);
        net.send(t0, HostId(1), HostId(0), vec![0; 1200]);
        assert_eq!(net.stats().grayed, 1);
        assert_eq!(drain(&mut net, t0 + Duration::from_secs(1)).len(), 1);
    }
}
