//! The publisher of a transport run: one WebSocket connection publishing
//! the stamped payload at a fixed rate (every millisecond, what is due).
//!
//! Every transport's run publishes the same way, over WebSocket: what
//! differs between the runs is only how the deliveries reach the
//! subscribers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tickwire_protocol::ClientMessage;
use tickwire_protocol::ws::{OpCode, write_client_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::super::raw_client::{Conn, MASK_KEY};
use super::payload::{Payload, now_ns};

/// Most messages written per system call.
const BATCH: u64 = 256;

/// When the publisher stops and when its connection may close.
#[derive(Debug, Clone)]
pub struct Signals {
    /// Cancelled when publishing stops.
    pub stop: CancellationToken,
    /// Cancelled when the run ends; the connection stays open until then,
    /// so the broker does not see the publisher leave during the drain.
    pub finish: CancellationToken,
}

/// Publishes `payload`-sized messages on `topic` at `rate` per second until
/// `signals.stop`, counting them in `published`; returns the first write
/// error. What the broker sends
/// (pings; unacknowledged publishes get no reply) is read and dropped.
pub async fn publish(
    conn: Conn,
    topic: String,
    payload: Payload,
    rate: f64,
    published: Arc<AtomicU64>,
    signals: Signals,
) -> Result<(), String> {
    let (mut reader, mut writer) = conn.stream.into_split();
    let finish = signals.finish.clone();
    let drain = tokio::spawn(async move {
        let mut sink = vec![0u8; 16 * 1024];
        loop {
            tokio::select! {
                _ = finish.cancelled() => break,
                read = reader.read(&mut sink) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                },
            }
        }
    });
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut frames = Frames::new(&topic, &payload);
    let result = 'publish: loop {
        tokio::select! {
            biased;
            _ = signals.stop.cancelled() => break Ok(()),
            _ = ticker.tick() => {}
        }
        let sent = published.load(Relaxed);
        let mut due = ((start.elapsed().as_secs_f64() * rate) as u64).saturating_sub(sent);
        while due > 0 {
            let n = due.min(BATCH);
            if let Err(e) = writer.write_all(frames.build(n)).await {
                break 'publish Err(format!("publisher write failed: {e}"));
            }
            published.fetch_add(n, Relaxed);
            due -= n;
        }
    };
    signals.finish.cancelled().await;
    let _ = drain.await;
    result
}

/// Builds batches of publish frames, each payload stamped as it is built.
struct Frames<'a> {
    topic: &'a str,
    payload: &'a Payload,
    body: Vec<u8>,
    out: Vec<u8>,
}

impl<'a> Frames<'a> {
    fn new(topic: &'a str, payload: &'a Payload) -> Frames<'a> {
        Frames {
            topic,
            payload,
            body: Vec::new(),
            out: Vec::new(),
        }
    }

    /// `n` masked `PUBLISH` frames (`[3, nil, topic, payload]`).
    fn build(&mut self, n: u64) -> &[u8] {
        self.out.clear();
        for _ in 0..n {
            self.body.clear();
            ClientMessage::Publish {
                id: None,
                topic: self.topic,
                payload: Bytes::from(self.payload.stamped(now_ns())),
                retain: false,
            }
            .encode(&mut self.body);
            write_client_frame(&mut self.out, OpCode::Binary, &self.body, MASK_KEY);
        }
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use tickwire_protocol::ws::{FrameDecoder, Incoming, MessageKind, Role};

    #[test]
    fn frames_are_stamped_publishes() {
        let payload = Payload::new(64);
        let mut frames = Frames::new("bench.t", &payload);
        let before = now_ns();
        let mut buf = BytesMut::from(frames.build(3));
        let mut decoder = FrameDecoder::new(Role::Server, 1 << 20);
        for _ in 0..3 {
            let Some(Incoming::Message(MessageKind::Binary, body)) =
                decoder.decode(&mut buf).unwrap()
            else {
                panic!("no frame");
            };
            let ClientMessage::Publish { topic, payload, .. } =
                ClientMessage::decode(&body).unwrap()
            else {
                panic!("not a publish");
            };
            assert_eq!((topic, payload.len()), ("bench.t", 64));
            assert!(super::super::payload::stamp_of(&payload).unwrap() >= before);
        }
        assert!(buf.is_empty());
    }
}
