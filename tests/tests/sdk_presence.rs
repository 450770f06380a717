//! Presence through the Rust SDK against the real broker: `presence` and
//! `presence_stats`, join/leave changes delivered in order with the
//! messages (`Subscription::recv_delivery`),
//! and a client id that survives a reconnect, so that within the grace
//! period the client stays one entry and nobody sees it leave and join.
//!
//! A server-side disconnect (the broker's connection directory, which
//! `POST /v1/disconnect` uses) closes the client for good with 4007 and
//! 4500-4999, and makes it reconnect with 4100-4499.
//!
//! Every wait is bounded by [`WAIT`]; nothing sleeps for correctness: "no
//! change happened" is checked by making a later message happen and reading
//! the changes delivered before it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tickwire_broker::config::{BrokerConfig, TopicPolicy};
use tickwire_broker::directory::DisconnectCode;
use tickwire_client::{
    Client, ConnectionState, Delivery, Disconnect, Error, ErrorCode, JoinLeave, Member, Message,
    PresenceChange, ReconnectPolicy, SubscribeOptions, Subscription, SubscriptionEvent,
};
use tickwire_e2e::sdk::wait_state;
use tickwire_e2e::{Relay, TestBroker, WAIT};
use tickwire_protocol::topic::Pattern;

const SECRET: &[u8] = b"a secret of at least 32 bytes for the SDK presence tests";

/// A grace period no test waits out.
const LONG_GRACE: Duration = Duration::from_secs(600);

fn with_presence(c: &mut BrokerConfig) {
    c.topic_policies = vec![TopicPolicy {
        pattern: Pattern::new("room.>").expect("valid pattern"),
        presence: true,
        ..TopicPolicy::fallback()
    }];
    c.presence_grace = LONG_GRACE;
}

/// A client with id `id` that reconnects quickly.
async fn client(url: &str, id: &str) -> Client {
    Client::builder(url)
        .client_id(id)
        .reconnect(
            ReconnectPolicy::default()
                .with_initial(Duration::from_millis(10))
                .with_max(Duration::from_millis(50)),
        )
        .connect()
        .await
        .expect("connect")
}

/// Closes the clients, then stops the broker.
async fn finish(broker: TestBroker, clients: impl IntoIterator<Item = Client>) {
    for c in clients {
        c.close().await.expect("close");
    }
    broker.stop().await;
}

/// Subscribes `client` to `pattern` with connection-level join/leave events.
async fn watch(client: &Client, pattern: &str) -> Subscription {
    client
        .subscribe_with(
            pattern,
            SubscribeOptions::new().join_leave(JoinLeave::Clients),
        )
        .await
        .expect("subscribe")
}

/// The next delivery (message, join or leave); fails after [`WAIT`] or if
/// the subscription ends.
async fn next_delivery(sub: &mut Subscription) -> Delivery {
    tokio::time::timeout(WAIT, sub.recv_delivery())
        .await
        .expect("a delivery in time")
        .expect("the subscription is live")
}

/// The next message, and the joins and leaves delivered before it, in
/// order.
async fn message_with_changes(sub: &mut Subscription) -> (Message, Vec<Delivery>) {
    let mut changes = Vec::new();
    loop {
        match next_delivery(sub).await {
            Delivery::Message(msg) => return (msg, changes),
            change => changes.push(change),
        }
    }
}

fn change(topic: &str, client: &str) -> PresenceChange {
    PresenceChange {
        topic: topic.to_owned(),
        client: Some(client.to_owned()),
        user: None,
        info: None,
    }
}

fn clients(members: &[Member]) -> Vec<&str> {
    let mut ids: Vec<&str> = members.iter().map(|m| m.client.as_str()).collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn presence_lists_and_counts_the_subscribed_clients() {
    let broker = TestBroker::start(with_presence).await;
    let url = broker.ws_url();
    let alice = client(&url, "alice-tab").await;
    let bob = client(&url, "bob-tab").await;
    let _a = alice.subscribe("room.1").await.expect("subscribe");
    let _b = bob.subscribe("room.1").await.expect("subscribe");
    // A wildcard subscription never makes a client present.
    let _w = bob.subscribe("room.*").await.expect("subscribe");

    let room = alice.presence("room.1").await.expect("presence");
    assert_eq!((room.clients, room.users), (2, 0));
    assert_eq!(clients(&room.members), ["alice-tab", "bob-tab"]);
    assert!(room.members.iter().all(|m| m.user.is_none()));
    let stats = bob.presence_stats("room.1").await.expect("stats");
    assert_eq!((stats.clients, stats.users), (2, 0));
    let empty = bob.presence_stats("room.2").await.expect("stats");
    assert_eq!((empty.clients, empty.users), (0, 0));

    // Refusals: a topic without presence, a pattern.
    match alice.presence("lobby").await {
        Err(Error::Broker { code, .. }) => assert_eq!(code, ErrorCode::PresenceDisabled),
        other => panic!("expected presence_disabled, got {other:?}"),
    }
    assert!(matches!(
        alice.presence("room.*").await,
        Err(Error::InvalidTopic { .. })
    ));
    match alice
        .subscribe_with(
            "lobby",
            SubscribeOptions::new().join_leave(JoinLeave::Clients),
        )
        .await
    {
        Err(Error::Broker { code, .. }) => assert_eq!(code, ErrorCode::PresenceDisabled),
        other => panic!("expected presence_disabled, got {other:?}"),
    }
    finish(broker, [alice, bob]).await;
}

#[tokio::test]
async fn joins_and_leaves_arrive_in_order_with_the_messages() {
    let broker = TestBroker::start(with_presence).await;
    let url = broker.ws_url();
    let watcher = client(&url, "watcher").await;
    let mut exact = watch(&watcher, "room.1").await;
    let mut wild = watch(&watcher, "room.*").await;

    let guest = client(&url, "guest").await;
    let seat = guest.subscribe("room.1").await.expect("subscribe");
    guest
        .publish_acked("room.1", &"hello")
        .await
        .expect("publish");
    // Leaving (UNSUBSCRIBE) releases at once, before the next publish.
    drop(seat);
    guest
        .publish_acked("room.1", &"bye")
        .await
        .expect("publish");

    // Joins and leaves share the subscription's buffer with the messages:
    // the guest joins before it publishes "hello" and leaves after it, and
    // before "bye". The exact subscription also sees the watcher's own join
    // (it was made present by that very subscription), first.
    let own = Delivery::Join(change("room.1", "watcher"));
    for sub in [&mut exact, &mut wild] {
        let (hello, mut joins) = message_with_changes(sub).await;
        if sub.pattern() == "room.1" {
            assert_eq!(joins.first(), Some(&own), "the watcher's own join");
            joins.remove(0);
        }
        assert_eq!(hello.decode::<String>().expect("decode"), "hello");
        assert_eq!(
            joins,
            [Delivery::Join(change("room.1", "guest"))],
            "{}",
            sub.pattern()
        );
        let (bye, leaves) = message_with_changes(sub).await;
        assert_eq!(bye.decode::<String>().expect("decode"), "bye");
        assert_eq!(
            leaves,
            [Delivery::Leave(change("room.1", "guest"))],
            "{}",
            sub.pattern()
        );
        // `recv` skips joins and leaves; events carry none.
        while let Some(event) = sub.next_event() {
            assert!(
                matches!(
                    event,
                    SubscriptionEvent::Subscribed { .. } | SubscriptionEvent::Resumed
                ),
                "{event:?}"
            );
        }
    }
    finish(broker, [watcher, guest]).await;
}

#[tokio::test]
async fn a_reconnect_within_the_grace_period_is_the_same_entry_and_makes_no_events() {
    let broker = TestBroker::start(with_presence).await;
    let relay = Relay::start(broker.addr).await;
    let watcher = client(&broker.ws_url(), "watcher").await;
    let mut events = watch(&watcher, "room.1").await;
    let guest = client(&relay.ws_url(), "guest").await;
    let seat = guest.subscribe("room.1").await.expect("subscribe");
    guest.publish_acked("room.1", &1).await.expect("publish");
    let (_, before) = message_with_changes(&mut events).await;
    assert!(before.contains(&Delivery::Join(change("room.1", "guest"))));

    // The network drops the guest's connection; the client reconnects with
    // the same id and renews its subscription.
    relay.cut();
    wait_state(&guest, "reconnecting", |s| {
        matches!(s, ConnectionState::Reconnecting { .. })
    })
    .await;
    relay.restore();
    wait_state(&guest, "connected", ConnectionState::is_connected).await;
    tokio::time::timeout(WAIT, async {
        let mut confirmations = 0;
        while confirmations < 2 {
            match seat.event().await {
                Some(SubscriptionEvent::Subscribed { .. }) => confirmations += 1,
                Some(_) => {}
                None => panic!("the guest's subscription ended"),
            }
        }
    })
    .await
    .expect("the guest's subscription is renewed");

    guest.publish_acked("room.1", &2).await.expect("publish");
    let (msg, before) = message_with_changes(&mut events).await;
    assert_eq!(msg.decode::<u8>().expect("decode"), 2);
    assert_eq!(before, [], "no leave and no join within the grace period");
    let room = watcher.presence("room.1").await.expect("presence");
    assert_eq!(clients(&room.members), ["guest", "watcher"]);
    assert_eq!(room.clients, 2);
    drop(seat);
    finish(broker, [watcher, guest]).await;
}

/// A token of `user` that may subscribe and publish everywhere, with
/// client info `{"name": user}`.
fn token_of(user: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 3600;
    let claims = serde_json::json!({
        "sub": user,
        "exp": exp,
        "tw": {"sub": [">"], "pub": [">"], "info": {"name": user}},
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign")
}

#[derive(Debug, PartialEq, serde::Deserialize)]
struct Info {
    name: String,
}

#[tokio::test]
async fn users_client_info_and_user_level_events() {
    let secret = std::env::temp_dir().join(format!("tickwire-sdk-presence-{}", std::process::id()));
    std::fs::write(&secret, SECRET).expect("write the secret");
    let broker = TestBroker::start(|c| {
        with_presence(c);
        c.jwt_hmac_secret_file = vec![secret];
    })
    .await;
    let url = broker.ws_url();
    let as_user = |user: &str, id: &str| {
        Client::builder(url.as_str())
            .token(token_of(user))
            .client_id(id)
            .connect()
    };
    let watcher = as_user("watcher", "w").await.expect("connect");
    let mut users = watcher
        .subscribe_with(
            "room.*",
            SubscribeOptions::new().join_leave(JoinLeave::Users),
        )
        .await
        .expect("subscribe");
    let phone = as_user("alice", "alice-phone").await.expect("connect");
    let laptop = as_user("alice", "alice-laptop").await.expect("connect");
    let _p = phone.subscribe("room.u").await.expect("subscribe");
    let _l = laptop.subscribe("room.u").await.expect("subscribe");
    laptop
        .publish_acked("room.u", &"hi")
        .await
        .expect("publish");

    let (_, changes) = message_with_changes(&mut users).await;
    // One user-level join for alice's two clients, without a client id.
    assert_eq!(changes.len(), 1, "{changes:?}");
    let Delivery::Join(alice) = &changes[0] else {
        panic!("expected a join, got {changes:?}");
    };
    assert_eq!(
        (alice.client.as_deref(), alice.user.as_deref()),
        (None, Some("alice"))
    );
    assert_eq!(
        alice.decode_info::<Info>().expect("info"),
        Some(Info {
            name: "alice".into()
        })
    );

    let room = watcher.presence("room.u").await.expect("presence");
    assert_eq!((room.clients, room.users), (2, 1));
    assert_eq!(clients(&room.members), ["alice-laptop", "alice-phone"]);
    for member in &room.members {
        assert_eq!(member.user.as_deref(), Some("alice"));
        assert_eq!(
            member.decode_info::<Info>().expect("info"),
            Some(Info {
                name: "alice".into()
            })
        );
    }
    finish(broker, [phone, laptop, watcher]).await;
}

#[tokio::test]
async fn a_server_disconnect_with_4007_or_4500_to_4999_is_final_and_4100_to_4499_reconnects() {
    let broker = TestBroker::start(with_presence).await;
    let url = broker.ws_url();
    let watcher = client(&url, "watcher").await;
    let mut events = watch(&watcher, "room.d").await;
    for (n, code) in [4007u16, 4100, 4500, 4499, 4999].into_iter().enumerate() {
        let id = format!("guest-{n}");
        let guest = client(&url, &id).await;
        let seat = guest.subscribe("room.d").await.expect("subscribe");
        let close = DisconnectCode::new(Some(code), Some("bye")).expect("valid code");
        assert_eq!(broker.state.directory.close_client(&id, close), 1);
        if code == 4007 || code >= 4500 {
            wait_state(&guest, "closed", ConnectionState::is_closed).await;
            let state = guest.state().borrow().clone();
            let ConnectionState::Closed { cause: Some(cause) } = state else {
                panic!("{code}: unexpected {state:?}");
            };
            assert!(cause.is_final(), "{code}");
            assert_eq!(
                cause,
                Disconnect::ClosedByBroker {
                    code: Some(code),
                    reason: "bye".into()
                }
            );
            assert!(matches!(guest.ping().await, Err(Error::Closed)));
        } else {
            // Released at once, then held again under the same id.
            wait_state(&guest, "reconnecting", |s| {
                matches!(s, ConnectionState::Reconnecting { .. })
            })
            .await;
            wait_state(&guest, "connected", ConnectionState::is_connected).await;
            guest.publish_acked("room.d", &n).await.expect("publish");
            let present = watcher.presence("room.d").await.expect("presence");
            assert!(
                clients(&present.members).contains(&id.as_str()),
                "{present:?}"
            );
        }
        drop(seat);
        guest.close().await.expect("close");
        // A reconnecting guest joined twice, a final one once; each join
        // is matched by a leave, and it is gone.
        let expected = if code < 4500 && code != 4007 { 2 } else { 1 };
        let (mut joins, mut leaves) = (0, 0);
        while leaves < expected {
            match tokio::time::timeout(WAIT, events.recv_delivery()).await {
                Ok(Some(Delivery::Join(c))) if c.client.as_deref() == Some(&id) => joins += 1,
                Ok(Some(Delivery::Leave(c))) if c.client.as_deref() == Some(&id) => leaves += 1,
                Ok(Some(_)) => {}
                other => {
                    panic!("{code}: no leave of {id} ({joins} joins, {leaves} leaves): {other:?}")
                }
            }
        }
        assert_eq!(
            joins,
            if code < 4500 && code != 4007 { 2 } else { 1 },
            "{code}"
        );
        let present = watcher.presence("room.d").await.expect("presence");
        assert_eq!(clients(&present.members), ["watcher"], "{code}");
    }
    finish(broker, [watcher]).await;
}
