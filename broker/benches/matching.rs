//! Micro-benchmarks of subscription matching and the publish fan-out:
//! the wildcard trie with 10,000 patterns, `pattern_matches`, and
//! `TopicRegistry::publish` to 1000 subscribers.
//!
//! Run with `cargo bench -p tickwire-broker --bench matching`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire_broker::metrics::Metrics;
use tickwire_broker::pattern_trie::{PatternTrie, Subscriber};
use tickwire_broker::queue::{OutboundReceiver, SubscriberQueue};
use tickwire_broker::registry::{RegistryLimits, TopicRegistry};
use tickwire_protocol::topic::{Pattern, pattern_matches};

fn pattern(s: &str) -> Pattern {
    match Pattern::new(s) {
        Ok(p) => p,
        Err(e) => panic!("benchmark pattern {s}: {e}"),
    }
}

fn subscriber(id: u64, budget: usize) -> (Subscriber, OutboundReceiver) {
    SubscriberQueue::new(id, budget, Metrics::new())
}

fn trie(c: &mut Criterion) {
    // 10,000 patterns in four shapes over 2,500 symbols.
    let mut trie = PatternTrie::default();
    let mut receivers = Vec::new();
    for i in 0..10_000u64 {
        let sym = i / 4;
        let p = match i % 4 {
            0 => format!("stocks.S{sym}.*"),
            1 => format!("stocks.*.S{sym}"),
            2 => format!("fx.S{sym}.>"),
            _ => format!("news.S{sym}.*.headline"),
        };
        let (s, rx) = subscriber(i, 1 << 20);
        receivers.push(rx);
        trie.insert(&pattern(&p), s);
    }
    let mut out = Vec::with_capacity(64);
    let mut g = c.benchmark_group("pattern_trie");
    g.throughput(Throughput::Elements(1));
    for topic in [
        "stocks.S42.bid",
        "fx.S7.EURUSD.spot",
        "news.S9.x.headline",
        "crypto.BTC.USD",
    ] {
        g.bench_function(format!("collect/10k patterns/{topic}"), |b| {
            b.iter(|| {
                out.clear();
                trie.collect(black_box(topic), &mut out);
                out.len()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("pattern_matches");
    g.throughput(Throughput::Elements(1));
    for (p, t) in [
        ("stocks.*.bid", "stocks.AAPL.bid"),
        ("stocks.>", "stocks.AAPL.bid.level2"),
        ("stocks.AAPL.bid", "stocks.AAPL.ask"),
    ] {
        g.bench_function(format!("{p} vs {t}"), |b| {
            b.iter(|| pattern_matches(black_box(p), black_box(t)))
        });
    }
    g.finish();
}

fn drain(receivers: &mut [OutboundReceiver]) -> usize {
    let mut n = 0;
    for rx in receivers {
        while rx.try_recv().is_some() {
            n += 1;
        }
    }
    n
}

fn fanout(c: &mut Criterion) {
    const SUBSCRIBERS: u64 = 1000;
    // Publishes between drains; each queue holds this many frames at most.
    const BURST: u64 = 256;
    let registry = TopicRegistry::new(
        RegistryLimits {
            max_topics: 1000,
            topic_idle_ttl: Duration::from_secs(3600),
        },
        Metrics::new(),
    );
    let topic = pattern("bench.fanout");
    let mut receivers = Vec::new();
    for id in 0..SUBSCRIBERS {
        let (s, rx) = subscriber(id, 8 << 20);
        if let Err(e) = registry.subscribe(&topic, &s, || {}) {
            panic!("subscribe: {e}");
        }
        receivers.push(rx);
    }
    let payload = [7u8; 128];
    let mut g = c.benchmark_group("registry");
    // One element = one publish (1000 deliveries).
    g.throughput(Throughput::Elements(1));
    g.bench_function("publish/1000 subscribers/128B", |b| {
        b.iter_custom(|iters| {
            let mut measured = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let burst = left.min(BURST);
                let start = Instant::now();
                for _ in 0..burst {
                    let receipt = registry.publish("bench.fanout", black_box(&payload));
                    black_box(receipt.is_ok());
                }
                measured += start.elapsed();
                // Drain outside the measured time so budgets never fill.
                drain(&mut receivers);
                left -= burst;
            }
            measured
        })
    });
    g.finish();
}

criterion_group!(benches, trie, fanout);
criterion_main!(benches);
