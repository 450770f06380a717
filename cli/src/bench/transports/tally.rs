//! What one subscriber counts, whatever its transport: deliveries, order
//! (sequence gaps and regressions), latency, how its stream ended, and the
//! bytes its socket carried in each direction.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hdrhistogram::Histogram;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::super::report;

/// What a run's subscribers share with the main task.
#[derive(Debug, Default)]
pub struct RunShared {
    /// Deliveries so far, all subscribers together (for progress and the
    /// drain).
    pub received: AtomicU64,
    /// Cancelled when the run ends: every subscriber stops reading.
    pub finish: CancellationToken,
}

/// One subscriber's counters.
#[derive(Debug)]
pub struct Tally {
    /// Deliveries received.
    pub received: u64,
    /// Sequence numbers skipped.
    pub seq_gaps: u64,
    /// Times the sequence number repeated or went backwards.
    pub seq_regressions: u64,
    /// Deliveries without the benchmark's send time (no latency sample).
    pub unstamped: u64,
    /// Error events or replies.
    pub errors: u64,
    /// Why the stream ended before the run did (`None` while it is open).
    pub closed: Option<String>,
    /// Bytes the socket received (response heads, framing, deliveries).
    pub bytes_in: u64,
    /// Bytes the socket sent (requests, subscribe, pongs).
    pub bytes_out: u64,
    /// Latency samples, nanoseconds.
    pub histogram: Histogram<u64>,
    last_seq: Option<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            received: 0,
            seq_gaps: 0,
            seq_regressions: 0,
            unstamped: 0,
            errors: 0,
            closed: None,
            bytes_in: 0,
            bytes_out: 0,
            histogram: report::new_histogram(),
            last_seq: None,
        }
    }
}

impl Tally {
    /// Counts one delivery with sequence number `seq`, sent at `sent_ns`
    /// (if stamped) and read at `now_ns`.
    pub fn record(&mut self, seq: u64, sent_ns: Option<u64>, now_ns: u64) {
        self.received += 1;
        if let Some(last) = self.last_seq {
            if seq > last + 1 {
                self.seq_gaps += seq - last - 1;
            } else if seq <= last {
                self.seq_regressions += 1;
            }
        }
        self.last_seq = Some(seq);
        match sent_ns {
            Some(sent) => self
                .histogram
                .saturating_record(now_ns.saturating_sub(sent).max(1)),
            None => self.unstamped += 1,
        }
    }

    /// Notes that the stream ended early, keeping the first reason.
    pub fn close(&mut self, reason: impl Into<String>) {
        self.closed.get_or_insert_with(|| reason.into());
    }

    /// Reads the bytes `stream` carried so far in each direction from the
    /// kernel (`TCP_INFO`: `tcpi_bytes_received`, `tcpi_bytes_acked`): every
    /// byte the connection read or wrote, setup included, whoever wrote it.
    pub fn count_socket(&mut self, stream: &TcpStream) {
        if let Some((bytes_in, bytes_out)) = socket_bytes(stream) {
            self.bytes_in = bytes_in;
            self.bytes_out = bytes_out;
        }
    }
}

/// (received, written) bytes of a TCP socket: `tcpi_bytes_received`, and
/// `tcpi_bytes_acked` plus what the send queue still holds (`TIOCOUTQ`:
/// written but not yet acknowledged), so a request written just before the
/// run ends counts too.
fn socket_bytes(stream: &TcpStream) -> Option<(u64, u64)> {
    let fd = stream.as_raw_fd();
    // SAFETY: a zeroed tcp_info is a valid value (plain integers).
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the pointer and length describe `info`, which outlives the
    // call; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int through the valid pointer.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
    let queued = if rc == 0 {
        u64::try_from(queued).unwrap_or(0)
    } else {
        0
    };
    // The kernel counts the SYN's sequence number as one acknowledged byte.
    Some((
        info.tcpi_bytes_received,
        info.tcpi_bytes_acked.saturating_sub(1) + queued,
    ))
}

/// Adds up the tallies of a run's subscribers.
pub fn merge(tallies: &[Tally]) -> Tally {
    let mut all = Tally::default();
    for t in tallies {
        all.received += t.received;
        all.seq_gaps += t.seq_gaps;
        all.seq_regressions += t.seq_regressions;
        all.unstamped += t.unstamped;
        all.errors += t.errors;
        all.bytes_in += t.bytes_in;
        all.bytes_out += t.bytes_out;
        // Same bounds everywhere, so adding cannot fail.
        let _ = all.histogram.add(&t.histogram);
    }
    all
}

/// Bumps the run's shared delivery count by what `tally` received since
/// `reported`, and remembers it.
pub fn report_progress(shared: &RunShared, tally: &Tally, reported: &mut u64) {
    shared
        .received
        .fetch_add(tally.received - *reported, Relaxed);
    *reported = tally.received;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_latency() {
        let mut t = Tally::default();
        t.record(5, Some(100), 300);
        t.record(6, Some(100), 400);
        t.record(9, None, 500);
        t.record(9, Some(500), 500);
        t.record(3, Some(1), 2);
        assert_eq!((t.received, t.seq_gaps, t.seq_regressions), (5, 2, 2));
        assert_eq!((t.unstamped, t.histogram.len()), (1, 4));
        let all = merge(&[t, Tally::default()]);
        assert_eq!((all.received, all.histogram.len()), (5, 4));
    }

    #[tokio::test]
    async fn socket_bytes_count_both_directions() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        client.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        server.read_exact(&mut buf).await.unwrap();
        server.write_all(b"world!!").await.unwrap();
        let mut buf = [0u8; 7];
        client.read_exact(&mut buf).await.unwrap();
        let mut t = Tally::default();
        t.count_socket(&client);
        assert_eq!((t.bytes_in, t.bytes_out), (7, 5));
    }
}
