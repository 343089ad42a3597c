//! `NodeHandle::open_stream` (and `ping`, `reserve`) waits for the peer's stream credit instead
//! of failing: a relay
//! gives a fresh inbound connection 8 streams and more a round trip later, and a burst of opens
//! to it must all succeed. An open that cannot get credit within the node's request timeout
//! fails with an error that says so.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use dep2p_core::identity::keypair_from_seed;
use dep2p_core::node::NodeConfig;
use dep2p_core::relay::limits::RelayLimits;
use dep2p_tokio::{Error, NodeHandle, NodeOptions};

const APP: &str = "/credit-test/1.0.0";
const LOOPBACK: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 0);
/// Bounds every wait of these tests.
const LIMIT: Duration = Duration::from_secs(20);

/// Awaits `future`, failing the test if it takes longer than [`LIMIT`].
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, future)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {LIMIT:?}"))
}

fn spawn(config: NodeConfig, seed: u8) -> NodeHandle {
    NodeHandle::spawn(NodeOptions::new(
        config,
        keypair_from_seed([seed; 32]),
        LOOPBACK,
    ))
    .expect("node starts")
}

/// Accepts every stream and answers each with the bytes it received, then finishes.
fn serve_echo(server: &NodeHandle) {
    let server = server.clone();
    tokio::spawn(async move {
        while let Some(inbound) = server.accept().await {
            tokio::spawn(async move {
                let Ok(data) = inbound.stream.read_to_end(1024).await else {
                    return;
                };
                let _ = inbound.stream.write_all(data).await;
                let _ = inbound.stream.finish().await;
            });
        }
    });
}

#[tokio::test]
async fn a_burst_of_opens_to_a_relay_all_succeed_beyond_its_first_stream_credit() {
    let mut relay_config = NodeConfig::default();
    relay_config
        .relay_server(Some(RelayLimits::default()))
        .protocol(APP);
    let relay = spawn(relay_config, 1);
    serve_echo(&relay);
    let mut client_config = NodeConfig::default();
    client_config.protocol(APP);
    let client = spawn(client_config, 2);
    let conn = within("dial", client.dial(relay.local_addr(), relay.peer_id()))
        .await
        .expect("dial");

    // 20 opens at once: more than the relay's first credit of 8, each held open until all
    // are open, so none frees credit for another.
    let opens: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.open_stream(conn, APP).await })
        })
        .collect();
    let mut streams = Vec::new();
    for (i, open) in opens.into_iter().enumerate() {
        let opened = within("open", open).await.expect("task");
        streams.push(opened.unwrap_or_else(|e| panic!("open {i} failed: {e}")));
    }
    for (i, stream) in streams.iter().enumerate() {
        let message = format!("stream {i}");
        stream
            .write_all(message.clone().into_bytes())
            .await
            .expect("write");
        stream.finish().await.expect("finish");
        let echoed = within("echo", stream.read_to_end(1024))
            .await
            .expect("echo");
        assert_eq!(echoed, message.into_bytes(), "stream {i} echoed");
    }
}

#[tokio::test]
async fn an_open_that_gets_no_stream_credit_fails_after_the_request_timeout_naming_it() {
    // A server that allows 2 streams and never more; the client waits at most 1 s.
    let mut server_config = NodeConfig::default();
    server_config
        .protocol(APP)
        .max_streams_per_connection(2)
        .initial_inbound_streams(2);
    let server = spawn(server_config, 3);
    let held = server.clone();
    // Accept, but never end the streams: they keep their credit.
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Some(inbound) = held.accept().await {
            let _ = tx.send(inbound).await;
        }
    });
    let mut client_config = NodeConfig::default();
    client_config
        .protocol(APP)
        .negotiation_timeout(Duration::from_secs(1));
    let client = spawn(client_config, 4);
    let conn = within("dial", client.dial(server.local_addr(), server.peer_id()))
        .await
        .expect("dial");
    let first = client.open_stream(conn, APP).await.expect("first open");
    let second = client.open_stream(conn, APP).await.expect("second open");
    for stream in [&first, &second] {
        stream.write_all(&b"hold"[..]).await.expect("write");
    }

    let third = within("the wait", client.open_stream(conn, APP)).await;
    match third {
        Err(Error::NoStreamCredit { connection, reason }) => {
            assert_eq!(connection, conn);
            assert!(reason.contains("within 1s"), "{reason}");
        }
        other => panic!("expected NoStreamCredit, got {other:?}"),
    }

    // Once the streams end on both sides, the server's credit comes back and the waiting open
    // and ping get it, in the order they came.
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.open_stream(conn, APP).await }
    });
    let ping = tokio::spawn({
        let client = client.clone();
        async move { client.ping(conn).await }
    });
    for _ in 0..2 {
        let inbound = within("accepted", rx.recv())
            .await
            .expect("an inbound stream");
        inbound.stream.finish().await.expect("server finishes");
        tokio::spawn(async move { inbound.stream.read_to_end(1024).await });
    }
    for stream in [&first, &second] {
        stream.finish().await.expect("finish");
        let _ = tokio::time::timeout(LIMIT, stream.read_to_end(1024)).await;
    }
    let opened = within("open", waiting).await.expect("task");
    assert!(
        opened.is_ok(),
        "the waiting open got the freed credit: {opened:?}"
    );
    let pinged = within("ping", ping).await.expect("task");
    assert!(
        pinged.is_ok(),
        "the waiting ping got the freed credit: {pinged:?}"
    );
}
