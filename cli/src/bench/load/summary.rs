//! The result of a load run: collected from the shared counters once the
//! threads are done, printed as a table or JSON, and turned into the exit
//! code.

use crate::console::{stderrln, stdoutln};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::super::payload::PayloadKind;
use super::super::report::{self, BrokerUsage, CpuTime, Latency, LoadCpu, si};
use super::super::{EXIT_CONNECT, EXIT_LOSS, EXIT_OK};
use super::nodes::NodeShare;
use super::shared::{Ctx, OPEN, SLOW_CONSUMER};

/// When the phases of a run began and ended.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    /// Time to open every connection, seconds.
    pub(super) setup_s: f64,
    /// Publishing started.
    pub(super) t0: Instant,
    /// Publishing stopped.
    pub(super) publish_end: Instant,
    /// The drain ended.
    pub(super) t_end: Instant,
    /// Whether every expected message arrived within the drain time.
    pub(super) drained: bool,
}

/// The result of one run, printed as a table or JSON.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// `fanout` or `topics`.
    pub bench: &'static str,
    /// Broker URL (`--url`).
    pub url: String,
    /// Where subscribers went, round-robin (`--subscriber-url`, default
    /// `--url`).
    pub subscriber_urls: Vec<String>,
    /// Where publishers went, round-robin (`--publisher-url`, default
    /// `--url`).
    pub publisher_urls: Vec<String>,
    /// Each broker's connections and deliveries, in the order first named.
    pub nodes: Vec<NodeShare>,
    /// Number of topics.
    pub topics: usize,
    /// Subscribers per topic.
    pub subscribers_per_topic: usize,
    /// Subscriber connections in total.
    pub subscribers: usize,
    /// Publisher connections.
    pub publishers: usize,
    /// Payload bytes per message.
    pub payload_bytes: usize,
    /// What the payload holds after the send time (`--payload-kind`).
    pub payload_kind: PayloadKind,
    /// `--rate`, if given (messages/s, all publishers together).
    pub target_rate: Option<f64>,
    /// Flow-control window per topic at max rate (`None` with `--rate`).
    pub max_in_flight: Option<usize>,
    /// Load threads.
    pub threads: usize,
    /// Time to open every connection, seconds.
    pub setup_s: f64,
    /// Publishing time, seconds.
    pub publish_s: f64,
    /// Time spent waiting for in-flight messages after publishing, seconds.
    pub drain_s: f64,
    /// Messages published.
    pub published: u64,
    /// Messages published per second.
    pub publish_rate: f64,
    /// Messages received, all subscribers together.
    pub deliveries: u64,
    /// published × subscribers per topic.
    pub expected_deliveries: u64,
    /// Deliveries per second, from the start of publishing to the last
    /// delivery (or the end of the drain).
    pub deliveries_per_sec: f64,
    /// Whether subscribers negotiated permessage-deflate (`--compression`).
    pub compression: bool,
    /// Deliveries that arrived compressed (RSV1); the broker sends a
    /// message plain when it is under its `--compression-min-size` or does
    /// not shrink.
    pub compressed_deliveries: u64,
    /// Bytes subscribers read from their sockets after subscribing (frame
    /// headers included), all together.
    pub wire_bytes_received: u64,
    /// `wire_bytes_received / deliveries` (`None` without deliveries).
    pub wire_bytes_per_delivery: Option<f64>,
    /// expected − received after the drain.
    pub lost: u64,
    /// Whether every expected message arrived within the drain time.
    pub drained: bool,
    /// Sequence numbers skipped, as seen by subscribers.
    pub seq_gaps: u64,
    /// Times a subscriber saw a sequence number repeat or go backwards
    /// (a duplicate or a message out of order).
    pub seq_regressions: u64,
    /// Subscribers closed by the broker with 4001 (slow consumer).
    pub slow_consumer_closes: u64,
    /// Connections closed by the broker with another code, or dropped.
    pub other_disconnects: u64,
    /// `ERROR` replies received (publishers and subscribers).
    pub error_replies: u64,
    /// Publisher failures (write errors), with the first message.
    pub publisher_failures: Vec<String>,
    /// With `--rate`: whether a publisher fell behind its schedule (a due
    /// backlog over 10 ms) or the achieved rate was under 99% of the target.
    pub rate_fell_behind: Option<bool>,
    /// With `--rate`: the largest backlog a publisher found when it woke, in
    /// milliseconds of its rate (≈ 1 ms when keeping up).
    pub rate_max_lag_ms: Option<f64>,
    /// End-to-end latency: publisher send time to subscriber read time.
    pub latency: Latency,
    /// The load tool's own CPU use over publish + drain.
    pub load_cpu: LoadCpu,
    /// The broker's CPU and memory, with `--broker-pid`.
    pub broker: Option<BrokerUsage>,
    /// Zero loss, no repeated or backward seq, no slow-consumer close, no
    /// failure.
    pub ok: bool,
}

impl LoadReport {
    /// Reads the counters of a finished run.
    pub(super) fn collect(
        ctx: &Ctx,
        timing: &Timing,
        histogram: &Histogram<u64>,
        cpu: CpuTime,
        broker: Option<BrokerUsage>,
    ) -> LoadReport {
        let Timing {
            setup_s,
            t0,
            publish_end,
            t_end,
            drained,
        } = *timing;
        let wall = t_end - t0;
        let (expected, received) = ctx.totals();
        let published = ctx.published();
        let publish_s = (publish_end - t0).as_secs_f64();
        let slow_consumer_closes = ctx.subscribers_closed_with(SLOW_CONSUMER) as u64;
        let other_disconnects = ctx
            .subs
            .iter()
            .map(|s| s.close_code.load(Relaxed))
            .chain(ctx.pubs.iter().map(|p| p.close_code.load(Relaxed)))
            .filter(|c| *c != OPEN && *c != SLOW_CONSUMER)
            .count() as u64;
        let publisher_failures: Vec<String> = ctx
            .pubs
            .iter()
            .filter_map(|p| p.failure.lock().ok().and_then(|f| f.clone()))
            .collect();
        let error_replies = ctx.subs.iter().map(|s| s.errors.load(Relaxed)).sum::<u64>()
            + ctx.pubs.iter().map(|p| p.errors.load(Relaxed)).sum::<u64>();
        let lost = expected.saturating_sub(received);
        let seq_regressions = ctx
            .subs
            .iter()
            .map(|s| s.seq_regressions.load(Relaxed))
            .sum();
        let (rate_fell_behind, rate_max_lag_ms) = match ctx.load.rate {
            Some(rate) => {
                let per_pub = rate / ctx.plan.publishers as f64;
                let max_lag = ctx
                    .pubs
                    .iter()
                    .map(|p| p.max_lag_msgs.load(Relaxed))
                    .max()
                    .unwrap_or(0);
                let lag_ms = max_lag as f64 / per_pub * 1000.0;
                let achieved = published as f64 / publish_s.max(1e-9);
                (Some(lag_ms > 10.0 || achieved < 0.99 * rate), Some(lag_ms))
            }
            None => (None, None),
        };
        let (compressed_deliveries, wire_bytes_received) = ctx.wire();
        let delivery_window = if drained { wall } else { publish_end - t0 };
        LoadReport {
            bench: ctx.plan.bench,
            url: ctx.nodes.main_url().to_owned(),
            subscriber_urls: ctx.nodes.subscriber_urls(),
            publisher_urls: ctx.nodes.publisher_urls(),
            nodes: ctx.nodes.shares(ctx.subs.len(), ctx.plan.publishers, |i| {
                ctx.subs[i].received.load(Relaxed)
            }),
            topics: ctx.topics.len(),
            subscribers_per_topic: ctx.plan.subscribers_per_topic,
            subscribers: ctx.subs.len(),
            publishers: ctx.plan.publishers,
            payload_bytes: ctx.load.payload,
            payload_kind: ctx.load.payload_kind,
            target_rate: ctx.load.rate,
            max_in_flight: ctx.load.rate.is_none().then_some(ctx.load.max_in_flight),
            threads: ctx.load.threads,
            setup_s,
            publish_s,
            drain_s: (t_end - publish_end).as_secs_f64(),
            published,
            publish_rate: published as f64 / publish_s.max(1e-9),
            deliveries: received,
            expected_deliveries: expected,
            deliveries_per_sec: received as f64 / delivery_window.as_secs_f64().max(1e-9),
            compression: ctx.load.compression,
            compressed_deliveries,
            wire_bytes_received,
            wire_bytes_per_delivery: (received > 0)
                .then(|| wire_bytes_received as f64 / received as f64),
            lost,
            drained,
            seq_gaps: ctx.subs.iter().map(|s| s.seq_gaps.load(Relaxed)).sum(),
            seq_regressions,
            slow_consumer_closes,
            other_disconnects,
            error_replies,
            ok: lost == 0
                && seq_regressions == 0
                && slow_consumer_closes == 0
                && other_disconnects == 0
                && publisher_failures.is_empty(),
            publisher_failures,
            rate_fell_behind,
            rate_max_lag_ms,
            latency: Latency::from_histogram(histogram),
            load_cpu: LoadCpu::new(cpu, wall, received),
            broker,
        }
    }

    /// The exit code: a connection failure, a loss, or OK.
    pub(super) fn exit_code(&self) -> u8 {
        if self.other_disconnects > 0 || !self.publisher_failures.is_empty() {
            EXIT_CONNECT
        } else if !self.ok {
            EXIT_LOSS
        } else {
            EXIT_OK
        }
    }

    /// Prints the report as a table, or as one JSON line with `json`.
    pub(super) fn print(&self, json: bool) {
        let r = self;
        if json {
            match serde_json::to_string(r) {
                Ok(s) => {
                    let _ = stdoutln!("{s}");
                }
                Err(e) => stderrln!("tickwire bench: cannot encode the report: {e}"),
            }
            return;
        }
        let mode = match r.target_rate {
            Some(rate) => format!("fixed rate {} msgs/s", si(rate)),
            None => format!(
                "max rate (window {} msgs per topic)",
                r.max_in_flight.unwrap_or(0)
            ),
        };
        let l = &r.latency;
        let mut rows = vec![
            (
                "topology",
                format!(
                    "{} topic(s) × {} subscriber(s) = {} connections, {} publisher(s), {} B {} payload",
                    r.topics,
                    r.subscribers_per_topic,
                    r.subscribers,
                    r.publishers,
                    r.payload_bytes,
                    r.payload_kind.name()
                ),
            ),
            ("mode", mode),
            (
                "time",
                format!(
                    "{:.2} s publishing + {:.2} s drain (setup {:.2} s, {} load thread(s))",
                    r.publish_s, r.drain_s, r.setup_s, r.threads
                ),
            ),
            (
                "published",
                format!("{} msgs, {} msgs/s", r.published, si(r.publish_rate)),
            ),
            (
                "deliveries",
                format!("{} msgs, {} msgs/s", r.deliveries, si(r.deliveries_per_sec)),
            ),
            (
                "wire",
                format!(
                    "{} received{}{}",
                    report::bytes(r.wire_bytes_received as f64),
                    r.wire_bytes_per_delivery
                        .map(|b| format!(", {b:.1} B per delivery"))
                        .unwrap_or_default(),
                    if r.compression {
                        format!(" ({} deliveries compressed)", r.compressed_deliveries)
                    } else {
                        String::new()
                    }
                ),
            ),
            (
                "lost",
                format!(
                    "{} of {} expected{}",
                    r.lost,
                    r.expected_deliveries,
                    if r.drained { "" } else { " (drain timed out)" }
                ),
            ),
            (
                "closes",
                format!(
                    "{} slow-consumer (4001), {} other; {} seq gaps, {} repeated or backwards, {} error replies",
                    r.slow_consumer_closes,
                    r.other_disconnects,
                    r.seq_gaps,
                    r.seq_regressions,
                    r.error_replies
                ),
            ),
            (
                "latency",
                format!(
                    "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
                    report::micros(l.p50_us),
                    report::micros(l.p90_us),
                    report::micros(l.p99_us),
                    report::micros(l.p999_us),
                    report::micros(l.max_us),
                    l.count
                ),
            ),
            (
                "load tool CPU",
                format!(
                    "{:.2} s user + {:.2} s sys = {:.0}% of one core{}",
                    r.load_cpu.user_s,
                    r.load_cpu.sys_s,
                    r.load_cpu.percent_of_core,
                    r.load_cpu
                        .ns_per_delivery
                        .map(|ns| format!(", {ns:.0} ns per delivery"))
                        .unwrap_or_default()
                ),
            ),
        ];
        if let (Some(behind), Some(lag)) = (r.rate_fell_behind, r.rate_max_lag_ms) {
            rows.push((
                "schedule",
                format!(
                    "{} (largest backlog {lag:.1} ms)",
                    if behind { "FELL BEHIND" } else { "kept up" }
                ),
            ));
        }
        if let Some(b) = &r.broker {
            rows.push((
                "broker",
                format!(
                    "pid {}: {:.0}% of one core, RSS {} → {}",
                    b.pid,
                    b.cpu_percent,
                    report::bytes(b.rss_start_bytes as f64),
                    report::bytes(b.rss_end_bytes as f64)
                ),
            ));
        }
        if r.nodes.len() > 1 {
            for n in &r.nodes {
                rows.push((
                    "node",
                    format!(
                        "{}: {} subscriber(s), {} publisher(s), {} deliveries",
                        n.url, n.subscribers, n.publishers, n.deliveries
                    ),
                ));
            }
        }
        for f in &r.publisher_failures {
            rows.push(("publisher error", f.clone()));
        }
        rows.push((
            "result",
            if r.ok {
                "OK: zero loss".to_owned()
            } else {
                "FAILED: loss, duplicate, slow-consumer close or disconnect".to_owned()
            },
        ));
        report::print_table(&format!("tickwire bench {} — {}", r.bench, r.url), &rows);
    }
}
