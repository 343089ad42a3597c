//! The seed corpus: real inputs for every target, generated deterministically (fixed keys,
//! fixed seeds, a fixed world) so `tests/seed_corpus.rs` can check that the committed files
//! under `fuzz/corpus/<target>/seed-*` are exactly what this code produces.

use bytes::Bytes;

use dep2p_core::identity::keypair_from_seed;
use dep2p_core::multistream::{Dialer, Listener, Progress};
use dep2p_core::protocols::identify::{self, IdentifyInfo};
use dep2p_core::relay::voucher::Voucher;
use dep2p_core::relay::wire::{
    CircuitLimit, HopRequest, HopResponse, ReservationInfo, Status, StopRequest, StopResponse,
};
use dep2p_core::tls::TlsIdentity;
use dep2p_core::yamux::{Mode, Session, YamuxConfig};
use multiaddr::Multiaddr;

use crate::codecs::PROTOCOLS;
use crate::node::op;

/// Writes inputs in the byte layout the harnesses read with `arbitrary::Unstructured`:
/// integers little-endian, `bool` as one byte.
#[derive(Default)]
pub struct Input(pub Vec<u8>);

impl Input {
    /// A byte.
    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }
    /// A `u16`.
    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A `u64`.
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Raw bytes.
    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }
    /// A `u16` length, then the bytes.
    pub fn sized(self, v: &[u8]) -> Self {
        let len = u16::try_from(v.len()).expect("seed pieces are small");
        self.u16(len).bytes(v)
    }
}

/// One seed: target, name (the file is `seed-<name>`), bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// Unix time of the seeds (inside every validity window they use).
const NOW: u64 = 1_767_225_600;

fn peer(n: u8) -> libp2p_identity::PeerId {
    keypair_from_seed([n; 32]).public().to_peer_id()
}

fn strip(frame: &Bytes) -> Vec<u8> {
    let mut at = 0;
    while frame[at] & 0x80 != 0 {
        at += 1;
    }
    frame[at + 1..].to_vec()
}

/// A dialer and a listener negotiating `want`: what each sent.
fn negotiation(want: &[&str], supported: &[&str]) -> (Vec<u8>, Vec<u8>) {
    let mut dialer = Dialer::new(want.iter().copied()).expect("valid ids");
    let supported: Vec<String> = supported.iter().map(|s| (*s).to_owned()).collect();
    let mut listener = Listener::new(supported);
    let (mut from_dialer, mut from_listener) = (Vec::new(), Vec::new());
    for _ in 0..16 {
        let mut d = Vec::new();
        while let Some(b) = dialer.poll_output() {
            d.extend_from_slice(&b);
        }
        from_dialer.extend_from_slice(&d);
        let done_l = matches!(
            listener.handle_input(&d),
            Ok(Progress::Negotiated(_)) | Err(_)
        );
        let mut l = Vec::new();
        while let Some(b) = listener.poll_output() {
            l.extend_from_slice(&b);
        }
        from_listener.extend_from_slice(&l);
        let done_d = matches!(
            dialer.handle_input(&l),
            Ok(Progress::Negotiated(_)) | Err(_)
        );
        if done_l && done_d {
            break;
        }
    }
    (from_dialer, from_listener)
}

fn multistream() -> Vec<Seed> {
    let mut out = Vec::new();
    for (name, want) in [
        ("hop", &["/libp2p/circuit/relay/0.2.0/hop"][..]),
        ("second-choice", &["/unknown/1.0.0", "/ipfs/id/1.0.0"][..]),
        ("refused", &["/nope/1", "/nope/2", "/nope/3"][..]),
    ] {
        let (d, l) = negotiation(want, &PROTOCOLS);
        // Dialer role: the listener's bytes, whole (length byte 0) and one byte per read.
        out.push((
            "multistream",
            format!("dialer-{name}"),
            Input::default().u8(0).u8(0).bytes(&l).0,
        ));
        out.push((
            "multistream",
            format!("listener-{name}"),
            Input::default().u8(1).u8(0).bytes(&d).0,
        ));
        let mut split = Input::default().u8(1);
        for b in &d {
            split = split.u8(1).u8(*b);
        }
        out.push(("multistream", format!("listener-{name}-bytewise"), split.0));
    }
    out
}

fn relay_wire() -> Vec<Seed> {
    let relay = keypair_from_seed([1; 32]);
    let voucher = Voucher {
        relay: relay.public().to_peer_id(),
        peer: peer(2),
        expiration_unix_secs: NOW + 3600,
    }
    .sign(&relay)
    .expect("relay key signs");
    let addr: Multiaddr = format!(
        "/ip4/192.0.2.1/udp/4001/quic-v1/p2p/{}",
        relay.public().to_peer_id()
    )
    .parse()
    .expect("multiaddr");
    let limit = Some(CircuitLimit {
        duration_secs: Some(120),
        data_bytes: Some(1 << 17),
    });
    let messages: Vec<(&str, u8, Bytes)> = vec![
        ("hop-reserve", 0, HopRequest::Reserve.encode()),
        (
            "hop-connect",
            0,
            HopRequest::Connect { peer: peer(3) }.encode(),
        ),
        (
            "hop-status-reserved",
            1,
            HopResponse::reservation_accepted(
                ReservationInfo {
                    expire_unix_secs: NOW + 3600,
                    addrs: vec![addr],
                    voucher: Some(voucher),
                },
                limit,
            )
            .encode(),
        ),
        (
            "hop-status-connected",
            1,
            HopResponse::circuit_established(limit).encode(),
        ),
        (
            "hop-status-refused",
            1,
            HopResponse::from_status(Status::ReservationRefused).encode(),
        ),
        (
            "stop-connect",
            2,
            StopRequest::Connect {
                source: peer(4),
                limit,
            }
            .encode(),
        ),
        (
            "stop-status",
            3,
            StopResponse { status: Status::Ok }.encode(),
        ),
    ];
    messages
        .into_iter()
        .map(|(name, kind, frame)| {
            (
                "relay_wire",
                name.to_owned(),
                Input::default().u8(kind).bytes(&strip(&frame)).0,
            )
        })
        .collect()
}

fn voucher() -> Vec<Seed> {
    let relay = keypair_from_seed([1; 32]);
    let envelope = Voucher {
        relay: relay.public().to_peer_id(),
        peer: peer(2),
        expiration_unix_secs: NOW + 3600,
    }
    .sign(&relay)
    .expect("relay key signs");
    vec![
        (
            "voucher",
            "valid".into(),
            Input::default().u64(NOW).bytes(&envelope).0,
        ),
        (
            "voucher",
            "expired".into(),
            Input::default().u64(NOW + 7200).bytes(&envelope).0,
        ),
    ]
}

fn certificate() -> Vec<Seed> {
    let host = keypair_from_seed([5; 32]);
    let other = keypair_from_seed([6; 32]);
    let good = TlsIdentity::new(&host, [7; 32]).expect("identity");
    let bare = TlsIdentity::forged_without_libp2p_extension(&host, [7; 32]).expect("forged");
    let wrong =
        TlsIdentity::forged_with_extension_signed_by(&host, &other, [7; 32]).expect("forged");
    [
        ("valid", good),
        ("no-extension", bare),
        ("wrong-signer", wrong),
    ]
    .into_iter()
    .map(|(name, id)| {
        (
            "certificate",
            name.to_owned(),
            Input::default().u64(NOW).bytes(id.certificate()).0,
        )
    })
    .collect()
}

fn yamux() -> Vec<Seed> {
    // A client session opens two streams, writes, finishes one, resets the other, pings and
    // closes: the frames it emits, fed to a server session by the harness.
    let mut client = Session::new(Mode::Client, YamuxConfig::default());
    let s1 = client.open_stream().expect("stream");
    let s2 = client.open_stream().expect("stream");
    let _ = client.write(s1, b"hello over yamux");
    let _ = client.write(s2, &[7; 300]);
    let _ = client.finish(s1);
    let _ = client.reset(s2);
    let _ = client.ping(42);
    client.close();
    let mut frames = Vec::new();
    while let Some(b) = client.poll_output() {
        frames.extend_from_slice(&b);
    }
    // Harness layout: mode (false = server), then op 0 (peer bytes) with a u16 length.
    let whole = Input::default().u8(0).u8(0).sized(&frames).0;
    let mut split = Input::default().u8(0);
    for chunk in frames.chunks(12) {
        split = split.u8(0).sized(chunk);
    }
    // Local commands too: open, write, read, finish, ping (server mode).
    let commands = Input::default()
        .u8(0)
        .u8(3)
        .u8(4)
        .u8(0)
        .u16(100)
        .u8(0)
        .sized(&frames)
        .u8(5)
        .u8(1)
        .u16(64)
        .u8(6)
        .u8(0)
        .u8(1)
        .u8(7)
        .u8(1)
        .u64(9)
        .0;
    vec![
        ("yamux", "client-frames".into(), whole),
        ("yamux", "client-frames-split".into(), split.0),
        ("yamux", "commands".into(), commands),
    ]
}

fn identify_info() -> IdentifyInfo {
    IdentifyInfo {
        public_key: keypair_from_seed([8; 32]).public(),
        protocol_version: "ipfs/0.1.0".into(),
        agent_version: "dep2p/0.1.0".into(),
        listen_addrs: vec![
            "/ip4/192.0.2.1/udp/4001/quic-v1"
                .parse()
                .expect("multiaddr"),
            "/ip6/2001:db8::1/udp/4001/quic-v1"
                .parse()
                .expect("multiaddr"),
        ],
        observed_addr: Some(
            "/ip4/198.51.100.7/udp/5000/quic-v1"
                .parse()
                .expect("multiaddr"),
        ),
        protocols: PROTOCOLS.iter().map(|p| (*p).to_owned()).collect(),
    }
}

fn identify() -> Vec<Seed> {
    let message = identify::encode(&identify_info());
    vec![
        (
            "identify",
            "whole".into(),
            Input::default().u8(255).bytes(&message).0,
        ),
        (
            "identify",
            "split-7".into(),
            Input::default().u8(7).bytes(&message).0,
        ),
    ]
}

/// A multistream proposal of `protocol` from the first byte of a stream, then `payload`.
fn proposal(protocol: &str, payload: &[u8]) -> Vec<u8> {
    let (d, _) = negotiation(&[protocol], &[protocol]);
    let mut out = d;
    out.extend_from_slice(payload);
    out
}

fn node() -> Vec<Seed> {
    let scene = crate::node::scene();
    let captured = &scene.raw.captured;
    let hop = "/libp2p/circuit/relay/0.2.0/hop";
    let reserve = proposal(hop, &HopRequest::Reserve.encode());
    let connect = proposal(hop, &HopRequest::Connect { peer: peer(3) }.encode());
    let id = proposal("/ipfs/id/1.0.0", &[]);
    let ping = proposal("/ipfs/ping/1.0.0", &[0x11; 32]);
    let mut out = vec![
        (
            "reserve",
            Input::default()
                .u8(op::RAW_STREAM)
                .u8(1)
                .sized(&reserve)
                .u8(op::WAIT)
                .u16(500),
        ),
        (
            "connect",
            Input::default().u8(op::RAW_STREAM).u8(1).sized(&connect),
        ),
        (
            "identify",
            Input::default()
                .u8(op::RAW_STREAM)
                .u8(0)
                .sized(&id)
                .u8(op::WAIT)
                .u16(200),
        ),
        (
            "ping",
            Input::default().u8(op::RAW_STREAM).u8(0).sized(&ping),
        ),
        (
            "app-stream",
            Input::default().u8(op::APP_STREAM).sized(b"echo me"),
        ),
        (
            "mutated",
            Input::default()
                .u8(op::MUTATED)
                .u8(0)
                .u8(0)
                .u16(3)
                .u8(2)
                .u16(20)
                .u8(0x40)
                .u16(40)
                .u8(1)
                .u16(1200),
        ),
        (
            "stranger",
            Input::default()
                .u8(op::DATAGRAM)
                .u8(0)
                .u8(2)
                .sized(&[0xc3; 1200]),
        ),
    ];
    // Real datagrams of the raw connection, replayed from the raw peer's and b's addresses.
    for (i, datagram) in captured.iter().take(4).enumerate() {
        let name = ["captured-0", "captured-1", "captured-2", "captured-3"][i];
        out.push((
            name,
            Input::default()
                .u8(op::DATAGRAM)
                .u8(0)
                .u8(u8::from(i % 2 == 1))
                .sized(datagram),
        ));
    }
    out.into_iter()
        .map(|(n, i)| ("node", n.to_owned(), i.0))
        .collect()
}

fn relay_ops() -> Vec<Seed> {
    // Limit bytes (17 of them) then operations; a deterministic byte pattern per seed.
    let limits = [3u8, 1, 10, 2, 1, 5, 100, 3, 2, 4, 3, 2, 1, 3, 2, 2, 3];
    let ops: [&[u8]; 3] = [
        // reserve 0,1,2 from ip 0,1,2; connect 3->0, 4->1; bytes; time; expire.
        &[
            0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 0, 0, 3, 4, 1, 1, 5, 0, 1, 50, 5, 0, 0, 90, 8, 255,
            255, 7, 4, 0,
        ],
        // many reserves from one ip, then removals and re-reserves.
        &[
            0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 6, 1, 0, 4, 0, 8, 16, 39, 7, 0, 5, 0,
        ],
        // circuits up to the limits, closing and reopening.
        &[
            0, 0, 0, 0, 1, 1, 2, 1, 0, 0, 2, 2, 2, 0, 2, 3, 3, 0, 4, 0, 2, 4, 4, 1, 8, 160, 15, 7,
        ],
    ];
    ops.iter()
        .enumerate()
        .map(|(i, ops)| {
            (
                "relay_ops",
                format!("ops-{i}"),
                Input::default().bytes(&limits).bytes(ops).0,
            )
        })
        .collect()
}

fn scenario() -> Vec<Seed> {
    vec![
        // Chaos, seed 7, 2 clients, 2 relays, small flows; no decoded faults.
        (
            "scenario",
            "chaos-no-faults".into(),
            Input::default()
                .u8(2)
                .u64(7)
                .u8(1)
                .u8(1)
                .u16(4096)
                .u16(1024)
                .u8(0)
                .0,
        ),
        // Tier 2 with relay A crashing at 5 s and a lossy link to client 0 at 8 s.
        (
            "scenario",
            "tier2-crash-lossy".into(),
            Input::default()
                .u8(1)
                .u64(3)
                .u8(1)
                .u16(8192)
                .u16(2048)
                .u8(2)
                .u16(4000)
                .u8(0)
                .u8(0)
                .u16(7000)
                .u8(0)
                .u8(7)
                .bytes(&[20, 5, 30, 0, 0, 0, 0, 0, 0])
                .0,
        ),
    ]
}

/// Every seed of every target.
#[must_use]
pub fn all() -> Vec<Seed> {
    [
        multistream(),
        relay_wire(),
        voucher(),
        certificate(),
        yamux(),
        identify(),
        node(),
        relay_ops(),
        scenario(),
    ]
    .into_iter()
    .flatten()
    .collect()
}
