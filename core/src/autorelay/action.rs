//! What AutoRelay asks the node to do ([`AutoRelayAction`]) and why it switched
//! ([`SwitchReason`]).

use multiaddr::Multiaddr;

use crate::identity::PeerId;

/// Why AutoRelay took a relay, reported in [`AutoRelayAction::Switched`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SwitchReason {
    /// A slot below `min_relays` was filled and no earlier relay was replaced.
    Initial,
    /// The connection to the previous relay was lost.
    ConnectionLost,
    /// The previous relay closed its connection with the drain (shutdown) code.
    Drained,
    /// The previous relay refused to renew the reservation (limit or policy).
    Refused,
    /// Renewing the reservation on the previous relay failed.
    ReservationFailed,
    /// The previous reservation expired without a renewal being reported.
    Expired,
    /// The new relay scored better than the previous one by the switch margin, after the
    /// previous one's minimum dwell time.
    Better,
}

impl SwitchReason {
    /// A short stable label (metrics, logs).
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::ConnectionLost => "connection_lost",
            Self::Drained => "drained",
            Self::Refused => "refused",
            Self::ReservationFailed => "reservation_failed",
            Self::Expired => "expired",
            Self::Better => "better",
        }
    }
}

/// An instruction from [`super::AutoRelay`] to the node, drained with
/// [`super::AutoRelay::poll_action`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "the node must carry out every AutoRelay action"]
pub enum AutoRelayAction {
    /// Connect to a relay candidate; answer with `on_connected` or `on_dial_failed`.
    Dial {
        /// The candidate.
        peer: PeerId,
        /// Its known addresses.
        addrs: Vec<Multiaddr>,
    },
    /// Send RESERVE over the existing connection; answer with `on_reservation_accepted`,
    /// `on_reservation_refused`, `on_reservation_failed` or `on_hop_unsupported`.
    Reserve {
        /// The relay.
        peer: PeerId,
    },
    /// Give up the reservation on this relay (stop renewing it; the connection may be closed).
    /// Always preceded by an [`AutoRelayAction::AddrsChanged`] that no longer lists it, and
    /// only after its replacement holds a reservation.
    Release {
        /// The relay.
        peer: PeerId,
    },
    /// The circuit addresses to advertise changed; this is the full new set.
    AddrsChanged {
        /// Every circuit address through every held relay.
        addrs: Vec<Multiaddr>,
    },
    /// A relay was taken into the held set (for a report or an event; nothing to do).
    Switched {
        /// The relay it replaces, if any.
        from: Option<PeerId>,
        /// The relay now held.
        to: PeerId,
        /// Why.
        why: SwitchReason,
    },
}
