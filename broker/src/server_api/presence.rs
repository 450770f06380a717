//! `GET /v1/presence/{topic}` (the entries) and
//! `GET /v1/presence/{topic}/stats` (only the counts): the answer to a
//! `PRESENCE` request, as JSON, from the same
//! [`crate::presence::PresenceHub::snapshot`] (this node's memory, or Redis
//! in a cluster).
//!
//! An entry's client info is rendered like an SSE payload: `"info"` when
//! its MessagePack converts to JSON, else `"info_base64"`
//! ([`crate::fallback::render::PayloadJson`]).

use hyper::{Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::fallback::render::{PayloadJson, PayloadMode};
use crate::presence::{PresenceEntry, PresenceError};
use crate::server_api::reply::{Body, counted_error, json_response, path_topic};
use crate::state::BrokerState;

/// What follows the topic in the path of the counts-only endpoint.
pub const STATS_SUFFIX: &str = "/stats";

/// The topic and whether only counts are asked for, from what follows
/// `/v1/presence/` in the path.
pub fn target(rest: &str) -> (&str, bool) {
    match rest.strip_suffix(STATS_SUFFIX) {
        Some(topic) => (topic, true),
        None => (rest, false),
    }
}

/// One entry as JSON: `client`, `user` when not anonymous, `info` (or
/// `info_base64`) when the token gave client info.
fn entry_json(entry: &PresenceEntry) -> Value {
    let mut object = Map::new();
    object.insert("client".to_owned(), Value::from(&*entry.client));
    if let Some(user) = &entry.user {
        object.insert("user".to_owned(), Value::from(&**user));
    }
    if let Some(info) = &entry.info {
        PayloadJson::of(info, PayloadMode::Auto).insert_into(&mut object, "info");
    }
    Value::Object(object)
}

/// Answers `GET /v1/presence/{topic}[/stats]` (the caller checked the
/// admin grant): 400 `invalid_topic`, 404 `presence_disabled` for a topic
/// without presence, 503 `internal` when a cluster node cannot read Redis,
/// else 200.
pub async fn answer(state: &BrokerState, rest: &str) -> Response<Body> {
    let (topic, counts_only) = target(rest);
    let topic = match path_topic(state, topic) {
        Ok(topic) => topic,
        Err(answer) => return *answer,
    };
    let snapshot = match state.registry.policy(topic.as_str()).presence {
        false => Err(PresenceError::Disabled(topic.as_str().to_owned())),
        true => state.presence.snapshot(topic, counts_only).await,
    };
    let snapshot = match snapshot {
        Ok(snapshot) => snapshot,
        Err(e) => {
            let status = match e {
                PresenceError::Disabled(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            return counted_error(state, status, e.error_code(), &e.to_string());
        }
    };
    let mut body = json!({
        "topic": topic.as_str(),
        "clients": snapshot.clients,
        "users": snapshot.users,
    });
    if let Some(entries) = &snapshot.entries {
        body["entries"] = entries.iter().map(entry_json).collect();
    }
    json_response(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;

    #[test]
    fn paths_and_entries() {
        assert_eq!(target("chat.room/stats"), ("chat.room", true));
        assert_eq!(target("chat.room"), ("chat.room", false));
        let entry = |user: Option<&str>, info: Option<&[u8]>| PresenceEntry {
            client: Arc::from("c1"),
            user: user.map(Arc::from),
            info: info.map(Bytes::copy_from_slice),
        };
        assert_eq!(entry_json(&entry(None, None)), json!({"client": "c1"}));
        assert_eq!(
            entry_json(&entry(Some("ann"), Some(&[0x81, 0xa1, b'n', 1]))),
            json!({"client": "c1", "user": "ann", "info": {"n": 1}})
        );
        assert_eq!(
            entry_json(&entry(None, Some(&[0xc4, 0x01, 0x00]))),
            json!({"client": "c1", "info_base64": "xAEA"})
        );
    }
}
