//! The trace hash: SHA-256 over every input and output of a run (DESIGN §8).
//!
//! Each record is tagged and its fields are fixed-width or length-prefixed, so two different
//! traces cannot hash the same bytes. Two runs of the same scenario and seed must print the
//! same hash; any divergence (a `HashMap` order, a clock read, an unseeded random draw) shows
//! as a different hash.

use std::time::Duration;

use dep2p_core::node::Event;

use crate::HostId;

/// A running hash of a run.
pub(crate) struct Trace {
    ctx: ring::digest::Context,
}

impl Trace {
    pub(crate) fn new() -> Self {
        Self {
            ctx: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }

    fn header(&mut self, tag: &[u8; 1], host: HostId, offset: Duration) {
        self.ctx.update(tag);
        self.ctx.update(&(host.0 as u64).to_le_bytes());
        self.ctx.update(
            &u64::try_from(offset.as_nanos())
                .unwrap_or(u64::MAX)
                .to_le_bytes(),
        );
    }

    fn bytes(&mut self, data: &[u8]) {
        self.ctx.update(&(data.len() as u64).to_le_bytes());
        self.ctx.update(data);
    }

    /// Input: a datagram delivered to `to`.
    pub(crate) fn datagram(&mut self, from: HostId, to: HostId, offset: Duration, data: &[u8]) {
        self.header(b"D", to, offset);
        self.ctx.update(&(from.0 as u64).to_le_bytes());
        self.bytes(data);
    }

    /// Input: a timeout handled by `host`.
    pub(crate) fn timeout(&mut self, host: HostId, offset: Duration) {
        self.header(b"T", host, offset);
    }

    /// Input: a command run on `host` (its effects show in the outputs that follow).
    pub(crate) fn command(&mut self, host: HostId, offset: Duration) {
        self.header(b"C", host, offset);
    }

    /// Output: a datagram `host` sent.
    pub(crate) fn transmit(&mut self, host: HostId, to: HostId, offset: Duration, data: &[u8]) {
        self.header(b"S", host, offset);
        self.ctx.update(&(to.0 as u64).to_le_bytes());
        self.bytes(data);
    }

    /// Output: an event `host` emitted.
    pub(crate) fn event(&mut self, host: HostId, offset: Duration, event: &Event) {
        self.header(b"E", host, offset);
        self.bytes(format!("{event:?}").as_bytes());
    }

    /// Input: a fault applied to the world.
    pub(crate) fn fault(&mut self, offset: Duration, fault: &str) {
        self.header(b"F", HostId(usize::MAX), offset);
        self.bytes(fault.as_bytes());
    }

    /// The hash so far, as hex.
    pub(crate) fn hex(&self) -> String {
        self.ctx
            .clone()
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}
