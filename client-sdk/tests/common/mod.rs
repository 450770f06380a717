//! A tiny fake tickwire broker for the SDK's tests: a TCP listener on
//! loopback, a hand-written HTTP upgrade response and frames through
//! `tickwire_protocol`. Every wait is bounded by [`TIMEOUT`], so a bug fails
//! a test instead of hanging the suite.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use tickwire_client::{Client, ClientBuilder, ConnectionState};
use tickwire_protocol::handshake::accept_key;
use tickwire_protocol::message::Position;
use tickwire_protocol::ws::{self, FrameDecoder, Incoming, MessageKind, OpCode, Role};
use tickwire_protocol::{ClientMessage, ServerMessage};

/// Upper bound for any single wait in a test.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The epoch of every topic of the fake broker.
pub const FAKE_EPOCH: u64 = 0x5eed;

/// Awaits `fut`, panicking with `what` if it takes longer than [`TIMEOUT`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Any byte stream the fake broker can speak over (plain TCP or TLS).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The request head the client sent.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub request_line: String,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How the fake answers the upgrade request.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A correct 101 echoing `tickwire.v1`.
    Upgrade,
    /// A 101 with the given subprotocol header value (or none).
    UpgradeWithProtocol(Option<&'static str>),
    /// A 101 whose Sec-WebSocket-Accept is wrong.
    BadAccept,
    /// Another status with a plain-text body.
    Status(u16, &'static str, &'static str),
}

pub struct FakeBroker {
    pub listener: TcpListener,
    pub addr: SocketAddr,
}

impl FakeBroker {
    pub async fn bind() -> Self {
        Self::bind_addr("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0")
    }

    /// A fake broker whose connections have a tiny receive window, so that
    /// a client's writes stall as soon as the fake stops reading.
    pub async fn bind_small_window() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        socket
            .bind("127.0.0.1:0".parse().expect("address"))
            .expect("bind 127.0.0.1:0");
        let listener = socket.listen(16).expect("listen");
        let addr = listener.local_addr().expect("local address");
        FakeBroker { listener, addr }
    }

    pub async fn bind_addr(addr: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(FakeBroker { listener, addr })
    }

    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// Accepts one TCP connection.
    pub async fn accept_tcp(&self) -> TcpStream {
        let (stream, _) = within("a TCP connection from the client", self.listener.accept())
            .await
            .expect("accept");
        stream
    }

    /// Accepts a connection and completes a correct handshake.
    pub async fn accept(&self) -> FakeConn {
        self.accept_with(Answer::Upgrade).await.0
    }

    /// Accepts a connection and answers the upgrade as told.
    pub async fn accept_with(&self, answer: Answer) -> (FakeConn, RequestHead) {
        let stream = self.accept_tcp().await;
        answer_upgrade(Box::new(stream), answer).await
    }
}

/// Reads the request head from `io` and answers it.
pub async fn answer_upgrade(mut io: Box<dyn Io>, answer: Answer) -> (FakeConn, RequestHead) {
    let mut buf = BytesMut::new();
    let head_len = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        let n = within("the upgrade request", io.read_buf(&mut buf))
            .await
            .expect("read request");
        assert!(n > 0, "client closed before sending the upgrade request");
    };
    let text = String::from_utf8(buf[..head_len].to_vec()).expect("request is UTF-8");
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let request_line = lines.next().expect("request line").to_owned();
    let headers = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.trim().to_owned(), v.trim().to_owned())
        })
        .collect();
    let head = RequestHead {
        request_line,
        headers,
    };
    let key = head.header("sec-websocket-key").expect("key").to_owned();
    let accept = accept_key(&key);
    let response = match &answer {
        Answer::Upgrade => upgrade_response(&accept, Some("tickwire.v1")),
        Answer::UpgradeWithProtocol(p) => upgrade_response(&accept, *p),
        Answer::BadAccept => upgrade_response(&accept_key("not the key"), Some("tickwire.v1")),
        Answer::Status(code, reason, body) => format!(
            "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    };
    io.write_all(response.as_bytes())
        .await
        .expect("write response");
    io.flush().await.expect("flush response");
    (FakeConn::new(io, buf.split_off(head_len)), head)
}

fn upgrade_response(accept: &str, protocol: Option<&str>) -> String {
    let mut r = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(p) = protocol {
        r.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
    }
    r.push_str("\r\n");
    r
}

/// A client request, decoded and owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Req {
    Subscribe {
        id: u64,
        pattern: String,
    },
    Unsubscribe {
        id: u64,
        pattern: String,
    },
    Publish {
        id: Option<u64>,
        topic: String,
        payload: Bytes,
    },
    Ping {
        id: u64,
    },
    /// The client's close frame (code).
    Close(Option<u16>),
}

/// The broker side of one WebSocket connection.
pub struct FakeConn {
    io: Box<dyn Io>,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl FakeConn {
    fn new(io: Box<dyn Io>, leftover: BytesMut) -> Self {
        FakeConn {
            io,
            buf: leftover,
            decoder: FrameDecoder::new(Role::Server, 16 << 20),
        }
    }

    /// The next frame from the client (pings and pongs included); `None` on
    /// EOF or a reset.
    pub async fn frame(&mut self) -> Option<Incoming> {
        loop {
            if let Some(item) = self
                .decoder
                .decode(&mut self.buf)
                .expect("client frames are valid")
            {
                return Some(item);
            }
            self.buf.reserve(4096);
            match within("a frame from the client", self.io.read_buf(&mut self.buf)).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next request; WebSocket pings are answered, pongs skipped.
    pub async fn recv(&mut self) -> Req {
        self.try_recv().await.expect("client closed the connection")
    }

    /// As [`FakeConn::recv`], `None` on EOF.
    pub async fn try_recv(&mut self) -> Option<Req> {
        loop {
            match self.frame().await? {
                Incoming::Ping(p) => self.send_raw(&ws::server_frame(OpCode::Pong, &p)).await,
                Incoming::Pong(_) => {}
                Incoming::Close(c) => return Some(Req::Close(c.code)),
                Incoming::Message(MessageKind::Text, _) => panic!("the SDK sent a text message"),
                Incoming::Message(MessageKind::Binary, frame) => {
                    let msg = ClientMessage::decode(&frame).expect("client messages are valid");
                    return Some(match msg {
                        ClientMessage::Subscribe { id, pattern, .. } => Req::Subscribe {
                            id,
                            pattern: pattern.to_owned(),
                        },
                        ClientMessage::Unsubscribe { id, pattern } => Req::Unsubscribe {
                            id,
                            pattern: pattern.to_owned(),
                        },
                        ClientMessage::Publish {
                            id, topic, payload, ..
                        } => Req::Publish {
                            id,
                            topic: topic.to_owned(),
                            payload,
                        },
                        ClientMessage::Ping { id } => Req::Ping { id },
                        ClientMessage::Refresh { .. }
                        | ClientMessage::Auth { .. }
                        | ClientMessage::Presence { .. } => {
                            panic!("the SDK sends no REFRESH, AUTH or PRESENCE here")
                        }
                    });
                }
            }
        }
    }

    /// Splits into the decoding read side and the raw write half.
    pub fn split(self) -> (FakeReader, tokio::io::WriteHalf<Box<dyn Io>>) {
        let (r, w) = tokio::io::split(self.io);
        (
            FakeReader {
                io: r,
                buf: self.buf,
                decoder: self.decoder,
            },
            w,
        )
    }

    pub async fn send(&mut self, msg: ServerMessage<'_>) {
        self.send_raw(&msg.to_frame()).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        // The client may be gone in some tests; ignore write errors.
        let _ = within("writing to the client", async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await;
    }

    /// Expects a SUBSCRIBE for `pattern` and confirms it; returns its id.
    pub async fn expect_subscribe(&mut self, pattern: &str) -> u64 {
        match self.recv().await {
            Req::Subscribe { id, pattern: p } if p == pattern => {
                self.send(ServerMessage::Subscribed {
                    id,
                    info: Default::default(),
                })
                .await;
                id
            }
            other => panic!("expected SUBSCRIBE {pattern}, got {other:?}"),
        }
    }

    /// Answers the next request, which must be a PING.
    pub async fn answer_ping(&mut self) {
        match self.recv().await {
            Req::Ping { id } => self.send(ServerMessage::Pong { id }).await,
            other => panic!("expected PING, got {other:?}"),
        }
    }

    /// Sends a delivery in epoch [`FAKE_EPOCH`].
    pub async fn deliver(&mut self, topic: &str, seq: u64, payload: &[u8]) {
        self.deliver_at(topic, seq, 1_700_000_000_000_000 + seq, payload)
            .await;
    }

    /// Sends a delivery in epoch [`FAKE_EPOCH`] stamped `time_us` by the
    /// broker's clock.
    pub async fn deliver_at(&mut self, topic: &str, seq: u64, time_us: u64, payload: &[u8]) {
        let at = Position {
            epoch: FAKE_EPOCH,
            seq,
        };
        self.send_raw(&tickwire_protocol::message::encode_delivery_frame(
            topic, at, time_us, payload,
        ))
        .await;
    }
}

/// Connects `builder` to `broker`, completing a correct handshake.
pub async fn connect(broker: &FakeBroker, builder: ClientBuilder) -> (Client, FakeConn) {
    let (client, conn) = within("connect", async {
        tokio::join!(builder.connect(), broker.accept())
    })
    .await;
    (client.expect("client connects"), conn)
}

/// A builder with fast reconnects, for tests.
pub fn fast(broker: &FakeBroker) -> ClientBuilder {
    Client::builder(broker.url()).reconnect(
        tickwire_client::ReconnectPolicy::default()
            .with_initial(Duration::from_millis(5))
            .with_max(Duration::from_millis(20)),
    )
}

/// A ping round trip: after it, every frame the fake sent before has been
/// processed by the client.
pub async fn barrier(client: &Client, conn: &mut FakeConn) {
    let (rtt, ()) = within("ping barrier", async {
        tokio::join!(client.ping(), conn.answer_ping())
    })
    .await;
    rtt.expect("ping");
}

/// Waits until the state satisfies `f`.
pub async fn wait_state(client: &Client, what: &str, f: impl FnMut(&ConnectionState) -> bool) {
    let mut rx = client.state();
    within(what, rx.wait_for(f))
        .await
        .expect("state channel open");
}

/// The read side of a split [`FakeConn`].
pub struct FakeReader {
    io: tokio::io::ReadHalf<Box<dyn Io>>,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl FakeReader {
    /// The next data message from the client, skipping control frames.
    pub async fn message(&mut self) -> Bytes {
        loop {
            if let Some(item) = self
                .decoder
                .decode(&mut self.buf)
                .expect("client frames are valid")
            {
                if let Incoming::Message(MessageKind::Binary, frame) = item {
                    return frame;
                }
                continue;
            }
            self.buf.reserve(4096);
            let n = within("a message from the client", self.io.read_buf(&mut self.buf))
                .await
                .expect("read");
            assert!(n > 0, "client closed the connection");
        }
    }
}
