//! Prometheus metrics (prometheus-client) and a minimal `/metrics` HTTP endpoint.
//!
//! Counters the core keeps (reservations accepted, circuits opened, bytes relayed, rejections by
//! reason) are copied from a fresh [`Snapshot`] on every scrape, so a scrape shows exactly what
//! the node has done; events the adapter sees (connections, the core AutoRelay's relay switches
//! and circuit addresses, failover durations) are counted as they happen.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dep2p_core::autorelay::SwitchReason;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::driver::Snapshot;
use crate::handle::NodeHandle;

/// The `reason` label of a rejection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The refusal reason, as the core names it.
    pub reason: String,
}

/// Every metric of one node.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Reservations held by the relay now.
    pub relay_reservations: Gauge,
    /// RESERVE requests admitted (new and renewals).
    pub relay_reservations_accepted: Counter,
    /// Circuits admitted and open now.
    pub relay_circuits: Gauge,
    /// Circuits bridged since start.
    pub relay_circuits_opened: Counter,
    /// Bytes forwarded over circuits, both directions.
    pub relay_bytes: Counter,
    /// Refusals by reason.
    pub relay_rejections: Family<ReasonLabel, Counter>,
    /// Connections held now (any state).
    pub connections: Gauge,
    /// Connections established since start.
    pub connections_established: Counter,
    /// Connections closed since start.
    pub connections_closed: Counter,
    /// Relays on which this client holds a reservation now.
    pub client_reservations: Gauge,
    /// Relays taken into the held set by AutoRelay, by reason (`initial`, `connection_lost`,
    /// `drained`, `refused`, `reservation_failed`, `expired`, `better`).
    pub relay_switches: Family<ReasonLabel, Counter>,
    /// Time from losing a reservation to holding its replacement.
    pub failover_seconds: Histogram,
    /// Circuit addresses this client advertises now (AutoRelay's set).
    pub circuit_addrs: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered under the `dep2p` prefix.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("dep2p");
        let m = Self {
            relay_reservations: Gauge::default(),
            relay_reservations_accepted: Counter::default(),
            relay_circuits: Gauge::default(),
            relay_circuits_opened: Counter::default(),
            relay_bytes: Counter::default(),
            relay_rejections: Family::default(),
            connections: Gauge::default(),
            connections_established: Counter::default(),
            connections_closed: Counter::default(),
            client_reservations: Gauge::default(),
            relay_switches: Family::default(),
            failover_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            circuit_addrs: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "relay_reservations",
            "Reservations held by this relay now",
            m.relay_reservations.clone(),
        );
        registry.register(
            "relay_reservations_accepted",
            "RESERVE requests admitted (new and renewals)",
            m.relay_reservations_accepted.clone(),
        );
        registry.register(
            "relay_circuits",
            "Circuits open through this relay now",
            m.relay_circuits.clone(),
        );
        registry.register(
            "relay_circuits_opened",
            "Circuits bridged by this relay",
            m.relay_circuits_opened.clone(),
        );
        registry.register(
            "relay_bytes_relayed",
            "Bytes forwarded over circuits, both directions",
            m.relay_bytes.clone(),
        );
        registry.register(
            "relay_rejections",
            "Relay requests refused, by reason",
            m.relay_rejections.clone(),
        );
        registry.register("connections", "Connections held now", m.connections.clone());
        registry.register(
            "connections_established",
            "Connections established",
            m.connections_established.clone(),
        );
        registry.register(
            "connections_closed",
            "Connections closed",
            m.connections_closed.clone(),
        );
        registry.register(
            "client_reservations",
            "Relays holding a reservation for this node now",
            m.client_reservations.clone(),
        );
        registry.register(
            "client_relay_switches",
            "Relays taken into the held set by AutoRelay, by reason",
            m.relay_switches.clone(),
        );
        registry.register(
            "client_failover_duration_seconds",
            "Time from losing a reservation to holding its replacement",
            m.failover_seconds.clone(),
        );
        registry.register(
            "client_circuit_addrs",
            "Circuit addresses this client advertises now",
            m.circuit_addrs.clone(),
        );
        Self { registry, ..m }
    }

    /// Counts a relay switch; `took` is the failover time, when a lost reservation was replaced.
    pub fn record_switch(&self, why: SwitchReason, took: Option<Duration>) {
        let label = ReasonLabel {
            reason: why.label().to_owned(),
        };
        self.relay_switches.get_or_create(&label).inc();
        if let Some(took) = took {
            self.failover_seconds.observe(took.as_secs_f64());
        }
    }

    /// Copies a snapshot's values into the metrics.
    pub fn update(&self, snapshot: &Snapshot) {
        let gauge = |g: &Gauge, v: usize| {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        };
        gauge(&self.connections, snapshot.node.connections);
        gauge(&self.client_reservations, snapshot.reserved_on.len());
        if let Some(relay) = &snapshot.relay {
            gauge(&self.relay_reservations, relay.reservations);
            gauge(&self.relay_circuits, relay.circuits);
            let set = |c: &Counter, v: u64| c.inner().store(v, Ordering::Relaxed);
            set(
                &self.relay_reservations_accepted,
                relay.reservations_accepted,
            );
            set(&self.relay_circuits_opened, relay.circuits_opened);
            set(&self.relay_bytes, relay.bytes_relayed);
            for (reason, count) in &relay.refusals {
                let label = ReasonLabel {
                    reason: (*reason).to_owned(),
                };
                set(&self.relay_rejections.get_or_create(&label), *count);
            }
        }
    }

    /// The registry in the Prometheus text format.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `listener` until the node stops: each scrape refreshes the metrics
/// from the node first. A deliberately tiny HTTP/1.0-style server: one request per connection.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, node: NodeHandle) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            continue;
        };
        let metrics = Arc::clone(&metrics);
        let node = node.clone();
        tokio::spawn(async move {
            let mut request = vec![0u8; 4096];
            let mut read = 0;
            // Read the request head (bounded size and time).
            let head = tokio::time::timeout(std::time::Duration::from_secs(5), async {
                while read < request.len() {
                    let n = socket.read(&mut request[read..]).await.ok()?;
                    if n == 0 {
                        break;
                    }
                    read += n;
                    if request[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
                Some(())
            })
            .await;
            if !matches!(head, Ok(Some(()))) {
                return;
            }
            let line = String::from_utf8_lossy(&request[..read]);
            let path = line.split_whitespace().nth(1).unwrap_or("");
            let (status, body, kind) = if line.starts_with("GET ") && path == "/metrics" {
                if node.snapshot().await.is_err() {
                    tracing::debug!("node stopped; serving the last metrics");
                }
                (
                    "200 OK",
                    metrics.encode(),
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            } else {
                ("404 Not Found", "not found\n".to_owned(), "text/plain")
            };
            let response = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

/// Binds the metrics endpoint.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
