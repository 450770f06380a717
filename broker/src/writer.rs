//! The writer of one WebSocket connection (a future of its connection's
//! task, beside the reader: see [`crate::connection`]).
//!
//! It takes everything queued in the connection's [`OutboundReceiver`] at
//! once ([`OutboundReceiver::take_all`]) and writes the frames with
//! vectored writes: each system call carries up to [`MAX_SLICES`] frames
//! (at most `write_batch_bytes`), straight from the shared [`Bytes`] the
//! fan-out encoded once per publish, with no copy into a batch buffer. A
//! partial write leaves the rest of its frames (and the rest of a
//! half-written frame) for the next call. Frames waiting in lanes
//! (slow-consumer policies, `max_rate`) join at their token's place or when
//! their rate limit releases them.
//!
//! The writer also keeps its queue's write-progress clock
//! ([`crate::progress`]): idle while it waits for data, restarted when it
//! starts on queued data and after every write that moved bytes.
//! Metrics are updated once per batch, never per frame.
//!
//! A connection that has been quiet for a moment does not need its writer
//! for the next frame: the pushing task writes it to the socket itself
//! ([`crate::outbound::DIRECT_WRITE_AFTER`]), and the writer only takes
//! what such a write could not finish.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tickwire_protocol::ws::{self, OpCode};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::metrics::Metrics;
use crate::outbound::{CloseFrame, IDLE_ITEMS_KEEP, Item, OutboundReceiver, Taken};

/// Most frames handed to one vectored write (Linux allows 1024).
pub const MAX_SLICES: usize = 256;

/// A batch whose oldest frame waited at least this long shows the broker is
/// behind; only then does the writer coalesce.
pub const COALESCE_WHEN_WAITED: Duration = Duration::from_millis(2);

/// How a connection's writer batches.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// Most bytes handed to one write (`write_batch_bytes`).
    pub batch_bytes: usize,
    /// Pause after a write that did not fill a batch (`write_coalesce`).
    pub coalesce: Duration,
}

/// The frames taken from the queue and not yet fully written, in order.
#[derive(Default)]
struct Pending {
    segments: VecDeque<Bytes>,
    bytes: usize,
    /// When the oldest frame of this batch was queued.
    oldest: Option<Instant>,
    /// Whether the front segment is partly written (it must be finished
    /// before anything else, even a close frame, goes out).
    started: bool,
}

impl Pending {
    fn add(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.segments.push_back(frame);
    }

    /// Frames queued at `queued_at` joined the batch.
    fn queued_at(&mut self, queued_at: Instant) {
        self.oldest = Some(self.oldest.map_or(queued_at, |o| o.min(queued_at)));
    }

    /// Drops `n` written bytes off the front.
    fn consume(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let Some(front) = self.segments.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.segments.pop_front();
                self.started = false;
            } else {
                front.advance(n);
                self.started = true;
                n = 0;
            }
        }
    }

    /// Drops every frame not yet begun (after an overflow); returns the bytes
    /// dropped.
    fn discard_unstarted(&mut self) -> usize {
        let keep = usize::from(self.started);
        let mut dropped = 0;
        while self.segments.len() > keep {
            if let Some(frame) = self.segments.pop_back() {
                dropped += frame.len();
            }
        }
        self.bytes -= dropped;
        dropped
    }
}

/// Writes the front of `segments` with one vectored write: up to
/// [`MAX_SLICES`] frames, stopping once `max_bytes` are included.
async fn write_some<W: AsyncWrite + Unpin>(
    socket: &mut W,
    segments: &VecDeque<Bytes>,
    max_bytes: usize,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        // Built per poll, on the stack: nothing of it lives in the task.
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut count = 0;
        let mut bytes = 0;
        for segment in segments.iter().take(MAX_SLICES) {
            slices[count] = IoSlice::new(segment);
            count += 1;
            bytes += segment.len();
            if bytes >= max_bytes {
                break;
            }
        }
        Pin::new(&mut *socket).poll_write_vectored(cx, &slices[..count])
    })
    .await
}

/// Writes everything pending, recording progress after each write. Stops
/// early (keeping only a partly written frame) if the queue overflows.
async fn flush<W: AsyncWrite + Unpin>(
    socket: &mut W,
    pending: &mut Pending,
    outbound: &OutboundReceiver,
    batch_bytes: usize,
) -> io::Result<usize> {
    let mut total = 0;
    while pending.bytes > 0 {
        if outbound.overflowed() {
            outbound.written(pending.discard_unstarted());
            if pending.bytes == 0 {
                break;
            }
        }
        let n = write_some(socket, &pending.segments, batch_bytes).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        pending.consume(n);
        outbound.written(n);
        outbound.queue().record_progress(Instant::now());
        total += n;
    }
    Ok(total)
}

/// Moves the taken items into `pending`, lanes expanded at their token's
/// place; returns the close frame if one was reached (nothing after it is
/// written).
fn absorb(
    taken: &mut VecDeque<Item>,
    extra: Taken,
    pending: &mut Pending,
    outbound: &OutboundReceiver,
    lane_frames: &mut Vec<(Bytes, Instant)>,
) -> Option<Box<CloseFrame>> {
    if let Some(oldest) = extra.oldest {
        pending.queued_at(oldest);
    }
    // The rest of a frame a direct write began ([`crate::outbound`]):
    // nothing was pending, so it is the front.
    if extra.started {
        pending.started = true;
    }
    let before_close = extra.close.as_ref().map_or(usize::MAX, |(_, n)| *n);
    for (index, item) in taken.drain(..).enumerate() {
        match item {
            // Pushed in a race with the close: never written.
            Item::Frame(frame) if index >= before_close => outbound.written(frame.len()),
            Item::Lane(_) if index >= before_close => {}
            Item::Frame(frame) => pending.add(frame),
            Item::Lane(topic_id) => {
                outbound.take_lane(topic_id, lane_frames);
                add_lane_frames(lane_frames, pending, outbound);
            }
        }
    }
    extra.close.map(|(close, _)| close)
}

/// Moves frames released from lanes into `pending`; they count as queued
/// again until written.
fn add_lane_frames(
    lane_frames: &mut Vec<(Bytes, Instant)>,
    pending: &mut Pending,
    outbound: &OutboundReceiver,
) {
    let mut bytes = 0;
    for (frame, queued_at) in lane_frames.drain(..) {
        bytes += frame.len();
        pending.queued_at(queued_at);
        pending.add(frame);
    }
    outbound.holding(bytes);
}

/// Waits until something is queued, or the next rate-limit release is due.
async fn wait_for_items(outbound: &OutboundReceiver, due: Option<Instant>) {
    match due {
        Some(due) => tokio::select! {
            _ = outbound.wait() => {}
            _ = tokio::time::sleep_until(due.into()) => {}
        },
        None => outbound.wait().await,
    }
}

/// Writes queued frames until a close frame is written or the socket fails.
/// On failure the connection is marked closing.
pub async fn write_loop<W: AsyncWrite + Unpin>(
    mut socket: W,
    mut outbound: OutboundReceiver,
    settings: WriterSettings,
    metrics: Metrics,
) {
    let WriterSettings {
        batch_bytes,
        coalesce,
    } = settings;
    let mut taken: VecDeque<Item> = VecDeque::new();
    let mut pending = Pending::default();
    let mut lane_frames: Vec<(Bytes, Instant)> = Vec::new();
    let mut due: Option<Instant> = None;
    loop {
        let extra = outbound.take_all(&mut taken);
        let timer_due = extra.retime || due.is_some_and(|at| at <= Instant::now());
        if taken.is_empty() && extra.close.is_none() && !timer_due {
            // Waiting for data stops the queue's stall clock; starting on it
            // and every write restart it.
            outbound.queue().record_idle();
            wait_for_items(&outbound, due).await;
            continue;
        }
        outbound.queue().record_progress(Instant::now());
        let light = taken.len() <= IDLE_ITEMS_KEEP;
        let close = absorb(&mut taken, extra, &mut pending, &outbound, &mut lane_frames);
        if light && taken.capacity() > IDLE_ITEMS_KEEP {
            taken = VecDeque::new();
        }
        if outbound.queue().has_lanes() && close.is_none() {
            due = outbound.release_due(Instant::now(), &mut lane_frames);
            add_lane_frames(&mut lane_frames, &mut pending, &outbound);
        } else {
            due = None;
        }
        if pending.bytes > 0 {
            metrics
                .queue_depth_bytes
                .observe(outbound.queue().queued_bytes() as f64);
            let oldest = pending.oldest.take();
            let written = match flush(&mut socket, &mut pending, &outbound, batch_bytes).await {
                Ok(written) => written,
                Err(_) => {
                    outbound.queue().abandon();
                    return;
                }
            };
            metrics.bytes_out.inc_by(written as u64);
            let waited = oldest.map_or(Duration::ZERO, |oldest| oldest.elapsed());
            metrics
                .publish_to_write_seconds
                .observe(waited.as_secs_f64());
            // Coalescing, only while the broker is behind (the batch's oldest
            // frame already waited): let more messages gather before the next
            // write; they keep queuing meanwhile, and a close still comes
            // after them. Replies and control frames end the pause at once.
            let behind = waited >= COALESCE_WHEN_WAITED;
            let filled = written >= batch_bytes;
            if !coalesce.is_zero() && behind && !filled && close.is_none() {
                tokio::select! {
                    _ = tokio::time::sleep(coalesce) => {}
                    _ = outbound.queue().urgent() => {}
                }
            }
            if light && pending.segments.capacity() > IDLE_ITEMS_KEEP {
                pending.segments = VecDeque::new();
            }
        }
        if let Some(close) = close {
            let frame = ws::server_frame(OpCode::Close, &ws::close_body(close.code, &close.reason));
            if socket.write_all(&frame).await.is_ok() {
                metrics.bytes_out.inc_by(frame.len() as u64);
            }
            // Half-close: the reader may still wait for the peer's close reply.
            let _ = socket.shutdown().await;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use parking_lot::Mutex;
    use tickwire_protocol::CloseCode;

    use super::*;
    use crate::outbound::{FrameOrigin, OutboundQueue, SlowConsumerPolicy};

    /// A socket that takes at most `per_write` bytes per call.
    struct Sink {
        out: Arc<Mutex<Vec<u8>>>,
        per_write: usize,
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.poll_write_vectored(cx, &[IoSlice::new(buf)])
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let mut out = self.out.lock();
            let mut left = self.per_write;
            for buf in bufs {
                let n = buf.len().min(left);
                out.extend_from_slice(&buf[..n]);
                left -= n;
            }
            Poll::Ready(Ok(self.per_write - left))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    const SETTINGS: WriterSettings = WriterSettings {
        batch_bytes: 64 << 10,
        coalesce: Duration::ZERO,
    };

    fn close_frame(code: CloseCode) -> Vec<u8> {
        ws::server_frame(OpCode::Close, &ws::close_body(code.as_u16(), code.reason())).to_vec()
    }

    #[tokio::test]
    async fn partial_writes_keep_frames_whole_and_in_order_then_the_close() {
        let (queue, rx) = OutboundQueue::new(1, 1 << 20, Metrics::new());
        let now = Instant::now();
        let mut want = Vec::new();
        for i in 0..50u8 {
            let frame = Bytes::from(vec![i; usize::from(i) + 1]);
            want.extend_from_slice(&frame);
            queue.push(frame, now);
        }
        queue.close(CloseCode::GoingAway);
        want.extend(close_frame(CloseCode::GoingAway));
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink {
            out: out.clone(),
            per_write: 7,
        };
        write_loop(sink, rx, SETTINGS, Metrics::new()).await;
        assert_eq!(*out.lock(), want);
        assert_eq!(queue.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn lanes_are_written_at_their_tokens_place() {
        let (queue, rx) = OutboundQueue::new(1, 1000, Metrics::new());
        let now = Instant::now();
        let conflate = FrameOrigin {
            topic_id: 9,
            policy: SlowConsumerPolicy::Conflate,
            max_rate: None,
            direct: false,
        };
        for _ in 0..5 {
            queue.push_delivery(Bytes::from_static(&[1; 100]), now, conflate);
        }
        // Over half the budget: the lane keeps the newest only.
        queue.push_delivery(Bytes::from_static(&[2; 100]), now, conflate);
        queue.push_delivery(Bytes::from_static(&[3; 100]), now, conflate);
        queue.push(Bytes::from_static(&[4; 10]), now);
        queue.close(CloseCode::GoingAway);
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink {
            out: out.clone(),
            per_write: 64,
        };
        write_loop(sink, rx, SETTINGS, Metrics::new()).await;
        let mut want = vec![1; 500];
        want.extend([3; 100]);
        want.extend([4; 10]);
        want.extend(close_frame(CloseCode::GoingAway));
        assert_eq!(*out.lock(), want);
    }

    #[tokio::test]
    async fn after_an_overflow_only_the_close_frame_is_written() {
        let (queue, rx) = OutboundQueue::new(1, 100, Metrics::new());
        let now = Instant::now();
        queue.push(Bytes::from_static(&[1; 80]), now);
        queue.push(Bytes::from_static(&[1; 30]), now);
        assert!(queue.is_closing());
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink {
            out: out.clone(),
            per_write: 64,
        };
        write_loop(sink, rx, SETTINGS, Metrics::new()).await;
        assert_eq!(*out.lock(), close_frame(CloseCode::SlowConsumer));
    }

    #[test]
    fn an_overflow_mid_frame_finishes_that_frame_only() {
        let mut pending = Pending::default();
        let now = Instant::now();
        pending.queued_at(now);
        pending.add(Bytes::from_static(&[1; 10]));
        pending.add(Bytes::from_static(&[2; 10]));
        pending.add(Bytes::from_static(&[3; 10]));
        pending.consume(14);
        assert!(pending.started);
        assert_eq!(pending.discard_unstarted(), 10);
        assert_eq!(pending.bytes, 6);
        assert_eq!(&pending.segments[0][..], &[2; 6]);
        pending.consume(6);
        assert!(!pending.started);
        assert_eq!(pending.discard_unstarted(), 0);
    }
}
