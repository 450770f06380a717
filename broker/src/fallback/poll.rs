//! `GET /v1/poll`: long polling.
//!
//! The first request creates a poll session on this node: a [`Feed`]
//! subscribed to the request's `sub`s (from its `cursor`, if any) that
//! buffers deliveries in its bounded outbound queue between requests. A
//! request naming a live session (same `sub` set, same credentials) takes
//! what it buffered; one naming an unknown or expired session gets a new
//! session, started from its `cursor`, so a poll that lands on another node
//! or after a restart resumes from history. A request is held until there
//! is a message or an event to answer with, or its `timeout` passes.
//!
//! Each session has a watcher task: it closes the session with 4003 when
//! its token expires and with 1001 at shutdown (the client learns it from
//! the next answer's `close` event), and forgets the session
//! `poll_session_ttl` after its last request ended. At most
//! `max_poll_sessions` exist at once; their ids are 128 random bits.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde_json::{Value, json};
use tickwire_protocol::CloseCode;
use tokio::sync::Notify;
use tokio::time::{Instant, sleep_until};

use super::query::{Query, SessionId, session_id_text};
use super::render::PayloadMode;
use super::{Feed, Kind, Rendered};
use crate::auth::Authorized;
use crate::limits::{IpHold, IpRefusal};
use crate::metrics::GaugeHold;
use crate::outbound::OutboundQueue;
use crate::slot::ConnectionSlot;
use crate::state::BrokerState;
use crate::tls::PeerIdentity;

/// Who a session belongs to: a request must present the same credentials
/// to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The token the request presented (query or header), if any.
    pub token: Option<String>,
    /// The verified client certificate's identity, if any.
    pub identity: Option<String>,
}

/// Who asks: what the request's credentials allow, its client certificate
/// and the credentials a session must be used with.
#[derive(Debug)]
pub struct Requester {
    /// What the credentials allow.
    pub authorized: Authorized,
    /// The verified client certificate's identity, if any.
    pub identity: Option<Arc<PeerIdentity>>,
    /// The credentials, to match a session's.
    pub owner: Owner,
}

/// Why a poll could not be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollError {
    /// `max_poll_sessions` sessions exist already (503).
    TooManySessions(usize),
    /// The request's source address holds its maximum of connections and
    /// sessions, or opens them too fast (429).
    Address(IpRefusal),
}

/// One poll session.
#[derive(Debug)]
struct PollSession {
    id: SessionId,
    owner: Owner,
    /// The `sub` patterns, sorted.
    subs: Vec<String>,
    queue: Arc<OutboundQueue>,
    feed: tokio::sync::Mutex<Feed>,
    /// Requests using the session now.
    in_flight: AtomicUsize,
    /// A newer request for the session arrived: the one holding it answers
    /// now.
    superseded: Notify,
    /// A request started or ended, or the session ended.
    activity: Notify,
    /// The client was told the session closed, or it expired.
    ended: AtomicBool,
    _gauge: GaugeHold,
    /// The session's place among its source address's connections.
    _address: IpHold,
}

impl PollSession {
    /// Counts one more request using the session (under the sessions' map
    /// lock, so the watcher cannot expire it meanwhile); an earlier one
    /// still holding it is told to answer now.
    fn enter(&self) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) > 0 {
            self.superseded.notify_one();
        }
        self.activity.notify_one();
    }
}

/// Ends a request counted by [`PollSession::enter`] when dropped.
struct InFlight<'a>(&'a PollSession);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.activity.notify_one();
    }
}

/// What one request takes from its session.
#[derive(Debug, Default)]
struct Batch {
    messages: Vec<String>,
    events: Vec<Value>,
    closed: bool,
}

impl Batch {
    fn add(&mut self, rendered: Rendered) {
        let event = match rendered {
            Rendered::Message(json) => return self.messages.push(json),
            Rendered::Subscribed(mut event) => {
                event["type"] = json!("subscribed");
                event
            }
            Rendered::Error(mut event) => {
                event["type"] = json!("error");
                event
            }
            Rendered::Presence { join, mut event } => {
                event["type"] = json!(if join { "join" } else { "leave" });
                // Its place among the answer's messages.
                event["after"] = json!(self.messages.len());
                event
            }
            Rendered::Close { code, reason } => {
                self.closed = true;
                json!({ "type": "close", "code": code, "reason": reason })
            }
        };
        self.events.push(event);
    }

    fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.events.is_empty()
    }

    /// Takes what is ready, up to `max` messages in all.
    fn fill(&mut self, feed: &mut Feed, payload: PayloadMode, max: usize) {
        while !self.closed && self.messages.len() < max {
            match feed.try_next(payload) {
                Some(rendered) => self.add(rendered),
                None => break,
            }
        }
    }
}

/// The poll sessions of one broker.
#[derive(Debug, Default)]
pub struct PollSessions {
    map: Mutex<HashMap<SessionId, Arc<PollSession>>>,
}

impl PollSessions {
    /// No sessions.
    pub fn new() -> Self {
        PollSessions::default()
    }

    /// Sessions alive now.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether no session is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live session `id` if `owner` may use it with `subs`, counted as
    /// used by one more request ([`PollSession::enter`]).
    fn lookup(&self, id: SessionId, owner: &Owner, subs: &[String]) -> Option<Arc<PollSession>> {
        let map = self.map.lock();
        let session = map.get(&id)?;
        let usable = session.owner == *owner
            && session.subs == subs
            && !session.ended.load(Ordering::Acquire);
        usable.then(|| {
            session.enter();
            Arc::clone(session)
        })
    }

    /// Forgets `session` if no request uses it; whether it did.
    fn expire_idle(&self, session: &PollSession) -> bool {
        let mut map = self.map.lock();
        if session.in_flight.load(Ordering::Acquire) > 0 {
            return false;
        }
        session.ended.store(true, Ordering::Release);
        map.remove(&session.id);
        true
    }

    fn remove(&self, session: &PollSession) {
        session.ended.store(true, Ordering::Release);
        self.map.lock().remove(&session.id);
        session.activity.notify_one();
    }

    /// Creates a session for `query`, used by the creating request, and
    /// starts its watcher.
    fn create(
        self: &Arc<Self>,
        state: &Arc<BrokerState>,
        query: &Query,
        requester: Requester,
        subs: Vec<String>,
        slot: &ConnectionSlot,
    ) -> Result<Arc<PollSession>, PollError> {
        let Requester {
            authorized,
            identity,
            owner,
        } = requester;
        let max = state.config.max_poll_sessions;
        let mut map = self.map.lock();
        if map.len() >= max {
            return Err(PollError::TooManySessions(max));
        }
        let address = slot
            .admit_from_same_address(std::time::Instant::now())
            .map_err(PollError::Address)?;
        let id = loop {
            let id = rand::random::<SessionId>();
            if !map.contains_key(&id) {
                break id;
            }
        };
        let feed = Feed::open(state, query, authorized, identity, Kind::Poll);
        let valid_until = feed.valid_until();
        let gauge = state
            .metrics
            .transport_sessions
            .with_label_values(&["poll"]);
        let session = Arc::new(PollSession {
            id,
            owner,
            subs,
            queue: Arc::clone(feed.queue()),
            in_flight: AtomicUsize::new(0),
            superseded: Notify::new(),
            activity: Notify::new(),
            ended: AtomicBool::new(false),
            _gauge: GaugeHold::new(&gauge),
            _address: address,
            feed: tokio::sync::Mutex::new(feed),
        });
        session.enter();
        map.insert(id, Arc::clone(&session));
        drop(map);
        let watcher = watch(
            Arc::clone(self),
            Arc::clone(state),
            Arc::clone(&session),
            valid_until,
        );
        state.tasks.spawn(state.metrics.count_task(watcher));
        Ok(session)
    }

    /// Answers one poll request (already checked and authenticated) of
    /// `requester`, received on the connection holding `slot`: the JSON
    /// body of the 200. A new session takes a place among the source
    /// address's connections (`max_connections_per_ip`,
    /// `connection_rate_per_ip`) for as long as it lives.
    pub async fn answer(
        self: &Arc<Self>,
        state: &Arc<BrokerState>,
        query: &Query,
        requester: Requester,
        slot: &ConnectionSlot,
    ) -> Result<String, PollError> {
        let mut subs: Vec<String> = query.subs.iter().map(|p| p.as_str().to_owned()).collect();
        subs.sort_unstable();
        let known = query
            .session
            .and_then(|id| self.lookup(id, &requester.owner, &subs));
        let session = match known {
            Some(session) => session,
            None => self.create(state, query, requester, subs, slot)?,
        };
        let _request = InFlight(&session);
        let mut feed = session.feed.lock().await;
        let max = state.config.poll_batch;
        let mut batch = Batch::default();
        let deadline = Instant::now() + query.timeout;
        loop {
            batch.fill(&mut feed, query.payload, max);
            if !batch.is_empty() || batch.closed {
                break;
            }
            tokio::select! {
                rendered = feed.next(query.payload) => match rendered {
                    Some(rendered) => batch.add(rendered),
                    None => break,
                },
                _ = sleep_until(deadline) => break,
                _ = session.superseded.notified() => break,
            }
        }
        if batch.closed {
            self.remove(&session);
        }
        let body = format!(
            "{{\"session\":\"{}\",\"cursor\":\"{}\",\"messages\":[{}],\"events\":{}}}",
            session_id_text(session.id),
            feed.cursor(),
            batch.messages.join(","),
            Value::Array(batch.events),
        );
        feed.count_sent(batch.messages.len() as u64, body.len() as u64);
        Ok(body)
    }
}

/// How long until `at` (wall clock); zero if it has passed.
fn until(at: SystemTime) -> Duration {
    at.duration_since(SystemTime::now()).unwrap_or_default()
}

/// Closes `session` when its token expires (4003) or at shutdown (1001),
/// and forgets it `poll_session_ttl` after its last request ended (or once
/// its client was told it closed).
async fn watch(
    sessions: Arc<PollSessions>,
    state: Arc<BrokerState>,
    session: Arc<PollSession>,
    valid_until: Option<SystemTime>,
) {
    let ttl = state.config.poll_session_ttl;
    let idle = sleep_until(Instant::now() + ttl);
    tokio::pin!(idle);
    let expiry = sleep_until(Instant::now() + valid_until.map_or(Duration::ZERO, until));
    tokio::pin!(expiry);
    let mut expired = false;
    loop {
        tokio::select! {
            _ = session.activity.notified() => {
                if session.ended.load(Ordering::Acquire) {
                    break;
                }
                idle.as_mut().reset(Instant::now() + ttl);
            }
            _ = &mut idle => {
                if sessions.expire_idle(&session) {
                    tracing::debug!(connection = session.queue.id(), "poll session expired");
                    break;
                }
                idle.as_mut().reset(Instant::now() + ttl);
            }
            _ = &mut expiry, if valid_until.is_some() && !expired => {
                expired = true;
                session.queue.close(CloseCode::TokenExpired);
            }
            _ = state.shutdown.cancelled() => {
                session.queue.close(CloseCode::GoingAway);
                break;
            }
        }
    }
    sessions.remove(&session);
    session.feed.lock().await.release(&state);
}
