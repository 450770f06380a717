//! The publish/subscribe load engine behind `fanout` and `topics`.
//!
//! Layout: `--threads` OS threads, each a single-threaded tokio runtime with
//! a `LocalSet`, own a share of the subscriber and publisher connections
//! (round-robin). The main thread only orchestrates: it waits for setup,
//! starts the publishers, prints progress, stops publishing after
//! `--duration`, waits for the drain and collects the results. Threads share
//! nothing but atomic counters.
//!
//! Per message, a subscriber does only what [`Walker::walk`] does plus one
//! histogram record; per read it takes one clock reading (every message in
//! one read arrived at the same time) and stores its counters.
//!
//! Flow control at max rate: before each batch a publisher checks, per
//! topic, `published − min(received by the topic's live subscribers)`
//! against `--max-in-flight`, so the publisher cannot simply overrun the
//! broker's queue budgets; the measured rate is the rate at which the slowest
//! subscriber actually receives. With `--rate` there is no window: the
//! publisher sends what is due every millisecond and reports if it fell
//! behind.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::task::{JoinSet, LocalSet};
use tokio_util::sync::CancellationToken;

use super::raw_client::{self, Conn, ConnectError, PublishTemplate, Target};
use super::report::{self, BrokerUsage, CpuTime, Latency, LoadCpu, ProcSample, si};
use super::walker::{Control, Walker};
use super::{CommonArgs, EXIT_CONNECT, EXIT_LOSS, EXIT_OK, LoadArgs};

/// `close_code` value: the connection is open.
const OPEN: u32 = 0;
/// `close_code` value: EOF without a close frame.
const EOF: u32 = 100_000;
/// `close_code` value: an I/O or framing error.
const FAILED: u32 = 100_001;
/// The slow-consumer close code.
const SLOW_CONSUMER: u32 = 4001;

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// `fanout` or `topics`, for messages and the report.
    pub bench: &'static str,
    /// Topic names.
    pub topics: Vec<String>,
    /// Subscriber connections per topic.
    pub subscribers_per_topic: usize,
    /// Publisher connections.
    pub publishers: usize,
}

/// The result of one run, printed as a table or JSON.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// `fanout` or `topics`.
    pub bench: &'static str,
    /// Broker URL.
    pub url: String,
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
    /// expected − received after the drain.
    pub lost: u64,
    /// Whether every expected message arrived within the drain time.
    pub drained: bool,
    /// Sequence numbers skipped, as seen by subscribers.
    pub seq_gaps: u64,
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
    /// Zero loss, no slow-consumer close, no failure.
    pub ok: bool,
}

/// The counters one subscriber publishes for the other threads.
#[derive(Debug, Default)]
pub(super) struct SubShared {
    /// `MESSAGE` frames received.
    pub(super) received: AtomicU64,
    seq_gaps: AtomicU64,
    errors: AtomicU64,
    close_code: AtomicU32,
}

#[derive(Debug)]
struct TopicShared {
    name: String,
    published: AtomicU64,
}

#[derive(Debug, Default)]
struct PubShared {
    sent: AtomicU64,
    max_lag_msgs: AtomicU64,
    errors: AtomicU64,
    close_code: AtomicU32,
    done: AtomicBool,
    failure: Mutex<Option<String>>,
}

/// Everything the threads share.
struct Ctx {
    plan: LoadPlan,
    common: CommonArgs,
    load: LoadArgs,
    target: Target,
    subs: Vec<SubShared>,
    topics: Vec<TopicShared>,
    pubs: Vec<PubShared>,
    start: CancellationToken,
    stop: AtomicBool,
    finish: CancellationToken,
}

impl Ctx {
    fn subscriber_count(&self) -> usize {
        self.subs.len()
    }

    fn topic_of(&self, sub: usize) -> usize {
        sub / self.plan.subscribers_per_topic
    }

    /// The topics publisher `p` publishes to: every M-th topic, or (with
    /// more publishers than topics) one shared topic.
    fn publisher_topics(&self, p: usize) -> Vec<usize> {
        let t = self.topics.len();
        let m = self.plan.publishers;
        let mine: Vec<usize> = (p..t).step_by(m).collect();
        if mine.is_empty() { vec![p % t] } else { mine }
    }

    /// The received count of the slowest live subscriber of topic `t`;
    /// `None` when none is live.
    fn min_received(&self, t: usize) -> Option<u64> {
        let k = self.plan.subscribers_per_topic;
        self.subs[t * k..(t + 1) * k]
            .iter()
            .filter(|s| s.close_code.load(Relaxed) == OPEN)
            .map(|s| s.received.load(Relaxed))
            .min()
    }

    fn totals(&self) -> (u64, u64) {
        let k = self.plan.subscribers_per_topic as u64;
        let expected = self
            .topics
            .iter()
            .map(|t| t.published.load(Relaxed) * k)
            .sum();
        let received = self.subs.iter().map(|s| s.received.load(Relaxed)).sum();
        (expected, received)
    }

    fn live_subscribers(&self) -> usize {
        self.subs
            .iter()
            .filter(|s| s.close_code.load(Relaxed) == OPEN)
            .count()
    }
}

/// Nanoseconds since the Unix epoch.
pub(super) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Runs the plan and prints the report; returns the exit code.
pub fn run(plan: LoadPlan, common: CommonArgs, load: LoadArgs, target: Target) -> u8 {
    let subscribers = plan.topics.len() * plan.subscribers_per_topic;
    let threads = load.threads.min(subscribers + plan.publishers).max(1);
    let ctx = Arc::new(Ctx {
        subs: (0..subscribers).map(|_| SubShared::default()).collect(),
        topics: plan
            .topics
            .iter()
            .map(|name| TopicShared {
                name: name.clone(),
                published: AtomicU64::new(0),
            })
            .collect(),
        pubs: (0..plan.publishers).map(|_| PubShared::default()).collect(),
        plan,
        common,
        load: LoadArgs { threads, ..load },
        target,
        start: CancellationToken::new(),
        stop: AtomicBool::new(false),
        finish: CancellationToken::new(),
    });
    let bench = ctx.plan.bench;
    let quiet = ctx.common.quiet;

    // Setup: every thread opens its connections and reports.
    let setup_started = Instant::now();
    let (setup_tx, setup_rx) = mpsc::channel();
    let mut workers = Vec::with_capacity(threads);
    for w in 0..threads {
        let worker_ctx = ctx.clone();
        let tx = setup_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("bench-{w}"))
            .spawn(move || worker(w, &worker_ctx, tx));
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(e) => {
                eprintln!("tickwire bench: cannot start a thread: {e}");
                ctx.finish.cancel();
                join(workers);
                return EXIT_CONNECT;
            }
        }
    }
    drop(setup_tx);
    if !quiet {
        eprintln!(
            "{bench}: opening {subscribers} subscriber and {} publisher connections to {}",
            ctx.plan.publishers, ctx.target.url
        );
    }
    let mut failure = None;
    for _ in 0..threads {
        match setup_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                failure.get_or_insert(e);
                // One failure is enough: stop the other threads' setup.
                ctx.finish.cancel();
            }
            Err(_) => {
                failure.get_or_insert(ConnectError::Closed("a load thread died".into()));
                ctx.finish.cancel();
            }
        }
    }
    if let Some(e) = failure {
        ctx.finish.cancel();
        join(workers);
        eprintln!("tickwire bench: {e}");
        return EXIT_CONNECT;
    }
    let setup_s = setup_started.elapsed().as_secs_f64();
    if !quiet {
        eprintln!(
            "{bench}: connected in {setup_s:.2}s; publishing for {:?}",
            ctx.common.duration
        );
    }

    // Measure.
    let broker_before = ctx.common.broker_pid.and_then(ProcSample::read);
    let cpu_before = CpuTime::now();
    let t0 = Instant::now();
    ctx.start.cancel();
    let end = t0 + ctx.common.duration;
    let mut last = (t0, 0u64, 0u64);
    let mut second = 1u64;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let next_tick = t0 + Duration::from_secs(second);
        std::thread::sleep(next_tick.min(end).saturating_duration_since(now));
        if Instant::now() >= next_tick {
            second += 1;
            let (_, received) = ctx.totals();
            let published: u64 = ctx.topics.iter().map(|t| t.published.load(Relaxed)).sum();
            let dt = last.0.elapsed().as_secs_f64().max(1e-9);
            let gaps: u64 = ctx.subs.iter().map(|s| s.seq_gaps.load(Relaxed)).sum();
            let slow = ctx
                .subs
                .iter()
                .filter(|s| s.close_code.load(Relaxed) == SLOW_CONSUMER)
                .count();
            // How far the slowest subscriber of any topic is behind.
            let behind = (0..ctx.topics.len())
                .filter_map(|t| {
                    let published = ctx.topics[t].published.load(Relaxed);
                    ctx.min_received(t).map(|m| published.saturating_sub(m))
                })
                .max()
                .unwrap_or(0);
            if ctx.common.verbose && !quiet {
                let k = ctx.plan.subscribers_per_topic;
                let mut lags: Vec<u64> = ctx
                    .subs
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        ctx.topics[i / k]
                            .published
                            .load(Relaxed)
                            .saturating_sub(s.received.load(Relaxed))
                    })
                    .collect();
                lags.sort_unstable();
                let q = |f: f64| lags[((lags.len() - 1) as f64 * f) as usize];
                eprintln!(
                    "  lag per subscriber: p0 {} p50 {} p90 {} p99 {} max {}; over 1000: {}",
                    q(0.0),
                    q(0.5),
                    q(0.9),
                    q(0.99),
                    q(1.0),
                    lags.iter().filter(|l| **l > 1000).count()
                );
            }
            if !quiet {
                eprintln!(
                    "{bench}: {}s published {} ({}/s) deliveries {} ({}/s) lost {} slow-closes {} slowest-behind {}",
                    second - 1,
                    si(published as f64),
                    si((published - last.1) as f64 / dt),
                    si(received as f64),
                    si((received - last.2) as f64 / dt),
                    gaps,
                    slow,
                    behind
                );
            }
            last = (Instant::now(), published, received);
        }
    }
    ctx.stop.store(true, Relaxed);
    let publish_end = Instant::now();
    // Publishers finish the batch they are writing.
    let wait_pubs = publish_end + Duration::from_secs(2);
    while ctx.pubs.iter().any(|p| !p.done.load(Relaxed)) && Instant::now() < wait_pubs {
        std::thread::sleep(Duration::from_millis(1));
    }
    let drain_deadline = Instant::now() + ctx.common.drain;
    let drained = loop {
        let (expected, received) = ctx.totals();
        if received >= expected {
            break true;
        }
        if Instant::now() >= drain_deadline || ctx.live_subscribers() == 0 {
            break false;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let t_end = Instant::now();
    let cpu = CpuTime::now().since(cpu_before);
    let broker_after = ctx.common.broker_pid.and_then(ProcSample::read);
    ctx.finish.cancel();
    let histogram = join(workers);

    let wall = t_end - t0;
    let (expected, received) = ctx.totals();
    let published: u64 = ctx.topics.iter().map(|t| t.published.load(Relaxed)).sum();
    let publish_s = (publish_end - t0).as_secs_f64();
    let count_closes = |code: u32| {
        ctx.subs
            .iter()
            .filter(|s| s.close_code.load(Relaxed) == code)
            .count() as u64
    };
    let slow_consumer_closes = count_closes(SLOW_CONSUMER);
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
    let delivery_window = if drained { wall } else { publish_end - t0 };
    let report = LoadReport {
        bench,
        url: ctx.target.url.clone(),
        topics: ctx.topics.len(),
        subscribers_per_topic: ctx.plan.subscribers_per_topic,
        subscribers: ctx.subscriber_count(),
        publishers: ctx.plan.publishers,
        payload_bytes: ctx.load.payload,
        target_rate: ctx.load.rate,
        max_in_flight: ctx.load.rate.is_none().then_some(ctx.load.max_in_flight),
        threads,
        setup_s,
        publish_s,
        drain_s: (t_end - publish_end).as_secs_f64(),
        published,
        publish_rate: published as f64 / publish_s.max(1e-9),
        deliveries: received,
        expected_deliveries: expected,
        deliveries_per_sec: received as f64 / delivery_window.as_secs_f64().max(1e-9),
        lost,
        drained,
        seq_gaps: ctx.subs.iter().map(|s| s.seq_gaps.load(Relaxed)).sum(),
        slow_consumer_closes,
        other_disconnects,
        error_replies,
        ok: lost == 0
            && slow_consumer_closes == 0
            && other_disconnects == 0
            && publisher_failures.is_empty(),
        publisher_failures,
        rate_fell_behind,
        rate_max_lag_ms,
        latency: Latency::from_histogram(&histogram),
        load_cpu: LoadCpu::new(cpu, wall, received),
        broker: match (ctx.common.broker_pid, broker_before, broker_after) {
            (Some(pid), Some(a), Some(b)) => Some(BrokerUsage::between(pid, a, b, wall)),
            _ => None,
        },
    };
    print_report(&report, ctx.common.json);
    if other_disconnects > 0 || !report.publisher_failures.is_empty() {
        EXIT_CONNECT
    } else if !report.ok {
        EXIT_LOSS
    } else {
        EXIT_OK
    }
}

/// Joins the worker threads and merges their histograms.
fn join(workers: Vec<std::thread::JoinHandle<Histogram<u64>>>) -> Histogram<u64> {
    let mut all = report::new_histogram();
    for w in workers {
        if let Ok(h) = w.join() {
            // Same bounds everywhere, so adding cannot fail.
            let _ = all.add(&h);
        }
    }
    all
}

fn print_report(r: &LoadReport, json: bool) {
    if json {
        match serde_json::to_string(r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("tickwire bench: cannot encode the report: {e}"),
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
                "{} topic(s) × {} subscriber(s) = {} connections, {} publisher(s), {} B payload",
                r.topics, r.subscribers_per_topic, r.subscribers, r.publishers, r.payload_bytes
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
                "{} slow-consumer (4001), {} other; {} seq gaps, {} error replies",
                r.slow_consumer_closes, r.other_disconnects, r.seq_gaps, r.error_replies
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
    for f in &r.publisher_failures {
        rows.push(("publisher error", f.clone()));
    }
    rows.push((
        "result",
        if r.ok {
            "OK: zero loss".to_owned()
        } else {
            "FAILED: loss, slow-consumer close or disconnect".to_owned()
        },
    ));
    report::print_table(&format!("tickwire bench {} — {}", r.bench, r.url), &rows);
}

/// One load thread: a single-threaded runtime owning a share of the
/// connections. Returns the latency histogram of its subscribers.
fn worker(
    w: usize,
    ctx: &Arc<Ctx>,
    setup: mpsc::Sender<Result<(), ConnectError>>,
) -> Histogram<u64> {
    let histogram = Rc::new(RefCell::new(report::new_histogram()));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = setup.send(Err(ConnectError::Closed(format!(
                "cannot start a runtime: {e}"
            ))));
            return histogram.replace(report::new_histogram());
        }
    };
    let local = LocalSet::new();
    local.block_on(&rt, async {
        let threads = ctx.load.threads;
        let subs: Vec<usize> = (w..ctx.subscriber_count()).step_by(threads).collect();
        let pubs: Vec<usize> = (w..ctx.plan.publishers).step_by(threads).collect();
        let opened = tokio::select! {
            _ = ctx.finish.cancelled() => return,
            opened = open_all(ctx, &subs, &pubs) => opened,
        };
        let (sub_conns, pub_conns) = match opened {
            Ok(conns) => conns,
            Err(e) => {
                let _ = setup.send(Err(e));
                return;
            }
        };
        let _ = setup.send(Ok(()));
        for (i, conn) in sub_conns {
            tokio::task::spawn_local(subscriber(i, conn, ctx.clone(), histogram.clone()));
        }
        for (p, conn) in pub_conns {
            tokio::task::spawn_local(publisher(p, conn, ctx.clone()));
        }
        ctx.finish.cancelled().await;
    });
    drop(local);
    histogram.replace(report::new_histogram())
}

type Opened = (Vec<(usize, Conn)>, Vec<(usize, Conn)>);

/// Opens (and subscribes) this thread's connections, a bounded number at
/// a time.
async fn open_all(ctx: &Arc<Ctx>, subs: &[usize], pubs: &[usize]) -> Result<Opened, ConnectError> {
    let limit = (ctx.common.connect_concurrency / ctx.load.threads).max(1);
    // Jobs: (is_publisher, index).
    let mut jobs = subs
        .iter()
        .map(|&i| (false, i))
        .chain(pubs.iter().map(|&p| (true, p)));
    let mut set = JoinSet::new();
    let mut sub_conns = Vec::with_capacity(subs.len());
    let mut pub_conns = Vec::with_capacity(pubs.len());
    loop {
        while set.len() < limit {
            let Some((is_pub, i)) = jobs.next() else {
                break;
            };
            let ctx = ctx.clone();
            set.spawn_local(async move {
                let n = if is_pub {
                    ctx.subscriber_count() + i
                } else {
                    i
                };
                let source = ctx.target.source_for(n, ctx.common.source_addrs);
                let mut conn = raw_client::open(
                    &ctx.target,
                    source,
                    ctx.common.token.as_deref(),
                    ctx.common.connect_timeout,
                )
                .await?;
                if !is_pub {
                    let topic = &ctx.topics[ctx.topic_of(i)].name;
                    tokio::time::timeout(
                        ctx.common.connect_timeout,
                        raw_client::subscribe(&mut conn, 1, topic),
                    )
                    .await
                    .map_err(|_| ConnectError::Timeout(ctx.target.addr))??;
                }
                Ok::<_, ConnectError>((is_pub, i, conn))
            });
        }
        match set.join_next().await {
            None => break,
            Some(Ok(Ok((false, i, conn)))) => sub_conns.push((i, conn)),
            Some(Ok(Ok((true, p, conn)))) => pub_conns.push((p, conn)),
            Some(Ok(Err(e))) => return Err(e),
            Some(Err(e)) => return Err(ConnectError::Closed(format!("setup task failed: {e}"))),
        }
    }
    Ok((sub_conns, pub_conns))
}

/// Receives on one subscriber connection until it closes or the run ends
/// (the task is then dropped).
async fn subscriber(i: usize, conn: Conn, ctx: Arc<Ctx>, histogram: Rc<RefCell<Histogram<u64>>>) {
    receive(conn, ctx.load.recv_buffer, &ctx.subs[i], &histogram).await;
}

/// The subscriber receive loop: read a big chunk, walk its frames in place,
/// publish the counters, answer pings; until the broker closes the
/// connection (the code is stored in `shared.close_code`) or the task is
/// dropped. One clock reading per read; no allocation per message.
pub(super) async fn receive(
    conn: Conn,
    recv_buffer: usize,
    shared: &SubShared,
    histogram: &RefCell<Histogram<u64>>,
) {
    let Conn {
        mut stream,
        leftover,
    } = conn;
    let mut buf = vec![0u8; recv_buffer.max(leftover.len() + 4096)];
    buf[..leftover.len()].copy_from_slice(&leftover);
    let mut filled = leftover.len();
    let mut walker = Walker::new();
    let code = loop {
        let now = now_ns();
        let walked = {
            let mut h = histogram.borrow_mut();
            walker.walk(&buf[..filled], |sent| {
                if sent != 0 {
                    h.saturating_record(now.saturating_sub(sent).max(1));
                }
            })
        };
        shared.received.store(walker.messages, Relaxed);
        shared.seq_gaps.store(walker.seq_gaps, Relaxed);
        shared.errors.store(walker.errors, Relaxed);
        let walked = match walked {
            Ok(w) => w,
            Err(_) => break FAILED,
        };
        buf.copy_within(walked.consumed..filled, 0);
        filled -= walked.consumed;
        match walked.control {
            Some(Control::Ping(payload)) => {
                if stream
                    .write_all(&raw_client::pong_frame(&payload))
                    .await
                    .is_err()
                {
                    break FAILED;
                }
                continue;
            }
            Some(Control::Close(code)) => {
                let _ = stream.write_all(&raw_client::close_frame()).await;
                break u32::from(code);
            }
            None => {}
        }
        if walked.need > buf.len() {
            buf.resize(walked.need, 0);
        }
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match stream.read(&mut buf[filled..]).await {
            Ok(0) => break EOF,
            Ok(n) => filled += n,
            Err(_) => break FAILED,
        }
    };
    // A close (or failure) after the run ended is not counted as loss: by
    // then the task is dropped. Anything recorded here happened during it.
    shared.close_code.store(code, Relaxed);
}

/// Publishes on one connection from the start signal until the stop flag.
async fn publisher(p: usize, conn: Conn, ctx: Arc<Ctx>) {
    let shared = &ctx.pubs[p];
    let topics = ctx.publisher_topics(p);
    let templates: Vec<PublishTemplate> = topics
        .iter()
        .map(|&t| PublishTemplate::new(&ctx.topics[t].name, ctx.load.payload))
        .collect();
    let Conn { stream, leftover } = conn;
    let (reader, mut writer) = stream.into_split();
    tokio::task::spawn_local(publisher_reader(p, reader, leftover, ctx.clone()));
    ctx.start.cancelled().await;
    let result = match ctx.load.rate {
        None => publish_windowed(&ctx, shared, &topics, &templates, &mut writer).await,
        Some(rate) => {
            let rate = rate / ctx.plan.publishers as f64;
            publish_paced(&ctx, shared, rate, &topics, &templates, &mut writer).await
        }
    };
    if let Err(e) = result {
        if let Ok(mut f) = shared.failure.lock() {
            f.get_or_insert(format!("publisher {p}: write failed: {e}"));
        }
    }
    shared.done.store(true, Relaxed);
    // Keep the connection open until the run ends, so the broker does not
    // see the publisher leave while messages are still draining.
    ctx.finish.cancelled().await;
}

/// Max-rate publishing under the per-topic in-flight window.
async fn publish_windowed(
    ctx: &Ctx,
    shared: &PubShared,
    topics: &[usize],
    templates: &[PublishTemplate],
    writer: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    // The window is a total over all topics: each topic may be its share
    // ahead of its slowest subscriber, so the broker's backlog stays bounded
    // however many topics there are.
    let window = (ctx.load.max_in_flight / ctx.topics.len().max(1)).max(1) as u64;
    let batch = ctx.load.batch;
    let per_topic = (batch / topics.len()).max(1) as u64;
    let frame_len = templates
        .iter()
        .map(PublishTemplate::len)
        .max()
        .unwrap_or(0);
    let mut out = Vec::with_capacity(batch * frame_len);
    // Cached "slowest subscriber" per topic, refreshed when credit runs low.
    let mut floor: Vec<u64> = vec![0; topics.len()];
    let mut next = 0;
    while !ctx.stop.load(Relaxed) {
        out.clear();
        let stamp = now_ns();
        let mut count = 0u64;
        for k in 0..topics.len() {
            let j = (next + k) % topics.len();
            let topic = &ctx.topics[topics[j]];
            let published = topic.published.load(Relaxed);
            let mut credit = (floor[j] + window).saturating_sub(published);
            if credit < per_topic {
                floor[j] = ctx.min_received(topics[j]).unwrap_or(published);
                credit = (floor[j] + window).saturating_sub(published);
            }
            let n = credit.min(per_topic).min(batch as u64 - count);
            if n == 0 {
                continue;
            }
            for _ in 0..n {
                templates[j].append(&mut out, stamp);
            }
            topic.published.fetch_add(n, Relaxed);
            count += n;
            if count >= batch as u64 {
                next = j + 1;
                break;
            }
        }
        if count == 0 {
            // Every topic is a full window ahead: let subscribers catch up.
            tokio::time::sleep(Duration::from_micros(200)).await;
            continue;
        }
        writer.write_all(&out).await?;
        shared.sent.fetch_add(count, Relaxed);
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// Fixed-rate publishing: every millisecond, send what is due.
async fn publish_paced(
    ctx: &Ctx,
    shared: &PubShared,
    rate: f64,
    topics: &[usize],
    templates: &[PublishTemplate],
    writer: &mut OwnedWriteHalf,
) -> std::io::Result<()> {
    let batch = ctx.load.batch as u64;
    let frame_len = templates
        .iter()
        .map(PublishTemplate::len)
        .max()
        .unwrap_or(0);
    let mut out = Vec::with_capacity(batch as usize * frame_len);
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut sent = 0u64;
    let mut next = 0;
    while !ctx.stop.load(Relaxed) {
        ticker.tick().await;
        let due_total = (start.elapsed().as_secs_f64() * rate) as u64;
        let mut due = due_total.saturating_sub(sent);
        shared.max_lag_msgs.fetch_max(due, Relaxed);
        while due > 0 {
            out.clear();
            let stamp = now_ns();
            let n = due.min(batch);
            for _ in 0..n {
                templates[next].append(&mut out, stamp);
                ctx.topics[topics[next]].published.fetch_add(1, Relaxed);
                next = (next + 1) % topics.len();
            }
            writer.write_all(&out).await?;
            shared.sent.fetch_add(n, Relaxed);
            sent += n;
            due -= n;
        }
    }
    Ok(())
}

/// Reads a publisher connection: counts `ERROR` replies and notes a close.
async fn publisher_reader(p: usize, mut reader: OwnedReadHalf, leftover: Vec<u8>, ctx: Arc<Ctx>) {
    let shared = &ctx.pubs[p];
    let mut buf = vec![0u8; 64 * 1024];
    buf[..leftover.len()].copy_from_slice(&leftover);
    let mut filled = leftover.len();
    let mut walker = Walker::new();
    let code = loop {
        let walked = match walker.walk(&buf[..filled], |_| {}) {
            Ok(w) => w,
            Err(_) => break FAILED,
        };
        shared.errors.store(walker.errors, Relaxed);
        buf.copy_within(walked.consumed..filled, 0);
        filled -= walked.consumed;
        match walked.control {
            // The broker only pings connections that stay silent.
            Some(Control::Ping(_)) => continue,
            Some(Control::Close(code)) => break u32::from(code),
            None => {}
        }
        if walked.need > buf.len() {
            buf.resize(walked.need, 0);
        }
        match reader.read(&mut buf[filled..]).await {
            Ok(0) => break EOF,
            Ok(n) => filled += n,
            Err(_) => break FAILED,
        }
    };
    shared.close_code.store(code, Relaxed);
}
