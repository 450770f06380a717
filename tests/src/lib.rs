//! Helpers shared by the end-to-end tests: an in-process broker on port 0,
//! a raw WebSocket client that speaks frames byte by byte, a minimal HTTP
//! client, a reader for `/metrics`, and for the cluster tests real
//! `redis-server` processes ([`redis`]), the broker processes on them,
//! which can be killed and restarted ([`node`]), and a TCP proxy that
//! balances and fails on demand ([`proxy`]).
//!
//! Every wait is bounded by [`WAIT`]: a broken broker fails a test, it never
//! hangs the suite.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tickwire_broker::SlowConsumerPolicy;
use tickwire_broker::config::{BrokerConfig, TopicPolicy};
use tickwire_broker::reload::Reloaded;
use tickwire_broker::{Broker, ReloadError, ReloadHandle, ShutdownHandle};
use tickwire_protocol::handshake::{ResponseHead, SubprotocolRule, UpgradeRequest};
use tickwire_protocol::message::SubscribedInfo;
use tickwire_protocol::topic::Pattern;
use tickwire_protocol::ws::{self, FrameDecoder, Incoming, MessageKind, OpCode, Role};
use tickwire_protocol::{
    ClientMessage, ErrorCode, ServerMessage, SubscribeOptions, WEBSOCKET_PATH,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

pub mod fallback;
pub mod node;
pub mod pki;
pub mod proxy;
pub mod redis;
pub mod tokens;

/// Longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// The configuration test brokers start from: the defaults on
/// 127.0.0.1:0, except that clients may retain on every topic
/// (`client_retain_patterns = ">"`), which many tests rely on; tests of the
/// retain policy set it back.
pub fn test_config() -> BrokerConfig {
    BrokerConfig {
        client_retain_patterns: vec![Pattern::everything()],
        ..BrokerConfig::local_ephemeral()
    }
}

/// A topic policy keeping `messages` messages of history (64 MiB at most)
/// for the topics of `pattern`, slow consumers disconnected.
pub fn history_policy(pattern: &str, messages: usize) -> TopicPolicy {
    TopicPolicy {
        pattern: Pattern::new(pattern).expect("valid pattern"),
        history_messages: messages,
        history_bytes: 64 << 20,
        history_age: None,
        retain: false,
        slow_consumer: SlowConsumerPolicy::Disconnect,
        client_retain: None,
        presence: false,
    }
}

/// The next `MESSAGE` a raw client receives, as (topic, seq, payload);
/// pings are skipped, anything else fails the test.
pub async fn next_message(client: &mut RawClient) -> (String, u64, Vec<u8>) {
    loop {
        match client.recv().await {
            Received::Message {
                topic,
                seq,
                payload,
                ..
            } => return (topic, seq, payload.to_vec()),
            Received::Ping => {}
            other => panic!("expected a message, got {other:?}"),
        }
    }
}

/// A broker running inside the test process.
pub struct TestBroker {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where its metrics listener listens, if `metrics_listen` is set.
    pub metrics_addr: Option<SocketAddr>,
    /// The broker's shared state, to act on it from inside (the
    /// connection directory, presence).
    pub state: std::sync::Arc<tickwire_broker::state::BrokerState>,
    shutdown: ShutdownHandle,
    reload: ReloadHandle,
    task: JoinHandle<()>,
}

impl TestBroker {
    /// Starts a broker on 127.0.0.1:0 with `configure` applied to
    /// [`test_config`].
    pub async fn start(configure: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
        let mut config = test_config();
        configure(&mut config);
        let broker = Broker::bind(config).await.expect("bind 127.0.0.1:0");
        Self::run(broker)
    }

    /// Starts a broker listening on `addr` exactly, with `configure` applied
    /// to [`test_config`]: used to restart a broker on the address
    /// of one that was stopped, so that clients reconnect to the new one.
    /// Binding is retried briefly, since the old listener's port may take a
    /// moment to be released.
    pub async fn start_at(
        addr: SocketAddr,
        configure: impl FnOnce(&mut BrokerConfig),
    ) -> TestBroker {
        let mut config = test_config();
        configure(&mut config);
        config.listen = addr;
        let deadline = tokio::time::Instant::now() + WAIT;
        let broker = loop {
            match Broker::bind(config.clone()).await {
                Ok(broker) => break broker,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    eprintln!("binding {addr} again failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("bind {addr}: {e}"),
            }
        };
        Self::run(broker)
    }

    /// Runs a bound broker on a task of the test's runtime.
    fn run(broker: Broker) -> TestBroker {
        let addr = broker.local_addr().expect("local addr");
        let metrics_addr = broker
            .metrics_addr()
            .map(|addr| addr.expect("metrics listener address"));
        let shutdown = broker.shutdown_handle();
        let reload = broker.reload_handle();
        let state = broker.state();
        let task = tokio::spawn(broker.run());
        TestBroker {
            addr,
            metrics_addr,
            state,
            shutdown,
            reload,
            task,
        }
    }

    /// Starts a broker with the default configuration.
    pub async fn start_default() -> TestBroker {
        Self::start(|_| {}).await
    }

    /// The WebSocket URL of this broker.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Reloads the broker's reloadable parts (as SIGHUP does).
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        self.reload.reload()
    }

    /// Requests graceful shutdown without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.shutdown();
    }

    /// Shuts down gracefully and waits for the broker to stop.
    pub async fn stop(self) {
        self.shutdown.shutdown();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("broker stops in time")
            .expect("broker task");
    }

    /// Reads one metric's value (summed over its label sets), from the
    /// metrics listener if there is one.
    pub async fn metric(&self, name: &str) -> f64 {
        metric(self.metrics_addr.unwrap_or(self.addr), name).await
    }

    /// Waits until `name` reaches `want`, re-reading `/metrics` as events
    /// arrive on the broker; fails after [`WAIT`].
    pub async fn wait_metric(&self, name: &str, want: f64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let value = self.metric(name).await;
            if value == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "metric {name} is {value}, expected {want}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// What a raw client received, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// A `MESSAGE` delivery.
    Message {
        /// Topic.
        topic: String,
        /// The topic's epoch.
        epoch: u64,
        /// Sequence number.
        seq: u64,
        /// Publish time in microseconds.
        time_us: u64,
        /// Payload.
        payload: Bytes,
    },
    /// `SUBSCRIBED`, with its info map.
    Subscribed(u64, SubscribedInfo),
    /// `UNSUBSCRIBED`.
    Unsubscribed(u64),
    /// `PUBLISHED`.
    Published {
        /// Request id.
        id: u64,
        /// Assigned sequence.
        seq: u64,
    },
    /// `PONG`.
    Pong(u64),
    /// `ERROR`.
    Error {
        /// Request id.
        id: Option<u64>,
        /// Error code.
        code: ErrorCode,
        /// Human message.
        message: String,
    },
    /// `REFRESHED`, with the info map's `exp`.
    Refreshed {
        /// Request id.
        id: u64,
        /// When the connection expires (Unix seconds), if it does.
        expires: Option<u64>,
    },
    /// `PRESENCE_INFO`.
    Presence {
        /// Request id.
        id: u64,
        /// `clients`.
        clients: u64,
        /// `users`.
        users: u64,
        /// `entries`; `None` for counts only.
        entries: Option<Vec<SeenEntry>>,
    },
    /// `JOIN`.
    Join {
        /// The topic.
        topic: String,
        /// Who joined (no `client` in user-level events).
        entry: SeenEntry,
    },
    /// `LEAVE`.
    Leave {
        /// The topic.
        topic: String,
        /// Who left (no `client` in user-level events).
        entry: SeenEntry,
    },
    /// A WebSocket ping from the broker.
    Ping,
    /// The broker's close frame.
    Close {
        /// Close code.
        code: Option<u16>,
        /// Reason.
        reason: String,
    },
    /// The TCP connection ended without a close frame.
    Eof,
}

/// A presence entry as a raw client received it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeenEntry {
    /// `client`.
    pub client: Option<String>,
    /// `user`.
    pub user: Option<String>,
    /// `info`, raw MessagePack.
    pub info: Option<Vec<u8>>,
}

impl SeenEntry {
    fn from_wire(entry: &tickwire_protocol::message::PresenceEntry<'_>) -> Self {
        SeenEntry {
            client: entry.client.map(str::to_owned),
            user: entry.user.map(str::to_owned),
            info: entry.info.as_ref().map(|i| i.to_vec()),
        }
    }
}

/// A stream a raw client speaks over: plain TCP or TLS.
pub trait RawStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> RawStream for T {}

/// A WebSocket client that builds every frame by hand, for tests that need
/// to send what a well-behaved client never would.
pub struct RawClient {
    stream: Box<dyn RawStream>,
    buf: BytesMut,
    decoder: FrameDecoder,
    next_id: u64,
}

/// A handshake's response: the parsed head, its text, and the bytes read
/// past it.
struct Response {
    head: ResponseHead,
    text: String,
    rest: BytesMut,
}

/// Sends `request` and reads the response head; an error with whatever
/// arrived, as text, if the connection closed first.
async fn handshake(
    stream: &mut (impl RawStream + ?Sized),
    request: &UpgradeRequest,
) -> Result<Response, String> {
    stream
        .write_all(&request.to_bytes())
        .await
        .expect("send handshake");
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(head) = ResponseHead::parse(&buf).expect("an HTTP response head") {
            let rest = buf.split_off(head.len());
            let text = String::from_utf8_lossy(&buf).into_owned();
            return Ok(Response { head, text, rest });
        }
        let n = tokio::time::timeout(WAIT, stream.read_buf(&mut buf))
            .await
            .expect("handshake response in time")
            .expect("read handshake");
        if n == 0 {
            return Err(String::from_utf8_lossy(&buf).into_owned());
        }
    }
}

/// Attempts a WebSocket handshake with the given extra header lines (each
/// ending in `\r\n`, e.g. a `Sec-WebSocket-Protocol` offer: none is made
/// otherwise); returns the status (0 if the connection closed before a
/// response head) and the response text, reading the body of a non-101
/// response until the server closes.
pub async fn try_handshake(addr: SocketAddr, extra_headers: &str) -> (u16, String) {
    try_handshake_at(addr, WEBSOCKET_PATH, extra_headers).await
}

/// [`try_handshake`] for the request target `path` (e.g. `/ws?token=T`).
pub async fn try_handshake_at(addr: SocketAddr, path: &str, extra_headers: &str) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    try_handshake_on(stream, addr, path, extra_headers).await
}

/// [`try_handshake_at`] on a given stream (plain or TLS, connected to
/// `addr`).
pub async fn try_handshake_on(
    mut stream: impl RawStream,
    addr: SocketAddr,
    path: &str,
    extra_headers: &str,
) -> (u16, String) {
    let mut request = UpgradeRequest::new(&addr.to_string(), path).offer_subprotocol(false);
    for line in extra_headers.split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').expect("header line `name: value`");
        request = request.header(name.trim(), value.trim());
    }
    let Response {
        head,
        text,
        mut rest,
    } = match handshake(&mut stream, &request).await {
        Ok(response) => response,
        Err(text) => return (0, text),
    };
    if head.status != 101 {
        let content_length = head.content_length().unwrap_or(0);
        while rest.len() < content_length {
            let n = tokio::time::timeout(WAIT, stream.read_buf(&mut rest))
                .await
                .expect("response body in time")
                .expect("read body");
            if n == 0 {
                break;
            }
        }
    }
    (
        head.status,
        format!("{text}{}", String::from_utf8_lossy(&rest)),
    )
}

impl RawClient {
    /// Connects and completes the handshake offering `tickwire.v1`.
    pub async fn connect(addr: SocketAddr) -> RawClient {
        Self::connect_with(addr, WEBSOCKET_PATH, &[]).await
    }

    /// Connects to the request target `path` with extra request `headers`
    /// (name, value) and completes the handshake offering `tickwire.v1`.
    pub async fn connect_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self::connect_on(stream, addr, path, headers).await
    }

    /// [`RawClient::connect_with`] on a given stream (plain or TLS,
    /// connected to `addr`).
    pub async fn connect_on(
        stream: impl RawStream + 'static,
        addr: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> RawClient {
        let request = headers.iter().fold(
            UpgradeRequest::new(&addr.to_string(), path),
            |r, (name, value)| r.header(name, value),
        );
        Self::upgrade(Box::new(stream), request, SubprotocolRule::Required).await
    }

    /// Connects to a plain WebSocket server (the broker's echo service) at
    /// `path`, offering no subprotocol.
    pub async fn connect_plain(addr: SocketAddr, path: &str) -> RawClient {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let request = UpgradeRequest::new(&addr.to_string(), path).offer_subprotocol(false);
        Self::upgrade(Box::new(stream), request, SubprotocolRule::AllowMissing).await
    }

    /// Connects to `path` offering `tickwire.v1` (unless `subprotocol` is
    /// false: the echo service) and the extensions `offer` (a
    /// `Sec-WebSocket-Extensions` value); returns the client, inflating
    /// compressed messages if the server accepted permessage-deflate, and
    /// the server's `Sec-WebSocket-Extensions` answer, if any.
    pub async fn connect_offering(
        addr: SocketAddr,
        path: &str,
        subprotocol: bool,
        offer: &str,
    ) -> (RawClient, Option<String>) {
        let mut stream: Box<dyn RawStream> =
            Box::new(TcpStream::connect(addr).await.expect("connect"));
        let request = UpgradeRequest::new(&addr.to_string(), path)
            .offer_subprotocol(subprotocol)
            .header("Sec-WebSocket-Extensions", offer);
        let Response { head, text, rest } = handshake(&mut stream, &request)
            .await
            .unwrap_or_else(|text| panic!("connection closed during the handshake: {text}"));
        let rule = if subprotocol {
            SubprotocolRule::Required
        } else {
            SubprotocolRule::AllowMissing
        };
        let agreed = head
            .verify_deflate(request.key(), rule)
            .unwrap_or_else(|e| panic!("handshake failed: {e}\n{text}"));
        let decoder = FrameDecoder::new(Role::Client, 64 << 20);
        let decoder = match agreed {
            Some(reset) => decoder.with_inflate(reset),
            None => decoder,
        };
        let client = RawClient {
            stream,
            buf: rest,
            decoder,
            next_id: 1,
        };
        (client, head.header("sec-websocket-extensions"))
    }

    /// [`RawClient::connect`] that says why it failed instead of failing
    /// the test: for clients that retry, as through a load balancer whose
    /// node may be going away.
    pub async fn try_connect(addr: SocketAddr) -> Result<RawClient, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect to {addr}: {e}"))?;
        let request = UpgradeRequest::new(&addr.to_string(), WEBSOCKET_PATH);
        Self::try_upgrade(Box::new(stream), request, SubprotocolRule::Required).await
    }

    /// Completes the handshake of `request` on `stream`, checking the
    /// response's subprotocol by `rule`.
    async fn upgrade(
        stream: Box<dyn RawStream>,
        request: UpgradeRequest,
        rule: SubprotocolRule,
    ) -> RawClient {
        Self::try_upgrade(stream, request, rule)
            .await
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// [`RawClient::upgrade`], or why it failed.
    async fn try_upgrade(
        mut stream: Box<dyn RawStream>,
        request: UpgradeRequest,
        rule: SubprotocolRule,
    ) -> Result<RawClient, String> {
        let Response { head, text, rest } = handshake(&mut stream, &request)
            .await
            .map_err(|text| format!("connection closed during the handshake: {text}"))?;
        head.verify(request.key(), rule)
            .map_err(|e| format!("handshake failed: {e}\n{text}"))?;
        Ok(RawClient {
            stream,
            buf: rest,
            decoder: FrameDecoder::new(Role::Client, 64 << 20),
            next_id: 1,
        })
    }

    /// A fresh request id.
    pub fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Sends raw bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Sends one masked frame with FIN set.
    pub async fn send_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        let mut out = Vec::with_capacity(payload.len() + 14);
        ws::write_client_frame(&mut out, opcode, payload, [0x37, 0xfa, 0x21, 0x3d]);
        self.send_raw(&out).await;
    }

    /// Sends `payload` compressed (permessage-deflate, RSV1 set) in one
    /// masked frame of `opcode` with FIN set.
    pub async fn send_compressed(&mut self, opcode: OpCode, payload: &[u8]) {
        let compressed = tickwire_protocol::deflate::compress(payload, 6);
        let mut out = Vec::with_capacity(compressed.len() + 14);
        ws::write_client_frame(&mut out, opcode, &compressed, [0x37, 0xfa, 0x21, 0x3d]);
        out[0] |= 0x40;
        self.send_raw(&out).await;
    }

    /// Sends one client message in a binary frame.
    pub async fn send(&mut self, message: &ClientMessage<'_>) {
        let mut body = Vec::new();
        message.encode(&mut body);
        self.send_frame(OpCode::Binary, &body).await;
    }

    /// Sends `PRESENCE` for `topic` (only counts when `counts_only`) with
    /// a fresh request id, which it returns; the answer is not awaited.
    pub async fn send_presence(&mut self, topic: &str, counts_only: bool) -> u64 {
        let id = self.next_id();
        self.send(&ClientMessage::Presence {
            id,
            topic,
            counts_only,
        })
        .await;
        id
    }

    /// Subscribes and waits for the `SUBSCRIBED` reply.
    pub async fn subscribe(&mut self, pattern: &str) -> SubscribedInfo {
        self.subscribe_with(pattern, SubscribeOptions::default())
            .await
    }

    /// Subscribes with options and returns the reply's info map.
    pub async fn subscribe_with(
        &mut self,
        pattern: &str,
        options: SubscribeOptions,
    ) -> SubscribedInfo {
        let id = self.next_id();
        self.send(&ClientMessage::Subscribe {
            id,
            pattern,
            options,
        })
        .await;
        match self.recv().await {
            Received::Subscribed(got, info) if got == id => info,
            other => panic!("subscribe {pattern}: expected SUBSCRIBED {id}, got {other:?}"),
        }
    }

    /// Publishes a retained message and waits for the acknowledgement.
    pub async fn publish_retained(&mut self, topic: &str, payload: &[u8]) -> u64 {
        self.publish_with_ack(topic, payload, true).await
    }

    /// Publishes without asking for an acknowledgement.
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) {
        self.send(&ClientMessage::Publish {
            id: None,
            topic,
            payload: Bytes::copy_from_slice(payload),
            retain: false,
        })
        .await;
    }

    /// Publishes and waits for the acknowledgement; returns the sequence.
    pub async fn publish_acked(&mut self, topic: &str, payload: &[u8]) -> u64 {
        self.publish_with_ack(topic, payload, false).await
    }

    async fn publish_with_ack(&mut self, topic: &str, payload: &[u8], retain: bool) -> u64 {
        let id = self.next_id();
        self.send(&ClientMessage::Publish {
            id: Some(id),
            topic,
            payload: Bytes::copy_from_slice(payload),
            retain,
        })
        .await;
        match self.recv().await {
            Received::Published { id: got, seq } if got == id => seq,
            other => panic!("expected PUBLISHED {id}, got {other:?}"),
        }
    }

    /// Expects an `ERROR forbidden` (13) for request `id`; returns its text.
    pub async fn expect_forbidden(&mut self, id: Option<u64>) -> String {
        match self.recv().await {
            Received::Error {
                id: got,
                code: ErrorCode::Forbidden,
                message,
            } if got == id => message,
            other => panic!("expected forbidden for {id:?}, got {other:?}"),
        }
    }

    /// Subscribes to `pattern` and expects `forbidden`; returns its text.
    pub async fn subscribe_forbidden(&mut self, pattern: &str) -> String {
        let id = self.next_id();
        self.send(&ClientMessage::Subscribe {
            id,
            pattern,
            options: SubscribeOptions::default(),
        })
        .await;
        self.expect_forbidden(Some(id)).await
    }

    /// Publishes on `topic` (acknowledged or fire-and-forget) and expects
    /// `forbidden`; returns its text.
    pub async fn publish_forbidden(&mut self, topic: &str, acked: bool) -> String {
        let id = acked.then(|| self.next_id());
        self.send(&ClientMessage::Publish {
            id,
            topic,
            payload: Bytes::from_static(b"x"),
            retain: false,
        })
        .await;
        self.expect_forbidden(id).await
    }

    /// Publishes on `topic` with an acknowledgement and expects the refusal
    /// `ERROR` with `code`; returns its text.
    pub async fn publish_refused(&mut self, topic: &str, code: ErrorCode) -> String {
        let id = self.next_id();
        self.send(&ClientMessage::Publish {
            id: Some(id),
            topic,
            payload: Bytes::from_static(b"refused"),
            retain: false,
        })
        .await;
        match self.recv().await {
            Received::Error {
                id: got,
                code: got_code,
                message,
            } if got == Some(id) && got_code == code => message,
            other => panic!("expected {code:?} for {id}, got {other:?}"),
        }
    }

    /// Receives the next item, answering nothing; fails after [`WAIT`].
    pub async fn recv(&mut self) -> Received {
        tokio::time::timeout(WAIT, self.recv_unbounded())
            .await
            .expect("a frame from the broker in time")
    }

    /// Receives the next item, waiting as long as it takes.
    pub async fn recv_unbounded(&mut self) -> Received {
        self.next_incoming()
            .await
            .map_or(Received::Eof, to_received)
    }

    /// Receives the next frame or message as decoded, undecoded as tickwire
    /// messages (for the echo service); `None` at EOF.
    pub async fn recv_incoming(&mut self) -> Option<Incoming> {
        tokio::time::timeout(WAIT, self.next_incoming())
            .await
            .expect("a frame from the broker in time")
    }

    /// The next decoded item, waiting as long as it takes; `None` at EOF.
    async fn next_incoming(&mut self) -> Option<Incoming> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(item)) => return Some(item),
                Ok(None) => {}
                Err(e) => panic!("broker sent an invalid frame: {e}"),
            }
            self.buf.reserve(64 * 1024);
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Receives until a close frame or EOF, skipping everything else.
    pub async fn recv_close(&mut self) -> Received {
        loop {
            if let item @ (Received::Close { .. } | Received::Eof) = self.recv().await {
                return item;
            }
        }
    }
}

fn to_received(item: Incoming) -> Received {
    match item {
        Incoming::Message(MessageKind::Text, _) => panic!("the broker sent a text message"),
        Incoming::Message(MessageKind::Binary, frame) => {
            match ServerMessage::decode(&frame).expect("valid server message") {
                ServerMessage::Message(d) => Received::Message {
                    topic: d.topic.to_owned(),
                    epoch: d.epoch,
                    seq: d.seq,
                    time_us: d.time_us,
                    payload: d.payload,
                },
                ServerMessage::Subscribed { id, info } => Received::Subscribed(id, info),
                ServerMessage::Unsubscribed { id } => Received::Unsubscribed(id),
                ServerMessage::Published { id, seq } => Received::Published { id, seq },
                ServerMessage::Pong { id } => Received::Pong(id),
                ServerMessage::Error { id, code, message } => Received::Error {
                    id,
                    code,
                    message: message.to_owned(),
                },
                ServerMessage::Refreshed { id, expires } => Received::Refreshed { id, expires },
                ServerMessage::PresenceInfo { id, info } => Received::Presence {
                    id,
                    clients: info.clients,
                    users: info.users,
                    entries: info
                        .entries
                        .map(|entries| entries.iter().map(SeenEntry::from_wire).collect()),
                },
                ServerMessage::Join { topic, entry } => Received::Join {
                    topic: topic.to_owned(),
                    entry: SeenEntry::from_wire(&entry),
                },
                ServerMessage::Leave { topic, entry } => Received::Leave {
                    topic: topic.to_owned(),
                    entry: SeenEntry::from_wire(&entry),
                },
            }
        }
        Incoming::Ping(_) => Received::Ping,
        Incoming::Pong(_) => Received::Pong(0),
        Incoming::Close(close) => Received::Close {
            code: close.code,
            reason: close.reason,
        },
    }
}

/// Runs `probe` every 20 ms until it returns `Ok`, and returns that value;
/// fails with the last `Err` text after [`WAIT`].
pub async fn poll_until<T>(probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    poll_within(WAIT, probe).await
}

/// [`poll_until`] with another limit than [`WAIT`], for what takes longer
/// by design (a failure found by a timeout).
pub async fn poll_within<T>(
    limit: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(why) => assert!(
                tokio::time::Instant::now() < deadline,
                "not within {limit:?}: {why}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads everything until the broker closes the connection, as text;
/// fails after [`WAIT`].
pub async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("the broker answers and closes in time")
        .expect("read response");
    String::from_utf8_lossy(&response).into_owned()
}

/// Sends one HTTP/1.1 request and returns (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    http_on(stream, addr, method, path, body).await
}

/// Sends one HTTP/1.1 request on `stream` (plain or TLS, connected to
/// `addr`) and returns (status, body).
pub async fn http_on(
    stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let (status, _, body) = http_on_with(stream, addr, method, path, "", body).await;
    (status, body)
}

/// Sends one HTTP/1.1 request with extra header lines (each ending in
/// `\r\n`) and returns (status, response head, body).
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra_headers: &str,
    body: &[u8],
) -> (u16, String, String) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    http_on_with(stream, addr, method, path, extra_headers, body).await
}

/// [`http_with`] on a given stream (plain or TLS, connected to `addr`).
pub async fn http_on_with(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra_headers: &str,
    body: &[u8],
) -> (u16, String, String) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{extra_headers}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("send head");
    stream.write_all(body).await.expect("send body");
    let mut response = Vec::new();
    let read = tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("http response in time");
    // A TLS peer may close without close_notify once it has answered.
    match read {
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        other => {
            other.expect("read response");
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_owned(), body.to_owned())
}

/// Reads one metric from `/metrics`, summing every label set.
pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (status, body) = http(addr, "GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    metric_in(&body, name)
}

/// One metric's value in a `/metrics` text, summing every label set (0 if
/// absent).
pub fn metric_in(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let series_name = series.split('{').next()?;
            (series_name == name).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Reads one labelled series from `/metrics`, e.g. `("tickwire_closes_total", "code", "1009")`.
pub async fn metric_with_label(addr: SocketAddr, name: &str, label: &str, value: &str) -> f64 {
    let (_, body) = http(addr, "GET", "/metrics", b"").await;
    let series = format!("{name}{{{label}=\"{value}\"}} ");
    body.lines()
        .find_map(|line| {
            line.strip_prefix(series.as_str())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0.0)
}

/// The address in a line that `tickwire serve` prints on standard output,
/// `tickwire listening on ADDR (...)`, `tickwire metrics on ADDR (...)` or
/// `tickwire echo on ADDR (...)`.
pub fn banner_addr(line: &str) -> SocketAddr {
    line.split_whitespace()
        .nth(3)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in banner {line:?}"))
}

/// Reads the next banner line of a `tickwire serve` from `lines` (its
/// standard output) within [`WAIT`]; returns the address and the line.
pub async fn read_banner<R>(lines: &mut tokio::io::Lines<R>) -> (SocketAddr, String)
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("banner in time")
        .expect("read banner")
        .expect("a banner line");
    (banner_addr(&line), line)
}

/// Runs `command` to completion within `limit` (the child is killed when
/// it takes longer, and the test fails) and returns its output.
pub async fn output_within(
    command: &mut tokio::process::Command,
    limit: Duration,
) -> std::process::Output {
    let child = command.spawn().expect("start the command");
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .expect("the command finishes in time")
        .expect("the command's output")
}

/// Checks that a finished command exited 0 (showing its output if not) and
/// returns its standard output.
pub fn assert_success(output: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "the command failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `tickwire ARGS` (this build's binary) with no input, piped standard
/// output and error, killed when dropped, and without any inherited
/// `TICKWIRE_*` variable (so the caller's environment cannot change the
/// configuration under test).
pub fn tickwire_command(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(tickwire_binary());
    command
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("TICKWIRE_")) {
        command.env_remove(key);
    }
    command
}

/// Sends the signal `name` (`-TERM`, `-HUP`, `-INT`, ...) to `child` with
/// kill(1), and checks it was delivered.
pub fn signal(child: &tokio::process::Child, name: &str) {
    let pid = child.id().expect("the process is running").to_string();
    let status = std::process::Command::new("kill")
        .args([name, &pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {name} {pid}: {status}");
}

/// Prefixes of the environment variables cargo sets for a running test
/// (its package, crate and binaries).
const CARGO_TEST_ENV: &[&str] = &[
    "CARGO_PKG_",
    "CARGO_MANIFEST_",
    "CARGO_CRATE_",
    "CARGO_BIN_",
    "CARGO_PRIMARY_PACKAGE",
    "CARGO_TARGET_TMPDIR",
    "CARGO_RUSTC_CURRENT_DIR",
    "OUT_DIR",
];

/// Path of the `tickwire` binary of this build, brought up to date once per
/// test process (`cargo test` does not rebuild another package's binary, so
/// a bare `cargo test -p tickwire-e2e` would otherwise run a stale one; when
/// it is fresh, the build is a no-op).
pub fn tickwire_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test> → target/<profile>/tickwire
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("target profile directory");
            let binary = profile_dir.join("tickwire");
            // The same command as the test script's build step (features
            // unified over the workspace), so that after it this is a no-op.
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut build = std::process::Command::new(cargo);
            build.args(["build", "--workspace", "--bins"]);
            // What cargo sets for a running test (CARGO_PKG_NAME, ...) must
            // not reach the build: some build scripts rerun when it changes.
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if CARGO_TEST_ENV.iter().any(|p| name.starts_with(p)) {
                    build.env_remove(&*name);
                }
            }
            if profile_dir.file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(
                status.success(),
                "cargo build of the tickwire binary failed"
            );
            binary
        })
        .clone()
}

/// A TCP relay between clients and a broker, on 127.0.0.1:0, that can cut
/// every connection on demand without stopping the broker: to test what a
/// client does when its network fails.
///
/// While [`Relay::cut`] is in effect, new connections are accepted and
/// closed at once, so a reconnecting client keeps failing until
/// [`Relay::restore`].
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// Bumped by every cut; connections end when it changes.
    cuts: tokio::sync::watch::Sender<u64>,
    /// Whether the relay refuses to forward.
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Connections forwarded so far.
    forwarded: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Starts relaying to `target`.
    pub async fn start(target: SocketAddr) -> Relay {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        let (cuts, _) = tokio::sync::watch::channel(0u64);
        let down = Arc::new(AtomicBool::new(false));
        let forwarded = Arc::new(AtomicU64::new(0));
        let task = {
            let cuts = cuts.clone();
            let down = down.clone();
            let forwarded = forwarded.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    if down.load(Ordering::Acquire) {
                        drop(client);
                        continue;
                    }
                    let mut cut = cuts.subscribe();
                    forwarded.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Relay {
            addr,
            cuts,
            down,
            forwarded,
            task,
        }
    }

    /// The WebSocket URL of the broker through this relay.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Closes every relayed connection and refuses new ones until
    /// [`Relay::restore`].
    pub fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::Release);
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::Release);
    }

    /// How many connections were forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.cuts.send_modify(|n| *n += 1);
    }
}

/// Helpers for tests that drive the broker through the Rust SDK.
pub mod sdk {
    use std::time::Duration;

    use tickwire_client::{
        Client, ConnectionState, Message, OfflinePolicy, ReconnectPolicy, Subscription,
    };

    use crate::WAIT;

    /// A client that reconnects quickly, with the default offline policy.
    pub async fn client(url: &str) -> Client {
        client_with(url, OfflinePolicy::default()).await
    }

    /// A client that reconnects quickly, with the given offline policy.
    pub async fn client_with(url: &str, offline: OfflinePolicy) -> Client {
        Client::builder(url)
            .reconnect(
                ReconnectPolicy::default()
                    .with_initial(Duration::from_millis(20))
                    .with_max(Duration::from_millis(200)),
            )
            .offline_policy(offline)
            .connect()
            .await
            .expect("connect to the test broker")
    }

    /// The next message of `sub`; fails after [`WAIT`].
    pub async fn recv(sub: &mut Subscription) -> Message {
        tokio::time::timeout(WAIT, sub.recv())
            .await
            .unwrap_or_else(|_| panic!("no message on {} in time", sub.pattern()))
            .expect("subscription still open")
    }

    /// Waits until the client's connection state satisfies `want`.
    pub async fn wait_state(client: &Client, what: &str, want: impl Fn(&ConnectionState) -> bool) {
        let mut state = client.state();
        tokio::time::timeout(WAIT, state.wait_for(|s| want(s)))
            .await
            .unwrap_or_else(|_| panic!("client not {what} in time"))
            .expect("client state is watched");
    }
}
