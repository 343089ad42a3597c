//! Opening, moving data, finishing and removing streams.

use super::pair::{Pair, checksum, pattern, read_available, write_some};
use crate::yamux::{ReadOutcome, StreamId, YamuxConfig, YamuxEvent};

#[test]
fn open_write_both_ways_finish_and_read_to_end() {
    let mut pair = Pair::new();
    let id = pair.client.open_stream().unwrap();
    assert_eq!(id, StreamId::new(1));
    assert_eq!(pair.client.write(id, b"hello server").unwrap(), 12);
    pair.pump();
    let (_, server_events) = pair.take_events();
    assert_eq!(
        server_events,
        vec![YamuxEvent::InboundStream(id), YamuxEvent::Readable(id)]
    );
    assert_eq!(
        read_available(&mut pair.server, id),
        (b"hello server".to_vec(), false)
    );

    assert_eq!(pair.server.write(id, b"hello client").unwrap(), 12);
    pair.server.finish(id).unwrap();
    pair.pump();
    let (client_events, _) = pair.take_events();
    assert_eq!(
        client_events,
        vec![YamuxEvent::Readable(id), YamuxEvent::StreamFinished(id)]
    );
    assert_eq!(
        read_available(&mut pair.client, id),
        (b"hello client".to_vec(), true)
    );

    pair.client.finish(id).unwrap();
    pair.pump();
    let (_, server_events) = pair.take_events();
    assert_eq!(server_events, vec![YamuxEvent::StreamFinished(id)]);
    assert_eq!(pair.server.read(id, 100), Ok(ReadOutcome::Finished));
    // Finished both ways and fully read on both sides: nothing left.
    assert_eq!(pair.client.stream_count(), 0);
    assert_eq!(pair.server.stream_count(), 0);
}

#[test]
fn server_opens_even_ids_and_client_odd() {
    let mut pair = Pair::new();
    assert_eq!(pair.client.open_stream().unwrap(), StreamId::new(1));
    assert_eq!(pair.client.open_stream().unwrap(), StreamId::new(3));
    assert_eq!(pair.server.open_stream().unwrap(), StreamId::new(2));
    pair.pump();
    assert_eq!(pair.client.stream_count(), 3);
    assert_eq!(pair.server.stream_count(), 3);
}

#[test]
fn write_after_finish_is_refused() {
    let mut pair = Pair::new();
    let id = pair.client.open_stream().unwrap();
    pair.client.finish(id).unwrap();
    assert_eq!(
        pair.client.write(id, b"x"),
        Err(crate::yamux::YamuxError::WriteClosed(id))
    );
    assert_eq!(
        pair.client.finish(id),
        Err(crate::yamux::YamuxError::WriteClosed(id))
    );
}

/// Runs three streams per direction, `size` bytes each, pumping with `chunk`-byte inputs.
fn transfer(pair: &mut Pair, size: usize, chunk: usize) {
    let client_ids: Vec<_> = (0..3).map(|_| pair.client.open_stream().unwrap()).collect();
    let server_ids: Vec<_> = (0..3).map(|_| pair.server.open_stream().unwrap()).collect();
    let mut outgoing = Vec::new(); // (sender is client, id, data, sent)
    for &id in &client_ids {
        outgoing.push((true, id, pattern(id.get(), size), 0usize));
    }
    for &id in &server_ids {
        outgoing.push((false, id, pattern(id.get(), size), 0usize));
    }
    let mut received: Vec<(Vec<u8>, bool)> = vec![(Vec::new(), false); outgoing.len()];
    for _round in 0..100_000 {
        for (i, (from_client, id, data, sent)) in outgoing.iter_mut().enumerate() {
            let (tx, rx) = if *from_client {
                (&mut pair.client, &mut pair.server)
            } else {
                (&mut pair.server, &mut pair.client)
            };
            if *sent < data.len() {
                *sent += write_some(tx, *id, &data[*sent..]);
                if *sent == data.len() {
                    tx.finish(*id).unwrap();
                }
            }
            if !received[i].1 && rx.stream_info(*id).is_some() {
                let (bytes, fin) = read_available(rx, *id);
                received[i].0.extend_from_slice(&bytes);
                received[i].1 = fin;
            }
        }
        pair.pump_chunked(chunk);
        if received.iter().all(|r| r.1) {
            break;
        }
    }
    for (i, (_, id, data, _)) in outgoing.iter().enumerate() {
        assert!(received[i].1, "{id} did not finish");
        assert_eq!(received[i].0.len(), data.len(), "{id} length");
        assert_eq!(checksum(&received[i].0), checksum(data), "{id} checksum");
    }
}

#[test]
fn three_streams_move_one_mib_each_way_with_checksums() {
    let mut pair = Pair::new();
    transfer(&mut pair, 1024 * 1024, usize::MAX);
    // Each side finished its outbound streams and read the inbound ones to the end; the
    // remaining halves are the peer-opened streams we never finished.
    assert!(pair.client.stream_count() <= 6);
}

#[test]
fn frames_split_at_every_offset_deliver_the_same_bytes() {
    // Every chunk size from 1 to a bit more than a header plus a small frame: frame boundaries
    // fall at every offset of headers and payloads.
    for chunk in 1..=40 {
        let mut config = YamuxConfig::default();
        config.max_frame_payload(13);
        let mut pair = Pair::with_config(config);
        transfer(&mut pair, 100, chunk);
    }
}

#[test]
fn streams_finished_both_ways_and_read_are_removed() {
    let mut pair = Pair::new();
    for round in 0..50u32 {
        let id = pair.client.open_stream().unwrap();
        write_some(&mut pair.client, id, &pattern(round, 10));
        pair.client.finish(id).unwrap();
        pair.pump();
        assert_eq!(
            read_available(&mut pair.server, id),
            (pattern(round, 10), true)
        );
        pair.server.finish(id).unwrap();
        pair.pump();
        assert_eq!(read_available(&mut pair.client, id), (Vec::new(), true));
    }
    assert_eq!(pair.client.stream_count(), 0);
    assert_eq!(pair.server.stream_count(), 0);
}
