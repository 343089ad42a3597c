//! A server session keeps its secrets after freeing the rustls connection and derives each next
//! generation of 1-RTT keys on first use: a transfer long enough for key updates (QUIC's first one
//! comes within 1,000 packets) crosses them in both directions with every byte intact.

mod common;

use std::time::Duration;

use dep2p_core::node::{NodeConfig, ReadOutcome};
use dep2p_core::testing::{LinkConfig, server_key_generations_derived};

use common::{SETTLE, connected_pair, inbound_stream, stream_ready};

const ECHO: &str = "/echo-test/1.0.0";
/// About 1,500 full packets each way.
const BYTES: usize = 2 * 1024 * 1024;

fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

#[test]
fn transfer_across_key_updates_arrives_intact_in_both_directions() {
    let mut server = NodeConfig::default();
    server.protocol(ECHO);
    let (mut world, client, srv, conn, _) =
        connected_pair(77, LinkConfig::default(), NodeConfig::default(), server);
    let stream = world
        .command(client, |n, now| n.open_stream(now, conn, ECHO))
        .expect("stream opens");
    assert!(
        world.run_until(SETTLE, |w| stream_ready(w, client, stream)
            && inbound_stream(w, srv).is_some()),
        "the stream negotiates"
    );
    let (inbound, _) = inbound_stream(&world, srv).expect("inbound");
    let before = server_key_generations_derived();

    let (mut sent, mut echoed, mut received) = (0usize, 0usize, 0usize);
    let mut pending_echo: Vec<u8> = Vec::new();
    for _ in 0..200_000 {
        if received == BYTES {
            break;
        }
        if sent < BYTES {
            let chunk: Vec<u8> = (sent..BYTES.min(sent + 16 * 1024)).map(pattern).collect();
            sent += world
                .command(client, |n, now| n.write(now, stream, &chunk))
                .expect("client writes");
        }
        // The server echoes what it reads.
        if let Ok(ReadOutcome::Data(bytes)) =
            world.command(srv, |n, now| n.read(now, inbound, 64 * 1024))
        {
            pending_echo.extend_from_slice(&bytes);
        }
        if !pending_echo.is_empty() {
            let n = world
                .command(srv, |n, now| n.write(now, inbound, &pending_echo))
                .expect("server writes");
            pending_echo.drain(..n);
            echoed += n;
        }
        while let Ok(ReadOutcome::Data(bytes)) =
            world.command(client, |n, now| n.read(now, stream, 64 * 1024))
        {
            for (k, &b) in bytes.iter().enumerate() {
                assert_eq!(b, pattern(received + k), "byte {} intact", received + k);
            }
            received += bytes.len();
        }
        world.run_for(Duration::from_millis(5));
    }
    assert_eq!((sent, echoed, received), (BYTES, BYTES, BYTES));
    assert!(
        server_key_generations_derived() > before,
        "the server derived a next generation of keys: a key update happened"
    );
}
