//! The server API end to end (docs/http-api.md): `GET /v1/history/{topic}`
//! with `since` and `limit`, batch `POST /v1/publish`, the credentials they
//! need, their limits, presence and disconnects, the `tickwire
//! history|topics|presence` commands, and on a cluster (real
//! redis-server) history read on one node of what another published and a
//! disconnect asked on one node closing a client on another.

use std::time::Duration;

use serde_json::{Value, json};
use tickwire_broker::config::TopicPolicy;
use tickwire_e2e::fallback::SseStream;
use tickwire_e2e::node::ClusterNode;
use tickwire_e2e::pki::{TempDir, TestCa};
use tickwire_e2e::redis::RedisServer;
use tickwire_e2e::tokens::{Secret, token, token_for};
use tickwire_e2e::{
    RawClient, Received, TestBroker, WAIT, history_policy, http_with, next_message, output_within,
    tickwire_command,
};
use tickwire_protocol::SubscribeOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A broker checking tokens signed with `secret`, with `policies`.
async fn auth_broker(secret: &Secret, policies: Vec<TopicPolicy>) -> TestBroker {
    TestBroker::start(|config| {
        config.jwt_hmac_secret_file = vec![secret.file()];
        config.topic_policies = policies;
    })
    .await
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// Sends `method path` with `headers` and `body`; (status, head, body as
/// JSON or Null).
async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String, Value) {
    let (status, head, body) = http_with(addr, method, path, headers, body).await;
    (
        status,
        head,
        serde_json::from_str(&body).unwrap_or(Value::Null),
    )
}

/// `{"n": n}` in MessagePack.
fn msgpack_n(n: u8) -> Vec<u8> {
    vec![0x81, 0xa1, b'n', n]
}

fn seqs(page: &Value) -> Vec<u64> {
    page["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {page}"))
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn history_pages_with_since_limit_and_stale_epochs() {
    let broker = TestBroker::start(|config| {
        config.topic_policies = vec![history_policy("chat.>", 5)];
    })
    .await;
    let mut publisher = RawClient::connect(broker.addr).await;
    for n in 1..=7 {
        publisher.publish_acked("chat.room", &msgpack_n(n)).await;
    }
    publisher.publish_acked("chat.room", b"\xff raw").await;

    let get = async |path: String| request(broker.addr, "GET", &path, "", b"").await;
    let (status, head, page) = get("/v1/history/chat.room".into()).await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: no-store")
    );
    assert_eq!(seqs(&page), [4, 5, 6, 7, 8], "the newest five are kept");
    assert_eq!(page["topic"], "chat.room");
    assert_eq!(page["seq"], 8);
    assert_eq!(page.get("recovered"), None, "only with since");
    let epoch: u64 = page["epoch"].as_str().unwrap().parse().unwrap();
    assert_eq!(page["messages"][0]["payload"], json!({"n": 4}));
    assert!(page["messages"][0]["time"].as_u64().unwrap() > 1_600_000_000_000_000);
    assert_eq!(page["messages"][4]["payload_base64"], "/yByYXc=");
    assert_eq!(page["messages"][4].get("payload"), None);

    let (_, _, page) = get("/v1/history/chat.room?limit=2".into()).await;
    assert_eq!(seqs(&page), [7, 8]);
    let (_, _, page) = get(format!("/v1/history/chat.room?since={epoch}:5")).await;
    assert_eq!(
        (seqs(&page), &page["recovered"]),
        (vec![6, 7, 8], &json!(true))
    );
    let (_, _, page) = get(format!("/v1/history/chat.room?since={epoch}%3A3&limit=2")).await;
    assert_eq!(
        (seqs(&page), &page["recovered"]),
        (vec![4, 5], &json!(true))
    );
    let (_, _, page) = get(format!("/v1/history/chat.room?since={epoch}:8")).await;
    assert_eq!((seqs(&page), &page["recovered"]), (vec![], &json!(true)));
    // Out of the history (too old, or ahead), or a stale epoch: not
    // recovered, and the page starts at the oldest message kept.
    for since in [
        format!("{epoch}:2"),
        format!("{epoch}:9"),
        format!("{}:5", epoch ^ 1),
    ] {
        let (_, _, page) = get(format!("/v1/history/chat.room?since={since}&limit=3")).await;
        assert_eq!(seqs(&page), [4, 5, 6], "{since}");
        assert_eq!(page["recovered"], false, "{since}");
        assert_eq!(page["epoch"], epoch.to_string());
    }
    let (_, _, page) = get("/v1/history/chat.room?payload=base64&limit=1".into()).await;
    assert_eq!(page["messages"][0]["payload_base64"], "/yByYXc=");
    let (_, _, page) = get("/v1/history/chat.room?payload=base64&since=1:1&limit=1".into()).await;
    assert_eq!(page["messages"][0]["payload_base64"], "gaFuBA==");

    // A topic the broker does not know: epoch "0", and it is not created.
    let (status, _, page) = get("/v1/history/chat.nobody?since=5:5".into()).await;
    assert_eq!(status, 200);
    assert_eq!(
        page,
        json!({"topic": "chat.nobody", "epoch": "0", "seq": 0, "recovered": false, "messages": []})
    );
    let (_, _, topics) = get("/v1/topics?pattern=chat.>".replace('>', "%3E")).await;
    assert_eq!(topics["topics"].as_array().unwrap().len(), 1, "{topics}");

    for (path, code) in [
        ("/v1/history/chat.*", "invalid_topic"),
        ("/v1/history/", "invalid_topic"),
        ("/v1/history/chat.room?limit=1001", "invalid_option"),
        ("/v1/history/chat.room?since=1", "invalid_option"),
        ("/v1/history/chat.room?x=1", "invalid_option"),
    ] {
        let (status, _, body) = get(path.into()).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}");
    }
    let (status, _, _) = request(broker.addr, "POST", "/v1/history/chat.room", "", b"").await;
    assert_eq!(status, 405);
    broker.stop().await;
}

#[tokio::test]
async fn batch_publish_answers_each_message_in_request_order() {
    let secret = Secret::new();
    let broker = auth_broker(&secret, Vec::new()).await;
    let publisher = token(json!({"pub": ["ok.>"], "sub": [">"]}));
    let mut subscriber = RawClient::connect_with(
        broker.addr,
        "/ws",
        &[("Authorization", &format!("Bearer {publisher}"))],
    )
    .await;
    subscriber.subscribe("ok.>").await;

    let batch = json!({"messages": [
        {"topic": "ok.a", "payload": {"n": 1}},
        {"topic": "secret.x", "payload": 1},
        {"topic": "ok.a", "payload_base64": "***"},
        {"topic": "ok.b", "payload_base64": "aGk=", "retain": true},
        {"topic": "ok..a", "payload": 1},
        {"topic": "ok.a", "payload": "two", "extra": 1},
        {"topic": "ok.a", "payload": [1, -2, 1.5, null, true]},
        "not an object",
    ]});
    let (status, head, answer) = request(
        broker.addr,
        "POST",
        "/v1/publish",
        &bearer(&publisher),
        batch.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    let results = answer["results"].as_array().expect("results");
    let codes: Vec<Value> = results
        .iter()
        .map(|r| r.get("seq").cloned().unwrap_or_else(|| r["error"].clone()))
        .collect();
    assert_eq!(
        codes,
        [
            json!(1),
            json!("forbidden"),
            json!("malformed"),
            json!(1),
            json!("invalid_topic"),
            json!("invalid_option"),
            json!(2),
            json!("malformed")
        ],
        "{answer}"
    );
    assert!(results[2]["message"].as_str().unwrap().contains("base64"));

    // Subscribers get the published ones in request order, JSON as
    // MessagePack.
    let (topic, seq, payload) = next_message(&mut subscriber).await;
    assert_eq!(
        (topic.as_str(), seq, payload),
        ("ok.a", 1, vec![0x81, 0xa1, b'n', 1])
    );
    let (topic, _, payload) = next_message(&mut subscriber).await;
    assert_eq!((topic.as_str(), payload), ("ok.b", b"hi".to_vec()));
    let (topic, seq, payload) = next_message(&mut subscriber).await;
    assert_eq!((topic.as_str(), seq), ("ok.a", 2));
    assert_eq!(
        payload,
        [
            0x95, 0x01, 0xfe, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0xc0, 0xc3
        ]
    );
    // `retain` kept ok.b's message.
    let mut late = RawClient::connect_with(
        broker.addr,
        "/ws",
        &[("Authorization", &format!("Bearer {publisher}"))],
    )
    .await;
    late.subscribe_with("ok.b", SubscribeOptions::default().last(true))
        .await;
    let (_, _, payload) = next_message(&mut late).await;
    assert_eq!(payload, b"hi");

    // An empty batch is answered with no results.
    let (status, _, answer) = request(
        broker.addr,
        "POST",
        "/v1/publish",
        &bearer(&publisher),
        br#"{"messages":[]}"#,
    )
    .await;
    assert_eq!((status, answer), (200, json!({"results": []})));
    broker.stop().await;
}

#[tokio::test]
async fn the_server_api_needs_credentials_and_the_admin_grant() {
    let secret = Secret::new();
    let broker = auth_broker(&secret, Vec::new()).await;
    let admin = token(json!({"admin": true}));
    let plain = token(json!({"sub": [">"], "pub": [">"]}));
    for path in ["/v1/history/a.b", "/v1/topics"] {
        let (status, head, body) = request(broker.addr, "GET", path, "", b"").await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer")
        );
        let (status, _, body) = request(broker.addr, "GET", path, &bearer(&plain), b"").await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
        let (status, _, body) = request(broker.addr, "GET", path, &bearer(&admin), b"").await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let batch = br#"{"messages":[{"topic":"a.b","payload":1}]}"#;
    let (status, _, _) = request(broker.addr, "POST", "/v1/publish", "", batch).await;
    assert_eq!(status, 401);
    // The admin grant is no publish grant.
    let (status, _, answer) =
        request(broker.addr, "POST", "/v1/publish", &bearer(&admin), batch).await;
    assert_eq!(status, 200);
    assert_eq!(answer["results"][0]["error"], "forbidden", "{answer}");
    broker.stop().await;
}

#[tokio::test]
async fn batch_publish_limits_refuse_the_whole_request() {
    let broker = TestBroker::start(|config| {
        config.max_http_body = 64 << 10;
    })
    .await;
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"topic": "a", "payload": 1}))
        .collect();
    let body = json!({ "messages": many }).to_string();
    let (status, _, answer) =
        request(broker.addr, "POST", "/v1/publish", "", body.as_bytes()).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "payload_too_large");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1000")
    );
    let big = json!({"messages": [{"topic": "a", "payload": "x".repeat(70 << 10)}]}).to_string();
    let (status, _, answer) = request(broker.addr, "POST", "/v1/publish", "", big.as_bytes()).await;
    assert_eq!(status, 413, "{answer}");
    for (body, code) in [
        (&b"not json"[..], "malformed"),
        (br#"{"messages": 3}"#, "malformed"),
        (br#"[]"#, "malformed"),
        (br#"{"messages": [], "x": 1}"#, "invalid_option"),
    ] {
        let (status, _, answer) = request(broker.addr, "POST", "/v1/publish", "", body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["code"], code);
    }
    // Nothing of the refused requests was published.
    let (_, _, page) = request(broker.addr, "GET", "/v1/topics", "", b"").await;
    assert_eq!(page["topics"], json!([]));
    let (status, _, _) = request(broker.addr, "GET", "/v1/publish", "", b"").await;
    assert_eq!(status, 405);
    broker.stop().await;
}

#[tokio::test]
async fn the_cli_shows_history_and_topics() {
    let secret = Secret::new();
    let broker = auth_broker(&secret, vec![history_policy("chat.>", 10)]).await;
    let admin = token(json!({"admin": true}));
    let plain = token(json!({"sub": [">"], "pub": [">"]}));
    let mut publisher = RawClient::connect_with(
        broker.addr,
        "/ws",
        &[("Authorization", &format!("Bearer {plain}"))],
    )
    .await;
    for n in 1..=3 {
        publisher.publish_acked("chat.room", &msgpack_n(n)).await;
    }
    publisher.publish_acked("chat.lobby", b"\x00").await;
    let url = format!("http://{}", broker.addr);
    let run = async |args: &[&str], token: &str| {
        let mut command = tickwire_command(args);
        command.args(["--url", &url]).env("TICKWIRE_TOKEN", token);
        output_within(&mut command, WAIT).await
    };

    let out = run(&["history", "chat.room", "--limit", "2"], &admin).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("topic chat.room  epoch "), "{text}");
    assert!(lines[1].starts_with("SEQ  TIME"), "{text}");
    assert!(
        lines[2].starts_with("2    ") && lines[2].ends_with("{\"n\":2}"),
        "{text}"
    );
    assert!(lines[3].ends_with("{\"n\":3}"), "{text}");

    let out = run(
        &["history", "chat.room", "--since", "1:1", "--json"],
        &admin,
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (seqs(&page), &page["recovered"]),
        (vec![1, 2, 3], &json!(false))
    );

    let out = run(&["topics", "chat.*", "--limit", "1"], &admin).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("TOPIC       SUBSCRIBERS  SEQ  EPOCH\nchat.lobby  0            1    "),
        "{text}"
    );
    assert!(
        text.ends_with("(more topics follow: --after chat.lobby)\n"),
        "{text}"
    );
    let out = run(&["topics", "--json", "--after", "chat.lobby"], &admin).await;
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["topics"][0]["topic"], "chat.room");

    // Exit codes: 1 refused (403, 400), 2 usage, 3 no credentials (401)
    // or no connection.
    for (args, token, code, words) in [
        (
            &["history", "chat.room"][..],
            plain.as_str(),
            1,
            "HTTP 403 forbidden",
        ),
        (&["history", "chat.*"], &admin, 1, "invalid_topic"),
        (&["topics", "a..b"], &admin, 1, "invalid_pattern"),
        (
            &["history", "chat.room", "--since", "x"],
            &admin,
            2,
            "--since",
        ),
        (
            &["history", "chat.room", "--limit", "0"],
            &admin,
            2,
            "limit",
        ),
        (&["topics"], "not.a.token", 3, "HTTP 401"),
    ] {
        let out = run(args, token).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
    }
    broker.stop().await;
    let out = run(&["topics"], &admin).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let out = tickwire_command(&["topics", "--url", "ftp://127.0.0.1:1"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[tokio::test]
async fn the_cli_speaks_https_with_a_private_ca() {
    let dir = TempDir::new("server-api-tls");
    let ca = TestCa::new(dir.path(), "ca");
    let other = TestCa::new(dir.path(), "other");
    let server = ca.server_cert(dir.path(), "server");
    let broker = TestBroker::start(|config| {
        config.tls_cert_file = Some(server.cert.clone());
        config.tls_key_file = Some(server.key.clone());
    })
    .await;
    let url = format!("https://localhost:{}", broker.addr.port());
    let run = async |ca_file: &std::path::Path| {
        let ca_file = ca_file.to_str().unwrap();
        let mut command =
            tickwire_command(&["topics", "--json", "--url", &url, "--ca-file", ca_file]);
        output_within(&mut command, WAIT).await
    };
    let out = run(ca.ca_file()).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page, json!({"topics": [], "next": null}));
    let out = run(other.ca_file()).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS handshake failed"));
    broker.stop().await;
}

#[tokio::test]
async fn history_on_one_cluster_node_reads_what_another_published() {
    let redis = RedisServer::start().await;
    let dir = TempDir::new("server-api-cluster");
    let config = dir.path().join("tickwire.toml");
    std::fs::write(
        &config,
        "[[topic]]\npattern = \"hist.>\"\nhistory_messages = 3\n",
    )
    .expect("write the config file");
    let config = config.to_str().unwrap();
    let a = ClusterNode::ready(&redis.url(), &["--config", config]).await;
    let b = ClusterNode::ready(&redis.url(), &["--config", config]).await;
    let batch = json!({"messages": (1..=5).map(|n| json!({"topic": "hist.t", "payload": {"n": n}})).collect::<Vec<_>>()});
    let (status, _, answer) = request(
        a.addr,
        "POST",
        "/v1/publish",
        "",
        batch.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let published: Vec<Value> = answer["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].clone())
        .collect();
    assert_eq!(
        published,
        [json!(1), json!(2), json!(3), json!(4), json!(5)],
        "{answer}"
    );

    let (status, _, page) = request(b.addr, "GET", "/v1/history/hist.t", "", b"").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(seqs(&page), [3, 4, 5]);
    assert_eq!(page["seq"], 5);
    assert_eq!(page["messages"][2]["payload"], json!({"n": 5}));
    let epoch = page["epoch"].as_str().unwrap().to_owned();
    let (_, _, page) = request(
        b.addr,
        "GET",
        &format!("/v1/history/hist.t?since={epoch}:3"),
        "",
        b"",
    )
    .await;
    assert_eq!(
        (seqs(&page), &page["recovered"]),
        (vec![4, 5], &json!(true))
    );
    let (_, _, page) = request(
        b.addr,
        "GET",
        &format!("/v1/history/hist.t?since={epoch}:1"),
        "",
        b"",
    )
    .await;
    assert_eq!(
        (seqs(&page), &page["recovered"]),
        (vec![3, 4, 5], &json!(false))
    );
    let (_, _, page) = request(b.addr, "GET", "/v1/history/hist.none", "", b"").await;
    assert_eq!(page["epoch"], "0");
    // A disconnect asked on node A closes the client on node B.
    let mut remote = RawClient::connect_with(b.addr, "/ws?client=far-away", &[]).await;
    remote.subscribe("hist.t").await;
    let (status, _, answer) = request(
        a.addr,
        "POST",
        "/v1/disconnect",
        "",
        br#"{"client":"far-away","code":4500,"reason":"banned"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["disconnected"], 0, "none on node A: {answer}");
    assert_eq!(answer["nodes_notified"], 2, "{answer}");
    match remote.recv_close().await {
        Received::Close { code, reason } => {
            assert_eq!((code, reason.as_str()), (Some(4500), "banned"))
        }
        other => panic!("expected a close, got {other:?}"),
    }
    // Node A's live subscribers got the batch too.
    let mut subscriber = RawClient::connect(a.addr).await;
    let info = subscriber
        .subscribe_with("hist.t", SubscribeOptions::default().last(true))
        .await;
    assert_eq!(info.seq, Some(5));
    match subscriber.recv().await {
        Received::Message { seq, .. } => assert_eq!(seq, 5),
        other => panic!("expected the last message, got {other:?}"),
    }
}

/// A token for user `user` (the `sub` claim) with every topic grant and
/// client `info`.
fn user_token(user: &str, info: Value) -> String {
    token_for(
        Some(user),
        json!({"sub": [">"], "pub": [">"], "info": info}),
    )
}

/// A broker with authentication on and presence on `room.>`.
async fn presence_broker(secret: &Secret) -> TestBroker {
    let policy = TopicPolicy {
        presence: true,
        ..history_policy("room.>", 0)
    };
    auth_broker(secret, vec![policy]).await
}

/// A WebSocket client with id `client` authenticated as `user`,
/// subscribed to `topic`.
async fn present(broker: &TestBroker, client: &str, user: &str, topic: &str) -> RawClient {
    let token = user_token(user, json!({"name": user}));
    let mut raw = RawClient::connect_with(
        broker.addr,
        &format!("/ws?client={client}"),
        &[("Authorization", &format!("Bearer {token}"))],
    )
    .await;
    raw.subscribe(topic).await;
    raw
}

#[tokio::test]
async fn presence_endpoints_list_who_is_subscribed() {
    let secret = Secret::new();
    let broker = presence_broker(&secret).await;
    let admin = token(json!({"admin": true}));
    let _ann = present(&broker, "ann-1", "ann", "room.1").await;
    let _ann_tab = present(&broker, "ann-2", "ann", "room.1").await;
    let _bob = present(&broker, "bob-1", "bob", "room.1").await;
    let get = async |path: &str| request(broker.addr, "GET", path, &bearer(&admin), b"").await;

    let (status, head, body) = get("/v1/presence/room.1").await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: no-store")
    );
    assert_eq!(
        (&body["topic"], &body["clients"], &body["users"]),
        (&json!("room.1"), &json!(3), &json!(2))
    );
    let mut entries = body["entries"].as_array().unwrap().clone();
    entries.sort_by_key(|e| e["client"].as_str().unwrap().to_owned());
    assert_eq!(
        entries,
        [
            json!({"client": "ann-1", "user": "ann", "info": {"name": "ann"}}),
            json!({"client": "ann-2", "user": "ann", "info": {"name": "ann"}}),
            json!({"client": "bob-1", "user": "bob", "info": {"name": "bob"}}),
        ]
    );
    let (status, _, body) = get("/v1/presence/room.1/stats").await;
    assert_eq!(
        (status, body),
        (200, json!({"topic": "room.1", "clients": 3, "users": 2}))
    );
    let (status, _, body) = get("/v1/presence/room.empty").await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"topic": "room.empty", "clients": 0, "users": 0, "entries": []})
        )
    );
    let (status, _, body) = get("/v1/presence/lobby").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "presence_disabled");
    let (status, _, body) = get("/v1/presence/room.*/stats").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_topic"))
    );

    // Admin only.
    let (status, _, _) = request(broker.addr, "GET", "/v1/presence/room.1", "", b"").await;
    assert_eq!(status, 401);
    let plain = user_token("ann", Value::Null);
    let (status, _, _) = request(
        broker.addr,
        "GET",
        "/v1/presence/room.1",
        &bearer(&plain),
        b"",
    )
    .await;
    assert_eq!(status, 403);

    // The CLI.
    let url = format!("http://{}", broker.addr);
    let run = async |args: &[&str]| {
        let mut command = tickwire_command(args);
        command.args(["--url", &url, "--token", &admin]);
        output_within(&mut command, WAIT).await
    };
    let out = run(&["presence", "room.1"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("topic room.1  clients 3  users 2\nCLIENT  USER  INFO\n"),
        "{text}"
    );
    assert!(text.contains("bob-1   bob   {\"name\":\"bob\"}"), "{text}");
    let out = run(&["presence", "room.1", "--stats"]).await;
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "topic room.1  clients 3  users 2\n"
    );
    let out = run(&["presence", "room.1", "--stats", "--json"]).await;
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body, json!({"topic": "room.1", "clients": 3, "users": 2}));
    let out = run(&["presence", "lobby"]).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("HTTP 404 presence_disabled"));
    broker.stop().await;
}

#[tokio::test]
async fn disconnect_closes_a_client_or_a_user_and_nobody_else() {
    let secret = Secret::new();
    let broker = presence_broker(&secret).await;
    let admin = token(json!({"admin": true}));
    let mut ann = present(&broker, "ann-1", "ann", "room.1").await;
    let mut ann_tab = present(&broker, "ann-2", "ann", "room.1").await;
    let mut bob = present(&broker, "bob-1", "bob", "room.1").await;
    let disconnect = async |body: &str| {
        request(
            broker.addr,
            "POST",
            "/v1/disconnect",
            &bearer(&admin),
            body.as_bytes(),
        )
        .await
    };

    // By client id, with an application code and reason.
    let (status, _, body) = disconnect(r#"{"client":"ann-1","code":4100,"reason":"moved"}"#).await;
    assert_eq!((status, body), (200, json!({"disconnected": 1})));
    match ann.recv_close().await {
        Received::Close { code, reason } => {
            assert_eq!((code, reason.as_str()), (Some(4100), "moved"))
        }
        other => panic!("expected a close, got {other:?}"),
    }
    // Presence left at once (no grace).
    let (_, _, stats) = request(
        broker.addr,
        "GET",
        "/v1/presence/room.1/stats",
        &bearer(&admin),
        b"",
    )
    .await;
    assert_eq!(stats["clients"], 2, "{stats}");
    bob.publish_acked("lobby.check", b"still here").await;

    // By user: every connection of that user, the default 4007.
    let (status, _, body) = disconnect(r#"{"user":"ann"}"#).await;
    assert_eq!((status, body), (200, json!({"disconnected": 1})));
    match ann_tab.recv_close().await {
        Received::Close { code, reason } => {
            assert_eq!(
                (code, reason.as_str()),
                (Some(4007), "disconnected by the server")
            );
        }
        other => panic!("expected a close, got {other:?}"),
    }
    // Bob stays: his connection still answers.
    bob.publish_acked("lobby.check", b"still here").await;
    let (_, _, stats) = request(
        broker.addr,
        "GET",
        "/v1/presence/room.1/stats",
        &bearer(&admin),
        b"",
    )
    .await;
    assert_eq!(stats, json!({"topic": "room.1", "clients": 1, "users": 1}));
    let (status, _, body) = disconnect(r#"{"user":"nobody"}"#).await;
    assert_eq!((status, body), (200, json!({"disconnected": 0})));
    // An SSE stream gets a close event with the code and reason.
    let carol = user_token("carol", Value::Null);
    let mut stream = SseStream::open(
        broker.addr,
        "/v1/sse?sub=room.1&client=carol-1",
        &bearer(&carol),
    )
    .await;
    stream.expect("subscribed").await;
    let (status, _, body) =
        disconnect(r#"{"client":"carol-1","code":4200,"reason":"later"}"#).await;
    assert_eq!((status, body), (200, json!({"disconnected": 1})));
    let close = stream.expect("close").await;
    assert_eq!(close.json(), json!({"code": 4200, "reason": "later"}));

    for bad in [
        r#"{"client":"a","user":"b"}"#,
        r#"{"user":"a","code":1000}"#,
        r#"{"client":"no spaces"}"#,
        "nope",
    ] {
        let (status, _, body) = disconnect(bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, _, _) = request(
        broker.addr,
        "POST",
        "/v1/disconnect",
        "",
        br#"{"user":"bob"}"#,
    )
    .await;
    assert_eq!(status, 401);
    let plain = user_token("bob", Value::Null);
    let (status, _, _) = request(
        broker.addr,
        "POST",
        "/v1/disconnect",
        &bearer(&plain),
        br#"{"user":"bob"}"#,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, _) = request(broker.addr, "GET", "/v1/disconnect", &bearer(&admin), b"").await;
    assert_eq!(status, 405);
    bob.publish_acked("lobby.check", b"never disconnected")
        .await;
    broker.stop().await;
}

/// A connection counts for `POST /v1/disconnect` from its `101` on: the
/// broker files its session before it answers the upgrade, so a disconnect
/// sent the moment the client saw the upgrade succeed (before any request)
/// closes it. Each round races the disconnect with the new connection's
/// task starting. When the session was made in that task, after the `101`,
/// the outside client (tests/outside_client, against the binary on a busy
/// machine) saw a disconnect miss such a connection about one run in
/// three; in process here the race is rarely lost, so this test guards the
/// contract rather than reproducing the old failure reliably.
#[tokio::test]
async fn a_disconnect_right_after_the_upgrade_closes_the_new_connection() {
    let secret = Secret::new();
    let broker = presence_broker(&secret).await;
    let admin = token(json!({"admin": true}));
    let user = user_token("dan", Value::Null);
    for round in 0..50 {
        let client = format!("fresh-{round}");
        // The disconnect's connection is open before the upgrade, so its
        // request leaves the moment the `101` has arrived.
        let mut http = tokio::net::TcpStream::connect(broker.addr)
            .await
            .expect("connect for the disconnect");
        let mut raw = RawClient::connect_with(
            broker.addr,
            &format!("/ws?client={client}"),
            &[("Authorization", &format!("Bearer {user}"))],
        )
        .await;
        let body = json!({"client": client}).to_string();
        let head = format!(
            "POST /v1/disconnect HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {admin}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        http.write_all(head.as_bytes())
            .await
            .expect("send the disconnect");
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), http.read_to_string(&mut answer))
            .await
            .expect("the disconnect is answered in time")
            .expect("read the disconnect's answer");
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with(r#"{"disconnected":1}"#),
            "round {round}: {answer}"
        );
        match raw.recv_close().await {
            Received::Close { code, .. } => assert_eq!(code, Some(4007), "round {round}"),
            other => panic!("round {round}: expected a close, got {other:?}"),
        }
    }
    broker.stop().await;
}
