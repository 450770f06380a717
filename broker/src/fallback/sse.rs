//! `GET /v1/sse`: a subscription streamed as Server-Sent Events.
//!
//! The request has been checked ([`super::query`], authentication, grants)
//! before [`start`] runs; the answer's body is a [`ChunkBody`] fed by one
//! task per stream, which drains the stream's [`Feed`] and writes each
//! batch of events as one chunk. The task ends the stream on the session's
//! close (slow consumer 4001, token expiry 4003, shutdown 1001: an
//! `event: close` first), when the client goes away, or when a chunk is not
//! taken within `keepalive_timeout`: then the client stopped reading, and
//! the connection is dropped at once ([`ConnectionSlot::abort`]), so a
//! stalled client holds nothing for longer.

use std::fmt::Write as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use hyper::body::Frame;
use tickwire_protocol::CloseCode;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};

use super::render::PayloadMode;
use super::{Feed, Rendered};
use crate::metrics::GaugeHold;
use crate::slot::ConnectionSlot;
use crate::state::BrokerState;

/// The first bytes of every stream: reconnect after 1 s.
pub const PREAMBLE: &str = "retry: 1000\n\n";

/// The keepalive comment.
pub const KEEPALIVE: &str = ": keepalive\n\n";

/// Chunks waiting for the connection beyond the one being written.
const CHUNKS_IN_FLIGHT: usize = 2;

/// A streamed response body: the chunks the stream's task sends, until it
/// drops its sender.
#[derive(Debug)]
pub struct ChunkBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChunkBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

/// Appends one event in the SSE text format.
fn write_event(out: &mut String, rendered: &Rendered, cursor: impl FnOnce() -> String) {
    // JSON text has no line breaks, so each `data` is one line.
    let _ = match rendered {
        Rendered::Message(json) => {
            write!(out, "id: {}\nevent: message\ndata: {json}\n\n", cursor())
        }
        Rendered::Subscribed(json) => write!(out, "event: subscribed\ndata: {json}\n\n"),
        Rendered::Error(json) => write!(out, "event: error\ndata: {json}\n\n"),
        Rendered::Presence { join, event } => {
            let name = if *join { "join" } else { "leave" };
            write!(out, "event: {name}\ndata: {event}\n\n")
        }
        Rendered::Close { code, reason } => write!(
            out,
            "event: close\ndata: {}\n\n",
            Rendered::close_json(*code, reason)
        ),
    };
}

/// The instant at which `at` (wall clock) will be reached.
fn instant_at(at: SystemTime) -> Instant {
    Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()
}

/// Starts streaming `feed` with payloads rendered as `payload` on the
/// connection holding `slot`; the returned body is the answer's.
pub fn start(
    state: Arc<BrokerState>,
    slot: Arc<ConnectionSlot>,
    feed: Feed,
    payload: PayloadMode,
) -> ChunkBody {
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let tasks = state.tasks.clone();
    let metrics = state.metrics.clone();
    tasks.spawn(metrics.count_task(stream(state, slot, feed, payload, tx)));
    ChunkBody { rx }
}

/// Why [`Stream::send`] failed.
struct Gone;

/// The writing side of one stream.
struct Stream<'a> {
    tx: mpsc::Sender<Bytes>,
    feed: &'a Feed,
    state: &'a BrokerState,
    slot: &'a ConnectionSlot,
}

impl Stream<'_> {
    /// Hands `text` to the connection within `keepalive_timeout`.
    async fn send(&self, text: String, messages: u64) -> Result<(), Gone> {
        let len = text.len() as u64;
        let deadline = self.state.config.keepalive_timeout;
        match timeout(deadline, self.tx.send(Bytes::from(text))).await {
            Ok(Ok(())) => {
                self.feed.count_sent(messages, len);
                Ok(())
            }
            Ok(Err(_)) => Err(Gone),
            Err(_) => {
                tracing::debug!(connection = self.feed.queue().id(), "sse write timed out");
                self.slot.abort();
                Err(Gone)
            }
        }
    }
}

async fn stream(
    state: Arc<BrokerState>,
    slot: Arc<ConnectionSlot>,
    mut feed: Feed,
    payload: PayloadMode,
    tx: mpsc::Sender<Bytes>,
) {
    let gauge = state.metrics.transport_sessions.with_label_values(&["sse"]);
    let _gauge = GaugeHold::new(&gauge);
    run(&state, &slot, &mut feed, payload, tx).await;
    feed.release(&state);
}

async fn run(
    state: &BrokerState,
    slot: &ConnectionSlot,
    feed: &mut Feed,
    payload: PayloadMode,
    tx: mpsc::Sender<Bytes>,
) {
    let interval = state.config.keepalive_interval;
    let batch_bytes = state.config.write_batch_bytes;
    let valid_until = feed.valid_until();
    let expiry = sleep_until(valid_until.map_or_else(Instant::now, instant_at));
    tokio::pin!(expiry);
    let keepalive = sleep_until(Instant::now() + interval);
    tokio::pin!(keepalive);
    let mut closing = false;
    {
        let out = Stream {
            tx: tx.clone(),
            feed,
            state,
            slot,
        };
        if out.send(PREAMBLE.to_owned(), 0).await.is_err() {
            return;
        }
    }
    loop {
        let first = tokio::select! {
            biased;
            _ = tx.closed() => return,
            _ = state.shutdown.cancelled(), if !closing => {
                closing = true;
                feed.close(CloseCode::GoingAway);
                continue;
            }
            _ = &mut expiry, if valid_until.is_some() && !closing => {
                closing = true;
                feed.close(CloseCode::TokenExpired);
                continue;
            }
            _ = &mut keepalive => {
                let out = Stream { tx: tx.clone(), feed, state, slot };
                if out.send(KEEPALIVE.to_owned(), 0).await.is_err() {
                    return;
                }
                keepalive.as_mut().reset(Instant::now() + interval);
                continue;
            }
            rendered = feed.next(payload) => rendered,
        };
        let Some(first) = first else { return };
        // Everything ready now goes in one chunk.
        let mut text = String::new();
        let mut messages = 0;
        let mut next = Some(first);
        let mut ended = false;
        while let Some(rendered) = next {
            write_event(&mut text, &rendered, || feed.cursor());
            match rendered {
                Rendered::Message(_) => messages += 1,
                Rendered::Close { .. } => {
                    ended = true;
                    break;
                }
                _ => {}
            }
            if text.len() >= batch_bytes {
                break;
            }
            next = feed.try_next(payload);
        }
        let out = Stream {
            tx: tx.clone(),
            feed,
            state,
            slot,
        };
        if out.send(text, messages).await.is_err() || ended {
            return;
        }
        keepalive.as_mut().reset(Instant::now() + interval);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn events_are_written_in_the_sse_format() {
        let mut out = String::new();
        write_event(&mut out, &Rendered::Message("{\"seq\":1}".into()), || {
            "gA".into()
        });
        write_event(
            &mut out,
            &Rendered::Subscribed(json!({"sub": "a.*"})),
            String::new,
        );
        write_event(
            &mut out,
            &Rendered::Close {
                code: 4001,
                reason: "slow consumer".into(),
            },
            String::new,
        );
        assert_eq!(
            out,
            "id: gA\nevent: message\ndata: {\"seq\":1}\n\n\
             event: subscribed\ndata: {\"sub\":\"a.*\"}\n\n\
             event: close\ndata: {\"code\":4001,\"reason\":\"slow consumer\"}\n\n"
        );
    }
}
