//! Micro-benchmarks of a connection's outbound queue: pushes from one and
//! from several producer threads (with a writer-side drain running), and the
//! writer draining a full queue into a socket stand-in with vectored writes.
//! Each iteration moves 1000 frames of 128 bytes; criterion reports the time
//! per frame (ns/push, ns/frame written).
//!
//! Run with `cargo bench -p tickwire-broker --bench outbound_queue`.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire_broker::metrics::Metrics;
use tickwire_broker::outbound::{FrameOrigin, Outbound, OutboundQueue, SlowConsumerPolicy};
use tickwire_broker::writer::{WriterSettings, write_loop};
use tickwire_protocol::CloseCode;
use tokio::io::AsyncWrite;

const FRAMES: u64 = 1000;
const BUDGET: usize = 1 << 30;

fn origin() -> FrameOrigin {
    FrameOrigin {
        topic_id: 1,
        policy: SlowConsumerPolicy::Disconnect,
        max_rate: None,
        direct: false,
    }
}

/// A socket stand-in that accepts every byte of every vectored write.
struct VectoredSink;

impl AsyncWrite for VectoredSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn push_single(c: &mut Criterion) {
    let frame = Bytes::from(vec![0u8; 128]);
    let (queue, mut rx) = OutboundQueue::new(1, BUDGET, Metrics::new());
    let mut taken = VecDeque::new();
    let mut group = c.benchmark_group("outbound_queue");
    group.throughput(Throughput::Elements(FRAMES));
    group.bench_function("push_1000_single_producer", |b| {
        b.iter(|| {
            let now = Instant::now();
            for _ in 0..FRAMES {
                queue.push_delivery(frame.clone(), now, origin());
            }
            rx.take_all(&mut taken);
            rx.written(taken.len() * frame.len());
            taken.clear();
        })
    });
    group.finish();
}

fn push_multi(c: &mut Criterion) {
    const PRODUCERS: u64 = 4;
    let frame = Bytes::from(vec![0u8; 128]);
    let mut group = c.benchmark_group("outbound_queue");
    group.throughput(Throughput::Elements(FRAMES * PRODUCERS));
    group.bench_function("push_1000_each_4_producers_with_drain", |b| {
        b.iter_custom(|iters| {
            let (queue, mut rx) = OutboundQueue::new(1, BUDGET, Metrics::new());
            let stop = Arc::new(AtomicBool::new(false));
            let drainer = {
                let stop = stop.clone();
                let len = frame.len();
                std::thread::spawn(move || {
                    let mut taken = VecDeque::new();
                    while !stop.load(Ordering::Relaxed) {
                        rx.take_all(&mut taken);
                        rx.written(taken.len() * len);
                        taken.clear();
                        std::hint::spin_loop();
                    }
                })
            };
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..PRODUCERS {
                    let queue = &queue;
                    let frame = &frame;
                    s.spawn(move || {
                        for _ in 0..iters {
                            let now = Instant::now();
                            for _ in 0..FRAMES {
                                queue.push_delivery(frame.clone(), now, origin());
                            }
                        }
                    });
                }
            });
            let elapsed = start.elapsed();
            stop.store(true, Ordering::Relaxed);
            let _ = drainer.join();
            elapsed
        })
    });
    group.finish();
}

fn drain_to_sink(c: &mut Criterion) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => panic!("runtime: {e}"),
    };
    let frame = Bytes::from(vec![0u8; 128]);
    let settings = WriterSettings {
        batch_bytes: 64 << 10,
        coalesce: Duration::ZERO,
    };
    // Registering the metric set is costly: once, outside the loop.
    let metrics = Metrics::new();
    let mut group = c.benchmark_group("outbound_queue");
    group.throughput(Throughput::Elements(FRAMES));
    group.bench_function("push_1000_then_write_vectored_to_sink", |b| {
        b.iter(|| {
            let (queue, rx) = OutboundQueue::new(1, BUDGET, metrics.clone());
            let now = Instant::now();
            for _ in 0..FRAMES {
                queue.push_delivery(frame.clone(), now, origin());
            }
            queue.close(CloseCode::GoingAway);
            runtime.block_on(write_loop(VectoredSink, rx, settings, metrics.clone()));
        })
    });
    group.finish();
}

fn one_at_a_time(c: &mut Criterion) {
    let frame = Bytes::from(vec![0u8; 128]);
    let (queue, mut rx) = OutboundQueue::new(1, BUDGET, Metrics::new());
    let mut group = c.benchmark_group("outbound_queue");
    group.throughput(Throughput::Elements(FRAMES));
    group.bench_function("push_then_recv_one_at_a_time", |b| {
        b.iter(|| {
            let now = Instant::now();
            for _ in 0..FRAMES {
                queue.push(frame.clone(), now);
                if !matches!(rx.try_recv(), Some(Outbound::Frame(..))) {
                    panic!("frame lost");
                }
            }
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    push_single,
    push_multi,
    drain_to_sink,
    one_at_a_time
);
criterion_main!(benches);
