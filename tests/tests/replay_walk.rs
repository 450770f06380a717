//! A wildcard subscribe with `since` or `last` walks every matching topic.
//! These tests check, over real sockets, that the walk holds up nobody else
//! and that its seam with live publishes has no gap and no duplicate.
//!
//! The 100,000-topic walk with a deterministic proof that publishes go
//! through while it is in progress is a broker unit test
//! (`registry::tests::a_wildcard_walk_over_100k_topics_never_holds_up_other_publishes`);
//! here a walk over as many topics is measured end to end.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tickwire_e2e::{RawClient, Received, TestBroker, history_policy};
use tickwire_protocol::message::Position;
use tickwire_protocol::{ClientMessage, SubscribeOptions};

async fn next_message(client: &mut RawClient) -> (String, u64, u64) {
    loop {
        match client.recv().await {
            Received::Message {
                topic, epoch, seq, ..
            } => return (topic, epoch, seq),
            Received::Ping => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn publishes_on_other_topics_flow_while_a_wildcard_last_walks_many_topics() {
    const TOPICS: usize = 100_000;
    let broker = TestBroker::start(|c| {
        c.outbound_queue_bytes = 64 << 20;
        // The setup publishes every topic at once from one connection.
        c.publish_burst = 2 * TOPICS as u32;
    })
    .await;
    let mut setup = RawClient::connect(broker.addr).await;
    for i in 0..TOPICS {
        let topic = format!("w.{i}");
        setup
            .send(&ClientMessage::Publish {
                id: None,
                topic: &topic,
                payload: bytes::Bytes::from_static(b"v"),
                retain: true,
            })
            .await;
    }
    setup.publish_retained("w.barrier", b"v").await;

    // The prober publishes with acknowledgements until the subscriber has
    // its SUBSCRIBED reply, which the broker sends once the walk is done.
    let mut prober = RawClient::connect(broker.addr).await;
    prober.publish_acked("other", b"warm-up").await;
    let walked = Arc::new(AtomicBool::new(false));
    let mut subscriber = RawClient::connect(broker.addr).await;
    let subscribe_sent = Instant::now();
    let id = subscriber.next_id();
    subscriber
        .send(&ClientMessage::Subscribe {
            id,
            pattern: "w.>",
            options: SubscribeOptions::default().last(true),
        })
        .await;
    let probe = {
        let walked = walked.clone();
        tokio::spawn(async move {
            let mut round_trips = Vec::new();
            while !walked.load(Ordering::Acquire) {
                let sent = Instant::now();
                prober.publish_acked("other", b"p").await;
                round_trips.push((sent, sent.elapsed()));
            }
            round_trips
        })
    };
    match subscriber.recv().await {
        Received::Subscribed(got, _) if got == id => {}
        other => panic!("expected SUBSCRIBED {id}, got {other:?}"),
    }
    let walk = subscribe_sent.elapsed();
    walked.store(true, Ordering::Release);
    let round_trips = probe.await.expect("prober");

    let during: Vec<Duration> = round_trips
        .iter()
        .filter(|(sent, rtt)| {
            *sent >= subscribe_sent && sent.duration_since(subscribe_sent) + *rtt <= walk
        })
        .map(|(_, rtt)| *rtt)
        .collect();
    let worst = round_trips
        .iter()
        .map(|(_, rtt)| *rtt)
        .max()
        .unwrap_or_default();
    eprintln!(
        "walk over {} topics: {walk:?}; {} publishes acknowledged during it; worst round trip {worst:?}",
        TOPICS + 1,
        during.len()
    );
    assert!(
        during.len() >= 5,
        "publishes elsewhere go on during the walk ({} did)",
        during.len()
    );
    assert!(
        worst < walk / 2,
        "worst publish round trip {worst:?} is well below the walk's {walk:?}"
    );

    let mut seen = 0;
    while seen < TOPICS + 1 {
        let (topic, _, seq) = next_message(&mut subscriber).await;
        assert_eq!(seq, 1, "{topic}: the retained value");
        seen += 1;
    }
    drop((setup, subscriber));
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_wildcard_resume_racing_publishes_is_gapless_on_every_topic() {
    const RACING: [&str; 4] = ["h.r0", "h.r1", "h.r2", "h.r3"];
    const QUIET: usize = 5_000;
    const BEFORE: u64 = 30;
    const ROUNDS: u64 = 300;
    let broker = TestBroker::start(|c| {
        c.topic_policies = vec![history_policy("h.>", 100_000)];
        c.outbound_queue_bytes = 64 << 20;
    })
    .await;
    let mut publisher = RawClient::connect(broker.addr).await;
    // Quiet topics make the walk long enough for publishes to race it.
    for i in 0..QUIET {
        publisher.publish(&format!("h.q{i}"), b"q").await;
    }
    let mut epochs = HashMap::new();
    let mut probe = RawClient::connect(broker.addr).await;
    for topic in RACING {
        epochs.insert(topic, probe.subscribe(topic).await.epoch.expect("epoch"));
    }
    drop(probe);
    for _ in 0..BEFORE - 1 {
        for topic in RACING {
            publisher.publish(topic, b"before").await;
        }
    }
    for topic in RACING {
        assert_eq!(publisher.publish_acked(topic, b"before").await, BEFORE);
    }

    // Resume r0 after 10, r1 after 20, r2 at its latest; r3 is new to the
    // client, so all of its history is replayed.
    let since: Vec<(String, Position)> = [("h.r0", 10), ("h.r1", 20), ("h.r2", BEFORE)]
        .into_iter()
        .map(|(topic, seq)| {
            let epoch = epochs[topic];
            (topic.to_owned(), Position { epoch, seq })
        })
        .collect();
    let racer = tokio::spawn(async move {
        for _ in 0..ROUNDS - 1 {
            for topic in RACING {
                publisher.publish(topic, b"race").await;
            }
        }
        let mut last = HashMap::new();
        for topic in RACING {
            last.insert(topic, publisher.publish_acked(topic, b"race").await);
        }
        last
    });
    let mut reader = RawClient::connect(broker.addr).await;
    let info = reader
        .subscribe_with("h.>", SubscribeOptions::default().since(since))
        .await;
    assert_eq!(info.recovered, Some(true), "{info:?}");
    let last = racer.await.expect("racing publisher");

    let first = HashMap::from([
        ("h.r0", 11),
        ("h.r1", 21),
        ("h.r2", BEFORE + 1),
        ("h.r3", 1),
    ]);
    let mut next: HashMap<String, u64> = first.iter().map(|(t, s)| (t.to_string(), *s)).collect();
    let mut quiet = 0;
    while quiet < QUIET || RACING.iter().any(|t| next[*t] <= last[t]) {
        let (topic, epoch, seq) = next_message(&mut reader).await;
        match next.get_mut(&topic) {
            Some(want) => {
                assert_eq!(epoch, epochs[topic.as_str()], "{topic}");
                assert_eq!(seq, *want, "{topic}: no gap, no duplicate, in order");
                *want += 1;
            }
            None => {
                assert_eq!(seq, 1, "{topic}: its one message, once");
                quiet += 1;
            }
        }
    }
    for topic in RACING {
        assert_eq!(last[topic], BEFORE + ROUNDS, "{topic}");
    }
    drop(reader);
    broker.stop().await;
}
