//! Soak: waves of thousands of connections against the real `tickwire
//! serve`, and afterwards no trace of them.
//!
//! Each wave opens `TICKWIRE_SOAK_CONNECTIONS` (default 2,000) connections
//! at once that subscribe (exact topics and wildcards), publish, stall until
//! the broker drops them as slow consumers, send garbage and leave abruptly
//! ([`clients`]). Meanwhile a [`witness`] publisher numbers its messages and
//! two witness subscribers check they lose none and see them in order.
//! After every wave, the connection gauges and `tickwire_connection_tasks`
//! must come back to their baseline (polled until they do, within
//! [`SETTLE_WITHIN`]), and after the last wave the broker's resident memory
//! must be within [`RSS_GROWTH`] × + [`RSS_SLACK_KIB`] of its level after
//! the first (docs/conformance.md, "Soak", explains the bound).
//!
//! `TICKWIRE_SOAK_WAVES` (default 5) sets the number of waves; CI runs the
//! defaults. Each wave prints a one-line summary to standard error.

#[path = "soak/clients.rs"]
mod clients;
#[path = "soak/serve.rs"]
mod serve;
#[path = "soak/witness.rs"]
mod witness;

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use clients::{Census, FLOOD_TOPIC, Outcome, Phase, Plan, Wave};
use serve::Serve;
use tickwire_e2e::RawClient;
use tickwire_protocol::ws::{self, OpCode};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use witness::Witness;

/// Waves when `TICKWIRE_SOAK_WAVES` is not set.
const DEFAULT_WAVES: usize = 5;
/// Connections per wave when `TICKWIRE_SOAK_CONNECTIONS` is not set.
const DEFAULT_CONNECTIONS: usize = 2000;
/// File descriptors kept free of wave connections, in the test and in the
/// broker, for the witness, scrapes, HTTP publishes and the runtime.
const FD_RESERVE: u64 = 512;
/// Connections being opened (TCP and handshake) at once.
const CONNECTING_AT_ONCE: usize = 128;
/// Longest a wave's setup (every connection open and subscribed) may take.
const SETUP_WITHIN: Duration = Duration::from_secs(120);
/// Longest the rest of a wave may take.
const WAVE_WITHIN: Duration = Duration::from_secs(120);
/// Longest the gauges may take to come back to their baseline.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// The size of each flood message.
const FLOOD_PAYLOAD: usize = 64 * 1024;
/// Flood messages after which the soak gives up waiting for the broker to
/// drop every slow consumer: each of them is sent to all of them, and 1,000
/// (64 MiB) is far more than a 256 KiB queue and a small socket buffer can
/// hold.
const MAX_FLOOD: usize = 1000;
/// After the last wave the broker's RSS may be at most this factor of its
/// RSS after the first wave …
const RSS_GROWTH: f64 = 1.3;
/// … plus this many KiB.
const RSS_SLACK_KIB: u64 = 8 * 1024;

/// The gauges that must return to their baseline after every wave.
const GAUGES: [&str; 4] = [
    "tickwire_websockets",
    "tickwire_connections",
    "tickwire_connection_tasks",
    "tickwire_subscriptions",
];

/// The broker's settings for the soak: no per-address limit in the way of
/// thousands of connections from 127.0.0.1, a small outbound queue so that
/// slow consumers are dropped quickly (which needs a message size limit
/// under half of it), a close timeout long enough for
/// every slow consumer to read its 4001 close, and pings rare enough that
/// no client needs to answer one within a wave.
const BROKER_ARGS: [&str; 16] = [
    "--max-connections-per-ip",
    "1000000",
    "--connection-rate-per-ip",
    "1000000",
    "--connection-burst-per-ip",
    "1000000",
    "--outbound-queue-bytes",
    "256KiB",
    "--max-message-size",
    "96KiB",
    "--max-http-body",
    "96KiB",
    "--close-timeout",
    "30s",
    "--keepalive-interval",
    "60s",
];

/// Writes one line to standard error, past the test harness's capture, so
/// that CI logs show what each wave did.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "soak: {line}");
}

/// A positive number from the environment variable `name`, else `default`.
fn setting(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => match value.trim().parse() {
            Ok(n) if n > 0 => n,
            _ => panic!("{name}={value:?}: expected a positive number"),
        },
        Err(_) => default,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waves_of_connections_leave_no_trace() {
    let fd_limit = serve::raise_fd_limit();
    let waves = setting("TICKWIRE_SOAK_WAVES", DEFAULT_WAVES);
    let wanted = setting("TICKWIRE_SOAK_CONNECTIONS", DEFAULT_CONNECTIONS);
    let room = usize::try_from(fd_limit.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    let connections = wanted.min(room);
    assert!(
        connections >= 100,
        "the open-file limit ({fd_limit}) leaves room for only {connections} connections"
    );
    if connections < wanted {
        report(&format!(
            "the open-file limit is {fd_limit}: {connections} connections per wave instead of {wanted}"
        ));
    }
    let census = Census::of(connections);
    let start = Instant::now();
    let broker = Serve::start(&BROKER_ARGS).await;
    let mut witness = Witness::start(broker.addr).await;
    // The witness's WebSockets (two tasks each: reader and writer) and
    // subscriptions; the scrape's own connection task on the metrics
    // listener.
    let held = witness::CONNECTIONS as f64;
    let baseline = [held, held, 2.0 * held + 1.0, witness::SUBSCRIPTIONS as f64];
    broker.wait_metrics(GAUGES, baseline, SETTLE_WITHIN).await;
    report(&format!(
        "{waves} waves of {connections} connections: {} subscribers, {} publishers, {} slow consumers, {} garbage, {} abrupt; baseline {GAUGES:?} = {baseline:?}, RSS {} KiB",
        census.subscribers,
        census.publishers,
        census.stalled,
        census.garbage,
        census.abrupt,
        broker.rss_kib()
    ));

    let mut rss = Vec::new();
    for wave in 1..=waves {
        let summary = run_wave(&broker, census).await;
        witness.check_alive().await;
        let settled = broker.wait_metrics(GAUGES, baseline, SETTLE_WITHIN).await;
        let rss_kib = broker.rss_kib();
        rss.push(rss_kib);
        let (witnessed, checked) = witness.progress();
        report(&format!(
            "wave {wave}/{waves}: {connections} connections in {:.1}s, peak {} WebSockets and {} connection tasks; {} published, {} received, {} slow consumers dropped after {} flood messages; gauges at baseline {:.0} ms later; witness checked {checked} of {witnessed}; RSS {rss_kib} KiB",
            summary.elapsed.as_secs_f64(),
            summary.peak_websockets,
            summary.peak_tasks,
            summary.published,
            summary.received,
            census.stalled,
            summary.flood,
            settled.as_secs_f64() * 1000.0,
        ));
    }
    let witnessed = witness.finish().await;
    let first = rss[0];
    let last = rss[rss.len() - 1];
    let bound = (first as f64 * RSS_GROWTH) as u64 + RSS_SLACK_KIB;
    report(&format!(
        "done in {:.1}s: witness saw all {witnessed} messages in order; RSS after wave 1 {first} KiB, after wave {waves} {last} KiB (bound {bound} KiB)",
        start.elapsed().as_secs_f64()
    ));
    assert!(
        last <= bound,
        "RSS grew from {first} KiB after wave 1 to {last} KiB after wave {waves}, over {bound} KiB (per wave: {rss:?})"
    );
    broker.stop().await;
}

/// What one wave did.
struct WaveSummary {
    elapsed: Duration,
    peak_websockets: f64,
    peak_tasks: f64,
    published: u64,
    received: u64,
    flood: usize,
}

/// Runs one wave: every connection set up, then let go; the slow
/// consumers flooded until the broker has dropped them all, then released;
/// every client finished.
async fn run_wave(broker: &Serve, census: Census) -> WaveSummary {
    let started = Instant::now();
    let connections =
        census.subscribers + census.publishers + census.stalled + census.garbage + census.abrupt;
    let plan = Arc::new(Plan::new(connections, &census));
    let [dropped_before] = broker
        .metrics(["tickwire_slow_consumer_disconnects_total"])
        .await;
    let (phase, phase_rx) = watch::channel(Phase::Setup);
    let (ready, mut ready_rx) = mpsc::unbounded_channel();
    let mut tasks = JoinSet::new();
    {
        let wave = Wave {
            addr: broker.addr,
            plan: plan.clone(),
            phase: phase_rx,
            ready,
            connecting: Arc::new(Semaphore::new(CONNECTING_AT_ONCE)),
        };
        for i in 0..connections {
            tasks.spawn(clients::run(i, wave.clone()));
        }
    }

    let deadline = started + SETUP_WITHIN;
    let mut set_up = 0;
    while set_up < connections {
        tokio::select! {
            Some(()) = ready_rx.recv() => set_up += 1,
            Some(joined) = tasks.join_next() => {
                outcome(joined);
                panic!("a client ended before the wave began");
            }
            _ = sleep_until(deadline) => {
                panic!("only {set_up} of {connections} connections set up within {SETUP_WITHIN:?}")
            }
        }
    }
    let [peak_websockets, peak_tasks] = broker
        .metrics(["tickwire_websockets", "tickwire_connection_tasks"])
        .await;

    phase.send_replace(Phase::Go);
    let flood = flood(broker, dropped_before + census.stalled as f64).await;
    phase.send_replace(Phase::Release);

    let mut received = 0;
    let finished = tokio::time::timeout(WAVE_WITHIN, async {
        while let Some(joined) = tasks.join_next().await {
            received += outcome(joined).received;
        }
    })
    .await;
    assert!(
        finished.is_ok(),
        "{} of {connections} clients still running after {WAVE_WITHIN:?}",
        tasks.len()
    );
    let [dropped_after] = broker
        .metrics(["tickwire_slow_consumer_disconnects_total"])
        .await;
    assert_eq!(
        dropped_after - dropped_before,
        census.stalled as f64,
        "only the stalled connections are slow consumers"
    );
    WaveSummary {
        elapsed: started.elapsed(),
        peak_websockets,
        peak_tasks,
        published: plan.published(),
        received,
        flood,
    }
}

/// A client's outcome, or its panic passed on.
fn outcome(joined: Result<Outcome, tokio::task::JoinError>) -> Outcome {
    match joined {
        Ok(outcome) => outcome,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("a client task failed: {e}"),
    }
}

/// Publishes [`FLOOD_PAYLOAD`]-byte messages to the flood topic until the
/// broker has counted `target` slow-consumer disconnects; returns how many
/// it published.
async fn flood(broker: &Serve, target: f64) -> usize {
    let mut publisher = RawClient::connect(broker.addr).await;
    let payload = vec![0x5a; FLOOD_PAYLOAD];
    let mut published = 0;
    loop {
        let [dropped] = broker
            .metrics(["tickwire_slow_consumer_disconnects_total"])
            .await;
        if dropped >= target {
            break;
        }
        assert!(
            published < MAX_FLOOD,
            "{dropped} slow-consumer disconnects after {published} flood messages; expected {target}"
        );
        for _ in 0..3 {
            publisher.publish(FLOOD_TOPIC, &payload).await;
        }
        publisher.publish_acked(FLOOD_TOPIC, &payload).await;
        published += 4;
    }
    publisher
        .send_frame(OpCode::Close, &ws::close_body(1000, ""))
        .await;
    publisher.recv_close().await;
    published
}
