//! Conversions between socket addresses and QUIC multiaddrs (`/ip4/…/udp/…/quic-v1[/p2p/…]`).

use std::net::{IpAddr, SocketAddr};

use multiaddr::{Multiaddr, Protocol};

use crate::identity::PeerId;

/// Why a multiaddr is not a dialable QUIC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// The address is not `/ip4|ip6/<ip>/udp/<port>/quic-v1[/p2p/<peer>]`.
    #[error("`{0}` is not a QUIC address (expected /ip4|ip6/<ip>/udp/<port>/quic-v1[/p2p/<peer>])")]
    NotQuic(Multiaddr),
}

/// `/ip4/<ip>/udp/<port>/quic-v1` (or `/ip6/…`) for a socket address.
#[must_use]
pub fn quic_multiaddr(addr: SocketAddr) -> Multiaddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    Multiaddr::empty()
        .with(ip)
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::QuicV1)
}

/// Splits a QUIC multiaddr into its socket address and optional `/p2p/` peer.
pub fn parse_quic_multiaddr(addr: &Multiaddr) -> Result<(SocketAddr, Option<PeerId>), AddrError> {
    let bad = || AddrError::NotQuic(addr.clone());
    let mut parts = addr.iter();
    let ip = match parts.next() {
        Some(Protocol::Ip4(ip)) => IpAddr::V4(ip),
        Some(Protocol::Ip6(ip)) => IpAddr::V6(ip),
        _ => return Err(bad()),
    };
    let Some(Protocol::Udp(port)) = parts.next() else {
        return Err(bad());
    };
    let Some(Protocol::QuicV1) = parts.next() else {
        return Err(bad());
    };
    let peer = match parts.next() {
        None => None,
        Some(Protocol::P2p(peer)) => Some(peer),
        Some(_) => return Err(bad()),
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok((SocketAddr::new(ip, port), peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_multiaddrs_round_trip_with_and_without_peer() {
        let socket: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let addr = quic_multiaddr(socket);
        assert_eq!(addr.to_string(), "/ip4/127.0.0.1/udp/4001/quic-v1");
        assert_eq!(parse_quic_multiaddr(&addr).unwrap(), (socket, None));
        let peer = crate::identity::keypair_from_seed([5; 32])
            .public()
            .to_peer_id();
        let with_peer = addr.with(Protocol::P2p(peer));
        assert_eq!(
            parse_quic_multiaddr(&with_peer).unwrap(),
            (socket, Some(peer))
        );
    }

    #[test]
    fn non_quic_multiaddrs_are_refused_by_name() {
        let tcp: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        let err = parse_quic_multiaddr(&tcp).unwrap_err();
        assert!(err.to_string().contains("/ip4/127.0.0.1/tcp/4001"), "{err}");
    }
}
