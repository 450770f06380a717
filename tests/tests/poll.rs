//! `GET /v1/poll` end to end: a real broker on port 0, raw HTTP over TCP,
//! raw WebSocket clients to publish.

use std::time::Duration;

use serde_json::{Value, json};
use tickwire_e2e::fallback::{auth_broker, poll, token, wait_sessions};
use tickwire_e2e::{RawClient, TestBroker, history_policy, metric_with_label, poll_until};

/// (topic, seq) of every message in a poll answer.
fn messages(answer: &Value) -> Vec<(String, u64)> {
    answer["messages"]
        .as_array()
        .expect("messages array")
        .iter()
        .map(|m| {
            assert!(m["epoch"].is_string(), "{m}");
            (
                m["topic"].as_str().unwrap().to_owned(),
                m["seq"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn session(answer: &Value) -> String {
    let id = answer["session"].as_str().expect("session").to_owned();
    assert_eq!(id.len(), 32, "{id}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    id
}

async fn ok(broker: &TestBroker, query: &str) -> Value {
    let (status, answer) = poll(broker.addr, query, "").await;
    assert_eq!(status, 200, "{query}: {answer}");
    answer
}

#[tokio::test]
async fn a_poll_session_hands_out_each_message_once_in_order() {
    let broker = TestBroker::start_default().await;
    let first = ok(&broker, "sub=q.*&timeout=0").await;
    let id = session(&first);
    assert_eq!(
        first["events"],
        json!([{"type": "subscribed", "sub": "q.*"}])
    );
    assert_eq!(first["messages"], json!([]));
    assert_eq!(first["cursor"], "gA");

    // Nothing buffered, timeout 0: an empty answer at once.
    let empty = ok(&broker, &format!("sub=q.*&timeout=0&session={id}")).await;
    assert_eq!(
        (
            session(&empty),
            empty["messages"].clone(),
            empty["events"].clone()
        ),
        (id.clone(), json!([]), json!([]))
    );

    // A held poll answers when a publish arrives.
    let addr = broker.addr;
    let query = format!("sub=q.*&timeout=30&session={id}");
    let held = tokio::spawn(async move { poll(addr, &query, "").await });
    let mut publisher = RawClient::connect(broker.addr).await;
    publisher.publish_acked("q.a", b"\x01").await;
    let (status, answer) = held.await.expect("poll task");
    assert_eq!(status, 200);
    assert_eq!(messages(&answer), [("q.a".to_owned(), 1)]);
    assert_eq!(session(&answer), id);

    // The next poll gets exactly the next messages.
    for _ in 0..3 {
        publisher.publish_acked("q.a", b"\x02").await;
        publisher.publish_acked("q.b", b"\x03").await;
    }
    let answer = ok(&broker, &format!("sub=q.*&session={id}")).await;
    let want: Vec<(String, u64)> = (2..=4)
        .flat_map(|n| [("q.a".to_owned(), n), ("q.b".to_owned(), n - 1)])
        .collect();
    assert_eq!(messages(&answer), want);
    assert_eq!(answer["messages"][0]["data"], json!(2));
    assert_eq!(
        metric_with_label(
            broker.addr,
            "tickwire_transport_deliveries_total",
            "transport",
            "poll"
        )
        .await,
        7.0
    );
}

#[tokio::test]
async fn a_poll_that_does_not_find_its_session_resumes_from_the_cursor() {
    let broker = TestBroker::start(|c| c.topic_policies = vec![history_policy("h.>", 1000)]).await;
    let mut publisher = RawClient::connect(broker.addr).await;
    let first = ok(&broker, "sub=h.%3E&timeout=0").await;
    for i in 0..6u8 {
        publisher
            .publish_acked(if i % 2 == 0 { "h.a" } else { "h.b" }, &[i])
            .await;
    }
    let answer = ok(&broker, &format!("sub=h.%3E&session={}", session(&first))).await;
    assert_eq!(messages(&answer).len(), 6);
    let cursor = answer["cursor"].as_str().unwrap().to_owned();
    for i in 6..10u8 {
        publisher
            .publish_acked(if i % 2 == 0 { "h.a" } else { "h.b" }, &[i])
            .await;
    }
    // Another node, or after a restart: the session is unknown here.
    let unknown = "0123456789abcdef0123456789abcdef";
    let resumed = ok(
        &broker,
        &format!("sub=h.%3E&session={unknown}&cursor={cursor}"),
    )
    .await;
    assert_ne!(session(&resumed), unknown);
    assert_eq!(
        resumed["events"],
        json!([{"type": "subscribed", "sub": "h.>", "recovered": true}])
    );
    let mut got = messages(&resumed);
    got.sort();
    assert_eq!(
        got,
        [
            ("h.a".to_owned(), 4),
            ("h.a".to_owned(), 5),
            ("h.b".to_owned(), 4),
            ("h.b".to_owned(), 5)
        ]
    );
}

#[tokio::test]
async fn an_answer_holds_at_most_poll_batch_messages() {
    let broker = TestBroker::start(|c| c.poll_batch = 3).await;
    let id = session(&ok(&broker, "sub=b&timeout=0").await);
    let mut publisher = RawClient::connect(broker.addr).await;
    for _ in 0..7 {
        publisher.publish_acked("b", b"x").await;
    }
    let mut seqs = Vec::new();
    for want in [3, 3, 1] {
        let answer = ok(&broker, &format!("sub=b&timeout=0&session={id}")).await;
        let got = messages(&answer);
        assert_eq!(got.len(), want);
        seqs.extend(got.into_iter().map(|(_, seq)| seq));
    }
    assert_eq!(seqs, (1..=7).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_session_whose_client_stops_polling_is_closed_as_slow_and_resumed_by_cursor() {
    let broker = TestBroker::start(|c| {
        c.topic_policies = vec![history_policy("s", 1000)];
        c.outbound_queue_bytes = 8 << 10;
        c.max_message_size = 1 << 10;
        c.max_http_body = 1 << 10;
    })
    .await;
    let first = ok(&broker, "sub=s&sub=noise&timeout=0").await;
    let id = session(&first);
    let mut publisher = RawClient::connect(broker.addr).await;
    publisher.publish_acked("s", b"one").await;
    let answer = ok(&broker, &format!("sub=s&sub=noise&session={id}")).await;
    let cursor = answer["cursor"].as_str().unwrap().to_owned();
    publisher.publish_acked("s", b"two").await;
    publisher.publish_acked("s", b"three").await;
    // The client stops polling while the noise outgrows the session's queue.
    for _ in 0..20 {
        publisher.publish_acked("noise", &[5u8; 512]).await;
    }
    let closed = ok(&broker, &format!("sub=s&sub=noise&session={id}")).await;
    assert_eq!(closed["messages"], json!([]));
    assert_eq!(
        closed["events"],
        json!([{"type": "close", "code": 4001, "reason": "slow consumer: outbound queue over budget"}])
    );
    let resumed = ok(&broker, &format!("sub=s&timeout=0&cursor={cursor}")).await;
    assert_ne!(session(&resumed), id);
    assert_eq!(resumed["events"][0]["recovered"], true, "{resumed}");
    let seqs: Vec<u64> = messages(&resumed).into_iter().map(|(_, s)| s).collect();
    assert_eq!(seqs, [2, 3]);
}

#[tokio::test]
async fn an_expired_token_closes_the_session_with_4003() {
    let broker = auth_broker(|_| {}).await;
    let short = token(&["t.>"], 2);
    let first = ok(&broker, &format!("sub=t.*&timeout=0&token={short}")).await;
    let id = session(&first);
    let closed = ok(
        &broker,
        &format!("sub=t.*&timeout=30&session={id}&token={short}"),
    )
    .await;
    assert_eq!(closed["events"][0]["type"], "close", "{closed}");
    assert_eq!(closed["events"][0]["code"], 4003, "{closed}");
    // The token's `exp` has whole seconds: refused once that second is over.
    let query = format!("sub=t.*&timeout=0&session={id}&token={short}");
    poll_until(async || match poll(broker.addr, &query, "").await {
        (401, refused) if refused["error"]["code"] == "unauthorized" => Ok(()),
        (status, body) => Err(format!("{status} {body}")),
    })
    .await;
}

#[tokio::test]
async fn sessions_belong_to_their_credentials_and_subs() {
    let broker = auth_broker(|_| {}).await;
    let one = token(&["t.>"], 3600);
    let two = token(&["t.>"], 3601);
    let first = ok(&broker, &format!("sub=t.*&timeout=0&token={one}")).await;
    let id = session(&first);
    let same = ok(
        &broker,
        &format!("sub=t.*&timeout=0&session={id}&token={one}"),
    )
    .await;
    assert_eq!(session(&same), id);
    let header = format!("Authorization: Bearer {one}\r\n");
    let (_, by_header) = poll(
        broker.addr,
        &format!("sub=t.*&timeout=0&session={id}"),
        &header,
    )
    .await;
    assert_eq!(session(&by_header), id, "the same token in the header");
    let other_token = ok(
        &broker,
        &format!("sub=t.*&timeout=0&session={id}&token={two}"),
    )
    .await;
    assert_ne!(session(&other_token), id);
    let other_subs = ok(
        &broker,
        &format!("sub=t.x&timeout=0&session={id}&token={one}"),
    )
    .await;
    assert_ne!(session(&other_subs), id);
    let (status, body) = poll(broker.addr, &format!("sub=u.x&token={one}"), "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    let (status, body) = poll(broker.addr, &format!("sub=t.x&timeout=61&token={one}"), "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_option"))
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timeout"),
        "{body}"
    );
}

#[tokio::test]
async fn sessions_are_bounded_and_expire() {
    let broker = TestBroker::start(|c| {
        c.max_poll_sessions = 1;
        c.poll_session_ttl = Duration::from_millis(300);
    })
    .await;
    let id = session(&ok(&broker, "sub=a&timeout=0").await);
    let (status, body) = poll(broker.addr, "sub=b&timeout=0", "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("too_many_sessions"))
    );
    wait_sessions(broker.addr, "poll", 0).await;
    let again = ok(&broker, &format!("sub=a&timeout=0&session={id}")).await;
    assert_ne!(session(&again), id, "the expired session is gone");
    assert_eq!(again["events"][0]["type"], "subscribed");
}

#[tokio::test]
async fn a_session_counts_among_its_source_address_connections() {
    let broker = TestBroker::start(|c| {
        c.max_connections_per_ip = 3;
        c.poll_session_ttl = Duration::from_millis(300);
        // Metrics on their own listener, outside the per-address count.
        c.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
    })
    .await;
    let metrics = broker.metrics_addr.expect("metrics listener");
    // Each request's own connection is gone before the next one comes.
    let no_connections = async || {
        poll_until(async || match broker.metric("tickwire_connections").await {
            0.0 => Ok(()),
            n => Err(format!("{n} connections")),
        })
        .await
    };
    let first = session(&ok(&broker, "sub=a&timeout=0").await);
    no_connections().await;
    ok(&broker, "sub=b&timeout=0").await;
    no_connections().await;
    // Two sessions plus this request's connection: a third session would
    // be a fourth place.
    let (status, body) = poll(broker.addr, "sub=c&timeout=0", "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (429, Some("rate_limited"))
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("max_connections_per_ip"), "{message}");
    let refused = metric_with_label(
        metrics,
        "tickwire_connections_rejected_per_ip_total",
        "reason",
        "max_connections_per_ip",
    );
    assert_eq!(refused.await, 1.0);
    // Polling a session it holds takes no new place.
    no_connections().await;
    let again = ok(&broker, &format!("sub=a&timeout=0&session={first}")).await;
    assert_eq!(session(&again), first);
    // Expired sessions give their places back.
    wait_sessions(metrics, "poll", 0).await;
    no_connections().await;
    ok(&broker, "sub=c&timeout=0").await;
}

#[tokio::test]
async fn shutdown_answers_a_held_poll_with_1001() {
    let broker = TestBroker::start_default().await;
    let id = session(&ok(&broker, "sub=a&timeout=0").await);
    let addr = broker.addr;
    let query = format!("sub=a&timeout=30&session={id}");
    let held = tokio::spawn(async move { poll(addr, &query, "").await });
    poll_until(async || {
        // The held request is being served once the connection count shows it.
        match broker.metric("tickwire_connections").await {
            n if n >= 2.0 => Ok(()),
            n => Err(format!("{n} connections")),
        }
    })
    .await;
    broker.begin_shutdown();
    let (status, answer) = held.await.expect("poll task");
    assert_eq!(status, 200);
    assert_eq!(
        answer["events"],
        json!([{"type": "close", "code": 1001, "reason": "broker shutting down"}])
    );
}
