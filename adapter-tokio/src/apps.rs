//! Test protocols served by `dep2p node`: an echo and a checksumming sink.
//!
//! - `/dep2p/echo/1.0.0`: every byte read is written back; the echo finishes when the peer does.
//! - `/dep2p/sink/1.0.0`: reads to the end, then answers with the byte count (8 bytes,
//!   big-endian) and the SHA-256 of everything read (32 bytes), and finishes. A sender compares
//!   both with its own: an end-to-end check across relays.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ring::digest::{Context, SHA256};

use crate::handle::{Error, InboundStream, NodeHandle, Stream};

/// The echo protocol id.
pub const ECHO: &str = "/dep2p/echo/1.0.0";
/// The sink protocol id.
pub const SINK: &str = "/dep2p/sink/1.0.0";
/// Bytes per write when sending a payload.
const CHUNK: usize = 256 * 1024;

/// What a sink received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkReceipt {
    /// Bytes read.
    pub bytes: u64,
    /// SHA-256 of them, lowercase hex.
    pub sha256: String,
}

/// The result of sending a payload to a sink.
#[derive(Debug, Clone)]
pub struct Transfer {
    /// Bytes sent.
    pub bytes: u64,
    /// SHA-256 of what we sent.
    pub sent_sha256: String,
    /// What the sink reported.
    pub receipt: SinkReceipt,
    /// From the first write to the receipt.
    pub elapsed: Duration,
}

impl Transfer {
    /// Whether the sink received exactly what was sent.
    #[must_use]
    pub fn intact(&self) -> bool {
        self.receipt.bytes == self.bytes && self.receipt.sha256 == self.sent_sha256
    }

    /// Throughput in MiB/s.
    #[must_use]
    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Lowercase hex.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A reproducible pseudo-random byte source (xorshift64*), so a payload needs no memory.
#[derive(Debug, Clone)]
pub struct Payload {
    state: u64,
}

impl Payload {
    /// The payload for `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self { state: seed | 1 }
    }

    /// Fills `buf`.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for word in buf.chunks_mut(8) {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            let v = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            word.copy_from_slice(&v[..word.len()]);
        }
    }
}

/// Sends `total` payload bytes to a sink stream, finishes, and waits for the receipt.
/// `progress` is told the bytes sent so far after every chunk.
pub async fn send_to_sink(
    stream: &Stream,
    total: u64,
    seed: u64,
    mut progress: impl FnMut(u64),
) -> Result<Transfer, Error> {
    let started = Instant::now();
    let mut payload = Payload::new(seed);
    let mut digest = Context::new(&SHA256);
    let mut sent = 0u64;
    while sent < total {
        let n = usize::try_from((total - sent).min(CHUNK as u64)).unwrap_or(CHUNK);
        let mut chunk = vec![0u8; n];
        payload.fill(&mut chunk);
        digest.update(&chunk);
        stream.write_all(Bytes::from(chunk)).await?;
        sent += n as u64;
        progress(sent);
    }
    stream.finish().await?;
    let answer = stream.read_to_end(40).await?;
    let receipt = if answer.len() == 40 {
        let mut len = [0u8; 8];
        len.copy_from_slice(&answer[..8]);
        SinkReceipt {
            bytes: u64::from_be_bytes(len),
            sha256: hex(&answer[8..]),
        }
    } else {
        SinkReceipt {
            bytes: 0,
            sha256: format!("<malformed receipt of {} bytes>", answer.len()),
        }
    };
    Ok(Transfer {
        bytes: sent,
        sent_sha256: hex(digest.finish().as_ref()),
        receipt,
        elapsed: started.elapsed(),
    })
}

/// Serves one sink stream: reads to the end, answers with the receipt.
pub async fn serve_sink(stream: &Stream) -> Result<SinkReceipt, Error> {
    let mut digest = Context::new(&SHA256);
    let mut bytes = 0u64;
    while let Some(chunk) = stream.read(256 * 1024).await? {
        digest.update(&chunk);
        bytes += chunk.len() as u64;
    }
    let sum = digest.finish();
    let mut answer = Vec::with_capacity(40);
    answer.extend_from_slice(&bytes.to_be_bytes());
    answer.extend_from_slice(sum.as_ref());
    stream.write_all(answer).await?;
    stream.finish().await?;
    Ok(SinkReceipt {
        bytes,
        sha256: hex(sum.as_ref()),
    })
}

/// Serves one echo stream.
pub async fn serve_echo(stream: &Stream) -> Result<u64, Error> {
    let mut bytes = 0;
    while let Some(chunk) = stream.read(64 * 1024).await? {
        bytes += chunk.len() as u64;
        stream.write_all(chunk).await?;
    }
    stream.finish().await?;
    Ok(bytes)
}

/// Accepts inbound streams forever, serving echo and sink; `on_receipt` is called for every
/// completed sink transfer. Returns when the node stops.
pub async fn serve(
    node: NodeHandle,
    on_receipt: impl Fn(&InboundInfo, &SinkReceipt) + Send + Sync + 'static,
) {
    let on_receipt = std::sync::Arc::new(on_receipt);
    while let Some(InboundStream {
        stream,
        protocol,
        peer,
    }) = node.accept().await
    {
        let on_receipt = std::sync::Arc::clone(&on_receipt);
        tokio::spawn(async move {
            let info = InboundInfo { peer, protocol };
            let result = match info.protocol.as_str() {
                SINK => serve_sink(&stream).await.map(|r| on_receipt(&info, &r)),
                ECHO => serve_echo(&stream).await.map(|_| ()),
                _ => {
                    stream.reset(0).await;
                    Ok(())
                }
            };
            if let Err(error) = result {
                tracing::info!(protocol = %info.protocol, %error, "inbound stream ended with an error");
            }
        });
    }
}

/// Who opened an inbound stream, for [`serve`]'s callback.
#[derive(Debug, Clone)]
pub struct InboundInfo {
    /// The remote peer.
    pub peer: Option<dep2p_core::identity::PeerId>,
    /// The protocol.
    pub protocol: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_reproducible_and_not_constant() {
        let (mut a, mut b) = (Payload::new(7), Payload::new(7));
        let (mut x, mut y) = ([0u8; 1000], [0u8; 1000]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert!(x.iter().any(|&v| v != x[0]));
    }
}
