//! The witness: one publisher that numbers its messages and two
//! subscribers (one by exact topics, one by a wildcard) that must see every
//! one of them, in order, while the waves come and go.
//!
//! Each payload carries two counters: the publisher's global count and the
//! count on its topic. A subscriber of every witness topic must see the
//! global count go up by exactly one each time (messages from one publishing
//! connection arrive in publish order) and each topic's `seq` equal that
//! topic's count (no gap, no duplicate, nothing from elsewhere).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tickwire_e2e::{RawClient, Received};
use tickwire_protocol::ws::OpCode;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Topics the witness publishes to: `witness.0` … `witness.3`.
const TOPICS: usize = 4;
/// The publisher's pace: one message per tick.
const TICK: Duration = Duration::from_millis(2);

/// The running witness.
pub struct Witness {
    stop: watch::Sender<bool>,
    publisher: JoinHandle<u64>,
    subscribers: Vec<JoinHandle<u64>>,
    /// Messages published so far.
    published: Arc<AtomicU64>,
    /// Messages each subscriber has checked so far.
    seen: Vec<Arc<AtomicU64>>,
}

/// WebSocket connections the witness holds.
pub const CONNECTIONS: usize = 3;
/// Subscriptions the witness holds.
pub const SUBSCRIPTIONS: usize = TOPICS + 1;

impl Witness {
    /// Connects both subscribers, then starts publishing.
    pub async fn start(addr: SocketAddr) -> Witness {
        let mut exact = RawClient::connect(addr).await;
        for k in 0..TOPICS {
            exact.subscribe(&format!("witness.{k}")).await;
        }
        let mut wildcard = RawClient::connect(addr).await;
        wildcard.subscribe("witness.*").await;
        let publisher = RawClient::connect(addr).await;

        let (stop, stop_rx) = watch::channel(false);
        let (total_tx, total_rx) = watch::channel(None);
        let published = Arc::new(AtomicU64::new(0));
        let mut seen = Vec::new();
        let subscribers = [exact, wildcard]
            .into_iter()
            .enumerate()
            .map(|(i, client)| {
                let count = Arc::new(AtomicU64::new(0));
                seen.push(count.clone());
                tokio::spawn(check(i, client, total_rx.clone(), count))
            })
            .collect();
        let publisher = tokio::spawn(publish(publisher, stop_rx, total_tx, published.clone()));
        Witness {
            stop,
            publisher,
            subscribers,
            published,
            seen,
        }
    }

    /// Messages published so far and the fewest any subscriber has checked.
    pub fn progress(&self) -> (u64, u64) {
        let seen = self
            .seen
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        (self.published.load(Ordering::Relaxed), seen)
    }

    /// Fails now if a witness task already stopped: a subscriber that
    /// found a gap, a disorder or a close.
    pub async fn check_alive(&mut self) {
        for task in self.subscribers.iter_mut().chain([&mut self.publisher]) {
            if task.is_finished() {
                match task.await {
                    Ok(_) => panic!("a witness task ended before the soak did"),
                    Err(e) => std::panic::resume_unwind(e.into_panic()),
                }
            }
        }
    }

    /// Stops publishing and waits until both subscribers have checked every
    /// message; returns how many were published.
    pub async fn finish(self) -> u64 {
        self.stop.send_replace(true);
        let total = join(self.publisher).await;
        for subscriber in self.subscribers {
            assert_eq!(join(subscriber).await, total, "a witness missed messages");
        }
        total
    }
}

async fn join(task: JoinHandle<u64>) -> u64 {
    match tokio::time::timeout(tickwire_e2e::WAIT, task).await {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => std::panic::resume_unwind(e.into_panic()),
        Err(_) => panic!("a witness task did not finish in time"),
    }
}

/// Publishes one numbered message per [`TICK`], round robin over the
/// witness topics, until `stop`; the last one is acknowledged, so every
/// message is published when the total goes out on `total`.
async fn publish(
    mut client: RawClient,
    mut stop: watch::Receiver<bool>,
    total: watch::Sender<Option<u64>>,
    published: Arc<AtomicU64>,
) -> u64 {
    let mut per_topic = [0u64; TOPICS];
    let mut global = 0u64;
    let mut ticks = tokio::time::interval(TICK);
    loop {
        let last = tokio::select! {
            _ = ticks.tick() => false,
            _ = stop.wait_for(|stop| *stop) => true,
        };
        let k = (global as usize) % TOPICS;
        global += 1;
        per_topic[k] += 1;
        let topic = format!("witness.{k}");
        let mut payload = global.to_be_bytes().to_vec();
        payload.extend_from_slice(&per_topic[k].to_be_bytes());
        if last {
            let seq = client.publish_acked(&topic, &payload).await;
            assert_eq!(seq, per_topic[k], "the broker numbered {topic}");
            published.store(global, Ordering::Relaxed);
            total.send_replace(Some(global));
            return global;
        }
        client.publish(&topic, &payload).await;
        published.store(global, Ordering::Relaxed);
    }
}

/// Receives and checks every witness message until `total` of them.
async fn check(
    which: usize,
    mut client: RawClient,
    mut total: watch::Receiver<Option<u64>>,
    seen: Arc<AtomicU64>,
) -> u64 {
    let name = ["exact", "wildcard"][which];
    let mut last_global = 0u64;
    loop {
        if total.borrow().is_some_and(|t| t == last_global) {
            return last_global;
        }
        // Once the total is known, only messages are left to wait for.
        let item = if total.borrow().is_some() {
            client.recv().await
        } else {
            tokio::select! {
                item = client.recv() => item,
                _ = total.changed() => continue,
            }
        };
        match item {
            Received::Message {
                topic,
                seq,
                payload,
                ..
            } => {
                let Some((global, counted)) = counters(&payload) else {
                    panic!("{name} witness: foreign payload {payload:?} on {topic}");
                };
                assert_eq!(
                    global,
                    last_global + 1,
                    "{name} witness: message {global} on {topic} after {last_global}: lost or out of order"
                );
                assert_eq!(
                    seq, counted,
                    "{name} witness: {topic} seq {seq} carries its count {counted}"
                );
                last_global = global;
                seen.store(global, Ordering::Relaxed);
            }
            Received::Ping => client.send_frame(OpCode::Pong, b"").await,
            other => panic!("{name} witness: got {other:?} after message {last_global}"),
        }
    }
}

/// The global and per-topic counts of a witness payload.
fn counters(payload: &[u8]) -> Option<(u64, u64)> {
    let (global, topic) = payload.split_first_chunk::<8>()?;
    Some((
        u64::from_be_bytes(*global),
        u64::from_be_bytes(topic.try_into().ok()?),
    ))
}
