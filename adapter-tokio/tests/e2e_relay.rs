//! End to end through the real `dep2p` binary on 127.0.0.1: a relay, two nodes, a relayed
//! 64 MiB transfer with a checksum, metrics that match, graceful drain on SIGTERM; and a relay
//! killed mid-transfer.

mod common;

use std::time::{Duration, Instant};

use common::{Proc, field, http_get, metric, node, relay};

const MIB: u64 = 1024 * 1024;

#[test]
fn relayed_64_mib_transfer_arrives_intact_and_metrics_count_it_then_sigterm_drains() {
    let (mut relay, relay_addr, metrics_url) = relay(&[]);
    let relay_peer = relay_addr.rsplit('/').next().unwrap().to_owned();
    let (mut n1, n1_id) = node(&[&relay_addr], &[]);
    let (mut n2, _n2_id) = node(&[&relay_addr], &[]);
    for n in [&mut n1, &mut n2] {
        let line = n.expect_line("reserved ", Duration::from_secs(10));
        assert_eq!(field(&line, "relay"), relay_peer);
    }

    let started = Instant::now();
    let mut dial = Proc::spawn(&[
        "dial",
        "--listen",
        "127.0.0.1:0",
        "--bytes",
        "64MiB",
        "--timeout",
        "90s",
        &format!("{relay_addr}/p2p-circuit/p2p/{n1_id}"),
    ]);
    let status = dial.wait(Duration::from_secs(100));
    let took = started.elapsed();
    assert!(
        status.success(),
        "dial failed: {:#?}\n{}",
        dial.seen,
        dial.stderr()
    );
    let transfer = dial
        .seen
        .iter()
        .find(|l| l.starts_with("transfer "))
        .expect("transfer line")
        .clone();
    assert_eq!(field(&transfer, "checksum"), "ok");
    assert_eq!(field(&transfer, "bytes"), (64 * MIB).to_string());
    let sink = n1.expect_line("sink ", Duration::from_secs(10));
    assert_eq!(field(&sink, "sha256"), field(&transfer, "sha256"));
    assert_eq!(field(&sink, "bytes"), (64 * MIB).to_string());
    eprintln!("64 MiB relayed transfer (process start to exit): {took:?}");

    let text = http_get(&metrics_url);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(metric(&text, "dep2p_relay_reservations"), 2.0);
    assert_eq!(
        metric(&text, "dep2p_relay_reservations_accepted_total"),
        2.0
    );
    assert_eq!(metric(&text, "dep2p_relay_circuits_opened_total"), 1.0);
    let relayed = metric(&text, "dep2p_relay_bytes_relayed_total");
    assert!(
        relayed >= (64 * MIB) as f64 && relayed < (66 * MIB) as f64,
        "64 MiB plus TLS/yamux overhead, got {relayed}"
    );
    // Two nodes and the dialer connected.
    assert_eq!(metric(&text, "dep2p_connections_established_total"), 3.0);
    assert!(text.contains("dep2p_relay_rejections_total{reason=\"no_reservation\"} 0"));
    assert!(http_get(&metrics_url.replace("/metrics", "/nope")).starts_with("HTTP/1.1 404"));

    // SIGTERM: graceful drain, exit 0; the nodes lose their reservation at once.
    relay.signal("TERM");
    let status = relay.wait(Duration::from_secs(10));
    assert!(
        status.success(),
        "relay exit {status:?}: {}",
        relay.stderr()
    );
    assert!(
        relay.seen.iter().any(|l| l == "stopped"),
        "{:#?}",
        relay.seen
    );
    let lost = n1.expect_line("lost ", Duration::from_secs(5));
    assert_eq!(field(&lost, "relay"), relay_peer);
    n2.expect_line("lost ", Duration::from_secs(5));
}

#[test]
fn killing_the_relay_mid_transfer_fails_the_dialer_clearly_and_the_node_reserves_on_the_other_relay()
 {
    let (mut relay_a, a_addr, _) = relay(&[]);
    let (_relay_b, b_addr, b_metrics) = relay(&[]);
    let a_peer = a_addr.rsplit('/').next().unwrap().to_owned();
    let b_peer = b_addr.rsplit('/').next().unwrap().to_owned();
    let fast_detection = ["--idle-timeout", "2s", "--keep-alive", "500ms"];
    let mut extra = vec!["--min-relays", "1"];
    extra.extend_from_slice(&fast_detection);
    let (mut n, n_id) = node(&[&a_addr, &b_addr], &extra);
    let line = n.expect_line("reserved ", Duration::from_secs(10));
    assert_eq!(
        field(&line, "relay"),
        a_peer,
        "the first relay is preferred"
    );

    let mut args = vec![
        "dial",
        "--listen",
        "127.0.0.1:0",
        "--bytes",
        "120MiB",
        "--timeout",
        "60s",
    ];
    args.extend_from_slice(&fast_detection);
    let target = format!("{a_addr}/p2p-circuit/p2p/{n_id}");
    args.push(&target);
    let mut dial = Proc::spawn(&args);
    dial.expect_line("circuit ", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    relay_a.signal("KILL");
    relay_a.wait(Duration::from_secs(5));

    let status = dial.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "stdout {:#?}", dial.seen);
    let stderr = dial.stderr();
    assert!(
        stderr.contains("error: transfer failed after")
            && stderr.contains("lost: connection closed")
            && stderr.contains(&a_peer),
        "a clear error naming the relay: {stderr}"
    );

    let switched = n.expect_line("switched ", Duration::from_secs(15));
    assert_eq!(field(&switched, "from"), a_peer);
    assert_eq!(field(&switched, "to"), b_peer);
    let text = http_get(&b_metrics);
    assert_eq!(metric(&text, "dep2p_relay_reservations"), 1.0);
}

#[test]
fn demo_prints_a_summary_with_matching_checksums_and_every_node_failed_over() {
    let mut demo = Proc::spawn(&["demo", "--nodes", "3", "--bytes", "4MiB"]);
    let status = demo.wait(Duration::from_secs(60));
    assert!(status.success(), "{:#?}\n{}", demo.seen, demo.stderr());
    let out = demo.seen.join("\n");
    assert!(
        out.contains("relayed transfer via A     4194304 bytes, checksum MATCH"),
        "{out}"
    );
    assert!(out.contains("relay A stopped"), "{out}");
    assert!(out.contains("3/3 nodes moved to B"), "{out}");
    assert!(
        out.contains("reservations on B          3 held now"),
        "{out}"
    );
    assert!(out.ends_with("demo ok"), "{out}");
}
