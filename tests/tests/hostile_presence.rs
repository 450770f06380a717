//! Hostile input against what issue 15 added: the server API's JSON
//! bodies and queries (batch publish, disconnect, history), slow bodies,
//! `client=` ids, `PRESENCE` on what a client may not see, floods of
//! `PRESENCE` requests and of `JOIN`/`LEAVE` events, and client info that
//! is too big or too deep. Each gets its documented error or close code,
//! and the broker keeps serving everybody else (every test ends by
//! checking that a subscriber still receives what is published).

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tickwire_broker::config::{BrokerConfig, TopicPolicy};
use tickwire_e2e::tokens::{Secret, token_for};
use tickwire_e2e::{
    RawClient, Received, TestBroker, WAIT, http_with, read_until_closed, try_handshake_at,
};
use tickwire_protocol::message::JoinLeave;
use tickwire_protocol::topic::Pattern;
use tickwire_protocol::{ClientMessage, ErrorCode, SubscribeOptions};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Presence on `room.>`.
fn presence_policy() -> TopicPolicy {
    TopicPolicy {
        pattern: Pattern::new("room.>").expect("valid pattern"),
        presence: true,
        ..TopicPolicy::fallback()
    }
}

/// A broker with presence on `room.>`, tokens signed with `secret` and
/// anonymous access to everything; `configure` on top.
async fn broker(secret: &Secret, configure: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
    TestBroker::start(|c| {
        c.topic_policies = vec![presence_policy()];
        c.presence_grace = Duration::from_secs(600);
        c.jwt_hmac_secret_file = vec![secret.file()];
        c.allow_anonymous = vec![Pattern::everything()];
        configure(c);
    })
    .await
}

fn admin() -> String {
    let token = token_for(
        Some("ops"),
        json!({"admin": true, "pub": [">"], "sub": [">"]}),
    );
    format!("Authorization: Bearer {token}\r\n")
}

/// `method path` with the admin token: (status, error code or "", JSON).
async fn api(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String, Value) {
    let (status, _, body) = http_with(addr, method, path, &admin(), body).await;
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let code = json["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (status, code, json)
}

/// Proves the broker still serves: a fresh subscriber receives a fresh
/// publish on `topic`.
async fn still_serving(addr: SocketAddr, topic: &str) {
    let mut reader = RawClient::connect(addr).await;
    reader.subscribe(topic).await;
    let mut writer = RawClient::connect(addr).await;
    writer.publish_acked(topic, b"\xa2ok").await;
    match next(&mut reader).await {
        Received::Message {
            topic: t, payload, ..
        } => {
            assert_eq!((t.as_str(), &payload[..]), (topic, &b"\xa2ok"[..]));
        }
        other => panic!("expected the publish, got {other:?}"),
    }
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

#[tokio::test]
async fn server_api_bodies_and_queries_get_their_documented_errors() {
    let secret = Secret::new();
    let broker = broker(&secret, |c| c.max_http_body = 64 * 1024).await;
    let addr = broker.addr;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let deep_payload = format!(
        r#"{{"messages":[{{"topic":"t","payload":{}1{}}}]}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let oversized = format!(
        r#"{{"messages":[{{"topic":"t","payload":"{}"}}]}}"#,
        "x".repeat(64 * 1024)
    );
    let batch_1001 = json!({"messages": vec![json!({"topic": "t", "payload": 1}); 1001]});
    let batch_1001 = batch_1001.to_string();
    for (body, status, code) in [
        (oversized.as_bytes(), 413, "payload_too_large"),
        (batch_1001.as_bytes(), 413, "payload_too_large"),
        (deep.as_bytes(), 400, "malformed"),
        (deep_payload.as_bytes(), 400, "malformed"),
        (b"\xff\xfe{}".as_slice(), 400, "malformed"),
        (br#"{"messages":"t"}"#.as_slice(), 400, "malformed"),
        (
            br#"{"messages":[],"x":1}"#.as_slice(),
            400,
            "invalid_option",
        ),
        (
            br#"{"messages":[{"topic":"t","payload":1e400}]}"#,
            400,
            "malformed",
        ),
        (
            br#"[{"topic":"t","payload":1}]"#.as_slice(),
            400,
            "malformed",
        ),
    ] {
        let (got, got_code, json) = api(addr, "POST", "/v1/publish", body).await;
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        assert_eq!((got, got_code.as_str()), (status, code), "{shown}: {json}");
    }
    // Wrong types inside a batch refuse that message only.
    let body = json!({"messages": [
        {"topic": 5, "payload": 1},
        {"topic": "t", "payload_base64": 5},
        {"topic": "t", "payload": 1, "retain": "yes"},
        {"topic": "a..b", "payload": 1},
        7,
        {"topic": "t", "payload": 123456789012345678901234567890u128 as f64},
        {"topic": "t", "payload": {"k": [1, -9223372036854775808i64, 18446744073709551615u64]}},
    ]});
    let (status, _, json) = api(addr, "POST", "/v1/publish", body.to_string().as_bytes()).await;
    assert_eq!(status, 200, "{json}");
    let codes: Vec<&str> = json["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["error"].as_str().unwrap_or("seq"))
        .collect();
    assert_eq!(
        codes,
        [
            "invalid_topic",
            "malformed",
            "invalid_option",
            "invalid_topic",
            "malformed",
            "seq",
            "seq"
        ]
    );

    let reason_124 = json!({"user": "u", "code": 4100, "reason": "é".repeat(62)});
    let reason_123 = json!({"user": "u", "code": 4100, "reason": format!("{}x", "é".repeat(61))});
    for (body, status, code) in [
        (json!({"user": "u", "code": 1000}), 400, "invalid_option"),
        (json!({"user": "u", "code": 4006}), 400, "invalid_option"),
        (json!({"user": "u", "code": 4099}), 400, "invalid_option"),
        (json!({"user": "u", "code": 5000}), 400, "invalid_option"),
        (json!({"user": "u", "code": 69636}), 400, "invalid_option"),
        (json!({"user": "u", "code": -4100}), 400, "invalid_option"),
        (json!({"user": "u", "code": 4100.5}), 400, "invalid_option"),
        (json!({"user": "u", "code": "4100"}), 400, "invalid_option"),
        (json!({"user": "u", "code": 1e300}), 400, "invalid_option"),
        (json!({"user": "x".repeat(1025)}), 400, "invalid_option"),
        (json!({"client": "x".repeat(65)}), 400, "invalid_option"),
        (json!({"client": "é"}), 400, "invalid_option"),
        (json!({"user": ["u"]}), 400, "invalid_option"),
        (reason_124, 400, "invalid_option"),
        (reason_123, 200, ""),
        (json!({"user": "u", "code": 4999, "reason": ""}), 200, ""),
    ] {
        let (got, got_code, json) =
            api(addr, "POST", "/v1/disconnect", body.to_string().as_bytes()).await;
        assert_eq!((got, got_code.as_str()), (status, code), "{body}: {json}");
    }
    for body in [deep.as_bytes(), b"\xc3\x28", b"null", br#"{"user":"u""#] {
        let (got, code, _) = api(addr, "POST", "/v1/disconnect", body).await;
        assert_eq!((got, code.as_str()), (400, "malformed"));
    }

    for query in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=18446744073709551616",
        "limit=1e3",
        "limit=",
        "since=1",
        "since=-1:0",
        "since=1:18446744073709551616",
        "since=%FF:1",
        "since=1:1&since=1:1",
        "payload=json",
        "payload=%00",
    ] {
        let (got, code, json) = api(addr, "GET", &format!("/v1/history/t?{query}"), b"").await;
        assert_eq!(
            (got, code.as_str()),
            (400, "invalid_option"),
            "{query}: {json}"
        );
    }
    for query in [
        "limit=1000",
        "since=18446744073709551615:18446744073709551615",
    ] {
        let (got, _, json) = api(addr, "GET", &format!("/v1/history/t?{query}"), b"").await;
        assert_eq!(got, 200, "{query}: {json}");
    }
    still_serving(addr, "t").await;
    broker.stop().await;
}

#[tokio::test]
async fn slow_server_api_bodies_are_answered_within_the_body_timeout() {
    let secret = Secret::new();
    let broker = broker(&secret, |c| {
        c.http_body_timeout = Duration::from_millis(300)
    })
    .await;
    let auth = admin();
    for path in ["/v1/publish", "/v1/disconnect"] {
        let head =
            format!("POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\n{{\"mess");
        let mut stream = TcpStream::connect(broker.addr).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("send");
        let started = tokio::time::Instant::now();
        let response = read_until_closed(&mut stream).await;
        assert!(response.starts_with("HTTP/1.1 408"), "{path}: {response}");
        assert!(response.contains("request_timeout"), "{response}");
        // Answered by the deadline, not by the test's patience.
        assert!(started.elapsed() < WAIT, "{path}");
    }
    broker
        .wait_metric("tickwire_http_body_timeouts_total", 2.0)
        .await;
    still_serving(broker.addr, "t").await;
    broker.stop().await;
}

#[tokio::test]
async fn hostile_client_ids_are_refused_as_invalid_option() {
    let secret = Secret::new();
    let broker = broker(&secret, |_| {}).await;
    let long = "x".repeat(65);
    for client in [
        long.as_str(),
        "",
        "%C3%A9",
        "\u{e9}",
        "a%00",
        "a%2Fb",
        "a+b",
        "a.b",
        "..%2F..",
        "x&client=y",
    ] {
        let path = format!("/ws?client={client}");
        let (status, body) = try_handshake_at(broker.addr, &path, "").await;
        assert_eq!(status, 400, "{client:?}: {body}");
        // (A request line hyper itself refuses has an empty body.)
        assert!(
            body.contains("invalid_option") || body.contains("given once") || body.is_empty(),
            "{client:?}: {body}"
        );
        for endpoint in ["sse", "poll"] {
            let path = format!("/v1/{endpoint}?sub=room.1&client={client}");
            let (status, _, body) = http_with(broker.addr, "GET", &path, "", b"").await;
            assert_eq!(status, 400, "{endpoint} {client:?}: {body}");
        }
    }
    // Every transport percent-decodes the id: `a%2Db` is `a-b`.
    let mut decoded = RawClient::connect_with(broker.addr, "/ws?client=a%2Db", &[]).await;
    let info = decoded
        .subscribe_with("room.1", SubscribeOptions::default())
        .await;
    assert_eq!(info.client.as_deref(), Some("a-b"));
    drop(decoded);
    // 64 characters are fine.
    let path = format!("/ws?client={}", "y".repeat(64));
    let mut ok = RawClient::connect_with(broker.addr, &path, &[]).await;
    let info = ok
        .subscribe_with("room.1", SubscribeOptions::default())
        .await;
    assert_eq!(info.client.as_deref(), Some("y".repeat(64).as_str()));
    still_serving(broker.addr, "t").await;
    // Closed by the test, so the broker stops without waiting for them.
    drop(ok);
    broker.stop().await;
}

/// Sends `PRESENCE` for `topic`; the error code and message, or `None`
/// when answered.
async fn presence_error(c: &mut RawClient, topic: &str) -> Option<(ErrorCode, String)> {
    let id = c.send_presence(topic, false).await;
    match next(c).await {
        Received::Presence { id: got, .. } if got == id => None,
        Received::Error {
            id: Some(got),
            code,
            message,
        } if got == id => Some((code, message)),
        other => panic!("PRESENCE {topic}: got {other:?}"),
    }
}

#[tokio::test]
async fn presence_refusals_do_not_tell_whether_a_topic_has_entries() {
    let secret = Secret::new();
    let broker = broker(&secret, |_| {}).await;
    // room.full has an entry and history; room.empty has nothing.
    let mut present = RawClient::connect_with(broker.addr, "/ws?client=here", &[]).await;
    present.subscribe("room.full").await;
    let mut publisher = RawClient::connect(broker.addr).await;
    publisher.publish_acked("room.full", b"\x01").await;
    assert!(matches!(next(&mut present).await, Received::Message { .. }));
    let token = token_for(Some("eve"), json!({"sub": ["room.mine"], "pub": []}));
    let mut eve = RawClient::connect_with(broker.addr, &format!("/ws?token={token}"), &[]).await;
    let full = presence_error(&mut eve, "room.full").await;
    let empty = presence_error(&mut eve, "room.empty").await;
    assert_eq!(full.as_ref().map(|e| e.0), Some(ErrorCode::Forbidden));
    assert_eq!(
        full, empty,
        "the same refusal whether the topic has entries or not"
    );
    let no_presence = presence_error(&mut eve, "nopresence.x").await;
    assert_eq!(full, no_presence, "nor whether it has presence");
    // Not a topic: refused as such even for a client that may see all.
    for topic in ["room.*", "room.>", "room..x", "", "room.a b"] {
        let refused = presence_error(&mut present, topic).await;
        assert_eq!(
            refused.map(|e| e.0),
            Some(ErrorCode::InvalidTopic),
            "{topic:?}"
        );
    }
    assert_eq!(presence_error(&mut eve, "room.mine").await, None);

    // Over HTTP, without the admin grant: the same 403 for both.
    let bearer = format!("Authorization: Bearer {token}\r\n");
    let mut answers = Vec::new();
    for topic in ["room.full", "room.empty", "nopresence.x"] {
        for suffix in ["", "/stats"] {
            let path = format!("/v1/presence/{topic}{suffix}");
            let (status, _, body) = http_with(broker.addr, "GET", &path, &bearer, b"").await;
            assert_eq!(status, 403, "{path}: {body}");
            answers.push(body);
        }
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    // History too: no admin grant, no answer about the topic.
    let (full, _, full_body) =
        http_with(broker.addr, "GET", "/v1/history/room.full", &bearer, b"").await;
    let (empty, _, empty_body) =
        http_with(broker.addr, "GET", "/v1/history/room.empty", &bearer, b"").await;
    assert_eq!((full, &full_body), (empty, &empty_body));
    assert_eq!(full, 403);
    still_serving(broker.addr, "room.full").await;
    // Closed by the test, so the broker stops without waiting for them.
    drop((present, publisher, eve));
    broker.stop().await;
}

#[tokio::test]
async fn a_flood_of_presence_requests_is_answered_or_rate_limited_one_by_one() {
    let secret = Secret::new();
    let broker = broker(&secret, |_| {}).await;
    let mut c = RawClient::connect_with(broker.addr, "/ws?client=asker", &[]).await;
    c.subscribe("room.1").await;
    let first = c.next_id();
    const REQUESTS: u64 = 64;
    for n in 0..REQUESTS {
        c.send_presence("room.1", n % 2 == 0).await;
    }
    let mut answered = Vec::new();
    let mut limited = 0;
    while answered.len() + limited < REQUESTS as usize {
        match next(&mut c).await {
            Received::Presence { id, clients, .. } => {
                assert_eq!(clients, 1);
                answered.push(id);
            }
            Received::Error {
                id: Some(_),
                code: ErrorCode::RateLimited,
                ..
            } => limited += 1,
            other => panic!("got {other:?}"),
        }
    }
    answered.sort_unstable();
    answered.dedup();
    assert!(
        answered
            .iter()
            .all(|id| (first + 1..=first + REQUESTS).contains(id))
    );
    assert!(
        !answered.is_empty(),
        "at most 16 wait, but some are answered"
    );
    // The connection is still served.
    assert_eq!(presence_error(&mut c, "room.1").await, None);
    still_serving(broker.addr, "room.1").await;
    // Closed by the test, so the broker stops without waiting for them.
    drop(c);
    broker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_leave_flood_disconnects_a_stalled_watcher_at_its_budget() {
    let secret = Secret::new();
    let broker = broker(&secret, |c| {
        c.outbound_queue_bytes = 256 * 1024;
        c.max_message_size = 64 * 1024;
        c.max_http_body = 64 * 1024;
    })
    .await;
    // A stalled watcher that never reads, and a fast one that does.
    let mut stalled = RawClient::connect_with(broker.addr, "/ws?client=stalled", &[]).await;
    stalled
        .subscribe_with(
            "room.1",
            SubscribeOptions::default().join_leave(JoinLeave::Clients),
        )
        .await;
    let mut fast = RawClient::connect_with(broker.addr, "/ws?client=fast", &[]).await;
    fast.subscribe_with(
        "room.>",
        SubscribeOptions::default().join_leave(JoinLeave::Clients),
    )
    .await;
    let fast_reader = tokio::spawn(async move {
        let mut events = 0u64;
        loop {
            match next(&mut fast).await {
                Received::Join { .. } | Received::Leave { .. } => events += 1,
                Received::Message { topic, .. } if topic == "room.end" => return (fast, events),
                Received::Message { .. } => {}
                other => panic!("fast watcher got {other:?}"),
            }
        }
    });
    // Joiners with about 900 bytes of client info each: every event is big.
    let info = json!({"bio": "b".repeat(880)});
    let mut joiners = Vec::new();
    for n in 0..4 {
        let token = token_for(
            Some(&format!("u{n}")),
            json!({"sub": [">"], "pub": [">"], "info": info}),
        );
        let path = format!("/ws?client=j{n}&token={token}");
        joiners.push(RawClient::connect_with(broker.addr, &path, &[]).await);
    }
    let mut cycles = 0u64;
    while broker
        .metric("tickwire_slow_consumer_disconnects_total")
        .await
        == 0.0
    {
        assert!(
            cycles < 20_000,
            "no slow-consumer disconnect after {cycles} join/leave cycles"
        );
        for joiner in &mut joiners {
            for _ in 0..25 {
                joiner.subscribe("room.1").await;
                let id = joiner.next_id();
                joiner
                    .send(&ClientMessage::Unsubscribe {
                        id,
                        pattern: "room.1",
                    })
                    .await;
                match next(joiner).await {
                    Received::Unsubscribed(got) if got == id => {}
                    other => panic!("expected UNSUBSCRIBED, got {other:?}"),
                }
            }
        }
        cycles += 100;
    }
    // The joiners and the fast watcher were served all along.
    let mut end = RawClient::connect(broker.addr).await;
    end.publish_acked("room.end", b"\x03").await;
    let (fast, events) = fast_reader.await.expect("fast watcher");
    assert!(events >= 2 * cycles, "{events} events for {cycles} cycles");
    // The stalled watcher, reading again, finds events and then 4001.
    loop {
        match next(&mut stalled).await {
            Received::Join { .. } | Received::Leave { .. } => {}
            Received::Close { code, reason } => {
                assert_eq!(code, Some(4001), "{reason}");
                break;
            }
            other => panic!("stalled watcher got {other:?}"),
        }
    }
    still_serving(broker.addr, "room.1").await;
    // Closed by the test, so the broker stops without waiting for them.
    drop((stalled, fast, joiners, end));
    broker.stop().await;
}

#[tokio::test]
async fn oversized_or_deep_client_info_refuses_the_token() {
    let secret = Secret::new();
    let broker = broker(&secret, |c| c.max_presence_info_bytes = 256).await;
    let nested = |depth: usize| {
        let mut value = json!(1);
        for _ in 0..depth {
            value = json!([value]);
        }
        value
    };
    for (info, want) in [
        (json!({"bio": "b".repeat(300)}), "client info is"),
        (json!(vec![1_000_000_000_000u64; 40]), "client info is"),
        (nested(33), "client info nests deeper than 32 levels"),
        (nested(100), "client info nests deeper than 32 levels"),
        (nested(129), ""),
        (nested(300), ""),
    ] {
        let token = token_for(Some("u"), json!({"sub": [">"], "info": info}));
        let (status, body) = try_handshake_at(broker.addr, &format!("/ws?token={token}"), "").await;
        assert_eq!(status, 401, "{}", &body[..body.len().min(200)]);
        assert!(body.contains(want), "{body}");
    }
    // Deep but small info, as deep as the broker reads back (32 levels), is
    // kept as it is and shown. Deeper is refused above: a cluster's presence
    // events carry it and are read with that same bound.
    let token = token_for(Some("u"), json!({"sub": [">"], "info": nested(32)}));
    let mut deep =
        RawClient::connect_with(broker.addr, &format!("/ws?token={token}&client=deep"), &[]).await;
    deep.subscribe("room.1").await;
    let (status, _, json) = api(broker.addr, "GET", "/v1/presence/room.1", b"").await;
    assert_eq!(status, 200, "{json}");
    let entry = &json["entries"][0];
    assert_eq!(entry["client"], "deep");
    assert!(
        entry.get("info").is_some() || entry.get("info_base64").is_some(),
        "{json}"
    );
    still_serving(broker.addr, "room.1").await;
    broker.stop().await;
}

#[tokio::test]
async fn a_presence_list_larger_than_a_message_fits_the_asker_budget() {
    let secret = Secret::new();
    let broker = broker(&secret, |c| {
        c.max_message_size = 16 * 1024;
        c.max_http_body = 16 * 1024;
        c.outbound_queue_bytes = 40 * 1024;
    })
    .await;
    // 60 entries with about 900 bytes of client info: a list of ~55 KB,
    // more than a message and than the asker's whole queue budget.
    let info = json!({"bio": "b".repeat(880)});
    let token = token_for(Some("many"), json!({"sub": [">"], "info": info}));
    let mut present = Vec::new();
    for n in 0..60 {
        let path = format!("/ws?client=c{n}&token={token}");
        let mut c = RawClient::connect_with(broker.addr, &path, &[]).await;
        c.subscribe("room.big").await;
        present.push(c);
    }
    let mut asker = RawClient::connect(broker.addr).await;
    for _ in 0..3 {
        let id = asker.send_presence("room.big", false).await;
        match next(&mut asker).await {
            Received::Presence {
                id: got,
                clients,
                users,
                entries,
            } => {
                assert_eq!((got, clients, users), (id, 60, 1));
                let entries = entries.expect("a list");
                assert!(
                    !entries.is_empty() && entries.len() < 60,
                    "{}",
                    entries.len()
                );
            }
            other => panic!("expected PRESENCE_INFO, got {other:?}"),
        }
    }
    // Counts only are exact and small; the asker is still served.
    assert_eq!(presence_error(&mut asker, "room.big").await, None);
    still_serving(broker.addr, "room.big").await;
    // Closed by the test, so the broker stops without waiting for them.
    drop((present, asker));
    broker.stop().await;
}

#[tokio::test]
async fn a_json_payload_may_not_grow_past_the_body_limit_in_messagepack() {
    let secret = Secret::new();
    // The smallest valid queue budget: twice the largest message.
    let broker = broker(&secret, |c| {
        c.max_message_size = 64 * 1024;
        c.max_http_body = 64 * 1024;
        c.publish_bytes_burst = 1024 * 1024;
        c.outbound_queue_bytes = 2 * (64 * 1024 + 1024);
    })
    .await;
    let mut subscriber = RawClient::connect(broker.addr).await;
    subscriber.subscribe("t").await;
    // `1e1` is 3 bytes of JSON and 9 of MessagePack (a float 64): a body
    // within max_http_body would make a payload over twice as big.
    let items = vec!["1e1"; 16_000].join(",");
    let body = format!(r#"{{"messages":[{{"topic":"t","payload":[{items}]}}]}}"#);
    assert!(body.len() < 64 * 1024);
    let (status, _, json) = api(broker.addr, "POST", "/v1/publish", body.as_bytes()).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["results"][0]["error"], "payload_too_large", "{json}");
    // The subscriber was not sent it, and is still served.
    let mut writer = RawClient::connect(broker.addr).await;
    writer.publish_acked("t", b"\xa1a").await;
    match next(&mut subscriber).await {
        Received::Message { payload, .. } => assert_eq!(&payload[..], b"\xa1a"),
        other => panic!("expected the small message, got {other:?}"),
    }
    // Closed by the test, so the broker stops without waiting for them.
    drop((subscriber, writer));
    broker.stop().await;
}
