//! The hub with the single-node store and the registry's fan-out of
//! events: who receives what, in which order, with which bounds.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tickwire_protocol::ServerMessage;
use tickwire_protocol::message::JoinLeave;
use tickwire_protocol::topic::{Pattern, Topic};
use tickwire_protocol::ws::{FrameHeader, Role};

use super::*;
use crate::config::TopicPolicy;
use crate::outbound::{Outbound, OutboundQueue, OutboundReceiver, SlowConsumerPolicy};
use crate::pattern_trie::{JoinLeaveKinds, Subscriber};
use crate::registry::{RegistryLimits, SubscribeRequest};

fn registry() -> TopicRegistry {
    let policy = TopicPolicy {
        pattern: Pattern::new("room.>").unwrap(),
        slow_consumer: SlowConsumerPolicy::Conflate,
        presence: true,
        ..TopicPolicy::fallback()
    };
    TopicRegistry::new(
        RegistryLimits {
            max_topics: 100,
            topic_idle_ttl: Duration::from_secs(60),
            max_retained_bytes: 1 << 20,
        },
        vec![policy],
        Metrics::new(),
    )
}

fn hub(per_topic: usize, entries: usize) -> PresenceHub {
    PresenceHub::local(
        HoldLimits { per_topic, entries },
        Duration::from_secs(5),
        Metrics::new(),
    )
}

fn t(s: &str) -> Topic<'_> {
    Topic::new(s).unwrap()
}

fn id(client: &str, user: Option<&str>) -> Identity {
    Identity::new(Some(Arc::from(client)), user.map(Arc::from), None)
}

/// Subscribes a fresh connection to `pattern` asking for `join_leave`.
fn watcher(
    reg: &TopicRegistry,
    conn: u64,
    pattern: &str,
    join_leave: Option<JoinLeave>,
    max_rate: Option<u32>,
) -> OutboundReceiver {
    let (queue, rx) = OutboundQueue::new(conn, 1 << 20, Metrics::new());
    let subscriber = Subscriber {
        max_rate,
        join_leave: JoinLeaveKinds::from_option(join_leave),
        ..Subscriber::unlimited(queue)
    };
    let pattern = Pattern::new(pattern).unwrap();
    let request = SubscribeRequest {
        pattern: &pattern,
        subscriber,
        since: None,
        last: false,
    };
    reg.subscribe(request, |_| {}).unwrap();
    rx
}

/// What a receiver got, as short strings: `join c1`, `leave u:alice`,
/// `message 1`.
fn seen(rx: &mut OutboundReceiver) -> Vec<String> {
    let mut out = Vec::new();
    let mut lane = Vec::new();
    while let Some(item) = rx.try_recv() {
        let frames = match item {
            Outbound::Frame(frame, _) => vec![frame],
            Outbound::Lane(topic) => {
                rx.take_lane(topic, &mut lane);
                lane.drain(..).map(|(f, _)| f).collect()
            }
            other => panic!("unexpected {other:?}"),
        };
        for frame in frames {
            let header = FrameHeader::parse(&frame, Role::Client).unwrap().unwrap();
            let body = frame.slice(header.header_len..);
            out.push(match ServerMessage::decode(&body).unwrap() {
                ServerMessage::Join { entry, .. } | ServerMessage::Leave { entry, .. } => {
                    let kind = if body[1] == 19 { "join" } else { "leave" };
                    match entry.client {
                        Some(client) => format!("{kind} {client}"),
                        None => format!("{kind} u:{}", entry.user.unwrap_or("?")),
                    }
                }
                ServerMessage::Message(d) => format!("message {}", d.seq),
                ServerMessage::Subscribed { .. } => "subscribed".to_owned(),
                other => panic!("unexpected {other:?}"),
            });
        }
    }
    out
}

fn join(hub: &PresenceHub, reg: &TopicRegistry, topic: &str, who: &Identity) {
    hub.hold(t(topic), who).unwrap();
    hub.announce(reg, t(topic), who);
}

#[test]
fn events_reach_only_subscribers_that_ask_in_order_with_messages() {
    let reg = registry();
    let hub = hub(10, 10);
    let mut clients = watcher(&reg, 1, "room.1", Some(JoinLeave::Clients), None);
    let mut users = watcher(&reg, 2, "room.1", Some(JoinLeave::Users), None);
    let mut wildcard = watcher(&reg, 3, "room.*", Some(JoinLeave::Clients), None);
    let mut none = watcher(&reg, 4, "room.1", None, None);
    let alice1 = id("a1", Some("alice"));
    let alice2 = id("a2", Some("alice"));
    let anonymous = id("x", None);
    join(&hub, &reg, "room.1", &alice1);
    reg.publish(t("room.1"), b"m", false).unwrap();
    join(&hub, &reg, "room.1", &alice2);
    join(&hub, &reg, "room.1", &anonymous);
    hub.release(&reg, t("room.1"), &alice1);
    hub.release(&reg, t("room.1"), &anonymous);
    hub.release(&reg, t("room.1"), &alice2);
    let connection_level = [
        "join a1",
        "message 1",
        "join a2",
        "join x",
        "leave a1",
        "leave x",
        "leave a2",
    ];
    assert_eq!(seen(&mut clients), connection_level);
    assert_eq!(seen(&mut wildcard), connection_level);
    assert_eq!(
        seen(&mut users),
        ["join u:alice", "message 1", "leave u:alice"]
    );
    assert_eq!(seen(&mut none), ["message 1"]);
}

#[tokio::test]
async fn snapshots_count_entries_and_users() {
    let reg = registry();
    let hub = hub(10, 10);
    let alice = id("a1", Some("alice"));
    join(&hub, &reg, "room.1", &alice);
    join(&hub, &reg, "room.1", &id("a2", Some("alice")));
    join(&hub, &reg, "room.1", &id("b1", Some("bob")));
    join(&hub, &reg, "room.1", &id("x", None));
    // A second connection with the same key is the same entry.
    join(&hub, &reg, "room.1", &alice);
    let counts = hub.snapshot(t("room.1"), true).await.unwrap();
    assert_eq!((counts.clients, counts.users, counts.entries), (4, 2, None));
    let full = hub.snapshot(t("room.1"), false).await.unwrap();
    let mut clients: Vec<&str> = full
        .entries
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| &*e.client)
        .collect();
    clients.sort_unstable();
    assert_eq!(clients, ["a1", "a2", "b1", "x"]);
    let empty = hub.snapshot(t("room.2"), false).await.unwrap();
    assert_eq!((empty.clients, empty.entries), (0, Some(Vec::new())));
}

#[test]
fn events_bypass_conflation_and_rate_limits() {
    let reg = registry();
    let hub = hub(100, 100);
    // A rate-limited subscriber: messages go through its lane, events not.
    let mut limited = watcher(&reg, 1, "room.1", Some(JoinLeave::Clients), Some(1));
    for n in 0..5 {
        reg.publish(t("room.1"), b"m", false).unwrap();
        join(&hub, &reg, "room.1", &id(&format!("c{n}"), None));
    }
    let got = seen(&mut limited);
    let joins: Vec<&String> = got.iter().filter(|s| s.starts_with("join")).collect();
    assert_eq!(
        joins,
        ["join c0", "join c1", "join c2", "join c3", "join c4"]
    );
}

#[test]
fn a_held_subscription_gets_events_after_its_reply() {
    let reg = registry();
    let hub = hub(10, 10);
    let (queue, mut rx) = OutboundQueue::new(1, 1 << 20, Metrics::new());
    let subscriber = Subscriber {
        join_leave: JoinLeaveKinds::from_option(Some(JoinLeave::Clients)),
        ..Subscriber::unlimited(Arc::clone(&queue))
    };
    let held = reg
        .subscribe_held(&Pattern::new("room.*").unwrap(), subscriber)
        .unwrap();
    join(&hub, &reg, "room.1", &id("c1", None));
    assert!(seen(&mut rx).is_empty(), "held until the reply");
    let reply = ServerMessage::Subscribed {
        id: 1,
        info: Default::default(),
    }
    .to_frame();
    held.pending
        .finish(&queue, Default::default(), Instant::now(), || {
            queue.push(reply, Instant::now());
        });
    assert_eq!(seen(&mut rx), ["subscribed", "join c1"]);
}

#[test]
fn bounds_and_metrics() {
    let reg = registry();
    let metrics = Metrics::new();
    let hub = PresenceHub::local(
        HoldLimits {
            per_topic: 1,
            entries: 2,
        },
        Duration::from_secs(5),
        metrics.clone(),
    );
    join(&hub, &reg, "room.1", &id("a", None));
    assert_eq!(
        hub.hold(t("room.1"), &id("b", None))
            .unwrap_err()
            .error_code(),
        tickwire_protocol::ErrorCode::PresenceFull
    );
    join(&hub, &reg, "room.2", &id("b", None));
    assert!(matches!(
        hub.hold(t("room.3"), &id("c", None)),
        Err(PresenceError::NodeFull(2))
    ));
    assert_eq!(metrics.presence_entries.get(), 2);
    assert_eq!(metrics.presence_joins.get(), 2);
    hub.release(&reg, t("room.1"), &id("a", None));
    assert_eq!(metrics.presence_entries.get(), 1);
    assert_eq!(metrics.presence_leaves.get(), 1);
}

#[test]
fn a_grace_hold_leaves_on_expiry_unless_taken_over() {
    let reg = registry();
    let hub = hub(10, 10);
    let mut rx = watcher(&reg, 1, "room.1", Some(JoinLeave::Clients), None);
    let a = id("a", None);
    join(&hub, &reg, "room.1", &a);
    let ticket = hub.defer(t("room.1"), &a).unwrap();
    join(&hub, &reg, "room.1", &a);
    hub.expire(&reg, &ticket);
    assert_eq!(seen(&mut rx), ["join a"]);
    let ticket = hub.defer(t("room.1"), &a).unwrap();
    hub.expire(&reg, &ticket);
    assert_eq!(seen(&mut rx), ["leave a"]);
}

#[test]
fn a_presence_answer_keeps_the_entries_that_fit_in_a_message() {
    let entries: Vec<PresenceEntry> = (0..200usize)
        .map(|n| PresenceEntry {
            client: Arc::from(format!("client-{n}").as_str()),
            user: (n % 3 != 0).then(|| Arc::from("u".repeat(n).as_str())),
            info: (n % 2 == 0).then(|| bytes::Bytes::from(vec![0xc0; n * 7])),
        })
        .collect();
    for max in [200, 1024, 16 * 1024, 1 << 20] {
        let mut snapshot = PresenceSnapshot {
            clients: 200,
            users: 3,
            entries: Some(entries.clone()),
        };
        snapshot.fit_entries(max);
        let kept = snapshot.entries.as_ref().map_or(0, Vec::len);
        let frame = ServerMessage::PresenceInfo {
            id: u64::MAX,
            info: snapshot.to_wire(),
        }
        .to_frame();
        assert!(frame.len() <= max, "{max}: {} bytes", frame.len());
        assert!(kept > 0 || max < 256, "{max}");
        assert_eq!(
            (snapshot.clients, snapshot.users),
            (200, 3),
            "counts stay exact"
        );
        if max == 1 << 20 {
            assert_eq!(kept, 200);
        }
    }
    let mut counts = PresenceSnapshot {
        clients: 5,
        users: 1,
        entries: None,
    };
    counts.fit_entries(0);
    assert_eq!(counts.entries, None);
}
