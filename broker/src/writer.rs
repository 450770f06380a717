//! The writer task of one WebSocket connection.
//!
//! It drains the connection's [`OutboundReceiver`] in batches: every frame
//! ready in the queue (up to `write_batch_bytes`) is copied into one buffer
//! and written with a single system call, so a busy subscriber costs one
//! `write` per batch, not per message. The frames themselves were encoded
//! once per publish and are shared with every other subscriber. Frames
//! waiting in lanes (slow-consumer policies, `max_rate`) join the batch at
//! their token's place or when their rate limit releases them.
//!
//! The writer also keeps its queue's write-progress clock
//! ([`crate::progress`]): idle while it waits for data, restarted when it
//! starts on queued data and after every completed write.

use std::time::Instant;

use bytes::Bytes;
use tickwire_protocol::ws::{self, OpCode};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::metrics::Metrics;
use crate::outbound::{Outbound, OutboundReceiver};

/// Above this capacity an idle connection's write buffer is released, so
/// idle connections cost no buffer memory.
const IDLE_BUFFER_KEEP: usize = 4096;

/// One write batch being assembled.
struct Batch {
    buf: Vec<u8>,
    oldest: Option<Instant>,
}

impl Batch {
    fn add(&mut self, frame: &Bytes, queued_at: Instant) {
        self.oldest = Some(self.oldest.map_or(queued_at, |o| o.min(queued_at)));
        self.buf.extend_from_slice(frame);
    }
}

/// A batch whose oldest frame waited at least this long shows the broker is
/// behind; only then does the writer coalesce.
pub const COALESCE_WHEN_WAITED: std::time::Duration = std::time::Duration::from_millis(2);

/// How a connection's writer batches.
#[derive(Debug, Clone, Copy)]
pub struct WriterSettings {
    /// Most bytes gathered into one write (`write_batch_bytes`).
    pub batch_bytes: usize,
    /// Pause after a write that did not fill a batch (`write_coalesce`).
    pub coalesce: std::time::Duration,
}

/// Waits for the next queue item, or for the next rate-limit release.
async fn next_item(outbound: &mut OutboundReceiver, due: Option<Instant>) -> Option<Outbound> {
    match due {
        Some(due) => tokio::select! {
            item = outbound.recv() => item,
            _ = tokio::time::sleep_until(due.into()) => Some(Outbound::Timer),
        },
        None => outbound.recv().await,
    }
}

/// Writes queued frames until a close frame is written, the queue ends or the
/// socket fails. On failure the connection is marked closing.
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
    let mut batch = Batch {
        buf: Vec::new(),
        oldest: None,
    };
    let mut lane_frames: Vec<(Bytes, Instant)> = Vec::new();
    let mut due: Option<Instant> = None;
    loop {
        // Waiting for data stops the queue's stall clock; starting on it and
        // every completed write restart it.
        outbound.queue().record_idle();
        let Some(first) = next_item(&mut outbound, due).await else {
            return;
        };
        outbound.queue().record_progress(Instant::now());
        let mut close = None;
        let mut next = Some(first);
        while let Some(item) = next {
            // After an overflow the queued data is dropped: only the close
            // frame is still worth sending.
            let keep = !outbound.overflowed();
            match item {
                Outbound::Frame(frame, queued_at) if keep => batch.add(&frame, queued_at),
                Outbound::Lane(topic_id) if keep => {
                    outbound.take_lane(topic_id, &mut lane_frames);
                    for (frame, queued_at) in lane_frames.drain(..) {
                        batch.add(&frame, queued_at);
                    }
                }
                Outbound::Close { code, reason } => {
                    close = Some((code, reason));
                    break;
                }
                _ => {}
            }
            if batch.buf.len() >= batch_bytes {
                break;
            }
            next = outbound.try_recv();
        }
        if outbound.queue().has_lanes() && close.is_none() {
            due = outbound.release_due(Instant::now(), &mut lane_frames);
            for (frame, queued_at) in lane_frames.drain(..) {
                batch.add(&frame, queued_at);
            }
        } else {
            due = None;
        }
        if !batch.buf.is_empty() {
            metrics
                .queue_depth_bytes
                .observe((batch.buf.len() + outbound.queue().queued_bytes()) as f64);
            if socket.write_all(&batch.buf).await.is_err() {
                outbound.queue().abandon();
                return;
            }
            metrics.bytes_out.inc_by(batch.buf.len() as u64);
            outbound.queue().record_progress(Instant::now());
            let waited = batch
                .oldest
                .take()
                .map_or(std::time::Duration::ZERO, |oldest| oldest.elapsed());
            metrics
                .publish_to_write_seconds
                .observe(waited.as_secs_f64());
            let filled = batch.buf.len() >= batch_bytes;
            batch.buf.clear();
            // Coalescing, only while the broker is behind (the batch's oldest
            // frame already waited): let more messages gather before the next
            // write; they keep queuing meanwhile, and a close still comes
            // after them. Replies and control frames end the pause at once.
            let behind = waited >= COALESCE_WHEN_WAITED;
            if !coalesce.is_zero() && behind && !filled && close.is_none() {
                tokio::select! {
                    _ = tokio::time::sleep(coalesce) => {}
                    _ = outbound.queue().urgent() => {}
                }
            }
        }
        if let Some((code, reason)) = close {
            let frame = ws::server_frame(OpCode::Close, &ws::close_body(code, &reason));
            if socket.write_all(&frame).await.is_ok() {
                metrics.bytes_out.inc_by(frame.len() as u64);
            }
            // Half-close: the reader may still wait for the peer's close reply.
            let _ = socket.shutdown().await;
            return;
        }
        if batch.buf.capacity() > IDLE_BUFFER_KEEP && outbound.queue().queued_bytes() == 0 {
            batch.buf = Vec::new();
        }
    }
}
