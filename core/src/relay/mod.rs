//! Circuit Relay v2 (DESIGN §4.3, §5.1): the wire messages of the HOP and STOP protocols, the
//! signed reservation vouchers, and the relay server's admission logic.
//!
//! The wire layer turns typed requests and responses into uvarint-length-prefixed protobuf
//! frames and back, and classifies bad input so that the relay can answer with the right status
//! code. The admission layer is pure data: tables that decide, given `now`, whether a RESERVE or
//! CONNECT is admitted and with which status it is refused. Neither does I/O; the node drives
//! both.
//!
//! - [`wire`]: `HopMessage` / `StopMessage` framing, typed as [`wire::HopRequest`],
//!   [`wire::HopResponse`], [`wire::StopRequest`] and [`wire::StopResponse`].
//! - [`voucher`]: signed envelopes (libp2p RFC 0002) carrying a reservation voucher.
//! - [`limits`]: [`limits::RelayLimits`], every limit of DESIGN §5.1 with its default.
//! - [`rate`]: [`rate::RateLimiter`], bounded per-key token buckets with exact arithmetic.
//! - [`peer_key`]: [`peer_key::PeerKey`], a PeerId that compares cheaply in those tables.
//! - [`refusal`]: [`refusal::RefusalReason`], its status code, and per-reason counters.
//! - [`reservations`]: [`reservations::ReservationTable`], RESERVE admission and expiry.
//! - [`circuits`]: [`circuits::CircuitTable`], CONNECT admission, byte and time limits.

pub mod circuits;
pub mod limits;
#[cfg(test)]
mod model_tests;
pub mod peer_key;
pub mod rate;
pub mod refusal;
pub mod reservations;
#[cfg(test)]
mod state_machine_tests;
#[cfg(test)]
mod test_model;
pub mod voucher;
pub mod wire;

/// Protocol id of Circuit Relay v2 HOP (client ↔ relay: RESERVE, CONNECT).
pub const HOP_PROTOCOL: &str = "/libp2p/circuit/relay/0.2.0/hop";
/// Protocol id of Circuit Relay v2 STOP (relay → target: CONNECT).
pub const STOP_PROTOCOL: &str = "/libp2p/circuit/relay/0.2.0/stop";
