//! What one WebSocket client may do: the handling of each client message.
//!
//! A [`Session`] owns the connection's subscriptions and answers every
//! request with exactly one reply frame (or none, for a publish without an
//! id). Bad requests get an `ERROR` reply and the session carries on.
//!
//! Authorization happens here, per request: a subscribe must be covered by
//! the connection's grants, a publish's topic must match one. A refusal is
//! `forbidden` with the same text whatever the topic's state, so it never
//! reveals whether a topic exists.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tickwire_protocol::message::{Position, SubscribedInfo};
use tickwire_protocol::topic::{Pattern, Topic};
use tickwire_protocol::ws::MessageKind;
use tickwire_protocol::{ClientMessage, CloseCode, ErrorCode, ServerMessage, SubscribeOptions};

use crate::auth::Authorized;
use crate::cluster::catch_up;
use crate::grants::Access;
use crate::handler::MessageHandler;
use crate::limits::{self, Admission, PublishLimiter, PublishLimits};
use crate::outbound::OutboundQueue;
use crate::pattern_set::PatternSet;
use crate::pattern_trie::{JoinLeaveKinds, Subscriber};
use crate::presence::PresenceError;
use crate::presence_session::SessionPresence;
use crate::registry::SubscribeRequest;
use crate::state::BrokerState;
use crate::tls::PeerIdentity;

/// Validates the topics of a `since` option; `Err` names the first one that
/// is not a topic.
fn since_topics(since: &[(String, Position)]) -> Result<Vec<(Topic<'_>, Position)>, &str> {
    since
        .iter()
        .map(|(topic, position)| {
            Topic::new(topic)
                .map(|t| (t, *position))
                .map_err(|_| topic.as_str())
        })
        .collect()
}

/// The reply text of every `forbidden` refusal: the same whatever the
/// topic's state.
pub const FORBIDDEN_MESSAGE: &str = "not permitted by this connection's grants";

/// The subscriptions and request handling of one connection.
#[derive(Debug)]
pub struct Session {
    queue: Arc<OutboundQueue>,
    access: Access,
    valid_until: Option<SystemTime>,
    subscriptions: PatternSet,
    publish_limiter: PublishLimiter,
    peer_identity: Option<Arc<PeerIdentity>>,
    presence: SessionPresence,
    /// The connection negotiated permessage-deflate: its subscriptions get
    /// compressed deliveries.
    deflate: bool,
    /// Subscriber queues that this connection's publishes found backed up;
    /// the connection stops reading until they drained
    /// ([`MessageHandler::backlog`]).
    backlog: Vec<Arc<OutboundQueue>>,
}

impl Session {
    /// A session without subscriptions that replies through `queue`, may
    /// do what `authorized` allows until it expires, and publishes within
    /// `limits`; `peer_identity` is the client certificate's identity, if
    /// the client presented one over TLS. Its presence entries are keyed
    /// by `client` (the `client=` it asked for, else a random id) and
    /// `authorized`'s user; it is filed in `state`'s directory.
    pub fn new(
        state: &BrokerState,
        queue: Arc<OutboundQueue>,
        authorized: Authorized,
        limits: PublishLimits,
        peer_identity: Option<Arc<PeerIdentity>>,
        client: Option<Arc<str>>,
    ) -> Self {
        let presence =
            SessionPresence::new(state, &queue, client, authorized.user, authorized.info);
        Session {
            queue,
            access: authorized.access,
            valid_until: authorized.valid_until,
            subscriptions: PatternSet::default(),
            publish_limiter: PublishLimiter::new(limits, Instant::now()),
            peer_identity,
            presence,
            deflate: false,
            backlog: Vec::new(),
        }
    }

    /// The same session, its subscriptions receiving compressed deliveries
    /// when `deflate` (the connection negotiated permessage-deflate).
    pub fn with_deflate(mut self, deflate: bool) -> Self {
        self.deflate = deflate;
        self
    }

    /// The connection's client id: the one it asked for, or its random one
    /// once presence needed it; `None` before that.
    pub fn client_id(&self) -> Option<&Arc<str>> {
        self.presence.client()
    }

    /// When the connection's token expires (it is then closed with 4003);
    /// `None`: never. A `REFRESH` moves it.
    pub fn valid_until(&self) -> Option<SystemTime> {
        self.valid_until
    }

    fn reply(&self, message: ServerMessage<'_>) {
        self.queue
            .push(message.to_frame(), std::time::Instant::now());
    }

    fn error(&self, state: &BrokerState, id: Option<u64>, code: ErrorCode, message: &str) {
        state.metrics.protocol_error(code);
        self.reply(ServerMessage::Error { id, code, message });
    }

    /// Whether the connection still waits for its `AUTH` message (then an
    /// expiry closes it with 4004 rather than 4003).
    pub fn awaiting_auth(&self) -> bool {
        self.access == Access::AwaitingAuth
    }

    /// Handles one complete binary message from the client.
    pub fn handle(&mut self, state: &Arc<BrokerState>, frame: Bytes) {
        if self.awaiting_auth() {
            return self.before_auth(state, &frame);
        }
        match ClientMessage::decode(&frame) {
            Ok(ClientMessage::Subscribe {
                id,
                pattern,
                options,
            }) => self.subscribe(state, id, pattern, options),
            Ok(ClientMessage::Unsubscribe { id, pattern }) => self.unsubscribe(state, id, pattern),
            Ok(ClientMessage::Publish {
                id,
                topic,
                payload,
                retain,
            }) => self.publish(state, id, topic, &payload, retain),
            Ok(ClientMessage::Ping { id }) => self.reply(ServerMessage::Pong { id }),
            Ok(ClientMessage::Refresh { id, token } | ClientMessage::Auth { id, token }) => {
                self.refresh(state, id, token)
            }
            Ok(ClientMessage::Presence {
                id,
                topic,
                counts_only,
            }) => self.presence_request(state, id, topic, counts_only),
            Err(e) => {
                let id = ClientMessage::request_id_hint(&frame);
                self.error(state, id, e.error_code(), &e.to_string());
            }
        }
    }

    fn subscribe(
        &mut self,
        state: &Arc<BrokerState>,
        id: u64,
        pattern: &str,
        options: SubscribeOptions,
    ) {
        let pattern = match Pattern::new(pattern) {
            Ok(p) => p,
            Err(e) => {
                return self.error(state, Some(id), ErrorCode::InvalidPattern, &e.to_string());
            }
        };
        if !self.access.may_subscribe(&pattern) {
            return self.error(state, Some(id), ErrorCode::Forbidden, FORBIDDEN_MESSAGE);
        }
        if self.subscriptions.contains(&pattern) {
            let message = format!("already subscribed to {pattern}");
            return self.error(state, Some(id), ErrorCode::AlreadySubscribed, &message);
        }
        let max = state.config.max_subscriptions;
        if self.subscriptions.len() >= max {
            let message = format!("a connection may hold at most {max} subscriptions");
            return self.error(state, Some(id), ErrorCode::TooManySubscriptions, &message);
        }
        let since = match options.since.as_deref().map(since_topics).transpose() {
            Ok(since) => since,
            Err(topic) => {
                let message = format!("`since` names {topic:?}, which is not a topic");
                return self.error(state, Some(id), ErrorCode::InvalidOption, &message);
            }
        };
        let plan = match self
            .presence
            .before_subscribe(state, &pattern, options.join_leave)
        {
            Ok(plan) => plan,
            Err(e) => return self.error(state, Some(id), e.error_code(), &e.to_string()),
        };
        let subscriber = Subscriber {
            queue: self.queue.clone(),
            max_rate: options.max_rate,
            replay: None,
            join_leave: JoinLeaveKinds::from_option(options.join_leave),
            deflate: self.deflate,
        };
        let client = self.presence.client_for(&plan);
        if state.backplane.is_some() {
            // `since` was checked above; the catch-up owns the request's.
            let ask = catch_up::Ask {
                pattern,
                since: options.since,
                last: options.last,
            };
            let subscribed = self.subscribe_in_cluster(state, id, ask, subscriber, client);
            return self.presence.after_subscribe(state, plan, subscribed);
        }
        let request = SubscribeRequest {
            pattern: &pattern,
            subscriber,
            since: since.as_deref(),
            last: options.last,
        };
        let registered = state.registry.subscribe(request, |mut info| {
            info.client = client;
            self.reply(ServerMessage::Subscribed { id, info })
        });
        match registered {
            Ok(()) => {
                self.subscriptions.insert(pattern);
                self.presence.after_subscribe(state, plan, true);
            }
            Err(e) => {
                self.presence.after_subscribe(state, plan, false);
                self.error(state, Some(id), e.error_code(), &e.to_string())
            }
        }
    }

    /// `PRESENCE`: allowed for a topic (not a pattern) with presence that
    /// the grants allow subscribing to; answered from a spawned task.
    fn presence_request(
        &mut self,
        state: &Arc<BrokerState>,
        id: u64,
        topic: &str,
        counts_only: bool,
    ) {
        let topic = match Topic::new(topic) {
            Ok(topic) => topic,
            Err(e) => return self.error(state, Some(id), ErrorCode::InvalidTopic, &e.to_string()),
        };
        let allowed = Pattern::new(topic.as_str()).is_ok_and(|p| self.access.may_subscribe(&p));
        if !allowed {
            return self.error(state, Some(id), ErrorCode::Forbidden, FORBIDDEN_MESSAGE);
        }
        if !state.registry.policy(topic.as_str()).presence {
            let e = PresenceError::Disabled(topic.as_str().to_owned());
            return self.error(state, Some(id), e.error_code(), &e.to_string());
        }
        if let Err((code, message)) =
            self.presence
                .answer(state, &self.queue, id, topic.as_str(), counts_only)
        {
            self.error(state, Some(id), code, &message);
        }
    }

    /// Cluster mode: registers the subscription held, and lets
    /// [`catch_up`] reply and replay once Redis has been asked. The reply
    /// may therefore come after replies to later requests; it carries
    /// `client` (the SUBSCRIBED info key). Returns whether the
    /// subscription was registered.
    fn subscribe_in_cluster(
        &mut self,
        state: &Arc<BrokerState>,
        id: u64,
        ask: catch_up::Ask,
        subscriber: Subscriber,
        client: Option<String>,
    ) -> bool {
        let held = match state.registry.subscribe_held(&ask.pattern, subscriber) {
            Ok(held) => held,
            Err(e) => {
                self.error(state, Some(id), e.error_code(), &e.to_string());
                return false;
            }
        };
        self.subscriptions.insert(ask.pattern.clone());
        let queue = Arc::clone(&self.queue);
        let reply = Box::new(move |mut info: SubscribedInfo| {
            info.client = client;
            let frame = ServerMessage::Subscribed { id, info }.to_frame();
            queue.push(frame, Instant::now());
        });
        catch_up::start(state, held, ask, reply);
        true
    }

    fn unsubscribe(&mut self, state: &BrokerState, id: u64, pattern: &str) {
        let pattern = match Pattern::new(pattern) {
            Ok(p) => p,
            Err(e) => {
                return self.error(state, Some(id), ErrorCode::InvalidPattern, &e.to_string());
            }
        };
        if !self.subscriptions.remove(&pattern) {
            let message = format!("not subscribed to {pattern}");
            return self.error(state, Some(id), ErrorCode::NotSubscribed, &message);
        }
        state.registry.unsubscribe(&pattern, self.queue.id());
        self.presence.unsubscribed(state, &pattern);
        self.reply(ServerMessage::Unsubscribed { id });
    }

    fn publish(
        &mut self,
        state: &BrokerState,
        id: Option<u64>,
        topic: &str,
        payload: &[u8],
        retain: bool,
    ) {
        match self.publish_limiter.admit(payload.len(), Instant::now()) {
            Admission::Accepted => {}
            refused => {
                self.error(
                    state,
                    id,
                    ErrorCode::RateLimited,
                    limits::RATE_LIMITED_MESSAGE,
                );
                if refused == Admission::Flood {
                    self.queue.close(CloseCode::PublishFlood);
                }
                return;
            }
        }
        let topic = match Topic::new(topic) {
            Ok(topic) => topic,
            Err(e) => return self.error(state, id, ErrorCode::InvalidTopic, &e.to_string()),
        };
        if !self.access.may_publish(topic) {
            return self.error(state, id, ErrorCode::Forbidden, FORBIDDEN_MESSAGE);
        }
        if retain {
            if let Err(e) = limits::may_retain(&state.config, topic) {
                return self.error(state, id, ErrorCode::InvalidOption, &e.to_string());
            }
        }
        if let Some(backplane) = &state.backplane {
            let queue = Arc::clone(&self.queue);
            let metrics = state.metrics.clone();
            let payload = Bytes::copy_from_slice(payload);
            // Answered when Redis has; replies to later requests may come
            // first (the request id tells them apart).
            let done = Box::new(move |result| {
                let message = match result {
                    Ok(seq) => match id {
                        Some(id) => ServerMessage::Published { id, seq }.to_frame(),
                        None => return,
                    },
                    Err(e) => {
                        let code = ErrorCode::Internal;
                        metrics.protocol_error(code);
                        let message = format!("{e}");
                        ServerMessage::Error {
                            id,
                            code,
                            message: &message,
                        }
                        .to_frame()
                    }
                };
                queue.push(message, Instant::now());
            });
            let policy = state.registry.policy(topic.as_str());
            backplane.publish(topic, payload, retain, policy, done);
            // This node's fan-out of the topic happens when Redis sends the
            // message back; what it last found backed up paces this
            // publisher.
            self.backlog.extend(state.registry.backlog(topic));
            return;
        }
        match state.registry.publish(topic, payload, retain) {
            Ok(receipt) => {
                self.backlog.extend(receipt.backlog);
                if let Some(id) = id {
                    self.reply(ServerMessage::Published {
                        id,
                        seq: receipt.seq,
                    });
                }
            }
            Err(e) => self.error(state, id, e.error_code(), &e.to_string()),
        }
    }

    /// Before `AUTH` succeeded: `AUTH` (or `REFRESH`) authenticates,
    /// anything else is refused with `unauthorized`.
    fn before_auth(&mut self, state: &BrokerState, frame: &Bytes) {
        match ClientMessage::decode(frame) {
            Ok(ClientMessage::Auth { id, token } | ClientMessage::Refresh { id, token }) => {
                self.refresh(state, id, token)
            }
            Ok(_) => {
                let id = ClientMessage::request_id_hint(frame);
                let message = "authenticate first: send AUTH with a token";
                self.error(state, id, ErrorCode::Unauthorized, message);
            }
            Err(e) => {
                let id = ClientMessage::request_id_hint(frame);
                self.error(state, id, e.error_code(), &e.to_string());
            }
        }
    }

    /// Replaces the connection's token. The new one must be valid and its
    /// grants must cover every current subscription; otherwise the old token
    /// stays in effect and the reply is `unauthorized` or `forbidden`.
    fn refresh(&mut self, state: &BrokerState, id: u64, token: &str) {
        let Some(auth) = &state.auth else {
            // Authentication is off: nothing to replace, nothing expires.
            return self.reply(ServerMessage::Refreshed { id, expires: None });
        };
        let authorized = match auth.authorize(Some(token)) {
            Ok(authorized) => authorized,
            Err(reason) => {
                tracing::debug!(connection = self.queue.id(), %reason, "refresh refused");
                let message = "token refused; the current one stays in effect";
                return self.error(state, Some(id), ErrorCode::Unauthorized, message);
            }
        };
        if !self
            .subscriptions
            .iter()
            .all(|pattern| authorized.access.may_subscribe(pattern))
        {
            return self.error(state, Some(id), ErrorCode::Forbidden, FORBIDDEN_MESSAGE);
        }
        if self.awaiting_auth() {
            self.presence
                .authenticated(authorized.user, authorized.info);
        }
        self.access = authorized.access;
        self.valid_until = authorized.valid_until;
        let expires = self
            .valid_until
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        self.reply(ServerMessage::Refreshed { id, expires });
    }
}

/// `/ws`: binary messages are protocol requests; a text message closes the
/// connection with 1003 (the protocol is binary only).
impl MessageHandler for Session {
    fn on_message(&mut self, state: &Arc<BrokerState>, kind: MessageKind, payload: Bytes) {
        match kind {
            MessageKind::Binary => self.handle(state, payload),
            MessageKind::Text => {
                tracing::debug!(connection = self.queue.id(), "closing on a text message");
                self.queue.close(CloseCode::UnsupportedData);
            }
        }
    }

    /// The token's expiry: 4004 while the connection still waits for its
    /// `AUTH`, 4003 after.
    fn expiry(&self) -> Option<(SystemTime, CloseCode)> {
        let code = if self.awaiting_auth() {
            CloseCode::AuthenticationRequired
        } else {
            CloseCode::TokenExpired
        };
        self.valid_until.map(|at| (at, code))
    }

    fn peer_identity(&self) -> Option<&PeerIdentity> {
        self.peer_identity.as_deref()
    }

    /// A subscriber queue that this connection's publishes found backed
    /// up and that still is: the reader pauses until it drains, then asks
    /// again, so that it resumes once all of them have drained.
    fn backlog(&mut self) -> Option<Arc<OutboundQueue>> {
        while let Some(queue) = self.backlog.pop() {
            if queue.needs_backpressure() {
                return Some(queue);
            }
        }
        None
    }

    /// Removes every subscription of this session from the registry and
    /// releases its presence holds: at once after a client close 1000 or a
    /// server disconnect, else after `presence_grace`.
    fn release(&mut self, state: &Arc<BrokerState>) {
        for pattern in self.subscriptions.take() {
            state.registry.unsubscribe(&pattern, self.queue.id());
        }
        self.presence.end(state, self.queue.ended_cleanly());
    }
}
