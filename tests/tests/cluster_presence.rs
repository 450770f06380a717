//! Cluster presence (docs/cluster.md, "Presence"): the presence scripts run
//! directly against a real `redis-server` (holder counting across nodes,
//! user counts, idempotence, exactly-once reaping by racing reapers, a
//! lease made again), then several `tickwire serve --cluster` processes.
//! Every wait is bounded by a deadline.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use tickwire_broker::cluster::backplane::Backplane;
use tickwire_broker::cluster::presence::PresenceSettings;
use tickwire_broker::cluster::presence::call::PresenceCall;
use tickwire_broker::cluster::presence::control::{
    ControlDisconnect, ControlTarget, encode_disconnect,
};
use tickwire_broker::cluster::presence::event::{ChannelEvent, EventKind, parse_event};
use tickwire_broker::cluster::presence::lease::{Reaped, reap_once, refresh, retire};
use tickwire_broker::cluster::presence::read_presence;
use tickwire_broker::cluster::presence::scripts::{
    JOIN_MADE_LEASE, JOIN_PUBLISHED, NODES_KEY, entry_key, holders_key, holds_key, lease_key,
    users_key,
};
use tickwire_broker::cluster::target::ClusterTlsFiles;
use tickwire_broker::directory::{DisconnectCode, DisconnectTarget};
use tickwire_broker::metrics::Metrics;
use tickwire_e2e::node::ClusterNode;
use tickwire_e2e::pki::TempDir;
use tickwire_e2e::proxy::Proxy;
use tickwire_e2e::redis::RedisServer;
use tickwire_e2e::{RawClient, Received, SeenEntry, WAIT, metric, metric_with_label, poll_until};
use tickwire_protocol::message::JoinLeave;
use tickwire_protocol::{ClientMessage, ErrorCode, SubscribeOptions};
use tokio_util::sync::CancellationToken;

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
    join_answer(c, node, topic, client, user, info).await & JOIN_PUBLISHED
}

/// The join script's whole answer (a node without a lease gets one of
/// 60 s).
async fn join_answer(
    c: &mut Conn,
    node: &str,
    topic: &str,
    client: &str,
    user: Option<&str>,
    info: &[u8],
) -> u64 {
    redis::cmd("EVAL")
        .arg(PresenceCall::join_source())
        .arg(3)
        .arg(holds_key(node))
        .arg(lease_key(node))
        .arg(NODES_KEY)
        .arg(topic)
        .arg(entry_key(client, user))
        .arg(info)
        .arg(node)
        .arg(60_000)
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
    // Nothing is left behind but the nodes' leases.
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("tickwire:{*")
        .query_async(&mut c)
        .await
        .expect("KEYS");
    assert!(keys.is_empty(), "left behind: {keys:?}");
}

/// Waits (bounded) until node `node`'s lease key has expired.
async fn wait_lease_gone(c: &mut Conn, node: &str) {
    poll_until(async || {
        let exists: u64 = redis::cmd("EXISTS")
            .arg(lease_key(node))
            .query_async(c)
            .await
            .expect("EXISTS");
        match exists {
            0 => Ok(()),
            _ => Err(format!("the lease of {node} did not expire")),
        }
    })
    .await
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
        !refresh(&mut c, "dead", Duration::from_secs(60))
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
    // Not dead yet: its lease lives. Then its lease is cut short.
    assert_eq!(reap_once(&mut c).await.expect("reap"), None);
    assert!(
        refresh(&mut c, "dead", Duration::from_millis(100))
            .await
            .expect("lease")
    );
    // Wait for the lease to expire (bounded), then reap from two
    // connections at once.
    wait_lease_gone(&mut c, "dead").await;
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
    // A node that joins before its first lease round gets its lease from
    // the join script: its holds are never without one.
    let answer = join_answer(&mut c, "n", "t", "c1", None, b"").await;
    assert_eq!(answer, JOIN_PUBLISHED | JOIN_MADE_LEASE);
    events.next().await;
    let deadline: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg(NODES_KEY)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut c)
        .await
        .expect("ZRANGE");
    assert_eq!(deadline.len(), 1);
    assert_eq!(join_answer(&mut c, "n", "t", "c1", None, b"").await, 0);
    // The lease task's round extends it (here: cuts it short).
    assert!(
        refresh(&mut c, "n", Duration::from_millis(50))
            .await
            .expect("lease"),
        "extended"
    );
    wait_lease_gone(&mut c, "n").await;
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

// ---- Several `tickwire serve --cluster` processes ----

/// The policy of the node tests: `room.>` keeps presence.
const PRESENCE_POLICY: &str = "[[topic]]\npattern = \"room.>\"\npresence = true\n";
/// An HMAC secret for the tokens of the disconnect test.
const SECRET: &[u8] = b"an HMAC secret of at least 32 bytes, for presence tests";
/// The lease of the node tests: the shortest allowed.
const LEASE_TTL: Duration = Duration::from_secs(3);

/// A directory with the configuration file and the token secret.
fn config_dir() -> TempDir {
    let dir = TempDir::new("cluster-presence");
    std::fs::write(dir.path().join("tickwire.toml"), PRESENCE_POLICY).expect("write the config");
    std::fs::write(dir.path().join("secret"), SECRET).expect("write the secret");
    dir
}

/// Starts a ready node on `redis` with the presence policy, a 3 s lease,
/// the grace `grace`, and `extra` flags.
async fn node(redis: &RedisServer, dir: &TempDir, grace: &str, extra: &[&str]) -> ClusterNode {
    let config = dir.path().join("tickwire.toml");
    let mut args = vec![
        "--config",
        config.to_str().expect("a UTF-8 path"),
        "--presence-lease-ttl",
        "3s",
        "--presence-grace",
        grace,
    ];
    args.extend_from_slice(extra);
    ClusterNode::ready(&redis.url(), &args).await
}

/// A raw client of `node` with client id `client`.
async fn client(node: &ClusterNode, client: &str) -> RawClient {
    RawClient::connect_with(node.addr, &format!("/ws?client={client}"), &[]).await
}

/// Subscribes `c` to `topic` asking for connection-level events.
async fn watch(c: &mut RawClient, topic: &str) {
    let options = SubscribeOptions::default().join_leave(JoinLeave::Clients);
    c.subscribe_with(topic, options).await;
}

/// A client `id` of `node` watching `topic`, once it has seen its own
/// JOIN (after its reply).
async fn watcher(node: &ClusterNode, id: &str, topic: &str) -> RawClient {
    let mut c = client(node, id).await;
    watch(&mut c, topic).await;
    assert_eq!(seen(&mut c).await, format!("+{id}"), "its own JOIN");
    c
}

/// Redis, the node tests' configuration and two ready nodes with the
/// grace `grace` and `extra` flags.
async fn two_nodes(
    grace: &str,
    extra: &[&str],
) -> (RedisServer, TempDir, ClusterNode, ClusterNode) {
    let redis = RedisServer::start().await;
    let dir = config_dir();
    let a = node(&redis, &dir, grace, extra).await;
    let b = node(&redis, &dir, grace, extra).await;
    (redis, dir, a, b)
}

/// What a watcher saw: `+client` JOIN, `-client` LEAVE (`+u:user`,
/// `-u:user` for user-level ones), `=payload` MESSAGE.
async fn seen(c: &mut RawClient) -> String {
    let who = |entry: SeenEntry| match entry.client {
        Some(client) => client,
        None => format!("u:{}", entry.user.unwrap_or_default()),
    };
    match c.recv().await {
        Received::Join { entry, .. } => format!("+{}", who(entry)),
        Received::Leave { entry, .. } => format!("-{}", who(entry)),
        Received::Message { payload, .. } => format!("={}", String::from_utf8_lossy(&payload)),
        other => panic!("expected JOIN, LEAVE or MESSAGE, got {other:?}"),
    }
}

/// The next `n` things `c` sees, sorted (their order across clients is not
/// defined).
async fn seen_sorted(c: &mut RawClient, n: usize) -> Vec<String> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(seen(c).await);
    }
    all.sort();
    all
}

/// The client ids `PRESENCE` on `topic` lists for `c`, sorted, and the
/// user count (skipping deliveries and events before the answer).
async fn presence(c: &mut RawClient, topic: &str) -> (Vec<String>, u64) {
    let id = c.send_presence(topic, false).await;
    loop {
        match c.recv().await {
            Received::Message { .. } | Received::Join { .. } | Received::Leave { .. } => {}
            Received::Presence {
                id: got,
                clients,
                users,
                entries: Some(entries),
            } if got == id => {
                let mut ids: Vec<String> = entries.into_iter().filter_map(|e| e.client).collect();
                ids.sort();
                assert_eq!(ids.len() as u64, clients);
                return (ids, users);
            }
            other => panic!("expected PRESENCE_INFO {id}, got {other:?}"),
        }
    }
}

async fn unsubscribe(c: &mut RawClient, pattern: &str) {
    let id = c.next_id();
    c.send(&ClientMessage::Unsubscribe { id, pattern }).await;
    loop {
        match c.recv().await {
            Received::Unsubscribed(got) if got == id => return,
            Received::Message { .. } | Received::Join { .. } | Received::Leave { .. } => {}
            other => panic!("expected UNSUBSCRIBED {id}, got {other:?}"),
        }
    }
}

fn names(list: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    all.sort();
    all
}

#[tokio::test]
async fn presence_spans_nodes_and_events_reach_other_nodes_in_order_with_messages() {
    let (_redis, _dir, a, b) = two_nodes("1s", &[]).await;

    let mut watcher = watcher(&b, "w", "room.1").await;
    // A wildcard watcher on the same node: node b receives each event
    // through its channel and its pattern subscription, and delivers it
    // once.
    let mut wild = client(&b, "wild").await;
    watch(&mut wild, "room.>").await;

    // A client of node a joins, then publishes at once: node b's watchers
    // see the JOIN, then the message.
    let mut x = client(&a, "x1").await;
    let info = x.subscribe("room.1").await;
    assert_eq!(info.client.as_deref(), Some("x1"));
    x.publish("room.1", b"hello").await;
    assert_eq!(seen(&mut watcher).await, "+x1");
    assert_eq!(seen(&mut watcher).await, "=hello");
    assert_eq!(seen(&mut wild).await, "+x1");
    assert_eq!(seen(&mut wild).await, "=hello");

    // PRESENCE on either node lists both nodes' clients.
    assert_eq!(
        presence(&mut watcher, "room.1").await,
        (names(&["w", "x1"]), 0)
    );
    assert_eq!(presence(&mut x, "room.1").await, (names(&["w", "x1"]), 0));

    // A leave on node a, then a message from node b: in that order.
    unsubscribe(&mut x, "room.1").await;
    let mut publisher = client(&b, "p").await;
    publisher.publish_acked("room.1", b"after").await;
    assert_eq!(seen(&mut watcher).await, "-x1");
    assert_eq!(seen(&mut watcher).await, "=after");
    assert_eq!(seen(&mut wild).await, "-x1");
    assert_eq!(seen(&mut wild).await, "=after");
    assert_eq!(presence(&mut watcher, "room.1").await, (names(&["w"]), 0));
    // Each event was counted once, by the node whose script made it.
    assert_eq!(metric(a.addr, "tickwire_presence_joins_total").await, 1.0);
    assert_eq!(metric(a.addr, "tickwire_presence_leaves_total").await, 1.0);
    assert_eq!(metric(b.addr, "tickwire_presence_joins_total").await, 1.0);
    assert_eq!(metric(b.addr, "tickwire_presence_leaves_total").await, 0.0);
}

#[tokio::test]
async fn a_killed_node_s_entries_leave_within_the_lease_ttl_once_each_on_every_node() {
    let redis = RedisServer::start().await;
    let dir = config_dir();
    let mut a = node(&redis, &dir, "1s", &[]).await;
    let b = node(&redis, &dir, "1s", &[]).await;
    let c = node(&redis, &dir, "1s", &[]).await;
    let mut wb = watcher(&b, "wb", "room.k").await;
    let mut wc = watcher(&c, "wc", "room.k").await;
    assert_eq!(seen(&mut wb).await, "+wc");

    // Three clients on node a, and one whose id is held on a and on b.
    let mut on_a = Vec::new();
    for id in ["p1", "p2", "p3", "p4"] {
        let mut p = client(&a, id).await;
        p.subscribe("room.k").await;
        on_a.push(p);
    }
    let mut p4_on_b = client(&b, "p4").await;
    p4_on_b.subscribe("room.k").await;
    let joined = names(&["+p1", "+p2", "+p3", "+p4"]);
    assert_eq!(seen_sorted(&mut wb, 4).await, joined);
    assert_eq!(seen_sorted(&mut wc, 4).await, joined);

    a.kill().await;
    let killed = tokio::time::Instant::now();
    // One LEAVE per entry only node a held, on both surviving nodes,
    // within the lease (3 s) plus one reaper round (1 s) and slack.
    let left = names(&["-p1", "-p2", "-p3"]);
    assert_eq!(seen_sorted(&mut wb, 3).await, left);
    assert_eq!(seen_sorted(&mut wc, 3).await, left);
    let took = killed.elapsed();
    eprintln!("the killed node's entries left {took:?} after SIGKILL (lease {LEASE_TTL:?})");
    assert!(
        took < LEASE_TTL + Duration::from_secs(3),
        "the entries left after {took:?}"
    );
    // Nothing more: the next thing each sees is a marker message.
    let mut publisher = client(&b, "pub").await;
    publisher.publish_acked("room.k", b"marker").await;
    assert_eq!(seen(&mut wb).await, "=marker");
    assert_eq!(seen(&mut wc).await, "=marker");
    assert_eq!(
        presence(&mut wc, "room.k").await,
        (names(&["p4", "wb", "wc"]), 0)
    );
    // The dead node was reaped once, its three entries once, cluster-wide.
    let sum = async |name: &str| metric(b.addr, name).await + metric(c.addr, name).await;
    assert_eq!(sum("tickwire_presence_lease_expiries_total").await, 1.0);
    assert_eq!(sum("tickwire_presence_expired_entries_total").await, 3.0);
    assert_eq!(sum("tickwire_presence_leaves_total").await, 3.0);
    drop(on_a);
}

#[tokio::test]
async fn a_reconnect_to_another_node_within_the_grace_makes_no_events() {
    let (_redis, _dir, a, b) = two_nodes("2s", &[]).await;
    let mut watcher = watcher(&b, "w", "room.g").await;
    let mut y = client(&a, "y1").await;
    y.subscribe("room.g").await;
    assert_eq!(seen(&mut watcher).await, "+y1");
    wait_metric(a.addr, "tickwire_presence_entries", 1.0).await;

    // The connection to node a drops (no close frame); the client comes
    // back on node b within the grace.
    drop(y);
    let mut y = client(&b, "y1").await;
    y.subscribe("room.g").await;
    // Node a's grace ends (its hold is released) ...
    wait_metric(a.addr, "tickwire_presence_entries", 0.0).await;
    // ... and still no LEAVE or JOIN: the next thing seen is a marker.
    let mut publisher = client(&b, "pub").await;
    publisher.publish_acked("room.g", b"marker").await;
    assert_eq!(seen(&mut watcher).await, "=marker");
    assert_eq!(
        presence(&mut watcher, "room.g").await,
        (names(&["w", "y1"]), 0)
    );
    // Leaving for good is one LEAVE.
    unsubscribe(&mut y, "room.g").await;
    assert_eq!(seen(&mut watcher).await, "-y1");
}

#[tokio::test]
async fn a_drained_node_s_entries_leave_after_the_grace_unless_held_again_elsewhere() {
    let redis = RedisServer::start().await;
    let dir = config_dir();
    let mut a = node(&redis, &dir, "1s", &[]).await;
    let b = node(&redis, &dir, "1s", &[]).await;
    let mut watcher = watcher(&b, "w", "room.t").await;
    let mut d1 = client(&a, "d1").await;
    d1.subscribe("room.t").await;
    let mut d2 = client(&a, "d2").await;
    d2.subscribe("room.t").await;
    assert_eq!(seen_sorted(&mut watcher, 2).await, names(&["+d1", "+d2"]));

    // Node a drains (SIGTERM) and closes its connections (1001); d2
    // reconnects to node b at once, d1 does not come back.
    let drained = tokio::spawn(async move {
        a.terminate().await;
        a
    });
    for closed in [&mut d1, &mut d2] {
        match closed.recv_close().await {
            Received::Close { code, .. } => assert_eq!(code, Some(1001)),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    drop((d1, d2));
    let mut d2 = client(&b, "d2").await;
    d2.subscribe("room.t").await;
    let _a = drained.await.expect("node a drained");
    // Node a kept its lease through the drain and for the grace after it:
    // d2 makes no events, d1 one LEAVE (a reaper's, after the grace).
    assert_eq!(seen(&mut watcher).await, "-d1");
    let mut publisher = client(&b, "pub").await;
    publisher.publish_acked("room.t", b"marker").await;
    assert_eq!(seen(&mut watcher).await, "=marker");
    assert_eq!(
        presence(&mut watcher, "room.t").await,
        (names(&["d2", "w"]), 0)
    );
}

#[tokio::test]
async fn a_node_cut_from_redis_longer_than_its_lease_is_reaped_and_joins_again_when_back() {
    let redis = RedisServer::start().await;
    let dir = config_dir();
    // Node a reaches Redis through the proxy (its network), b directly.
    let network = Proxy::start(&[SocketAddr::from(([127, 0, 0, 1], redis.port))]).await;
    let config = dir.path().join("tickwire.toml");
    let args = [
        "--config",
        config.to_str().expect("a UTF-8 path"),
        "--presence-lease-ttl",
        "3s",
        "--presence-grace",
        "1s",
    ];
    let a = ClusterNode::ready(&network.redis_url(), &args).await;
    let b = node(&redis, &dir, "1s", &[]).await;
    let mut watcher = watcher(&b, "w", "room.p").await;
    let mut q = client(&a, "q1").await;
    q.subscribe("room.p").await;
    assert_eq!(seen(&mut watcher).await, "+q1");

    // A silent partition: node a cannot extend its lease; node b reaps it.
    network.blackhole();
    assert_eq!(seen(&mut watcher).await, "-q1");
    assert_eq!(
        metric(b.addr, "tickwire_presence_lease_expiries_total").await,
        1.0
    );
    a.wait_ready_within(false, Duration::from_secs(15)).await;
    // The partition heals: node a registers what it still holds (its
    // client never left): one JOIN.
    network.restore();
    a.wait_ready(true).await;
    assert_eq!(seen(&mut watcher).await, "+q1");
    assert_eq!(
        presence(&mut watcher, "room.p").await,
        (names(&["q1", "w"]), 0)
    );
}

/// A token for `user` allowed to subscribe and publish everywhere.
fn token(user: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let claims = serde_json::json!({
        "sub": user, "exp": now + 3600, "iat": now,
        "tw": {"sub": [">"], "pub": [">"]},
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
    )
    .expect("sign a token")
}

/// A raw client of `node` authenticated as `user` with client id `id`.
async fn user_client(node: &ClusterNode, user: &str, id: &str) -> RawClient {
    let bearer = format!("Bearer {}", token(user));
    let path = format!("/ws?client={id}");
    RawClient::connect_with(node.addr, &path, &[("Authorization", &bearer)]).await
}

/// A backplane in this process, on `redis`, with its publisher running
/// (the handle `POST /v1/disconnect` uses), once it has a connection.
async fn backplane(redis: &RedisServer, stop: &CancellationToken) -> Backplane {
    let settings = PresenceSettings {
        lease_ttl: LEASE_TTL,
        grace: Duration::from_secs(1),
        max_per_topic: 100,
    };
    let metrics = Metrics::new();
    let backplane = Backplane::new(
        &redis.url(),
        &ClusterTlsFiles::default(),
        &settings,
        &metrics,
    )
    .expect("a backplane");
    let task = backplane.take_publisher_task().expect("the publisher task");
    tokio::spawn(task.run(
        std::sync::Arc::clone(backplane.target()),
        std::sync::Arc::clone(&backplane.health),
        metrics,
        stop.clone(),
    ));
    poll_until(async || match backplane.connection() {
        Some(_) => Ok(()),
        None => Err("the publisher has no connection yet".to_owned()),
    })
    .await;
    backplane
}

#[tokio::test]
async fn a_disconnect_by_user_closes_the_users_connections_on_every_node() {
    let redis = RedisServer::start().await;
    let dir = config_dir();
    let secret = dir.path().join("secret");
    let jwt = [
        "--jwt-hmac-secret-file",
        secret.to_str().expect("a UTF-8 path"),
    ];
    let (a, b) = (
        node(&redis, &dir, "1s", &jwt).await,
        node(&redis, &dir, "1s", &jwt).await,
    );
    let mut watcher = user_client(&b, "carol", "w").await;
    watch(&mut watcher, "room.d").await;
    assert_eq!(seen(&mut watcher).await, "+w");
    // A watcher of user-level events on node a.
    let mut users = user_client(&a, "dave", "uw").await;
    let options = SubscribeOptions::default().join_leave(JoinLeave::Users);
    users.subscribe_with("room.d", options).await;
    assert_eq!(seen(&mut users).await, "+u:dave");
    assert_eq!(seen(&mut watcher).await, "+uw");
    let mut alice_a = user_client(&a, "alice", "al1").await;
    alice_a.subscribe("room.d").await;
    let mut alice_b = user_client(&b, "alice", "al2").await;
    alice_b.subscribe("room.d").await;
    let mut bob = user_client(&a, "bob", "bo1").await;
    bob.subscribe("room.d").await;
    assert_eq!(
        seen_sorted(&mut watcher, 3).await,
        names(&["+al1", "+al2", "+bo1"])
    );
    // Alice's two clients on two nodes: one user-level JOIN.
    assert_eq!(
        seen_sorted(&mut users, 2).await,
        names(&["+u:alice", "+u:bob"])
    );
    // Both nodes' subscriber connections listen on the control channel.
    redis.wait_numsub("tickwire:control", 2).await;

    let stop = CancellationToken::new();
    let api = backplane(&redis, &stop).await;
    let target = DisconnectTarget::User("alice".to_owned());
    let code = DisconnectCode {
        code: 4100,
        reason: "kicked".into(),
    };
    let notified = api
        .broadcast_disconnect(&target, &code)
        .await
        .expect("published");
    assert_eq!(notified, 2, "both nodes received it");
    for alice in [&mut alice_a, &mut alice_b] {
        match alice.recv_close().await {
            Received::Close { code, reason } => {
                assert_eq!((code, reason.as_str()), (Some(4100), "kicked"));
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    // A server disconnect releases presence at once (no grace).
    assert_eq!(seen_sorted(&mut watcher, 2).await, names(&["-al1", "-al2"]));
    assert_eq!(seen(&mut users).await, "-u:alice");
    // Bob is still connected and present (users carol, dave and bob).
    assert_eq!(
        presence(&mut bob, "room.d").await,
        (names(&["bo1", "uw", "w"]), 3)
    );

    // A disconnect by client id, published on the control channel as any
    // node would (a foreign message there is ignored and counted).
    let mut c = redis.connection().await;
    let publish = async |c: &mut Conn, message: Vec<u8>| {
        let _: u64 = redis::cmd("PUBLISH")
            .arg("tickwire:control")
            .arg(message)
            .query_async(c)
            .await
            .expect("PUBLISH");
    };
    publish(&mut c, b"not a control message".to_vec()).await;
    let by_client = encode_disconnect(&ControlDisconnect {
        target: ControlTarget::Client("bo1"),
        code: 4007,
        reason: "disconnected by the server",
    });
    publish(&mut c, by_client).await;
    match bob.recv_close().await {
        Received::Close { code, .. } => assert_eq!(code, Some(4007)),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(seen(&mut watcher).await, "-bo1");
    assert_eq!(seen(&mut users).await, "-u:bob");
    let dropped = metric_with_label(
        a.addr,
        "tickwire_backplane_dropped_total",
        "reason",
        "malformed",
    );
    assert_eq!(dropped.await, 1.0);
    stop.cancel();
}

#[tokio::test]
async fn while_redis_is_down_subscribes_succeed_and_the_node_registers_its_presence_again() {
    let mut redis = RedisServer::start().await;
    let dir = config_dir();
    let a = node(&redis, &dir, "1s", &[]).await;
    redis.kill();
    a.wait_ready(false).await;
    // Presence is best effort while Redis is away: the subscribe succeeds.
    let mut z = client(&a, "z1").await;
    let info = z.subscribe("room.z").await;
    assert_eq!(info.client.as_deref(), Some("z1"));
    let id = z.next_id();
    z.send(&ClientMessage::Presence {
        id,
        topic: "room.z",
        counts_only: true,
    })
    .await;
    match z.recv().await {
        Received::Error { code, message, .. } => {
            assert_eq!(code, ErrorCode::Internal);
            assert!(message.contains("presence is unavailable"), "{message}");
        }
        other => panic!("expected an ERROR, got {other:?}"),
    }
    wait_metric(a.addr, "tickwire_presence_backplane_failures_total", 1.0).await;
    // Redis is back, empty: the node registers what it holds again.
    redis.restart().await;
    a.wait_ready(true).await;
    poll_until(async || {
        let mut watcher = client(&a, "w").await;
        match presence(&mut watcher, "room.z").await {
            (ids, _) if ids == names(&["z1"]) => Ok(()),
            (ids, _) => Err(format!("PRESENCE lists {ids:?}")),
        }
    })
    .await;
}

/// Waits until metric `name` of the node at `addr` is `want`.
async fn wait_metric(addr: std::net::SocketAddr, name: &str, want: f64) {
    poll_until(async || match metric(addr, name).await {
        got if got == want => Ok(()),
        got => Err(format!("{name} of {addr}: {got}, want {want}")),
    })
    .await
}
