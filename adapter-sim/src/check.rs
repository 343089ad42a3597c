//! Invariant checkers (DESIGN §8): run after every step, at the end of the run (counters
//! return to zero) and once after faults heal (liveness). A violation carries the virtual time
//! and what was wrong; the runner prints it with the command that replays the run.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use dep2p_core::node::RelayStats;

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

    /// Safety checks after a step: limits hold, and no relay forwards bytes while it has no
    /// circuit.
    pub fn after_step(&mut self, sim: &Sim) {
        let at = sim.elapsed();
        for relay in sim.relays() {
            let Some(stats) = sim.relay_stats(relay) else {
                self.last.remove(&relay);
                continue;
            };
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
