//! Invariant checkers (DESIGN §8): run after every step, at the end of the run (counters
//! return to zero) and once after faults heal (liveness). A violation carries the virtual time
//! and what was wrong; the runner prints it with the command that replays the run.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use dep2p_core::node::{CircuitSnapshot, RelayStats};

use crate::{HostId, Sim};

/// Largest chunk a relay parks in a bridge per direction (the core's `BRIDGE_CHUNK`).
pub const BRIDGE_CHUNK: usize = 16 * 1024;

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Virtual time since the start of the run.
    pub at: Duration,
    /// Which checker.
    pub checker: &'static str,
    /// What was wrong.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "t={:.3}s [{}] {}",
            self.at.as_secs_f64(),
            self.checker,
            self.detail
        )
    }
}

/// The relay limits the checkers hold relays to (the values the scenario configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedLimits {
    /// `max_reservations`.
    pub max_reservations: usize,
    /// `max_circuits`.
    pub max_circuits: usize,
}

/// The safety checkers and the violations they found.
#[derive(Debug)]
pub struct Checkers {
    limits: CheckedLimits,
    /// Relays held to other limits than `limits`.
    relay_limits: BTreeMap<HostId, CheckedLimits>,
    /// Each relay's counters after the previous step, with the incarnation they belong to.
    last: BTreeMap<HostId, (u32, RelayStats)>,
    /// Each relay's circuits after the previous step, and the ones that ended.
    circuits: BTreeMap<HostId, CircuitHistory>,
    violations: Vec<Violation>,
    /// At most this many violations are kept (the first ones matter).
    keep: usize,
}

impl Checkers {
    /// Checkers holding relays to `limits`.
    #[must_use]
    pub fn new(limits: CheckedLimits) -> Self {
        Self {
            limits,
            relay_limits: BTreeMap::new(),
            last: BTreeMap::new(),
            circuits: BTreeMap::new(),
            violations: Vec::new(),
            keep: 50,
        }
    }

    /// Holds `relay` to `limits` instead of the common ones.
    pub fn set_relay_limits(&mut self, relay: HostId, limits: CheckedLimits) {
        self.relay_limits.insert(relay, limits);
    }

    /// The violations found so far.
    #[must_use]
    pub fn violations(&self) -> &[Violation] {
        &self.violations
    }

    /// Records a violation.
    pub fn violate(&mut self, at: Duration, checker: &'static str, detail: String) {
        if self.violations.len() < self.keep {
            self.violations.push(Violation {
                at,
                checker,
                detail,
            });
        }
    }

    /// Safety checks after a step: limits hold, no relay forwards bytes while it has no
    /// circuit, and each circuit keeps the rules of [`CircuitHistory::observe`].
    pub fn after_step(&mut self, sim: &Sim) {
        let at = sim.elapsed();
        for relay in sim.relays() {
            let Some(stats) = sim.relay_stats(relay) else {
                self.last.remove(&relay);
                self.circuits.remove(&relay);
                continue;
            };
            self.check_circuits(sim, relay);
            let name = sim.name(relay).to_owned();
            let limits = self
                .relay_limits
                .get(&relay)
                .copied()
                .unwrap_or(self.limits);
            if stats.reservations > limits.max_reservations {
                self.violate(
                    at,
                    "limits",
                    format!(
                        "{name} holds {} reservations, limit {}",
                        stats.reservations, limits.max_reservations
                    ),
                );
            }
            if stats.circuits > limits.max_circuits {
                self.violate(
                    at,
                    "limits",
                    format!(
                        "{name} holds {} circuits, limit {}",
                        stats.circuits, limits.max_circuits
                    ),
                );
            }
            if stats.bridges > stats.circuits {
                self.violate(
                    at,
                    "limits",
                    format!(
                        "{name} bridges {} circuits but counts only {}",
                        stats.bridges, stats.circuits
                    ),
                );
            }
            if stats.bridge_buffered > stats.bridges * 2 * BRIDGE_CHUNK {
                self.violate(
                    at,
                    "limits",
                    format!(
                        "{name} parks {} bytes in {} bridges (at most one chunk per direction)",
                        stats.bridge_buffered, stats.bridges
                    ),
                );
            }
            let incarnation = sim.incarnation(relay);
            if let Some((was, before)) = self.last.get(&relay)
                && *was == incarnation
                && before.bridges == 0
                && stats.bridges == 0
                && before.circuits_opened == stats.circuits_opened
                && stats.bytes_relayed != before.bytes_relayed
            {
                self.violate(
                    at,
                    "forward-after-close",
                    format!(
                        "{name} forwarded {} bytes while it had no open circuit",
                        stats.bytes_relayed.saturating_sub(before.bytes_relayed)
                    ),
                );
            }
            self.last.insert(relay, (incarnation, stats));
        }
    }

    /// Compares `relay`'s circuits with the previous step (a restarted relay starts afresh:
    /// its circuit ids start over).
    fn check_circuits(&mut self, sim: &Sim, relay: HostId) {
        let circuits = sim.relay_circuits(relay).unwrap_or_default();
        let incarnation = sim.incarnation(relay);
        let history = self.circuits.entry(relay).or_default();
        if history.incarnation != incarnation {
            *history = CircuitHistory {
                incarnation,
                ..CircuitHistory::default()
            };
        }
        let seen: Vec<SeenCircuit> = circuits.iter().map(SeenCircuit::from).collect();
        let broken = history.observe(sim.now(), &seen);
        let name = sim.name(relay).to_owned();
        for (checker, detail) in broken {
            self.violate(sim.elapsed(), checker, format!("{name}: {detail}"));
        }
    }

    /// End-of-run check, after the workload stopped and the world went quiet: every relay's
    /// reservation, circuit and bridge counters and every node's connections and streams are
    /// back to zero.
    pub fn quiescent(&mut self, sim: &Sim) {
        let at = sim.elapsed();
        for host in sim.hosts() {
            let name = sim.name(host).to_owned();
            if let Some(stats) = sim.relay_stats(host) {
                let counters = [
                    ("reservations", stats.reservations),
                    ("circuits", stats.circuits),
                    ("bridges", stats.bridges),
                    ("bridge_buffered", stats.bridge_buffered),
                ];
                for (what, value) in counters {
                    if value != 0 {
                        self.violate(
                            at,
                            "counters-return-to-zero",
                            format!("{name}: {what} = {value} after the workload ended"),
                        );
                    }
                }
            }
            if let Some(node) = sim.node(host) {
                let stats = node.stats();
                if stats.connections != 0 || stats.streams != 0 {
                    self.violate(
                        at,
                        "counters-return-to-zero",
                        format!(
                            "{name}: {} connections and {} streams after the workload ended",
                            stats.connections, stats.streams
                        ),
                    );
                }
            }
        }
    }
}

/// What the per-circuit checks need of a [`CircuitSnapshot`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenCircuit {
    /// [`CircuitSnapshot::id`] as a number.
    pub id: u64,
    /// Bytes forwarded so far, both directions.
    pub bytes: [u64; 2],
    /// When the duration limit ends it.
    pub deadline: Option<Instant>,
}

impl From<&CircuitSnapshot> for SeenCircuit {
    fn from(c: &CircuitSnapshot) -> Self {
        Self {
            id: c.id.get(),
            bytes: c.bytes,
            deadline: c.deadline,
        }
    }
}

/// One relay incarnation's circuits as the checker saw them at the previous step, and the
/// ones it saw end ("nothing is forwarded after close or expiry", DESIGN §8).
#[derive(Debug, Clone, Default)]
pub struct CircuitHistory {
    /// The relay incarnation the ids belong to.
    incarnation: u32,
    /// Open circuits at the previous step and their byte counts.
    open: BTreeMap<u64, [u64; 2]>,
    /// Circuits that left the list, with the bytes they had when last seen open.
    ended: BTreeMap<u64, [u64; 2]>,
}

impl CircuitHistory {
    /// Compares the relay's circuits at `now` with the previous step and remembers them.
    /// Returns `(checker, detail)` for each rule broken:
    /// - `circuit-after-close`: a circuit that ended is listed again (more bytes after it ended
    ///   say so);
    /// - `circuit-after-expiry`: an open circuit is past its duration deadline (the relay ends
    ///   circuits at the deadline, in the step that reaches it);
    /// - `circuit-bytes-monotonic`: an open circuit's byte count went down.
    pub fn observe(
        &mut self,
        now: Instant,
        circuits: &[SeenCircuit],
    ) -> Vec<(&'static str, String)> {
        let mut broken = Vec::new();
        for c in circuits {
            let id = c.id;
            if let Some(last) = self.ended.get(&id) {
                let grew = c.bytes[0] > last[0] || c.bytes[1] > last[1];
                broken.push((
                    "circuit-after-close",
                    if grew {
                        format!(
                            "circuit {id} ended with {last:?} bytes and now shows {:?}: forwarded after close",
                            c.bytes
                        )
                    } else {
                        format!("circuit {id} ended and is listed again")
                    },
                ));
            }
            if let Some(deadline) = c.deadline
                && deadline < now
            {
                broken.push((
                    "circuit-after-expiry",
                    format!(
                        "circuit {id} is open {:?} past its duration deadline ({:?} bytes)",
                        now - deadline,
                        c.bytes
                    ),
                ));
            }
            if let Some(before) = self.open.get(&id)
                && (c.bytes[0] < before[0] || c.bytes[1] < before[1])
            {
                broken.push((
                    "circuit-bytes-monotonic",
                    format!("circuit {id} went from {before:?} to {:?} bytes", c.bytes),
                ));
            }
        }
        let now_open: BTreeMap<u64, [u64; 2]> = circuits.iter().map(|c| (c.id, c.bytes)).collect();
        for (id, bytes) in std::mem::take(&mut self.open) {
            if !now_open.contains_key(&id) {
                self.ended.insert(id, bytes);
            }
        }
        for id in now_open.keys() {
            // A reappeared circuit stays "ended": it must not count as open afresh.
            if let Some(bytes) = self.ended.get_mut(id) {
                *bytes = (*bytes).max(now_open[id]);
            }
        }
        self.open = now_open;
        broken
    }
}

/// The receiving end of one circuit data flow, checking that what arrives is an in-order
/// prefix of what the sender wrote.
#[derive(Debug, Clone, Default)]
pub struct PrefixCheck {
    /// Bytes received and verified.
    pub received: u64,
}

impl PrefixCheck {
    /// Checks `data` arriving at stream offset `self.received`, given the sender wrote `sent`
    /// bytes whose value at offset `o` is `expected(o)`. Returns the first mismatch.
    pub fn accept(
        &mut self,
        data: &[u8],
        sent: u64,
        expected: impl Fn(u64) -> u8,
    ) -> Result<(), String> {
        let end = self.received + data.len() as u64;
        if end > sent {
            return Err(format!(
                "received {end} bytes but only {sent} were sent (duplicated or invented data)"
            ));
        }
        for (i, &byte) in data.iter().enumerate() {
            let offset = self.received + i as u64;
            let want = expected(offset);
            if byte != want {
                return Err(format!(
                    "byte {offset} is {byte:#04x}, sender wrote {want:#04x} (out of order or corrupted)"
                ));
            }
        }
        self.received = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(id: u64, bytes: [u64; 2], deadline: Option<Instant>) -> SeenCircuit {
        SeenCircuit {
            id,
            bytes,
            deadline,
        }
    }

    fn checkers_of(broken: &[(&'static str, String)]) -> Vec<&'static str> {
        broken.iter().map(|(c, _)| *c).collect()
    }

    #[test]
    fn circuits_that_grow_close_and_expire_on_time_pass() {
        let t0 = dep2p_core::testing::virtual_epoch();
        let deadline = Some(t0 + Duration::from_secs(2));
        let mut history = CircuitHistory::default();
        assert!(history.observe(t0, &[seen(0, [0, 0], deadline)]).is_empty());
        let t1 = t0 + Duration::from_secs(1);
        assert!(
            history
                .observe(t1, &[seen(0, [10, 5], deadline), seen(1, [0, 0], None)])
                .is_empty()
        );
        // Circuit 0 reaches its deadline and goes; circuit 1 has none.
        let t2 = t0 + Duration::from_secs(2);
        assert!(history.observe(t2, &[seen(1, [3, 0], None)]).is_empty());
        assert!(
            history
                .observe(t2 + Duration::from_secs(60), &[])
                .is_empty()
        );
    }

    #[test]
    fn a_circuit_open_past_its_deadline_breaks_expiry() {
        let t0 = dep2p_core::testing::virtual_epoch();
        let mut history = CircuitHistory::default();
        let c = seen(0, [1, 1], Some(t0 + Duration::from_secs(1)));
        assert!(history.observe(t0, &[c]).is_empty());
        let late = history.observe(t0 + Duration::from_millis(1001), &[c]);
        assert_eq!(checkers_of(&late), ["circuit-after-expiry"]);
    }

    #[test]
    fn a_circuit_that_ended_must_not_come_back_or_grow() {
        let t0 = dep2p_core::testing::virtual_epoch();
        let mut history = CircuitHistory::default();
        assert!(history.observe(t0, &[seen(4, [7, 7], None)]).is_empty());
        assert!(history.observe(t0, &[]).is_empty());
        let back = history.observe(t0, &[seen(4, [7, 7], None)]);
        assert_eq!(checkers_of(&back), ["circuit-after-close"]);
        assert!(back[0].1.contains("listed again"), "{back:?}");
        let grew = history.observe(t0, &[seen(4, [9, 7], None)]);
        assert_eq!(checkers_of(&grew), ["circuit-after-close"]);
        assert!(grew[0].1.contains("forwarded after close"), "{grew:?}");
    }

    #[test]
    fn an_open_circuit_whose_bytes_go_down_breaks_monotonicity() {
        let t0 = dep2p_core::testing::virtual_epoch();
        let mut history = CircuitHistory::default();
        assert!(history.observe(t0, &[seen(2, [50, 8], None)]).is_empty());
        let down = history.observe(t0, &[seen(2, [50, 7], None)]);
        assert_eq!(checkers_of(&down), ["circuit-bytes-monotonic"]);
    }

    #[test]
    fn prefix_check_accepts_in_order_data_and_refuses_anything_else() {
        let pattern = |o: u64| (o % 251) as u8;
        let data: Vec<u8> = (0..100u64).map(pattern).collect();
        let mut check = PrefixCheck::default();
        check.accept(&data[..40], 100, pattern).unwrap();
        check.accept(&data[40..], 100, pattern).unwrap();
        assert_eq!(check.received, 100);

        let mut check = PrefixCheck::default();
        assert!(check.accept(&data[1..10], 100, pattern).is_err(), "a gap");
        let mut check = PrefixCheck::default();
        assert!(
            check.accept(&data[..10], 5, pattern).is_err(),
            "more than was sent"
        );
        let mut check = PrefixCheck::default();
        let mut bad = data.clone();
        bad[7] ^= 1;
        assert!(
            check.accept(&bad[..10], 100, pattern).is_err(),
            "a flipped byte"
        );
    }
}
