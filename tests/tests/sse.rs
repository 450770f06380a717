//! `GET /v1/sse` end to end: a real broker on port 0, raw HTTP over TCP,
//! raw WebSocket clients to publish and to compare with.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use tickwire_e2e::fallback::{SseEvent, SseStream, auth_broker, token, wait_sessions};
use tickwire_e2e::{
    RawClient, TestBroker, WAIT, history_policy, http_with, metric_with_label, next_message,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// (topic, seq, payload) of a `message` event.
fn delivery(event: &SseEvent) -> (String, u64, Vec<u8>) {
    assert_eq!(event.event, "message", "{event:?}");
    let d = event.json();
    let payload = match (d.get("data"), d.get("data_base64")) {
        (None, Some(Value::String(b64))) => STANDARD.decode(b64).expect("base64"),
        (Some(_), None) => Vec::new(),
        other => panic!("exactly one of data and data_base64: {other:?}"),
    };
    assert!(d["epoch"].is_string(), "{d}");
    (
        d["topic"].as_str().expect("topic").to_owned(),
        d["seq"].as_u64().expect("seq"),
        payload,
    )
}

#[tokio::test]
async fn sse_delivers_exactly_what_a_websocket_subscriber_gets() {
    let broker = TestBroker::start_default().await;
    let mut ws = RawClient::connect(broker.addr).await;
    ws.subscribe("s.*").await;
    let mut sse = SseStream::open(broker.addr, "/v1/sse?sub=s.*&payload=base64", "").await;
    let head = sse.head.to_ascii_lowercase();
    for header in [
        "content-type: text/event-stream",
        "cache-control: no-store",
        "x-accel-buffering: no",
    ] {
        assert!(head.contains(header), "{head}");
    }
    let first = sse.next_block().await.expect("retry block");
    assert_eq!(first.retry.as_deref(), Some("1000"));
    let subscribed = sse.expect("subscribed").await;
    assert_eq!(subscribed.json(), json!({"sub": "s.*"}));

    let mut publisher = RawClient::connect(broker.addr).await;
    for i in 0..60u32 {
        let topic = ["s.a", "s.b", "s.c"][i as usize % 3];
        publisher.publish(topic, &i.to_be_bytes()).await;
    }
    let mut from_ws = Vec::new();
    let mut from_sse = Vec::new();
    for _ in 0..60 {
        from_ws.push(next_message(&mut ws).await);
        from_sse.push(delivery(&sse.expect("message").await));
    }
    assert_eq!(from_sse, from_ws);
    assert_eq!(
        metric_with_label(
            broker.addr,
            "tickwire_transport_sessions",
            "transport",
            "sse"
        )
        .await,
        1.0
    );
    assert_eq!(
        metric_with_label(
            broker.addr,
            "tickwire_transport_deliveries_total",
            "transport",
            "sse"
        )
        .await,
        60.0
    );
}

#[tokio::test]
async fn last_event_id_resumes_without_gap_or_duplicate() {
    let broker = TestBroker::start(|c| c.topic_policies = vec![history_policy("h.>", 1000)]).await;
    let mut publisher = RawClient::connect(broker.addr).await;
    let mut sse = SseStream::open(broker.addr, "/v1/sse?sub=h.%3E", "").await;
    sse.expect("subscribed").await;
    for i in 0..20u32 {
        let topic = if i % 2 == 0 { "h.a" } else { "h.b" };
        publisher.publish_acked(topic, &i.to_be_bytes()).await;
    }
    let mut seen: HashMap<String, Vec<u64>> = HashMap::new();
    let mut last_id = String::new();
    for _ in 0..7 {
        let event = sse.expect("message").await;
        let (topic, seq, _) = delivery(&event);
        seen.entry(topic).or_default().push(seq);
        last_id = event.id.expect("every message has an id");
    }
    drop(sse);
    for i in 20..30u32 {
        let topic = if i % 2 == 0 { "h.a" } else { "h.b" };
        publisher.publish_acked(topic, &i.to_be_bytes()).await;
    }
    // The browser's reconnect: the header wins over a stale cursor.
    let header = format!("Last-Event-ID: {last_id}\r\n");
    let mut resumed = SseStream::open(broker.addr, "/v1/sse?sub=h.%3E&cursor=gA", &header).await;
    let subscribed = resumed.expect("subscribed").await.json();
    assert_eq!(subscribed["recovered"], json!(true), "{subscribed}");
    while seen.values().map(Vec::len).sum::<usize>() < 30 {
        let (topic, seq, _) = delivery(&resumed.expect("message").await);
        seen.entry(topic).or_default().push(seq);
    }
    for topic in ["h.a", "h.b"] {
        assert_eq!(seen[topic], (1..=15).collect::<Vec<u64>>(), "{topic}");
    }
    // Then live.
    publisher.publish_acked("h.a", b"live").await;
    assert_eq!(delivery(&resumed.expect("message").await).1, 16);
}

#[tokio::test]
async fn last_gives_the_snapshot_and_max_rate_conflates() {
    let broker = TestBroker::start_default().await;
    let mut publisher = RawClient::connect(broker.addr).await;
    publisher.publish_retained("r.x", b"kept").await;
    let mut sse = SseStream::open(broker.addr, "/v1/sse?sub=r.*&last=1&payload=base64", "").await;
    sse.expect("subscribed").await;
    assert_eq!(
        delivery(&sse.expect("message").await),
        ("r.x".to_owned(), 1, b"kept".to_vec())
    );

    let mut rated = SseStream::open(broker.addr, "/v1/sse?sub=m.x&max_rate=2", "").await;
    rated.expect("subscribed").await;
    for i in 0..40u32 {
        publisher.publish_acked("m.x", &i.to_be_bytes()).await;
    }
    let mut seqs = Vec::new();
    while seqs.last() != Some(&40) {
        seqs.push(delivery(&rated.expect("message").await).1);
    }
    assert_eq!(seqs[0], 1);
    assert!(seqs.len() < 10, "conflated: {seqs:?}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test]
async fn payloads_render_as_json_when_they_are_msgpack_else_base64() {
    let broker = TestBroker::start_default().await;
    let mut publisher = RawClient::connect(broker.addr).await;
    let mut auto = SseStream::open(broker.addr, "/v1/sse?sub=p.%3E", "").await;
    let mut b64 = SseStream::open(broker.addr, "/v1/sse?sub=p.%3E&payload=base64", "").await;
    auto.expect("subscribed").await;
    b64.expect("subscribed").await;
    // {"px": 1.5, "sym": "AAPL"}
    let map = [
        &[0x82, 0xa2, b'p', b'x', 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0][..],
        &[0xa3, b's', b'y', b'm', 0xa4, b'A', b'A', b'P', b'L'],
    ]
    .concat();
    let random = [0xc1, 0x00, 0xff, 0x13, 0x37];
    publisher.publish_acked("p.deep.a", &map).await;
    publisher.publish_acked("p.b", &random).await;
    let json_event = auto.expect("message").await.json();
    assert_eq!(json_event["topic"], "p.deep.a");
    assert_eq!(json_event["data"], json!({"px": 1.5, "sym": "AAPL"}));
    assert!(json_event.get("data_base64").is_none());
    let raw_event = auto.expect("message").await.json();
    assert_eq!(raw_event["data_base64"], STANDARD.encode(random));
    assert!(raw_event.get("data").is_none());
    assert_eq!(delivery(&b64.expect("message").await).2, map);
    assert_eq!(delivery(&b64.expect("message").await).2, random);
}

async fn refused(broker: &TestBroker, path: &str, headers: &str) -> (u16, String, Value) {
    let (status, head, body) = http_with(broker.addr, "GET", path, headers, b"").await;
    let body = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, head, body)
}

#[tokio::test]
async fn bad_requests_are_refused_before_the_stream() {
    let broker = auth_broker(|c| c.allowed_origins = vec!["https://app.example".to_owned()]).await;
    let good = token(&["ok.>"], 3600);
    let cases = [
        ("/v1/sse?sub=ok.a", String::new(), 401, "unauthorized"),
        (
            "/v1/sse?sub=ok.a&token=nope",
            String::new(),
            401,
            "unauthorized",
        ),
        (
            &*format!("/v1/sse?sub=ok.a&token={good}"),
            format!("Authorization: Bearer {good}\r\n"),
            401,
            "unauthorized",
        ),
        (
            &*format!("/v1/sse?sub=no.a&token={good}"),
            String::new(),
            403,
            "forbidden",
        ),
        (
            &*format!("/v1/sse?sub=ok.a&sub=no.a&token={good}"),
            String::new(),
            403,
            "forbidden",
        ),
        (
            &*format!("/v1/sse?sub=ok..a&token={good}"),
            String::new(),
            400,
            "invalid_pattern",
        ),
        (
            &*format!("/v1/sse?token={good}"),
            String::new(),
            400,
            "invalid_option",
        ),
        (
            &*format!("/v1/sse?sub=ok.a&timeout=1&token={good}"),
            String::new(),
            400,
            "invalid_option",
        ),
        (
            &*format!("/v1/sse?sub=ok.a&cursor=!&token={good}"),
            String::new(),
            400,
            "invalid_option",
        ),
        (
            &*format!("/v1/sse?sub=ok.a&token={good}"),
            "Last-Event-ID: %%%\r\n".to_owned(),
            400,
            "invalid_option",
        ),
        (
            &*format!("/v1/sse?sub=ok.a&token={good}"),
            "Origin: https://evil.example\r\n".to_owned(),
            403,
            "forbidden",
        ),
    ];
    for (path, headers, status, code) in &cases {
        let (got, head, body) = refused(&broker, path, headers).await;
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (*status, Some(*code)),
            "{path} {headers}: {body}"
        );
        if *status == 401 {
            assert!(
                head.to_ascii_lowercase()
                    .contains("www-authenticate: bearer"),
                "{head}"
            );
        }
    }
    let (status, _, _) = http_with(broker.addr, "POST", "/v1/sse?sub=a", "", b"").await;
    assert_eq!(status, 405);

    // With the header instead of the query, from an allowed page: CORS.
    let headers = format!("Authorization: Bearer {good}\r\nOrigin: https://app.example\r\n");
    let sse = SseStream::open(broker.addr, "/v1/sse?sub=ok.*", &headers).await;
    let head = sse.head.to_ascii_lowercase();
    assert!(
        head.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    assert!(head.contains("vary: origin"), "{head}");
    let (status, head, _) = http_with(
        broker.addr,
        "OPTIONS",
        "/v1/publish/ok.a",
        "Origin: https://app.example\r\nAccess-Control-Request-Method: POST\r\n",
        b"",
    )
    .await;
    assert_eq!(status, 204);
    let head = head.to_ascii_lowercase();
    assert!(
        head.contains("access-control-allow-methods: post"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-headers: authorization, content-type, last-event-id"),
        "{head}"
    );
    assert!(
        head.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
}

#[tokio::test]
async fn an_expired_token_ends_the_stream_with_4003() {
    let broker = auth_broker(|c| c.allowed_origins = vec!["https://app.example".to_owned()]).await;
    let short = token(&["ok.>"], 2);
    let mut sse =
        SseStream::open(broker.addr, &format!("/v1/sse?sub=ok.*&token={short}"), "").await;
    sse.expect("subscribed").await;
    let close = sse.expect("close").await.json();
    assert_eq!(close["code"], 4003, "{close}");
    assert_eq!(
        sse.next_block().await,
        None,
        "the stream ends after the close"
    );
}

#[tokio::test]
async fn shutdown_ends_the_stream_with_1001() {
    let broker = TestBroker::start_default().await;
    let mut sse = SseStream::open(broker.addr, "/v1/sse?sub=a", "").await;
    sse.expect("subscribed").await;
    broker.begin_shutdown();
    let close = sse.expect("close").await.json();
    assert_eq!(
        close,
        json!({"code": 1001, "reason": "broker shutting down"})
    );
    assert_eq!(sse.next_block().await, None);
}

#[tokio::test]
async fn keepalive_comments_flow_while_idle() {
    let broker = TestBroker::start(|c| c.keepalive_interval = Duration::from_millis(200)).await;
    let mut sse = SseStream::open(broker.addr, "/v1/sse?sub=a", "").await;
    sse.expect("subscribed").await;
    let block = sse.next_block().await.expect("a keepalive");
    assert_eq!(block.comment.as_deref(), Some("keepalive"));
}

#[tokio::test]
async fn a_stalled_sse_reader_is_closed_as_a_slow_consumer_and_others_are_served() {
    let broker = TestBroker::start(|c| {
        c.outbound_queue_bytes = 256 << 10;
        c.max_message_size = 64 << 10;
        c.max_http_body = 64 << 10;
        c.keepalive_timeout = Duration::from_secs(1);
    })
    .await;
    // A reader that sends its request and never reads, with a small window.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    let mut stalled = socket.connect(broker.addr).await.expect("connect");
    let request = format!(
        "GET /v1/sse?sub=big&payload=base64 HTTP/1.1\r\nHost: {}\r\n\r\n",
        broker.addr
    );
    tokio::io::AsyncWriteExt::write_all(&mut stalled, request.as_bytes())
        .await
        .expect("send");
    let mut healthy = SseStream::open(broker.addr, "/v1/sse?sub=big&payload=base64", "").await;
    healthy.expect("subscribed").await;
    let mut ws = RawClient::connect(broker.addr).await;
    ws.subscribe("big").await;
    wait_sessions(broker.addr, "sse", 2).await;

    let mut publisher = RawClient::connect(broker.addr).await;
    let payload = vec![7u8; 8 << 10];
    let mut published = 0u64;
    while broker
        .metric("tickwire_slow_consumer_disconnects_total")
        .await
        < 1.0
    {
        assert!(published < 4000, "the stalled reader was never closed");
        for _ in 0..8 {
            published = publisher.publish_acked("big", &payload).await;
            // Keep the healthy readers within their budget.
            assert_eq!(next_message(&mut ws).await.1, published);
            assert_eq!(delivery(&healthy.expect("message").await).1, published);
        }
    }
    // The stalled connection is dropped after the write timeout.
    wait_sessions(broker.addr, "sse", 1).await;
    let mut sink = Vec::new();
    let read = tokio::time::timeout(WAIT, stalled.read_to_end(&mut sink)).await;
    assert!(read.is_ok(), "the stalled connection ends");
    // The healthy ones still get everything.
    let next = publisher.publish_acked("big", b"after").await;
    assert_eq!(next_message(&mut ws).await.1, next);
    assert_eq!(delivery(&healthy.expect("message").await).1, next);
    assert_eq!(
        broker
            .metric("tickwire_slow_consumer_disconnects_total")
            .await,
        1.0
    );
}

#[tokio::test]
async fn unknown_paths_name_the_fallbacks() {
    let broker = TestBroker::start_default().await;
    let stream = TcpStream::connect(broker.addr).await.expect("connect");
    drop(stream);
    let (status, _, body) = http_with(broker.addr, "GET", "/nope", "", b"").await;
    assert_eq!(status, 404);
    assert!(body.contains("GET /v1/sse, GET /v1/poll"), "{body}");
}
