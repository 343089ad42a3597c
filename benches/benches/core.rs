//! Criterion benchmarks of the sans-IO core (DESIGN §10, "Core" row and the pieces under it):
//!
//! - `codec/*`: Circuit Relay v2 HOP/STOP messages and multistream-select, encode and decode
//!   (through the length-prefix decoder, as they arrive on a stream).
//! - `admission/*`: reservation admission decisions of the relay's `ReservationTable`
//!   (target ≥ 1,000,000 decisions/s).
//! - `forwarding/*`: bulk bytes through a relayed connection between three real quinn-proto
//!   nodes in memory; `relay_cpu` counts only the relay's own time (target ≥ 1 GiB/s per
//!   core), `end_to_end` all three nodes on one core.
//! - `selection/*`: AutoRelay re-scoring and re-planning after an RTT sample, over a pool of
//!   64 connected candidates.
//!
//! Each group keeps its measurement short so that `cargo bench -p dep2p-benches` finishes in a
//! few minutes.

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, black_box, criterion_group, criterion_main};
use dep2p_benches::forward::{self, RelayedTrio};
use dep2p_core::autorelay::{AutoRelay, AutoRelayAction, AutoRelayConfig, CandidateSource};
use dep2p_core::framing::FrameDecoder;
use dep2p_core::identity::{PeerId, keypair_from_seed};
use dep2p_core::multistream::{Dialer, Listener, Progress};
use dep2p_core::relay::limits::RateLimit;
use dep2p_core::relay::limits::RelayLimits;
use dep2p_core::relay::reservations::ReservationTable;
use dep2p_core::relay::voucher::Voucher;
use dep2p_core::relay::wire::{
    CircuitLimit, HopRequest, HopResponse, ReservationInfo, StopRequest,
};
use dep2p_core::seed::SeedTree;
use dep2p_core::testing::virtual_epoch;

fn peers(n: usize) -> Vec<PeerId> {
    (0..n)
        .map(|i| {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            keypair_from_seed(seed).public().to_peer_id()
        })
        .collect()
}

/// Decodes one length-prefixed frame the way a stream reader does.
fn unframe(frame: &[u8]) -> Bytes {
    let mut decoder = FrameDecoder::new(4096);
    decoder.extend(frame);
    decoder
        .decode()
        .expect("well-formed frame")
        .expect("one whole frame")
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let relay_key = keypair_from_seed([1; 32]);
    let relay = relay_key.public().to_peer_id();
    let peer = keypair_from_seed([2; 32]).public().to_peer_id();
    let voucher = Voucher {
        relay,
        peer,
        expiration_unix_secs: 1_800_000_000,
    }
    .sign(&relay_key)
    .expect("relay key");
    let addr: multiaddr::Multiaddr = format!("/ip4/203.0.113.7/udp/4001/quic-v1/p2p/{relay}")
        .parse()
        .expect("valid");
    let accepted = HopResponse::reservation_accepted(
        ReservationInfo {
            expire_unix_secs: 1_800_000_000,
            addrs: vec![addr.clone(), addr],
            voucher: Some(voucher),
        },
        Some(CircuitLimit {
            duration_secs: Some(120),
            data_bytes: Some(1 << 17),
        }),
    );
    let connect = HopRequest::Connect { peer };
    let stop = StopRequest::Connect {
        source: peer,
        limit: Some(CircuitLimit {
            duration_secs: Some(120),
            data_bytes: Some(1 << 17),
        }),
    };

    group.bench_function("hop_reserve/encode", |b| {
        b.iter(|| black_box(HopRequest::Reserve).encode());
    });
    let reserve = HopRequest::Reserve.encode();
    group.bench_function("hop_reserve/decode", |b| {
        b.iter(|| HopRequest::decode(unframe(black_box(&reserve))).expect("valid"));
    });
    group.bench_function("hop_connect/encode", |b| {
        b.iter(|| black_box(&connect).encode());
    });
    let connect_frame = connect.encode();
    group.bench_function("hop_connect/decode", |b| {
        b.iter(|| HopRequest::decode(unframe(black_box(&connect_frame))).expect("valid"));
    });
    group.bench_function("hop_status_reservation/encode", |b| {
        b.iter(|| black_box(&accepted).encode());
    });
    let accepted_frame = accepted.encode();
    group.bench_function("hop_status_reservation/decode", |b| {
        b.iter(|| HopResponse::decode(unframe(black_box(&accepted_frame))).expect("valid"));
    });
    group.bench_function("stop_connect/encode", |b| {
        b.iter(|| black_box(&stop).encode());
    });
    let stop_frame = stop.encode();
    group.bench_function("stop_connect/decode", |b| {
        b.iter(|| StopRequest::decode(unframe(black_box(&stop_frame))).expect("valid"));
    });

    // A whole multistream-select exchange, dialer and listener, for the HOP protocol: header
    // and proposal out, echo back, as on every relay stream.
    let supported: std::sync::Arc<[String]> = vec![
        "/ipfs/id/1.0.0".to_owned(),
        "/ipfs/ping/1.0.0".to_owned(),
        dep2p_core::relay::HOP_PROTOCOL.to_owned(),
    ]
    .into();
    group.bench_function("multistream/negotiate_hop", |b| {
        b.iter(|| {
            let mut dialer = Dialer::new([dep2p_core::relay::HOP_PROTOCOL]).expect("valid id");
            let mut listener = Listener::new(std::sync::Arc::clone(&supported));
            let mut done = (false, false);
            while !(done.0 && done.1) {
                while let Some(out) = dialer.poll_output() {
                    if let Progress::Negotiated(_) = listener.handle_input(&out).expect("ok") {
                        done.1 = true;
                    }
                }
                while let Some(out) = listener.poll_output() {
                    if let Progress::Negotiated(_) = dialer.handle_input(&out).expect("ok") {
                        done.0 = true;
                    }
                }
            }
            black_box(done)
        });
    });
    group.finish();
}

fn admission(c: &mut Criterion) {
    let mut group = c.benchmark_group("admission");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));
    let unlimited = RateLimit::unlimited();
    let limits = RelayLimits::default()
        .max_reservations(0)
        .max_reservations_per_ip(0)
        .reservation_rate_per_peer(unlimited)
        .reservation_rate_per_ip(unlimited)
        .rate_limiter_max_keys(1 << 20);
    let peers = peers(10_000);
    let ip = |i: usize| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + (i as u32 % 4096)));
    let start = virtual_epoch();

    // 10,000 peers holding reservations renew in turn (the steady state of a busy relay).
    group.bench_function("renew_of_10k", |b| {
        let mut table = ReservationTable::new(limits.clone());
        for (i, peer) in peers.iter().enumerate() {
            let _ = table.admit(start, *peer, ip(i)).expect("admitted");
        }
        let mut i = 0usize;
        let mut now = start;
        b.iter(|| {
            i = (i + 1) % peers.len();
            now += Duration::from_micros(1);
            black_box(table.admit(now, peers[i], ip(i))).ok();
        });
    });
    // A new peer is admitted and later leaves (admit + remove), with 10,000 others held.
    group.bench_function("admit_new_and_remove", |b| {
        let mut table = ReservationTable::new(limits.clone());
        for (i, peer) in peers.iter().enumerate().skip(1) {
            let _ = table.admit(start, *peer, ip(i)).expect("admitted");
        }
        let mut now = start;
        b.iter(|| {
            now += Duration::from_micros(1);
            black_box(table.admit(now, peers[0], ip(0))).ok();
            table.remove(&peers[0]);
        });
    });
    // The default limits, table full: every decision is a refusal.
    group.bench_function("refuse_full_table", |b| {
        let mut table = ReservationTable::new(RelayLimits::default().max_reservations(1024));
        for (i, peer) in peers.iter().enumerate().take(1024) {
            let _ = table
                .admit(
                    start,
                    *peer,
                    IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i as u32)),
                )
                .expect("admitted");
        }
        let mut i = 1024usize;
        let now = start + Duration::from_secs(1);
        b.iter(|| {
            i = 1024 + (i + 1 - 1024) % (peers.len() - 1024);
            black_box(table.admit(now, peers[i], ip(i))).ok();
        });
    });
    group.finish();
}

fn forwarding(c: &mut Criterion) {
    const PER_ITER: u64 = 4 * 1024 * 1024;
    let mut group = c.benchmark_group("forwarding");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(PER_ITER));
    let latency = Duration::from_micros(250);
    // Only the relay's own time: what one relay core needs per byte forwarded.
    group.bench_function("relay_cpu", |b| {
        let mut trio = RelayedTrio::new(latency);
        trio.pump(PER_ITER); // past slow start
        b.iter_custom(|iters| {
            let before = trio.busy(forward::R);
            for _ in 0..iters {
                trio.pump(PER_ITER);
            }
            trio.busy(forward::R) - before
        });
    });
    // The whole path on one core: B encrypts, R decrypts and re-encrypts, A decrypts.
    group.bench_function("end_to_end", |b| {
        let mut trio = RelayedTrio::new(latency);
        trio.pump(PER_ITER);
        b.iter_custom(|iters| {
            #[allow(clippy::disallowed_methods)] // wall time is the measurement
            let started = Instant::now();
            for _ in 0..iters {
                trio.pump(PER_ITER);
            }
            started.elapsed()
        });
    });
    group.finish();
}

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("selection");
    group
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for pool in [16usize, 64] {
        let peers = peers(pool);
        let start = virtual_epoch();
        let config = AutoRelayConfig::default().pool_capacity(pool.max(16));
        let mut auto =
            AutoRelay::new(config, SeedTree::new([9; 32]).rng("autorelay")).expect("valid config");
        let addr: multiaddr::Multiaddr = "/ip4/203.0.113.1/udp/4001/quic-v1".parse().expect("ok");
        let addrs = vec![addr];
        let outcomes = auto.add_candidates(
            start,
            peers.iter().map(|p| (*p, addrs.as_slice())),
            CandidateSource::Static,
        );
        black_box(outcomes);
        let mut now = start;
        let answer = |auto: &mut AutoRelay, now: Instant| {
            while let Some(action) = auto.poll_action() {
                match action {
                    AutoRelayAction::Dial { peer, .. } => {
                        auto.on_connected(now, peer, Duration::from_millis(20));
                    }
                    AutoRelayAction::Reserve { peer } => auto.on_reservation_accepted(
                        now,
                        peer,
                        now + Duration::from_secs(3600),
                        &[],
                    ),
                    _ => {}
                }
            }
        };
        for (i, peer) in peers.iter().enumerate() {
            now += Duration::from_millis(1);
            auto.on_connected(now, *peer, Duration::from_millis(10 + i as u64));
            answer(&mut auto, now);
        }
        let mut i = 0usize;
        group.bench_with_input(
            BenchmarkId::new("rtt_sample_and_plan", pool),
            &pool,
            |b, _| {
                b.iter(|| {
                    i = (i + 1) % peers.len();
                    now += Duration::from_millis(10);
                    let rtt = Duration::from_millis(5 + (i as u64 * 7919) % 200);
                    auto.on_rtt_sample(now, peers[i], rtt);
                    answer(&mut auto, now);
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, codec, admission, forwarding, selection);
criterion_main!(benches);
