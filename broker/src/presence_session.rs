//! A session's side of presence: its [`Identity`] and place in the
//! [`crate::directory::Directory`], the holds its exact subscriptions to
//! topics with presence take, `PRESENCE` answers, and the release of its
//! holds when the connection ends.
//!
//! A session that never uses presence pays nothing for it beyond this
//! struct: a connection that did not ask for a client id gets its random
//! one when a presence entry first needs it (and is filed under it in the
//! directory then: before, nobody outside the broker could name it), and
//! the `PRESENCE` request counter is allocated with the first request.
//!
//! Order of an exact subscribe to a topic with presence:
//! [`SessionPresence::before_subscribe`] checks `join_leave` and takes the
//! hold (bounds: `presence_full`, nothing subscribed), the registry queues
//! `SUBSCRIBED` (with the client id), then
//! [`SessionPresence::after_subscribe`] announces the entry: the new
//! subscriber sees its own `JOIN` right after its reply, every other one in
//! order with the topic's messages.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use bytes::Bytes;
use tickwire_protocol::message::JoinLeave;
use tickwire_protocol::topic::{Pattern, Topic};
use tickwire_protocol::{ErrorCode, ServerMessage};

use crate::directory::Registration;
use crate::outbound::OutboundQueue;
use crate::presence::{GraceTicket, Identity, PresenceError, random_client_id};
use crate::state::BrokerState;

/// Most `PRESENCE` requests one connection may have in flight; more are
/// refused with `rate_limited` until answers went out.
pub const MAX_PRESENCE_IN_FLIGHT: usize = 16;

/// The presence state of one session.
#[derive(Debug)]
pub struct SessionPresence {
    /// The client id: asked for with `client=`, else drawn at random on
    /// first use ([`SessionPresence::identity`]); `None` until then.
    client: Option<Arc<str>>,
    /// The token's `sub`, if any.
    user: Option<Arc<str>>,
    /// The client info from the token's grants claim.
    info: Option<Bytes>,
    registration: Registration,
    /// Topics this session holds an entry on (exact subscriptions to
    /// topics with presence).
    held: HashSet<String>,
    /// `PRESENCE` requests waiting for their answer; allocated by the
    /// first request.
    in_flight: Option<Arc<AtomicUsize>>,
}

/// What [`SessionPresence::before_subscribe`] decided for a subscribe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// No presence entry: a wildcard, or a topic without presence.
    None,
    /// A hold was taken on this topic; the subscribe must call
    /// [`SessionPresence::after_subscribe`].
    Held(String),
}

impl SessionPresence {
    /// The presence state of the connection of `queue` that asked for
    /// `client` (none: a random one is drawn when needed) and
    /// authenticated as `user` with `info`, filed in the broker's
    /// directory under the keys it has.
    pub fn new(
        state: &BrokerState,
        queue: &Arc<OutboundQueue>,
        client: Option<Arc<str>>,
        user: Option<Arc<str>>,
        info: Option<Bytes>,
    ) -> Self {
        let registration = state
            .directory
            .register(queue, client.as_ref(), user.as_ref());
        SessionPresence {
            client,
            user,
            info,
            registration,
            held: HashSet::new(),
            in_flight: None,
        }
    }

    /// The connection's identity; a connection without a client id gets
    /// its random one now, and is filed under it in the directory.
    pub fn identity(&mut self) -> Identity {
        let client = match &self.client {
            Some(client) => Arc::clone(client),
            None => {
                let client = random_client_id();
                self.registration.set_client(Arc::clone(&client));
                self.client = Some(Arc::clone(&client));
                client
            }
        };
        Identity::new(Some(client), self.user.clone(), self.info.clone())
    }

    /// The client id, if the connection asked for one or has used
    /// presence.
    pub fn client(&self) -> Option<&Arc<str>> {
        self.client.as_ref()
    }

    /// Sets the user and client info of a connection that authenticated
    /// with `AUTH` after it opened (it holds nothing yet: nothing can be
    /// subscribed before `AUTH`).
    pub fn authenticated(&mut self, user: Option<Arc<str>>, info: Option<Bytes>) {
        if !self.held.is_empty() {
            return;
        }
        self.user = user.clone();
        self.info = info;
        self.registration.set_user(user);
    }

    /// Checks a subscribe's `join_leave` against the topic's policy and,
    /// for an exact topic with presence, takes the hold.
    pub fn before_subscribe(
        &mut self,
        state: &BrokerState,
        pattern: &Pattern,
        join_leave: Option<JoinLeave>,
    ) -> Result<Plan, PresenceError> {
        let Some(topic) = pattern.as_topic() else {
            return Ok(Plan::None);
        };
        if !state.registry.policy(topic.as_str()).presence {
            return match join_leave {
                Some(_) => Err(PresenceError::Disabled(topic.as_str().to_owned())),
                None => Ok(Plan::None),
            };
        }
        state.presence.hold(topic, &self.identity())?;
        Ok(Plan::Held(topic.as_str().to_owned()))
    }

    /// After the registry answered the subscribe of `plan`: on success the
    /// entry is announced (`JOIN`, after the reply), else the hold is given
    /// back.
    pub fn after_subscribe(&mut self, state: &BrokerState, plan: Plan, subscribed: bool) {
        let Plan::Held(name) = plan else {
            return;
        };
        let Ok(topic) = Topic::new(&name) else {
            return;
        };
        let identity = self.identity();
        if subscribed {
            state.presence.announce(&state.registry, topic, &identity);
            self.held.insert(name);
        } else {
            state.presence.release(&state.registry, topic, &identity);
        }
    }

    /// The client id for the `SUBSCRIBED` info of a subscribe of `plan`.
    pub fn client_for(&self, plan: &Plan) -> Option<String> {
        match plan {
            Plan::Held(_) => self.client.as_deref().map(str::to_owned),
            Plan::None => None,
        }
    }

    /// An `UNSUBSCRIBE` of `pattern`: its entry leaves at once.
    pub fn unsubscribed(&mut self, state: &BrokerState, pattern: &Pattern) {
        if let Some(topic) = pattern.as_topic() {
            if self.held.remove(topic.as_str()) {
                let identity = self.identity();
                state.presence.release(&state.registry, topic, &identity);
            }
        }
    }

    /// Answers `PRESENCE` `id` for `topic` (already checked: a topic with
    /// presence the grants cover) from a spawned task, since the store may
    /// need I/O (Redis).
    pub fn answer(
        &mut self,
        state: &Arc<BrokerState>,
        queue: &Arc<OutboundQueue>,
        id: u64,
        topic: &str,
        counts_only: bool,
    ) -> Result<(), (ErrorCode, String)> {
        let in_flight = Arc::clone(self.in_flight.get_or_insert_default());
        if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_PRESENCE_IN_FLIGHT {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err((
                ErrorCode::RateLimited,
                format!(
                    "at most {MAX_PRESENCE_IN_FLIGHT} PRESENCE requests may wait for an answer"
                ),
            ));
        }
        let state = Arc::clone(state);
        let queue = Arc::clone(queue);
        let topic = topic.to_owned();
        tokio::spawn(async move {
            let answer = match Topic::new(&topic) {
                Ok(topic) => state.presence.snapshot(topic, counts_only).await,
                Err(e) => Err(PresenceError::Unavailable(e.to_string())),
            };
            let answer = answer.map(|mut snapshot| {
                snapshot.fit_entries(state.config.max_message_size);
                snapshot
            });
            let frame = match answer {
                Ok(snapshot) => ServerMessage::PresenceInfo {
                    id,
                    info: snapshot.to_wire(),
                }
                .to_frame(),
                Err(e) => {
                    state.metrics.protocol_error(e.error_code());
                    let message = e.to_string();
                    ServerMessage::Error {
                        id: Some(id),
                        code: e.error_code(),
                        message: &message,
                    }
                    .to_frame()
                }
            };
            queue.push(frame, Instant::now());
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
        Ok(())
    }

    /// The connection ended: its holds are released at once after a clean
    /// end (`clean`: a client close 1000 or a server disconnect), else
    /// after `presence_grace` unless the same key is held again meanwhile.
    pub fn end(&mut self, state: &Arc<BrokerState>, clean: bool) {
        if self.held.is_empty() {
            return;
        }
        let held: Vec<String> = self.held.drain().collect();
        let identity = self.identity();
        let grace = state.presence.grace();
        if clean || grace.is_zero() {
            for name in &held {
                if let Ok(topic) = Topic::new(name) {
                    state.presence.release(&state.registry, topic, &identity);
                }
            }
            return;
        }
        let tickets: Vec<GraceTicket> = held
            .iter()
            .filter_map(|name| Topic::new(name).ok())
            .filter_map(|topic| state.presence.defer(topic, &identity))
            .collect();
        if tickets.is_empty() {
            return;
        }
        let state = Arc::clone(state);
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => {}
                // At shutdown nobody is left to tell.
                _ = state.shutdown.cancelled() => return,
            }
            for ticket in &tickets {
                state.presence.expire(&state.registry, ticket);
            }
        });
    }
}
