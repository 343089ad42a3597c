//! Ping (`/ipfs/ping/1.0.0`), sans-IO.
//!
//! The initiator writes [`PING_SIZE`] random bytes; the responder echoes them; the initiator
//! measures the round trip. A stream may carry several pings one after another.
//!
//! Neither side reads a clock or draws randomness: [`Pinger::send`] takes the payload (from the
//! node's seeded RNG) and the send instant, and [`Pinger::handle_input`] takes the arrival
//! instant. Timeouts are the caller's: a ping with no echo is simply never completed.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

/// Size of one ping payload, in bytes.
pub const PING_SIZE: usize = 32;

/// Why a ping failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    /// The echo differs from the payload sent (the first differing byte's offset).
    #[error("ping echo differs from the payload at byte {offset}")]
    Mismatch {
        /// Offset of the first wrong byte in the 32-byte payload.
        offset: usize,
    },
    /// Bytes arrived while no ping was outstanding.
    #[error("{len} bytes received with no ping outstanding")]
    Unsolicited {
        /// Number of unexpected bytes.
        len: usize,
    },
    /// [`Pinger::send`] was called while a ping was outstanding (local misuse).
    #[error("a ping is already outstanding")]
    InFlight,
    /// The pinger failed earlier and takes no more input or pings (local misuse).
    #[error("the pinger has failed")]
    Failed,
}

#[derive(Debug)]
enum PingerState {
    Idle,
    Waiting {
        payload: [u8; PING_SIZE],
        sent_at: Instant,
        /// Bytes of the echo received and checked so far.
        matched: usize,
    },
    Failed,
}

/// The initiating side of ping on one stream. It buffers nothing: echo bytes are compared as
/// they arrive.
#[derive(Debug)]
pub struct Pinger {
    state: PingerState,
}

impl Default for Pinger {
    fn default() -> Self {
        Self::new()
    }
}

impl Pinger {
    /// A pinger with no ping outstanding.
    #[must_use]
    pub fn new() -> Self {
        Self {
            state: PingerState::Idle,
        }
    }

    /// Starts a ping sent at `now` and returns the bytes to write. `payload` must be fresh
    /// random bytes from the node's seeded RNG.
    pub fn send(&mut self, payload: [u8; PING_SIZE], now: Instant) -> Result<Bytes, PingError> {
        match self.state {
            PingerState::Idle => {
                self.state = PingerState::Waiting {
                    payload,
                    sent_at: now,
                    matched: 0,
                };
                Ok(Bytes::copy_from_slice(&payload))
            }
            PingerState::Waiting { .. } => Err(PingError::InFlight),
            PingerState::Failed => Err(PingError::Failed),
        }
    }

    /// Consumes echo bytes that arrived at `now`. Returns the round-trip time once the whole
    /// echo has arrived and matched; the pinger is then ready for the next [`Pinger::send`].
    pub fn handle_input(
        &mut self,
        data: &[u8],
        now: Instant,
    ) -> Result<Option<Duration>, PingError> {
        let result = self.advance(data, now);
        if result.is_err() {
            self.state = PingerState::Failed;
        }
        result
    }

    fn advance(&mut self, data: &[u8], now: Instant) -> Result<Option<Duration>, PingError> {
        if data.is_empty() {
            return Ok(None);
        }
        let PingerState::Waiting {
            payload,
            sent_at,
            matched,
        } = &mut self.state
        else {
            return Err(match self.state {
                PingerState::Failed => PingError::Failed,
                _ => PingError::Unsolicited { len: data.len() },
            });
        };
        let expected = &payload[*matched..];
        if data.len() > expected.len() {
            return Err(PingError::Unsolicited {
                len: data.len() - expected.len(),
            });
        }
        if let Some(i) = data.iter().zip(expected).position(|(a, b)| a != b) {
            return Err(PingError::Mismatch {
                offset: *matched + i,
            });
        }
        *matched += data.len();
        if *matched < PING_SIZE {
            return Ok(None);
        }
        let rtt = now.saturating_duration_since(*sent_at);
        self.state = PingerState::Idle;
        Ok(Some(rtt))
    }

    /// Whether a ping is waiting for its echo.
    #[must_use]
    pub fn is_waiting(&self) -> bool {
        matches!(self.state, PingerState::Waiting { .. })
    }

    /// When the outstanding ping was sent, for the caller's timeout.
    #[must_use]
    pub fn sent_at(&self) -> Option<Instant> {
        match self.state {
            PingerState::Waiting { sent_at, .. } => Some(sent_at),
            PingerState::Idle | PingerState::Failed => None,
        }
    }
}

/// The responding side of ping on one stream: echoes every complete 32-byte block, holding at
/// most one partial block (under [`PING_SIZE`] bytes) between inputs.
#[derive(Debug, Default)]
pub struct PingResponder {
    partial: [u8; PING_SIZE],
    filled: usize,
}

impl PingResponder {
    /// A responder with nothing buffered.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes received bytes and returns the bytes to write back: every block completed by
    /// this input, in order (empty if none). The output never exceeds `buffered() + data.len()`,
    /// so the responder adds no queue of its own; stream flow control bounds the rate.
    #[must_use]
    pub fn handle_input(&mut self, mut data: &[u8]) -> Bytes {
        let total = self.filled + data.len();
        let mut out = BytesMut::with_capacity(total - total % PING_SIZE);
        if self.filled > 0 {
            let take = (PING_SIZE - self.filled).min(data.len());
            self.partial[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < PING_SIZE {
                return out.freeze();
            }
            out.extend_from_slice(&self.partial);
            self.filled = 0;
        }
        let whole = data.len() - data.len() % PING_SIZE;
        out.extend_from_slice(&data[..whole]);
        let rest = &data[whole..];
        self.partial[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
        out.freeze()
    }

    /// Bytes of a partial block held until the rest arrives; always under [`PING_SIZE`].
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.filled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::virtual_epoch;

    fn payload(seed: u8) -> [u8; PING_SIZE] {
        std::array::from_fn(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
    }

    #[test]
    fn echo_reports_the_rtt_between_the_given_instants() {
        let t0 = virtual_epoch();
        let mut pinger = Pinger::new();
        let mut responder = PingResponder::new();
        let sent = pinger.send(payload(1), t0).unwrap();
        assert_eq!(&sent[..], &payload(1));
        assert_eq!(pinger.sent_at(), Some(t0));
        let echo = responder.handle_input(&sent);
        assert_eq!(echo, sent);
        let (head, tail) = echo.split_at(10);
        assert_eq!(
            pinger.handle_input(head, t0 + Duration::from_millis(20)),
            Ok(None)
        );
        assert_eq!(
            pinger.handle_input(tail, t0 + Duration::from_millis(42)),
            Ok(Some(Duration::from_millis(42)))
        );
        assert!(!pinger.is_waiting());
    }

    #[test]
    fn successive_pings_share_one_stream() {
        let t0 = virtual_epoch();
        let mut pinger = Pinger::new();
        for (i, ms) in [5u64, 7, 11].into_iter().enumerate() {
            let sent_at = t0 + Duration::from_secs(i as u64);
            let sent = pinger.send(payload(i as u8), sent_at).unwrap();
            assert_eq!(
                pinger.handle_input(&sent, sent_at + Duration::from_millis(ms)),
                Ok(Some(Duration::from_millis(ms)))
            );
        }
    }

    #[test]
    fn wrong_echo_is_a_mismatch() {
        let t0 = virtual_epoch();
        let mut pinger = Pinger::new();
        let _ = pinger.send(payload(1), t0).unwrap();
        let mut echo = payload(1);
        echo[17] ^= 0x01;
        assert_eq!(pinger.handle_input(&echo[..17], t0), Ok(None));
        assert_eq!(
            pinger.handle_input(&echo[17..], t0),
            Err(PingError::Mismatch { offset: 17 })
        );
        assert_eq!(pinger.send(payload(2), t0), Err(PingError::Failed));
    }

    #[test]
    fn unsolicited_and_excess_bytes_are_refused() {
        let t0 = virtual_epoch();
        let mut pinger = Pinger::new();
        assert_eq!(
            pinger.handle_input(b"x", t0),
            Err(PingError::Unsolicited { len: 1 })
        );
        let mut pinger = Pinger::new();
        let sent = pinger.send(payload(3), t0).unwrap();
        let mut echo = sent.to_vec();
        echo.push(0);
        assert_eq!(
            pinger.handle_input(&echo, t0),
            Err(PingError::Unsolicited { len: 1 })
        );
    }

    #[test]
    fn second_send_while_waiting_is_misuse() {
        let t0 = virtual_epoch();
        let mut pinger = Pinger::new();
        let _ = pinger.send(payload(1), t0).unwrap();
        assert_eq!(pinger.send(payload(2), t0), Err(PingError::InFlight));
    }

    #[test]
    fn responder_echoes_blocks_split_arbitrarily() {
        let stream: Vec<u8> = (0..3).flat_map(payload).collect();
        for split_a in 0..=stream.len() {
            for split_b in [split_a, (split_a + 1).min(stream.len()), stream.len()] {
                let mut responder = PingResponder::new();
                let mut echoed = Vec::new();
                for part in [
                    &stream[..split_a],
                    &stream[split_a..split_b],
                    &stream[split_b..],
                ] {
                    let out = responder.handle_input(part);
                    assert_eq!(out.len() % PING_SIZE, 0);
                    echoed.extend_from_slice(&out);
                    assert!(responder.buffered() < PING_SIZE);
                }
                assert_eq!(echoed, stream, "splits {split_a}/{split_b}");
            }
        }
    }

    #[test]
    fn responder_holds_a_partial_block_until_complete() {
        let mut responder = PingResponder::new();
        assert!(responder.handle_input(&payload(9)[..31]).is_empty());
        assert_eq!(responder.buffered(), 31);
        assert_eq!(&responder.handle_input(&payload(9)[31..])[..], &payload(9));
        assert_eq!(responder.buffered(), 0);
    }
}
