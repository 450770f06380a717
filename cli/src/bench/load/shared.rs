//! What the load threads share: per-connection and per-topic atomic
//! counters, the start/stop/finish signals, and the clock that stamps
//! messages.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::super::{CommonArgs, LoadArgs};
use super::nodes::Nodes;
use super::plan::LoadPlan;

/// `close_code` value: the connection is open.
pub(super) const OPEN: u32 = 0;
/// `close_code` value: EOF without a close frame.
pub(super) const EOF: u32 = 100_000;
/// `close_code` value: an I/O or framing error.
pub(super) const FAILED: u32 = 100_001;
/// The slow-consumer close code.
pub(super) const SLOW_CONSUMER: u32 = 4001;

/// The counters one subscriber publishes for the other threads.
#[derive(Debug, Default)]
pub(crate) struct SubShared {
    /// `MESSAGE` frames received.
    pub(crate) received: AtomicU64,
    /// Sequence numbers skipped.
    pub(super) seq_gaps: AtomicU64,
    /// Sequence numbers that repeated or went backwards (a duplicate, or
    /// messages out of order).
    pub(super) seq_regressions: AtomicU64,
    /// `ERROR` replies received.
    pub(super) errors: AtomicU64,
    /// Compressed (permessage-deflate) messages received.
    pub(super) compressed: AtomicU64,
    /// Bytes read from the socket after the subscription was confirmed
    /// (frame headers included): what the messages cost on the wire.
    pub(super) wire_bytes: AtomicU64,
    /// How the connection ended ([`OPEN`] while it is open).
    pub(super) close_code: AtomicU32,
}

/// One topic's publish count.
#[derive(Debug)]
pub(super) struct TopicShared {
    /// The topic name.
    pub(super) name: String,
    /// Messages published to it so far.
    pub(super) published: AtomicU64,
}

/// One publisher's counters and result.
#[derive(Debug, Default)]
pub(super) struct PubShared {
    /// Messages written.
    pub(super) sent: AtomicU64,
    /// With `--rate`: the largest backlog found on waking, in messages.
    pub(super) max_lag_msgs: AtomicU64,
    /// `ERROR` replies received.
    pub(super) errors: AtomicU64,
    /// How the connection ended ([`OPEN`] while it is open).
    pub(super) close_code: AtomicU32,
    /// Whether the publisher stopped writing.
    pub(super) done: AtomicBool,
    /// The first write failure.
    pub(super) failure: Mutex<Option<String>>,
}

/// Everything the threads share.
pub(super) struct Ctx {
    pub(super) plan: LoadPlan,
    pub(super) common: CommonArgs,
    pub(super) load: LoadArgs,
    /// Where each connection goes.
    pub(super) nodes: Nodes,
    pub(super) subs: Vec<SubShared>,
    pub(super) topics: Vec<TopicShared>,
    pub(super) pubs: Vec<PubShared>,
    /// Cancelled when publishing starts.
    pub(super) start: CancellationToken,
    /// Set when publishing stops.
    pub(super) stop: AtomicBool,
    /// Cancelled when the run ends (or setup failed).
    pub(super) finish: CancellationToken,
}

impl Ctx {
    /// Fresh counters for `plan`, run on `load.threads` threads.
    pub(super) fn new(plan: LoadPlan, common: CommonArgs, load: LoadArgs, nodes: Nodes) -> Ctx {
        Ctx {
            subs: (0..plan.subscriber_count())
                .map(|_| SubShared::default())
                .collect(),
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
            load,
            nodes,
            start: CancellationToken::new(),
            stop: AtomicBool::new(false),
            finish: CancellationToken::new(),
        }
    }

    /// The received count of the slowest live subscriber of topic `t`;
    /// `None` when none is live.
    pub(super) fn min_received(&self, t: usize) -> Option<u64> {
        let k = self.plan.subscribers_per_topic;
        self.subs[t * k..(t + 1) * k]
            .iter()
            .filter(|s| s.close_code.load(Relaxed) == OPEN)
            .map(|s| s.received.load(Relaxed))
            .min()
    }

    /// (expected, received) deliveries so far, all subscribers together.
    pub(super) fn totals(&self) -> (u64, u64) {
        let k = self.plan.subscribers_per_topic as u64;
        let expected = self
            .topics
            .iter()
            .map(|t| t.published.load(Relaxed) * k)
            .sum();
        let received = self.subs.iter().map(|s| s.received.load(Relaxed)).sum();
        (expected, received)
    }

    /// Messages published so far, all topics together.
    pub(super) fn published(&self) -> u64 {
        self.topics.iter().map(|t| t.published.load(Relaxed)).sum()
    }

    /// (compressed messages, bytes read) by all subscribers together.
    pub(super) fn wire(&self) -> (u64, u64) {
        self.subs.iter().fold((0, 0), |(c, b), s| {
            (
                c + s.compressed.load(Relaxed),
                b + s.wire_bytes.load(Relaxed),
            )
        })
    }

    /// Subscribers whose connection is still open.
    pub(super) fn live_subscribers(&self) -> usize {
        self.subs
            .iter()
            .filter(|s| s.close_code.load(Relaxed) == OPEN)
            .count()
    }

    /// Subscribers closed with `code`.
    pub(super) fn subscribers_closed_with(&self, code: u32) -> usize {
        self.subs
            .iter()
            .filter(|s| s.close_code.load(Relaxed) == code)
            .count()
    }
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
