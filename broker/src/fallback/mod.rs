//! The fallback transports for clients that cannot use WebSocket:
//! Server-Sent Events (`GET /v1/sse`, [`sse`]) and long polling
//! (`GET /v1/poll`, [`poll`]).
//!
//! Both are subscribe-only views of the WebSocket machinery. A [`Feed`] is
//! one [`Session`] with its own [`OutboundQueue`], fed the request's `sub`s
//! as encoded `SUBSCRIBE` messages, exactly what a WebSocket client would
//! send: grants, `since`/`last`/`max_rate`, limits, slow-consumer policies
//! and the cluster catch-up are the same code. The queue yields the same
//! encoded WebSocket frames a WebSocket writer would write; the feed
//! ([`pump::Pump`]) takes them in the same order, strips the frame
//! header, decodes the server message and renders it as JSON ([`render`]),
//! per delivery, in the SSE or poll task. The WebSocket path is untouched.
//!
//! [`query`] reads and checks the request before anything is subscribed;
//! [`cursor`] is the resume token both transports hand out.

pub mod cursor;
pub mod poll;
pub mod pump;
pub mod query;
pub mod render;
pub mod sse;

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use serde_json::{Value, json};
use tickwire_protocol::ws::{FrameHeader, Role};
use tickwire_protocol::{ClientMessage, CloseCode, ServerMessage, SubscribeOptions};

use crate::auth::Authorized;
use crate::handler::MessageHandler;
use crate::limits::PublishLimits;
use crate::metrics::Metrics;
use crate::outbound::{OutboundQueue, QueueSettings};
use crate::session::Session;
use crate::state::BrokerState;
use crate::tls::PeerIdentity;

use cursor::Cursor;
use pump::{Item, Pump};
use query::Query;
use render::PayloadMode;

/// Which fallback transport, for metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Server-Sent Events.
    Sse,
    /// Long polling.
    Poll,
}

impl Kind {
    /// The `transport` label value.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Sse => "sse",
            Kind::Poll => "poll",
        }
    }
}

/// One rendered thing a fallback client receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Rendered {
    /// A delivery: its JSON (the cursor has already moved past it).
    Message(String),
    /// The `subscribed` event of a `sub`.
    Subscribed(Value),
    /// The `error` event of a `sub` the broker refused after the request
    /// was accepted (e.g. `too_many_topics`).
    Error(Value),
    /// A `JOIN` (`join`: true) or `LEAVE` of a `sub` with `join_leave`:
    /// `{"topic", "client"?, "user"?, "info"?}` ([`render::presence_json`]).
    Presence {
        /// Join or leave.
        join: bool,
        /// The event's JSON.
        event: Value,
    },
    /// The session is closed; nothing follows.
    Close {
        /// The close code.
        code: u16,
        /// Its reason.
        reason: std::borrow::Cow<'static, str>,
    },
}

impl Rendered {
    /// The `close` event's JSON.
    pub fn close_json(code: u16, reason: &str) -> Value {
        json!({ "code": code, "reason": reason })
    }
}

/// The body of an encoded server frame (the WebSocket header stripped).
pub fn frame_body(frame: &Bytes) -> Option<Bytes> {
    let header = FrameHeader::parse(frame, Role::Client).ok()??;
    Some(frame.slice(header.header_len..))
}

/// One subscribe-only session of a fallback transport and what it has
/// delivered.
#[derive(Debug)]
pub struct Feed {
    session: Session,
    queue: Arc<OutboundQueue>,
    pump: Pump,
    /// The `sub`s, by request id − 1.
    subs: Vec<String>,
    cursor: Cursor,
    with_cursor: bool,
    metrics: Metrics,
    kind: Kind,
}

impl Feed {
    /// Opens a session for `query` as `authorized` (`identity`: the client
    /// certificate's) and subscribes it to every `sub`, with the request's
    /// cursor as `since` if it has one.
    pub fn open(
        state: &Arc<BrokerState>,
        query: &Query,
        authorized: Authorized,
        identity: Option<Arc<PeerIdentity>>,
        kind: Kind,
    ) -> Feed {
        let id = state.next_connection_id();
        // Drained only when the client asks: it holds no publisher back.
        let settings = QueueSettings {
            backpressure: false,
            ..state.config.queue_settings()
        };
        let (queue, outbound) = OutboundQueue::with_settings(id, settings, state.metrics.clone());
        let limits = PublishLimits::from_config(&state.config);
        let mut session = Session::new(
            state,
            queue.clone(),
            authorized,
            limits,
            identity,
            query.client.clone(),
        );
        for (n, pattern) in query.subs.iter().enumerate() {
            let mut options = SubscribeOptions::default().last(query.last);
            if let Some(rate) = query.max_rate {
                options = options.max_rate(rate);
            }
            // Events where there can be any: a wildcard, or a topic with
            // presence (a plain topic would refuse the option).
            let may_have_events =
                pattern.is_wildcard() || state.registry.policy(pattern.as_str()).presence;
            if let Some(kind) = query.join_leave.filter(|_| may_have_events) {
                options = options.join_leave(kind);
            }
            if let Some(since) = &query.cursor {
                options = options.since(since.clone());
            }
            let request = ClientMessage::Subscribe {
                id: n as u64 + 1,
                pattern: pattern.as_str(),
                options,
            };
            let mut frame = Vec::new();
            request.encode(&mut frame);
            session.handle(state, Bytes::from(frame));
        }
        tracing::debug!(
            connection = id,
            transport = kind.label(),
            "fallback session started"
        );
        Feed {
            session,
            queue,
            pump: Pump::new(outbound),
            subs: query.subs.iter().map(|p| p.as_str().to_owned()).collect(),
            cursor: Cursor::new(query.cursor.as_deref().unwrap_or_default()),
            with_cursor: query.cursor.is_some(),
            metrics: state.metrics.clone(),
            kind,
        }
    }

    /// The session's queue (to close it).
    pub fn queue(&self) -> &Arc<OutboundQueue> {
        &self.queue
    }

    /// When the session's token expires (it is then closed with 4003).
    pub fn valid_until(&self) -> Option<SystemTime> {
        self.session.valid_until()
    }

    /// The current cursor's text.
    pub fn cursor(&self) -> String {
        self.cursor.encode()
    }

    /// The `sub` patterns, in request order.
    pub fn subs(&self) -> &[String] {
        &self.subs
    }

    /// Counts `messages` deliveries and `bytes` sent on this transport.
    pub fn count_sent(&self, messages: u64, bytes: u64) {
        let label = [self.kind.label()];
        self.metrics
            .transport_deliveries
            .with_label_values(&label)
            .inc_by(messages);
        self.metrics
            .transport_bytes_out
            .with_label_values(&label)
            .inc_by(bytes);
    }

    /// The next thing to send if one is ready, rendered with `payload`.
    pub fn try_next(&mut self, payload: PayloadMode) -> Option<Rendered> {
        loop {
            let item = self.pump.try_next()?;
            if let Some(rendered) = self.render(item, payload) {
                return Some(rendered);
            }
        }
    }

    /// Waits for the next thing to send; `None` once the queue has ended.
    /// Cancel safe.
    pub async fn next(&mut self, payload: PayloadMode) -> Option<Rendered> {
        loop {
            let item = self.pump.next().await?;
            if let Some(rendered) = self.render(item, payload) {
                return Some(rendered);
            }
        }
    }

    fn sub_of(&self, id: Option<u64>) -> Option<&str> {
        let index = usize::try_from(id?.checked_sub(1)?).ok()?;
        self.subs.get(index).map(String::as_str)
    }

    /// Renders one queue item; `None` for what a fallback client does not
    /// see (replies to requests it cannot make).
    fn render(&mut self, item: Item, payload: PayloadMode) -> Option<Rendered> {
        let frame = match item {
            Item::Close { code, reason } => return Some(Rendered::Close { code, reason }),
            Item::Frame(frame) => frame,
        };
        let body = frame_body(&frame)?;
        let message = match ServerMessage::decode(&body) {
            Ok(message) => message,
            Err(e) => {
                tracing::error!(error = %e, "undecodable frame in a fallback session's queue");
                return None;
            }
        };
        match message {
            ServerMessage::Message(delivery) => {
                self.cursor.record(delivery.topic, delivery.position());
                Some(Rendered::Message(render::delivery_json(&delivery, payload)))
            }
            ServerMessage::Subscribed { id, info } => {
                let mut event = json!({ "sub": self.sub_of(Some(id)) });
                if self.with_cursor {
                    event["recovered"] = json!(info.recovered.unwrap_or(true));
                    if !info.missed.is_empty() {
                        event["missed"] = render::missed_json(&info.missed);
                    }
                }
                Some(Rendered::Subscribed(event))
            }
            ServerMessage::Join { topic, entry } => Some(Rendered::Presence {
                join: true,
                event: render::presence_json(topic, &entry),
            }),
            ServerMessage::Leave { topic, entry } => Some(Rendered::Presence {
                join: false,
                event: render::presence_json(topic, &entry),
            }),
            ServerMessage::Error { id, code, message } => Some(Rendered::Error(json!({
                "code": code.name(),
                "message": message,
                "sub": self.sub_of(id),
            }))),
            _ => None,
        }
    }

    /// Closes the session with `code` (after what is queued).
    pub fn close(&self, code: CloseCode) {
        self.queue.close(code);
    }

    /// Removes the session's subscriptions from the registry.
    pub fn release(&mut self, state: &Arc<BrokerState>) {
        self.queue.abandon();
        self.session.release(state);
        tracing::debug!(
            connection = self.queue.id(),
            transport = self.kind.label(),
            "fallback session ended"
        );
    }
}
