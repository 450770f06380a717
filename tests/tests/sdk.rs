//! The Rust SDK against the real broker: typed payloads, overlapping
//! subscriptions, unsubscribe on drop, surviving a broker restart, the
//! offline publish policy, retained values with `last`, and option checks.
//!
//! Every wait is bounded by [`WAIT`]; nothing sleeps for correctness.

use serde_json::json;
use tickwire_client::{
    ConnectionState, Error, OfflinePolicy, SubscribeOptions, Subscription, SubscriptionEvent,
};
use tickwire_e2e::sdk::{client, client_with, recv, wait_state};
use tickwire_e2e::{Relay, TestBroker, WAIT};

/// Waits for the broker's (re)confirmation of `sub`.
async fn confirmed(sub: &mut Subscription) -> SubscriptionEvent {
    let event = tokio::time::timeout(WAIT, sub.event())
        .await
        .unwrap_or_else(|_| panic!("no confirmation of {} in time", sub.pattern()))
        .expect("subscription still open");
    assert!(
        matches!(event, SubscriptionEvent::Subscribed { .. }),
        "expected a confirmation, got {event:?}"
    );
    event
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Quote {
    symbol: String,
    price: f64,
    volume: u64,
    venues: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_payloads_round_trip_through_the_broker() {
    let broker = TestBroker::start_default().await;
    let publisher = client(&broker.ws_url()).await;
    let subscriber = client(&broker.ws_url()).await;
    let mut quotes = subscriber.subscribe("stocks.*").await.expect("subscribe");

    let quote = Quote {
        symbol: "AAPL".into(),
        price: 189.25,
        volume: 1 << 40,
        venues: vec!["XNAS".into(), "BATS".into()],
    };
    let seq = publisher
        .publish_acked("stocks.AAPL", &quote)
        .await
        .expect("publish");
    publisher
        .publish("stocks.MSFT", &json!({"symbol": "MSFT", "price": 411.0}))
        .await
        .expect("publish");

    let msg = recv(&mut quotes).await;
    assert_eq!((msg.topic(), msg.seq()), ("stocks.AAPL", seq));
    assert_eq!(msg.decode::<Quote>().expect("a Quote"), quote);
    let msg = recv(&mut quotes).await;
    assert_eq!(msg.topic(), "stocks.MSFT");
    assert!(
        matches!(msg.decode::<Quote>(), Err(Error::Decode(_))),
        "a payload of another shape is a decode error"
    );
    let value: serde_json::Value = msg.decode().expect("any MessagePack map");
    assert_eq!(value["price"], json!(411.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_each_receive_the_single_delivery() {
    let broker = TestBroker::start_default().await;
    let publisher = client(&broker.ws_url()).await;
    let subscriber = client(&broker.ws_url()).await;
    let mut wide = subscriber.subscribe("stocks.*").await.expect("subscribe");
    let mut narrow = subscriber
        .subscribe("stocks.AAPL")
        .await
        .expect("subscribe");
    let mut twin = subscriber
        .subscribe("stocks.AAPL")
        .await
        .expect("subscribe");
    // Two patterns on the broker, one connection.
    broker.wait_metric("tickwire_subscriptions", 2.0).await;

    let first = publisher
        .publish_bytes_acked("stocks.AAPL", &b"one"[..])
        .await
        .expect("publish");
    let marker = publisher
        .publish_bytes_acked("stocks.AAPL", &b"two"[..])
        .await
        .expect("publish");
    for sub in [&mut wide, &mut narrow, &mut twin] {
        // Each gets the message once: the next one is the marker.
        assert_eq!(recv(sub).await.seq(), first);
        assert_eq!(recv(sub).await.seq(), marker);
    }
    let other = publisher
        .publish_bytes_acked("stocks.MSFT", &b"m"[..])
        .await
        .expect("publish");
    let msg = recv(&mut wide).await;
    assert_eq!((msg.topic(), msg.seq()), ("stocks.MSFT", other));
    assert!(narrow.try_recv().is_none() && twin.try_recv().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_subscriptions_unsubscribes_on_the_broker() {
    let broker = TestBroker::start_default().await;
    let subscriber = client(&broker.ws_url()).await;
    let a = subscriber.subscribe("news.>").await.expect("subscribe");
    let b = subscriber.subscribe("news.>").await.expect("subscribe");
    let c = subscriber.subscribe("weather.eu").await.expect("subscribe");
    broker.wait_metric("tickwire_subscriptions", 2.0).await;

    drop(a);
    // The other local subscription of the pattern keeps it; a ping is
    // answered after the client processed the drop.
    subscriber.ping().await.expect("ping");
    assert_eq!(broker.metric("tickwire_subscriptions").await, 2.0);
    drop(b);
    broker.wait_metric("tickwire_subscriptions", 1.0).await;
    let events = c.events();
    drop(c);
    broker.wait_metric("tickwire_subscriptions", 0.0).await;
    // An event handle drains what was queued, then ends with the
    // subscription.
    assert!(matches!(
        events.recv().await,
        Some(SubscriptionEvent::Subscribed {
            epoch: Some(_),
            seq: Some(0)
        })
    ));
    assert_eq!(tokio::time::timeout(WAIT, events.recv()).await, Ok(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restarted_on_the_same_port_serves_every_subscription_again() {
    let broker = TestBroker::start_default().await;
    let addr = broker.addr;
    let subscriber = client(&broker.ws_url()).await;
    let mut wide = subscriber.subscribe("stocks.*").await.expect("subscribe");
    let mut exact = subscriber.subscribe("news.eu").await.expect("subscribe");
    for sub in [&mut wide, &mut exact] {
        confirmed(sub).await;
    }

    broker.stop().await;
    wait_state(&subscriber, "reconnecting", |s| {
        matches!(s, ConnectionState::Reconnecting { .. })
    })
    .await;
    let broker = TestBroker::start_at(addr, |_| {}).await;
    // The application does nothing: the client reconnects and renews both
    // subscriptions by itself.
    for sub in [&mut wide, &mut exact] {
        confirmed(sub).await;
    }
    assert!(subscriber.is_connected());

    let publisher = client(&broker.ws_url()).await;
    let aapl = publisher
        .publish_bytes_acked("stocks.AAPL", &b"after restart"[..])
        .await
        .expect("publish");
    let news = publisher
        .publish_bytes_acked("news.eu", &b"headline"[..])
        .await
        .expect("publish");
    let msg = recv(&mut wide).await;
    assert_eq!(
        (msg.topic(), msg.seq(), &msg.payload()[..]),
        ("stocks.AAPL", aapl, &b"after restart"[..])
    );
    let msg = recv(&mut exact).await;
    assert_eq!((msg.topic(), msg.seq()), ("news.eu", news));
    // The new broker numbers its topics afresh.
    assert_eq!((aapl, news), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_while_disconnected_fails_or_is_buffered_per_policy() {
    let broker = TestBroker::start_default().await;
    let relay = Relay::start(broker.addr).await;
    let reader = client(&broker.ws_url()).await;
    let mut inbox = reader.subscribe("offline.*").await.expect("subscribe");

    let failing = client_with(&relay.ws_url(), OfflinePolicy::Fail).await;
    let buffering = client_with(&relay.ws_url(), OfflinePolicy::default()).await;
    relay.cut();
    for c in [&failing, &buffering] {
        wait_state(c, "reconnecting", |s| {
            matches!(s, ConnectionState::Reconnecting { .. })
        })
        .await;
    }

    assert!(matches!(
        failing.publish_bytes("offline.fail", &b"x"[..]).await,
        Err(Error::NotConnected)
    ));
    assert!(matches!(
        failing.publish_bytes_acked("offline.fail", &b"x"[..]).await,
        Err(Error::NotConnected)
    ));
    buffering
        .publish_bytes("offline.buffered", &b"first"[..])
        .await
        .expect("buffered");
    let acked = {
        let buffering = buffering.clone();
        tokio::spawn(async move {
            buffering
                .publish_bytes_acked("offline.buffered", &b"second"[..])
                .await
        })
    };
    relay.restore();

    // Delivered in call order once the client is back; the acknowledged
    // one resolves with its sequence number.
    let msg = recv(&mut inbox).await;
    assert_eq!(
        (msg.topic(), &msg.payload()[..]),
        ("offline.buffered", &b"first"[..])
    );
    let msg = recv(&mut inbox).await;
    assert_eq!(&msg.payload()[..], b"second");
    let seq = tokio::time::timeout(WAIT, acked)
        .await
        .expect("acknowledged in time")
        .expect("task")
        .expect("publish accepted after reconnecting");
    assert_eq!(seq, msg.seq());
    // Nothing from the failing client ever reached the broker.
    wait_state(&failing, "connected", ConnectionState::is_connected).await;
    let marker = failing
        .publish_bytes_acked("offline.fail", &b"marker"[..])
        .await
        .expect("publish");
    assert_eq!(marker, 1, "the refused publishes were not sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_gives_the_retained_value_before_live_messages() {
    let broker = TestBroker::start_default().await;
    let publisher = client(&broker.ws_url()).await;
    let aapl = publisher
        .publish_retained("px.AAPL", &189.5)
        .await
        .expect("retained publish");
    publisher
        .publish_bytes_retained("px.MSFT", &b"411.0"[..])
        .await
        .expect("retained publish");
    // Newer but not retained: not part of the snapshot.
    publisher
        .publish_acked("px.MSFT", &0.0)
        .await
        .expect("publish");

    let subscriber = client(&broker.ws_url()).await;
    let mut exact = subscriber
        .subscribe_with("px.AAPL", SubscribeOptions::new().last(true))
        .await
        .expect("subscribe");
    let mut board = subscriber
        .subscribe_with("px.*", SubscribeOptions::new().last(true))
        .await
        .expect("subscribe");
    let msg = recv(&mut exact).await;
    assert_eq!(
        (msg.seq(), msg.decode::<f64>().expect("f64")),
        (aapl, 189.5)
    );

    let mut snapshot = [recv(&mut board).await, recv(&mut board).await];
    snapshot.sort_by(|a, b| a.topic().cmp(b.topic()));
    assert_eq!(snapshot[0].decode::<f64>().expect("f64"), 189.5);
    assert_eq!(
        (snapshot[1].topic(), &snapshot[1].payload()[..]),
        ("px.MSFT", &b"411.0"[..])
    );

    let live = publisher
        .publish_acked("px.AAPL", &190.0)
        .await
        .expect("publish");
    for sub in [&mut exact, &mut board] {
        let msg = recv(sub).await;
        assert_eq!((msg.topic(), msg.seq()), ("px.AAPL", live));
    }
    // The exact subscription's confirmation names the topic's position.
    assert!(
        matches!(
            exact.next_event(),
            Some(SubscriptionEvent::Subscribed { epoch: Some(_), seq: Some(seq) }) if seq == aapl
        ),
        "confirmation with the position of the retained value"
    );

    // The pattern is taken with `last`: a second snapshot cannot be given,
    // and the client says so instead of silently skipping it.
    let again = subscriber
        .subscribe_with("px.AAPL", SubscribeOptions::new().last(true))
        .await;
    assert!(
        matches!(again, Err(Error::InvalidOptions { .. })),
        "{again:?}"
    );
    let mut joined = subscriber
        .subscribe("px.AAPL")
        .await
        .expect("plain options join");
    confirmed(&mut joined).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_are_checked_and_max_rate_reaches_the_broker() {
    let broker = TestBroker::start_default().await;
    let subscriber = client(&broker.ws_url()).await;
    let bad = subscriber
        .subscribe_with(
            "a.*",
            SubscribeOptions::new().since([(
                "a.*".to_owned(),
                tickwire_client::Position { epoch: 1, seq: 1 },
            )]),
        )
        .await;
    assert!(matches!(bad, Err(Error::InvalidOptions { .. })), "{bad:?}");

    let mut slow = subscriber
        .subscribe_with("feed.*", SubscribeOptions::new().max_rate(1))
        .await
        .expect("subscribe");
    let conflict = subscriber
        .subscribe_with("feed.*", SubscribeOptions::new().max_rate(5))
        .await;
    let Err(Error::InvalidOptions { reason, .. }) = conflict else {
        panic!("expected a conflict, got {conflict:?}");
    };
    assert!(reason.contains("max_rate"), "{reason}");

    // At most one message per second per topic, always the newest: a burst
    // of 50 arrives as its first message and, a second later, its last.
    let publisher = client(&broker.ws_url()).await;
    let mut last = 0;
    for i in 0..50u32 {
        last = publisher
            .publish_acked("feed.x", &i)
            .await
            .expect("publish");
    }
    let first = recv(&mut slow).await;
    assert_eq!(first.seq(), 1);
    let mut received = 1;
    loop {
        let msg = recv(&mut slow).await;
        received += 1;
        if msg.seq() == last {
            assert_eq!(msg.decode::<u32>().expect("u32"), 49);
            break;
        }
    }
    assert!(received <= 4, "{received} messages despite max_rate 1");
    // Conflation skips sequence numbers by design: no gap is reported.
    assert_eq!(
        slow.next_event(),
        Some(SubscriptionEvent::Subscribed {
            epoch: None,
            seq: None
        })
    );
    assert_eq!(slow.next_event(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_larger_than_the_broker_accepts_fails_locally() {
    let broker = TestBroker::start_default().await;
    let publisher = client(&broker.ws_url()).await;
    let reader = client(&broker.ws_url()).await;
    let mut inbox = reader.subscribe("big.*").await.expect("subscribe");
    confirmed(&mut inbox).await;
    let state = publisher.state();

    // The client's default limit is the broker's default: 1 MiB per message.
    let err = publisher
        .publish_bytes_acked("big.one", vec![0u8; 1 << 20])
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::MessageTooLarge { size, limit } if size > limit && limit == 1 << 20),
        "{err:?}"
    );
    // Nothing was sent: the broker did not close the connection for it, and
    // a message just within the limit goes through.
    let seq = publisher
        .publish_bytes_acked("big.one", vec![1u8; (1 << 20) - 64])
        .await
        .expect("a message within the limit");
    let msg = recv(&mut inbox).await;
    assert_eq!((msg.seq(), msg.payload().len()), (seq, (1 << 20) - 64));
    assert!(
        !state.has_changed().expect("client open"),
        "never disconnected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_in_flight_when_the_link_is_cut_arrive_once_or_fail_typed() {
    const PUBLISHES: usize = 200;
    let broker = TestBroker::start_default().await;
    let relay = Relay::start(broker.addr).await;
    let reader = client(&broker.ws_url()).await;
    let mut inbox = reader.subscribe("cut.*").await.expect("subscribe");
    confirmed(&mut inbox).await;
    let publisher = client(&relay.ws_url()).await;

    // Many acknowledged publishes of 16 KiB at once; the link is cut as
    // soon as the first one arrives, and restored once the client noticed.
    let publishes: Vec<_> = (0..PUBLISHES)
        .map(|i| {
            let publisher = publisher.clone();
            let mut payload = vec![0u8; 16 << 10];
            payload[..4].copy_from_slice(&(i as u32).to_be_bytes());
            tokio::spawn(async move { publisher.publish_bytes_acked("cut.t", payload).await })
        })
        .collect();
    let first = recv(&mut inbox).await;
    relay.cut();
    wait_state(&publisher, "disconnected", |s| !s.is_connected()).await;
    relay.restore();
    let mut results = Vec::with_capacity(PUBLISHES);
    for publish in publishes {
        results.push(publish.await.expect("publish task"));
    }

    // Each publish was either acknowledged; or, having been written whole to
    // the cut connection, reported as possibly lost; or refused up front
    // because the offline buffer was full while disconnected (3.2 MiB of
    // publishes against a 1 MiB buffer), and then never sent. None failed
    // otherwise.
    let mut acked = Vec::new();
    let mut refused = Vec::new();
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(_) => acked.push(i),
            Err(Error::ConnectionLost) => {}
            Err(Error::OfflineBufferFull { .. }) => refused.push(i),
            Err(other) => panic!("publish {i}: {other:?}"),
        }
    }
    // The reader gets every acknowledged one, and nothing twice.
    let index = |payload: &[u8]| u32::from_be_bytes(payload[..4].try_into().unwrap()) as usize;
    let marker = publisher
        .publish_bytes_acked("cut.t", u32::MAX.to_be_bytes().to_vec())
        .await
        .expect("marker");
    let mut seen = vec![index(first.payload())];
    loop {
        let msg = recv(&mut inbox).await;
        if msg.seq() == marker {
            break;
        }
        seen.push(index(msg.payload()));
    }
    let mut distinct = seen.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), seen.len(), "no publish arrived twice");
    for i in acked {
        assert!(
            distinct.binary_search(&i).is_ok(),
            "acknowledged publish {i} arrived"
        );
    }
    for i in refused {
        assert!(
            distinct.binary_search(&i).is_err(),
            "refused publish {i} never arrived"
        );
    }
}
