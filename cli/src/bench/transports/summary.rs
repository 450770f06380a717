//! The result of each transport × rate run: one row, printed as a JSON line
//! or, at the end, as one table of all rows.

use crate::console::stdoutln;

use serde::Serialize;

use super::super::report::{CpuTime, Latency, bytes, micros, si};
use super::tally::Tally;
use super::{Transport, TransportsArgs};

/// The broker's CPU over a run (with `--broker-pid`).
#[derive(Debug, Clone, Copy)]
pub struct BrokerCpu {
    /// The broker's process id.
    pub pid: u32,
    /// User + system CPU seconds from the first publish to the end of the
    /// drain.
    pub cpu_s: f64,
}

/// What a run measured besides the subscribers' tallies.
#[derive(Debug)]
pub struct Measured {
    /// Time to open every subscriber and the publisher, seconds.
    pub setup_s: f64,
    /// Publishing time, seconds.
    pub publish_s: f64,
    /// From the first publish to the end of the drain, seconds.
    pub wall_s: f64,
    /// Messages published.
    pub published: u64,
    /// Why subscribers' streams ended early, one entry each.
    pub closes: Vec<String>,
    /// The publisher's write failure, if any.
    pub publish_error: Option<String>,
    /// The broker's CPU, with `--broker-pid`.
    pub broker: Option<BrokerCpu>,
    /// The benchmark's own CPU over the same interval.
    pub tool_cpu: CpuTime,
}

/// The broker's CPU in a row.
#[derive(Debug, Clone, Serialize)]
pub struct BrokerRow {
    /// The broker's process id.
    pub pid: u32,
    /// CPU seconds over publish + drain.
    pub cpu_s: f64,
    /// Percent of one core over publish + drain.
    pub cpu_percent: f64,
    /// CPU microseconds per delivery (publish handling included).
    pub cpu_us_per_delivery: Option<f64>,
}

/// One transport × rate run.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Always `transports`.
    pub bench: &'static str,
    /// `ws`, `sse` or `poll`.
    pub transport: &'static str,
    /// The target publish rate, messages/s.
    pub target_rate: f64,
    /// The achieved publish rate, messages/s.
    pub publish_rate: f64,
    /// Subscribers.
    pub subscribers: usize,
    /// Payload bytes per message.
    pub payload_bytes: usize,
    /// Time to open the connections, seconds.
    pub setup_s: f64,
    /// Publishing time, seconds.
    pub publish_s: f64,
    /// Messages published.
    pub published: u64,
    /// Deliveries received, all subscribers together.
    pub deliveries: u64,
    /// published × subscribers.
    pub expected_deliveries: u64,
    /// expected − received after the drain.
    pub lost: u64,
    /// Sequence numbers skipped, as seen by subscribers.
    pub seq_gaps: u64,
    /// Times a subscriber saw a sequence number repeat or go backwards.
    pub seq_regressions: u64,
    /// Deliveries without a readable send time.
    pub unstamped: u64,
    /// Error events or replies.
    pub errors: u64,
    /// Subscribers whose stream ended before the run did.
    pub closed: usize,
    /// The first few reasons they ended.
    pub close_reasons: Vec<String>,
    /// The publisher's write failure, if any.
    pub publisher_failure: Option<String>,
    /// Publisher send time to subscriber read time.
    pub latency: Latency,
    /// Bytes the subscribers' sockets received, setup included.
    pub bytes_in: u64,
    /// Bytes the subscribers' sockets sent, setup included.
    pub bytes_out: u64,
    /// (bytes_in + bytes_out) / deliveries.
    pub bytes_per_delivery: Option<f64>,
    /// The broker's CPU, with `--broker-pid`.
    pub broker: Option<BrokerRow>,
    /// The benchmark's own CPU, percent of one core.
    pub tool_cpu_percent: f64,
    /// No loss, no gap or regression, no early close, no failure.
    pub ok: bool,
}

/// How many close reasons a row keeps.
const CLOSE_REASONS: usize = 5;

impl Row {
    /// Builds the row of a finished run.
    pub fn new(
        transport: Transport,
        rate: f64,
        args: &TransportsArgs,
        m: Measured,
        all: &Tally,
    ) -> Row {
        let expected = m.published * args.subscribers as u64;
        let lost = expected.saturating_sub(all.received);
        let per_delivery = |x: f64| (all.received > 0).then(|| x / all.received as f64);
        let broker = m.broker.map(|b| BrokerRow {
            pid: b.pid,
            cpu_s: b.cpu_s,
            cpu_percent: 100.0 * b.cpu_s / m.wall_s.max(1e-9),
            cpu_us_per_delivery: per_delivery(b.cpu_s * 1e6),
        });
        let ok = lost == 0
            && all.seq_gaps == 0
            && all.seq_regressions == 0
            && m.closes.is_empty()
            && m.publish_error.is_none()
            && m.published > 0;
        Row {
            bench: "transports",
            transport: transport.name(),
            target_rate: rate,
            publish_rate: m.published as f64 / m.publish_s.max(1e-9),
            subscribers: args.subscribers,
            payload_bytes: args.payload_size,
            setup_s: m.setup_s,
            publish_s: m.publish_s,
            published: m.published,
            deliveries: all.received,
            expected_deliveries: expected,
            lost,
            seq_gaps: all.seq_gaps,
            seq_regressions: all.seq_regressions,
            unstamped: all.unstamped,
            errors: all.errors,
            closed: m.closes.len(),
            close_reasons: m.closes.into_iter().take(CLOSE_REASONS).collect(),
            publisher_failure: m.publish_error,
            latency: Latency::from_histogram(&all.histogram),
            bytes_in: all.bytes_in,
            bytes_out: all.bytes_out,
            bytes_per_delivery: per_delivery((all.bytes_in + all.bytes_out) as f64),
            broker,
            tool_cpu_percent: 100.0 * (m.tool_cpu.user + m.tool_cpu.sys) / m.wall_s.max(1e-9),
            ok,
        }
    }

    /// Prints the row as one JSON line (best effort, like every report).
    pub fn print_json(&self) {
        if let Ok(line) = serde_json::to_string(self) {
            let _ = stdoutln!("{line}");
        }
    }

    /// The table cells of this row.
    fn cells(&self) -> [String; 11] {
        let opt = |v: Option<f64>, f: &dyn Fn(f64) -> String| v.map_or_else(|| "-".into(), f);
        let deliveries = self.deliveries.max(1) as f64;
        [
            self.transport.to_owned(),
            si(self.target_rate),
            si(self.deliveries as f64),
            if self.closed > 0 {
                format!("{} ({} closed)", self.lost, self.closed)
            } else {
                self.lost.to_string()
            },
            micros(self.latency.p50_us),
            micros(self.latency.p99_us),
            opt(self.bytes_per_delivery, &|b| format!("{b:.0}")),
            format!(
                "{:.0} / {:.0}",
                self.bytes_in as f64 / deliveries,
                self.bytes_out as f64 / deliveries
            ),
            opt(
                self.broker.as_ref().and_then(|b| b.cpu_us_per_delivery),
                &|us| format!("{us:.2} µs"),
            ),
            opt(self.broker.as_ref().map(|b| b.cpu_percent), &|p| {
                format!("{p:.0}%")
            }),
            format!("{:.0}%", self.tool_cpu_percent),
        ]
    }
}

/// Prints every row as one aligned table (best effort).
pub fn print_table(rows: &[Row]) {
    let Some(first) = rows.first() else {
        return;
    };
    let _ = stdoutln!(
        "transports: {} subscribers, {} payload, {:.1}s per run",
        first.subscribers,
        bytes(first.payload_bytes as f64),
        first.publish_s
    );
    let header = [
        "transport",
        "rate/s",
        "deliveries",
        "lost",
        "p50",
        "p99",
        "bytes/delivery",
        "in / out",
        "broker CPU/delivery",
        "broker CPU",
        "tool CPU",
    ];
    let cells: Vec<[String; 11]> = rows.iter().map(Row::cells).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .chain([header[c].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: &[&str]| {
        values
            .iter()
            .zip(&widths)
            .map(|(v, w)| format!("{v:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let _ = stdoutln!("{}", line(&header));
    for r in &cells {
        let values: Vec<&str> = r.iter().map(String::as_str).collect();
        let _ = stdoutln!("{}", line(&values));
    }
}
