//! Harnesses of the pure codecs: multistream-select, HOP/STOP, vouchers, the certificate
//! verifier, yamux, identify. Each feeds the bytes in chunks whose sizes the input chooses
//! (stream parsers must not care where reads split) and checks what it can state cheaply:
//! bounds on buffered bytes, and that whatever decodes re-encodes to the same value.

use arbitrary::Unstructured;
use bytes::Bytes;

use dep2p_core::multistream::{Dialer, Listener, NegotiationLimits, Progress};
use dep2p_core::protocols::identify::{self, IdentifyDecoder};
use dep2p_core::relay::voucher::Voucher;
use dep2p_core::relay::wire::{HopRequest, HopResponse, StopRequest, StopResponse};
use dep2p_core::tls::verify_certificate;
use dep2p_core::yamux::{Mode, ReadOutcome, Session, StreamId, YamuxConfig, YamuxEvent};

/// Protocols of the multistream negotiators.
pub const PROTOCOLS: [&str; 3] = [
    "/libp2p/circuit/relay/0.2.0/hop",
    "/ipfs/id/1.0.0",
    "/ipfs/ping/1.0.0",
];

/// Splits `data` into chunks: each chunk's length is one byte of the input (0 means "the
/// rest"), so the fuzzer controls where reads end.
fn chunks<'a>(u: &mut Unstructured<'a>) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while !u.is_empty() {
        let len = usize::from(u.arbitrary::<u8>().unwrap_or(0));
        let len = if len == 0 { u.len() } else { len.min(u.len()) };
        match u.bytes(len) {
            Ok(chunk) => out.push(chunk),
            Err(_) => break,
        }
    }
    out
}

/// multistream-select: a dialer or a listener (first byte) fed the rest in chunks.
pub fn multistream(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let role = u.arbitrary::<u8>().unwrap_or(0);
    let limits = NegotiationLimits::default();
    let max = limits.max_buffered();
    if role.is_multiple_of(2) {
        let Ok(mut dialer) = Dialer::with_limits(PROTOCOLS, limits) else {
            unreachable!("the protocol ids are valid");
        };
        while dialer.poll_output().is_some() {}
        for chunk in chunks(&mut u) {
            let result = dialer.handle_input(chunk);
            while dialer.poll_output().is_some() {}
            assert!(
                dialer.buffered() <= max,
                "dialer buffers {}",
                dialer.buffered()
            );
            match result {
                Ok(Progress::Pending) => {}
                Ok(Progress::Negotiated(n)) => {
                    assert!(PROTOCOLS.contains(&n.protocol.as_str()), "{n:?}");
                    break;
                }
                Err(_) => break,
            }
        }
    } else {
        let supported: Vec<String> = PROTOCOLS.iter().map(|p| (*p).to_owned()).collect();
        let mut listener = Listener::with_limits(supported, limits);
        for chunk in chunks(&mut u) {
            let result = listener.handle_input(chunk);
            while listener.poll_output().is_some() {}
            assert!(
                listener.buffered() <= max,
                "listener buffers {}",
                listener.buffered()
            );
            match result {
                Ok(Progress::Pending) => {}
                Ok(Progress::Negotiated(n)) => {
                    assert!(PROTOCOLS.contains(&n.protocol.as_str()), "{n:?}");
                    break;
                }
                Err(_) => break,
            }
        }
    }
}

/// Strips the uvarint length prefix `encode` adds, to feed the payload back to `decode`.
fn payload(frame: &Bytes) -> Bytes {
    let mut at = 0;
    while frame[at] & 0x80 != 0 {
        at += 1;
    }
    frame.slice(at + 1..)
}

/// HOP and STOP messages (first byte picks which): whatever decodes re-encodes to a message
/// that decodes to the same value.
pub fn relay_wire(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let input = Bytes::copy_from_slice(rest);
    match kind % 4 {
        0 => {
            if let Ok(m) = HopRequest::decode(input) {
                assert_eq!(HopRequest::decode(payload(&m.encode())).as_ref(), Ok(&m));
            }
        }
        1 => {
            if let Ok(m) = HopResponse::decode(input) {
                assert_eq!(HopResponse::decode(payload(&m.encode())).as_ref(), Ok(&m));
            }
        }
        2 => {
            if let Ok(m) = StopRequest::decode(input) {
                assert_eq!(StopRequest::decode(payload(&m.encode())).as_ref(), Ok(&m));
            }
        }
        _ => {
            if let Ok(m) = StopResponse::decode(input) {
                assert_eq!(StopResponse::decode(payload(&m.encode())).as_ref(), Ok(&m));
            }
        }
    }
}

/// Signed envelopes holding reservation vouchers: open, and check against the relay and peer
/// it names at a time the input picks.
pub fn voucher(data: &[u8]) {
    let Some((time, envelope)) = data.split_first_chunk::<8>() else {
        return;
    };
    if let Ok(v) = Voucher::open(envelope) {
        let now = u64::from_le_bytes(*time);
        let checked = Voucher::verify_for(envelope, &v.relay, &v.peer, now);
        assert_eq!(checked.is_ok(), now < v.expiration_unix_secs, "{checked:?}");
    }
}

/// The libp2p certificate verifier on DER bytes, at a unix time the first 8 bytes pick.
pub fn certificate(data: &[u8]) {
    let Some((time, der)) = data.split_first_chunk::<8>() else {
        return;
    };
    if let Ok(cert) = verify_certificate(der, u64::from_le_bytes(*time)) {
        // The PeerId comes from the host key the certificate carries.
        assert_eq!(cert.peer_id(), cert.public_key().to_peer_id());
    }
}

/// A yamux session (mode from the first byte) fed peer bytes and local commands.
pub fn yamux(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let mode = if u.arbitrary::<bool>().unwrap_or(false) {
        Mode::Client
    } else {
        Mode::Server
    };
    let mut config = YamuxConfig::default();
    config
        .max_streams(8)
        .max_stream_window(64 * 1024)
        .max_buffered_output(64 * 1024);
    let mut session = Session::new(mode, config);
    let mut streams: Vec<StreamId> = Vec::new();
    while !u.is_empty() {
        let op = u.arbitrary::<u8>().unwrap_or(0);
        let pick = |u: &mut Unstructured, streams: &[StreamId]| {
            let i = u.arbitrary::<u8>().unwrap_or(0);
            streams
                .get(usize::from(i) % streams.len().max(1))
                .copied()
                .unwrap_or(StreamId::new(u32::from(i)))
        };
        match op % 8 {
            // Peer bytes are the common case.
            0..=2 => {
                let len = usize::from(u.arbitrary::<u16>().unwrap_or(0));
                let bytes = u.bytes(len.min(u.len())).unwrap_or_default();
                session.handle_input(bytes);
            }
            3 => {
                if let Ok(id) = session.open_stream() {
                    streams.push(id);
                }
            }
            4 => {
                let id = pick(&mut u, &streams);
                let len = usize::from(u.arbitrary::<u16>().unwrap_or(0));
                if u.arbitrary::<bool>().unwrap_or(false) {
                    // The uncopied path: what is accepted leaves the front of `data`.
                    let mut data = Bytes::from(vec![0x5a; len]);
                    if let Ok(n) = session.write_bytes(id, &mut data) {
                        assert_eq!(data.len(), len - n, "write_bytes took {n} of {len}");
                    }
                } else {
                    let _ = session.write(id, &vec![0x5a; len]);
                }
            }
            5 => {
                let id = pick(&mut u, &streams);
                let max = usize::from(u.arbitrary::<u16>().unwrap_or(0));
                if let Ok(ReadOutcome::Data(bytes)) = session.read(id, max) {
                    assert!(bytes.len() <= max.max(1));
                }
            }
            6 => {
                let id = pick(&mut u, &streams);
                if u.arbitrary::<bool>().unwrap_or(false) {
                    let _ = session.finish(id);
                } else {
                    let _ = session.reset(id);
                }
            }
            _ => {
                if u.arbitrary::<u8>().unwrap_or(0) == 0 {
                    session.close();
                } else {
                    let _ = session.ping(u.arbitrary().unwrap_or(0));
                }
            }
        }
        while let Some(event) = session.poll_event() {
            if let YamuxEvent::InboundStream(id) = event {
                streams.push(id);
            }
        }
        streams.truncate(64);
        // The peer can make us owe it output only up to the configured bound (plus one frame).
        assert!(
            session.buffered_output() <= 64 * 1024 + 64 * 1024,
            "yamux buffers {} output bytes",
            session.buffered_output()
        );
        assert!(
            session.stream_count() <= 8,
            "{} streams",
            session.stream_count()
        );
        let owed = session.buffered_output();
        let mut taken = 0;
        while let Some(piece) = session.poll_output() {
            taken += piece.len();
        }
        assert_eq!(taken, owed, "the output handed out is what was counted");
    }
}

/// Identify messages: the one-shot decoder on the whole input, and the streaming decoder on
/// the same bytes in chunks; both must agree.
pub fn identify(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let whole = identify::decode_complete(rest);
    let mut decoder = IdentifyDecoder::new();
    let mut streamed = None;
    let step = usize::from(split).max(1);
    for chunk in rest.chunks(step) {
        match decoder.handle_input(chunk) {
            Ok(Some(received)) => {
                streamed = Some(Ok(received));
                break;
            }
            Ok(None) => {}
            Err(e) => {
                streamed = Some(Err(e));
                break;
            }
        }
    }
    if let Ok(whole) = &whole {
        // Where the reads split must not matter to a message that decodes whole.
        assert_eq!(streamed.as_ref(), Some(&Ok(whole.clone())));
        let again = identify::decode_complete(&identify::encode(&whole.info));
        assert_eq!(again.map(|r| r.info).as_ref(), Ok(&whole.info));
    }
}
