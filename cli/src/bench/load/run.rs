//! The main thread's part of a load run: start the load threads, wait for
//! their setup, start publishing, print progress every second, stop after
//! `--duration`, wait for the drain and hand the counters to the summary.

use crate::console::stderrln;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::super::raw_client::ConnectError;
use super::super::report::{self, BrokerUsage, CpuTime, ProcSample, si};
use super::super::{CommonArgs, EXIT_CONNECT, LoadArgs};
use super::nodes::Nodes;
use super::plan::LoadPlan;
use super::shared::{Ctx, SLOW_CONSUMER};
use super::summary::{LoadReport, Timing};
use super::worker::worker;

/// Runs the plan and prints the report; returns the exit code.
pub fn run(plan: LoadPlan, common: CommonArgs, load: LoadArgs, nodes: Nodes) -> u8 {
    let subscribers = plan.subscriber_count();
    let threads = load.threads.min(subscribers + plan.publishers).max(1);
    let ctx = Arc::new(Ctx::new(plan, common, LoadArgs { threads, ..load }, nodes));
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
                stderrln!("tickwire bench: cannot start a thread: {e}");
                ctx.finish.cancel();
                join(workers);
                return EXIT_CONNECT;
            }
        }
    }
    drop(setup_tx);
    if !quiet {
        stderrln!(
            "{bench}: opening {subscribers} subscriber and {} publisher connections {}",
            ctx.plan.publishers,
            ctx.nodes.describe()
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
        stderrln!("tickwire bench: {e}");
        return EXIT_CONNECT;
    }
    let setup_s = setup_started.elapsed().as_secs_f64();
    if !quiet {
        stderrln!(
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
            let published = ctx.published();
            let dt = last.0.elapsed().as_secs_f64().max(1e-9);
            let gaps: u64 = ctx.subs.iter().map(|s| s.seq_gaps.load(Relaxed)).sum();
            let slow = ctx.subscribers_closed_with(SLOW_CONSUMER);
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
                stderrln!(
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
                stderrln!(
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

    let timing = Timing {
        setup_s,
        t0,
        publish_end,
        t_end,
        drained,
    };
    let broker = match (ctx.common.broker_pid, broker_before, broker_after) {
        (Some(pid), Some(a), Some(b)) => Some(BrokerUsage::between(pid, a, b, t_end - t0)),
        _ => None,
    };
    let report = LoadReport::collect(&ctx, &timing, &histogram, cpu, broker);
    report.print(ctx.common.json);
    report.exit_code()
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
