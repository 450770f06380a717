//! The publisher task: sends this node's publishes to Redis, in the order
//! they were accepted, pipelined in batches over one multiplexed
//! connection.
//!
//! Every publish is one call of [`PUBLISH_SCRIPT`], which gives it its
//! sequence number and epoch and broadcasts it in one atomic step. A batch
//! is one pipeline of one `EVALSHA` per publish, after a `SCRIPT LOAD` on
//! a new connection (a restarted Redis has forgotten the script); if Redis
//! answers `NOSCRIPT` (its script cache was flushed), the script is loaded
//! again and the publishes that did not run are sent once more. The next batch is sent when the previous one is answered, so
//! one node's publishes reach Redis in order.
//!
//! The queue in front of the task is bounded by count ([`QUEUE_JOBS`]) and
//! payload bytes ([`QUEUE_BYTES`]); a publish that does not fit is refused
//! with [`PublishError::Busy`]. Without a connection, publishes are refused
//! with [`PublishError::Unavailable`] at once while the task reconnects
//! every [`RECONNECT_INTERVAL`]. An idle connection is checked with a
//! `PING` every [`PING_INTERVAL`], and dropped (then made again) when the
//! subscriber task lost its own ([`Health::lost`]).
//!
//! While it is up, the connection is also lent to the reads a new
//! subscription makes ([`SharedConnection`]): reads and publishes are
//! answered in the order they were sent on it.
//!
//! Presence joins and leaves ([`PresenceJob`]) go through the same queue
//! and pipelines as publishes, one `EVALSHA` of the join or leave script
//! each: the JOIN a node's client causes reaches every node before the
//! messages that client publishes after subscribing.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use prometheus::IntCounterVec;
use redis::Script;
use redis::aio::MultiplexedConnection;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cluster::health::Health;
use crate::cluster::interest::Interest;
use crate::cluster::presence::call::PresenceCall;
use crate::cluster::target::Target;
use crate::cluster::wire::{POSITION_TTL_SECS, PUBLISH_SCRIPT, channel, history_key, position_key};
use crate::metrics::Metrics;

/// Most publishes waiting for Redis on one node.
pub const QUEUE_JOBS: usize = 4096;
/// Most payload bytes waiting for Redis on one node.
pub const QUEUE_BYTES: usize = 64 << 20;
/// Most publishes in one pipeline.
pub const BATCH: usize = 256;
/// Time allowed for Redis to answer a batch, a `PING` or a subscription
/// change (connecting: [`crate::cluster::target::CONNECT_TIMEOUT`]).
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause between attempts to reconnect to Redis.
pub const RECONNECT_INTERVAL: Duration = Duration::from_millis(250);
/// Idle time after which a connection is checked with a `PING`.
pub const PING_INTERVAL: Duration = Duration::from_secs(3);

/// Why a publish was not confirmed by the backplane.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PublishError {
    /// No connection to Redis: the message was not published.
    #[error(
        "the cluster backplane (Redis) is unavailable; the message was not published; retry later"
    )]
    Unavailable,
    /// The connection failed or Redis did not answer in time after the
    /// message was sent: it may or may not have been published.
    #[error(
        "the cluster backplane (Redis) did not confirm the publish; it may or may not have been published"
    )]
    Unconfirmed,
    /// Too many publishes wait for Redis on this node.
    #[error(
        "the cluster backplane is overloaded (too many publishes waiting for Redis); the message was not published; retry later"
    )]
    Busy,
    /// Redis answered with an error (out of memory, read-only replica, …).
    #[error("Redis refused the publish ({0}); the message was not published")]
    Refused(String),
}

impl PublishError {
    /// The `reason` label of `tickwire_backplane_refused_total`
    /// ([`crate::metrics::REFUSED_REASONS`]).
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::Unavailable => "unavailable",
            PublishError::Unconfirmed => "unconfirmed",
            PublishError::Busy => "busy",
            PublishError::Refused(_) => "refused",
        }
    }
}

/// Receives the outcome of one publish: its sequence number, or why not.
pub type Done = Box<dyn FnOnce(Result<u64, PublishError>) + Send + Sync>;

/// One publish waiting for Redis.
pub struct PublishJob {
    /// The topic.
    pub topic: String,
    /// The payload.
    pub payload: Bytes,
    /// Whether Redis keeps it as the topic's retained value (the publisher
    /// asked for retain, or the topic's policy retains).
    pub retain: bool,
    /// How many history entries the topic keeps (its policy).
    pub history: usize,
    /// When it was accepted (µs since the Unix epoch).
    pub time_us: u64,
    /// Called once with the outcome.
    pub done: Done,
}

impl fmt::Debug for PublishJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishJob")
            .field("topic", &self.topic)
            .field("payload_len", &self.payload.len())
            .field("retain", &self.retain)
            .finish_non_exhaustive()
    }
}

/// Receives the outcome of one presence script: its answer (see
/// [`crate::cluster::presence::scripts`]), or why it did not run.
pub type PresenceDone = Box<dyn FnOnce(Result<u64, PublishError>) + Send + Sync>;

/// One presence join or leave waiting for Redis.
pub struct PresenceJob {
    /// The script and its arguments.
    pub call: PresenceCall,
    /// The generation of this node's interest Redis must have confirmed
    /// before the job is sent (0: none): a join waits until the node is
    /// subscribed to the topic's channel, so the joining client's own
    /// subscription receives its `JOIN`.
    pub after: u64,
    /// Called once with the outcome.
    pub done: PresenceDone,
}

impl fmt::Debug for PresenceJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresenceJob")
            .field("call", &self.call)
            .finish_non_exhaustive()
    }
}

/// What the publisher task sends to Redis: a publish or a presence change.
#[derive(Debug)]
pub enum Job {
    /// A message.
    Publish(PublishJob),
    /// A presence join or leave.
    Presence(PresenceJob),
}

impl Job {
    /// The interest generation it waits for (see [`PresenceJob::after`]).
    fn after(&self) -> u64 {
        match self {
            Job::Publish(_) => 0,
            Job::Presence(job) => job.after,
        }
    }

    /// The bytes it counts against [`QUEUE_BYTES`].
    fn bytes(&self) -> usize {
        match self {
            Job::Publish(job) => job.payload.len(),
            Job::Presence(job) => job.call.bytes(),
        }
    }

    /// Gives it its outcome (a script's answer, or why it has none).
    fn finish(self, result: Result<u64, PublishError>) {
        match self {
            Job::Publish(job) => (job.done)(result),
            Job::Presence(job) => (job.done)(result),
        }
    }
}

/// The sending side of the queue in front of the publisher task.
#[derive(Debug, Clone)]
pub struct Publisher {
    jobs: mpsc::Sender<Job>,
    queued_bytes: Arc<AtomicUsize>,
    /// `tickwire_backplane_refused_total`, for the publishes refused here.
    refused: IntCounterVec,
}

/// The publisher task, not yet started ([`PublisherTask::run`]).
#[derive(Debug)]
pub struct PublisherTask {
    jobs: mpsc::Receiver<Job>,
    queued_bytes: Arc<AtomicUsize>,
    shared: Arc<SharedConnection>,
    interest: Arc<Interest>,
}

/// The publisher's Redis connection while it is up, lent to other users.
#[derive(Debug, Default)]
pub struct SharedConnection(Mutex<Option<MultiplexedConnection>>);

impl SharedConnection {
    /// The connection, if the publisher has one now.
    pub fn get(&self) -> Option<MultiplexedConnection> {
        self.0.lock().clone()
    }

    fn set(&self, connection: Option<&MultiplexedConnection>) {
        *self.0.lock() = connection.cloned();
    }
}

/// A publisher, the task that serves its queue, and the connection that
/// task shares; refusals are counted in `metrics`; presence jobs wait for
/// `interest`'s confirmations.
pub fn publisher(
    metrics: &Metrics,
    interest: Arc<Interest>,
) -> (Publisher, PublisherTask, Arc<SharedConnection>) {
    let (tx, rx) = mpsc::channel(QUEUE_JOBS);
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    let shared = Arc::new(SharedConnection::default());
    (
        Publisher {
            jobs: tx,
            queued_bytes: Arc::clone(&queued_bytes),
            refused: metrics.backplane_refused.clone(),
        },
        PublisherTask {
            jobs: rx,
            queued_bytes,
            shared: Arc::clone(&shared),
            interest,
        },
        shared,
    )
}

impl Publisher {
    /// Queues `job`; when the queue is full (or the task is gone) its
    /// `done` is called at once with the refusal.
    pub fn submit(&self, job: PublishJob) {
        self.submit_job(Job::Publish(job));
    }

    /// Queues a presence `job`; when the queue is full (or the task is
    /// gone) its `done` is called at once with the refusal.
    pub fn submit_presence(&self, job: PresenceJob) {
        self.submit_job(Job::Presence(job));
    }

    fn submit_job(&self, job: Job) {
        let n = job.bytes();
        if self.queued_bytes.fetch_add(n, Ordering::AcqRel) + n > QUEUE_BYTES {
            self.queued_bytes.fetch_sub(n, Ordering::AcqRel);
            return self.refuse(job, PublishError::Busy);
        }
        let refused = match self.jobs.try_send(job) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(job)) => (job, PublishError::Busy),
            Err(mpsc::error::TrySendError::Closed(job)) => (job, PublishError::Unavailable),
        };
        self.queued_bytes.fetch_sub(n, Ordering::AcqRel);
        self.refuse(refused.0, refused.1);
    }

    /// Waits for room in the queue (not for Redis); `None` if the task is
    /// gone. The permit queues one presence job without waiting, so a
    /// caller can decide what to send while holding a lock.
    pub async fn reserve(&self) -> Option<PresencePermit<'_>> {
        let permit = self.jobs.reserve().await.ok()?;
        Some(PresencePermit {
            permit,
            queued_bytes: &self.queued_bytes,
        })
    }

    /// Counts the refusal of `job` and gives it `why`.
    fn refuse(&self, job: Job, why: PublishError) {
        self.refused.with_label_values(&[why.reason()]).inc();
        job.finish(Err(why));
    }
}

/// Room for one presence job in the publisher's queue ([`Publisher::reserve`]).
#[derive(Debug)]
pub struct PresencePermit<'a> {
    permit: mpsc::Permit<'a, Job>,
    queued_bytes: &'a AtomicUsize,
}

impl PresencePermit<'_> {
    /// Queues `job`.
    pub fn send(self, job: PresenceJob) {
        let job = Job::Presence(job);
        self.queued_bytes.fetch_add(job.bytes(), Ordering::AcqRel);
        self.permit.send(job);
    }
}

/// Whether Redis answers a `PING` on `connection` in time.
async fn ping(connection: &mut MultiplexedConnection) -> bool {
    let command = redis::cmd("PING");
    let ping = command.query_async::<redis::Value>(connection);
    matches!(tokio::time::timeout(REDIS_TIMEOUT, ping).await, Ok(Ok(_)))
}

/// The scripts the publisher runs: their sources and hashes.
#[derive(Debug)]
struct Scripts {
    /// `(source, hash)` of the publish, join and leave scripts.
    all: [(String, String); 3],
}

impl Scripts {
    fn new() -> Self {
        let script = |source: String| {
            let sha = Script::new(&source).get_hash().to_owned();
            (source, sha)
        };
        Scripts {
            all: [
                script(PUBLISH_SCRIPT.to_owned()),
                script(PresenceCall::join_source()),
                script(PresenceCall::leave_source()),
            ],
        }
    }

    fn publish(&self) -> &str {
        &self.all[0].1
    }

    fn presence(&self, call: &PresenceCall) -> &str {
        if call.is_join() {
            &self.all[1].1
        } else {
            &self.all[2].1
        }
    }
}

/// The pipeline that runs `batch[i]` for each `i` in `which`: one
/// `EVALSHA` of its script per job, after a `SCRIPT LOAD` of every script
/// unless `loaded` (Redis already has them).
fn pipeline(scripts: &Scripts, batch: &[Job], which: &[usize], loaded: bool) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    if !loaded {
        for (source, _) in &scripts.all {
            pipe.cmd("SCRIPT").arg("LOAD").arg(source).ignore();
        }
    }
    for job in which.iter().filter_map(|&i| batch.get(i)) {
        let job = match job {
            Job::Publish(job) => job,
            Job::Presence(job) => {
                job.call.add_to(&mut pipe, scripts.presence(&job.call));
                continue;
            }
        };
        pipe.cmd("EVALSHA")
            .arg(scripts.publish())
            .arg(2)
            .arg(position_key(&job.topic))
            .arg(history_key(&job.topic))
            .arg(channel(&job.topic))
            .arg(rand::random::<u64>().max(1))
            .arg(job.time_us)
            .arg(u8::from(job.retain))
            .arg(job.payload.as_ref())
            .arg(POSITION_TTL_SECS)
            .arg(job.history);
    }
    pipe
}

/// Sends `pipe` (`publishes` publishes); each one's answer, in order.
async fn query(
    connection: &mut MultiplexedConnection,
    pipe: redis::Pipeline,
    publishes: usize,
) -> Result<Vec<redis::RedisResult<u64>>, PublishError> {
    let answers = pipe.query_async::<Vec<redis::RedisResult<u64>>>(connection);
    match tokio::time::timeout(REDIS_TIMEOUT, answers).await {
        Err(_) => Err(PublishError::Unconfirmed),
        Ok(Ok(answers)) if answers.len() == publishes => Ok(answers),
        Ok(Ok(answers)) => Err(PublishError::Refused(format!(
            "{} answers to {publishes} publishes",
            answers.len(),
        ))),
        Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() => {
            Err(PublishError::Unconfirmed)
        }
        Ok(Err(e)) => Err(PublishError::Refused(e.to_string())),
    }
}

/// Publishes `batch` in one pipeline; the outcome of each publish, or why
/// none is known (the connection failed or Redis did not answer in time).
///
/// The script is loaded once per connection (`loaded` says whether it
/// was). A publish Redis answered `NOSCRIPT` (its script cache was
/// flushed) did not run: those are sent once more, after loading it again.
async fn send(
    connection: &mut MultiplexedConnection,
    scripts: &Scripts,
    batch: &[Job],
    loaded: &mut bool,
) -> Result<Vec<Result<u64, PublishError>>, PublishError> {
    let mut outcomes: Vec<Option<Result<u64, PublishError>>> = vec![None; batch.len()];
    for _attempt in 0..2 {
        let pending: Vec<usize> = (0..batch.len())
            .filter(|&i| outcomes[i].is_none())
            .collect();
        let pipe = pipeline(scripts, batch, &pending, *loaded);
        let answers = query(connection, pipe, pending.len()).await?;
        *loaded = true;
        for (i, answer) in pending.into_iter().zip(answers) {
            match answer {
                Ok(seq) => outcomes[i] = Some(Ok(seq)),
                Err(e) if e.code() == Some("NOSCRIPT") => *loaded = false,
                Err(e) => outcomes[i] = Some(Err(PublishError::Refused(e.to_string()))),
            }
        }
        if *loaded {
            break;
        }
    }
    let not_loaded = || PublishError::Refused("Redis does not keep the scripts".to_owned());
    Ok(outcomes
        .into_iter()
        .map(|outcome| outcome.unwrap_or_else(|| Err(not_loaded())))
        .collect())
}

/// Counts the outcomes of a batch's publishes in `metrics` (presence jobs
/// count their own).
fn count(metrics: &Metrics, batch: &[Job], results: &[Result<u64, PublishError>]) {
    let pairs = batch.iter().zip(results);
    let results: Vec<&Result<u64, PublishError>> = pairs
        .filter(|(job, _)| matches!(job, Job::Publish(_)))
        .map(|(_, result)| result)
        .collect();
    let published = results.iter().filter(|r| r.is_ok()).count() as u64;
    let failed = results.len() as u64 - published;
    metrics.messages_published.inc_by(published);
    let publishes = &metrics.backplane_publishes;
    publishes.with_label_values(&["ok"]).inc_by(published);
    publishes.with_label_values(&["failed"]).inc_by(failed);
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        metrics
            .backplane_refused
            .with_label_values(&[e.reason()])
            .inc();
    }
}

impl PublisherTask {
    /// Serves the queue until `shutdown` or until every [`Publisher`] is
    /// gone: connects (and reconnects) to Redis at `target`, keeps
    /// `health` current, counts in `metrics`.
    pub async fn run(
        mut self,
        target: Arc<Target>,
        health: Arc<Health>,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) {
        let scripts = Scripts::new();
        let mut connection: Option<MultiplexedConnection> = None;
        // Whether Redis has the script, as far as this connection knows.
        let mut script_loaded = false;
        let mut next_attempt = Instant::now();
        let mut batch = Vec::with_capacity(BATCH);
        let mut was_up = false;
        let mut losses_seen = health.losses();
        let publish_seconds = metrics
            .backplane_redis_seconds
            .with_label_values(&["publish"]);
        let ping_seconds = metrics.backplane_redis_seconds.with_label_values(&["ping"]);
        loop {
            if connection.is_some() && health.losses() != losses_seen {
                tracing::info!("cluster publisher: Redis was lost; reconnecting");
                connection = None;
                next_attempt = Instant::now();
            }
            if connection.is_none() && Instant::now() >= next_attempt {
                losses_seen = health.losses();
                connection = target.multiplexed("cluster publisher").await;
                script_loaded = false;
                next_attempt = Instant::now() + RECONNECT_INTERVAL;
                if connection.is_some() {
                    tracing::info!("cluster publisher: connected to Redis");
                    if was_up {
                        metrics.backplane_reconnects.inc();
                    }
                    was_up = true;
                }
            }
            self.shared.set(connection.as_ref());
            health.set_publisher(connection.is_some());
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                n = self.jobs.recv_many(&mut batch, BATCH) => if n == 0 { return },
                _ = tokio::time::sleep_until(next_attempt), if connection.is_none() => continue,
                () = health.lost() => continue,
                _ = tokio::time::sleep(PING_INTERVAL), if connection.is_some() => {
                    if let Some(c) = connection.as_mut() {
                        let started = Instant::now();
                        let answered = ping(c).await;
                        ping_seconds.observe(started.elapsed().as_secs_f64());
                        if !answered {
                            tracing::warn!("cluster publisher: Redis did not answer PING; reconnecting");
                            connection = None;
                        }
                    }
                    continue;
                }
            }
            let bytes: usize = batch.iter().map(Job::bytes).sum();
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            if let Some(generation) = batch.iter().map(Job::after).max().filter(|g| *g > 0) {
                // Sent anyway after the deadline: only the joining
                // client's own JOIN may then be missed.
                let confirmed = self.interest.confirmed(generation);
                let _ = tokio::time::timeout(REDIS_TIMEOUT, confirmed).await;
            }
            let outcome = match connection.as_mut() {
                Some(c) => {
                    let started = Instant::now();
                    let sent = send(c, &scripts, &batch, &mut script_loaded).await;
                    publish_seconds.observe(started.elapsed().as_secs_f64());
                    sent
                }
                None => Err(PublishError::Unavailable),
            };
            if let Err(e @ (PublishError::Unconfirmed | PublishError::Unavailable)) = &outcome {
                if connection.take().is_some() {
                    tracing::warn!(error = %e, "cluster publisher: lost the Redis connection");
                    self.shared.set(None);
                    health.set_publisher(false);
                }
            }
            let results = match outcome {
                Ok(results) => results,
                Err(e) => vec![Err(e); batch.len()],
            };
            count(&metrics, &batch, &results);
            for (job, result) in batch.drain(..).zip(results) {
                job.finish(result);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A job whose outcome lands in `outcomes`.
    fn job(payload: usize, outcomes: &Arc<Mutex<Vec<Result<u64, PublishError>>>>) -> PublishJob {
        let outcomes = Arc::clone(outcomes);
        PublishJob {
            topic: "t".to_owned(),
            payload: Bytes::from(vec![0; payload]),
            retain: false,
            history: 0,
            time_us: 0,
            done: Box::new(move |result| outcomes.lock().unwrap().push(result)),
        }
    }

    #[test]
    fn a_full_queue_refuses_at_once_by_count_and_by_bytes() {
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        let metrics = Metrics::new();
        let (publisher, task, _) = publisher(&metrics, Arc::default());
        publisher.submit(job(QUEUE_BYTES + 1, &outcomes));
        assert_eq!(*outcomes.lock().unwrap(), vec![Err(PublishError::Busy)]);
        for _ in 0..QUEUE_JOBS {
            publisher.submit(job(1, &outcomes));
        }
        assert_eq!(outcomes.lock().unwrap().len(), 1, "all queued");
        publisher.submit(job(1, &outcomes));
        assert_eq!(outcomes.lock().unwrap()[1], Err(PublishError::Busy));
        // Refused jobs gave their bytes back: only the queued ones count.
        assert_eq!(task.queued_bytes.load(Ordering::Acquire), QUEUE_JOBS);
        drop(task);
        publisher.submit(job(1, &outcomes));
        assert_eq!(outcomes.lock().unwrap()[2], Err(PublishError::Unavailable));
        let refused = |reason: &str| metrics.backplane_refused.with_label_values(&[reason]).get();
        assert_eq!((refused("busy"), refused("unavailable")), (2, 1));
    }
}
