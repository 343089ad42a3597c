//! [`AutoRelayConfig`]: every knob of relay selection (DESIGN §5.2), with its default and why.

use std::time::Duration;

/// Most relays a configuration may ask for; more would only multiply keep-alive traffic.
pub const MAX_RELAYS_LIMIT: usize = 16;
/// Largest candidate pool a configuration may ask for.
pub const MAX_POOL_CAPACITY: usize = 4096;

/// A configuration value [`AutoRelayConfig::validate`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid autorelay setting `{key}`: {problem}")]
pub struct InvalidAutoRelayConfig {
    /// The name of the setting (the setter's name).
    pub key: &'static str,
    /// What is wrong with its value.
    pub problem: &'static str,
}

/// How AutoRelay discovers, scores, selects and replaces relays.
///
/// Build with [`AutoRelayConfig::default`] and the chaining setters; [`super::AutoRelay::new`]
/// validates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoRelayConfig {
    pub(crate) min_relays: usize,
    pub(crate) max_relays: usize,
    pub(crate) pool_capacity: usize,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) shun_base: Duration,
    pub(crate) shun_max: Duration,
    pub(crate) best_few: usize,
    pub(crate) tie_band_percent: u32,
    pub(crate) switch_margin_percent: u32,
    pub(crate) min_dwell: Duration,
    pub(crate) max_switches_per_hour: u32,
    pub(crate) attempt_timeout: Duration,
    pub(crate) unknown_rtt: Duration,
    pub(crate) not_hop_memory: Duration,
}

impl Default for AutoRelayConfig {
    fn default() -> Self {
        Self {
            min_relays: 2,
            max_relays: 4,
            pool_capacity: 64,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5 * 60),
            shun_base: Duration::from_secs(60),
            shun_max: Duration::from_secs(30 * 60),
            best_few: 3,
            tie_band_percent: 25,
            switch_margin_percent: 30,
            min_dwell: Duration::from_secs(10 * 60),
            max_switches_per_hour: 4,
            attempt_timeout: Duration::from_secs(15),
            unknown_rtt: Duration::from_millis(250),
            not_hop_memory: Duration::from_secs(60 * 60),
        }
    }
}

impl AutoRelayConfig {
    /// Reservations kept on distinct relays. Default 2, so a node stays reachable through its
    /// second relay while the first is replaced. Below it, AutoRelay acts at once.
    #[must_use]
    pub fn min_relays(mut self, n: usize) -> Self {
        self.min_relays = n;
        self
    }

    /// Most relays held or being acquired at once. Default 4: room to acquire a replacement
    /// before a held relay is released (make before break).
    #[must_use]
    pub fn max_relays(mut self, n: usize) -> Self {
        self.max_relays = n;
        self
    }

    /// Most candidates remembered. Default 64; when full, the worst unpinned candidates that
    /// were never connected or are shunned make room first.
    #[must_use]
    pub fn pool_capacity(mut self, n: usize) -> Self {
        self.pool_capacity = n;
        self
    }

    /// Backoff after the first failure (dial, reservation error, lost connection). Default 1 s;
    /// it doubles per consecutive failure up to [`Self::backoff_max`], with seeded jitter.
    #[must_use]
    pub fn backoff_base(mut self, d: Duration) -> Self {
        self.backoff_base = d;
        self
    }

    /// Longest failure backoff. Default 5 min: a restarted relay is found again within it.
    #[must_use]
    pub fn backoff_max(mut self, d: Duration) -> Self {
        self.backoff_max = d;
        self
    }

    /// Shun after the first refusal (RESERVATION_REFUSED, RESOURCE_LIMIT_EXCEEDED). Default
    /// 1 min; it doubles per consecutive refusal up to [`Self::shun_max`], with seeded jitter.
    #[must_use]
    pub fn shun_base(mut self, d: Duration) -> Self {
        self.shun_base = d;
        self
    }

    /// Longest shun. Default 30 min; a loaded relay is never shunned for ever.
    #[must_use]
    pub fn shun_max(mut self, d: Duration) -> Self {
        self.shun_max = d;
        self
    }

    /// How many of the best candidates a choice is drawn from at random. Default 3, so many
    /// clients with the same view do not all pick the same relay.
    #[must_use]
    pub fn best_few(mut self, n: usize) -> Self {
        self.best_few = n;
        self
    }

    /// Only candidates whose score is within this many percent of the best one's take part in
    /// the random draw. Default 25: a much worse relay is never picked just by luck.
    #[must_use]
    pub fn tie_band_percent(mut self, p: u32) -> Self {
        self.tie_band_percent = p;
        self
    }

    /// A held relay is replaced by a better one only if the newcomer's score is at least this
    /// many percent lower (better). Default 30: RTT jitter does not cause flapping.
    #[must_use]
    pub fn switch_margin_percent(mut self, p: u32) -> Self {
        self.switch_margin_percent = p;
        self
    }

    /// A held relay is kept at least this long before it may be replaced by a better one.
    /// Default 10 min. Losses are replaced at once regardless.
    #[must_use]
    pub fn min_dwell(mut self, d: Duration) -> Self {
        self.min_dwell = d;
        self
    }

    /// Most voluntary switches (to a better relay) started in any hour. Default 4; 0 disables
    /// voluntary switching. Replacing a lost relay is never capped.
    #[must_use]
    pub fn max_switches_per_hour(mut self, n: u32) -> Self {
        self.max_switches_per_hour = n;
        self
    }

    /// A dial or reservation without an answer for this long counts as failed. Default 15 s,
    /// the QUIC idle timeout.
    #[must_use]
    pub fn attempt_timeout(mut self, d: Duration) -> Self {
        self.attempt_timeout = d;
        self
    }

    /// The RTT assumed for a candidate never measured. Default 250 ms: measured relays are
    /// preferred, unknown ones still rank above failing ones.
    #[must_use]
    pub fn unknown_rtt(mut self, d: Duration) -> Self {
        self.unknown_rtt = d;
        self
    }

    /// How long a peer found not to speak HOP is refused when re-added from a bootstrap,
    /// static or other list. Default 1 h. A fresh identify that lists HOP overrides it.
    #[must_use]
    pub fn not_hop_memory(mut self, d: Duration) -> Self {
        self.not_hop_memory = d;
        self
    }

    /// The configured `min_relays`.
    #[must_use]
    pub fn get_min_relays(&self) -> usize {
        self.min_relays
    }

    /// The configured `max_relays`.
    #[must_use]
    pub fn get_max_relays(&self) -> usize {
        self.max_relays
    }

    /// The configured `max_switches_per_hour`.
    #[must_use]
    pub fn get_max_switches_per_hour(&self) -> u32 {
        self.max_switches_per_hour
    }

    /// Check for values that make no sense; the error names the first bad key.
    pub fn validate(&self) -> Result<(), InvalidAutoRelayConfig> {
        let bad = |key, problem| Err(InvalidAutoRelayConfig { key, problem });
        if self.min_relays == 0 {
            return bad("min_relays", "must be at least 1");
        }
        if self.max_relays < self.min_relays {
            return bad("max_relays", "must not be below min_relays");
        }
        if self.max_relays > MAX_RELAYS_LIMIT {
            return bad("max_relays", "must not exceed 16");
        }
        if self.pool_capacity < self.max_relays {
            return bad("pool_capacity", "must hold at least max_relays candidates");
        }
        if self.pool_capacity > MAX_POOL_CAPACITY {
            return bad("pool_capacity", "must not exceed 4096");
        }
        if self.backoff_base.is_zero() {
            return bad("backoff_base", "must not be zero");
        }
        if self.backoff_max < self.backoff_base {
            return bad("backoff_max", "must not be below backoff_base");
        }
        if self.shun_base.is_zero() {
            return bad("shun_base", "must not be zero");
        }
        if self.shun_max < self.shun_base {
            return bad("shun_max", "must not be below shun_base");
        }
        if self.best_few == 0 {
            return bad("best_few", "must be at least 1");
        }
        if self.tie_band_percent > 1000 {
            return bad("tie_band_percent", "must not exceed 1000");
        }
        if self.switch_margin_percent == 0 || self.switch_margin_percent >= 100 {
            return bad("switch_margin_percent", "must be between 1 and 99");
        }
        if self.attempt_timeout.is_zero() {
            return bad("attempt_timeout", "must not be zero");
        }
        if self.unknown_rtt.is_zero() {
            return bad("unknown_rtt", "must not be zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert_eq!(AutoRelayConfig::default().validate(), Ok(()));
    }

    #[test]
    fn bad_values_are_named() {
        let key = |c: AutoRelayConfig| c.validate().unwrap_err().key;
        let d = AutoRelayConfig::default;
        assert_eq!(key(d().min_relays(0)), "min_relays");
        assert_eq!(key(d().min_relays(3).max_relays(2)), "max_relays");
        assert_eq!(key(d().max_relays(17).min_relays(2)), "max_relays");
        assert_eq!(key(d().pool_capacity(3)), "pool_capacity");
        assert_eq!(key(d().backoff_base(Duration::ZERO)), "backoff_base");
        assert_eq!(
            key(d().backoff_max(Duration::from_millis(1))),
            "backoff_max"
        );
        assert_eq!(key(d().shun_max(Duration::from_secs(1))), "shun_max");
        assert_eq!(key(d().best_few(0)), "best_few");
        assert_eq!(key(d().switch_margin_percent(100)), "switch_margin_percent");
        assert_eq!(key(d().attempt_timeout(Duration::ZERO)), "attempt_timeout");
        let msg = d().min_relays(0).validate().unwrap_err().to_string();
        assert!(msg.contains("min_relays"), "{msg}");
    }
}
