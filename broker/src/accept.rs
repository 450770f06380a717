//! What an accept loop does when `accept()` fails: pause, count, and log at
//! a bounded rate.
//!
//! `accept()` fails for two kinds of reasons:
//!
//! * **The process or the system is out of something**: `EMFILE` (the
//!   process's file descriptor limit, `RLIMIT_NOFILE`), `ENFILE` (the
//!   system's), `ENOBUFS`, `ENOMEM`. The connection stays in the kernel's
//!   backlog, so an immediate retry fails the same way: a loop that retried
//!   at once would burn a core and write a log line per attempt while
//!   nothing changes. The loop pauses instead, [`FIRST_PAUSE`] after the
//!   first failure and twice as long after each further one, up to
//!   [`MAX_PAUSE`]; the next successful accept starts over. Connections
//!   already open keep being served meanwhile: they are other tasks.
//! * **One connection failed** before it could be taken: `ECONNABORTED`
//!   (the client gave up while in the backlog), `ECONNRESET`, `EPERM` (a
//!   firewall rule), `EINTR`. The next connection is unaffected: retry at
//!   once. This cannot spin, since each such failure consumes a connection.
//!
//! Any error not known to be a connection's own counts as the first kind:
//! when in doubt, pause. Every failure counts in
//! `tickwire_accept_errors_total{listener}`; the log gets the first failure
//! and then at most one line per [`LOG_INTERVAL`], which says how many
//! failures it stands for.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prometheus::IntCounter;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// The pause after the first failure of a run.
pub const FIRST_PAUSE: Duration = Duration::from_millis(10);
/// The longest pause: how long a listener may stay deaf once the cause is
/// gone.
pub const MAX_PAUSE: Duration = Duration::from_secs(1);
/// At most one log line per listener per this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The accept failures of one listener: its back-off, its counter, its
/// log rate.
#[derive(Debug)]
pub struct AcceptErrors {
    listener: &'static str,
    counter: IntCounter,
    /// The pause after the next resource failure.
    next_pause: Duration,
    /// Failures not logged since the last log line.
    unlogged: u64,
    /// When the last log line was written.
    last_log: Option<Instant>,
}

impl AcceptErrors {
    /// Failure tracking for `listener` (one of
    /// [`crate::metrics::ACCEPT_LISTENERS`]), counted in `metrics`.
    pub fn new(listener: &'static str, metrics: &Metrics) -> Self {
        AcceptErrors {
            listener,
            counter: metrics.accept_errors.with_label_values(&[listener]),
            next_pause: FIRST_PAUSE,
            unlogged: 0,
            last_log: None,
        }
    }

    /// The next connection of `listener`, pausing after failures as the
    /// module documentation says; `None` once `stop` is cancelled.
    pub async fn next(
        &mut self,
        listener: &TcpListener,
        stop: &CancellationToken,
    ) -> Option<(TcpStream, SocketAddr)> {
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return None,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok(pair) => {
                    self.succeeded();
                    return Some(pair);
                }
                Err(e) => {
                    let pause = self.failed(&e, Instant::now());
                    tokio::select! {
                        _ = stop.cancelled() => return None,
                        _ = tokio::time::sleep(pause) => {}
                    }
                }
            }
        }
    }

    /// A connection was accepted: the next failure pauses briefly again.
    pub fn succeeded(&mut self) {
        self.next_pause = FIRST_PAUSE;
    }

    /// Counts and (rate-limited) logs a failed accept at `now`; returns how
    /// long the loop must pause before accepting again (zero for a failure
    /// of one connection).
    pub fn failed(&mut self, error: &io::Error, now: Instant) -> Duration {
        self.counter.inc();
        let pause = if is_connection_error(error) {
            Duration::ZERO
        } else {
            let pause = self.next_pause;
            self.next_pause = (pause * 2).min(MAX_PAUSE);
            pause
        };
        self.unlogged += 1;
        let due = self
            .last_log
            .is_none_or(|last| now.duration_since(last) >= LOG_INTERVAL);
        if due {
            tracing::warn!(
                listener = self.listener,
                error = %error,
                failures_since_last_line = self.unlogged,
                ?pause,
                "accept failed; pausing this listener, existing connections are still served"
            );
            self.unlogged = 0;
            self.last_log = Some(now);
        }
        pause
    }
}

/// Whether `error` is the failure of one pending connection rather than a
/// lack of resources (see the module documentation).
fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::PermissionDenied
            | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `EMFILE`: the descriptor limit.
    fn emfile() -> io::Error {
        io::Error::from_raw_os_error(24)
    }

    /// Fresh metrics and the main listener's failure tracking.
    fn main_listener() -> (Metrics, AcceptErrors) {
        let metrics = Metrics::new();
        let errors = AcceptErrors::new("main", &metrics);
        (metrics, errors)
    }

    fn failures(metrics: &Metrics) -> u64 {
        metrics.accept_errors.with_label_values(&["main"]).get()
    }

    #[test]
    fn resource_failures_pause_longer_and_longer_up_to_a_second() {
        let (metrics, mut errors) = main_listener();
        let now = Instant::now();
        let pauses: Vec<u128> = (0..10)
            .map(|_| errors.failed(&emfile(), now).as_millis())
            .collect();
        assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        assert_eq!(failures(&metrics), 10);
    }

    #[test]
    fn a_success_starts_the_back_off_over() {
        let (_metrics, mut errors) = main_listener();
        let now = Instant::now();
        for _ in 0..5 {
            errors.failed(&emfile(), now);
        }
        errors.succeeded();
        assert_eq!(errors.failed(&emfile(), now), FIRST_PAUSE);
    }

    #[test]
    fn a_failed_connection_is_retried_at_once_and_keeps_the_back_off() {
        let (metrics, mut errors) = main_listener();
        let now = Instant::now();
        errors.failed(&emfile(), now);
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(errors.failed(&aborted, now), Duration::ZERO);
        assert_eq!(errors.failed(&emfile(), now), FIRST_PAUSE * 2);
        assert_eq!(failures(&metrics), 3);
    }

    #[test]
    fn unknown_errors_pause() {
        let (_metrics, mut errors) = main_listener();
        let odd = io::Error::other("something else");
        assert_eq!(errors.failed(&odd, Instant::now()), FIRST_PAUSE);
    }

    #[test]
    fn the_log_gets_one_line_per_interval() {
        let (_metrics, mut errors) = main_listener();
        let start = Instant::now();
        errors.failed(&emfile(), start);
        assert_eq!((errors.unlogged, errors.last_log), (0, Some(start)));
        for i in 1..=100 {
            errors.failed(&emfile(), start + Duration::from_millis(i));
        }
        assert_eq!((errors.unlogged, errors.last_log), (100, Some(start)));
        let later = start + LOG_INTERVAL;
        errors.failed(&emfile(), later);
        assert_eq!((errors.unlogged, errors.last_log), (0, Some(later)));
    }
}
