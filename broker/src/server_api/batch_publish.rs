//! `POST /v1/publish`: many publishes in one JSON request,
//! `{"messages":[{"topic", "payload" | "payload_base64", "retain"?}]}`,
//! each answered with its seq or its error, in request order:
//! `{"results":[{"seq": N} | {"error": CODE, "message": "…"}]}`.
//!
//! Each message goes through the checks of `POST /v1/publish/{topic}`
//! ([`crate::server_api::publish`]): a valid topic, the publish grant,
//! `retain` allowed on the topic, the connection's publish rate, then the
//! registry (or, in a cluster, the backplane's ordered pipeline: all of a
//! batch's messages are submitted in order before the answers are awaited,
//! so they keep their order and share round trips). A refused message
//! does not stop the others, except `overloaded` (producer backpressure,
//! [`crate::server_api::backpressure`]): the messages after it are not
//! published either: a client retries from the first `overloaded` one. The body is bounded by `max_http_body` and
//! holds at most [`MAX_BATCH`] messages; a request over either bound, or
//! one that is not such a JSON object, publishes nothing.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{CONNECTION, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value, json};
use tickwire_protocol::ErrorCode;
use tickwire_protocol::topic::Topic;

use crate::grants::Access;
use crate::limits::Admission;
use crate::server_api::credentials::http_access;
use crate::server_api::json_payload::payload_of;
use crate::server_api::publish::{Pending, Refusal, check_retain, submit};
use crate::server_api::reply::{Body, json_response};
use crate::server_api::{backpressure, body};
use crate::session::FORBIDDEN_MESSAGE;
use crate::slot::ConnectionSlot;
use crate::state::BrokerState;
use crate::tls::PeerIdentity;

/// Most messages one batch may hold.
pub const MAX_BATCH: usize = 1000;

/// The keys a message object may have.
const MESSAGE_KEYS: [&str; 4] = ["topic", "payload", "payload_base64", "retain"];

/// A 413 `payload_too_large` refusal.
fn too_large(message: String) -> Refusal {
    Refusal {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: ErrorCode::PayloadTooLarge,
        message,
    }
}

/// The messages of a batch body, or the refusal of the whole request
/// (status, code and message): 400 `malformed` when the body is not a JSON
/// object whose `messages` is an array, 400 `invalid_option` for another
/// key, 413 `payload_too_large` over [`MAX_BATCH`] messages. Pure, so that
/// the fuzz target `server_api_json` runs it on arbitrary bodies.
pub fn parse_batch(body: &[u8]) -> Result<Vec<Value>, Refusal> {
    let malformed = |message: &str| Refusal::bad_request(ErrorCode::Malformed, message);
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(body) else {
        return Err(malformed(
            "the body must be a JSON object {\"messages\": [...]}",
        ));
    };
    if let Some(key) = object.keys().find(|k| *k != "messages") {
        let message = format!("unknown key {key}; the body has only \"messages\"");
        return Err(Refusal::bad_request(ErrorCode::InvalidOption, message));
    }
    let Some(Value::Array(messages)) = object.remove("messages") else {
        return Err(malformed(
            "\"messages\" must be an array of message objects",
        ));
    };
    if messages.len() > MAX_BATCH {
        return Err(too_large(format!(
            "{} messages; a batch holds at most {MAX_BATCH}: split it",
            messages.len()
        )));
    }
    Ok(messages)
}

/// What one message of a batch asks for, read without the broker's state:
/// its topic (valid, and allowed by `may_publish`), payload (at most
/// `max_payload` bytes) and `retain`; the refusal otherwise, in the order
/// the checks run (topic, grant, payload, `retain`). Pure, for the fuzz
/// target `server_api_json`.
///
/// The payload bound matters for JSON payloads: their MessagePack can be
/// larger than their JSON text (`1e1` is 3 bytes of JSON, 9 of
/// MessagePack), so a body within `max_http_body` could otherwise publish
/// a payload more than twice as large, past what subscribers' queues are
/// sized for (`outbound_queue_bytes`), closing every subscriber with 4001.
pub fn parse_message<'a>(
    message: &'a Value,
    max_payload: usize,
    may_publish: impl FnOnce(Topic<'_>) -> bool,
) -> Result<(Topic<'a>, Bytes, bool), Refusal> {
    let Value::Object(fields) = message else {
        return Err(Refusal::bad_request(
            ErrorCode::Malformed,
            "a message must be a JSON object",
        ));
    };
    if let Some(key) = fields.keys().find(|k| !MESSAGE_KEYS.contains(&k.as_str())) {
        return Err(Refusal::bad_request(
            ErrorCode::InvalidOption,
            format!("unknown key {key}; a message has topic, payload or payload_base64, retain"),
        ));
    }
    let Some(Value::String(name)) = fields.get("topic") else {
        return Err(Refusal::bad_request(
            ErrorCode::InvalidTopic,
            "topic must be a string",
        ));
    };
    let topic = Topic::new(name)
        .map_err(|e| Refusal::bad_request(ErrorCode::InvalidTopic, e.to_string()))?;
    if !may_publish(topic) {
        return Err(Refusal {
            status: StatusCode::FORBIDDEN,
            code: ErrorCode::Forbidden,
            message: FORBIDDEN_MESSAGE.to_owned(),
        });
    }
    let payload = payload_of(fields.get("payload"), fields.get("payload_base64"))
        .map_err(|message| Refusal::bad_request(ErrorCode::Malformed, message))?;
    if payload.len() > max_payload {
        return Err(too_large(format!(
            "payload is {} bytes as MessagePack, more than the {max_payload}-byte limit (--max-http-body)",
            payload.len()
        )));
    }
    let retain = match fields.get("retain") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(retain)) => *retain,
        Some(_) => {
            return Err(Refusal::bad_request(
                ErrorCode::InvalidOption,
                "retain must be true or false",
            ));
        }
    };
    Ok((topic, Bytes::from(payload), retain))
}

/// One message checked against the connection's grants and the topic's
/// `retain` policy.
fn check<'a>(
    state: &BrokerState,
    access: &Access,
    message: &'a Value,
) -> Result<(Topic<'a>, Bytes, bool), Refusal> {
    let max_payload = state.config.max_http_body;
    let (topic, payload, retain) =
        parse_message(message, max_payload, |topic| access.may_publish(topic))?;
    check_retain(state, topic, retain)?;
    Ok((topic, payload, retain))
}

/// What became of one message of a batch before its outcome is awaited.
#[derive(Debug)]
enum Outcome {
    /// Checked and handed to the registry or the backplane, or refused.
    Submitted(Pending),
    /// Not published: a topic of the batch stayed backed up past
    /// `publish_backpressure_wait` at this message or an earlier one.
    Overloaded,
}

/// The result object of a refused message, counted in the metrics.
fn refused(state: &BrokerState, refusal: &Refusal) -> Value {
    state.metrics.protocol_error(refusal.code);
    json!({ "error": refusal.code.name(), "message": refusal.message })
}

/// Answers `POST /v1/publish`: 401 without valid credentials, 400/408/413
/// for a body that cannot be read or is not a batch, else 200 with one
/// result per message.
///
/// Before each message the batch waits while the message's topic is
/// backed up ([`backpressure::clear`]; one `publish_backpressure_wait` for
/// the whole batch). When the wait runs out, that message and every later
/// one are not published (`overloaded`), the answer carries `Retry-After`,
/// and it is 503 instead of 200 if no message was published at all.
pub async fn answer(
    state: &BrokerState,
    slot: &ConnectionSlot,
    identity: Option<&PeerIdentity>,
    req: Request<Incoming>,
) -> Response<Body> {
    let access = match http_access(state, &req, identity) {
        Ok(access) => access,
        Err(refusal) => return *refusal,
    };
    let body = match body::read(state, req).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let messages = match parse_batch(&body) {
        Ok(messages) => messages,
        Err(refusal) => return refusal.answer(state),
    };
    let mut flood = false;
    let deadline = backpressure::deadline(state);
    let mut overloaded = false;
    let mut outcomes = Vec::with_capacity(messages.len());
    for message in &messages {
        if overloaded {
            outcomes.push(Outcome::Overloaded);
            continue;
        }
        let (topic, payload, retain) = match check(state, &access, message) {
            Ok(checked) => checked,
            Err(refusal) => {
                outcomes.push(Outcome::Submitted(Pending::Done(Err(refusal))));
                continue;
            }
        };
        if !backpressure::clear(state, topic, deadline).await {
            overloaded = true;
            outcomes.push(Outcome::Overloaded);
            continue;
        }
        outcomes.push(Outcome::Submitted(
            match slot.admit_http_publish(payload.len()) {
                Admission::Accepted => submit(state, topic, payload, retain),
                admission => {
                    flood |= admission == Admission::Flood;
                    Pending::Done(Err(Refusal {
                        status: StatusCode::TOO_MANY_REQUESTS,
                        code: ErrorCode::RateLimited,
                        message: crate::limits::RATE_LIMITED_MESSAGE.to_owned(),
                    }))
                }
            },
        ));
    }
    let mut results = Vec::with_capacity(outcomes.len());
    let mut published = 0;
    for outcome in outcomes {
        results.push(match outcome {
            Outcome::Submitted(pending) => match pending.settle().await {
                Ok(done) => {
                    published += 1;
                    let mut result = Map::new();
                    result.insert("seq".to_owned(), Value::from(done.seq));
                    Value::Object(result)
                }
                Err(refusal) => refused(state, &refusal),
            },
            Outcome::Overloaded => json!({
                "error": backpressure::OVERLOADED,
                "message": backpressure::OVERLOADED_MESSAGE,
            }),
        });
    }
    // Nothing published because the broker is behind: the request as a
    // whole is to be retried later.
    let status = if overloaded && published == 0 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let mut response = json_response(status, json!({ "results": results }));
    if overloaded {
        response = backpressure::retry_after(response);
    }
    if flood {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_json_payload_is_bounded_as_messagepack() {
        let everyone = |_: Topic<'_>| true;
        // 3 bytes of JSON each, 9 of MessagePack: 30 bytes of JSON, 91 of
        // payload (array header included).
        let message = json!({"topic": "t", "payload": vec![1e1; 10]});
        let (_, payload, _) = parse_message(&message, 91, everyone).unwrap();
        assert_eq!(payload.len(), 91);
        let refused = parse_message(&message, 90, everyone).unwrap_err();
        assert_eq!(
            (refused.status, refused.code),
            (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge)
        );
        assert!(refused.message.contains("91 bytes"), "{}", refused.message);
        let base64 = json!({"topic": "t", "payload_base64": "aGk="});
        assert!(parse_message(&base64, 2, everyone).is_ok());
        assert!(parse_message(&base64, 1, everyone).is_err());
        // The grant is checked before the payload.
        let refused = parse_message(&message, 0, |_| false).unwrap_err();
        assert_eq!(refused.code, ErrorCode::Forbidden);
    }

    #[test]
    fn batches_are_objects_with_at_most_max_batch_messages() {
        assert_eq!(parse_batch(br#"{"messages":[]}"#), Ok(vec![]));
        let over = json!({"messages": vec![1; MAX_BATCH + 1]}).to_string();
        let refused = parse_batch(over.as_bytes()).unwrap_err();
        assert_eq!(refused.code, ErrorCode::PayloadTooLarge);
        for (body, code) in [
            (&b"[]"[..], ErrorCode::Malformed),
            (b"{\"messages\":{}}", ErrorCode::Malformed),
            (b"{\"messages\":[],\"x\":1}", ErrorCode::InvalidOption),
            (b"\xff", ErrorCode::Malformed),
        ] {
            assert_eq!(parse_batch(body).unwrap_err().code, code);
        }
    }
}
