//! The fallback transports in a cluster: two `tickwire serve --cluster`
//! processes on one real `redis-server`. An SSE stream's cursor from node a
//! resumes on node b (SSE and long-poll alike) without gap or duplicate,
//! since the replay comes from the history Redis keeps.

use tickwire_e2e::RawClient;
use tickwire_e2e::fallback::{SseStream, poll};
use tickwire_e2e::node::ClusterNode;
use tickwire_e2e::pki::TempDir;
use tickwire_e2e::redis::RedisServer;

/// `(topic, seq)` of a delivery JSON object.
fn position(delivery: &serde_json::Value) -> (String, u64) {
    (
        delivery["topic"].as_str().expect("topic").to_owned(),
        delivery["seq"].as_u64().expect("seq"),
    )
}

#[tokio::test]
async fn an_sse_cursor_from_one_node_resumes_on_another() {
    let redis = RedisServer::start().await;
    let dir = TempDir::new("fallback-cluster");
    let file = dir.path().join("tickwire.toml");
    std::fs::write(
        &file,
        "[[topic]]\npattern = \"hist.>\"\nhistory_messages = 100\n",
    )
    .expect("write the config file");
    let file = file.to_str().expect("a UTF-8 path");
    let a = ClusterNode::ready(&redis.url(), &["--config", file]).await;
    let b = ClusterNode::ready(&redis.url(), &["--config", file]).await;

    let mut on_a = SseStream::open(a.addr, "/v1/sse?sub=hist.%3E", "").await;
    on_a.expect("subscribed").await;
    let mut publisher = RawClient::connect(b.addr).await;
    for _ in 0..5 {
        publisher.publish_acked("hist.x", b"\x01").await;
    }
    let mut last_id = String::new();
    for seq in 1..=5 {
        let event = on_a.expect("message").await;
        assert_eq!(position(&event.json()), ("hist.x".to_owned(), seq));
        last_id = event.id.expect("an id");
    }
    drop(on_a);
    for _ in 0..5 {
        publisher.publish_acked("hist.x", b"\x02").await;
    }

    let header = format!("Last-Event-ID: {last_id}\r\n");
    let mut on_b = SseStream::open(b.addr, "/v1/sse?sub=hist.%3E", &header).await;
    let subscribed = on_b.expect("subscribed").await.json();
    assert_eq!(subscribed["recovered"], true, "{subscribed}");
    let mut live = RawClient::connect(a.addr).await;
    assert_eq!(live.publish_acked("hist.x", b"\x03").await, 11);
    for seq in 6..=11 {
        let event = on_b.expect("message").await;
        assert_eq!(
            position(&event.json()),
            ("hist.x".to_owned(), seq),
            "replay then live"
        );
    }

    // The same cursor serves a long poll on node b. In a cluster the
    // subscribe is answered once Redis has been asked, so the messages may
    // come over more than one answer.
    let mut query = format!("sub=hist.%3E&timeout=5&cursor={last_id}");
    let mut seqs = Vec::new();
    while seqs.len() < 6 {
        let (status, answer) = poll(b.addr, &query, "").await;
        assert_eq!(status, 200, "{answer}");
        let messages = answer["messages"].as_array().expect("messages");
        seqs.extend(messages.iter().map(|m| position(m).1));
        let session = answer["session"].as_str().expect("session");
        query = format!("sub=hist.%3E&timeout=5&session={session}");
    }
    assert_eq!(seqs, (6..=11).collect::<Vec<u64>>());
}
