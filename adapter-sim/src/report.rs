//! The summary of a run: failover times, reservation and circuit counts, bytes, the trace
//! hash and any violations; and the SVG timeline of reservations per relay.

use std::fmt::{self, Write as _};
use std::time::Duration;

use crate::check::Violation;
use crate::net::NetStats;
use crate::policy::PolicyKind;
use crate::scenario::ScenarioKind;

/// Reservations per relay over virtual time, sampled once per virtual second.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    relays: Vec<String>,
    samples: Vec<(Duration, Vec<usize>)>,
}

impl Timeline {
    /// An empty timeline for these relays.
    #[must_use]
    pub fn new(relays: Vec<String>) -> Self {
        Self {
            relays,
            samples: Vec::new(),
        }
    }

    /// Records the relays' reservation counts at `at` (0 for a relay that is down).
    pub fn sample(&mut self, at: Duration, counts: impl Iterator<Item = usize>) {
        self.samples.push((at, counts.collect()));
    }

    /// The samples.
    #[must_use]
    pub fn samples(&self) -> &[(Duration, Vec<usize>)] {
        &self.samples
    }

    /// An SVG line chart: one line per relay, reservations over virtual seconds.
    #[must_use]
    pub fn to_svg(&self, title: &str) -> String {
        const W: f64 = 900.0;
        const H: f64 = 360.0;
        const LEFT: f64 = 50.0;
        const RIGHT: f64 = 130.0;
        const TOP: f64 = 30.0;
        const BOTTOM: f64 = 40.0;
        const COLOURS: [&str; 6] = [
            "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
        ];
        let t_max = self
            .samples
            .last()
            .map_or(1.0, |(t, _)| t.as_secs_f64().max(1.0));
        let y_max = self
            .samples
            .iter()
            .flat_map(|(_, c)| c.iter().copied())
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let x = |t: f64| LEFT + (W - LEFT - RIGHT) * t / t_max;
        let y = |v: f64| TOP + (H - TOP - BOTTOM) * (1.0 - v / y_max);
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(svg, r#"<text x="{LEFT}" y="18">{}</text>"#, escape(title));
        let _ = writeln!(
            svg,
            r#"<line x1="{LEFT}" y1="{}" x2="{}" y2="{}" stroke="black"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{}" stroke="black"/>"#,
            y(0.0),
            x(t_max),
            y(0.0),
            y(0.0)
        );
        for i in 0..=5 {
            let t = t_max * f64::from(i) / 5.0;
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0}s</text>"#,
                x(t),
                y(0.0) + 16.0
            );
        }
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{y_max:.0}</text><text x="{:.1}" y="{:.1}" text-anchor="end">0</text>"#,
            LEFT - 4.0,
            y(y_max) + 4.0,
            LEFT - 4.0,
            y(0.0) + 4.0
        );
        for (r, name) in self.relays.iter().enumerate() {
            let colour = COLOURS[r % COLOURS.len()];
            let points: Vec<String> = self
                .samples
                .iter()
                .map(|(t, c)| {
                    format!(
                        "{:.1},{:.1}",
                        x(t.as_secs_f64()),
                        y(c.get(r).copied().unwrap_or(0) as f64)
                    )
                })
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                points.join(" ")
            );
            let ly = TOP + 18.0 * r as f64;
            let _ = writeln!(
                svg,
                r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                W - RIGHT + 10.0,
                W - RIGHT + 30.0,
                W - RIGHT + 35.0,
                ly + 4.0,
                escape(name)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// The scenario.
    pub scenario: ScenarioKind,
    /// The root seed.
    pub seed: u64,
    /// The clients' relay policy.
    pub policy: PolicyKind,
    /// Failover times: from the fault (or, for a loss no fault explains, from the loss) to the
    /// client's first new reservation.
    pub failover: Vec<Duration>,
    /// Outages that were still open when checked (see the liveness phase).
    pub unresolved_outages: usize,
    /// Reservations clients lost.
    pub reservations_lost: u64,
    /// Reservations clients regained after a loss.
    pub reservations_regained: u64,
    /// Time clients spent without a live reservation on a live relay, summed over clients.
    pub unreachable_total: Duration,
    /// The longest such period of one client.
    pub unreachable_max: Duration,
    /// Times a client's advertised circuit addresses went empty after being non-empty.
    pub addr_gaps: u64,
    /// Relay switches (`RelaySwitched` with a predecessor), all clients.
    pub switches: u64,
    /// Of which voluntary (a better relay).
    pub voluntary_switches: u64,
    /// The most switches of one client, per hour of workload.
    pub switches_per_client_hour_max: f64,
    /// Circuits established.
    pub circuits_established: u64,
    /// Circuits broken while carrying data.
    pub circuits_broken: u64,
    /// Circuits re-established after a break.
    pub circuits_reestablished: u64,
    /// Flows delivered completely.
    pub flows_completed: u64,
    /// Payload bytes received and verified.
    pub bytes_delivered: u64,
    /// The trace hash.
    pub trace_hash: String,
    /// Broken invariants.
    pub violations: Vec<Violation>,
    /// The command that replays this run.
    pub replay: String,
    /// Network counters.
    pub net: NetStats,
    /// Virtual time run.
    pub virtual_time: Duration,
    /// Steps taken.
    pub steps: u64,
    /// Reservations per relay over time.
    pub timeline: Timeline,
}

impl Report {
    /// Whether every invariant held.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// The `q` quantile (0..=1) of the failover times, if any.
    #[must_use]
    pub fn failover_quantile(&self, q: f64) -> Option<Duration> {
        let mut sorted = self.failover.clone();
        sorted.sort();
        if sorted.is_empty() {
            return None;
        }
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let q = |q: f64| {
            self.failover_quantile(q)
                .map_or_else(|| "-".to_owned(), |d| format!("{:.3}s", d.as_secs_f64()))
        };
        let rows: Vec<(&str, String)> = vec![
            ("scenario", self.scenario.to_string()),
            ("seed", self.seed.to_string()),
            ("policy", self.policy.to_string()),
            (
                "virtual time",
                format!(
                    "{:.1}s ({} steps)",
                    self.virtual_time.as_secs_f64(),
                    self.steps
                ),
            ),
            ("failovers", self.failover.len().to_string()),
            ("failover p50", q(0.5)),
            ("failover p99", q(0.99)),
            ("failover max", q(1.0)),
            ("reservations lost", self.reservations_lost.to_string()),
            (
                "reservations regained",
                self.reservations_regained.to_string(),
            ),
            (
                "time unreachable",
                format!(
                    "{:.3}s total, {:.3}s longest",
                    self.unreachable_total.as_secs_f64(),
                    self.unreachable_max.as_secs_f64()
                ),
            ),
            ("address gaps", self.addr_gaps.to_string()),
            (
                "relay switches",
                format!(
                    "{} ({} voluntary), at most {:.1} per client-hour",
                    self.switches, self.voluntary_switches, self.switches_per_client_hour_max
                ),
            ),
            (
                "circuits established",
                self.circuits_established.to_string(),
            ),
            ("circuits broken", self.circuits_broken.to_string()),
            (
                "circuits re-established",
                self.circuits_reestablished.to_string(),
            ),
            ("flows completed", self.flows_completed.to_string()),
            ("bytes delivered", self.bytes_delivered.to_string()),
            (
                "datagrams",
                format!(
                    "{} sent, {} delivered, {} lost, {} partitioned, {} grayed, {} to dead hosts",
                    self.net.sent,
                    self.net.delivered,
                    self.net.lost,
                    self.net.partitioned,
                    self.net.grayed,
                    self.net.to_dead_host
                ),
            ),
            ("violations", self.violations.len().to_string()),
            ("trace hash", self.trace_hash.clone()),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        writeln!(f, "+-{}-+-{}", "-".repeat(width), "-".repeat(40))?;
        for (key, value) in rows {
            writeln!(f, "| {key:<width$} | {value}")?;
        }
        writeln!(f, "+-{}-+-{}", "-".repeat(width), "-".repeat(40))?;
        for violation in &self.violations {
            writeln!(f, "VIOLATION {violation}")?;
        }
        if !self.violations.is_empty() {
            writeln!(f, "seed {} broke an invariant; replay with:", self.seed)?;
            writeln!(f, "  {}", self.replay)?;
        }
        Ok(())
    }
}
