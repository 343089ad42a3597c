//! Stream opens waiting for stream credit.
//!
//! The core refuses an open at once with `StreamError::TooManyStreams` when the peer's QUIC
//! stream credit is used up, and reports `Event::StreamsAvailable` when the peer raises it (a
//! relay starts inbound connections with a small credit and raises it one round trip after the
//! peer uses half of it). Callers of the adapter's `open_stream`, `reserve` and `ping` should not
//! see that refusal: the driver parks their request here, in order, and tries again on the
//! event, for at most the node's request timeout. The queue per connection is bounded.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use dep2p_core::node::{ClientReservation, ConnectionId, StreamHandle};

use crate::Error;
use crate::driver::Reply;

/// Requests that may wait for credit on one connection; beyond it, one fails at once.
pub const MAX_PARKED_OPENS: usize = 64;

/// What a parked request opens a stream for, with the caller waiting for its answer.
#[derive(Debug)]
pub(crate) enum ParkedRequest {
    /// An application stream for `protocol`.
    Stream {
        protocol: String,
        reply: Reply<StreamHandle>,
    },
    /// A RESERVE on a relay.
    Reserve { reply: Reply<ClientReservation> },
    /// A ping.
    Ping { reply: Reply<Duration> },
}

impl ParkedRequest {
    /// Answers the caller with `error`.
    pub(crate) fn fail(self, error: Error) {
        match self {
            Self::Stream { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            Self::Reserve { reply } => {
                let _ = reply.send(Err(error));
            }
            Self::Ping { reply } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// One request waiting for credit.
#[derive(Debug)]
pub(crate) struct ParkedOpen {
    pub(crate) request: ParkedRequest,
    pub(crate) deadline: Instant,
}

/// The parked opens of every connection (keyed by `C`, a `ConnectionId` in the driver), oldest
/// first, with their deadlines in order.
#[derive(Debug)]
pub(crate) struct ParkedOpens<C> {
    by_connection: BTreeMap<C, VecDeque<ParkedOpen>>,
    /// (deadline, connection) of every parked open; several opens may share one entry, and an
    /// entry may outlive its opens (it is dropped when it passes).
    deadlines: BTreeSet<(Instant, C)>,
}

impl<C> Default for ParkedOpens<C> {
    fn default() -> Self {
        Self {
            by_connection: BTreeMap::new(),
            deadlines: BTreeSet::new(),
        }
    }
}

impl<C: Ord + Copy> ParkedOpens<C> {
    /// Parks an open; gives it back when the connection already has [`MAX_PARKED_OPENS`].
    pub(crate) fn park(&mut self, connection: C, open: ParkedOpen) -> Result<(), ParkedOpen> {
        let queue = self.by_connection.entry(connection).or_default();
        if queue.len() >= MAX_PARKED_OPENS {
            return Err(open);
        }
        self.deadlines.insert((open.deadline, connection));
        queue.push_back(open);
        Ok(())
    }

    /// The oldest open waiting on `connection`, taken out of the queue.
    pub(crate) fn pop(&mut self, connection: C) -> Option<ParkedOpen> {
        let queue = self.by_connection.get_mut(&connection)?;
        let open = queue.pop_front();
        if queue.is_empty() {
            self.by_connection.remove(&connection);
        }
        open
    }

    /// Puts back an open taken with [`pop`](Self::pop) that still found no credit, first in line.
    pub(crate) fn unpop(&mut self, connection: C, open: ParkedOpen) {
        self.deadlines.insert((open.deadline, connection));
        self.by_connection
            .entry(connection)
            .or_default()
            .push_front(open);
    }

    /// Every open waiting on `connection` (it closed).
    pub(crate) fn take_all(&mut self, connection: C) -> VecDeque<ParkedOpen> {
        self.by_connection.remove(&connection).unwrap_or_default()
    }

    /// The earliest deadline of a parked open.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.first().map(|&(at, _)| at)
    }

    /// Whether opens wait on `connection` (a new open goes behind them).
    pub(crate) fn is_waiting(&self, connection: C) -> bool {
        self.by_connection.contains_key(&connection)
    }

    /// Removes and returns every open whose deadline is `now` or earlier, with its connection.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(C, ParkedOpen)> {
        let mut expired = Vec::new();
        while let Some(&(at, connection)) = self.deadlines.first() {
            if at > now {
                break;
            }
            self.deadlines.remove(&(at, connection));
            let Some(queue) = self.by_connection.get_mut(&connection) else {
                continue;
            };
            let (gone, kept): (VecDeque<_>, VecDeque<_>) =
                queue.drain(..).partition(|open| open.deadline <= now);
            *queue = kept;
            if queue.is_empty() {
                self.by_connection.remove(&connection);
            }
            expired.extend(gone.into_iter().map(|open| (connection, open)));
        }
        expired
    }
}

/// The error a request gets when its connection still had no stream credit after `waited`, or
/// had [`MAX_PARKED_OPENS`] requests waiting already.
pub(crate) fn no_credit(connection: ConnectionId, waited: Option<Duration>) -> Error {
    Error::NoStreamCredit {
        connection,
        reason: match waited {
            Some(waited) => format!("the peer raised no stream credit within {waited:?}"),
            None => {
                format!("{MAX_PARKED_OPENS} requests already wait for the peer's stream credit")
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot;

    fn open(deadline: Instant) -> (ParkedOpen, oneshot::Receiver<Result<StreamHandle, Error>>) {
        let (reply, rx) = oneshot::channel();
        (
            ParkedOpen {
                request: ParkedRequest::Stream {
                    protocol: "/app/1.0.0".to_owned(),
                    reply,
                },
                deadline,
            },
            rx,
        )
    }

    #[test]
    fn opens_come_back_in_order_and_a_full_queue_refuses_the_next() {
        let now = Instant::now();
        let conn = 1u64;
        let mut parked = ParkedOpens::default();
        let mut keep = Vec::new();
        for i in 0..MAX_PARKED_OPENS {
            let (o, rx) = open(now + Duration::from_secs(i as u64 + 1));
            keep.push(rx);
            assert!(parked.park(conn, o).is_ok());
        }
        let (extra, _rx) = open(now);
        assert!(parked.park(conn, extra).is_err(), "the 65th is refused");
        let first = parked.pop(conn).expect("one waits");
        assert_eq!(first.deadline, now + Duration::from_secs(1));
        parked.unpop(conn, first);
        assert_eq!(
            parked.pop(conn).map(|o| o.deadline),
            Some(now + Duration::from_secs(1)),
            "put back first in line"
        );
    }

    #[test]
    fn expiry_takes_only_the_opens_past_their_deadline() {
        let now = Instant::now();
        let (a, b) = (1u64, 2u64);
        let mut parked = ParkedOpens::default();
        let (o1, _r1) = open(now + Duration::from_secs(1));
        let (o2, _r2) = open(now + Duration::from_secs(5));
        let (o3, _r3) = open(now + Duration::from_secs(1));
        assert!(parked.park(a, o1).is_ok());
        assert!(parked.park(a, o2).is_ok());
        assert!(parked.park(b, o3).is_ok());
        assert_eq!(parked.next_deadline(), Some(now + Duration::from_secs(1)));
        assert!(parked.expire(now).is_empty());
        assert_eq!(parked.expire(now + Duration::from_secs(2)).len(), 2);
        assert_eq!(parked.next_deadline(), Some(now + Duration::from_secs(5)));
        assert!(parked.pop(b).is_none(), "b's only open expired");
        assert_eq!(parked.take_all(a).len(), 1);
    }
}
