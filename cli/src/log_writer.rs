//! The broker's log writer: lines go through a bounded queue to a thread of
//! their own, which writes them to standard error. Logging can neither fail
//! nor block a task, whatever happens to standard error.
//!
//! * A write that fails (a closed pipe, a full disk) loses that line and
//!   nothing else. Reporting it is out of the question: the report would go
//!   to the same broken stream. (`tracing_subscriber` would report it with
//!   `eprintln!`, which panics, and the panic would kill the task that
//!   logged, such as the one that turns SIGTERM into a shutdown.)
//! * A reader that stops reading (a stalled log collector) fills the pipe,
//!   and then a write blocks. Only the log thread waits; the runtime's
//!   threads go on. While it waits the queue fills up to [`QUEUE_LINES`]
//!   lines, and further lines are dropped and counted; the count is written
//!   as one line once the log thread can write again.
//!
//! [`LogFlush::flush`] lets the process write what is queued before it
//! exits, waiting at most [`FLUSH_WAIT`].

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

/// Lines the queue holds at most (a few hundred bytes each).
pub const QUEUE_LINES: usize = 4096;
/// How long [`LogFlush::flush`] waits for the queued lines to be written.
pub const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// What the log thread is given.
enum Entry {
    /// One formatted log line.
    Line(Vec<u8>),
    /// Answer on this channel once everything before it is written.
    Flush(mpsc::Sender<()>),
}

/// Hands log lines to the log thread (`tracing_subscriber`'s writer: the
/// subscriber writes each event with one `write_all`).
#[derive(Clone)]
pub struct LogWriter {
    queue: SyncSender<Entry>,
    dropped: Arc<AtomicU64>,
}

/// Writes what is queued before the process exits.
pub struct LogFlush {
    queue: SyncSender<Entry>,
}

/// Starts the log thread.
pub fn start() -> io::Result<(LogWriter, LogFlush)> {
    let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
    let dropped = Arc::new(AtomicU64::new(0));
    let counted = dropped.clone();
    std::thread::Builder::new()
        .name("tickwire-log".to_owned())
        .spawn(move || write_lines(lines, &counted, &mut io::stderr()))?;
    Ok((
        LogWriter {
            queue: queue.clone(),
            dropped,
        },
        LogFlush { queue },
    ))
}

/// The log thread: writes every line to `out`, ignoring failures, and says
/// how many lines were dropped while it could not keep up.
fn write_lines(lines: Receiver<Entry>, dropped: &AtomicU64, out: &mut impl Write) {
    for entry in lines {
        match entry {
            Entry::Line(line) => {
                let _ = out.write_all(&line);
            }
            Entry::Flush(done) => {
                let _ = out.flush();
                let _ = done.send(());
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let _ = writeln!(
                out,
                "tickwire: {lost} log lines dropped: standard error was not read fast enough"
            );
        }
    }
}

impl Write for LogWriter {
    /// Queues `buf` as one line; when the queue is full the line is dropped
    /// and counted. Never fails and never waits.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Err(TrySendError::Full(_)) = self.queue.try_send(Entry::Line(buf.to_vec())) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LogFlush {
    /// Waits until the lines logged so far are written, at most
    /// [`FLUSH_WAIT`]: a stalled standard error must not keep the process
    /// from exiting.
    pub fn flush(&self) {
        let (done, written) = mpsc::channel();
        match self.queue.try_send(Entry::Flush(done)) {
            Ok(()) => {}
            Err(TrySendError::Full(entry)) => {
                // Wait for room on a thread of its own, so the wait below
                // stays bounded; if the thread cannot start, `entry` (and
                // so the answer's sender) is dropped and the wait ends.
                let queue = self.queue.clone();
                let _ = std::thread::Builder::new().spawn(move || queue.send(entry));
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
        let _ = written.recv_timeout(FLUSH_WAIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose every write fails, like a closed pipe.
    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }

        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    fn writer(capacity: usize) -> (LogWriter, Receiver<Entry>) {
        let (queue, lines) = mpsc::sync_channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        (LogWriter { queue, dropped }, lines)
    }

    #[test]
    fn a_full_queue_drops_and_counts_lines_and_the_count_is_written_later() {
        let (mut log, lines) = writer(2);
        for line in ["a\n", "b\n", "c\n", "d\n"] {
            assert_eq!(log.write(line.as_bytes()).ok(), Some(2));
        }
        assert_eq!(log.dropped.load(Ordering::Relaxed), 2);
        drop(log.queue);
        let mut out = Vec::new();
        write_lines(lines, &log.dropped, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "a\ntickwire: 2 log lines dropped: standard error was not read fast enough\nb\n"
        );
    }

    #[test]
    fn failed_writes_are_ignored_and_flush_is_still_answered() {
        let (mut log, lines) = writer(4);
        let (done, written) = mpsc::channel();
        log.write_all(b"lost\n").expect("queued");
        log.queue.try_send(Entry::Flush(done)).expect("queued");
        drop(log.queue);
        write_lines(lines, &log.dropped, &mut Broken);
        assert_eq!(written.try_recv(), Ok(()));
    }

    #[test]
    fn flush_waits_no_longer_than_its_bound_when_nothing_writes() {
        let (queue, _lines) = mpsc::sync_channel(1);
        queue
            .try_send(Entry::Line(b"stuck\n".to_vec()))
            .expect("queued");
        let started = std::time::Instant::now();
        LogFlush { queue }.flush();
        assert!(started.elapsed() < FLUSH_WAIT * 3);
    }
}
