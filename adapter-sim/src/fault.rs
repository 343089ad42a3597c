//! Faults as data: a script is a list of timed faults, printable and replayable; "swarm" mode
//! draws its own script and link model from the seed.

use std::fmt;
use std::time::Duration;

use crate::HostId;
use crate::net::{BurstLoss, LinkModel};
use crate::rng::SimRng;

/// One fault (or the end of one).
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The host's process dies: its `Node` and all state are dropped; datagrams to it vanish.
    Crash(HostId),
    /// A crashed host comes back with the same key and a fresh seed derived from the root.
    Restart(HostId),
    /// Graceful shutdown: the host closes every connection with an application code (so peers
    /// learn at once), then stops one second later. Restart brings it back.
    Drain(HostId),
    /// Datagrams between the two groups are dropped; in both directions unless `one_way`, in
    /// which case only `from → to` is cut.
    Partition {
        /// One side.
        from: Vec<HostId>,
        /// The other side.
        to: Vec<HostId>,
        /// Only `from → to` is cut.
        one_way: bool,
    },
    /// The host can neither send nor receive.
    Isolate(HostId),
    /// A gray failure: the host keeps its connections (small datagrams pass) but datagrams
    /// above `max_datagram` bytes to or from it vanish, black-holing circuit data.
    Gray {
        /// The host.
        host: HostId,
        /// Largest datagram that still passes.
        max_datagram: usize,
    },
    /// Every partition, isolation and gray marking ends.
    Heal,
    /// Every link (both directions) gets this model from now on.
    AllLinks(LinkModel),
    /// The link between two hosts (both directions) gets this model.
    Link {
        /// One end.
        a: HostId,
        /// The other end.
        b: HostId,
        /// The model.
        model: LinkModel,
    },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |hosts: &[HostId]| {
            hosts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Self::Crash(h) => write!(f, "crash {h}"),
            Self::Restart(h) => write!(f, "restart {h}"),
            Self::Drain(h) => write!(f, "drain {h}"),
            Self::Partition { from, to, one_way } => write!(
                f,
                "partition [{}] {} [{}]",
                list(from),
                if *one_way { "->" } else { "<->" },
                list(to)
            ),
            Self::Isolate(h) => write!(f, "isolate {h}"),
            Self::Gray { host, max_datagram } => {
                write!(f, "gray {host} (> {max_datagram} B dropped)")
            }
            Self::Heal => write!(f, "heal"),
            Self::AllLinks(m) => write!(f, "all links {}", describe_link(m)),
            Self::Link { a, b, model } => write!(f, "link {a}<->{b} {}", describe_link(model)),
        }
    }
}

/// A one-line description of a link model.
#[must_use]
pub fn describe_link(m: &LinkModel) -> String {
    let mut s = format!(
        "latency={}ms jitter={}ms loss={:.3}",
        m.latency.as_millis(),
        m.jitter.as_millis(),
        m.loss
    );
    if let Some(b) = m.burst {
        s += &format!(
            " burst(enter={:.3} leave={:.3} loss={:.2})",
            b.enter, b.leave, b.loss_in_burst
        );
    }
    if m.duplicate > 0.0 {
        s += &format!(" dup={:.3}", m.duplicate);
    }
    if m.reorder > 0.0 {
        s += &format!(
            " reorder={:.3}/{}ms",
            m.reorder,
            m.reorder_delay.as_millis()
        );
    }
    if let Some(bw) = m.bandwidth {
        s += &format!(" bw={}kB/s", bw / 1000);
    }
    if let Some(mtu) = m.mtu {
        s += &format!(" mtu={mtu}");
    }
    s
}

/// A fault at a point of virtual time (since the start of the run).
#[derive(Debug, Clone, PartialEq)]
pub struct TimedFault {
    /// When.
    pub at: Duration,
    /// What.
    pub fault: Fault,
}

/// A list of timed faults, kept sorted by time (stable for equal times).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultScript {
    faults: Vec<TimedFault>,
}

impl FaultScript {
    /// An empty script.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `fault` at `at` (builder style).
    #[must_use]
    pub fn at(mut self, at: Duration, fault: Fault) -> Self {
        self.push(at, fault);
        self
    }

    /// Adds `fault` at `at`.
    pub fn push(&mut self, at: Duration, fault: Fault) {
        let index = self.faults.partition_point(|f| f.at <= at);
        self.faults.insert(index, TimedFault { at, fault });
    }

    /// The faults in time order.
    #[must_use]
    pub fn faults(&self) -> &[TimedFault] {
        &self.faults
    }

    /// When the last fault happens (the network is healed from then on, if the script heals).
    #[must_use]
    pub fn last_at(&self) -> Duration {
        self.faults.last().map_or(Duration::ZERO, |f| f.at)
    }
}

impl fmt::Display for FaultScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for timed in &self.faults {
            writeln!(f, "  t={:>7.3}s  {}", timed.at.as_secs_f64(), timed.fault)?;
        }
        Ok(())
    }
}

/// What a swarm seed drew: the base link model and the fault script.
#[derive(Debug, Clone)]
pub struct SwarmDraw {
    /// The link model during the chaos phase.
    pub chaos_link: LinkModel,
    /// Probability that a given relay crashes during the chaos phase.
    pub p_crash: f64,
    /// Probability of a partition event per relay.
    pub p_partition: f64,
    /// Probability of a gray failure per relay.
    pub p_gray: f64,
    /// The script (ends with a heal and clean links at `heal_at`).
    pub script: FaultScript,
}

impl fmt::Display for SwarmDraw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "swarm draw: chaos link {}",
            describe_link(&self.chaos_link)
        )?;
        writeln!(
            f,
            "swarm draw: p_crash={:.2} p_partition={:.2} p_gray={:.2}",
            self.p_crash, self.p_partition, self.p_gray
        )?;
        write!(f, "{}", self.script)
    }
}

/// Draws a chaos run: a link model with random loss, burstiness, jitter, duplication and
/// reordering (and sometimes a bandwidth cap or an MTU black hole on one relay), and relay
/// crashes, partitions, isolations and gray failures between `start` and `heal_at`, after
/// which every fault is lifted and every crashed relay restarted.
#[must_use]
pub fn draw_swarm(
    rng: &mut SimRng,
    relays: &[HostId],
    clients: &[HostId],
    start: Duration,
    heal_at: Duration,
    clean: LinkModel,
) -> SwarmDraw {
    let chaos_link = LinkModel {
        latency: rng.duration_between(Duration::from_millis(5), Duration::from_millis(80)),
        jitter: rng.duration_up_to(Duration::from_millis(30)),
        loss: rng.range_f64(0.0, 0.05),
        burst: rng.chance(0.5).then(|| BurstLoss {
            enter: rng.range_f64(0.001, 0.02),
            leave: rng.range_f64(0.1, 0.5),
            loss_in_burst: rng.range_f64(0.3, 0.9),
        }),
        duplicate: rng.range_f64(0.0, 0.02),
        reorder: rng.range_f64(0.0, 0.05),
        reorder_delay: rng.duration_between(Duration::from_millis(5), Duration::from_millis(60)),
        bandwidth: None,
        mtu: None,
    };
    let p_crash = rng.range_f64(0.0, 0.8);
    let p_partition = rng.range_f64(0.0, 0.6);
    let p_gray = rng.range_f64(0.0, 0.4);
    let window = heal_at.saturating_sub(start);
    let mut script = FaultScript::new().at(start, Fault::AllLinks(chaos_link));
    let pick = |rng: &mut SimRng| start + rng.duration_up_to(window);
    for &relay in relays {
        if rng.chance(p_crash) {
            let down = pick(rng);
            let up = (down + rng.duration_between(Duration::from_secs(2), Duration::from_secs(40)))
                .min(heal_at);
            let fault = if rng.chance(0.3) {
                Fault::Drain(relay)
            } else {
                Fault::Crash(relay)
            };
            script.push(down, fault);
            script.push(up, Fault::Restart(relay));
        }
        if rng.chance(p_partition) && !clients.is_empty() {
            let at = pick(rng);
            let count = 1 + rng.below(clients.len() as u64) as usize;
            let offset = rng.below(clients.len() as u64) as usize;
            let group: Vec<HostId> = (0..count)
                .map(|i| clients[(offset + i) % clients.len()])
                .collect();
            let fault = match rng.below(3) {
                0 => Fault::Isolate(relay),
                1 => Fault::Partition {
                    from: vec![relay],
                    to: group,
                    one_way: true,
                },
                _ => Fault::Partition {
                    from: vec![relay],
                    to: group,
                    one_way: false,
                },
            };
            script.push(at, fault);
        }
        if rng.chance(p_gray) {
            script.push(
                pick(rng),
                Fault::Gray {
                    host: relay,
                    max_datagram: 300,
                },
            );
        }
        if rng.chance(0.2) {
            let model = LinkModel {
                mtu: Some(600 + rng.below(600) as usize),
                bandwidth: rng.chance(0.5).then(|| 50_000 + rng.below(500_000)),
                ..chaos_link
            };
            if let Some(&client) = clients.first() {
                script.push(
                    pick(rng),
                    Fault::Link {
                        a: relay,
                        b: client,
                        model,
                    },
                );
            }
        }
    }
    script.push(heal_at, Fault::Heal);
    script.push(heal_at, Fault::AllLinks(clean));
    for &relay in relays {
        script.push(heal_at, Fault::Restart(relay));
    }
    SwarmDraw {
        chaos_link,
        p_crash,
        p_partition,
        p_gray,
        script,
    }
}
