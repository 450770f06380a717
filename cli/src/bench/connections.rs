//! `tickwire bench connections`: C idle WebSocket connections, each
//! subscribed to its own topic (`PREFIX.<n>`), opened with bounded
//! concurrency from several loopback source addresses. Reports the connect
//! rate and, with `--broker-pid`, the broker's RSS before, after and per
//! connection. The connections are held for `--hold` (answering the
//! broker's keepalive pings) and then closed with a close frame.

use crate::console::{stderrln, stdoutln};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use tickwire_broker::config::{parse_count, parse_duration};
use tickwire_protocol::topic::validate_topic;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::raw_client::{self, Conn, ConnectError, Target};
use super::report::{self, CpuTime, LoadCpu, ProcSample, si};
use super::walker::{Control, Walker};
use super::{CommonArgs, EXIT_CONNECT, EXIT_OK, resolve, usage};

/// Arguments of `tickwire bench connections`.
#[derive(Debug, Args)]
pub struct ConnectionsArgs {
    /// Connections to open, each subscribed to its own topic.
    #[arg(long, default_value = "1000", value_parser = parse_count, value_name = "C")]
    pub connections: usize,
    /// How long to hold the connections open once all are subscribed.
    #[arg(long, default_value = "3s", value_parser = parse_duration, value_name = "DURATION")]
    pub hold: Duration,
    /// Connection n subscribes to PREFIX.n.
    #[arg(long, default_value = "idle", value_name = "PREFIX")]
    pub topic_prefix: String,
    /// Every connection offers permessage-deflate
    /// (`client_no_context_takeover`); the broker must agree (`serve
    /// --compression on`), else the connection counts as failed.
    #[arg(long)]
    pub compression: bool,
    /// Options shared by every benchmark.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct ConnectionsReport {
    /// Always `connections`.
    pub bench: &'static str,
    /// Broker URL.
    pub url: String,
    /// Connections asked for.
    pub connections: usize,
    /// Connections opened and subscribed.
    pub opened: usize,
    /// Connections that failed to open.
    pub failed: usize,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Time to open them all, seconds.
    pub connect_s: f64,
    /// Connections opened (and subscribed) per second.
    pub connect_rate: f64,
    /// Source addresses used.
    pub source_addrs: u8,
    /// How long they were held, seconds.
    pub hold_s: f64,
    /// Connections the broker closed (or dropped) while held.
    pub closed_during_hold: u64,
    /// The broker's RSS before connecting, bytes.
    pub broker_rss_before_bytes: Option<u64>,
    /// The broker's RSS with every connection open, bytes.
    pub broker_rss_after_bytes: Option<u64>,
    /// (after − before) / opened, bytes.
    pub broker_rss_per_connection_bytes: Option<f64>,
    /// The load tool's CPU use over connect + hold.
    pub load_cpu: LoadCpu,
    /// Every connection opened and none was closed while held.
    pub ok: bool,
}

/// Runs the idle-connections benchmark; returns the exit code.
pub fn run(args: ConnectionsArgs) -> u8 {
    if let Err(e) = validate_topic(&format!("{}.0", args.topic_prefix)) {
        return usage(&format!("--topic-prefix `{}`: {e}", args.topic_prefix));
    }
    if let Err(e) = super::check_common(&args.common) {
        return usage(&e);
    }
    if args.connections > super::MAX_CONNECTIONS {
        return usage(&format!("--connections is over {}", super::MAX_CONNECTIONS));
    }
    if args.hold > super::MAX_DURATION {
        return usage(&format!("--hold is over {:?}", super::MAX_DURATION));
    }
    let target = match resolve(&args.common.broker.url) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let rt = match super::small_runtime() {
        Ok(rt) => rt,
        Err(e) => {
            stderrln!("tickwire bench: cannot start a runtime: {e}");
            return EXIT_CONNECT;
        }
    };
    let report = rt.block_on(run_async(&args, target));
    drop(rt);
    print(&report, args.common.json);
    if report.ok { EXIT_OK } else { EXIT_CONNECT }
}

async fn run_async(args: &ConnectionsArgs, target: Target) -> ConnectionsReport {
    let common = &args.common;
    let target = Arc::new(target);
    let pid = common.broker_pid;
    let rss_before = pid.and_then(ProcSample::read).map(|s| s.rss_bytes);
    let cpu_before = CpuTime::now();
    let t0 = Instant::now();
    let deadline = t0 + common.duration;
    let holding = CancellationToken::new();
    let closed = Arc::new(AtomicU64::new(0));
    let mut connecting = JoinSet::new();
    let mut holders = JoinSet::new();
    let mut next = 0;
    let mut opened = 0;
    let mut failed = 0;
    let mut first_error: Option<ConnectError> = None;
    let mut progress = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    if !common.quiet {
        stderrln!(
            "connections: opening {} connections to {} ({} at a time, {} source address(es))",
            args.connections,
            target.url,
            common.connect.connect_concurrency,
            common.connect.source_addrs
        );
    }
    loop {
        // Stop starting new connections after the first failure or the
        // deadline; those not started count as failed.
        let stopping = first_error.is_some() || Instant::now() >= deadline;
        while !stopping
            && next < args.connections
            && connecting.len() < common.connect.connect_concurrency
        {
            let n = next;
            next += 1;
            let target = target.clone();
            let token = common.broker.token.clone();
            let topic = format!("{}.{n}", args.topic_prefix);
            let source = target.source_for(n, common.connect.source_addrs);
            let limit = common.connect.connect_timeout;
            let deflate = args.compression;
            connecting.spawn(async move {
                let mut conn =
                    raw_client::open(&target, source, token.as_deref(), deflate, limit).await?;
                tokio::time::timeout(limit, raw_client::subscribe(&mut conn, 1, &topic))
                    .await
                    .map_err(|_| ConnectError::Timeout(target.addr))??;
                Ok::<Conn, ConnectError>(conn)
            });
        }
        if connecting.is_empty() {
            break;
        }
        tokio::select! {
            joined = connecting.join_next() => match joined {
                Some(Ok(Ok(conn))) => {
                    opened += 1;
                    holders.spawn(hold(conn, holding.clone(), closed.clone()));
                }
                Some(Ok(Err(e))) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
                Some(Err(e)) => {
                    failed += 1;
                    first_error.get_or_insert(ConnectError::Closed(e.to_string()));
                }
                None => {}
            },
            _ = progress.tick() => if !common.quiet {
                let secs = t0.elapsed().as_secs_f64();
                stderrln!(
                    "connections: {secs:.0}s open {opened} ({}/s) failed {failed}",
                    si(opened as f64 / secs)
                );
            },
        }
    }
    failed += args.connections - next;
    let connect_s = t0.elapsed().as_secs_f64();
    if !common.quiet {
        stderrln!(
            "connections: {opened} open in {connect_s:.2}s; holding for {:?}",
            args.hold
        );
    }
    let hold_started = Instant::now();
    tokio::time::sleep(args.hold).await;
    let rss_after = pid.and_then(ProcSample::read).map(|s| s.rss_bytes);
    let hold_s = hold_started.elapsed().as_secs_f64();
    let closed_during_hold = closed.load(Relaxed);
    holding.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while holders.join_next().await.is_some() {}
    })
    .await;
    holders.abort_all();
    let cpu = CpuTime::now().since(cpu_before);
    let wall = t0.elapsed();
    let per_connection = match (rss_before, rss_after) {
        (Some(a), Some(b)) if opened > 0 => Some((b as f64 - a as f64) / opened as f64),
        _ => None,
    };
    ConnectionsReport {
        bench: "connections",
        url: target.url.clone(),
        connections: args.connections,
        opened,
        failed,
        first_error: first_error.map(|e| e.to_string()),
        connect_s,
        connect_rate: opened as f64 / connect_s.max(1e-9),
        source_addrs: common.connect.source_addrs,
        hold_s,
        closed_during_hold,
        broker_rss_before_bytes: rss_before,
        broker_rss_after_bytes: rss_after,
        broker_rss_per_connection_bytes: per_connection,
        load_cpu: LoadCpu::new(cpu, wall, 0),
        ok: failed == 0 && closed_during_hold == 0,
    }
}

/// Holds one connection: answers pings, notes a close by the broker, and
/// closes with 1000 when the hold ends.
async fn hold(conn: Conn, holding: CancellationToken, closed: Arc<AtomicU64>) {
    let Conn {
        mut stream,
        leftover,
        deflate,
    } = conn;
    let mut buf = vec![0u8; 512.max(leftover.len())];
    buf[..leftover.len()].copy_from_slice(&leftover);
    let mut filled = leftover.len();
    let mut walker = Walker::with_deflate(deflate);
    while let Ok(walked) = walker.walk(&buf[..filled], |_| {}) {
        buf.copy_within(walked.consumed..filled, 0);
        filled -= walked.consumed;
        match walked.control {
            Some(Control::Ping(p)) => {
                if stream.write_all(&raw_client::pong_frame(&p)).await.is_err() {
                    break;
                }
                continue;
            }
            Some(Control::Close(_)) => break,
            // An idle connection reads nothing it needs from a message.
            Some(Control::Compressed(_)) => continue,
            None => {}
        }
        if walked.need > buf.len() || filled == buf.len() {
            let len = walked.need.max(buf.len() * 2);
            buf.resize(len, 0);
        }
        tokio::select! {
            _ = holding.cancelled() => {
                let _ = stream.write_all(&raw_client::close_frame()).await;
                // Wait briefly for the broker's close reply or EOF.
                let mut sink = [0u8; 256];
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
                return;
            }
            read = stream.read(&mut buf[filled..]) => match read {
                Ok(n) if n > 0 => filled += n,
                _ => break,
            },
        }
    }
    if !holding.is_cancelled() {
        closed.fetch_add(1, Relaxed);
    }
}

fn print(r: &ConnectionsReport, json: bool) {
    if json {
        match serde_json::to_string(r) {
            Ok(s) => {
                let _ = stdoutln!("{s}");
            }
            Err(e) => stderrln!("tickwire bench: cannot encode the report: {e}"),
        }
        return;
    }
    let mut rows = vec![
        (
            "connections",
            format!(
                "{} opened and subscribed, {} failed (asked for {})",
                r.opened, r.failed, r.connections
            ),
        ),
        (
            "connect rate",
            format!(
                "{} connections/s ({:.2} s, {} source address(es))",
                si(r.connect_rate),
                r.connect_s,
                r.source_addrs
            ),
        ),
        (
            "hold",
            format!(
                "{:.2} s, {} closed by the broker meanwhile",
                r.hold_s, r.closed_during_hold
            ),
        ),
    ];
    if let (Some(a), Some(b), Some(per)) = (
        r.broker_rss_before_bytes,
        r.broker_rss_after_bytes,
        r.broker_rss_per_connection_bytes,
    ) {
        rows.push((
            "broker RSS",
            format!(
                "{} → {} = {} per connection",
                report::bytes(a as f64),
                report::bytes(b as f64),
                report::bytes(per)
            ),
        ));
    }
    rows.push((
        "load tool CPU",
        format!(
            "{:.2} s user + {:.2} s sys",
            r.load_cpu.user_s, r.load_cpu.sys_s
        ),
    ));
    if let Some(e) = &r.first_error {
        rows.push(("first error", e.clone()));
    }
    rows.push((
        "result",
        if r.ok {
            "OK".to_owned()
        } else {
            "FAILED".to_owned()
        },
    ));
    report::print_table(&format!("tickwire bench connections — {}", r.url), &rows);
}
