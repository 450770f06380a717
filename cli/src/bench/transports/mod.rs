//! `tickwire bench transports`: the same 1 → N fan-out at fixed rates over
//! WebSocket, SSE (`GET /v1/sse`) and long-poll (`GET /v1/poll`), one run per
//! transport × rate, each reporting latency, bytes on the wire per delivery
//! and the broker's CPU per delivery (docs/benchmarks.md, "Transports").
//!
//! A run opens N subscribers of one transport on a topic of its own, then
//! one WebSocket publisher sends a stamped payload ([`payload`]) at the rate
//! for `--duration`, and the run waits up to `--drain` for every delivery.
//! Each subscriber checks order and completeness by the delivery's `seq`.
//!
//! * Latency: the subscriber's read time minus the send time in the payload
//!   (same process, same monotonic clock).
//! * Bytes per delivery: every byte the subscribers' sockets received and
//!   sent over their whole life (HTTP request and response heads, the
//!   WebSocket upgrade, SUBSCRIBE, SSE framing, every poll request), read
//!   from the kernel (`TCP_INFO`), divided by the deliveries. The
//!   publisher's bytes are the same for every transport and not included.
//! * Broker CPU per delivery: with `--broker-pid`, the broker's user +
//!   system CPU time (`/proc/PID/stat`) from the start of publishing to the
//!   end of the drain, divided by the deliveries. The benchmark does not
//!   start a broker: start it yourself, pinned to its own core.
//!
//! * [`crate::http1`] (shared with the server API commands): the HTTP/1.1
//!   request, response head and body framing.
//! * `json`: the delivery JSON and events of SSE and long-poll.
//! * `payload`: the stamped payload and the clock.
//! * `ws`, `sse`, `poll`: one subscriber client per transport.
//! * `publish`: the fixed-rate WebSocket publisher.
//! * `run`: one transport × rate run.
//! * `summary`: the result rows, printed as a table or JSON lines.
//! * `tally`: what each subscriber counts.

mod json;
mod payload;
mod poll;
mod publish;
mod run;
mod sse;
mod summary;
mod tally;
#[cfg(test)]
mod tests;
mod ws;

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tickwire_broker::config::{parse_count, parse_duration, parse_size};
use tickwire_protocol::handshake::ResponseHead;
use tickwire_protocol::topic::validate_topic;

use super::raw_client::{ConnectError, Target};
use super::{
    BrokerArgs, ConnectArgs, EXIT_CONNECT, EXIT_LOSS, EXIT_OK, MAX_DURATION, resolve, usage,
};

/// A subscriber transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// WebSocket (`/ws`), MessagePack frames.
    Ws,
    /// Server-Sent Events (`GET /v1/sse`).
    Sse,
    /// Long-poll (`GET /v1/poll`).
    Poll,
}

impl Transport {
    /// The name used in flags, topics and reports.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Sse => "sse",
            Transport::Poll => "poll",
        }
    }
}

/// Arguments of `tickwire bench transports`.
#[derive(Debug, Args)]
pub struct TransportsArgs {
    /// The broker: its WebSocket URL (ws://HOST:PORT/ws) or
    /// http://HOST:PORT; SSE and long-poll use /v1/sse and /v1/poll on the
    /// same host and port. And the token every connection sends.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// The transports to measure, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "ws,sse,poll")]
    pub transports: Vec<Transport>,
    /// Subscribers per run, all on the run's topic.
    #[arg(long, default_value = "100", value_parser = parse_count, value_name = "N")]
    pub subscribers: usize,
    /// Publish rates to measure (messages/s), one run each per transport.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,1000,5000",
        value_name = "RATES"
    )]
    pub rates: Vec<f64>,
    /// How long each run publishes.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// After publishing stops, wait up to this long for every delivery
    /// before counting the missing ones as lost.
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub drain: Duration,
    /// Payload size per message (at least 16): a MessagePack map that maps
    /// to JSON, so SSE and long-poll carry it as JSON, not base64.
    #[arg(long = "payload-size", alias = "payload", default_value = "128", value_parser = parse_size, value_name = "SIZE")]
    pub payload_size: usize,
    /// Topic prefix: each run publishes on PREFIX.PID.TRANSPORT.RUN.
    #[arg(long, default_value = "bench.transports", value_name = "TOPIC")]
    pub topic: String,
    /// The long-poll `timeout` parameter: how long the broker holds a poll
    /// with nothing to send, seconds (0 ..= 60).
    #[arg(long, default_value = "25", value_parser = clap::value_parser!(u32).range(0..=60), value_name = "SECONDS")]
    pub poll_timeout: u32,
    /// The broker's process id: report its CPU per delivery from /proc
    /// (same machine only).
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,
    /// Runtime threads running the connections.
    #[arg(long, default_value = "1", value_parser = parse_count, value_name = "N")]
    pub threads: usize,
    /// How connections are opened.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Print one JSON object per run (JSON lines) instead of the table.
    #[arg(long)]
    pub json: bool,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Most subscribers one run may open.
const MAX_SUBSCRIBERS: usize = 100_000;
/// Most rates one invocation may list.
const MAX_RATES: usize = 32;

/// Checks the flags.
fn check(a: &TransportsArgs) -> Result<(), String> {
    if a.transports.is_empty() {
        return Err("--transports lists none".into());
    }
    if a.rates.is_empty() || a.rates.len() > MAX_RATES {
        return Err(format!("--rates must list 1 to {MAX_RATES} rates"));
    }
    if let Some(bad) = a
        .rates
        .iter()
        .find(|r| !(r.is_finite() && **r > 0.0 && **r <= 1e7))
    {
        return Err(format!(
            "--rates: {bad} is not a rate between 0 and 1e7 messages/s"
        ));
    }
    if let Some(low) = a.rates.iter().find(|r| *r * a.duration.as_secs_f64() < 1.0) {
        return Err(format!(
            "--rates: {low} messages/s for --duration {:?} publishes nothing",
            a.duration
        ));
    }
    if a.subscribers == 0 || a.subscribers > MAX_SUBSCRIBERS {
        return Err(format!("--subscribers must be 1 to {MAX_SUBSCRIBERS}"));
    }
    if a.duration.is_zero() || a.duration > MAX_DURATION || a.drain > MAX_DURATION {
        return Err(format!(
            "--duration must be between 1ms and {MAX_DURATION:?}, --drain at most that"
        ));
    }
    if a.payload_size < payload::MIN_PAYLOAD || a.payload_size > 16 << 20 {
        return Err(format!(
            "--payload-size must be {} bytes to 16MiB, not {}",
            payload::MIN_PAYLOAD,
            a.payload_size
        ));
    }
    if a.threads > 64 {
        return Err("--threads must be at most 64".into());
    }
    if a.connect.connect_timeout.is_zero() {
        return Err("--connect-timeout must be positive".into());
    }
    if let Err(e) = validate_topic(&a.topic) {
        return Err(format!("--topic `{}`: {e}", a.topic));
    }
    Ok(())
}

/// Runs every transport × rate and prints the results; returns the exit
/// code.
pub fn run(args: TransportsArgs) -> u8 {
    if let Err(e) = check(&args) {
        return usage(&e);
    }
    let url = match args.broker.url.strip_prefix("http://") {
        Some(rest) => format!("ws://{}/ws", rest.trim_end_matches('/')),
        None => args.broker.url.clone(),
    };
    let target = match resolve(&url) {
        Ok(target) => target,
        Err(code) => return code,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            crate::console::stderrln!("tickwire bench: cannot start a runtime: {e}");
            return EXIT_CONNECT;
        }
    };
    let mut rows = Vec::new();
    let mut code = EXIT_OK;
    'runs: for &transport in &args.transports {
        for (i, &rate) in args.rates.iter().enumerate() {
            let topic = format!(
                "{}.{}.{}.{i}",
                args.topic,
                std::process::id(),
                transport.name()
            );
            match rt.block_on(run::run(&args, &target, transport, rate, topic)) {
                Ok(row) => {
                    if args.json {
                        row.print_json();
                    }
                    if !row.ok {
                        code = EXIT_LOSS;
                    }
                    rows.push(row);
                }
                Err(e) => {
                    crate::console::stderrln!("tickwire bench: {}: {e}", transport.name());
                    code = EXIT_CONNECT;
                    break 'runs;
                }
            }
        }
    }
    if !args.json {
        summary::print_table(&rows);
    }
    code
}

/// What a subscriber needs to connect.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    /// The broker.
    pub target: &'a Target,
    /// The local address to connect from.
    pub source: Option<IpAddr>,
    /// `--token`.
    pub token: Option<&'a str>,
    /// The run's topic.
    pub topic: &'a str,
    /// `--connect-timeout`.
    pub timeout: Duration,
}

/// Runs `setup_step` within the setup timeout.
async fn with_deadline<T>(
    setup: &Setup<'_>,
    setup_step: impl Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    tokio::time::timeout(setup.timeout, setup_step)
        .await
        .map_err(|_| ConnectError::Timeout(setup.target.addr))?
}

/// The error for a non-200 answer to an SSE or poll request.
fn refused(what: &str, head: &ResponseHead, body: &[u8]) -> ConnectError {
    let hint = match head.status {
        404 => " (does this broker have the SSE and long-poll endpoints?)",
        401 | 403 => " (check --token)",
        _ => "",
    };
    ConnectError::Subscribe(format!(
        "{what} request refused with HTTP {}{hint}: {}",
        head.status,
        String::from_utf8_lossy(&body[..body.len().min(500)]).trim()
    ))
}
