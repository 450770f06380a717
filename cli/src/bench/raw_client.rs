//! A minimal WebSocket client for load generation: the HTTP upgrade through
//! `tickwire_protocol::handshake` (offering permessage-deflate with
//! `--compression`, and then insisting on it), subscribe and publish frames
//! built once and reused.
//!
//! Nothing here is on the per-message receive path except through
//! [`super::walker`]; this module sets connections up and builds the
//! publisher's frames.
//!
//! Client frames must be masked (RFC 6455). The benchmark uses one fixed
//! masking key, [`MASK_KEY`] (the RFC's own example key), for every frame:
//! masking exists to protect intermediaries from cache poisoning by browser
//! scripts, which does not apply to a load generator talking to a broker on
//! the same machine, and a fixed key lets the publisher pre-mask each frame
//! once and patch only the 8 timestamp bytes per message.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tickwire_protocol::handshake::{HandshakeError, ResponseHead, SubprotocolRule, UpgradeRequest};
use tickwire_protocol::ws::{
    FrameDecoder, Incoming, MessageKind, OpCode, Role, write_client_frame,
};
use tickwire_protocol::{ClientMessage, ServerMessage, SubscribeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::payload::PayloadKind;

/// The masking key of every frame the benchmark sends (RFC 6455, section
/// 5.7's example key `0x37fa213d`).
pub const MASK_KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Longest HTTP response head accepted during the upgrade.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Where the broker is, parsed from a `ws://host:port/path` URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// The URL as given.
    pub url: String,
    /// The resolved socket address.
    pub addr: SocketAddr,
    /// The `Host` header value.
    pub host: String,
    /// The request path (with query, if any).
    pub path: String,
}

impl Target {
    /// Parses and resolves `url` (`ws://` only; the benchmark does not
    /// speak TLS).
    pub async fn resolve(url: &str) -> Result<Target, String> {
        let rest = if let Some(rest) = url.strip_prefix("ws://") {
            rest
        } else if url.starts_with("wss://") {
            return Err(format!(
                "`{url}`: wss:// is not supported by the benchmark (it measures the broker, not TLS); use ws://"
            ));
        } else {
            return Err(format!(
                "`{url}` is not a WebSocket URL; write e.g. ws://127.0.0.1:8080/ws"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/ws"),
        };
        if authority.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        let with_port = if authority.rsplit_once(':').is_some_and(|(_, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !authority.ends_with(']')
        }) {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| format!("cannot resolve `{authority}`: {e}"))?
            .next()
            .ok_or_else(|| format!("`{authority}` resolves to no address"))?;
        Ok(Target {
            url: url.to_owned(),
            addr,
            host: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The local source address for connection number `n` when connections
    /// are spread over `spread` loopback addresses (127.0.0.1 … 127.0.0.N),
    /// which multiplies the ephemeral ports available. `None` when the
    /// target is not IPv4 loopback or `spread` is at most 1.
    pub fn source_for(&self, n: usize, spread: u8) -> Option<IpAddr> {
        match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_loopback() && spread > 1 => {
                let last = 1 + (n % usize::from(spread)) as u8;
                Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
            }
            _ => None,
        }
    }
}

/// Why a connection could not be set up.
#[derive(Debug)]
pub enum ConnectError {
    /// Nothing listens at the address.
    Refused(SocketAddr),
    /// Setup took longer than allowed.
    Timeout(SocketAddr),
    /// The broker answered the upgrade with something other than 101.
    Handshake {
        /// HTTP status (0 if none could be read).
        status: u16,
        /// The response text.
        response: String,
    },
    /// The broker refused the subscription.
    Subscribe(String),
    /// The connection closed during setup.
    Closed(String),
    /// permessage-deflate was asked for (`--compression`) and the broker
    /// answered without it.
    DeflateDeclined(SocketAddr),
    /// Another I/O error.
    Io(SocketAddr, io::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectError::Refused(addr) => write!(
                f,
                "connection refused: is a broker listening on {addr}? start one with `tickwire serve --listen {addr}`"
            ),
            ConnectError::Timeout(addr) => write!(
                f,
                "connecting to {addr} timed out (TCP connect, WebSocket upgrade and subscribe must finish within the setup timeout)"
            ),
            ConnectError::Handshake { status, response } => {
                let hint = match status {
                    401 | 403 => " (check --token)",
                    503 => " (the broker is at --max-connections or shutting down)",
                    _ => "",
                };
                write!(
                    f,
                    "WebSocket upgrade refused with HTTP {status}{hint}: {}",
                    response.trim()
                )
            }
            ConnectError::Subscribe(msg) => write!(f, "subscribe refused: {msg}"),
            ConnectError::Closed(msg) => write!(f, "connection closed during setup: {msg}"),
            ConnectError::DeflateDeclined(addr) => write!(
                f,
                "the broker at {addr} declined permessage-deflate (--compression): start it with `tickwire serve --compression on`"
            ),
            ConnectError::Io(addr, e) => {
                let hint = match e.raw_os_error() {
                    Some(libc::EMFILE) | Some(libc::ENFILE) => {
                        " (out of file descriptors: raise `ulimit -n`)"
                    }
                    Some(libc::EADDRNOTAVAIL) => {
                        " (out of ephemeral ports: raise --source-addrs or wait for TIME_WAIT sockets to expire)"
                    }
                    _ => "",
                };
                write!(f, "connection to {addr} failed: {e}{hint}")
            }
        }
    }
}

/// An open WebSocket connection and the bytes already received after the
/// last setup reply.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub stream: TcpStream,
    /// Received bytes not yet processed.
    pub leftover: Vec<u8>,
    /// permessage-deflate was agreed: the broker may send compressed
    /// (RSV1) messages, each compressed on its own
    /// (`server_no_context_takeover`).
    pub deflate: bool,
}

/// Opens a TCP connection (from `source`, if given) and performs the
/// WebSocket upgrade, offering `tickwire.v1`, with a token
/// `Authorization: Bearer`, and with `deflate` permessage-deflate
/// (`client_no_context_takeover`; the broker must agree, else
/// [`ConnectError::DeflateDeclined`]).
pub async fn open(
    target: &Target,
    source: Option<IpAddr>,
    token: Option<&str>,
    deflate: bool,
    limit: Duration,
) -> Result<Conn, ConnectError> {
    let addr = target.addr;
    tokio::time::timeout(limit, async {
        let stream = connect_tcp(addr, source).await?;
        handshake(stream, target, token, deflate).await
    })
    .await
    .map_err(|_| ConnectError::Timeout(addr))?
}

/// Opens a TCP connection to `addr` (from `source`, if given) with
/// `TCP_NODELAY`; a refusal is [`ConnectError::Refused`].
pub async fn connect_tcp(
    addr: SocketAddr,
    source: Option<IpAddr>,
) -> Result<TcpStream, ConnectError> {
    let io_err = |e: io::Error| {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            ConnectError::Refused(addr)
        } else {
            ConnectError::Io(addr, e)
        }
    };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(io_err)?;
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0)).map_err(io_err)?;
    }
    let stream = socket.connect(addr).await.map_err(io_err)?;
    stream.set_nodelay(true).map_err(io_err)?;
    Ok(stream)
}

async fn handshake(
    mut stream: TcpStream,
    target: &Target,
    token: Option<&str>,
    deflate: bool,
) -> Result<Conn, ConnectError> {
    let addr = target.addr;
    let mut request = UpgradeRequest::new(&target.host, &target.path).offer_deflate(deflate);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    stream
        .write_all(&request.to_bytes())
        .await
        .map_err(|e| ConnectError::Io(addr, e))?;
    let mut buf = Vec::with_capacity(1024);
    let head = loop {
        let parsed = ResponseHead::parse(&buf).map_err(|e| ConnectError::Handshake {
            status: 0,
            response: format!("{e}: {}", String::from_utf8_lossy(&buf)),
        })?;
        if let Some(head) = parsed {
            break head;
        }
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(ConnectError::Handshake {
                status: 0,
                response: "response head too long".into(),
            });
        }
        let n = stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| ConnectError::Io(addr, e))?;
        if n == 0 {
            return Err(ConnectError::Handshake {
                status: 0,
                response: format!(
                    "the connection closed before an HTTP response: {}",
                    String::from_utf8_lossy(&buf)
                ),
            });
        }
    };
    let head_text = String::from_utf8_lossy(&buf[..head.len()])
        .trim()
        .to_owned();
    let mut rest = buf.split_off(head.len());
    if head.status != 101 {
        // Give a short error body a moment to arrive, for the message.
        let _ = tokio::time::timeout(Duration::from_millis(200), stream.read_buf(&mut rest)).await;
        let response = format!("{head_text}\n{}", String::from_utf8_lossy(&rest));
        return Err(ConnectError::Handshake {
            status: head.status,
            response,
        });
    }
    let refused = |e: HandshakeError| ConnectError::Handshake {
        status: head.status,
        response: format!("{head_text}\n({e})"),
    };
    if deflate {
        // Agreed with or without `server_no_context_takeover`: the bench
        // inflates every message on its own either way, and a tickwire
        // broker always resets its context.
        head.verify_deflate(request.key(), SubprotocolRule::Required)
            .map_err(refused)?
            .ok_or(ConnectError::DeflateDeclined(addr))?;
    } else {
        head.verify(request.key(), SubprotocolRule::Required)
            .map_err(refused)?;
    }
    Ok(Conn {
        stream,
        leftover: rest,
        deflate,
    })
}

/// Builds one masked client frame holding `message`.
pub fn client_frame(message: &ClientMessage<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    message.encode(&mut body);
    let mut out = Vec::with_capacity(body.len() + 14);
    write_client_frame(&mut out, OpCode::Binary, &body, MASK_KEY);
    out
}

/// Subscribes `conn` to `pattern` and waits for `SUBSCRIBED`.
pub async fn subscribe(conn: &mut Conn, id: u64, pattern: &str) -> Result<(), ConnectError> {
    let addr = conn
        .stream
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let frame = client_frame(&ClientMessage::Subscribe {
        id,
        pattern,
        options: SubscribeOptions::default(),
    });
    conn.stream
        .write_all(&frame)
        .await
        .map_err(|e| ConnectError::Io(addr, e))?;
    let mut decoder = FrameDecoder::new(Role::Client, 1 << 20);
    if conn.deflate {
        decoder = decoder.with_inflate(true);
    }
    let mut buf = BytesMut::from(&conn.leftover[..]);
    loop {
        loop {
            let item = decoder
                .decode(&mut buf)
                .map_err(|e| ConnectError::Closed(format!("framing error: {e}")))?;
            let Some(item) = item else { break };
            match item {
                Incoming::Message(MessageKind::Text, _) => {
                    return Err(ConnectError::Closed("text message from the broker".into()));
                }
                Incoming::Message(MessageKind::Binary, body) => match reply_to(&body, id)? {
                    true => {
                        conn.leftover = buf.to_vec();
                        return Ok(());
                    }
                    false => continue,
                },
                Incoming::Ping(payload) => {
                    let mut pong = Vec::new();
                    write_client_frame(&mut pong, OpCode::Pong, &payload, MASK_KEY);
                    conn.stream
                        .write_all(&pong)
                        .await
                        .map_err(|e| ConnectError::Io(addr, e))?;
                }
                Incoming::Pong(_) => {}
                Incoming::Close(close) => {
                    return Err(ConnectError::Closed(format!(
                        "close code {:?} {}",
                        close.code, close.reason
                    )));
                }
            }
        }
        buf.reserve(4096);
        let n = conn
            .stream
            .read_buf(&mut buf)
            .await
            .map_err(|e| ConnectError::Io(addr, e))?;
        if n == 0 {
            return Err(ConnectError::Closed("EOF before SUBSCRIBED".into()));
        }
    }
}

/// Whether `body` is the `SUBSCRIBED` reply to request `id`; an `ERROR`
/// reply to it is an error, anything else is skipped.
fn reply_to(body: &Bytes, id: u64) -> Result<bool, ConnectError> {
    match ServerMessage::decode(body) {
        Ok(ServerMessage::Subscribed { id: got, .. }) => Ok(got == id),
        Ok(ServerMessage::Error {
            id: got,
            code,
            message,
        }) if got == Some(id) || got.is_none() => Err(ConnectError::Subscribe(format!(
            "{}: {message}",
            code.name()
        ))),
        Ok(_) => Ok(false),
        Err(e) => Err(ConnectError::Closed(format!(
            "undecodable reply from the broker: {e}"
        ))),
    }
}

/// A masked pong frame answering a ping with `payload`.
pub fn pong_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 6);
    write_client_frame(&mut out, OpCode::Pong, payload, MASK_KEY);
    out
}

/// A masked close frame with code 1000.
pub fn close_frame() -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    write_client_frame(&mut out, OpCode::Close, &1000u16.to_be_bytes(), MASK_KEY);
    out
}

/// A pre-encoded, pre-masked `PUBLISH` frame (`[3, nil, topic, payload]`)
/// whose first 8 payload bytes are patched with the send time per message.
#[derive(Debug, Clone)]
pub struct PublishTemplate {
    frame: Vec<u8>,
    /// Offset of the first payload byte in `frame`.
    stamp_at: usize,
    /// The masking key bytes to XOR into the 8 stamp bytes (the key
    /// rotated by the payload's offset in the masked body).
    stamp_mask: [u8; 8],
}

impl PublishTemplate {
    /// Builds the frame for `payload_len`-byte payloads (at least 8) on
    /// `topic`; after the timestamp comes a payload of `kind`.
    pub fn new(topic: &str, payload_len: usize, kind: PayloadKind) -> PublishTemplate {
        let payload = Bytes::from(kind.payload(payload_len));
        let mut body = Vec::with_capacity(payload.len() + topic.len() + 16);
        ClientMessage::Publish {
            id: None,
            topic,
            payload: payload.clone(),
            retain: false,
        }
        .encode(&mut body);
        let payload_in_body = body.len() - payload.len();
        let mut frame = Vec::with_capacity(body.len() + 14);
        write_client_frame(&mut frame, OpCode::Binary, &body, MASK_KEY);
        let header_len = frame.len() - body.len();
        let mut stamp_mask = [0u8; 8];
        for (i, m) in stamp_mask.iter_mut().enumerate() {
            *m = MASK_KEY[(payload_in_body + i) % 4];
        }
        PublishTemplate {
            frame,
            stamp_at: header_len + payload_in_body,
            stamp_mask,
        }
    }

    /// Size of one frame in bytes.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Appends one frame stamped with `sent_ns` to `out`.
    #[inline]
    pub fn append(&self, out: &mut Vec<u8>, sent_ns: u64) {
        let start = out.len() + self.stamp_at;
        out.extend_from_slice(&self.frame);
        let stamp = sent_ns.to_le_bytes();
        for (i, (s, m)) in stamp.iter().zip(self.stamp_mask).enumerate() {
            out[start + i] = s ^ m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_template_decodes_with_the_stamp() {
        for (topic, len) in [("bench.fanout", 128usize), ("t", 8), ("x.y", 1000)] {
            let template = PublishTemplate::new(topic, len, PayloadKind::Filler);
            let mut out = Vec::new();
            template.append(&mut out, 0x0102_0304_0506_0708);
            template.append(&mut out, 42);
            assert_eq!(out.len(), 2 * template.len());
            let mut decoder = FrameDecoder::new(Role::Server, 1 << 20);
            let mut buf = BytesMut::from(&out[..]);
            for want in [0x0102_0304_0506_0708u64, 42] {
                let Some(Incoming::Message(MessageKind::Binary, body)) =
                    decoder.decode(&mut buf).unwrap()
                else {
                    panic!("no message");
                };
                let ClientMessage::Publish {
                    id,
                    topic: t,
                    payload,
                    ..
                } = ClientMessage::decode(&body).unwrap()
                else {
                    panic!("not a publish");
                };
                assert_eq!((id, t, payload.len()), (None, topic, len));
                assert_eq!(u64::from_le_bytes(payload[..8].try_into().unwrap()), want);
                if len > 9 {
                    assert_eq!(payload[9], 9);
                }
            }
        }
    }

    /// A one-shot fake broker: answers the upgrade with 101 plus
    /// `extensions` (if any) as `Sec-WebSocket-Extensions`.
    async fn fake_broker(extensions: Option<&'static str>) -> Target {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                stream.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            let request = String::from_utf8(request).unwrap();
            let key = request
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap();
            let mut answer = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: tickwire.v1\r\n",
                tickwire_protocol::handshake::accept_key(key)
            );
            if let Some(e) = extensions {
                answer.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
            }
            answer.push_str("\r\n");
            stream.write_all(answer.as_bytes()).await.unwrap();
            // Hold the socket until the client is done.
            let _ = stream.read(&mut [0u8; 16]).await;
        });
        Target::resolve(&format!("ws://{addr}/ws")).await.unwrap()
    }

    #[tokio::test]
    async fn compression_needs_the_brokers_agreement() {
        let limit = Duration::from_secs(10);
        let agreed = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
        let target = fake_broker(Some(agreed)).await;
        let conn = open(&target, None, None, true, limit).await.unwrap();
        assert!(conn.deflate);

        let target = fake_broker(None).await;
        let err = open(&target, None, None, true, limit).await.unwrap_err();
        assert!(matches!(err, ConnectError::DeflateDeclined(_)), "{err}");
        assert!(err.to_string().contains("--compression on"), "{err}");

        // Without --compression, an extension the client did not offer is
        // refused; without it the connection is plain.
        let target = fake_broker(Some(agreed)).await;
        let err = open(&target, None, None, false, limit).await.unwrap_err();
        assert!(matches!(err, ConnectError::Handshake { .. }), "{err}");
        let target = fake_broker(None).await;
        assert!(
            !open(&target, None, None, false, limit)
                .await
                .unwrap()
                .deflate
        );
    }

    #[tokio::test]
    async fn urls_and_source_addresses() {
        let t = Target::resolve("ws://127.0.0.1:9/ws").await.unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (9, "/ws"));
        assert_eq!(
            t.source_for(9, 8),
            Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        );
        assert_eq!(t.source_for(9, 1), None);
        let t = Target::resolve("ws://127.0.0.1").await.unwrap();
        assert_eq!((t.addr.port(), t.path.as_str()), (80, "/ws"));
        assert!(Target::resolve("wss://x/ws").await.is_err());
        assert!(Target::resolve("http://x/ws").await.is_err());
    }
}
