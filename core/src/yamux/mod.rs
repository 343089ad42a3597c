//! Yamux (`/yamux/1.0.0`), sans-IO: many streams over one reliable byte stream (DESIGN §4.3,
//! last bullet: a relayed circuit, after TLS, carries a yamux session).
//!
//! Wire format per the hashicorp/yamux spec as used by libp2p: 12-byte headers
//! ([`frame`]), per-stream flow control starting at 256 KiB ([`config`]), `SYN`/`ACK` to open,
//! `FIN` to half-close, `RST` to abort, session-level ping and go-away. The [`Session`] type
//! documents how to drive it.
//!
//! - [`frame`]: header codec.
//! - [`config`]: bounds ([`YamuxConfig`]).
//! - [`stream`]: per-stream state, [`ReadOutcome`], [`StreamInfo`].
//! - [`session`]: [`Session`], [`Mode`], [`YamuxEvent`].
//! - [`error`]: [`YamuxError`] (local), [`SessionError`] (peer faults).

pub mod config;
pub mod error;
pub mod frame;
pub mod session;
pub mod stream;

#[cfg(test)]
mod tests;

pub use config::{INITIAL_STREAM_WINDOW, YamuxConfig};
pub use error::{Limit, Misbehaviour, SessionError, YamuxError};
pub use frame::{Flags, FrameError, FrameType, GoAwayCode, HEADER_LEN, Header, StreamId};
pub use session::{Mode, Session, YamuxEvent};
pub use stream::{ReadOutcome, StreamInfo};
