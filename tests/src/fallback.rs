//! Clients of the fallback transports for the e2e tests: an SSE stream read
//! from a raw TCP connection (chunked transfer encoding and the event
//! format parsed here, byte by byte), and one long-poll request.
//!
//! Every read is bounded by [`WAIT`].

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::{Value, json};
use tickwire_broker::config::BrokerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{TestBroker, WAIT, http_with, metric_with_label, poll_until};

/// The HMAC secret of [`auth_broker`].
const SECRET: &[u8] = b"an HMAC secret of at least 32 bytes, for tests";

/// An HS256 token for [`auth_broker`] granting subscriptions to `sub`,
/// expiring in `expires_in` seconds.
pub fn token(sub: &[&str], expires_in: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let claims = json!({"exp": now + expires_in, "iat": now, "tw": {"sub": sub, "pub": []}});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("sign")
}

/// A broker checking [`token`]s (no leeway), with `configure` applied.
pub async fn auth_broker(configure: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("tickwire-fallback-secret-{}-{n}", std::process::id());
    let path = std::env::temp_dir().join(name);
    std::fs::write(&path, SECRET).expect("write the secret");
    TestBroker::start(|c| {
        c.jwt_hmac_secret_file = vec![path];
        c.jwt_leeway = Duration::ZERO;
        configure(c);
    })
    .await
}

/// One Server-Sent Event (or a comment block: `event` is then empty and
/// `comment` holds it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `id` field, if any.
    pub id: Option<String>,
    /// The `event` field.
    pub event: String,
    /// The `data` field.
    pub data: String,
    /// The `retry` field, if any.
    pub retry: Option<String>,
    /// A comment line's text (after `:`), if the block had one.
    pub comment: Option<String>,
}

impl SseEvent {
    /// The data parsed as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// An open `GET /v1/sse` stream.
pub struct SseStream {
    stream: TcpStream,
    raw: Vec<u8>,
    text: String,
    ended: bool,
    /// The response head (status line and headers).
    pub head: String,
}

impl SseStream {
    /// Sends `GET path` with `extra_headers` (each ending in `\r\n`) and
    /// reads the response head; panics unless it is 200.
    pub async fn open(addr: SocketAddr, path: &str, extra_headers: &str) -> SseStream {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra_headers}\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .expect("send request");
        let mut sse = SseStream {
            stream,
            raw: Vec::new(),
            text: String::new(),
            ended: false,
            head: String::new(),
        };
        loop {
            if let Some(end) = sse.raw.windows(4).position(|w| w == b"\r\n\r\n") {
                sse.head = String::from_utf8_lossy(&sse.raw[..end]).into_owned();
                sse.raw.drain(..end + 4);
                break;
            }
            assert!(
                sse.read_more().await,
                "connection closed before the response head"
            );
        }
        assert!(
            sse.head.starts_with("HTTP/1.1 200"),
            "not 200: {}",
            sse.head
        );
        assert!(
            sse.head
                .to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{}",
            sse.head
        );
        sse
    }

    /// Reads more bytes; false at EOF.
    async fn read_more(&mut self) -> bool {
        let mut buf = [0u8; 16384];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut buf))
            .await
            .expect("sse data in time")
            .unwrap_or(0);
        self.raw.extend_from_slice(&buf[..n]);
        n > 0
    }

    /// Moves every complete chunk from `raw` to `text`.
    fn dechunk(&mut self) {
        loop {
            let Some(line_end) = self.raw.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let size = std::str::from_utf8(&self.raw[..line_end])
                .ok()
                .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
                .expect("chunk size line");
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return;
            }
            let start = line_end + 2;
            if self.raw.len() < start + size + 2 {
                return;
            }
            let chunk = String::from_utf8(self.raw[start..start + size].to_vec()).expect("UTF-8");
            self.text.push_str(&chunk);
            self.raw.drain(..start + size + 2);
        }
    }

    /// The next block (event, comment or `retry`), or `None` once the
    /// stream has ended.
    pub async fn next_block(&mut self) -> Option<SseEvent> {
        loop {
            self.dechunk();
            if let Some(end) = self.text.find("\n\n") {
                let block: String = self.text.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                for line in block.lines().filter(|l| !l.is_empty()) {
                    if let Some(comment) = line.strip_prefix(':') {
                        event.comment = Some(comment.trim().to_owned());
                        continue;
                    }
                    let (field, value) = line.split_once(": ").unwrap_or((line, ""));
                    match field {
                        "id" => event.id = Some(value.to_owned()),
                        "event" => event.event = value.to_owned(),
                        "data" => event.data = value.to_owned(),
                        "retry" => event.retry = Some(value.to_owned()),
                        other => panic!("unknown SSE field {other:?} in {block:?}"),
                    }
                }
                return Some(event);
            }
            if self.ended || !self.read_more().await {
                return None;
            }
        }
    }

    /// The next event, skipping comments and `retry` blocks.
    pub async fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            let block = self.next_block().await?;
            if !block.event.is_empty() {
                return Some(block);
            }
        }
    }

    /// The next event, which must be `kind`.
    pub async fn expect(&mut self, kind: &str) -> SseEvent {
        let event = self.next_event().await.expect("an event before the end");
        assert_eq!(event.event, kind, "{event:?}");
        event
    }
}

/// One `GET /v1/poll?{query}` with `extra_headers`; (status, JSON body).
pub async fn poll(addr: SocketAddr, query: &str, extra_headers: &str) -> (u16, Value) {
    let path = format!("/v1/poll?{query}");
    let (status, _, body) = http_with(addr, "GET", &path, extra_headers, b"").await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, json)
}

/// Waits until `tickwire_transport_sessions{transport}` is `want`.
pub async fn wait_sessions(addr: SocketAddr, transport: &str, want: u32) {
    poll_until(async || {
        let n =
            metric_with_label(addr, "tickwire_transport_sessions", "transport", transport).await;
        if n == f64::from(want) {
            Ok(())
        } else {
            Err(format!("{n} {transport} sessions, expected {want}"))
        }
    })
    .await;
}
