//! Delivery semantics over real sockets: gapless resume, recovery failure,
//! last value with wildcards, conflation, drop-oldest and max_rate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tickwire_broker::config::TopicPolicy;
use tickwire_broker::outbound::SlowConsumerPolicy;
use tickwire_e2e::{RawClient, TestBroker, WAIT, next_message};
use tickwire_protocol::SubscribeOptions;
use tickwire_protocol::message::Position;
use tickwire_protocol::topic::Pattern;

fn policy(pattern: &str, history: usize, slow_consumer: SlowConsumerPolicy) -> TopicPolicy {
    TopicPolicy {
        pattern: Pattern::new(pattern).expect("valid pattern"),
        history_messages: history,
        history_bytes: if history > 0 { 64 << 20 } else { 0 },
        history_age: None,
        retain: false,
        slow_consumer,
        client_retain: None,
        presence: false,
    }
}

fn since(topic: &str, position: Position) -> SubscribeOptions {
    SubscribeOptions::default().since(vec![(topic.to_owned(), position)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_delivers_exactly_the_missed_messages_then_live_while_publishes_race() {
    const MISSED: u64 = 200;
    const RACING: u64 = 500;
    let broker = TestBroker::start(|c| {
        c.topic_policies = vec![policy("iot.>", 10_000, SlowConsumerPolicy::Disconnect)]
    })
    .await;
    let mut publisher = RawClient::connect(broker.addr).await;
    let mut reader = RawClient::connect(broker.addr).await;
    let info = reader.subscribe("iot.s1").await;
    let epoch = info.epoch.expect("exact subscriptions report the epoch");
    for _ in 0..10 {
        publisher.publish("iot.s1", b"r").await;
    }
    publisher.publish_acked("iot.s1", b"r").await;
    let mut last_seen = 0;
    for _ in 0..11 {
        last_seen = next_message(&mut reader).await.1;
    }
    assert_eq!(last_seen, 11);
    drop(reader);

    // Missed while disconnected.
    for _ in 0..MISSED - 1 {
        publisher.publish("iot.s1", b"missed").await;
    }
    publisher.publish_acked("iot.s1", b"missed").await;

    // Publishes race the resubscribe.
    let addr = broker.addr;
    let racer = tokio::spawn(async move {
        for _ in 0..RACING - 1 {
            publisher.publish("iot.s1", b"race").await;
        }
        publisher.publish_acked("iot.s1", b"race").await
    });
    let mut reader = RawClient::connect(addr).await;
    let info = reader
        .subscribe_with(
            "iot.s1",
            since(
                "iot.s1",
                Position {
                    epoch,
                    seq: last_seen,
                },
            ),
        )
        .await;
    assert_eq!(info.recovered, Some(true));
    assert_eq!(info.epoch, Some(epoch));
    let final_seq = racer.await.expect("racing publisher");
    assert_eq!(final_seq, 11 + MISSED + RACING);
    for want in last_seen + 1..=final_seq {
        let (_, seq, _) = next_message(&mut reader).await;
        assert_eq!(seq, want, "no gap, no duplicate, in order");
    }
    assert_eq!(broker.metric("tickwire_resumes_total").await, 1.0);
    drop(reader);
    broker.stop().await;
}

#[tokio::test]
async fn exhausted_history_or_changed_epoch_is_not_recovered() {
    let broker = TestBroker::start(|c| {
        c.topic_policies = vec![policy("h.>", 5, SlowConsumerPolicy::Disconnect)]
    })
    .await;
    let mut publisher = RawClient::connect(broker.addr).await;
    let mut seq = 0;
    for _ in 0..20 {
        seq = publisher.publish_acked("h.t", b"x").await;
    }
    let mut probe = RawClient::connect(broker.addr).await;
    let epoch = probe.subscribe("h.t").await.epoch.expect("epoch");
    let current = Position { epoch, seq };

    // The history keeps 5 messages: resuming after seq 10 is impossible.
    let mut client = RawClient::connect(broker.addr).await;
    let info = client
        .subscribe_with("h.t", since("h.t", Position { epoch, seq: 10 }))
        .await;
    assert_eq!(info.recovered, Some(false));
    assert_eq!(info.missed, vec![("h.t".to_owned(), current)]);

    // Another epoch (e.g. from before a broker restart) cannot be resumed.
    let mut client2 = RawClient::connect(broker.addr).await;
    let info = client2
        .subscribe_with(
            "h.t",
            since(
                "h.t",
                Position {
                    epoch: epoch ^ 0xff,
                    seq: 19,
                },
            ),
        )
        .await;
    assert_eq!(info.recovered, Some(false));
    assert_eq!(info.missed, vec![("h.t".to_owned(), current)]);

    // Within the history it works, also through a wildcard.
    let mut client3 = RawClient::connect(broker.addr).await;
    let info = client3
        .subscribe_with("h.*", since("h.t", Position { epoch, seq: 17 }))
        .await;
    assert_eq!(info.recovered, Some(true));
    for want in 18..=20 {
        assert_eq!(next_message(&mut client3).await.1, want);
    }
    assert_eq!(broker.metric("tickwire_resumes_total").await, 3.0);
    drop((publisher, probe, client, client2, client3));
    broker.stop().await;
}

#[tokio::test]
async fn last_with_a_wildcard_snapshots_each_topic_then_goes_live_without_a_gap() {
    let broker = TestBroker::start_default().await;
    let mut publisher = RawClient::connect(broker.addr).await;
    for (symbol, price) in [
        ("AAPL", "189.1"),
        ("MSFT", "411.0"),
        ("AAPL", "189.5"),
        ("NVDA", "121.3"),
    ] {
        publisher
            .publish_retained(&format!("stocks.{symbol}"), price.as_bytes())
            .await;
    }
    publisher.publish_retained("fx.EURUSD", b"1.08").await;

    let mut dashboard = RawClient::connect(broker.addr).await;
    dashboard
        .subscribe_with("stocks.*", SubscribeOptions::default().last(true))
        .await;
    let mut snapshot = HashMap::new();
    for _ in 0..3 {
        let (topic, seq, payload) = next_message(&mut dashboard).await;
        snapshot.insert(topic, (seq, String::from_utf8(payload).expect("utf-8")));
    }
    assert_eq!(snapshot["stocks.AAPL"], (2, "189.5".to_owned()));
    assert_eq!(snapshot["stocks.MSFT"], (1, "411.0".to_owned()));
    assert_eq!(snapshot["stocks.NVDA"], (1, "121.3".to_owned()));

    // Live messages continue each topic's sequence with no gap.
    publisher.publish_acked("stocks.AAPL", b"190.0").await;
    publisher.publish_acked("stocks.MSFT", b"412.0").await;
    assert_eq!(next_message(&mut dashboard).await.0, "stocks.AAPL");
    let (topic, seq, _) = next_message(&mut dashboard).await;
    assert_eq!((topic.as_str(), seq), ("stocks.MSFT", 2));
    drop((publisher, dashboard));
    broker.stop().await;
}

/// Kernel socket buffer maxima: a bound on what a stalled reader can have in
/// flight outside the broker's queue.
fn kernel_buffer_bound() -> usize {
    let max = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .last()
                    .and_then(|v| v.parse::<usize>().ok())
            })
            .unwrap_or(8 << 20)
    };
    max("/proc/sys/net/ipv4/tcp_wmem") + max("/proc/sys/net/ipv4/tcp_rmem")
}

const UPDATES: u64 = 10_000;
const TOPICS: u64 = 100;
const PAYLOAD: usize = 4096;
const BUDGET: usize = 1 << 20;

/// Messages published between two waits for the fast reader: 100 × 4 KiB
/// stay under half of `BUDGET`, where its queue would start shedding.
const WINDOW: u64 = 100;

/// Publishes `UPDATES` messages round-robin over `TOPICS` topics; after
/// every `WINDOW` it waits until the fast reader (`fast_read`: how many it
/// has read) has them all, so that reader is fast whatever the machine's
/// load.
async fn publish_updates(
    publisher: &mut RawClient,
    prefix: &str,
    fast_read: &mut tokio::sync::watch::Receiver<u64>,
) {
    let payload = vec![1u8; PAYLOAD];
    for n in 0..UPDATES {
        let topic = format!("{prefix}.{}", n % TOPICS);
        publisher.publish(&topic, &payload).await;
        if (n + 1) % WINDOW == 0 {
            let caught_up = tokio::time::timeout(WAIT, fast_read.wait_for(|&read| read > n))
                .await
                .expect("the fast reader keeps up within the wait");
            if caught_up.is_err() {
                // The reader stopped (its assertion failed): its join says why.
                return;
            }
        }
    }
}

/// Reads everything a fast subscriber gets, counting it in `read`; asserts
/// it is all of it, in order.
fn fast_reader(
    mut client: RawClient,
    read: tokio::sync::watch::Sender<u64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next: HashMap<String, u64> = HashMap::new();
        for n in 1..=UPDATES {
            let (topic, seq, _) = next_message(&mut client).await;
            let want = next.entry(topic).or_insert(1);
            assert_eq!(
                seq, *want,
                "fast subscriber receives every message in order"
            );
            *want += 1;
            read.send_replace(n);
        }
    })
}

/// What a stalled subscriber received once it read again.
struct StalledOutcome {
    broker: TestBroker,
    received: u64,
    gaps: u64,
}

/// A stalled and a fast subscriber on `prefix.*` (policy `slow_consumer`),
/// `UPDATES` publishes, then the stalled one reads until it has every
/// topic's latest message. The fast one must get everything in order.
async fn stalled_reader_scenario(
    prefix: &str,
    slow_consumer: SlowConsumerPolicy,
) -> StalledOutcome {
    let pattern = format!("{prefix}.*");
    let broker = TestBroker::start(|c| {
        c.outbound_queue_bytes = BUDGET;
        c.max_message_size = 64 * 1024;
        c.max_http_body = 64 * 1024;
        c.topic_policies = vec![policy(&format!("{prefix}.>"), 0, slow_consumer)];
    })
    .await;
    let mut stalled = RawClient::connect(broker.addr).await;
    stalled.subscribe(&pattern).await;
    let mut fast = RawClient::connect(broker.addr).await;
    fast.subscribe(&pattern).await;
    let (read, mut fast_read) = tokio::sync::watch::channel(0);
    let fast = fast_reader(fast, read);
    let mut publisher = RawClient::connect(broker.addr).await;
    publish_updates(&mut publisher, prefix, &mut fast_read).await;
    fast.await.expect("fast subscriber got all updates");

    let latest = UPDATES / TOPICS;
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut received = 0;
    let mut gaps = 0;
    while last_seq.len() < TOPICS as usize || last_seq.values().any(|s| *s != latest) {
        let (topic, seq, _) = next_message(&mut stalled).await;
        received += 1;
        let previous = last_seq.insert(topic, seq).unwrap_or(0);
        assert!(seq > previous, "per-topic order holds");
        gaps += seq - previous - 1;
    }
    assert_eq!(
        broker
            .metric("tickwire_slow_consumer_disconnects_total")
            .await,
        0.0
    );
    drop((stalled, publisher));
    StalledOutcome {
        broker,
        received,
        gaps,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflation_gives_a_stalled_reader_the_latest_of_every_topic_in_bounded_memory() {
    let outcome = stalled_reader_scenario("px", SlowConsumerPolicy::Conflate).await;
    let frame = PAYLOAD + 64;
    let bound = ((kernel_buffer_bound() + BUDGET) / frame) as u64 + TOPICS;
    assert!(
        outcome.received <= bound,
        "received {}, bound {bound}",
        outcome.received
    );
    assert!(
        outcome.received < UPDATES,
        "conflation replaced some updates"
    );
    assert!(
        outcome
            .broker
            .metric("tickwire_messages_conflated_total")
            .await
            > 0.0
    );
    outcome.broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_shows_the_gap_in_sequences_and_metrics() {
    let outcome = stalled_reader_scenario("log", SlowConsumerPolicy::DropOldest).await;
    let dropped = outcome
        .broker
        .metric("tickwire_messages_dropped_total")
        .await as u64;
    assert!(outcome.gaps > 0, "the stalled reader saw sequence gaps");
    assert_eq!(outcome.gaps, dropped, "every gap is a counted drop");
    assert_eq!(outcome.received + dropped, UPDATES);
    outcome.broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rate_caps_delivery_and_ends_on_the_latest_value() {
    const RATE: u32 = 10;
    const PER_TOPIC: u64 = 600;
    let broker = TestBroker::start_default().await;
    let mut dashboard = RawClient::connect(broker.addr).await;
    dashboard
        .subscribe_with("feed.*", SubscribeOptions::default().max_rate(RATE))
        .await;
    let mut publisher = RawClient::connect(broker.addr).await;
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    for _ in 0..PER_TOPIC {
        ticker.tick().await;
        publisher.publish("feed.a", b"a").await;
        publisher.publish("feed.b", b"b").await;
    }
    publisher.publish_acked("feed.a", b"a").await;
    publisher.publish_acked("feed.b", b"b").await;

    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut last: HashMap<String, u64> = HashMap::new();
    while last.len() < 2 || last.values().any(|s| *s != PER_TOPIC + 1) {
        let (topic, seq, _) = next_message(&mut dashboard).await;
        *counts.entry(topic.clone()).or_default() += 1;
        last.insert(topic, seq);
    }
    let elapsed = started.elapsed().as_secs_f64();
    for (topic, count) in &counts {
        let cap = (elapsed * f64::from(RATE)).ceil() as u64 + 2;
        assert!(
            *count <= cap,
            "{topic}: {count} messages in {elapsed:.2}s exceeds {RATE}/s (cap {cap})"
        );
        assert!(*count >= 2, "{topic}: at least the first and the latest");
    }
    assert!(broker.metric("tickwire_messages_conflated_total").await > 0.0);
    drop((publisher, dashboard));
    broker.stop().await;
}
