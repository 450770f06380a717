//! Prometheus metrics, served as text on `GET /metrics`.
//!
//! Every metric is broker-wide: no label carries a topic or a connection, so
//! the number of series stays fixed however many topics exist. Hot-path
//! counters are bumped once per publish or once per write batch, never once
//! per delivery.
//!
//! Two families describe the process rather than the broker:
//! `tickwire_build_info{version}` (always 1; join on it to label other series
//! with the running version) and, on Linux, the standard `process_*` metrics
//! (CPU seconds, resident and virtual memory, open and maximum file
//! descriptors, threads, start time) read from `/proc` at each scrape.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tickwire_protocol::{CloseCode, ErrorCode};

/// Bucket upper bounds, in seconds, of the publish-to-write latency histogram.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// Bucket upper bounds, in seconds, of the Redis round-trip histogram
/// (`tickwire_backplane_redis_seconds`): 100 µs to the 2 s deadline.
pub const REDIS_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0,
];

/// The `op` label values of `tickwire_backplane_redis_seconds`: a pipeline
/// of publishes, a `PING`, a subscribe's reads of topics, a wildcard
/// replay's `SCAN` of the topics.
pub const REDIS_OPS: [&str; 4] = ["publish", "ping", "read", "scan"];

/// The `answered` label values of `tickwire_backplane_subscribes_total`:
/// from what Redis keeps, or from the node alone (Redis could not be asked).
pub const SUBSCRIBE_ANSWERS: [&str; 2] = ["redis", "node"];

/// The `reason` label values of `tickwire_backplane_refused_total`: the
/// [`crate::cluster::publisher::PublishError`] a client got.
pub const REFUSED_REASONS: [&str; 4] = ["unavailable", "unconfirmed", "busy", "refused"];

/// The `reason` label values of `tickwire_backplane_dropped_total`: a
/// message from Redis not written by tickwire, a message the registry
/// would not take (e.g. `max_topics` reached).
pub const DROPPED_REASONS: [&str; 2] = ["malformed", "registry"];

/// The `listener` label values of `tickwire_accept_errors_total`: the main
/// port, the metrics listener and the echo service.
pub const ACCEPT_LISTENERS: [&str; 3] = ["main", "metrics", "echo"];

/// The `transport` label values of `tickwire_transport_sessions`: WebSocket
/// sessions on `/ws`, SSE streams, long-poll sessions.
pub const TRANSPORTS: [&str; 3] = ["ws", "sse", "poll"];

/// The `transport` label values of `tickwire_transport_deliveries_total` and
/// `tickwire_transport_bytes_out_total`: the fallback transports (WebSocket
/// deliveries and bytes are `tickwire_deliveries_total` and
/// `tickwire_bytes_out_total`, counted per publish and per write batch on
/// the hot path, which these per-delivery counters stay off).
pub const FALLBACK_TRANSPORTS: [&str; 2] = ["sse", "poll"];

/// All broker metrics, registered in one [`Registry`]: a handle to one
/// shared [`MetricSet`], which it dereferences to (`metrics.deliveries`).
///
/// Cloning it is one reference count increment: per-connection state
/// (outbound queue, connection slot, writer) keeps a clone, so it must not
/// cost a copy of every metric handle (about 60 of them, half a KiB and as
/// many atomic increments, per clone).
#[derive(Clone)]
pub struct Metrics(Arc<MetricSet>);

impl Deref for Metrics {
    type Target = MetricSet;

    fn deref(&self) -> &MetricSet {
        &self.0
    }
}

/// The broker's metrics, shared by every [`Metrics`] handle.
pub struct MetricSet {
    registry: Registry,
    /// Open connections (WebSocket and HTTP).
    pub connections: IntGauge,
    /// Connections accepted since start.
    pub connections_accepted: IntCounter,
    /// Connections refused because `max_connections` was reached.
    pub connections_rejected: IntCounter,
    /// Open WebSocket sessions.
    pub websockets: IntGauge,
    /// 1 while `/readyz` answers 200, 0 while it answers 503 (draining, or
    /// a cluster node without Redis); set on every scrape
    /// ([`Metrics::set_ready`]).
    pub ready: IntGauge,
    /// Live per-connection tasks: the task serving each accepted connection
    /// (TLS, HTTP, refusal), the WebSocket reader task after an upgrade and
    /// the WebSocket writer task. Maintained by [`Metrics::count_task`].
    pub connection_tasks: IntGauge,
    /// Messages accepted for publishing (WebSocket and HTTP).
    pub messages_published: IntCounter,
    /// Messages queued to subscriber connections.
    pub deliveries: IntCounter,
    /// Bytes of WebSocket frames received.
    pub bytes_in: IntCounter,
    /// Bytes written to WebSocket connections.
    pub bytes_out: IntCounter,
    /// Delivery frames compressed for permessage-deflate subscribers: one
    /// per published message that had at least one such subscriber and was
    /// big enough, however many subscribers share the result.
    pub compression_messages: IntCounter,
    /// Bytes of those frames before compression.
    pub compression_bytes_in: IntCounter,
    /// Bytes of the frames sent in their place (compressed, or the plain
    /// frame when compression did not shrink it).
    pub compression_bytes_out: IntCounter,
    /// Active subscriptions (exact and wildcard).
    pub subscriptions: IntGauge,
    /// Topics the registry tracks.
    pub topics: IntGauge,
    /// Connections closed with 4001 because their queue exceeded its budget.
    pub slow_consumer_disconnects: IntCounter,
    /// Error replies sent, by error code name.
    pub protocol_errors: IntCounterVec,
    /// Connections closed by the broker, by close code.
    pub closes: IntCounterVec,
    /// Age of the oldest frame in each write batch when the batch is written.
    pub publish_to_write_seconds: Histogram,
    /// Messages dropped by the drop-oldest slow-consumer policy.
    pub dropped: IntCounter,
    /// Messages replaced by a newer one of the same topic (conflate policy
    /// and `max_rate`).
    pub conflated: IntCounter,
    /// Subscribes with `since`, by outcome (`recovered`, `incomplete`).
    pub resumes: IntCounterVec,
    /// Bytes queued for a connection, sampled at each write batch.
    pub queue_depth_bytes: Histogram,
    /// HTTP publishes answered 408 because the body was too slow.
    pub http_body_timeouts: IntCounter,
    /// HTTP publishes refused with `overloaded` (producer backpressure).
    pub publish_overloaded: IntCounter,
    /// Bytes of kept messages (retained values and history), all topics.
    pub retained_bytes: IntGauge,
    /// Messages a topic policy asked to keep that `max_retained_bytes` left
    /// no room for.
    pub retained_dropped: IntCounter,
    /// Connections refused by a per-address limit, by `reason` (the
    /// setting: `max_connections_per_ip`, `connection_rate_per_ip`).
    pub connections_rejected_per_ip: IntCounterVec,
    /// WebSocket upgrades refused by a header check, by `reason` (`origin`,
    /// `version`, `key`).
    pub handshakes_refused: IntCounterVec,
    /// Failed `accept()` calls, by `listener` (`main`, `metrics`): see
    /// [`crate::accept`].
    pub accept_errors: IntCounterVec,
    /// Cluster mode: publishes sent to Redis, by `result` (`ok`, `failed`).
    pub backplane_publishes: IntCounterVec,
    /// Cluster mode: messages received from Redis.
    pub backplane_received: IntCounter,
    /// Cluster mode: connections to Redis made again after one was lost.
    pub backplane_reconnects: IntCounter,
    /// Cluster mode: Redis channels and patterns this node subscribes to.
    pub backplane_channels: IntGauge,
    /// Cluster mode: 1 while both Redis connections are up.
    pub backplane_up: IntGauge,
    /// Cluster mode: Redis round trips, by `op` ([`REDIS_OPS`]).
    pub backplane_redis_seconds: HistogramVec,
    /// Cluster mode: publishes not confirmed by Redis, by `reason`
    /// ([`REFUSED_REASONS`]).
    pub backplane_refused: IntCounterVec,
    /// Cluster mode: messages received from Redis and not delivered, by
    /// `reason` ([`DROPPED_REASONS`]).
    pub backplane_dropped: IntCounterVec,
    /// Cluster mode: subscribes answered, by `answered`
    /// ([`SUBSCRIBE_ANSWERS`]).
    pub backplane_subscribes: IntCounterVec,
    /// Open subscriber sessions, by `transport` ([`TRANSPORTS`]).
    pub transport_sessions: IntGaugeVec,
    /// Messages sent over a fallback transport, by `transport`
    /// ([`FALLBACK_TRANSPORTS`]).
    pub transport_deliveries: IntCounterVec,
    /// Bytes of SSE streams and poll answers (bodies), by `transport`
    /// ([`FALLBACK_TRANSPORTS`]).
    pub transport_bytes_out: IntCounterVec,
    /// Presence entries this node holds (distinct client instances per
    /// topic with at least one live or grace hold).
    pub presence_entries: IntGauge,
    /// Connection-level `JOIN` events emitted (counted once cluster-wide,
    /// by the node that emits them).
    pub presence_joins: IntCounter,
    /// Connection-level `LEAVE` events emitted (counted once cluster-wide).
    pub presence_leaves: IntCounter,
    /// Cluster mode: dead nodes whose presence lease this node reaped.
    pub presence_lease_expiries: IntCounter,
    /// Cluster mode: presence entries removed by reaping dead nodes.
    pub presence_expired_entries: IntCounter,
    /// Cluster mode: presence joins and leaves that did not reach Redis
    /// (each is sent again once Redis answers).
    pub presence_backplane_failures: IntCounter,
}

/// Bucket upper bounds, in bytes, of the queue depth histogram.
pub const QUEUE_DEPTH_BUCKETS: [f64; 10] = [
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
];

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(format!("tickwire_{name}"), help).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(format!("tickwire_{name}"), help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter_vec = |name: &str, help: &str, label: &str| {
            let c = IntCounterVec::new(Opts::new(format!("tickwire_{name}"), help), &[label])
                .expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let publish_to_write_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tickwire_publish_to_write_seconds",
                "Time from publish to the write of the batch holding the message (oldest frame per batch).",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid histogram");
        registry
            .register(Box::new(publish_to_write_seconds.clone()))
            .expect("unique metric");

        let queue_depth_bytes = Histogram::with_opts(
            HistogramOpts::new(
                "tickwire_queue_depth_bytes",
                "Bytes queued for a connection (channel and lanes), sampled at each write batch.",
            )
            .buckets(QUEUE_DEPTH_BUCKETS.to_vec()),
        )
        .expect("valid histogram");
        registry
            .register(Box::new(queue_depth_bytes.clone()))
            .expect("unique metric");

        let backplane_redis_seconds = HistogramVec::new(
            HistogramOpts::new(
                "tickwire_backplane_redis_seconds",
                "Cluster mode: Redis round trips by op: publish (one pipeline of up to 256 publishes), ping (an idle connection's check), read (a subscribe's reads: one pipeline of up to 256 topics), scan (a wildcard replay's SCAN of the topics, all calls); failed and timed-out ones included.",
            )
            .buckets(REDIS_BUCKETS.to_vec()),
            &["op"],
        )
        .expect("valid histogram");
        registry
            .register(Box::new(backplane_redis_seconds.clone()))
            .expect("unique metric");

        let build_info = IntGaugeVec::new(
            Opts::new(
                "tickwire_build_info",
                "Always 1; the label carries the version of the running broker.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry
            .register(Box::new(build_info))
            .expect("unique metric");
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");

        let transport_sessions = IntGaugeVec::new(
            Opts::new(
                "tickwire_transport_sessions",
                "Open subscriber sessions by transport: ws (WebSocket sessions on /ws), sse (GET /v1/sse streams), poll (long-poll sessions).",
            ),
            &["transport"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(transport_sessions.clone()))
            .expect("unique metric");

        let metrics = MetricSet {
            connections: gauge("connections", "Open TCP connections (WebSocket and HTTP)."),
            connections_accepted: counter(
                "connections_accepted_total",
                "TCP connections accepted.",
            ),
            connections_rejected: counter(
                "connections_rejected_total",
                "TCP connections refused because max_connections was reached.",
            ),
            websockets: gauge("websockets", "Open WebSocket sessions."),
            ready: gauge(
                "ready",
                "1 while /readyz answers 200; 0 while it answers 503 (draining after SIGTERM, or a cluster node that cannot reach Redis).",
            ),
            connection_tasks: gauge(
                "connection_tasks",
                "Live per-connection tasks: connection (TLS/HTTP), WebSocket reader and writer tasks.",
            ),
            messages_published: counter(
                "messages_published_total",
                "Messages accepted for publishing.",
            ),
            deliveries: counter(
                "deliveries_total",
                "Messages queued to subscriber connections.",
            ),
            bytes_in: counter("bytes_in_total", "Bytes of WebSocket frames received."),
            bytes_out: counter("bytes_out_total", "Bytes written to WebSocket connections."),
            compression_messages: counter(
                "compression_messages_total",
                "Delivery frames compressed for permessage-deflate subscribers (once per message, shared by all of them).",
            ),
            compression_bytes_in: counter(
                "compression_bytes_in_total",
                "Bytes of delivery frames before permessage-deflate compression.",
            ),
            compression_bytes_out: counter(
                "compression_bytes_out_total",
                "Bytes of the frames sent instead (compressed, or plain when compression did not shrink them).",
            ),
            subscriptions: gauge("subscriptions", "Active subscriptions, exact and wildcard."),
            topics: gauge("topics", "Topics tracked by the registry."),
            slow_consumer_disconnects: counter(
                "slow_consumer_disconnects_total",
                "Connections closed with 4001 because their outbound queue exceeded its budget.",
            ),
            protocol_errors: counter_vec(
                "protocol_errors_total",
                "Error replies sent to clients, by error code.",
                "code",
            ),
            closes: counter_vec(
                "closes_total",
                "WebSocket closes initiated by the broker, by close code.",
                "code",
            ),
            publish_to_write_seconds,
            dropped: counter(
                "messages_dropped_total",
                "Messages dropped for slow subscribers by the drop-oldest policy.",
            ),
            conflated: counter(
                "messages_conflated_total",
                "Queued messages replaced by a newer message of the same topic (conflate policy, max_rate).",
            ),
            resumes: counter_vec(
                "resumes_total",
                "Subscribes with `since`, by outcome.",
                "outcome",
            ),
            queue_depth_bytes,
            http_body_timeouts: counter(
                "http_body_timeouts_total",
                "HTTP publishes answered 408 because the body did not arrive within http_body_timeout.",
            ),
            publish_overloaded: counter(
                "publish_overloaded_total",
                "HTTP publishes refused with 503 overloaded: the topic's fan-out stayed backed up for publish_backpressure_wait.",
            ),
            retained_bytes: gauge(
                "retained_bytes",
                "Bytes of messages kept for all topics (retained values and history), bounded by max_retained_bytes.",
            ),
            retained_dropped: counter(
                "retained_dropped_total",
                "Messages a topic policy asked to keep (history, retain) that were not kept because max_retained_bytes was reached; they were still delivered live.",
            ),
            connections_rejected_per_ip: counter_vec(
                "connections_rejected_per_ip_total",
                "TCP connections refused with 429 by a per-address limit, by the setting that refused them.",
                "reason",
            ),
            handshakes_refused: counter_vec(
                "handshakes_refused_total",
                "WebSocket upgrades refused by a header check: origin (403), version (426), key (400).",
                "reason",
            ),
            accept_errors: counter_vec(
                "accept_errors_total",
                "Failed accept() calls, by listener (main, metrics, echo): typically the file descriptor limit (EMFILE); each failure pauses that listener (10ms doubling to 1s).",
                "listener",
            ),
            backplane_publishes: counter_vec(
                "backplane_publishes_total",
                "Cluster mode: publishes sent to Redis, by result (ok; failed: refused with an error reply).",
                "result",
            ),
            backplane_received: counter(
                "backplane_received_total",
                "Cluster mode: messages received from Redis (from any node), before local fan-out.",
            ),
            backplane_reconnects: counter(
                "backplane_reconnects_total",
                "Cluster mode: Redis connections (publisher, subscriber) made again after one was lost.",
            ),
            backplane_channels: gauge(
                "backplane_channels",
                "Cluster mode: Redis channels and patterns this node is subscribed to.",
            ),
            backplane_up: gauge(
                "backplane_up",
                "Cluster mode: 1 while both Redis connections (publisher, subscriber) are up; 0 otherwise and without --cluster.",
            ),
            backplane_redis_seconds,
            backplane_refused: counter_vec(
                "backplane_refused_total",
                "Cluster mode: publishes not confirmed by Redis, by reason: unavailable (no connection), unconfirmed (the connection failed or Redis did not answer in time), busy (too many waiting), refused (Redis answered with an error).",
                "reason",
            ),
            backplane_dropped: counter_vec(
                "backplane_dropped_total",
                "Cluster mode: messages received from Redis and not delivered, by reason: malformed (not written by tickwire), registry (refused locally, e.g. max_topics reached).",
                "reason",
            ),
            backplane_subscribes: counter_vec(
                "backplane_subscribes_total",
                "Cluster mode: subscribes answered, by where the reply's position and replay came from: redis, or node (Redis could not be asked in time: no replay, resumes not claimed).",
                "answered",
            ),
            transport_sessions,
            transport_deliveries: counter_vec(
                "transport_deliveries_total",
                "Messages sent over a fallback transport, by transport (sse, poll); tickwire_deliveries_total counts what is queued to subscribers of every transport.",
                "transport",
            ),
            transport_bytes_out: counter_vec(
                "transport_bytes_out_total",
                "Bytes of SSE streams and long-poll answer bodies, by transport (sse, poll); WebSocket bytes are tickwire_bytes_out_total.",
                "transport",
            ),
            presence_entries: gauge(
                "presence_entries",
                "Presence entries this node holds (client instances on topics with presence, grace periods included).",
            ),
            presence_joins: counter(
                "presence_joins_total",
                "Connection-level JOIN events emitted (counted once cluster-wide, by the node that emits them).",
            ),
            presence_leaves: counter(
                "presence_leaves_total",
                "Connection-level LEAVE events emitted (counted once cluster-wide, by the node that emits them).",
            ),
            presence_lease_expiries: counter(
                "presence_lease_expiries_total",
                "Cluster mode: dead nodes whose presence lease this node reaped.",
            ),
            presence_expired_entries: counter(
                "presence_expired_entries_total",
                "Cluster mode: presence entries removed by reaping dead nodes.",
            ),
            presence_backplane_failures: counter(
                "presence_backplane_failures_total",
                "Cluster mode: presence joins and leaves that did not reach Redis (Redis unreachable or the publisher queue full); each is sent again once Redis answers.",
            ),
            registry,
        };
        for transport in TRANSPORTS {
            metrics.transport_sessions.with_label_values(&[transport]);
        }
        for transport in FALLBACK_TRANSPORTS {
            metrics.transport_deliveries.with_label_values(&[transport]);
            metrics.transport_bytes_out.with_label_values(&[transport]);
        }
        for code in ErrorCode::ALL {
            metrics.protocol_errors.with_label_values(&[code.name()]);
        }
        for reason in ["max_connections_per_ip", "connection_rate_per_ip"] {
            metrics
                .connections_rejected_per_ip
                .with_label_values(&[reason]);
        }
        for reason in ["origin", "version", "key"] {
            metrics.handshakes_refused.with_label_values(&[reason]);
        }
        for listener in ACCEPT_LISTENERS {
            metrics.accept_errors.with_label_values(&[listener]);
        }
        for result in ["ok", "failed"] {
            metrics.backplane_publishes.with_label_values(&[result]);
        }
        for op in REDIS_OPS {
            metrics.backplane_redis_seconds.with_label_values(&[op]);
        }
        for reason in REFUSED_REASONS {
            metrics.backplane_refused.with_label_values(&[reason]);
        }
        for answered in SUBSCRIBE_ANSWERS {
            metrics.backplane_subscribes.with_label_values(&[answered]);
        }
        for reason in DROPPED_REASONS {
            metrics.backplane_dropped.with_label_values(&[reason]);
        }
        for outcome in ["recovered", "incomplete"] {
            metrics.resumes.with_label_values(&[outcome]);
        }
        Metrics(Arc::new(metrics))
    }

    /// Counts one error reply.
    pub fn protocol_error(&self, code: ErrorCode) {
        self.protocol_errors.with_label_values(&[code.name()]).inc();
    }

    /// Counts one broker-initiated close.
    pub fn close(&self, code: CloseCode) {
        self.closes
            .with_label_values(&[code.as_u16().to_string().as_str()])
            .inc();
        if code == CloseCode::SlowConsumer {
            self.slow_consumer_disconnects.inc();
        }
    }

    /// Counts a close the broker starts with a server-disconnect code: 4007
    /// under its number, an operator's 4100-4999 code under the one label
    /// `application` (the label set stays bounded).
    pub fn close_disconnect(&self, code: u16) {
        match CloseCode::from_u16(code) {
            Some(known) => self.close(known),
            None => self.closes.with_label_values(&["application"]).inc(),
        }
    }

    /// Wraps the future of a per-connection task so that
    /// `tickwire_connection_tasks` counts it from this call until the future
    /// is dropped. Tokio drops a task's future on every way out: it
    /// completed, it was aborted, it panicked, or the runtime shut down, so
    /// no exit path leaves the count behind.
    ///
    /// The wrapper is a plain struct around the future, not an `async`
    /// block: an `async` block would keep the captured future and the
    /// future it awaits as two fields, doubling the size of every
    /// connection task.
    pub fn count_task<F: Future>(&self, task: F) -> CountedTask<F> {
        CountedTask {
            task,
            _hold: GaugeHold::new(&self.connection_tasks),
        }
    }

    /// Records whether the broker is ready (what `/readyz` answers), for
    /// the scrape about to be rendered.
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed registered metrics.
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// One unit of a gauge, held for as long as something lives: the gauge is
/// incremented on creation and decremented on drop, so a panic or an
/// aborted task cannot leave it too high.
#[derive(Debug)]
pub struct GaugeHold(IntGauge);

impl GaugeHold {
    /// Counts one more in `gauge` until the hold is dropped.
    pub fn new(gauge: &IntGauge) -> Self {
        gauge.inc();
        GaugeHold(gauge.clone())
    }
}

impl Drop for GaugeHold {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pin_project_lite::pin_project! {
    /// A future counted in `tickwire_connection_tasks` until it is dropped
    /// ([`Metrics::count_task`]).
    pub struct CountedTask<F> {
        #[pin]
        task: F,
        _hold: GaugeHold,
    }
}

impl<F: Future> Future for CountedTask<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().task.poll(cx)
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn the_scrape_carries_build_info_and_process_metrics() {
        let text = Metrics::new().render();
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!("tickwire_build_info{{version=\"{version}\"}} 1")),
            "{text}"
        );
        if cfg!(target_os = "linux") {
            for name in [
                "process_cpu_seconds_total",
                "process_resident_memory_bytes",
                "process_open_fds",
                "process_max_fds",
            ] {
                assert!(
                    text.contains(&format!("\n{name} ")),
                    "{name} missing: {text}"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_counted_task_is_uncounted_however_it_ends() {
        let metrics = Metrics::new();
        let gauge = metrics.connection_tasks.clone();
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let finishes = tokio::spawn(metrics.count_task(async move {
            let _ = released.await;
        }));
        let panics = tokio::spawn(metrics.count_task(async {
            tokio::task::yield_now().await;
            panic!("a connection task panicked");
        }));
        let aborted = tokio::spawn(metrics.count_task(std::future::pending::<()>()));
        let never_spawned = metrics.count_task(async {});
        assert_eq!(gauge.get(), 4, "counted from creation");

        drop(never_spawned);
        assert_eq!(gauge.get(), 3, "a future dropped unpolled is uncounted");
        assert!(panics.await.is_err_and(|e| e.is_panic()));
        assert_eq!(gauge.get(), 2, "a panicking task is uncounted");
        aborted.abort();
        assert!(aborted.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(gauge.get(), 1, "an aborted task is uncounted");
        release.send(()).expect("the task waits");
        finishes.await.expect("the task completes");
        assert_eq!(gauge.get(), 0, "a completed task is uncounted");
    }
}
