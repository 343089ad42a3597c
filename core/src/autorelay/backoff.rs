//! Exponential backoff with seeded jitter.

use std::time::Duration;

use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::RngCore;

/// Exponent beyond which the doubling is certainly capped (2^20 × any sane base > any max).
const MAX_DOUBLINGS: u32 = 20;

/// The delay after the `count`-th consecutive failure (1-based): `base × 2^(count-1)` capped at
/// `max`, then "equal jitter": half of it fixed, the other half drawn from `rng`. So the delay
/// grows, never exceeds `max`, and many clients that failed together do not retry together.
pub(crate) fn jittered(
    rng: &mut ChaCha20Rng,
    base: Duration,
    max: Duration,
    count: u32,
) -> Duration {
    let doublings = count.saturating_sub(1).min(MAX_DOUBLINGS);
    let full = base.saturating_mul(1u32 << doublings).min(max);
    let half = full / 2;
    let spread = u64::try_from(full.saturating_sub(half).as_micros()).unwrap_or(u64::MAX);
    half + Duration::from_micros(uniform(rng, spread.saturating_add(1)))
}

/// A number in `0..n` (0 when `n` is 0), from the top bits of a 64×64-bit product (Lemire's
/// method without rejection; the bias is below 2^-40 for the ranges used here).
pub(crate) fn uniform(rng: &mut ChaCha20Rng, n: u64) -> u64 {
    let wide = u128::from(rng.next_u64()) * u128::from(n);
    u64::try_from(wide >> 64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_half() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(300);
        for count in 1..40 {
            let full = base.saturating_mul(1u32 << (count - 1).min(20)).min(max);
            for _ in 0..50 {
                let d = jittered(&mut rng, base, max, count);
                assert!(
                    d >= full / 2 && d <= full,
                    "count {count}: {d:?} vs {full:?}"
                );
            }
        }
    }

    #[test]
    fn uniform_stays_in_range() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        for n in [0u64, 1, 2, 3, 1000] {
            for _ in 0..100 {
                let v = uniform(&mut rng, n);
                assert!(v < n.max(1));
            }
        }
    }
}
