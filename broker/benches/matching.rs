//! Micro-benchmarks of subscription matching and the publish fan-out:
//! the wildcard trie with 10,000 patterns, `pattern_matches`,
//! `TopicRegistry::publish` to 1000 subscribers, and publish with the
//! topic's history ring on and off.
//!
//! Run with `cargo bench -p tickwire-broker --bench matching`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tickwire_broker::config::TopicPolicy;
use tickwire_broker::metrics::Metrics;
use tickwire_broker::outbound::{OutboundQueue, OutboundReceiver, SlowConsumerPolicy};
use tickwire_broker::pattern_trie::{PatternTrie, Subscriber};
use tickwire_broker::registry::{RegistryLimits, SubscribeRequest, TopicRegistry};
use tickwire_protocol::topic::{Pattern, Topic, pattern_matches};

fn pattern(s: &str) -> Pattern {
    match Pattern::new(s) {
        Ok(p) => p,
        Err(e) => panic!("benchmark pattern {s}: {e}"),
    }
}

fn subscriber(id: u64, budget: usize) -> (Subscriber, OutboundReceiver) {
    let (queue, rx) = OutboundQueue::new(id, budget, Metrics::new());
    (Subscriber::unlimited(queue), rx)
}

fn registry(policies: Vec<TopicPolicy>) -> TopicRegistry {
    TopicRegistry::new(
        RegistryLimits {
            max_topics: 1000,
            topic_idle_ttl: Duration::from_secs(3600),
            max_retained_bytes: usize::MAX,
        },
        policies,
        Metrics::new(),
    )
}

/// Subscribes `count` fresh connections to `topic`.
fn subscribe_many(registry: &TopicRegistry, topic: &Pattern, count: u64) -> Vec<OutboundReceiver> {
    (0..count)
        .map(|id| {
            let (s, rx) = subscriber(id, 8 << 20);
            let request = SubscribeRequest {
                pattern: topic,
                subscriber: s,
                since: None,
                last: false,
            };
            if let Err(e) = registry.subscribe(request, |_| {}) {
                panic!("subscribe: {e}");
            }
            rx
        })
        .collect()
}

/// Times `iters` publishes of `payload` on `topic`, draining the receivers
/// every `burst` publishes outside the measured time so budgets never fill.
fn timed_publishes(
    registry: &TopicRegistry,
    topic: &str,
    payload: &[u8],
    receivers: &mut [OutboundReceiver],
    iters: u64,
    burst: u64,
) -> Duration {
    let topic = match Topic::new(topic) {
        Ok(t) => t,
        Err(e) => panic!("benchmark topic {topic}: {e}"),
    };
    let mut measured = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(burst);
        let start = Instant::now();
        for _ in 0..n {
            black_box(registry.publish(topic, black_box(payload), false).is_ok());
        }
        measured += start.elapsed();
        drain(receivers);
        left -= n;
    }
    measured
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
    // Publishes between drains; each queue holds this many frames at most.
    const BURST: u64 = 256;
    let registry = registry(Vec::new());
    let mut receivers = subscribe_many(&registry, &pattern("bench.fanout"), 1000);
    let payload = [7u8; 128];
    let mut g = c.benchmark_group("registry");
    // One element = one publish (1000 deliveries).
    g.throughput(Throughput::Elements(1));
    g.bench_function("publish/1000 subscribers/128B", |b| {
        b.iter_custom(|iters| {
            timed_publishes(
                &registry,
                "bench.fanout",
                &payload,
                &mut receivers,
                iters,
                BURST,
            )
        })
    });
    g.finish();
}

fn history(c: &mut Criterion) {
    const BURST: u64 = 4096;
    let payload = [7u8; 128];
    let mut g = c.benchmark_group("history");
    g.throughput(Throughput::Elements(1));
    for (name, history_messages) in [("off", 0), ("on/1000 messages", 1000)] {
        let policy = TopicPolicy {
            pattern: pattern("h.>"),
            history_messages,
            history_bytes: 1 << 20,
            history_age: Some(Duration::from_secs(60)),
            retain: false,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            client_retain: None,
            presence: false,
        };
        let registry = registry(vec![policy]);
        let mut receivers = subscribe_many(&registry, &pattern("h.t"), 1);
        g.bench_function(format!("publish/1 subscriber/128B/history {name}"), |b| {
            b.iter_custom(|iters| {
                timed_publishes(&registry, "h.t", &payload, &mut receivers, iters, BURST)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, trie, fanout, history);
criterion_main!(benches);
