//! When a connection's writer last moved bytes to its socket: the clock
//! behind the slow-consumer rule and producer backpressure.
//!
//! A subscriber is slow when *its own socket* does not drain, not when the
//! broker is behind. The writer records a timestamp each time it starts on
//! queued data and each time a write completes; while it waits for data
//! (nothing queued) it marks itself idle, which stops the clock, so a
//! writer that is merely not scheduled yet (a CPU-bound fan-out) never
//! counts as stalled. Readers compare the timestamp with `now` only on the
//! rare path (a queue over its high-water mark), so the common push reads
//! no clock.
//!
//! The timestamp is coarse: milliseconds since a process-wide epoch in one
//! `AtomicU64` (0 means idle).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a queue may hold bytes with no write progress before its
/// connection counts as a slow consumer, unless configured
/// (`slow_consumer_timeout`).
pub const DEFAULT_SLOW_CONSUMER_TIMEOUT: Duration = Duration::from_secs(2);

const IDLE: u64 = 0;

/// The process-wide origin of the millisecond timestamps.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Milliseconds from the epoch to `at`, plus one (0 is [`IDLE`]).
fn stamp(at: Instant) -> u64 {
    let millis = at.saturating_duration_since(epoch()).as_millis();
    u64::try_from(millis).unwrap_or(u64::MAX - 1) + 1
}

/// The write-progress timestamp of one connection.
#[derive(Debug, Default)]
pub struct WriteProgress {
    at: AtomicU64,
}

impl WriteProgress {
    /// An idle writer's progress: no clock running.
    pub fn new() -> Self {
        WriteProgress::default()
    }

    /// The writer made progress (or started on queued data) at `now`.
    pub fn record(&self, now: Instant) {
        self.at.store(stamp(now), Ordering::Relaxed);
    }

    /// The writer waits for data: nothing it could be blamed for.
    pub fn set_idle(&self) {
        self.at.store(IDLE, Ordering::Relaxed);
    }

    /// How long ago the last progress was, at `now`; `None` while idle.
    pub fn since(&self, now: Instant) -> Option<Duration> {
        let at = self.at.load(Ordering::Relaxed);
        if at == IDLE {
            return None;
        }
        Some(Duration::from_millis(stamp(now).saturating_sub(at)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_writer_has_no_clock_running() {
        let progress = WriteProgress::new();
        assert_eq!(progress.since(Instant::now()), None);
        let now = Instant::now();
        progress.record(now);
        let later = now + Duration::from_millis(1500);
        let since = progress.since(later).expect("recorded");
        assert!(since >= Duration::from_millis(1499) && since <= Duration::from_millis(1501));
        progress.set_idle();
        assert_eq!(progress.since(later), None);
    }

    #[test]
    fn a_timestamp_in_the_future_reads_as_no_delay() {
        let progress = WriteProgress::new();
        let now = Instant::now();
        progress.record(now + Duration::from_secs(1));
        assert_eq!(progress.since(now), Some(Duration::ZERO));
    }
}
