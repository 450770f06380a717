//! Cluster presence (docs/cluster.md, "Presence"): the presence scripts run
//! directly against a real `redis-server` (holder counting across nodes,
//! user counts, idempotence, exactly-once reaping by racing reapers, a
//! lease made again), then several `tickwire serve --cluster` processes.
//! Every wait is bounded by a deadline.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use tickwire_broker::cluster::presence::PresenceCall;
use tickwire_broker::cluster::presence::event::{ChannelEvent, EventKind, parse_event};
use tickwire_broker::cluster::presence::lease::{Reaped, reap_once, refresh, retire};
use tickwire_broker::cluster::presence::read_presence;
use tickwire_broker::cluster::presence::scripts::{
    NODES_KEY, entry_key, holders_key, holds_key, lease_key, users_key,
};
use tickwire_e2e::WAIT;
use tickwire_e2e::redis::RedisServer;

/// An event as the tests compare them: kind, user-level, client, user,
/// info.
type Event = (EventKind, bool, String, Option<String>, Vec<u8>);

fn owned(event: ChannelEvent<'_>) -> Event {
    (
        event.kind,
        event.user_level,
        event.client.to_owned(),
        event.user.map(str::to_owned),
        event.info.unwrap_or_default().to_vec(),
    )
}

/// Receives every presence event published on any topic channel.
struct Events {
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, Event)>,
}

impl Events {
    async fn start(redis: &RedisServer) -> Events {
        let client = redis::Client::open(redis.url()).expect("a Redis URL");
        let mut pubsub = client
            .get_async_pubsub()
            .await
            .expect("a pub/sub connection");
        pubsub
            .psubscribe("tickwire:{*}:msg")
            .await
            .expect("PSUBSCRIBE");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                let channel = message.get_channel_name().to_owned();
                if let Some(event) = parse_event(message.get_payload_bytes()) {
                    if tx.send((channel, owned(event))).is_err() {
                        return;
                    }
                }
            }
        });
        Events { rx }
    }

    async fn next(&mut self) -> (String, Event) {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("an event in time")
            .expect("the event stream lives")
    }

    /// Marks the end of what a test step published: every event before
    /// the marker was received, and nothing else is pending.
    async fn none_before_marker(&mut self, connection: &mut Conn, redis_marker: &str) {
        publish_marker(connection, redis_marker).await;
        let (channel, event) = self.next().await;
        assert_eq!(
            channel,
            format!("tickwire:{{{redis_marker}}}:msg"),
            "unexpected event {event:?}"
        );
    }
}

type Conn = redis::aio::MultiplexedConnection;

/// Publishes a LEAVE-looking marker event on topic `marker`'s channel.
async fn publish_marker(connection: &mut Conn, marker: &str) {
    let _: u64 = redis::cmd("PUBLISH")
        .arg(format!("tickwire:{{{marker}}}:msg"))
        .arg("P L 0 marker -\n")
        .query_async(connection)
        .await
        .expect("PUBLISH");
}

/// Runs the join script of `node` for `client`/`user` on `topic`.
async fn join(
    c: &mut Conn,
    node: &str,
    topic: &str,
    client: &str,
    user: Option<&str>,
    info: &[u8],
) -> u64 {
    redis::cmd("EVAL")
        .arg(PresenceCall::join_source())
        .arg(1)
        .arg(holds_key(node))
        .arg(topic)
        .arg(entry_key(client, user))
        .arg(info)
        .query_async(c)
        .await
        .expect("the join script")
}

/// Runs the leave script of `node` for `client`/`user` on `topic`.
async fn leave(c: &mut Conn, node: &str, topic: &str, client: &str, user: Option<&str>) -> u64 {
    redis::cmd("EVAL")
        .arg(PresenceCall::leave_source())
        .arg(1)
        .arg(holds_key(node))
        .arg(topic)
        .arg(entry_key(client, user))
        .query_async(c)
        .await
        .expect("the leave script")
}

async fn hget(c: &mut Conn, key: &str, field: &str) -> Option<i64> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(c)
        .await
        .expect("HGET")
}

fn event(kind: EventKind, users: bool, client: &str, user: Option<&str>, info: &[u8]) -> Event {
    (
        kind,
        users,
        client.to_owned(),
        user.map(str::to_owned),
        info.to_vec(),
    )
}

#[tokio::test]
async fn entries_are_counted_by_holders_across_nodes_and_users_by_entries() {
    let redis = RedisServer::start().await;
    let mut c = redis.connection().await;
    let mut events = Events::start(&redis).await;
    let channel = "tickwire:{room}:msg".to_owned();
    use EventKind::{Join, Leave};

    // Node A joins alice's client c1: JOIN (also alice's).
    assert_eq!(
        join(&mut c, "A", "room", "c1", Some("alice"), b"\x01").await,
        1
    );
    assert_eq!(
        events.next().await,
        (
            channel.clone(),
            event(Join, true, "c1", Some("alice"), b"\x01")
        )
    );
    // Again from A: nothing (idempotent); from B: the same entry, held twice.
    assert_eq!(
        join(&mut c, "A", "room", "c1", Some("alice"), b"\x01").await,
        0
    );
    assert_eq!(
        join(&mut c, "B", "room", "c1", Some("alice"), b"\x02").await,
        0
    );
    assert_eq!(
        hget(&mut c, &holders_key("room"), "c1 alice").await,
        Some(2)
    );
    // Alice's second client: a JOIN, not alice's.
    assert_eq!(join(&mut c, "B", "room", "c2", Some("alice"), b"").await, 1);
    assert_eq!(
        events.next().await,
        (
            channel.clone(),
            event(Join, false, "c2", Some("alice"), b"")
        )
    );
    // An anonymous client.
    assert_eq!(join(&mut c, "A", "room", "c3", None, b"").await, 1);
    assert_eq!(
        events.next().await,
        (channel.clone(), event(Join, false, "c3", None, b""))
    );
    assert_eq!(hget(&mut c, &users_key("room"), "alice").await, Some(2));

    let presence = read_presence(&mut c, "room", false, 10)
        .await
        .expect("read");
    assert_eq!((presence.clients, presence.users), (3, 1));
    let mut clients: Vec<(String, Option<String>, Option<Vec<u8>>)> = presence
        .entries
        .expect("entries")
        .into_iter()
        .map(|e| {
            (
                e.client.to_string(),
                e.user.map(|u| u.to_string()),
                e.info.map(|i| i.to_vec()),
            )
        })
        .collect();
    clients.sort();
    assert_eq!(
        clients,
        vec![
            ("c1".to_owned(), Some("alice".to_owned()), Some(vec![1])),
            ("c2".to_owned(), Some("alice".to_owned()), None),
            ("c3".to_owned(), None, None),
        ]
    );
    let bounded = read_presence(&mut c, "room", false, 2).await.expect("read");
    assert_eq!(bounded.entries.map(|e| e.len()), Some(2));
    assert_eq!(bounded.clients, 3);

    // A lets c1 go: B still holds it, no event. A leaving again: nothing.
    assert_eq!(leave(&mut c, "A", "room", "c1", Some("alice")).await, 0);
    assert_eq!(leave(&mut c, "A", "room", "c1", Some("alice")).await, 0);
    events.none_before_marker(&mut c, "mark1").await;
    // B lets c1 go: LEAVE with the info stored by the first join.
    assert_eq!(leave(&mut c, "B", "room", "c1", Some("alice")).await, 1);
    assert_eq!(
        events.next().await,
        (
            channel.clone(),
            event(Leave, false, "c1", Some("alice"), b"\x01")
        )
    );
    // Alice's last entry: her LEAVE too.
    assert_eq!(leave(&mut c, "B", "room", "c2", Some("alice")).await, 1);
    assert_eq!(
        events.next().await,
        (
            channel.clone(),
            event(Leave, true, "c2", Some("alice"), b"")
        )
    );
    assert_eq!(leave(&mut c, "A", "room", "c3", None).await, 1);
    assert_eq!(
        events.next().await,
        (channel.clone(), event(Leave, false, "c3", None, b""))
    );
    // Nothing is left behind.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tickwire:*")
        .query_async(&mut c)
        .await
        .expect("KEYS");
    assert!(keys.is_empty(), "left behind: {keys:?}");
}

/// Runs reap calls on `c` until none is left; what they did.
async fn reap_all(mut c: Conn) -> Vec<Reaped> {
    let mut all = Vec::new();
    while let Some(reaped) = reap_once(&mut c).await.expect("the reap script") {
        all.push(reaped);
    }
    all
}

#[tokio::test]
async fn racing_reapers_release_each_entry_of_a_dead_node_once() {
    let redis = RedisServer::start().await;
    let mut c = redis.connection().await;
    let mut events = Events::start(&redis).await;
    // Node "dead" holds 1,200 entries on 3 topics (more than one reap
    // call's batch), among them one that node "alive" holds too.
    assert!(
        !refresh(&mut c, "dead", Duration::from_millis(200))
            .await
            .expect("lease")
    );
    assert!(
        !refresh(&mut c, "alive", Duration::from_secs(60))
            .await
            .expect("lease")
    );
    for i in 0..1200 {
        let topic = format!("t{}", i % 3);
        join(
            &mut c,
            "dead",
            &topic,
            &format!("c{i}"),
            Some(&format!("u{}", i % 7)),
            b"",
        )
        .await;
    }
    join(&mut c, "alive", "t0", "c0", Some("u0"), b"").await;
    for _ in 0..1200 {
        events.next().await;
    }
    // Not dead yet: its lease lives.
    assert_eq!(reap_once(&mut c).await.expect("reap"), None);
    // Wait for the lease to expire (bounded), then reap from two
    // connections at once.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let exists: u64 = redis::cmd("EXISTS")
            .arg(lease_key("dead"))
            .query_async(&mut c)
            .await
            .expect("EXISTS");
        if exists == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease did not expire"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (a, b) = tokio::join!(
        reap_all(redis.connection().await),
        reap_all(redis.connection().await)
    );
    let all: Vec<&Reaped> = a.iter().chain(&b).collect();
    assert!(all.iter().all(|r| r.node == "dead"));
    assert_eq!(
        all.iter().map(|r| r.entries).sum::<u64>(),
        1199,
        "c0 is still held by \"alive\""
    );
    assert_eq!(
        all.iter().filter(|r| r.claimed).count(),
        1,
        "the node is claimed once"
    );
    let mut leaves: HashMap<String, usize> = HashMap::new();
    for _ in 0..1199 {
        let (_, (kind, _, client, _, _)) = events.next().await;
        assert_eq!(kind, EventKind::Leave);
        *leaves.entry(client).or_default() += 1;
    }
    events.none_before_marker(&mut c, "mark").await;
    assert_eq!(leaves.len(), 1199);
    assert!(leaves.values().all(|n| *n == 1));
    assert!(!leaves.contains_key("c0"));
    let presence = read_presence(&mut c, "t0", true, 0).await.expect("read");
    assert_eq!((presence.clients, presence.users), (1, 1));
    let nodes: Vec<String> = redis::cmd("ZRANGE")
        .arg(NODES_KEY)
        .arg(0)
        .arg(-1)
        .query_async(&mut c)
        .await
        .expect("ZRANGE");
    assert_eq!(nodes, vec!["alive".to_owned()]);
}

#[tokio::test]
async fn a_lease_made_again_before_a_reap_keeps_the_entries_and_a_retired_node_is_reaped_after_its_grace()
 {
    let redis = RedisServer::start().await;
    let mut c = redis.connection().await;
    let mut events = Events::start(&redis).await;
    assert!(
        !refresh(&mut c, "n", Duration::from_millis(50))
            .await
            .expect("lease")
    );
    assert!(
        refresh(&mut c, "n", Duration::from_millis(50))
            .await
            .expect("lease"),
        "extended"
    );
    join(&mut c, "n", "t", "c1", None, b"").await;
    events.next().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let exists: u64 = redis::cmd("EXISTS")
            .arg(lease_key("n"))
            .query_async(&mut c)
            .await
            .expect("EXISTS");
        if exists == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease did not expire"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The node comes back before any reaper: lease made anew (the node
    // sends its joins again: idempotent), entries kept, nothing reaped.
    assert!(
        !refresh(&mut c, "n", Duration::from_secs(60))
            .await
            .expect("lease")
    );
    assert_eq!(join(&mut c, "n", "t", "c1", None, b"").await, 0);
    assert_eq!(reap_once(&mut c).await.expect("reap"), None);
    events.none_before_marker(&mut c, "mark1").await;

    // Retired with a grace: not reaped before it ends, reaped after it.
    retire(&mut c, "n", Duration::from_millis(300))
        .await
        .expect("retire");
    assert_eq!(reap_once(&mut c).await.expect("reap"), None);
    let reaped = tickwire_e2e::poll_until(async || match reap_once(&mut c).await.expect("reap") {
        Some(reaped) => Ok(reaped),
        None => Err("not reaped yet".to_owned()),
    })
    .await;
    assert_eq!(
        reaped,
        Reaped {
            node: "n".to_owned(),
            entries: 1,
            claimed: true
        }
    );
    let (_, leave) = events.next().await;
    assert_eq!(leave, event(EventKind::Leave, false, "c1", None, b""));
    // After a reap, the node's joins sent again are JOINs again.
    assert!(
        !refresh(&mut c, "n", Duration::from_secs(60))
            .await
            .expect("lease")
    );
    assert_eq!(join(&mut c, "n", "t", "c1", None, b"").await, 1);
    let (_, join_event) = events.next().await;
    assert_eq!(join_event.0, EventKind::Join);
}
