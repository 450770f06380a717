//! Presence end to end on one node: `JOIN`/`LEAVE` in order with messages,
//! `PRESENCE` lists and counts, users with several connections, user-level
//! events, the grace period, bounds, refusals, wildcard `join_leave`, the
//! client id and client info of a connection, the SSE rendering, and the
//! real binary.
//!
//! Nothing waits on the clock to synchronize: a test that needs "no event
//! happened" makes a later event happen and checks it is the next one, and
//! the grace period is either long (reconnects must beat it) or short and
//! awaited through the `LEAVE` it produces.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use tickwire_broker::config::{BrokerConfig, TopicPolicy};
use tickwire_broker::directory::DisconnectCode;
use tickwire_e2e::fallback::{SseStream, poll};
use tickwire_e2e::{
    RawClient, Received, SeenEntry, TestBroker, http, read_banner, tickwire_command,
    try_handshake_at,
};
use tickwire_protocol::message::JoinLeave;
use tickwire_protocol::topic::Pattern;
use tickwire_protocol::ws::OpCode;
use tickwire_protocol::{ClientMessage, ErrorCode, SubscribeOptions};

const SECRET: &[u8] = b"an HMAC secret of at least 32 bytes, for presence tests";

/// A grace period no test waits out.
const LONG_GRACE: Duration = Duration::from_secs(600);

fn presence_policy() -> TopicPolicy {
    TopicPolicy {
        pattern: Pattern::new("room.>").expect("valid pattern"),
        presence: true,
        ..TopicPolicy::fallback()
    }
}

/// A broker with presence on `room.>`, grace `grace`, `configure` on top.
async fn broker(grace: Duration, configure: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
    TestBroker::start(|c| {
        c.topic_policies = vec![presence_policy()];
        c.presence_grace = grace;
        configure(c);
    })
    .await
}

/// [`broker`] checking tokens signed with [`SECRET`]; anonymous clients may
/// subscribe to everything.
async fn auth_broker(configure: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("tickwire-presence-{}-{n}", std::process::id()));
    std::fs::write(&path, SECRET).expect("write the secret");
    broker(LONG_GRACE, |c| {
        c.jwt_hmac_secret_file = vec![path];
        c.allow_anonymous = vec![Pattern::everything()];
        configure(c);
    })
    .await
}

/// A token for `user` granting subscriptions to `sub` and publishing on
/// everything, with client info `info`.
fn token(user: &str, sub: &[&str], info: Option<Value>) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let mut grants = json!({"sub": sub, "pub": [">"]});
    if let Some(info) = info {
        grants["info"] = info;
    }
    let claims = json!({"exp": now + 3600, "iat": now, "sub": user, "tw": grants});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("sign")
}

/// Connects with `client=` and `token=` when given.
async fn connect(addr: SocketAddr, client: Option<&str>, token: Option<&str>) -> RawClient {
    let mut query = Vec::new();
    if let Some(client) = client {
        query.push(format!("client={client}"));
    }
    if let Some(token) = token {
        query.push(format!("token={token}"));
    }
    let path = format!("/ws?{}", query.join("&"));
    RawClient::connect_with(addr, &path, &[]).await
}

/// The next frame that is not a ping.
async fn next(c: &mut RawClient) -> Received {
    loop {
        match c.recv().await {
            Received::Ping => {}
            other => return other,
        }
    }
}

fn entry(client: &str, user: Option<&str>) -> SeenEntry {
    SeenEntry {
        client: Some(client.to_owned()),
        user: user.map(str::to_owned),
        info: None,
    }
}

fn user_entry(user: &str) -> SeenEntry {
    SeenEntry {
        client: None,
        user: Some(user.to_owned()),
        info: None,
    }
}

async fn expect_join(c: &mut RawClient, topic: &str, want: SeenEntry) {
    match next(c).await {
        Received::Join { topic: t, entry } if t == topic && entry == want => {}
        other => panic!("expected JOIN {topic} {want:?}, got {other:?}"),
    }
}

async fn expect_leave(c: &mut RawClient, topic: &str, want: SeenEntry) {
    match next(c).await {
        Received::Leave { topic: t, entry } if t == topic && entry == want => {}
        other => panic!("expected LEAVE {topic} {want:?}, got {other:?}"),
    }
}

/// Subscribes to `pattern` with `join_leave`; returns the reply's client.
async fn subscribe(
    c: &mut RawClient,
    pattern: &str,
    join_leave: Option<JoinLeave>,
) -> Option<String> {
    let mut options = SubscribeOptions::default();
    if let Some(kind) = join_leave {
        options = options.join_leave(kind);
    }
    c.subscribe_with(pattern, options).await.client
}

/// Subscribes and expects the refusal `code`.
async fn subscribe_refused(
    c: &mut RawClient,
    pattern: &str,
    options: SubscribeOptions,
    code: ErrorCode,
) {
    let (id, reply) = ask(c, |id| ClientMessage::Subscribe {
        id,
        pattern,
        options,
    })
    .await;
    match reply {
        Received::Error {
            id: Some(got),
            code: got_code,
            ..
        } if got == id && got_code == code => {}
        other => panic!("subscribe {pattern}: expected {code}, got {other:?}"),
    }
}

/// Sends the request `message` makes with a fresh id; returns the id and
/// the next frame that is not a ping.
async fn ask<'a>(
    c: &mut RawClient,
    message: impl FnOnce(u64) -> ClientMessage<'a>,
) -> (u64, Received) {
    let id = c.next_id();
    c.send(&message(id)).await;
    (id, next(c).await)
}

async fn unsubscribe(c: &mut RawClient, pattern: &str) {
    let (id, reply) = ask(c, |id| ClientMessage::Unsubscribe { id, pattern }).await;
    match reply {
        Received::Unsubscribed(got) if got == id => {}
        other => panic!("expected UNSUBSCRIBED {id}, got {other:?}"),
    }
}

/// Sends `PRESENCE` and returns the answer (clients, users, sorted entries).
async fn presence(
    c: &mut RawClient,
    topic: &str,
    counts_only: bool,
) -> Result<(u64, u64, Option<Vec<SeenEntry>>), ErrorCode> {
    let (id, reply) = ask(c, |id| ClientMessage::Presence {
        id,
        topic,
        counts_only,
    })
    .await;
    match reply {
        Received::Presence {
            id: got,
            clients,
            users,
            mut entries,
        } if got == id => {
            if let Some(entries) = &mut entries {
                entries.sort();
            }
            Ok((clients, users, entries))
        }
        Received::Error {
            id: Some(got),
            code,
            ..
        } if got == id => Err(code),
        other => panic!("expected PRESENCE_INFO {id}, got {other:?}"),
    }
}

/// Client `w`, subscribed to `room.1` with connection-level events, past
/// its own `JOIN`.
async fn watch(addr: SocketAddr) -> RawClient {
    let mut watcher = connect(addr, Some("w"), None).await;
    subscribe(&mut watcher, "room.1", Some(JoinLeave::Clients)).await;
    expect_join(&mut watcher, "room.1", entry("w", None)).await;
    watcher
}

/// Anonymous client `client`, subscribed to `room.1`; `watcher` saw it join.
async fn join_anonymous(addr: SocketAddr, watcher: &mut RawClient, client: &str) -> RawClient {
    let mut c = connect(addr, Some(client), None).await;
    subscribe(&mut c, "room.1", None).await;
    expect_join(watcher, "room.1", entry(client, None)).await;
    c
}

/// Closes with 1000 and waits for the broker's answer.
async fn close_normally(mut c: RawClient) {
    c.send_frame(OpCode::Close, &1000u16.to_be_bytes()).await;
    assert!(matches!(
        c.recv_close().await,
        Received::Close {
            code: Some(1000),
            ..
        }
    ));
}

#[tokio::test]
async fn joins_and_leaves_come_in_order_with_messages() {
    let broker = broker(LONG_GRACE, |_| {}).await;
    let mut watcher = connect(broker.addr, Some("watcher"), None).await;
    let client = subscribe(&mut watcher, "room.1", Some(JoinLeave::Clients)).await;
    assert_eq!(client.as_deref(), Some("watcher"));
    expect_join(&mut watcher, "room.1", entry("watcher", None)).await;

    let mut a = connect(broker.addr, Some("a"), None).await;
    assert_eq!(
        subscribe(&mut a, "room.1", None).await.as_deref(),
        Some("a")
    );
    a.publish("room.1", b"hello").await;
    // JOIN, then the message A published after joining.
    expect_join(&mut watcher, "room.1", entry("a", None)).await;
    match next(&mut watcher).await {
        Received::Message { payload, .. } => assert_eq!(&payload[..], b"hello"),
        other => panic!("expected the message, got {other:?}"),
    }
    assert!(matches!(next(&mut a).await, Received::Message { .. }));
    // UNSUBSCRIBE leaves at once, grace or not.
    unsubscribe(&mut a, "room.1").await;
    expect_leave(&mut watcher, "room.1", entry("a", None)).await;
    // So does a close with 1000.
    let mut b = connect(broker.addr, Some("b"), None).await;
    subscribe(&mut b, "room.1", None).await;
    expect_join(&mut watcher, "room.1", entry("b", None)).await;
    close_normally(b).await;
    expect_leave(&mut watcher, "room.1", entry("b", None)).await;
    assert_eq!(broker.metric("tickwire_presence_joins_total").await, 3.0);
    assert_eq!(broker.metric("tickwire_presence_leaves_total").await, 2.0);
    assert_eq!(broker.metric("tickwire_presence_entries").await, 1.0);
}

#[tokio::test]
async fn presence_lists_and_counts_match_the_connections() {
    let broker = auth_broker(|_| {}).await;
    let alice = token("alice", &[">"], Some(json!({"name": "Alice"})));
    let bob = token("bob", &[">"], None);
    let mut a1 = connect(broker.addr, Some("a1"), Some(&alice)).await;
    let mut a2 = connect(broker.addr, Some("a2"), Some(&alice)).await;
    let mut b1 = connect(broker.addr, Some("b1"), Some(&bob)).await;
    let mut anon = connect(broker.addr, None, None).await;
    for c in [&mut a1, &mut a2, &mut b1] {
        subscribe(c, "room.1", None).await;
    }
    let anon_id = subscribe(&mut anon, "room.1", None)
        .await
        .expect("a client id");
    assert_eq!(anon_id.len(), 22, "a random id: {anon_id}");
    // The same key again (another tab with a1's id) is the same entry.
    let mut a1_again = connect(broker.addr, Some("a1"), Some(&alice)).await;
    subscribe(&mut a1_again, "room.1", None).await;

    let info = b"\x81\xa4name\xa5Alice".to_vec();
    let mut want = vec![
        SeenEntry {
            info: Some(info.clone()),
            ..entry("a1", Some("alice"))
        },
        SeenEntry {
            info: Some(info),
            ..entry("a2", Some("alice"))
        },
        entry("b1", Some("bob")),
        entry(&anon_id, None),
    ];
    want.sort();
    assert_eq!(
        presence(&mut b1, "room.1", false).await,
        Ok((4, 2, Some(want)))
    );
    assert_eq!(presence(&mut b1, "room.1", true).await, Ok((4, 2, None)));
    assert_eq!(
        presence(&mut b1, "room.2", false).await,
        Ok((0, 0, Some(Vec::new())))
    );

    // alice stays present until her last connection leaves.
    unsubscribe(&mut a1, "room.1").await;
    unsubscribe(&mut a2, "room.1").await;
    assert_eq!(presence(&mut b1, "room.1", true).await, Ok((3, 2, None)));
    unsubscribe(&mut a1_again, "room.1").await;
    assert_eq!(presence(&mut b1, "room.1", true).await, Ok((2, 1, None)));
}

#[tokio::test]
async fn user_level_events_follow_a_users_first_and_last_entry() {
    let broker = auth_broker(|_| {}).await;
    let alice = token("alice", &[">"], None);
    let bob = token("bob", &[">"], None);
    let mut watcher = connect(broker.addr, None, None).await;
    subscribe(&mut watcher, "room.1", Some(JoinLeave::Users)).await;
    let mut a1 = connect(broker.addr, Some("a1"), Some(&alice)).await;
    let mut a2 = connect(broker.addr, Some("a2"), Some(&alice)).await;
    let mut b1 = connect(broker.addr, Some("b1"), Some(&bob)).await;
    subscribe(&mut a1, "room.1", None).await;
    subscribe(&mut a2, "room.1", None).await;
    subscribe(&mut b1, "room.1", None).await;
    // The watcher itself is anonymous: no user event for it.
    expect_join(&mut watcher, "room.1", user_entry("alice")).await;
    expect_join(&mut watcher, "room.1", user_entry("bob")).await;
    unsubscribe(&mut a1, "room.1").await;
    unsubscribe(&mut b1, "room.1").await;
    expect_leave(&mut watcher, "room.1", user_entry("bob")).await;
    unsubscribe(&mut a2, "room.1").await;
    expect_leave(&mut watcher, "room.1", user_entry("alice")).await;
}

#[tokio::test]
async fn a_reconnect_with_the_same_client_id_inside_the_grace_period_makes_no_events() {
    let broker = broker(LONG_GRACE, |_| {}).await;
    let mut watcher = watch(broker.addr).await;
    let a = join_anonymous(broker.addr, &mut watcher, "a").await;
    // The connection drops without a close frame: grace applies.
    drop(a);
    broker.wait_metric("tickwire_websockets", 1.0).await;
    let mut again = connect(broker.addr, Some("a"), None).await;
    subscribe(&mut again, "room.1", None).await;
    assert_eq!(
        presence(&mut watcher, "room.1", true).await,
        Ok((2, 0, None))
    );
    // The next event the watcher sees is the reconnected client's leave:
    // nothing came in between.
    unsubscribe(&mut again, "room.1").await;
    expect_leave(&mut watcher, "room.1", entry("a", None)).await;
}

#[tokio::test]
async fn a_client_that_does_not_come_back_leaves_after_the_grace_period() {
    let broker = broker(Duration::from_millis(200), |_| {}).await;
    let mut watcher = watch(broker.addr).await;
    let a = join_anonymous(broker.addr, &mut watcher, "a").await;
    drop(a);
    expect_leave(&mut watcher, "room.1", entry("a", None)).await;
    assert_eq!(
        presence(&mut watcher, "room.1", true).await,
        Ok((1, 0, None))
    );
}

#[tokio::test]
async fn presence_full_refuses_the_subscribe() {
    let broker = broker(LONG_GRACE, |c| {
        c.max_presence_per_topic = 2;
        c.max_presence_entries = 3;
    })
    .await;
    let mut a = connect(broker.addr, Some("a"), None).await;
    let mut b = connect(broker.addr, Some("b"), None).await;
    let mut c = connect(broker.addr, Some("c"), None).await;
    subscribe(&mut a, "room.1", None).await;
    subscribe(&mut b, "room.1", None).await;
    subscribe_refused(
        &mut c,
        "room.1",
        SubscribeOptions::default(),
        ErrorCode::PresenceFull,
    )
    .await;
    // Nothing was subscribed: the same subscribe succeeds once room is made.
    unsubscribe(&mut b, "room.1").await;
    subscribe(&mut c, "room.1", None).await;
    // The node-wide bound: a, c on room.1, a on room.2 = 3 entries.
    subscribe(&mut a, "room.2", None).await;
    subscribe_refused(
        &mut b,
        "room.3",
        SubscribeOptions::default(),
        ErrorCode::PresenceFull,
    )
    .await;
    // A topic without presence is not bounded by it.
    b.subscribe("other").await;
    assert_eq!(presence(&mut a, "room.1", true).await, Ok((2, 0, None)));
    assert!(
        tickwire_e2e::metric_with_label(
            broker.addr,
            "tickwire_protocol_errors_total",
            "code",
            "presence_full"
        )
        .await
            >= 2.0
    );
}

#[tokio::test]
async fn topics_without_presence_refuse_presence_requests_and_join_leave() {
    let broker = broker(LONG_GRACE, |_| {}).await;
    let mut c = connect(broker.addr, None, None).await;
    assert_eq!(
        presence(&mut c, "other", false).await,
        Err(ErrorCode::PresenceDisabled)
    );
    let join_leave = SubscribeOptions::default().join_leave(JoinLeave::Clients);
    subscribe_refused(
        &mut c,
        "other",
        join_leave.clone(),
        ErrorCode::PresenceDisabled,
    )
    .await;
    // No presence, no client key.
    assert_eq!(subscribe(&mut c, "other", None).await, None);
    // A pattern is not a topic.
    assert_eq!(
        presence(&mut c, "room.*", false).await,
        Err(ErrorCode::InvalidTopic)
    );
    // A wildcard may ask for events even where some topics lack presence.
    subscribe(&mut c, "other.*", Some(JoinLeave::Clients)).await;
}

#[tokio::test]
async fn presence_needs_the_subscribe_grant() {
    let broker = auth_broker(|c| c.allow_anonymous.clear()).await;
    let t = token("alice", &["room.a"], None);
    let mut c = connect(broker.addr, None, Some(&t)).await;
    assert_eq!(presence(&mut c, "room.a", true).await, Ok((0, 0, None)));
    assert_eq!(
        presence(&mut c, "room.b", true).await,
        Err(ErrorCode::Forbidden)
    );
}

#[tokio::test]
async fn a_wildcard_sees_the_events_of_every_matching_topic_without_being_present() {
    let broker = broker(LONG_GRACE, |_| {}).await;
    let mut watcher = connect(broker.addr, Some("w"), None).await;
    assert_eq!(
        subscribe(&mut watcher, "room.*", Some(JoinLeave::Clients)).await,
        None
    );
    let mut a = connect(broker.addr, Some("a"), None).await;
    subscribe(&mut a, "room.1", None).await;
    subscribe(&mut a, "room.2", None).await;
    expect_join(&mut watcher, "room.1", entry("a", None)).await;
    expect_join(&mut watcher, "room.2", entry("a", None)).await;
    assert_eq!(
        presence(&mut watcher, "room.1", true).await,
        Ok((1, 0, None))
    );
    // An overlapping exact subscription of the same connection: one event.
    subscribe(&mut watcher, "room.1", Some(JoinLeave::Clients)).await;
    expect_join(&mut watcher, "room.1", entry("w", None)).await;
    unsubscribe(&mut a, "room.2").await;
    expect_leave(&mut watcher, "room.2", entry("a", None)).await;
}

#[tokio::test]
async fn client_ids_and_client_info_are_checked_at_connect() {
    let broker = auth_broker(|c| c.max_presence_info_bytes = 16).await;
    for bad in ["a.b", "", &"x".repeat(65)] {
        let (status, body) = try_handshake_at(broker.addr, &format!("/ws?client={bad}"), "").await;
        assert_eq!(status, 400, "{bad:?}: {body}");
        assert!(body.contains("invalid_option"), "{body}");
    }
    let big = token(
        "alice",
        &[">"],
        Some(json!({"name": "a name longer than sixteen bytes"})),
    );
    let (status, body) = try_handshake_at(broker.addr, &format!("/ws?token={big}"), "").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("more than max_presence_info_bytes"), "{body}");
    let small = token("alice", &[">"], Some(json!({"n": 1})));
    let mut c = connect(broker.addr, Some("ok"), Some(&small)).await;
    subscribe(&mut c, "room.1", None).await;
    let want = SeenEntry {
        info: Some(b"\x81\xa1n\x01".to_vec()),
        ..entry("ok", Some("alice"))
    };
    assert_eq!(
        presence(&mut c, "room.1", false).await,
        Ok((1, 1, Some(vec![want])))
    );
}

#[tokio::test]
async fn sse_renders_join_and_leave_events() {
    let broker = broker(LONG_GRACE, |_| {}).await;
    let mut sse = SseStream::open(
        broker.addr,
        "/v1/sse?sub=room.1&sub=other&client=tab&join_leave=true",
        "",
    )
    .await;
    sse.expect("subscribed").await;
    let own = sse.expect("join").await;
    assert_eq!(own.json(), json!({"topic": "room.1", "client": "tab"}));
    // `other` has no presence: subscribed without events, not refused.
    assert_eq!(
        sse.expect("subscribed").await.json(),
        json!({"sub": "other"})
    );
    let mut a = connect(broker.addr, Some("a"), None).await;
    subscribe(&mut a, "room.1", None).await;
    assert_eq!(
        sse.expect("join").await.json(),
        json!({"topic": "room.1", "client": "a"})
    );
    close_normally(a).await;
    assert_eq!(
        sse.expect("leave").await.json(),
        json!({"topic": "room.1", "client": "a"})
    );
    let (status, body) = http(broker.addr, "GET", "/v1/sse?sub=room.1&client=a%20b", b"").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn the_binary_serves_presence_from_its_config_file() {
    use tokio::io::AsyncBufReadExt;

    let dir = std::env::temp_dir().join(format!("tickwire-presence-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("tickwire.toml");
    std::fs::write(
        &config,
        "presence_grace = \"100ms\"\n[[topic]]\npattern = \"room.>\"\npresence = true\n",
    )
    .expect("write config");
    let mut serve = tickwire_command(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--config",
        config.to_str().expect("UTF-8 path"),
        "--log-level",
        "warn",
    ])
    .spawn()
    .expect("start tickwire serve");
    let stdout = serve.stdout.take().expect("stdout");
    let (addr, _) = read_banner(&mut tokio::io::BufReader::new(stdout).lines()).await;
    let mut watcher = connect(addr, Some("w"), None).await;
    subscribe(&mut watcher, "room.1", Some(JoinLeave::Clients)).await;
    expect_join(&mut watcher, "room.1", entry("w", None)).await;
    let mut a = connect(addr, Some("a"), None).await;
    subscribe(&mut a, "room.1", None).await;
    expect_join(&mut watcher, "room.1", entry("a", None)).await;
    drop(a);
    expect_leave(&mut watcher, "room.1", entry("a", None)).await;
    let mut other = connect(addr, None, None).await;
    assert_eq!(
        presence(&mut other, "lobby", true).await,
        Err(ErrorCode::PresenceDisabled)
    );
    serve.start_kill().expect("stop the broker");
}

#[tokio::test]
async fn a_server_disconnect_closes_with_its_code_and_leaves_at_once() {
    let broker = auth_broker(|_| {}).await;
    let mut watcher = watch(broker.addr).await;
    let alice = token("alice", &[">"], None);
    let mut a = connect(broker.addr, Some("a"), Some(&alice)).await;
    subscribe(&mut a, "room.1", None).await;
    expect_join(&mut watcher, "room.1", entry("a", Some("alice"))).await;

    let code = DisconnectCode::new(Some(4100), Some("moved to another room")).expect("valid");
    assert_eq!(broker.state.directory.close_client("a", code), 1);
    match a.recv_close().await {
        Received::Close { code, reason } => {
            assert_eq!(
                (code, reason.as_str()),
                (Some(4100), "moved to another room")
            )
        }
        other => panic!("expected the close frame, got {other:?}"),
    }
    // The grace period is long: the leave comes at once all the same.
    expect_leave(&mut watcher, "room.1", entry("a", Some("alice"))).await;

    // By user: an SSE stream of alice ends with a close event.
    let path = format!("/v1/sse?sub=room.1&client=s&token={alice}");
    let mut sse = SseStream::open(broker.addr, &path, "").await;
    sse.expect("subscribed").await;
    expect_join(&mut watcher, "room.1", entry("s", Some("alice"))).await;
    let standard = DisconnectCode::standard();
    assert_eq!(broker.state.directory.close_user("alice", standard), 1);
    let close = sse.expect("close").await.json();
    assert_eq!(
        close,
        json!({"code": 4007, "reason": "disconnected by the server"})
    );
    expect_leave(&mut watcher, "room.1", entry("s", Some("alice"))).await;
    assert_eq!(
        broker
            .state
            .directory
            .close_user("alice", DisconnectCode::standard()),
        0
    );
}

#[tokio::test]
async fn long_poll_answers_carry_join_and_leave_in_place() {
    let broker = broker(LONG_GRACE, |_| {}).await;
    let (status, first) = poll(
        broker.addr,
        "sub=room.1&client=p&join_leave=true&timeout=0",
        "",
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let session = first["session"].as_str().expect("a session").to_owned();
    let mut a = connect(broker.addr, Some("a"), None).await;
    subscribe(&mut a, "room.1", None).await;
    a.publish("room.1", b"\x01").await;
    assert!(matches!(next(&mut a).await, Received::Message { .. }));
    unsubscribe(&mut a, "room.1").await;
    let query = format!("sub=room.1&client=p&join_leave=true&session={session}&timeout=5");
    let (status, answer) = poll(broker.addr, &query, "").await;
    assert_eq!(status, 200, "{answer}");
    let mut events: Vec<Value> = first["events"].as_array().expect("events").clone();
    events.extend(answer["events"].as_array().expect("events").iter().cloned());
    let presence: Vec<(String, String, u64)> = events
        .iter()
        .filter(|e| e["type"] == "join" || e["type"] == "leave")
        .map(|e| {
            let kind = e["type"].as_str().unwrap_or_default().to_owned();
            let client = e["client"].as_str().unwrap_or_default().to_owned();
            (kind, client, e["after"].as_u64().unwrap_or(u64::MAX))
        })
        .collect();
    // Its own join (in the first answer), then a's join before a's message
    // and a's leave after it (in the second).
    assert_eq!(
        presence,
        [
            ("join".to_owned(), "p".to_owned(), 0),
            ("join".to_owned(), "a".to_owned(), 0),
            ("leave".to_owned(), "a".to_owned(), 1),
        ],
        "{first} {answer}"
    );
    assert_eq!(answer["messages"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn an_anonymous_connection_is_closable_by_its_random_id_once_presence_showed_it() {
    let broker = broker(LONG_GRACE, |_| {}).await;
    let mut anon = connect(broker.addr, None, None).await;
    assert_eq!(subscribe(&mut anon, "plain.1", None).await, None);
    // No client id anyone could name yet: nothing filed.
    assert!(broker.state.directory.is_empty());

    let id = subscribe(&mut anon, "room.1", None)
        .await
        .expect("a client id");
    assert_eq!(id.len(), 22, "a random id: {id}");
    assert_eq!(broker.state.directory.len(), 1);
    let code = DisconnectCode::standard();
    assert_eq!(broker.state.directory.close_client(&id, code), 1);
    match anon.recv_close().await {
        Received::Close { code, .. } => assert_eq!(code, Some(4007)),
        other => panic!("expected the close frame, got {other:?}"),
    }
}
