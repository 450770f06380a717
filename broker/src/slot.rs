//! A connection's hold on one of the broker's connection places.
//!
//! The accept loop ([`crate::server`]) creates a [`ConnectionSlot`] for every
//! connection it keeps; the HTTP layer ([`crate::http`]) carries it along,
//! into the WebSocket task after an upgrade, so the place is given back only
//! when the TCP connection is really gone.

use tokio::sync::OwnedSemaphorePermit;

use crate::limits::IpHold;
use crate::metrics::Metrics;

/// Connections accepted beyond `max_connections` that may only ask for
/// health, readiness and metrics, so probes and scrapes still get answers
/// from a full broker.
pub const PROBE_CONNECTIONS: usize = 16;

/// Holds one of the `max_connections` places (or one of the
/// [`PROBE_CONNECTIONS`]) for as long as the connection (HTTP or WebSocket)
/// lives; dropping it decrements `tickwire_connections`.
#[derive(Debug)]
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    _address: IpHold,
    probe_only: bool,
    metrics: Metrics,
}

impl ConnectionSlot {
    /// Takes the place held by `permit` and, among its source address's
    /// connections, by `address`; `probe_only` marks a connection that came
    /// in over the limit. The caller has counted the connection in
    /// `tickwire_connections`.
    pub fn new(
        permit: OwnedSemaphorePermit,
        address: IpHold,
        probe_only: bool,
        metrics: Metrics,
    ) -> Self {
        ConnectionSlot {
            _permit: permit,
            _address: address,
            probe_only,
            metrics,
        }
    }

    /// Whether this connection came in over the limit and may only use
    /// `/healthz`, `/readyz` and `/metrics`.
    pub fn probe_only(&self) -> bool {
        self.probe_only
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.metrics.connections.dec();
    }
}
