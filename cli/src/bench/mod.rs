//! `tickwire bench`: a load generator that measures a running broker.
//!
//! * `fanout`: one publisher, S subscribers on one topic.
//! * `topics`: T topics × K subscribers, M publishers.
//! * `connections`: C idle subscribed connections; connect rate and the
//!   broker's memory per connection.
//! * `transports`: the same fan-out over WebSocket, SSE and long-poll at
//!   fixed rates: latency, bytes on the wire and broker CPU per delivery.
//!
//! The load side is built not to be the bottleneck: subscribers are raw
//! sockets read in big chunks whose frames are walked in place
//! ([`walker`]), with no allocation and no system call per message; all
//! connections run on `--threads` single-threaded runtimes (default 1), so
//! the tool's CPU use is confined (pin it with `taskset`) and reported.
//!
//! Every run is bounded in time (`--duration`, `--drain`, `--hold`, setup
//! timeouts) and in count. Exit codes: 0 ok, 1 messages lost, duplicated
//! or out of order, or a slow-consumer close (4001), 2 usage, 3 connection
//! failure.
//!
//! `fanout` and `topics` can spread their subscribers over several brokers
//! (`--subscriber-url`, repeatable) and publish on others
//! (`--publisher-url`): the nodes of a cluster (`serve --cluster`).

mod capacity;
mod connections;
mod fanout;
mod inflate;
mod load;
mod payload;
mod raw_client;
mod report;
mod topics;
mod transports;
mod walker;
#[cfg(test)]
mod walker_tests;

use crate::console::stderrln;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use tickwire_broker::config::{parse_count, parse_duration, parse_size};

/// Exit code: every message arrived once and in order, no slow-consumer
/// close.
const EXIT_OK: u8 = 0;
/// Exit code: messages were lost, duplicated or out of order, or a
/// subscriber was closed as slow.
const EXIT_LOSS: u8 = 1;
/// Exit code: invalid arguments.
const EXIT_USAGE: u8 = 2;
/// Exit code: a connection could not be set up or failed during the run.
const EXIT_CONNECT: u8 = 3;

/// Arguments of `tickwire bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    kind: BenchKind,
}

#[derive(Debug, Subcommand)]
enum BenchKind {
    /// One publisher, S subscribers on one topic: throughput and latency.
    ///
    /// Example: tickwire bench fanout --subscribers 1000 --payload 128 --duration 10s
    Fanout(fanout::FanoutArgs),
    /// T topics × K subscribers each, M publishers spread round-robin.
    ///
    /// Example: tickwire bench topics --topics 1000 --subscribers-per-topic 2 --publishers 4
    Topics(topics::TopicsArgs),
    /// C idle connections, each subscribed to its own topic: connect rate and
    /// broker memory per connection.
    ///
    /// Example: tickwire bench connections --connections 10000 --broker-pid $(pidof tickwire)
    Connections(connections::ConnectionsArgs),
    /// Calibrate the load tool: receive from a built-in sender (no broker)
    /// and report the messages/s one core can take.
    ///
    /// Example: taskset -c 1 tickwire bench recv-capacity --sender-cpu 0
    RecvCapacity(capacity::CapacityArgs),
    /// The same 1 → N fan-out over WebSocket, SSE and long-poll at fixed
    /// rates: latency, bytes on the wire and broker CPU per delivery.
    ///
    /// Example: tickwire bench transports --subscribers 100 --rates 100,1000,5000 --broker-pid $(pidof tickwire)
    Transports(transports::TransportsArgs),
}

/// Where the broker is and how to authenticate (every benchmark).
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Broker WebSocket URL (ws:// only; `bench transports` also takes
    /// http://HOST:PORT).
    #[arg(
        long,
        env = "TICKWIRE_URL",
        default_value = "ws://127.0.0.1:8080/ws",
        value_name = "URL"
    )]
    pub url: String,
    /// Sent as `Authorization: Bearer TOKEN` by every connection (WebSocket
    /// upgrade or HTTP request).
    #[arg(
        long,
        env = "TICKWIRE_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
}

/// How connections are opened (every benchmark).
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Spread connections over this many source addresses 127.0.0.1 …
    /// 127.0.0.N (when the broker is on 127.0.0.1) to avoid running out of
    /// ephemeral ports.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u8).range(1..=254), value_name = "N")]
    pub source_addrs: u8,
    /// Most connections being set up at once.
    #[arg(long, default_value = "64", value_parser = parse_count, value_name = "N")]
    pub connect_concurrency: usize,
    /// Time allowed to open one connection (TCP, WebSocket upgrade or HTTP
    /// request, until subscribed).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub connect_timeout: Duration,
}

/// Flags shared by every benchmark.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// The broker's URL and token.
    #[command(flatten)]
    pub broker: BrokerArgs,
    /// Print one JSON object per run to stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// How long to publish (fanout, topics) or the longest the connect phase
    /// may take (connections).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub duration: Duration,
    /// After publishing stops, wait up to this long for in-flight messages
    /// before counting the missing ones as lost.
    #[arg(long, default_value = "2s", value_parser = parse_duration, value_name = "DURATION")]
    pub drain: Duration,
    /// How connections are opened.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// The broker's process id: report its CPU use and memory (RSS) from
    /// /proc (same machine only).
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// With each progress line, print how far behind the publishers the
    /// subscribers are (distribution over subscribers, in messages).
    #[arg(long, short)]
    pub verbose: bool,
}

/// Flags of the publish/subscribe benchmarks (fanout, topics).
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Payload size per message (at least 8: the first 8 bytes carry the
    /// send time), e.g. 128 or 1KiB.
    #[arg(long, default_value = "128", value_parser = parse_size, value_name = "SIZE")]
    pub payload: usize,
    /// What follows the send time in each payload: `filler` (counting
    /// bytes; compresses far better than real data) or `json` (JSON
    /// market quotes, for realistic `--compression` figures).
    #[arg(long, value_enum, default_value_t = payload::PayloadKind::Filler, value_name = "KIND")]
    pub payload_kind: payload::PayloadKind,
    /// Publish at this total rate (messages/s) instead of as fast as flow
    /// control allows.
    #[arg(long, value_name = "MSGS_PER_SEC")]
    pub rate: Option<f64>,
    /// At max rate, the most messages in flight (published but not yet
    /// received by the slowest subscriber), in total over all topics: each
    /// topic gets an equal share, at least 1. Ignored with --rate.
    #[arg(long, default_value = "4096", value_parser = parse_count, value_name = "N")]
    pub max_in_flight: usize,
    /// Most messages a publisher writes per system call.
    #[arg(long, default_value = "256", value_parser = parse_count, value_name = "N")]
    pub batch: usize,
    /// Single-threaded runtimes (OS threads) running the connections.
    #[arg(long, default_value = "1", value_parser = parse_count, value_name = "N")]
    pub threads: usize,
    /// Receive buffer per subscriber connection.
    #[arg(long, default_value = "256KiB", value_parser = parse_size, value_name = "SIZE")]
    pub recv_buffer: usize,
    /// Open subscriber connections to this broker instead of --url. Give it
    /// several times to spread the subscribers round-robin over several
    /// brokers (the nodes of a cluster): subscriber i goes to the (i mod
    /// n)-th URL given. Default: --url.
    #[arg(long = "subscriber-url", value_name = "URL")]
    pub subscriber_urls: Vec<String>,
    /// Open publisher connections to this broker instead of --url;
    /// repeatable, round-robin like --subscriber-url. Default: --url.
    #[arg(long = "publisher-url", value_name = "URL")]
    pub publisher_urls: Vec<String>,
    /// Subscribers offer permessage-deflate (`client_no_context_takeover`)
    /// and inflate the compressed messages; the broker must agree (`serve
    /// --compression on`), else the run fails like any setup error.
    /// Publishers send uncompressed.
    #[arg(long)]
    pub compression: bool,
}

/// Runs `tickwire bench` and returns the exit code.
pub fn run(args: BenchArgs) -> ExitCode {
    report::raise_fd_limit();
    let code = match args.kind {
        BenchKind::Fanout(a) => fanout::run(a),
        BenchKind::Topics(a) => topics::run(a),
        BenchKind::Connections(a) => connections::run(a),
        BenchKind::RecvCapacity(a) => capacity::run(a),
        BenchKind::Transports(a) => transports::run(a),
    };
    ExitCode::from(code)
}

/// Prints a usage error and returns [`EXIT_USAGE`].
fn usage(message: &str) -> u8 {
    stderrln!("tickwire bench: {message}");
    EXIT_USAGE
}

/// A single-threaded runtime for setup and small tasks.
fn small_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Resolves the URL; a bad URL is a usage error.
fn resolve(url: &str) -> Result<raw_client::Target, u8> {
    resolve_all(&[url])?
        .pop()
        .ok_or_else(|| usage("no broker URL"))
}

/// Resolves every URL, in order; a bad URL is a usage error.
fn resolve_all(urls: &[&str]) -> Result<Vec<raw_client::Target>, u8> {
    let rt = small_runtime().map_err(|e| {
        stderrln!("tickwire bench: cannot start a runtime: {e}");
        EXIT_CONNECT
    })?;
    rt.block_on(async {
        let mut targets = Vec::with_capacity(urls.len());
        for url in urls {
            targets.push(raw_client::Target::resolve(url).await?);
        }
        Ok(targets)
    })
    .map_err(|e: String| usage(&e))
}

/// Most URLs one of `--subscriber-url` and `--publisher-url` may list.
const MAX_URLS: usize = 256;

/// Resolves where the subscriber and publisher connections of `fanout` and
/// `topics` go (`--subscriber-url`, `--publisher-url`, default `--url`).
fn resolve_nodes(load: &LoadArgs, common: &CommonArgs) -> Result<load::Nodes, u8> {
    let list = |given: &[String]| -> Result<Vec<raw_client::Target>, u8> {
        if given.len() > MAX_URLS {
            return Err(usage(&format!(
                "at most {MAX_URLS} --subscriber-url and {MAX_URLS} --publisher-url"
            )));
        }
        let urls: Vec<&str> = if given.is_empty() {
            vec![&common.broker.url]
        } else {
            given.iter().map(String::as_str).collect()
        };
        resolve_all(&urls)
    };
    let subscribers = list(&load.subscriber_urls)?;
    let publishers = list(&load.publisher_urls)?;
    load::Nodes::new(common.broker.url.clone(), subscribers, publishers)
        .ok_or_else(|| usage("no broker URL"))
}

/// Most connections one run may open.
const MAX_CONNECTIONS: usize = 1_000_000;
/// Longest `--duration`, `--drain` or `--hold`.
const MAX_DURATION: Duration = Duration::from_secs(3600);

/// Checks the shared flags.
fn check_common(c: &CommonArgs) -> Result<(), String> {
    if c.duration.is_zero() || c.duration > MAX_DURATION {
        return Err(format!(
            "--duration must be between 1ms and {MAX_DURATION:?}"
        ));
    }
    if c.drain > MAX_DURATION {
        return Err(format!("--drain must be at most {MAX_DURATION:?}"));
    }
    if c.connect.connect_timeout.is_zero() {
        return Err("--connect-timeout must be positive".into());
    }
    Ok(())
}

/// Checks the flags of `fanout` and `topics` (and the shared ones).
fn check_load_args(l: &LoadArgs, c: &CommonArgs) -> Result<(), String> {
    check_common(c)?;
    if l.payload < 8 {
        return Err(format!(
            "--payload must be at least 8 bytes (the first 8 carry the send time), not {}",
            l.payload
        ));
    }
    if l.payload > 64 << 20 {
        return Err("--payload must be at most 64MiB".into());
    }
    if let Some(rate) = l.rate {
        if !(rate.is_finite() && rate > 0.0 && rate <= 1e9) {
            return Err(format!(
                "--rate must be a positive number of messages per second up to 1e9, not {rate}"
            ));
        }
    }
    if l.threads > 64 {
        return Err("--threads must be at most 64".into());
    }
    if l.recv_buffer < 4096 {
        return Err("--recv-buffer must be at least 4KiB".into());
    }
    Ok(())
}
