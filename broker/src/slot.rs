//! A connection's hold on one of the broker's connection places.
//!
//! The accept loop ([`crate::server`]) creates a [`ConnectionSlot`] for every
//! connection it keeps; the HTTP layer ([`crate::http`]) carries it along,
//! into the WebSocket task after an upgrade, so the place is given back only
//! when the TCP connection is really gone.

use tokio::sync::{Notify, OwnedSemaphorePermit};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use crate::limits::{Admission, IpHold, IpRefusal, PublishLimiter, PublishLimits};
use crate::metrics::Metrics;

/// Connections accepted beyond `max_connections` that may only ask for
/// health, readiness and metrics, so probes and scrapes still get answers
/// from a full broker.
pub const PROBE_CONNECTIONS: usize = 16;

/// Holds one of the `max_connections` places (or one of the
/// [`PROBE_CONNECTIONS`]) for as long as the connection (HTTP or WebSocket)
/// lives; dropping it decrements `tickwire_connections`.
///
/// It lives as long as its connection, so it is kept small and allocates
/// nothing more at connect: the HTTP publish limiter is made by the
/// connection's first HTTP publish, and the abort signal is a flag and an
/// intrusive [`Notify`] rather than a cancellation token (a heap node).
#[derive(Debug)]
pub struct ConnectionSlot {
    _permit: OwnedSemaphorePermit,
    address: IpHold,
    /// The HTTP publishes of this connection, rate limited like a
    /// WebSocket session's (requests on one connection come one at a time,
    /// so the lock is never contended); `None` until the first one.
    http_publishes: Mutex<Option<Box<PublishLimiter>>>,
    publish_limits: PublishLimits,
    probe_only: bool,
    /// Set to drop the connection at once; [`ConnectionSlot::aborted`]
    /// waits for it.
    abort: AtomicBool,
    abort_signal: Notify,
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
            http_publishes: Mutex::new(None),
            publish_limits,
            probe_only,
            abort: AtomicBool::new(false),
            abort_signal: Notify::new(),
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
        self.abort.store(true, Ordering::Release);
        self.abort_signal.notify_waiters();
    }

    /// Resolves once [`ConnectionSlot::abort`] was called (at once if it
    /// already was); the HTTP server watches it.
    pub async fn aborted(&self) {
        loop {
            // Registered before the flag is checked, so an abort between
            // the check and the wait still wakes it.
            let signal = self.abort_signal.notified();
            tokio::pin!(signal);
            signal.as_mut().enable();
            if self.abort.load(Ordering::Acquire) {
                return;
            }
            signal.await;
        }
    }

    /// Whether an HTTP publish of `bytes` payload bytes on this connection
    /// is within its publish rate.
    pub fn admit_http_publish(&self, bytes: usize) -> Admission {
        let now = Instant::now();
        self.http_publishes
            .lock()
            .get_or_insert_with(|| Box::new(PublishLimiter::new(self.publish_limits, now)))
            .admit(bytes, now)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.metrics.connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;
    use std::time::Instant;

    use tokio::sync::Semaphore;

    use super::*;
    use crate::config::BrokerConfig;
    use crate::limits::IpLimits;

    fn slot() -> Arc<ConnectionSlot> {
        let config = BrokerConfig::default();
        let permit = Arc::new(Semaphore::new(1))
            .try_acquire_owned()
            .expect("a free place");
        let address = Arc::new(IpLimits::new(&config, 1))
            .admit(IpAddr::V4(Ipv4Addr::LOCALHOST), Instant::now())
            .expect("admitted");
        let metrics = Metrics::new();
        metrics.connections.inc();
        Arc::new(ConnectionSlot::new(
            permit,
            address,
            false,
            PublishLimits::from_config(&config),
            metrics,
        ))
    }

    #[tokio::test]
    async fn aborted_resolves_for_an_abort_before_or_while_waiting() {
        let waiting = slot();
        let waiter = tokio::spawn({
            let slot = Arc::clone(&waiting);
            async move { slot.aborted().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        waiting.abort();
        waiter.await.expect("woken by the abort");

        let already = slot();
        already.abort();
        already.aborted().await;
    }

    #[test]
    fn the_http_publish_limiter_is_made_by_the_first_publish() {
        let slot = slot();
        assert!(slot.http_publishes.lock().is_none());
        assert_eq!(slot.admit_http_publish(10), Admission::Accepted);
        assert!(slot.http_publishes.lock().is_some());
    }
}
