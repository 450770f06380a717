//! The SDK's automatic resume against the real broker: the client's
//! connection is cut by a relay (the broker keeps running and keeps
//! history), messages are published meanwhile, and the subscription must
//! continue with exactly those messages, then live ones, with no gap and no
//! duplicate, or say clearly that it could not.
//!
//! Every wait is bounded by [`WAIT`]; nothing sleeps for correctness.

use tickwire_broker::config::{BrokerConfig, TopicPolicy};
use tickwire_broker::outbound::SlowConsumerPolicy;
use tickwire_client::{
    Client, ConnectionState, Position, SubscribeOptions, Subscription, SubscriptionEvent,
};
use tickwire_e2e::sdk::{client, recv, wait_state};
use tickwire_e2e::{Relay, TestBroker, WAIT};
use tickwire_protocol::topic::Pattern;

fn with_history(c: &mut BrokerConfig) {
    c.topic_policies = vec![TopicPolicy {
        pattern: Pattern::new("iot.>").expect("valid pattern"),
        history_messages: 10_000,
        history_bytes: 64 << 20,
        history_age: None,
        retain: false,
        slow_consumer: SlowConsumerPolicy::Disconnect,
        client_retain: None,
        presence: false,
    }];
}

/// The next `n` messages as (topic, seq, payload).
async fn take(sub: &mut Subscription, n: usize) -> Vec<(String, u64, Vec<u8>)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let msg = recv(sub).await;
        out.push((msg.topic().to_owned(), msg.seq(), msg.payload().to_vec()));
    }
    out
}

async fn next_event(sub: &mut Subscription) -> SubscriptionEvent {
    tokio::time::timeout(WAIT, sub.event())
        .await
        .unwrap_or_else(|_| panic!("no event on {} in time", sub.pattern()))
        .expect("subscription still open")
}

/// Waits for the renewal's confirmation and returns the event after it.
async fn renewal_outcome(sub: &mut Subscription) -> SubscriptionEvent {
    let confirmation = next_event(sub).await;
    assert!(
        matches!(confirmation, SubscriptionEvent::Subscribed { .. }),
        "expected the renewal's confirmation, got {confirmation:?}"
    );
    next_event(sub).await
}

async fn cut(relay: &Relay, client: &Client) {
    relay.cut();
    wait_state(client, "reconnecting", |s| {
        matches!(s, ConnectionState::Reconnecting { .. })
    })
    .await;
}

/// Publishes `n` messages `prefix-i` on `topic`; returns their seqs.
async fn publish_n(publisher: &Client, topic: &str, prefix: &str, n: usize) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(n);
    for i in 0..n {
        let payload = format!("{prefix}-{i}").into_bytes();
        seqs.push(
            publisher
                .publish_bytes_acked(topic, payload)
                .await
                .expect("publish"),
        );
    }
    seqs
}

fn expected(topic: &str, prefix: &str, seqs: &[u64]) -> Vec<(String, u64, Vec<u8>)> {
    seqs.iter()
        .enumerate()
        .map(|(i, seq)| (topic.to_owned(), *seq, format!("{prefix}-{i}").into_bytes()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_resumes_gaplessly_and_a_restart_is_reported() {
    const MISSED: usize = 300;
    let broker = TestBroker::start(with_history).await;
    let addr = broker.addr;
    let relay = Relay::start(addr).await;
    let publisher = client(&broker.ws_url()).await;
    let subscriber = client(&relay.ws_url()).await;
    let mut sub = subscriber.subscribe("iot.s1").await.expect("subscribe");
    let SubscriptionEvent::Subscribed {
        epoch: Some(epoch),
        seq: Some(0),
    } = next_event(&mut sub).await
    else {
        panic!("an exact subscription is confirmed with its position");
    };

    let before = publish_n(&publisher, "iot.s1", "before", 3).await;
    assert_eq!(
        take(&mut sub, 3).await,
        expected("iot.s1", "before", &before)
    );

    cut(&relay, &subscriber).await;
    let missed = publish_n(&publisher, "iot.s1", "missed", MISSED).await;
    relay.restore();

    assert_eq!(renewal_outcome(&mut sub).await, SubscriptionEvent::Resumed);
    assert_eq!(
        take(&mut sub, MISSED).await,
        expected("iot.s1", "missed", &missed),
        "exactly the messages published while disconnected, in order"
    );
    let live = publish_n(&publisher, "iot.s1", "live", 5).await;
    assert_eq!(take(&mut sub, 5).await, expected("iot.s1", "live", &live));
    assert!(sub.try_recv().is_none(), "no duplicate");
    assert_eq!(sub.next_event(), None, "no gap");

    // A broker restart loses the history: the client says so, with the
    // topic's new position, and goes on with live messages.
    broker.stop().await;
    wait_state(&subscriber, "reconnecting", |s| {
        matches!(s, ConnectionState::Reconnecting { .. })
    })
    .await;
    let broker = TestBroker::start_at(addr, with_history).await;
    let SubscriptionEvent::RecoveryIncomplete { missed } = renewal_outcome(&mut sub).await else {
        panic!("a restarted broker cannot resume the old epoch");
    };
    assert_eq!(missed.len(), 1);
    let (topic, now) = &missed[0];
    assert_eq!(topic, "iot.s1");
    assert_eq!(now.seq, 0);
    assert_ne!(now.epoch, epoch, "a new epoch");

    let publisher = client(&broker.ws_url()).await;
    let fresh = publish_n(&publisher, "iot.s1", "fresh", 2).await;
    assert_eq!(fresh, vec![1, 2]);
    assert_eq!(take(&mut sub, 2).await, expected("iot.s1", "fresh", &fresh));
    assert_eq!(sub.next_event(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_subscription_resumes_gaplessly_on_the_first_reconnect() {
    let broker = TestBroker::start(with_history).await;
    let relay = Relay::start(broker.addr).await;
    let publisher = client(&broker.ws_url()).await;
    let subscriber = client(&relay.ws_url()).await;
    let mut sub = subscriber.subscribe("iot.>").await.expect("subscribe");
    assert_eq!(
        next_event(&mut sub).await,
        SubscriptionEvent::Subscribed {
            epoch: None,
            seq: None
        }
    );
    let seen = publish_n(&publisher, "iot.a", "seen", 2).await;
    assert_eq!(take(&mut sub, 2).await, expected("iot.a", "seen", &seen));

    // First cut: every delivery carried its topic's epoch, so the renewal
    // asks for iot.a's exact position and the broker resumes it. A topic the
    // client never saw (iot.new) is new to it: its whole history is
    // replayed.
    cut(&relay, &subscriber).await;
    let lost = publish_n(&publisher, "iot.a", "lost", 4).await;
    let new = publish_n(&publisher, "iot.new", "new", 3).await;
    relay.restore();
    assert_eq!(renewal_outcome(&mut sub).await, SubscriptionEvent::Resumed);
    let mut got = take(&mut sub, 7).await;
    got.sort();
    let mut want = expected("iot.a", "lost", &lost);
    want.extend(expected("iot.new", "new", &new));
    want.sort();
    assert_eq!(got, want, "exactly the messages published while away");

    let live = publish_n(&publisher, "iot.a", "live", 1).await;
    assert_eq!(take(&mut sub, 1).await, expected("iot.a", "live", &live));
    assert!(sub.try_recv().is_none(), "no duplicate");
    assert_eq!(sub.next_event(), None, "no gap, no incomplete recovery");

    // Second cut: both topics resume, iot.new from its replayed position.
    cut(&relay, &subscriber).await;
    let a = publish_n(&publisher, "iot.a", "a", 5).await;
    let n = publish_n(&publisher, "iot.new", "n", 5).await;
    relay.restore();
    assert_eq!(renewal_outcome(&mut sub).await, SubscriptionEvent::Resumed);
    let mut got = take(&mut sub, 10).await;
    got.sort();
    let mut want = expected("iot.a", "a", &a);
    want.extend(expected("iot.new", "n", &n));
    want.sort();
    assert_eq!(got, want);
    assert!(sub.try_recv().is_none());
    assert_eq!(sub.next_event(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_replays_are_delivered_once_per_subscription() {
    let broker = TestBroker::start(with_history).await;
    let relay = Relay::start(broker.addr).await;
    let publisher = client(&broker.ws_url()).await;
    let subscriber = client(&relay.ws_url()).await;
    let mut exact = subscriber.subscribe("iot.s1").await.expect("subscribe");
    let mut wide = subscriber.subscribe("iot.*").await.expect("subscribe");
    let first = publish_n(&publisher, "iot.s1", "first", 1).await;
    for sub in [&mut exact, &mut wide] {
        assert!(matches!(
            next_event(sub).await,
            SubscriptionEvent::Subscribed { .. }
        ));
        assert_eq!(take(sub, 1).await, expected("iot.s1", "first", &first));
    }

    // Both broker subscriptions replay the same messages on one connection;
    // each local subscription gets each message once.
    cut(&relay, &subscriber).await;
    let away = publish_n(&publisher, "iot.s1", "away", 50).await;
    relay.restore();
    for sub in [&mut exact, &mut wide] {
        assert_eq!(renewal_outcome(sub).await, SubscriptionEvent::Resumed);
    }
    let after = publish_n(&publisher, "iot.s1", "after", 1).await;
    for sub in [&mut exact, &mut wide] {
        let mut want = expected("iot.s1", "away", &away);
        want.extend(expected("iot.s1", "after", &after));
        assert_eq!(take(sub, 51).await, want, "on {}", sub.pattern());
        assert!(
            sub.try_recv().is_none(),
            "no duplicate on {}",
            sub.pattern()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_since_replays_and_resume_can_be_turned_off() {
    let broker = TestBroker::start(with_history).await;
    let relay = Relay::start(broker.addr).await;
    let publisher = client(&broker.ws_url()).await;
    let early = publish_n(&publisher, "iot.s2", "early", 10).await;

    // Learn the epoch as an application would: from a confirmation.
    let subscriber = client(&relay.ws_url()).await;
    let mut live_only = subscriber
        .subscribe_with("iot.s2", SubscribeOptions::new().resume(false))
        .await
        .expect("subscribe");
    let SubscriptionEvent::Subscribed {
        epoch: Some(epoch),
        seq: Some(10),
    } = next_event(&mut live_only).await
    else {
        panic!("confirmation with the position");
    };

    // A second client resumes after seq 6, as `tickwire sub --since` does.
    let other = client(&broker.ws_url()).await;
    let mut resumed = other
        .subscribe_with(
            "iot.s2",
            SubscribeOptions::new().since([("iot.s2".to_owned(), Position { epoch, seq: 6 })]),
        )
        .await
        .expect("subscribe");
    assert_eq!(
        renewal_outcome(&mut resumed).await,
        SubscriptionEvent::Resumed
    );
    assert_eq!(
        take(&mut resumed, 4).await,
        expected("iot.s2", "early", &early)[6..].to_vec()
    );

    // With resume off, a renewal starts with live messages only.
    cut(&relay, &subscriber).await;
    publish_n(&publisher, "iot.s2", "gone", 3).await;
    relay.restore();
    assert!(matches!(
        next_event(&mut live_only).await,
        SubscriptionEvent::Subscribed { seq: Some(13), .. }
    ));
    let live = publish_n(&publisher, "iot.s2", "live", 1).await;
    assert_eq!(
        take(&mut live_only, 1).await,
        expected("iot.s2", "live", &live)
    );
    assert_eq!(live_only.next_event(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_snapshot_does_not_repeat_what_was_delivered() {
    let broker = TestBroker::start_default().await;
    let relay = Relay::start(broker.addr).await;
    let publisher = client(&broker.ws_url()).await;
    let retained = publisher
        .publish_retained("px.a", &1.5)
        .await
        .expect("retained publish");
    let subscriber = client(&relay.ws_url()).await;
    let mut board = subscriber
        .subscribe_with("px.*", SubscribeOptions::new().last(true))
        .await
        .expect("subscribe");
    assert!(matches!(
        next_event(&mut board).await,
        SubscriptionEvent::Subscribed { .. }
    ));
    assert_eq!(recv(&mut board).await.seq(), retained);

    // Nothing changes while the client is away. The renewal resumes px.a
    // from the snapshot it delivered; a snapshot the broker sends again is
    // the same message, which the client does not deliver twice.
    cut(&relay, &subscriber).await;
    relay.restore();
    assert_eq!(
        renewal_outcome(&mut board).await,
        SubscriptionEvent::Resumed
    );
    let live = publisher
        .publish_acked("px.a", &2.5)
        .await
        .expect("publish");
    let msg = recv(&mut board).await;
    assert_eq!((msg.seq(), msg.decode::<f64>().expect("f64")), (live, 2.5));
}
