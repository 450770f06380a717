//! A connection's hold on one of the broker's connection places.
//!
//! The accept loop ([`crate::server`]) creates a [`ConnectionSlot`] for every
//! connection it keeps; the HTTP layer ([`crate::http`]) carries it along,
//! into the WebSocket task after an upgrade, so the place is given back only
//! when the TCP connection is really gone.

use tokio::sync::OwnedSemaphorePermit;

use std::time::Instant;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::limits::{Admission, IpHold, IpRefusal, PublishLimiter, PublishLimits};
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
    address: IpHold,
    /// The HTTP publishes of this connection, rate limited like a
    /// WebSocket session's (requests on one connection come one at a time,
    /// so the lock is never contended).
    http_publishes: Mutex<PublishLimiter>,
    probe_only: bool,
    /// Cancelled to drop the connection at once.
    abort: CancellationToken,
    metrics: Metrics,
}

impl ConnectionSlot {
    /// Takes the place held by `permit` and, among its source address's
    /// connections, by `address`; `probe_only` marks a connection that came
    /// in over the limit; `publish_limits` rate-limit its HTTP publishes. The caller has counted the connection in
    /// `tickwire_connections`.
    pub fn new(
        permit: OwnedSemaphorePermit,
        address: IpHold,
        probe_only: bool,
        publish_limits: PublishLimits,
        metrics: Metrics,
    ) -> Self {
        ConnectionSlot {
            _permit: permit,
            address,
            http_publishes: Mutex::new(PublishLimiter::new(publish_limits, Instant::now())),
            probe_only,
            abort: CancellationToken::new(),
            metrics,
        }
    }

    /// Takes one more place among this connection's source address's
    /// connections, for something that outlives the connection (a long-poll
    /// session); refused like a new connection from that address would be.
    pub fn admit_from_same_address(&self, now: Instant) -> Result<IpHold, IpRefusal> {
        self.address.admit_another(now)
    }

    /// Whether this connection came in over the limit and may only use
    /// `/healthz`, `/readyz` and `/metrics`.
    pub fn probe_only(&self) -> bool {
        self.probe_only
    }

    /// Drops the connection at once, without flushing what is buffered: for
    /// a response whose client stopped reading (a stalled SSE stream).
    pub fn abort(&self) {
        self.abort.cancel();
    }

    /// Cancelled by [`ConnectionSlot::abort`]; the HTTP server watches it.
    pub fn abort_token(&self) -> &CancellationToken {
        &self.abort
    }

    /// Whether an HTTP publish of `bytes` payload bytes on this connection
    /// is within its publish rate.
    pub fn admit_http_publish(&self, bytes: usize) -> Admission {
        self.http_publishes.lock().admit(bytes, Instant::now())
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.metrics.connections.dec();
    }
}
