//! `POST /v1/publish/{topic}`: one message, the request body as its
//! payload; and the publish step it shares with the batch
//! ([`crate::server_api::batch_publish`]): into the registry on a single
//! node, through the backplane's ordered pipeline in a cluster.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::json;
use tickwire_protocol::ErrorCode;
use tickwire_protocol::topic::Topic;
use tokio::sync::oneshot;

use crate::cluster::publisher::PublishError;
use crate::limits::{self, Admission};
use crate::registry::RegistryError;
use crate::server_api::credentials::http_access;
use crate::server_api::reply::{Body, counted_error, forbidden, json_error, json_response};
use crate::server_api::{backpressure, body};
use crate::slot::ConnectionSlot;
use crate::state::BrokerState;
use crate::tls::PeerIdentity;

/// The path prefix of HTTP publish.
pub const PUBLISH_PREFIX: &str = "/v1/publish/";

/// The topic of an HTTP publish path, `/v1/publish/{topic}`, taken
/// literally (no percent-decoding) and not yet validated; `None` for another
/// path. Public for the fuzz target `http_publish_query`.
pub fn publish_topic(path: &str) -> Option<&str> {
    path.strip_prefix(PUBLISH_PREFIX)
}

/// Reads the query string of an HTTP publish: only `retain` is accepted,
/// as `retain`, `retain=true|1` or `retain=false|0`; the last one given
/// wins. The error names the offending parameter. Public for the fuzz
/// target `http_publish_query`.
pub fn publish_retain_param(query: Option<&str>) -> Result<bool, String> {
    let mut retain = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "true")) {
            ("retain", "true" | "1") => retain = true,
            ("retain", "false" | "0") => retain = false,
            (key, value) => {
                return Err(format!(
                    "unsupported query parameter {key}={value}; only retain=true|false"
                ));
            }
        }
    }
    Ok(retain)
}

/// Why one publish was refused: the HTTP status of a single publish, the
/// error code and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status a single `POST /v1/publish/{topic}` answers with.
    pub status: StatusCode,
    /// The error code (section 10 of protocol.md).
    pub code: ErrorCode,
    /// What happened, for people.
    pub message: String,
}

impl Refusal {
    /// A refusal with status 400.
    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    /// The refusal as a JSON error answer (counted in the metrics).
    pub fn answer(&self, state: &BrokerState) -> Response<Body> {
        counted_error(state, self.status, self.code, &self.message)
    }
}

/// A message that was published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The sequence number it got on its topic.
    pub seq: u64,
    /// The connections on this node it was queued to (`None` in a cluster:
    /// every node delivers it).
    pub deliveries: Option<usize>,
}

/// A publish handed to the registry or the backplane; [`Pending::settle`]
/// waits for its outcome.
#[derive(Debug)]
pub enum Pending {
    /// Already settled (a single node publishes at once).
    Done(Result<Published, Refusal>),
    /// Waiting for Redis to confirm it (cluster mode).
    Backplane(oneshot::Receiver<Result<u64, PublishError>>),
}

impl Pending {
    /// The publish's outcome: in a cluster, once Redis has answered (503
    /// `internal` when it could not confirm it).
    pub async fn settle(self) -> Result<Published, Refusal> {
        match self {
            Pending::Done(outcome) => outcome,
            Pending::Backplane(rx) => match rx.await.unwrap_or(Err(PublishError::Unavailable)) {
                Ok(seq) => Ok(Published {
                    seq,
                    deliveries: None,
                }),
                Err(e) => Err(Refusal {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: ErrorCode::Internal,
                    message: e.to_string(),
                }),
            },
        }
    }
}

/// Publishes `payload` on `topic` (its grant and `retain` already
/// checked): into the registry on a single node, or submitted to the
/// backplane's ordered pipeline in a cluster, so that publishes submitted
/// one after the other keep their order.
pub fn submit(state: &BrokerState, topic: Topic<'_>, payload: Bytes, retain: bool) -> Pending {
    if let Some(backplane) = &state.backplane {
        let (tx, rx) = oneshot::channel();
        backplane.publish(
            topic,
            payload,
            retain,
            state.registry.policy(topic.as_str()),
            Box::new(move |result| {
                // The request may have been abandoned meanwhile.
                let _ = tx.send(result);
            }),
        );
        return Pending::Backplane(rx);
    }
    let outcome = state
        .registry
        .publish(topic, &payload, retain)
        .map(|receipt| Published {
            seq: receipt.seq,
            deliveries: Some(receipt.deliveries),
        })
        .map_err(|e| Refusal {
            status: match e {
                RegistryError::TooManyTopics(_) => StatusCode::SERVICE_UNAVAILABLE,
                RegistryError::StorageFull(_) => StatusCode::INSUFFICIENT_STORAGE,
            },
            code: e.error_code(),
            message: e.to_string(),
        });
    Pending::Done(outcome)
}

/// Checks that `retain`, if asked for, is allowed on `topic`.
pub fn check_retain(state: &BrokerState, topic: Topic<'_>, retain: bool) -> Result<(), Refusal> {
    if retain {
        limits::may_retain(&state.config, topic)
            .map_err(|e| Refusal::bad_request(ErrorCode::InvalidOption, e.to_string()))?;
    }
    Ok(())
}

/// The 429 answer to a publish over the connection's publish rate;
/// after a flood of them the connection is closed after the answer.
pub fn rate_limited(state: &BrokerState, admission: Admission) -> Response<Body> {
    let mut response = counted_error(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        limits::RATE_LIMITED_MESSAGE,
    );
    if admission == Admission::Flood {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Answers `POST /v1/publish/{topic}`: credentials, topic, grant and query
/// are checked before the body is read; while the topic's fan-out is backed
/// up the publish waits, and is refused with 503 `overloaded` if it stays
/// backed up ([`backpressure`]).
pub async fn publish(
    state: &BrokerState,
    slot: &ConnectionSlot,
    identity: Option<&PeerIdentity>,
    topic: &str,
    req: Request<Incoming>,
) -> Response<Body> {
    let access = match http_access(state, &req, identity) {
        Ok(access) => access,
        Err(refusal) => return *refusal,
    };
    let topic = match Topic::new(topic) {
        Ok(topic) => topic,
        Err(e) => {
            return counted_error(
                state,
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidTopic,
                &e.to_string(),
            );
        }
    };
    if !access.may_publish(topic) {
        return forbidden(state);
    }
    let retain = match publish_retain_param(req.uri().query()) {
        Ok(retain) => retain,
        Err(message) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidOption.name(),
                &message,
            );
        }
    };
    if let Err(refusal) = check_retain(state, topic, retain) {
        return refusal.answer(state);
    }
    let body = match body::read(state, req).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let admission = slot.admit_http_publish(body.len());
    if admission != Admission::Accepted {
        return rate_limited(state, admission);
    }
    if !backpressure::clear(state, topic, backpressure::deadline(state)).await {
        return backpressure::overloaded();
    }
    match submit(state, topic, body, retain).settle().await {
        Ok(Published {
            seq,
            deliveries: Some(deliveries),
        }) => json_response(
            StatusCode::OK,
            json!({ "topic": topic.as_str(), "seq": seq, "deliveries": deliveries }),
        ),
        Ok(Published { seq, .. }) => json_response(
            StatusCode::OK,
            json!({ "topic": topic.as_str(), "seq": seq }),
        ),
        Err(refusal) => refusal.answer(state),
    }
}
