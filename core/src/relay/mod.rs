//! Circuit Relay v2 (DESIGN §4.3): the wire messages of the HOP and STOP protocols and the
//! signed reservation vouchers.
//!
//! This module is the wire layer only. It turns typed requests and responses into
//! uvarint-length-prefixed protobuf frames and back, and it classifies bad input so that the
//! relay can answer with the right status code. The reservation table, limits and circuit
//! bridging live above it.
//!
//! - [`wire`]: `HopMessage` / `StopMessage` framing, typed as [`wire::HopRequest`],
//!   [`wire::HopResponse`], [`wire::StopRequest`] and [`wire::StopResponse`].
//! - [`voucher`]: signed envelopes (libp2p RFC 0002) carrying a reservation voucher.

pub mod voucher;
pub mod wire;
