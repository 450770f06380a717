//! Whether this node's Redis connections work, for `/readyz` and the
//! `tickwire_backplane_up` gauge.
//!
//! The node is ready only while both hold: the subscriber connection is
//! established (its subscriptions are being kept), and the publisher's
//! connection is established. Each task sets its own flag.
//!
//! The subscriber notices a lost Redis at once (its connection closes, it
//! reads all the time); it then tells the publisher ([`Health::lost`]),
//! whose multiplexed connection may sit idle and would otherwise fail only
//! at the next publish.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus::IntGauge;
use tokio::sync::Notify;

/// The state of the two Redis connections.
#[derive(Debug)]
pub struct Health {
    subscriber: AtomicBool,
    publisher: AtomicBool,
    gauge: IntGauge,
    losses: AtomicU64,
    lost: Notify,
}

impl Health {
    /// Both connections down (not yet made); `gauge` shows [`Health::is_up`].
    pub fn new(gauge: IntGauge) -> Self {
        gauge.set(0);
        Health {
            subscriber: AtomicBool::new(false),
            publisher: AtomicBool::new(false),
            gauge,
            losses: AtomicU64::new(0),
            lost: Notify::new(),
        }
    }

    /// Whether both connections are up.
    pub fn is_up(&self) -> bool {
        self.subscriber.load(Ordering::Relaxed) && self.publisher.load(Ordering::Relaxed)
    }

    /// The subscriber task's connection went up or down.
    pub fn set_subscriber(&self, up: bool) {
        self.subscriber.store(up, Ordering::Relaxed);
        self.gauge.set(i64::from(self.is_up()));
    }

    /// The publisher task's connection went up or down.
    pub fn set_publisher(&self, up: bool) {
        self.publisher.store(up, Ordering::Relaxed);
        self.gauge.set(i64::from(self.is_up()));
    }

    /// The subscriber lost its connection: the publisher's is suspect too.
    pub fn subscriber_lost(&self) {
        self.set_subscriber(false);
        self.losses.fetch_add(1, Ordering::AcqRel);
        self.lost.notify_one();
    }

    /// How many times the subscriber lost its connection so far.
    pub fn losses(&self) -> u64 {
        self.losses.load(Ordering::Acquire)
    }

    /// Resolves when the subscriber lost its connection since the last call
    /// returned. One waiter: the publisher task.
    pub async fn lost(&self) {
        self.lost.notified().await;
    }
}
