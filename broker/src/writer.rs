//! The writer task of one WebSocket connection.
//!
//! It drains the connection's [`OutboundReceiver`] in batches: every frame
//! ready in the queue (up to `write_batch_bytes`) is copied into one buffer
//! and written with a single system call, so a busy subscriber costs one
//! `write` per batch, not per message. The frames themselves were encoded
//! once per publish and are shared with every other subscriber.

use std::time::Instant;

use tickwire_protocol::ws::{self, OpCode};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use crate::metrics::Metrics;
use crate::queue::{Outbound, OutboundReceiver};

/// Above this capacity an idle connection's write buffer is released, so
/// idle connections cost no buffer memory.
const IDLE_BUFFER_KEEP: usize = 4096;

/// Writes queued frames until a close frame is written, the queue ends or the
/// socket fails. On failure the connection is marked closing.
pub async fn write_loop(
    mut socket: OwnedWriteHalf,
    mut outbound: OutboundReceiver,
    batch_bytes: usize,
    metrics: Metrics,
) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let Some(first) = outbound.recv().await else {
            return;
        };
        let mut oldest: Option<Instant> = None;
        let mut close = None;
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                Outbound::Frame(frame, queued_at) => {
                    // After an overflow the queued data is dropped: only the
                    // close frame is still worth sending.
                    if !outbound.overflowed() {
                        oldest.get_or_insert(queued_at);
                        buf.extend_from_slice(&frame);
                    }
                }
                Outbound::Close { code, reason } => {
                    close = Some((code, reason));
                    break;
                }
            }
            if buf.len() >= batch_bytes {
                break;
            }
            next = outbound.try_recv();
        }
        if !buf.is_empty() {
            if socket.write_all(&buf).await.is_err() {
                outbound.queue().abandon();
                return;
            }
            metrics.bytes_out.inc_by(buf.len() as u64);
            if let Some(oldest) = oldest {
                metrics
                    .publish_to_write_seconds
                    .observe(oldest.elapsed().as_secs_f64());
            }
            buf.clear();
        }
        if let Some((code, reason)) = close {
            let frame = ws::server_frame(OpCode::Close, &ws::close_body(code, reason));
            if socket.write_all(&frame).await.is_ok() {
                metrics.bytes_out.inc_by(frame.len() as u64);
            }
            // Half-close: the reader may still wait for the peer's close reply.
            let _ = socket.shutdown().await;
            return;
        }
        if buf.capacity() > IDLE_BUFFER_KEEP && outbound.queue().queued_bytes() == 0 {
            buf = Vec::new();
        }
    }
}
