//! Producer backpressure against a real `tickwire serve` (docs/semantics.md,
//! "Slow consumers and backpressure"): when the broker itself is behind, a
//! publisher with an unlimited in-flight window is slowed down, and
//! subscribers that read are never cut as slow consumers; a subscriber
//! whose socket stops draining is still handled by its topic's policy; an
//! HTTP publish into a backed-up topic waits, then is refused with 503
//! `overloaded` and `Retry-After`.
//!
//! Budgets are small (`outbound_queue_bytes` 256 KiB) and subscriber
//! sockets have small receive buffers, so a fan-out outruns its subscribers
//! after a few thousand messages: without backpressure every subscriber
//! here would be cut with 4001.

use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use serde_json::{Value, json};
use tickwire_e2e::{
    RawClient, Received, WAIT, http_with, metric, next_message, read_banner, tickwire_command,
};
use tickwire_protocol::ws::{self, OpCode};
use tickwire_protocol::{ClientMessage, WEBSOCKET_PATH};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpSocket;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Fast subscribers per test.
const FAST: usize = 10;

/// Payload bytes per message.
const PAYLOAD: usize = 128;

/// Messages per write of the publisher: it never waits for an answer.
const BURST: u64 = 1000;

/// The receive buffer asked for on every subscriber socket.
const SOCKET_BUFFER: u32 = 16 * 1024;

/// Flags of every broker here: small queues, publish limits out of the way.
const FLAGS: &[&str] = &[
    "--outbound-queue-bytes",
    "256KiB",
    "--max-message-size",
    "64KiB",
    "--max-http-body",
    "64KiB",
    "--publish-rate",
    "100000000",
    "--publish-burst",
    "100000000",
    "--publish-bytes-rate",
    "1GiB",
    "--publish-bytes-burst",
    "1GiB",
];

/// The fan-out tests' `slow_consumer_timeout`: a stalled subscriber holds
/// the publisher back this long before it is a slow consumer; a fast
/// subscriber on a loaded machine must never go this long unread.
const SLOW_CONSUMER_TIMEOUT: [&str; 2] = ["--slow-consumer-timeout", "3s"];

/// A `tickwire serve` process, killed when dropped.
struct Serve {
    addr: SocketAddr,
    _child: Child,
    config: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}

impl Serve {
    /// Starts a broker with [`FLAGS`], `args` and the configuration file
    /// text `config` (its `[[topic]]` tables); `name` tells the file apart.
    async fn start(name: &str, config: &str, args: &[&str]) -> Serve {
        let file = std::env::temp_dir().join(format!(
            "tickwire-backpressure-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&file, config).expect("write the config file");
        let path = file.to_str().expect("a UTF-8 temp path");
        let mut all = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--config",
            path,
        ];
        all.extend_from_slice(FLAGS);
        all.extend_from_slice(args);
        let mut child = tickwire_command(&all)
            .spawn()
            .expect("start tickwire serve");
        let stdout = child.stdout.take().expect("stdout");
        let (addr, _) = read_banner(&mut tokio::io::BufReader::new(stdout).lines()).await;
        Serve {
            addr,
            _child: child,
            config: file,
        }
    }

    async fn metric(&self, name: &str) -> f64 {
        metric(self.addr, name).await
    }
}

/// A subscriber to `topic` on a socket with a small receive buffer.
async fn subscriber(addr: SocketAddr, topic: &str) -> RawClient {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(SOCKET_BUFFER)
        .expect("set the receive buffer");
    let stream = socket.connect(addr).await.expect("connect");
    let mut client = RawClient::connect_on(stream, addr, WEBSOCKET_PATH, &[]).await;
    client.subscribe(topic).await;
    client
}

/// `count` publishes of `payload` on `topic` without request ids, as the
/// bytes of their client frames.
fn publishes(topic: &str, payload: &[u8], count: u64) -> Vec<u8> {
    let message = ClientMessage::Publish {
        id: None,
        topic,
        payload: Bytes::copy_from_slice(payload),
        retain: false,
    };
    let mut body = Vec::new();
    message.encode(&mut body);
    let mut out = Vec::new();
    for _ in 0..count {
        ws::write_client_frame(&mut out, OpCode::Binary, &body, [1, 2, 3, 4]);
    }
    out
}

/// A subscriber that reads every message in order (seq 1, 2, ...) until it
/// has the total the publisher reports on `total`; returns how many it
/// got. Anything else (a close, a gap) fails the test.
fn fast_reader(mut client: RawClient, mut total: watch::Receiver<Option<u64>>) -> JoinHandle<u64> {
    tokio::spawn(async move {
        let mut received = 0u64;
        loop {
            if *total.borrow() == Some(received) {
                return received;
            }
            tokio::select! {
                changed = total.changed() => changed.expect("the publisher reports its total"),
                item = client.recv() => match item {
                    Received::Message { seq, .. } => {
                        received += 1;
                        assert_eq!(seq, received, "every message, in order");
                    }
                    Received::Ping => {}
                    other => panic!("a fast subscriber got {other:?} after {received} messages"),
                },
            }
        }
    })
}

/// `FAST` fast subscribers of `topic`, reading until the total on `total`.
async fn fast_readers(
    addr: SocketAddr,
    topic: &str,
    total: &watch::Sender<Option<u64>>,
) -> Vec<JoinHandle<u64>> {
    let mut readers = Vec::new();
    for _ in 0..FAST {
        readers.push(fast_reader(
            subscriber(addr, topic).await,
            total.subscribe(),
        ));
    }
    readers
}

/// Publishes bursts of [`BURST`] messages on `topic` as fast as the broker
/// takes them until `done` says so (asked after each burst, at most
/// `max_bursts` times), then one acknowledged publish; returns how many
/// messages were published.
async fn publish_until(
    publisher: &mut RawClient,
    topic: &str,
    max_bursts: u64,
    mut done: impl AsyncFnMut() -> bool,
) -> u64 {
    let burst = publishes(topic, &[7u8; PAYLOAD], BURST);
    let mut published = 0;
    for _ in 0..max_bursts {
        publisher.send_raw(&burst).await;
        published += BURST;
        if done().await {
            break;
        }
    }
    let seq = publisher.publish_acked(topic, &[7u8; PAYLOAD]).await;
    assert_eq!(seq, published + 1, "every publish was taken");
    seq
}

/// Waits for every fast reader; each must have got all `total` messages.
async fn all_delivered(readers: Vec<JoinHandle<u64>>, total: u64) {
    for reader in readers {
        let received = tokio::time::timeout(WAIT, reader)
            .await
            .expect("the fast subscriber finishes in time")
            .expect("the fast subscriber");
        assert_eq!(received, total);
    }
}

/// [`FAST`] fast subscribers of `ticks` and a publisher with an unlimited
/// window, publishing bursts until the metric `until` is above 0 (or for
/// `max_bursts` bursts); every fast subscriber must then get every message.
/// Returns how many were published.
async fn fan_out(addr: SocketAddr, max_bursts: u64, until: Option<&str>) -> u64 {
    let (total, _) = watch::channel(None);
    let readers = fast_readers(addr, "ticks", &total).await;
    let mut publisher = RawClient::connect(addr).await;
    let published = publish_until(&mut publisher, "ticks", max_bursts, async || match until {
        Some(name) => metric(addr, name).await > 0.0,
        None => false,
    })
    .await;
    total.send_replace(Some(published));
    all_delivered(readers, published).await;
    published
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_rate_publisher_is_slowed_down_and_fast_subscribers_lose_nothing() {
    let broker = Serve::start("fast", "", &SLOW_CONSUMER_TIMEOUT).await;
    fan_out(broker.addr, 30, None).await;
    assert_eq!(
        broker
            .metric("tickwire_slow_consumer_disconnects_total")
            .await,
        0.0
    );
    assert_eq!(broker.metric("tickwire_messages_dropped_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_still_cut_and_the_others_get_everything() {
    // The close frame waits behind what the stalled socket already holds.
    let args = [&SLOW_CONSUMER_TIMEOUT[..], &["--close-timeout", "60s"]].concat();
    let broker = Serve::start("stalled", "", &args).await;
    let mut stalled = subscriber(broker.addr, "ticks").await;
    let until = Some("tickwire_slow_consumer_disconnects_total");
    let published = fan_out(broker.addr, 1000, until).await;
    assert_eq!(
        broker
            .metric("tickwire_slow_consumer_disconnects_total")
            .await,
        1.0,
        "only the stalled subscriber was cut"
    );
    // Reading again, it finds an in-order prefix of at most what its queue
    // and the sockets hold, then 4001.
    let mut seen = 0u64;
    loop {
        match stalled.recv().await {
            Received::Message { seq, .. } => {
                seen += 1;
                assert_eq!(seq, seen);
            }
            Received::Close { code, reason } => {
                assert_eq!(code, Some(4001), "{reason}");
                break;
            }
            Received::Ping => {}
            other => panic!("the stalled subscriber got {other:?}"),
        }
    }
    assert!(
        seen < published,
        "cut before the end: {seen} of {published}"
    );
}

/// A stalled subscriber of a topic whose policy is `policy` (and `FAST`
/// fast ones): it is not cut; once the policy has acted (`metric` counts
/// it), publishing stops, the fast ones have everything and the stalled
/// one, reading again, ends on the last message. Returns the gaps it saw.
async fn stalled_under_policy(policy: &str, counted_in: &str) -> u64 {
    let config = format!("[[topic]]\npattern = \"ticks\"\nslow_consumer = \"{policy}\"\n");
    let broker = Serve::start(policy, &config, &SLOW_CONSUMER_TIMEOUT).await;
    let mut stalled = subscriber(broker.addr, "ticks").await;
    let published = fan_out(broker.addr, 1000, Some(counted_in)).await;
    let mut last = 0u64;
    let mut gaps = 0u64;
    while last < published {
        match stalled.recv().await {
            Received::Message { seq, .. } => {
                assert!(seq > last, "in order");
                gaps += seq - last - 1;
                last = seq;
            }
            Received::Ping => {}
            other => panic!("the stalled subscriber got {other:?} after seq {last}"),
        }
    }
    assert_eq!(
        broker
            .metric("tickwire_slow_consumer_disconnects_total")
            .await,
        0.0,
        "nobody was cut"
    );
    gaps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_drop_oldest_subscriber_loses_old_messages_and_is_not_cut() {
    let gaps = stalled_under_policy("drop-oldest", "tickwire_messages_dropped_total").await;
    assert!(gaps > 0, "the stalled subscriber saw the dropped messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_conflate_subscriber_gets_the_newest_and_is_not_cut() {
    let gaps = stalled_under_policy("conflate", "tickwire_messages_conflated_total").await;
    assert!(gaps > 0, "the stalled subscriber skipped replaced messages");
}

/// Whether a response head says `Retry-After: 1`.
fn has_retry_after(head: &str) -> bool {
    format!("{}\r\n", head.to_ascii_lowercase()).contains("\r\nretry-after: 1\r\n")
}

/// An HTTP request with `Connection: close`: (status, head, body).
async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> (u16, String, String) {
    http_with(addr, "POST", path, "", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_publish_waits_then_answers_503_overloaded_while_fan_out_stays_backed_up() {
    // A subscriber that stops reading stays "draining" for a minute, so
    // its backlog holds publishers back for that long.
    let broker = Serve::start(
        "http",
        "",
        &[
            "--slow-consumer-timeout",
            "60s",
            "--publish-backpressure-wait",
            "200ms",
        ],
    )
    .await;
    let mut stalled = subscriber(broker.addr, "ticks").await;
    let payload = vec![b'x'; 32 * 1024];
    let mut accepted = 0u64;
    let (head, body) = loop {
        let (status, head, body) = post(broker.addr, "/v1/publish/ticks", &payload).await;
        match status {
            200 => accepted += 1,
            503 => break (head, body),
            other => panic!("HTTP publish answered {other}: {body}"),
        }
        assert!(
            accepted < 2000,
            "no backpressure after {accepted} publishes"
        );
    };
    assert!(has_retry_after(&head), "{head}");
    let error: Value = serde_json::from_str(&body).expect("a JSON error");
    assert_eq!(error["error"]["code"], "overloaded", "{body}");

    // A batch into the backed-up topic publishes nothing either.
    let batch = json!({"messages": [
        {"topic": "ticks", "payload_base64": "aGk="},
        {"topic": "other", "payload_base64": "aGk="},
    ]});
    let (status, head, body) = post(broker.addr, "/v1/publish", batch.to_string().as_bytes()).await;
    assert_eq!(status, 503, "{body}");
    assert!(has_retry_after(&head), "{head}");
    let answer: Value = serde_json::from_str(&body).expect("JSON results");
    for result in answer["results"].as_array().expect("results") {
        assert_eq!(result["error"], "overloaded", "{body}");
    }
    assert_eq!(
        broker.metric("tickwire_publish_overloaded_total").await,
        2.0
    );

    // The subscriber reads again: it has every accepted message, in order,
    // and publishing works again.
    for want in 1..=accepted {
        assert_eq!(next_message(&mut stalled).await.1, want);
    }
    let (status, _, body) = post(broker.addr, "/v1/publish/ticks", b"again").await;
    assert_eq!(status, 200, "{body}");
    let (_, seq, payload) = next_message(&mut stalled).await;
    assert_eq!((seq, &payload[..]), (accepted + 1, &b"again"[..]));
    assert_eq!(
        broker
            .metric("tickwire_slow_consumer_disconnects_total")
            .await,
        0.0
    );
}
