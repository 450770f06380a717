//! One transport × rate run: open the subscribers (a bounded number at a
//! time), publish at the rate for `--duration` with progress every second,
//! drain, then collect every subscriber's tally and the broker's CPU.

use crate::console::stderrln;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::super::raw_client::{self, Conn, ConnectError, Target};
use super::super::report::{CpuTime, ProcSample, si};
use super::payload::Payload;
use super::poll::{self, Poller};
use super::publish::{self, Signals};
use super::summary::{BrokerCpu, Measured, Row};
use super::tally::{self, RunShared, Tally};
use super::{Setup, Transport, TransportsArgs, sse, ws};

/// A subscriber that is subscribed, of any transport.
enum Opened {
    Ws(Conn),
    Sse(sse::Stream),
    Poll(Poller),
}

/// Opens one subscriber of `transport`.
async fn open(
    transport: Transport,
    setup: &Setup<'_>,
    poll_timeout: u32,
) -> Result<Opened, ConnectError> {
    Ok(match transport {
        Transport::Ws => Opened::Ws(ws::open(setup).await?),
        Transport::Sse => Opened::Sse(sse::open(setup).await?),
        Transport::Poll => Opened::Poll(poll::open(setup, poll_timeout).await?),
    })
}

/// Receives on an opened subscriber until the run ends or it closes.
async fn receive(opened: Opened, shared: &RunShared, tally: &mut Tally) -> TcpStream {
    match opened {
        Opened::Ws(conn) => ws::receive(conn, shared, tally).await,
        Opened::Sse(stream) => sse::receive(stream, shared, tally).await,
        Opened::Poll(poller) => poll::receive(poller, shared, tally).await,
    }
}

/// What one subscriber task needs, owned.
struct SubscriberJob {
    n: usize,
    transport: Transport,
    target: Arc<Target>,
    token: Option<String>,
    topic: Arc<str>,
    source_addrs: u8,
    timeout: Duration,
    poll_timeout: u32,
}

/// One subscriber: open (under the setup limit), report readiness, receive,
/// then read the socket's byte counts.
async fn subscriber(
    job: SubscriberJob,
    limit: Arc<Semaphore>,
    shared: Arc<RunShared>,
    ended: Arc<AtomicU64>,
    ready: mpsc::Sender<Result<(), ConnectError>>,
) -> Tally {
    let mut tally = Tally::default();
    let setup = Setup {
        target: &job.target,
        source: job.target.source_for(job.n, job.source_addrs),
        token: job.token.as_deref(),
        topic: &job.topic,
        timeout: job.timeout,
    };
    let opened = {
        let Ok(_permit) = limit.acquire().await else {
            return tally;
        };
        tokio::select! {
            _ = shared.finish.cancelled() => return tally,
            opened = open(job.transport, &setup, job.poll_timeout) => opened,
        }
    };
    let opened = match opened {
        Ok(opened) => opened,
        Err(e) => {
            let _ = ready.send(Err(e)).await;
            return tally;
        }
    };
    let _ = ready.send(Ok(())).await;
    let stream = receive(opened, &shared, &mut tally).await;
    tally.count_socket(&stream);
    if tally.closed.is_some() {
        ended.fetch_add(1, Relaxed);
    }
    tally
}

/// Runs `transport` at `rate` on `topic`; returns its row, or why it could
/// not run.
pub async fn run(
    args: &TransportsArgs,
    target: &Target,
    transport: Transport,
    rate: f64,
    topic: String,
) -> Result<Row, ConnectError> {
    let name = transport.name();
    let n = args.subscribers;
    let shared = Arc::new(RunShared::default());
    let ended = Arc::new(AtomicU64::new(0));
    let limit = Arc::new(Semaphore::new(args.connect.connect_concurrency.max(1)));
    let (ready_tx, mut ready_rx) = mpsc::channel(n);
    let target = Arc::new(target.clone());
    let topic: Arc<str> = topic.into();
    if !args.quiet {
        stderrln!(
            "transports: {name} at {} msg/s: opening {n} subscribers on {topic}",
            si(rate)
        );
    }
    let setup_started = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let job = SubscriberJob {
            n: i,
            transport,
            target: target.clone(),
            token: args.broker.token.clone(),
            topic: topic.clone(),
            source_addrs: args.connect.source_addrs,
            timeout: args.connect.connect_timeout,
            poll_timeout: args.poll_timeout,
        };
        tasks.push(tokio::spawn(subscriber(
            job,
            limit.clone(),
            shared.clone(),
            ended.clone(),
            ready_tx.clone(),
        )));
    }
    drop(ready_tx);
    let mut failure = None;
    for _ in 0..n {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                failure = Some(e);
                break;
            }
            None => {
                failure = Some(ConnectError::Closed("a subscriber task ended".into()));
                break;
            }
        }
    }
    let publisher = match failure {
        Some(e) => Err(e),
        None => {
            raw_client::open(
                &target,
                None,
                args.broker.token.as_deref(),
                false,
                args.connect.connect_timeout,
            )
            .await
        }
    };
    let publisher = match publisher {
        Ok(conn) => conn,
        Err(e) => {
            shared.finish.cancel();
            for task in tasks {
                let _ = task.await;
            }
            return Err(e);
        }
    };
    let setup_s = setup_started.elapsed().as_secs_f64();

    // Measure: from the first publish to the end of the drain.
    let published = Arc::new(AtomicU64::new(0));
    let signals = Signals {
        stop: CancellationToken::new(),
        finish: shared.finish.clone(),
    };
    let broker_before = args.broker_pid.and_then(ProcSample::read);
    let cpu_before = CpuTime::now();
    let t0 = Instant::now();
    let publishing = tokio::spawn(publish::publish(
        publisher,
        topic.to_string(),
        Payload::new(args.payload_size),
        rate,
        published.clone(),
        signals.clone(),
    ));
    let end = t0 + args.duration;
    let mut second = 1u64;
    let mut last = (t0, 0u64);
    while Instant::now() < end {
        let tick = (t0 + Duration::from_secs(second)).min(end);
        tokio::time::sleep_until(tick.into()).await;
        second += 1;
        let received = shared.received.load(Relaxed);
        if !args.quiet && tick < end {
            let dt = last.0.elapsed().as_secs_f64().max(1e-9);
            stderrln!(
                "transports: {name} {}s published {} deliveries {} ({}/s) closed {}",
                second - 1,
                si(published.load(Relaxed) as f64),
                si(received as f64),
                si((received - last.1) as f64 / dt),
                ended.load(Relaxed)
            );
        }
        last = (Instant::now(), received);
    }
    signals.stop.cancel();
    let publish_end = Instant::now();
    let published_count = published.load(Relaxed);
    let expected = published_count * n as u64;
    let drain_end = publish_end + args.drain;
    // Checks the counters every few milliseconds: a bounded wait for the
    // last deliveries, not a synchronisation.
    while shared.received.load(Relaxed) < expected
        && Instant::now() < drain_end
        && ended.load(Relaxed) < n as u64
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let t_end = Instant::now();
    let cpu = CpuTime::now().since(cpu_before);
    let broker_after = args.broker_pid.and_then(ProcSample::read);
    shared.finish.cancel();
    let mut tallies = Vec::with_capacity(n);
    for task in tasks {
        if let Ok(t) = task.await {
            tallies.push(t);
        }
    }
    let publish_error = match publishing.await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(format!("publisher task failed: {e}")),
    };
    let broker = match (args.broker_pid, broker_before, broker_after) {
        (Some(pid), Some(a), Some(b)) => Some(BrokerCpu {
            pid,
            cpu_s: b.cpu_seconds - a.cpu_seconds,
        }),
        _ => None,
    };
    let closes: Vec<String> = tallies.iter().filter_map(|t| t.closed.clone()).collect();
    let all = tally::merge(&tallies);
    let measured = Measured {
        setup_s,
        publish_s: (publish_end - t0).as_secs_f64(),
        wall_s: (t_end - t0).as_secs_f64(),
        published: published_count,
        closes,
        publish_error,
        broker,
        tool_cpu: cpu,
    };
    Ok(Row::new(transport, rate, args, measured, &all))
}
