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
    let (relay_a, a_addr, a_metrics) = relay(&[]);
    let (relay_b, b_addr, b_metrics) = relay(&[]);
    let fast_detection = ["--idle-timeout", "2s", "--keep-alive", "500ms"];
    let mut extra = vec!["--min-relays", "1", "--metrics", "127.0.0.1:0"];
    extra.extend_from_slice(&fast_detection);
    let (mut n, n_id) = node(&[&a_addr, &b_addr], &extra);
    let node_metrics = field(&n.expect_line("metrics ", Duration::from_secs(10)), "url").to_owned();
    let line = n.expect_line("reserved ", Duration::from_secs(10));
    // AutoRelay picks one of the two (randomly among equals): kill that one.
    let a_peer = a_addr.rsplit('/').next().unwrap().to_owned();
    let b = (relay_b, b_addr, b_metrics);
    let a = (relay_a, a_addr, a_metrics);
    let ((mut victim, victim_addr, _), (_survivor, survivor_addr, survivor_metrics)) =
        if field(&line, "relay") == a_peer {
            (a, b)
        } else {
            (b, a)
        };
    let victim_peer = victim_addr.rsplit('/').next().unwrap().to_owned();
    let survivor_peer = survivor_addr.rsplit('/').next().unwrap().to_owned();
    assert_eq!(field(&line, "relay"), victim_peer);

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
    let target = format!("{victim_addr}/p2p-circuit/p2p/{n_id}");
    args.push(&target);
    let mut dial = Proc::spawn(&args);
    dial.expect_line("circuit ", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    victim.signal("KILL");
    victim.wait(Duration::from_secs(5));

    let status = dial.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(1), "stdout {:#?}", dial.seen);
    let stderr = dial.stderr();
    assert!(
        stderr.contains("error: transfer failed after")
            && stderr.contains("lost: connection closed")
            && stderr.contains(&victim_peer),
        "a clear error naming the relay: {stderr}"
    );

    // The node's AutoRelay noticed the loss (idle timeout) and reserved on the other relay.
    let switched = n.expect_line(
        &format!("switched from={victim_peer}"),
        Duration::from_secs(15),
    );
    assert_eq!(field(&switched, "to"), survivor_peer);
    assert_eq!(field(&switched, "why"), "connection_lost");
    let took: u64 = field(&switched, "took_ms")
        .parse()
        .expect("a measured failover");
    assert!(took < 10_000, "failover took {took} ms");
    let text = http_get(&survivor_metrics);
    assert_eq!(metric(&text, "dep2p_relay_reservations"), 1.0);

    // The node's metrics: one first acquisition, one failover (timed), one circuit address.
    let text = http_get(&node_metrics);
    assert!(
        text.contains("dep2p_client_relay_switches_total{reason=\"initial\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("dep2p_client_relay_switches_total{reason=\"connection_lost\"} 1"),
        "{text}"
    );
    assert_eq!(
        metric(&text, "dep2p_client_failover_duration_seconds_count"),
        1.0
    );
    assert_eq!(metric(&text, "dep2p_client_circuit_addrs"), 1.0);
    assert_eq!(metric(&text, "dep2p_client_reservations"), 1.0);
}

#[test]
fn dial_falls_back_to_the_next_circuit_address_when_the_first_relay_is_down() {
    let (mut relay_a, a_addr, _) = relay(&[]);
    let (_relay_b, b_addr, _) = relay(&[]);
    // The node holds reservations on both relays (min_relays 2).
    let (mut n, n_id) = node(&[&a_addr, &b_addr], &["--min-relays", "2"]);
    n.expect_line("reserved ", Duration::from_secs(10));
    n.expect_line("reserved ", Duration::from_secs(10));
    let addrs = n.expect_line("addrs count=2", Duration::from_secs(10));
    assert!(addrs.contains("p2p-circuit"), "{addrs}");
    relay_a.signal("KILL");
    relay_a.wait(Duration::from_secs(5));

    let b_peer = b_addr.rsplit('/').next().unwrap().to_owned();
    let first = format!("{a_addr}/p2p-circuit/p2p/{n_id}");
    let second = format!("{b_addr}/p2p-circuit/p2p/{n_id}");
    let mut dial = Proc::spawn(&[
        "dial",
        "--listen",
        "127.0.0.1:0",
        "--bytes",
        "1MiB",
        "--idle-timeout",
        "1s",
        "--keep-alive",
        "250ms",
        &first,
        &second,
    ]);
    let status = dial.wait(Duration::from_secs(30));
    assert!(status.success(), "{:#?}\n{}", dial.seen, dial.stderr());
    let circuit = dial
        .seen
        .iter()
        .find(|l| l.starts_with("circuit "))
        .expect("circuit line")
        .clone();
    assert_eq!(field(&circuit, "relay"), b_peer, "fell back to relay B");
    assert!(dial.seen.iter().any(|l| l.contains("checksum=ok")));
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
    assert!(out.contains("(why: drained)"), "{out}");
    assert!(
        out.contains("reservations on B          3 held now"),
        "{out}"
    );
    assert!(out.ends_with("demo ok"), "{out}");
}
