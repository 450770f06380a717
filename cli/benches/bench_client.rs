//! The receive ceiling of `tickwire bench`'s subscriber path, without
//! sockets: walking a buffer of delivery frames in place and recording each
//! message's latency, exactly as a subscriber does after each read.
//!
//! Run with `cargo bench -p tickwire-broker --bench bench_client`. The
//! result (messages/s on one core) bounds what one load thread can receive;
//! the real tool adds one `read` system call per buffer.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hdrhistogram::Histogram;
use tickwire_protocol::message::{Position, encode_delivery_frame};

#[allow(dead_code)]
#[path = "../src/bench/walker.rs"]
mod walker;

fn walk(c: &mut Criterion) {
    const FRAMES: u64 = 2000;
    let mut payload = vec![0u8; 128];
    let sent: u64 = 1_700_000_000_000_000_000;
    payload[..8].copy_from_slice(&sent.to_le_bytes());
    let mut buf = Vec::new();
    for seq in 1..=FRAMES {
        buf.extend_from_slice(&encode_delivery_frame(
            "bench.fanout",
            Position {
                epoch: u64::MAX - 1,
                seq,
            },
            1_700_000_000_000_000,
            &payload,
        ));
    }
    let mut histogram = match Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3) {
        Ok(h) => h,
        Err(e) => panic!("histogram: {e}"),
    };
    let mut g = c.benchmark_group("bench_client");
    g.throughput(Throughput::Elements(FRAMES));
    g.bench_function("walk+record/2000 deliveries of 128B", |b| {
        b.iter(|| {
            let mut w = walker::Walker::new();
            let now = sent + 250_000;
            let walked = w.walk(black_box(&buf), |s| {
                histogram.saturating_record(now.saturating_sub(s).max(1));
            });
            black_box((walked.is_ok(), w.messages))
        })
    });
    g.finish();
}

criterion_group!(benches, walk);
criterion_main!(benches);
