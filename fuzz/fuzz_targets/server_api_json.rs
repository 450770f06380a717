//! Fuzz target `server_api_json`: how the server API reads its JSON
//! bodies and queries, without a running broker.
//!
//! The first byte chooses the parser, the rest is its input:
//!
//! * `0`, batch `POST /v1/publish` (`server_api::batch_publish::parse_batch`
//!   and `parse_message`): an accepted body holds at most `MAX_BATCH`
//!   messages; a refusal is 400 `malformed`/`invalid_option` or 413
//!   `payload_too_large`. Every message is checked with a grant that allows
//!   half of the topics: an accepted one has exactly the topic it names
//!   (valid, allowed), its `payload_base64` decoded, or its JSON `payload`
//!   as one MessagePack value that renders back (as SSE and `/v1/history`
//!   render it) to the same JSON whenever it renders at all, at most 9
//!   bytes per byte of body; a refused one has a code of the documented set
//!   and `forbidden` only for a valid topic the grant refuses.
//! * `1`, `POST /v1/disconnect` (`DisconnectRequest::parse`): an accepted
//!   request has a valid client id or a user of 1 to 1024 bytes, code 4007
//!   or 4100-4999 and a reason of at most 123 bytes; written back as JSON it
//!   reads the same, and it goes through the cluster's control message
//!   (`encode_disconnect`/`parse_control`) unchanged. A refusal is
//!   `malformed` or `invalid_option`.
//! * `2`, `GET /v1/history` query (`HistoryQuery::parse`,
//!   `parse_position`): an accepted query has `limit` 1 to 1000 and reads
//!   the same once rewritten canonically; `since` is accepted exactly when
//!   a reference (two decimal u64 around the first `:`) accepts it.
#![no_main]

mod json;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use json::same_json;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use tickwire_broker::cluster::presence::control::{
    ControlDisconnect, ControlTarget, encode_disconnect, parse_control,
};
use tickwire_broker::directory::{DisconnectTarget, MAX_REASON_BYTES};
use tickwire_broker::fallback::render::{PayloadMode, msgpack_to_json};
use tickwire_broker::presence::parse_client_id;
use tickwire_broker::server_api::batch_publish::{MAX_BATCH, parse_batch, parse_message};
use tickwire_broker::server_api::disconnect::{DisconnectRequest, MAX_USER_BYTES};
use tickwire_broker::server_api::history::{HistoryQuery, MAX_LIMIT, parse_position};
use tickwire_protocol::ErrorCode;
use tickwire_protocol::msgpack::Reader;
use tickwire_protocol::topic::Topic;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    match selector % 3 {
        0 => batch(input),
        1 => disconnect(input),
        _ => {
            if let Ok(query) = std::str::from_utf8(input) {
                history(query);
            }
        }
    }
});

/// The payload bound of the batch check (`max_http_body`).
const MAX_PAYLOAD: usize = 4096;

/// The grant of the batch check: topics of an even length.
fn granted(topic: Topic<'_>) -> bool {
    topic.as_str().len() % 2 == 0
}

fn batch(body: &[u8]) {
    let messages = match parse_batch(body) {
        Ok(messages) => messages,
        Err(refusal) => {
            assert!(
                matches!(
                    (refusal.status.as_u16(), refusal.code),
                    (400, ErrorCode::Malformed | ErrorCode::InvalidOption)
                        | (413, ErrorCode::PayloadTooLarge)
                ),
                "{refusal:?}"
            );
            return;
        }
    };
    assert!(messages.len() <= MAX_BATCH);
    for message in &messages {
        match parse_message(message, MAX_PAYLOAD, granted) {
            Ok((topic, payload, _retain)) => {
                assert_eq!(Some(topic.as_str()), message["topic"].as_str());
                assert!(granted(topic));
                if let Some(text) = message.get("payload_base64") {
                    let text = text.as_str().expect("accepted base64 is a string");
                    assert_eq!(STANDARD.decode(text).ok().as_deref(), Some(&payload[..]));
                } else {
                    let value = &message["payload"];
                    assert!(payload.len() <= MAX_PAYLOAD, "{value}");
                    let mut reader = Reader::new(&payload);
                    reader.skip_value().expect("one MessagePack value");
                    assert_eq!(reader.position(), payload.len());
                    if let Some(rendered) = msgpack_to_json(&payload) {
                        assert!(same_json(&rendered, value), "{value} rendered {rendered}");
                    }
                }
            }
            Err(refusal) => {
                assert!(
                    matches!(
                        refusal.code,
                        ErrorCode::Malformed
                            | ErrorCode::InvalidOption
                            | ErrorCode::InvalidTopic
                            | ErrorCode::Forbidden
                            | ErrorCode::PayloadTooLarge
                    ),
                    "{refusal:?}"
                );
                if refusal.code == ErrorCode::PayloadTooLarge {
                    let json = message.get("payload").map(|v| {
                        let mut out = Vec::new();
                        tickwire_broker::presence::info::json_to_msgpack(v, &mut out);
                        out.len()
                    });
                    let base64 = message.get("payload_base64").and_then(Value::as_str);
                    let decoded = base64
                        .and_then(|t| STANDARD.decode(t).ok())
                        .map(|b| b.len());
                    assert!(json.or(decoded).is_some_and(|n| n > MAX_PAYLOAD));
                }
                if refusal.code == ErrorCode::Forbidden {
                    let topic = message["topic"].as_str().and_then(|t| Topic::new(t).ok());
                    assert!(topic.is_some_and(|t| !granted(t)));
                }
            }
        }
    }
}

fn disconnect(body: &[u8]) {
    let request = match DisconnectRequest::parse(body) {
        Ok(request) => request,
        Err((code, _)) => {
            assert!(matches!(
                code,
                ErrorCode::Malformed | ErrorCode::InvalidOption
            ));
            return;
        }
    };
    let code = request.code.code;
    assert!(code == 4007 || (4100..=4999).contains(&code), "{code}");
    assert!(request.code.reason.len() <= MAX_REASON_BYTES);
    let (key, target, control) = match &request.target {
        DisconnectTarget::Client(client) => {
            assert!(parse_client_id(client).is_ok(), "{client:?}");
            ("client", client, ControlTarget::Client(client))
        }
        DisconnectTarget::User(user) => {
            assert!(!user.is_empty() && user.len() <= MAX_USER_BYTES);
            ("user", user, ControlTarget::User(user))
        }
    };
    let rewritten = json!({ key: target, "code": code, "reason": &*request.code.reason });
    let rewritten = serde_json::to_vec(&rewritten).expect("JSON");
    assert_eq!(DisconnectRequest::parse(&rewritten).as_ref(), Ok(&request));
    let message = ControlDisconnect {
        target: control,
        code,
        reason: &request.code.reason,
    };
    assert_eq!(parse_control(&encode_disconnect(&message)), Some(message));
}

/// The documented `EPOCH:SEQ`: two decimal u64 around the first `:`.
fn reference_position(text: &str) -> Option<(u64, u64)> {
    let (epoch, seq) = text.split_once(':')?;
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    Some((number(epoch)?, number(seq)?))
}

fn history(query: &str) {
    let position = parse_position(query).map(|p| (p.epoch, p.seq));
    assert_eq!(position, reference_position(query), "{query:?}");
    if let Some((epoch, seq)) = position {
        let written = format!("{epoch}:{seq}");
        assert_eq!(parse_position(&written).map(|p| (p.epoch, p.seq)), position);
    }
    let Ok(parsed) = HistoryQuery::parse(Some(query)) else {
        return;
    };
    assert!((1..=MAX_LIMIT).contains(&parsed.limit));
    let mut canonical = vec![format!("limit={}", parsed.limit)];
    if let Some(since) = parsed.since {
        canonical.push(format!("since={}%3A{}", since.epoch, since.seq));
    }
    canonical.push(
        match parsed.payload {
            PayloadMode::Base64 => "payload=base64",
            _ => "payload=auto",
        }
        .to_owned(),
    );
    let canonical = canonical.join("&");
    assert_eq!(
        HistoryQuery::parse(Some(&canonical)),
        Ok(parsed),
        "{canonical}"
    );
}
