//! One wave's connections: who does what, and what each must observe.
//!
//! Connection `i` of a wave plays [`role`]`(i)`: out of every 20,
//! 8 subscribe (a wildcard over their group and one exact topic of the next
//! group) and must receive every message of the wave on those topics in
//! order; 2 publish; 1 subscribes to the flood topic and stops reading, to be
//! dropped as a slow consumer; 3 send garbage; 6 subscribe and then leave
//! abruptly. Every client sets up (connects, subscribes) and reports ready,
//! then waits for [`Phase::Go`]; slow consumers wait for
//! [`Phase::Release`], given once the broker has dropped them all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tickwire_e2e::{RawClient, Received, WAIT, http};
use tickwire_protocol::ws::{self, OpCode};
use tickwire_protocol::{ClientMessage, ErrorCode, WEBSOCKET_PATH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};

/// Connections per topic group: a wave of `n` connections has `n / 100`
/// groups (`soak.g0.*`, `soak.g1.*`, …), each with 40 subscribers, 30
/// abrupt subscribers and 10 publishers, so a wave's deliveries grow with
/// its size, not with its square.
const CONNECTIONS_PER_GROUP: usize = 100;
/// Topics per group: `soak.gG.t0` … `soak.gG.t4`.
const TOPICS_PER_GROUP: usize = 5;
/// Messages each publisher publishes: all but one on its WebSocket (the
/// last of those acknowledged), one by HTTP.
const MESSAGES_PER_PUBLISHER: u64 = 50;
/// The topic only slow consumers subscribe to.
pub const FLOOD_TOPIC: &str = "soak.flood";
/// The receive buffer of a slow consumer's socket: small, so that the
/// broker's queue, not the kernel, fills up.
const STALLED_RECV_BUFFER: u32 = 4096;
/// Kinds of garbage (see [`garbage`]).
const GARBAGE_KINDS: usize = 7;
/// Kinds of abrupt departure (see [`abrupt`]).
const ABRUPT_KINDS: usize = 3;

/// Where a wave is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Clients connect and subscribe.
    Setup,
    /// Everyone set up: publish, misbehave, leave.
    Go,
    /// Every slow consumer was dropped: they read again.
    Release,
}

/// What connection `i` of a wave does; the number is its rank among the
/// connections of its role (or its kind, for garbage and abrupt ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Subscribes and receives the wave's messages on its topics.
    Subscriber(usize),
    /// Publishes [`MESSAGES_PER_PUBLISHER`].
    Publisher(usize),
    /// Subscribes to the flood and stops reading.
    Stalled,
    /// Sends one kind of garbage (its rank modulo [`GARBAGE_KINDS`]).
    Garbage(usize),
    /// Leaves abruptly in one of [`ABRUPT_KINDS`] ways.
    Abrupt(usize),
}

/// The role of connection `i`.
pub fn role(i: usize) -> Role {
    let lap = i / 20;
    match i % 20 {
        r @ 0..=7 => Role::Subscriber(lap * 8 + r),
        r @ 8..=9 => Role::Publisher(lap * 2 + r - 8),
        10 => Role::Stalled,
        r @ 11..=13 => Role::Garbage(lap * 3 + r - 11),
        r => Role::Abrupt(lap * 6 + r - 14),
    }
}

/// A wave's connections by role.
#[derive(Debug, Default, Clone, Copy)]
pub struct Census {
    /// Subscribers.
    pub subscribers: usize,
    /// Publishers.
    pub publishers: usize,
    /// Slow consumers.
    pub stalled: usize,
    /// Garbage senders.
    pub garbage: usize,
    /// Abrupt leavers.
    pub abrupt: usize,
}

impl Census {
    /// Counts the roles of `connections` connections.
    pub fn of(connections: usize) -> Census {
        let mut census = Census::default();
        for i in 0..connections {
            match role(i) {
                Role::Subscriber(_) => census.subscribers += 1,
                Role::Publisher(_) => census.publishers += 1,
                Role::Stalled => census.stalled += 1,
                Role::Garbage(_) => census.garbage += 1,
                Role::Abrupt(_) => census.abrupt += 1,
            }
        }
        census
    }
}

/// The wave's topics and how many messages it publishes on each.
#[derive(Debug, Clone)]
pub struct Plan {
    groups: usize,
    per_topic: HashMap<String, u64>,
}

impl Plan {
    /// The plan of a wave of `connections` connections, `census` by role.
    pub fn new(connections: usize, census: &Census) -> Plan {
        let mut plan = Plan {
            groups: (connections / CONNECTIONS_PER_GROUP).max(1),
            per_topic: HashMap::new(),
        };
        for p in 0..census.publishers {
            *plan.per_topic.entry(plan.publisher_topic(p)).or_default() += MESSAGES_PER_PUBLISHER;
        }
        plan
    }

    fn topic(&self, group: usize, index: usize) -> String {
        format!(
            "soak.g{}.t{}",
            group % self.groups,
            index % TOPICS_PER_GROUP
        )
    }

    /// Publisher `p`'s topic.
    fn publisher_topic(&self, p: usize) -> String {
        self.topic(p % self.groups, p / self.groups)
    }

    /// Subscriber `s`'s wildcard (`*` or `>` over its group) and exact
    /// topic (in the next group).
    fn subscriber_patterns(&self, s: usize) -> (String, String) {
        let group = s % self.groups;
        let wildcard = if s % 2 == 0 { "*" } else { ">" };
        (
            format!("soak.g{group}.{wildcard}"),
            self.topic(group + 1, s / self.groups),
        )
    }

    /// Messages the wave publishes.
    pub fn published(&self) -> u64 {
        self.per_topic.values().sum()
    }

    /// Messages the wave publishes on group `group`'s topics, and on
    /// `also` if it is outside the group.
    fn group_messages(&self, group: usize, also: Option<&str>) -> u64 {
        let prefix = format!("soak.g{group}.");
        self.per_topic
            .iter()
            .filter(|(topic, _)| topic.starts_with(&prefix) || Some(topic.as_str()) == also)
            .map(|(_, n)| n)
            .sum()
    }

    /// Messages subscriber `s` must receive: everything on its group and on
    /// its exact topic (once each, however many subscriptions match).
    fn expected(&self, s: usize) -> u64 {
        let (_, exact) = self.subscriber_patterns(s);
        self.group_messages(s % self.groups, Some(&exact))
    }
}

/// What one client observed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// Messages received.
    pub received: u64,
}

/// What every client of a wave shares.
#[derive(Clone)]
pub struct Wave {
    /// The broker's main port.
    pub addr: SocketAddr,
    /// The wave's publish plan.
    pub plan: Arc<Plan>,
    /// Where the wave is.
    pub phase: watch::Receiver<Phase>,
    /// Each client sends one `()` once set up.
    pub ready: mpsc::UnboundedSender<()>,
    /// Limits the connections being opened at once.
    pub connecting: Arc<Semaphore>,
}

impl Wave {
    async fn wait(&mut self, phase: Phase) {
        self.phase
            .wait_for(|p| *p >= phase)
            .await
            .expect("the soak drives the wave");
    }

    /// Reports this client set up and waits for `phase`.
    async fn ready_then(&mut self, phase: Phase) {
        let _ = self.ready.send(());
        self.wait(phase).await;
    }
}

/// Runs connection `i` of the wave.
pub async fn run(i: usize, mut wave: Wave) -> Outcome {
    match role(i) {
        Role::Subscriber(s) => subscriber(s, wave).await,
        Role::Publisher(p) => publisher(p, wave).await,
        Role::Stalled => stalled(wave).await,
        Role::Garbage(g) => {
            garbage(g % GARBAGE_KINDS, &mut wave).await;
            Outcome::default()
        }
        Role::Abrupt(a) => abrupt(a, &mut wave).await,
    }
}

/// Connects a WebSocket client, within the wave's limit on connections
/// being opened at once.
async fn connect(wave: &Wave) -> RawClient {
    let _opening = wave.connecting.acquire().await.expect("semaphore open");
    RawClient::connect(wave.addr).await
}

/// Longest a wave client waits for its next frame. A big wave is CPU-bound
/// on a small machine, and a subscriber may wait seconds between the bursts
/// of its topics (up to 9 s was measured with 5,000 connections in 20
/// groups), so this is longer than the usual [`WAIT`].
const FRAME_WAIT: Duration = Duration::from_secs(30);

/// The next frame for `client`; fails, naming the client (`who`), after
/// [`FRAME_WAIT`] without one.
async fn next(client: &mut RawClient, who: impl FnOnce() -> String) -> Received {
    match tokio::time::timeout(FRAME_WAIT, client.recv_unbounded()).await {
        Ok(item) => item,
        Err(_) => panic!("{}: no frame from the broker within {FRAME_WAIT:?}", who()),
    }
}

/// The close frame (or EOF) for `client`, skipping anything before it.
async fn close_frame(client: &mut RawClient, who: &str) -> Received {
    loop {
        let item = next(client, || format!("{who}, awaiting the close")).await;
        if let Received::Close { .. } | Received::Eof = item {
            return item;
        }
    }
}

/// Sends a close frame and expects the broker's answer with the same code.
async fn close_politely(mut client: RawClient, who: &str) {
    client
        .send_frame(OpCode::Close, &ws::close_body(1000, "bye"))
        .await;
    match close_frame(&mut client, who).await {
        Received::Close {
            code: Some(1000), ..
        } => {}
        other => panic!("{who}: expected the close to be echoed with 1000, got {other:?}"),
    }
}

async fn subscriber(s: usize, mut wave: Wave) -> Outcome {
    let (wildcard, exact) = wave.plan.subscriber_patterns(s);
    let mut client = connect(&wave).await;
    client.subscribe(&wildcard).await;
    client.subscribe(&exact).await;
    wave.ready_then(Phase::Go).await;
    let expected = wave.plan.expected(s);
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut received = 0;
    while received < expected {
        match next(&mut client, || {
            format!("subscriber {s} at {received} of {expected}")
        })
        .await
        {
            Received::Message { topic, seq, .. } => {
                if let Some(last) = last_seq.insert(topic.clone(), seq) {
                    assert_eq!(
                        seq,
                        last + 1,
                        "subscriber {s}: {topic} seq {seq} after {last}"
                    );
                }
                received += 1;
            }
            Received::Ping => client.send_frame(OpCode::Pong, b"").await,
            other => panic!("subscriber {s}: got {other:?} after {received} of {expected}"),
        }
    }
    if s % 2 == 0 {
        close_politely(client, &format!("subscriber {s}")).await;
    }
    Outcome { received }
}

async fn publisher(p: usize, mut wave: Wave) -> Outcome {
    let topic = wave.plan.publisher_topic(p);
    let mut client = connect(&wave).await;
    wave.ready_then(Phase::Go).await;
    let payload = format!("publisher {p}");
    for _ in 0..MESSAGES_PER_PUBLISHER - 2 {
        client.publish(&topic, payload.as_bytes()).await;
    }
    client.publish_acked(&topic, payload.as_bytes()).await;
    let (status, body) = http(
        wave.addr,
        "POST",
        &format!("/v1/publish/{topic}"),
        payload.as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "HTTP publish: {body}");
    close_politely(client, &format!("publisher {p}")).await;
    Outcome::default()
}

/// Subscribes to the flood with a tiny receive buffer and reads nothing
/// until released; then it must find the 4001 close after what was
/// written before the broker gave up on it.
async fn stalled(mut wave: Wave) -> Outcome {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(STALLED_RECV_BUFFER)
        .expect("SO_RCVBUF");
    let mut client = {
        let _opening = wave.connecting.acquire().await.expect("semaphore open");
        let stream = socket.connect(wave.addr).await.expect("connect");
        RawClient::connect_on(stream, wave.addr, WEBSOCKET_PATH, &[]).await
    };
    client.subscribe(FLOOD_TOPIC).await;
    wave.ready_then(Phase::Release).await;
    let mut received = 0;
    loop {
        match next(&mut client, || {
            format!("slow consumer after {received} messages")
        })
        .await
        {
            Received::Message { .. } => received += 1,
            Received::Close {
                code: Some(4001), ..
            } => return Outcome { received },
            other => panic!("slow consumer: expected close 4001, got {other:?}"),
        }
    }
}

/// One misbehaving client: bad MessagePack (an error reply, then the
/// session goes on), frames that break RFC 6455 (close 1002, 1009), bytes
/// that are not HTTP, a handshake cut in half.
async fn garbage(kind: usize, wave: &mut Wave) {
    if kind >= 5 {
        let mut stream = {
            let _opening = wave.connecting.acquire().await.expect("semaphore open");
            TcpStream::connect(wave.addr).await.expect("connect")
        };
        wave.ready_then(Phase::Go).await;
        if kind == 5 {
            stream
                .write_all(b"NOT HTTP AT ALL\r\n\r\n")
                .await
                .expect("send");
            let mut answer = Vec::new();
            tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
                .await
                .expect("the broker answers garbage and closes")
                .expect("read");
            assert!(
                answer.starts_with(b"HTTP/1.1 400"),
                "{}",
                String::from_utf8_lossy(&answer)
            );
        } else {
            // Half an upgrade request, then the socket goes.
            stream
                .write_all(b"GET /ws HTTP/1.1\r\nHost: soak\r\nUpgrade: webs")
                .await
                .expect("send");
        }
        return;
    }
    let mut client = connect(wave).await;
    wave.ready_then(Phase::Go).await;
    let mut frame = Vec::new();
    let want = match kind {
        0 => {
            client.send_frame(OpCode::Binary, b"hello").await;
            match next(&mut client, || "bad MessagePack sender".to_owned()).await {
                Received::Error {
                    code: ErrorCode::Malformed,
                    ..
                } => {}
                other => panic!("bad MessagePack: expected a malformed error, got {other:?}"),
            }
            return close_politely(client, "bad MessagePack sender").await;
        }
        1 => {
            // RSV1 set without an extension.
            ws::write_client_frame(&mut frame, OpCode::Binary, b"x", [1, 2, 3, 4]);
            frame[0] |= 0x40;
            1002
        }
        2 => {
            // A client frame without a mask.
            frame.extend_from_slice(&[0x82, 0x01, 0x00]);
            1002
        }
        3 => {
            // A header announcing a terabyte.
            frame.extend_from_slice(&[0x82, 0xff]);
            frame.extend_from_slice(&(1u64 << 40).to_be_bytes());
            frame.extend_from_slice(&[1, 2, 3, 4]);
            1009
        }
        _ => {
            // A fragmented ping.
            ws::write_client_frame(&mut frame, OpCode::Ping, b"x", [1, 2, 3, 4]);
            frame[0] &= 0x7f;
            1002
        }
    };
    client.send_raw(&frame).await;
    match close_frame(&mut client, &format!("garbage kind {kind}")).await {
        Received::Close { code: Some(c), .. } if c == want => {}
        other => panic!("garbage kind {kind}: expected close {want}, got {other:?}"),
    }
}

/// Subscribes to a group, then leaves without a close frame: a reset, a
/// plain FIN after the first message (at once if the group gets none), or
/// half a frame and FIN.
async fn abrupt(a: usize, wave: &mut Wave) -> Outcome {
    let kind = a % ABRUPT_KINDS;
    let group = a % wave.plan.groups;
    let mut client = if kind == 0 {
        let stream = {
            let _opening = wave.connecting.acquire().await.expect("semaphore open");
            TcpStream::connect(wave.addr).await.expect("connect")
        };
        // Closing with SO_LINGER 0 sends RST.
        stream.set_zero_linger().expect("SO_LINGER");
        RawClient::connect_on(stream, wave.addr, WEBSOCKET_PATH, &[]).await
    } else {
        connect(wave).await
    };
    client.subscribe(&format!("soak.g{group}.>")).await;
    wave.ready_then(Phase::Go).await;
    let mut received = 0;
    match kind {
        0 => {}
        1 if wave.plan.group_messages(group, None) == 0 => {}
        1 => loop {
            match next(&mut client, || format!("abrupt subscriber {a}")).await {
                Received::Message { .. } => {
                    received += 1;
                    break;
                }
                Received::Ping => {}
                other => panic!("abrupt subscriber: got {other:?}"),
            }
        },
        _ => {
            let mut frame = Vec::new();
            ClientMessage::Publish {
                id: None,
                topic: "soak.g0.t0",
                payload: Bytes::from_static(b"never finished"),
                retain: false,
            }
            .encode(&mut frame);
            let mut out = Vec::new();
            ws::write_client_frame(&mut out, OpCode::Binary, &frame, [9, 8, 7, 6]);
            client.send_raw(&out[..out.len() / 2]).await;
        }
    }
    Outcome { received }
}
