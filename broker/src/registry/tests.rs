//! Unit tests of the registry: fan-out, resolution, eviction, resume and
//! the wildcard replay walk.

use super::*;
use crate::outbound::{Outbound, OutboundQueue, OutboundReceiver, SlowConsumerPolicy};
use tickwire_protocol::ServerMessage;

fn registry_with(max_topics: usize, policies: Vec<TopicPolicy>) -> TopicRegistry {
    TopicRegistry::new(
        RegistryLimits {
            max_topics,
            topic_idle_ttl: Duration::from_secs(60),
            max_retained_bytes: usize::MAX,
        },
        policies,
        Metrics::new(),
    )
}

fn registry(max_topics: usize) -> TopicRegistry {
    registry_with(max_topics, Vec::new())
}

fn history_policy(pattern: &str, messages: usize) -> TopicPolicy {
    TopicPolicy {
        pattern: Pattern::new(pattern).unwrap(),
        history_messages: messages,
        history_bytes: 1 << 20,
        history_age: None,
        retain: false,
        slow_consumer: SlowConsumerPolicy::Disconnect,
        client_retain: None,
        presence: false,
    }
}

fn sub(id: u64) -> (Subscriber, OutboundReceiver) {
    let (queue, rx) = OutboundQueue::new(id, 1 << 20, Metrics::new());
    (Subscriber::unlimited(queue), rx)
}

fn p(s: &str) -> Pattern {
    Pattern::new(s).unwrap()
}

fn t(s: &str) -> Topic<'_> {
    Topic::new(s).unwrap()
}

fn plain<'a>(pattern: &'a Pattern, subscriber: &Subscriber) -> SubscribeRequest<'a> {
    SubscribeRequest {
        pattern,
        subscriber: subscriber.clone(),
        since: None,
        last: false,
    }
}

/// Subscribes a fresh connection to `pattern` with `since`; returns the
/// reply info and the connection's receiver.
fn subscribe_since(
    reg: &TopicRegistry,
    pattern: &str,
    since: &[(Topic<'_>, Position)],
) -> (SubscribedInfo, OutboundReceiver) {
    let (s, rx) = sub(1);
    let pattern = p(pattern);
    let mut info = None;
    let request = SubscribeRequest {
        pattern: &pattern,
        subscriber: s,
        since: Some(since),
        last: false,
    };
    reg.subscribe(request, |i| info = Some(i)).unwrap();
    (info.expect("registered was called"), rx)
}

/// The current position of a tracked topic.
fn position(reg: &TopicRegistry, topic: &str) -> Position {
    reg.topic(topic)
        .expect("topic is tracked")
        .state
        .lock()
        .position()
}

fn drain(rx: &mut OutboundReceiver) -> Vec<Bytes> {
    let mut frames = Vec::new();
    while let Some(Outbound::Frame(f, _)) = rx.try_recv() {
        frames.push(f);
    }
    frames
}

/// (topic, seq) of each delivery frame.
fn deliveries(frames: &[Bytes]) -> Vec<(String, u64)> {
    frames
        .iter()
        .map(|f| {
            let body = f.slice(2..);
            match ServerMessage::decode(&body).unwrap() {
                ServerMessage::Message(d) => (d.topic.to_owned(), d.seq),
                other => panic!("not a delivery: {other:?}"),
            }
        })
        .collect()
}

#[test]
fn overlapping_subscriptions_deliver_once() {
    let reg = registry(100);
    let (s, mut rx) = sub(1);
    for pattern in ["stocks.*", "stocks.AAPL", "stocks.>"] {
        reg.subscribe(plain(&p(pattern), &s), |_| {}).unwrap();
    }
    let receipt = reg.publish(t("stocks.AAPL"), b"x", false).unwrap();
    assert_eq!((receipt.seq, receipt.deliveries), (1, 1));
    assert!(receipt.backlog.is_empty());
    assert_eq!(drain(&mut rx).len(), 1);
}

#[test]
fn all_subscribers_share_one_encoded_frame() {
    let reg = registry(100);
    let (a, mut rx_a) = sub(1);
    let (b, mut rx_b) = sub(2);
    reg.subscribe(plain(&p("t"), &a), |_| {}).unwrap();
    reg.subscribe(plain(&p(">"), &b), |_| {}).unwrap();
    assert_eq!(
        reg.publish(t("t"), b"payload", false).unwrap().deliveries,
        2
    );
    let fa = drain(&mut rx_a);
    let fb = drain(&mut rx_b);
    assert_eq!(
        fa[0].as_ptr(),
        fb[0].as_ptr(),
        "same allocation, not a copy"
    );
}

#[test]
fn sequence_numbers_are_per_topic() {
    let reg = registry(100);
    assert_eq!(reg.publish(t("a"), b"", false).unwrap().seq, 1);
    assert_eq!(reg.publish(t("a"), b"", false).unwrap().seq, 2);
    assert_eq!(reg.publish(t("b"), b"", false).unwrap().seq, 1);
}

#[test]
fn pattern_changes_invalidate_cached_resolution() {
    let reg = registry(100);
    let (s, mut rx) = sub(1);
    assert_eq!(reg.publish(t("x.y"), b"", false).unwrap().deliveries, 0);
    reg.subscribe(plain(&p("x.*"), &s), |_| {}).unwrap();
    assert_eq!(reg.publish(t("x.y"), b"", false).unwrap().deliveries, 1);
    assert!(reg.unsubscribe(&p("x.*"), 1));
    assert_eq!(reg.publish(t("x.y"), b"", false).unwrap().deliveries, 0);
    assert_eq!(drain(&mut rx).len(), 1);
}

#[test]
fn a_connection_that_left_is_not_kept_alive_by_a_topics_cached_subscribers() {
    let reg = registry(100);
    let (wildcard, _wildcard_rx) = sub(1);
    let (exact, _exact_rx) = sub(2);
    let alone = Arc::strong_count(&exact.queue);
    reg.subscribe(plain(&p("x.*"), &wildcard), |_| {}).unwrap();
    reg.subscribe(plain(&p("x.y"), &exact), |_| {}).unwrap();
    assert_eq!(reg.publish(t("x.y"), b"", false).unwrap().deliveries, 2);

    assert!(reg.unsubscribe(&p("x.*"), 1));
    assert!(
        Arc::strong_count(&wildcard.queue) > alone,
        "a wildcard unsubscribe only marks every cached list stale"
    );
    assert_eq!(reg.sweep_idle(Instant::now()), 0, "x.y is not idle yet");
    assert_eq!(
        Arc::strong_count(&wildcard.queue),
        alone,
        "the sweep drops stale cached lists"
    );

    assert_eq!(reg.publish(t("x.y"), b"", false).unwrap().deliveries, 1);
    assert!(reg.unsubscribe(&p("x.y"), 2));
    assert_eq!(
        Arc::strong_count(&exact.queue),
        alone,
        "an exact unsubscribe drops the topic's cached list at once"
    );
    assert_eq!(reg.publish(t("x.y"), b"", false).unwrap().deliveries, 0);
}

#[test]
fn reply_is_queued_before_the_first_message() {
    let reg = registry(100);
    let (s, mut rx) = sub(1);
    let reply = Bytes::from_static(b"reply");
    reg.subscribe(plain(&p("t"), &s), |_| {
        s.queue.push(reply.clone(), Instant::now());
    })
    .unwrap();
    reg.publish(t("t"), b"m", false).unwrap();
    let frames = drain(&mut rx);
    assert_eq!(frames[0], reply);
    assert_eq!(frames.len(), 2);
}

#[test]
fn topic_limit_and_idle_eviction() {
    let reg = registry(2);
    reg.publish(t("a"), b"", false).unwrap();
    reg.publish(t("b"), b"", false).unwrap();
    assert_eq!(
        reg.publish(t("c"), b"", false).err(),
        Some(RegistryError::TooManyTopics(2))
    );
    let (s, _rx) = sub(1);
    reg.subscribe(plain(&p("a"), &s), |_| {}).unwrap();
    let later = Instant::now() + Duration::from_secs(120);
    assert_eq!(reg.sweep_idle(later), 1, "b is idle; a has a subscriber");
    assert_eq!(reg.topic_count.load(Ordering::Relaxed), 1);
    assert_eq!(reg.publish(t("c"), b"", false).unwrap().seq, 1);
    assert_eq!(
        reg.publish(t("b"), b"", false).err(),
        Some(RegistryError::TooManyTopics(2))
    );
    assert_eq!(reg.publish(t("c"), b"", false).unwrap().seq, 2);
}

#[test]
fn resume_replays_exactly_the_missed_messages() {
    let reg = registry_with(100, vec![history_policy("h.>", 10)]);
    for _ in 0..5 {
        reg.publish(t("h.a"), b"m", false).unwrap();
    }
    let position = position(&reg, "h.a");
    let from = Position {
        epoch: position.epoch,
        seq: 2,
    };
    let (info, mut rx) = subscribe_since(&reg, "h.a", &[(t("h.a"), from)]);
    assert_eq!(info.recovered, Some(true));
    assert_eq!((info.epoch, info.seq), (Some(position.epoch), Some(5)));
    reg.publish(t("h.a"), b"live", false).unwrap();
    let seqs: Vec<u64> = deliveries(&drain(&mut rx))
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(seqs, vec![3, 4, 5, 6]);
}

#[test]
fn resume_fails_on_another_epoch_or_exhausted_history() {
    let reg = registry_with(100, vec![history_policy("h.>", 3)]);
    for _ in 0..10 {
        reg.publish(t("h.a"), b"m", false).unwrap();
    }
    let current = position(&reg, "h.a");
    for from in [
        Position {
            epoch: current.epoch ^ 1,
            seq: 9,
        },
        Position {
            epoch: current.epoch,
            seq: 2,
        },
    ] {
        let (info, mut rx) = subscribe_since(&reg, "h.a", &[(t("h.a"), from)]);
        assert_eq!(info.recovered, Some(false));
        assert_eq!(info.missed, vec![("h.a".to_owned(), current)]);
        assert!(
            drain(&mut rx).is_empty(),
            "nothing is replayed when recovery fails"
        );
    }
}

#[test]
fn last_with_a_wildcard_snapshots_every_matching_topic() {
    let reg = registry(100);
    reg.publish(t("px.a"), b"1", true).unwrap();
    reg.publish(t("px.a"), b"2", true).unwrap();
    reg.publish(t("px.b"), b"3", true).unwrap();
    reg.publish(t("px.c"), b"not retained", false).unwrap();
    reg.publish(t("other"), b"4", true).unwrap();
    let (s, mut rx) = sub(1);
    let pattern = p("px.*");
    reg.subscribe(
        SubscribeRequest {
            pattern: &pattern,
            subscriber: s,
            since: None,
            last: true,
        },
        |_| {},
    )
    .unwrap();
    reg.publish(t("px.b"), b"live", false).unwrap();
    let mut got = deliveries(&drain(&mut rx));
    let live = got.pop().unwrap();
    got.sort();
    assert_eq!(got, vec![("px.a".to_owned(), 2), ("px.b".to_owned(), 1)]);
    assert_eq!(live, ("px.b".to_owned(), 2));
}

/// Subscribes a fresh connection `id` (budget 64 MiB) to `pattern` on
/// another thread; returns the thread and the connection's receiver.
fn subscribe_on_thread(
    reg: &Arc<TopicRegistry>,
    id: u64,
    pattern: &str,
    since: Option<Vec<(String, Position)>>,
    last: bool,
) -> (std::thread::JoinHandle<SubscribedInfo>, OutboundReceiver) {
    let (queue, rx) = OutboundQueue::new(id, 64 << 20, Metrics::new());
    let reg = Arc::clone(reg);
    let pattern = p(pattern);
    let walker = std::thread::spawn(move || {
        let since: Option<Vec<(Topic<'_>, Position)>> = since
            .as_ref()
            .map(|s| s.iter().map(|(name, at)| (t(name), *at)).collect());
        let mut info = None;
        let request = SubscribeRequest {
            pattern: &pattern,
            subscriber: Subscriber::unlimited(queue),
            since: since.as_deref(),
            last,
        };
        reg.subscribe(request, |i| info = Some(i)).unwrap();
        info.expect("registered was called")
    });
    (walker, rx)
}

/// Waits, yielding, until a wildcard pattern was registered after
/// `generation` was read.
fn wait_for_registration(reg: &TopicRegistry, generation: u64) {
    while reg.pattern_generation.load(Ordering::Acquire) == generation {
        std::thread::yield_now();
    }
}

#[test]
fn a_wildcard_walk_over_100k_topics_never_holds_up_other_publishes() {
    const TOPICS: usize = 100_000;
    let reg = Arc::new(registry(TOPICS + 10));
    for i in 0..TOPICS {
        reg.publish(t(&format!("w.{i}")), b"v", true).unwrap();
    }

    // Unobstructed, for scale: how long the walk takes.
    let started = Instant::now();
    let (walker, mut rx) = subscribe_on_thread(&reg, 1, "w.>", None, true);
    walker.join().unwrap();
    let walk = started.elapsed();
    assert_eq!(drain(&mut rx).len(), TOPICS);
    assert!(reg.unsubscribe(&p("w.>"), 1));

    // Now the walk cannot finish while this test holds one of its
    // topics; publishes elsewhere must go through all the same.
    let blocker = reg.topic("w.0").unwrap();
    let blocked = blocker.state.lock();
    let generation = reg.pattern_generation.load(Ordering::Acquire);
    let (walker, mut rx) = subscribe_on_thread(&reg, 2, "w.>", None, true);
    wait_for_registration(&reg, generation);
    let mut worst = Duration::ZERO;
    for _ in 0..1000 {
        let begun = Instant::now();
        reg.publish(t("other"), b"x", false).unwrap();
        worst = worst.max(begun.elapsed());
    }
    // A matching topic's live message is held for the subscriber.
    assert_eq!(reg.publish(t("w.1"), b"live", false).unwrap().deliveries, 1);
    assert!(
        !walker.is_finished(),
        "all publishes completed while the walk was in progress"
    );
    drop(blocked);
    walker.join().unwrap();
    eprintln!("walk over {TOPICS} topics: {walk:?}; worst publish during a walk: {worst:?}");

    let got = deliveries(&drain(&mut rx));
    let w1: Vec<u64> = got
        .iter()
        .filter(|(topic, _)| topic == "w.1")
        .map(|(_, seq)| *seq)
        .collect();
    // Walked before the live publish: the retained 1, then live 2.
    // Walked after it: only the retained 1, the snapshot as of then
    // (2 was not retained, as if published before the subscribe).
    assert!(w1 == vec![1, 2] || w1 == vec![1], "w.1 got {w1:?}");
    assert_eq!(got.len(), TOPICS - 1 + w1.len());
}

#[test]
fn a_wildcard_resume_is_gapless_per_topic_while_publishes_race_the_walk() {
    const TOPICS: usize = 10;
    let reg = Arc::new(registry_with(100, vec![history_policy("h.>", 1000)]));
    let names: Vec<String> = (0..TOPICS).map(|i| format!("h.{i}")).collect();
    for name in &names {
        for _ in 0..3 {
            reg.publish(t(name), b"before", false).unwrap();
        }
    }
    // Resume every topic but h.9 after seq 1; h.9 is new to the client.
    let since: Vec<(String, Position)> = names[..TOPICS - 1]
        .iter()
        .map(|name| {
            let epoch = position(&reg, name).epoch;
            (name.clone(), Position { epoch, seq: 1 })
        })
        .collect();
    let blocker = reg.topic("h.5").unwrap();
    let blocked = blocker.state.lock();
    let generation = reg.pattern_generation.load(Ordering::Acquire);
    let (walker, mut rx) = subscribe_on_thread(&reg, 1, "h.*", Some(since), false);
    wait_for_registration(&reg, generation);
    // Publishes while the walk is somewhere before, at or after h.5.
    for name in names.iter().filter(|n| *n != "h.5") {
        reg.publish(t(name), b"racing", false).unwrap();
    }
    drop(blocked);
    let info = walker.join().unwrap();
    assert_eq!(info.recovered, Some(true));
    for name in &names {
        reg.publish(t(name), b"after", false).unwrap();
    }
    let got = deliveries(&drain(&mut rx));
    for name in &names {
        let seqs: Vec<u64> = got
            .iter()
            .filter(|(topic, _)| topic == name)
            .map(|(_, seq)| *seq)
            .collect();
        let last = position(&reg, name).seq;
        let first = if name == "h.9" { 1 } else { 2 };
        assert_eq!(seqs, (first..=last).collect::<Vec<_>>(), "{name}");
    }
}

/// Cluster mode: message `seq` of epoch `epoch` from Redis.
fn remote(reg: &TopicRegistry, topic: &str, epoch: u64, seq: u64) -> usize {
    reg.deliver_remote(t(topic), Position { epoch, seq }, 1, b"m")
        .unwrap()
        .0
}

#[test]
fn remote_messages_keep_their_position_and_a_repeat_is_delivered_once() {
    let reg = registry(100);
    let (s, mut rx) = sub(1);
    let exact = p("r.a");
    let wildcard = p("r.*");
    reg.subscribe(plain(&exact, &s), |_| {}).unwrap();
    reg.subscribe(plain(&wildcard, &s), |_| {}).unwrap();
    drain(&mut rx);
    assert_eq!(remote(&reg, "r.a", 7, 41), 1);
    // The same message again (it matched a channel and a pattern in
    // Redis): not delivered twice.
    assert_eq!(remote(&reg, "r.a", 7, 41), 0);
    assert_eq!(remote(&reg, "r.a", 7, 42), 1);
    assert_eq!(
        deliveries(&drain(&mut rx)),
        vec![("r.a".to_owned(), 41), ("r.a".to_owned(), 42)]
    );
    assert_eq!(position(&reg, "r.a"), Position { epoch: 7, seq: 42 });
}

#[test]
fn a_held_subscription_gets_live_messages_after_its_reply_and_above_its_cut() {
    let reg = registry(100);
    let (s, mut rx) = sub(1);
    let held = reg.subscribe_held(&p("r.a"), s).unwrap();
    // Received from Redis before the subscription's read: held.
    assert_eq!(remote(&reg, "r.a", 7, 1), 1);
    assert_eq!(remote(&reg, "r.a", 7, 2), 1);
    assert!(drain(&mut rx).is_empty());
    let (origin, position) = reg.local_topic(t("r.a"), &held.subscriber).unwrap();
    assert_eq!(position, Position { epoch: 7, seq: 2 });
    // The read in Redis saw seq 1: the reply stands for it, 2 comes live.
    let mut batch = ReplayBatch::with_late_repeats();
    batch.add(
        origin.topic_id,
        Position { epoch: 7, seq: 1 },
        &mut Vec::new(),
        origin,
    );
    let queue = Arc::clone(&held.subscriber.queue);
    held.pending.finish(&queue, batch, Instant::now(), || {
        queue.push(ServerMessage::Pong { id: 99 }.to_frame(), Instant::now());
    });
    assert_eq!(remote(&reg, "r.a", 7, 3), 1);
    let frames = drain(&mut rx);
    assert_eq!(
        ServerMessage::decode(&frames[0].slice(2..)).unwrap(),
        ServerMessage::Pong { id: 99 },
        "the reply first"
    );
    assert_eq!(
        deliveries(&frames[1..]),
        vec![("r.a".to_owned(), 2), ("r.a".to_owned(), 3)]
    );
    // A held subscription counts like any other, and leaves like one.
    assert!(reg.unsubscribe(&p("r.a"), 1));
    assert_eq!(remote(&reg, "r.a", 7, 4), 0);
}

#[test]
fn a_message_the_read_covered_that_reaches_the_node_after_the_reply_is_not_delivered_again() {
    let reg = registry(100);
    let (s, mut rx) = sub(1);
    let held = reg.subscribe_held(&p("r.a"), s).unwrap();
    assert_eq!(remote(&reg, "r.a", 7, 1), 1);
    // The read in Redis saw seq 2 (replayed), which this node has not
    // received yet: it comes on the pub/sub connection after the reply.
    let (origin, _) = reg.local_topic(t("r.a"), &held.subscriber).unwrap();
    let mut batch = ReplayBatch::with_late_repeats();
    let mut replayed = vec![Bytes::from_static(b"replayed 2")];
    batch.add(
        origin.topic_id,
        Position { epoch: 7, seq: 2 },
        &mut replayed,
        origin,
    );
    let queue = Arc::clone(&held.subscriber.queue);
    held.pending.finish(&queue, batch, Instant::now(), || {});
    assert_eq!(remote(&reg, "r.a", 7, 2), 0, "a repeat of the replay");
    assert_eq!(remote(&reg, "r.a", 7, 3), 1);
    let frames = drain(&mut rx);
    assert_eq!(frames[0], Bytes::from_static(b"replayed 2"));
    assert_eq!(deliveries(&frames[1..]), vec![("r.a".to_owned(), 3)]);
}

fn listed(page: &TopicPage) -> Vec<(&str, usize, u64)> {
    page.topics
        .iter()
        .map(|t| (t.name.as_str(), t.subscribers, t.seq))
        .collect()
}

#[test]
fn topic_listing_is_sorted_filtered_paginated_and_counts_subscribers() {
    let reg = registry(100);
    let (s1, _rx1) = sub(1);
    let (s2, _rx2) = sub(2);
    // Connection 1 matches s.b twice (exact and wildcard): counted once.
    reg.subscribe(plain(&p("s.b"), &s1), |_| {}).unwrap();
    reg.subscribe(plain(&p("s.*"), &s1), |_| {}).unwrap();
    reg.subscribe(plain(&p("s.b"), &s2), |_| {}).unwrap();
    for name in ["s.c", "s.a", "x.y", "s.b", "s.d", "s.b"] {
        reg.publish(t(name), b"1", false).unwrap();
    }
    let first = reg.list_topics(&p("s.*"), None, 2);
    assert_eq!(listed(&first), [("s.a", 1, 1), ("s.b", 2, 2)]);
    assert!(first.more);
    let position = position(&reg, "s.b");
    assert_eq!(first.topics[1].epoch, position.epoch);
    let second = reg.list_topics(&p("s.*"), Some("s.b"), 2);
    assert_eq!(listed(&second), [("s.c", 1, 1), ("s.d", 1, 1)]);
    assert!(!second.more);
    let all = reg.list_topics(&Pattern::everything(), None, 100);
    let names: Vec<_> = all.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["s.a", "s.b", "s.c", "s.d", "x.y"]);
    assert!(!all.more);
    let none = reg.list_topics(&p("s.*"), Some("s.d"), 2);
    assert!(none.topics.is_empty() && !none.more);
    // The page size is capped.
    assert_eq!(reg.list_topics(&p(">"), None, usize::MAX).topics.len(), 5);

    let mut seen = Vec::new();
    reg.for_each_position(3, |name, _, seq| seen.push((name.to_owned(), seq)));
    assert_eq!(seen.len(), 3);
    let mut all_seen = Vec::new();
    reg.for_each_position(100, |name, _, seq| all_seen.push((name.to_owned(), seq)));
    all_seen.sort();
    assert_eq!(all_seen[1], ("s.b".to_owned(), 2));
}

#[test]
fn a_fan_out_reports_the_backed_up_queues_and_the_topic_keeps_them() {
    let reg = registry(100);
    let (fast, _fast_rx) = sub(1);
    let (queue, mut rx) = OutboundQueue::new(2, 4096, Metrics::new());
    for s in [&fast, &Subscriber::unlimited(queue)] {
        reg.subscribe(plain(&p("bp"), s), |_| {}).unwrap();
    }
    assert!(reg.backlog(t("bp")).is_none(), "nothing published yet");
    let payload = [0u8; 256];
    let mut published = 0;
    let backlog = loop {
        let receipt = reg.publish(t("bp"), &payload, false).unwrap();
        assert_eq!(receipt.deliveries, 2);
        published += 1;
        if let [backlog] = &receipt.backlog[..] {
            break Arc::clone(backlog);
        }
        assert!(published < 16, "no backlog within the budget");
    };
    assert_eq!(backlog.id(), 2, "the small queue is the backed-up one");
    assert!(backlog.queued_bytes() > 2048);
    let kept = reg.backlog(t("bp")).expect("the topic keeps its backlog");
    assert!(Arc::ptr_eq(&kept, &backlog));
    assert!(reg.backlog(t("other")).is_none());
    // Once drained, the topic no longer reports it.
    assert_eq!(drain(&mut rx).len(), published);
    assert!(reg.backlog(t("bp")).is_none());
    let receipt = reg.publish(t("bp"), &payload, false).unwrap();
    assert!(receipt.backlog.is_empty());
}
