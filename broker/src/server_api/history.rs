//! `GET /v1/history/{topic}?since=EPOCH:SEQ&limit=N&payload=auto|base64`:
//! what a topic keeps of its past, as JSON, with its current position.
//!
//! The page is chosen exactly as a `SUBSCRIBE` with `since` chooses its
//! replay ([`crate::replay::ReplayAsk`]), on the same memory: on a single
//! node the registry's [`TopicMemory`], in a cluster the memory rebuilt
//! from what Redis keeps ([`crate::cluster::catch_up::restore`]), so both
//! answer the same.
//!
//! * Without `since`: the newest `limit` messages kept, oldest first.
//! * With `since` that can be resumed (the same epoch, and the history
//!   reaches back to the message right after it without a gap): the first
//!   `limit` messages after it, and `"recovered": true`.
//! * With `since` that cannot be resumed (another epoch: the topic was
//!   reset or forgotten; a seq the history no longer reaches, or one ahead
//!   of the topic): the oldest `limit` messages kept and `"recovered":
//!   false`, as `SUBSCRIBE` reports the position in `missed`.
//!
//! A topic the broker does not know has epoch `"0"`, seq 0 and no messages
//! (as `missed` reports a topic that no longer exists); it is not created.

use bytes::Bytes;
use hyper::{Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};
use tickwire_protocol::ErrorCode;
use tickwire_protocol::message::{Position, ServerMessage};
use tickwire_protocol::topic::Topic;

use crate::cluster::backplane::Backplane;
use crate::cluster::catch_up::restore;
use crate::cluster::read::{ReadError, TopicRead, read_topics};
use crate::fallback::frame_body;
use crate::fallback::render::{PayloadJson, PayloadMode};
use crate::history::TopicMemory;
use crate::server_api::reply::{Body, bad_request, counted_error, json_response, path_topic};
use crate::state::BrokerState;

/// Messages per answer when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Most messages one answer holds.
pub const MAX_LIMIT: usize = 1000;

/// The parameters of a history request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryQuery {
    /// `since=EPOCH:SEQ`: the messages after this position.
    pub since: Option<Position>,
    /// `limit`: most messages, 1 ..= [`MAX_LIMIT`].
    pub limit: usize,
    /// `payload`: how payloads are rendered.
    pub payload: PayloadMode,
}

impl HistoryQuery {
    /// Parses `since`, `limit` and `payload` (each at most once,
    /// percent-decoded); the error names the parameter.
    pub fn parse(query: Option<&str>) -> Result<HistoryQuery, String> {
        let mut parsed = HistoryQuery {
            since: None,
            limit: DEFAULT_LIMIT,
            payload: PayloadMode::Auto,
        };
        let mut seen = Vec::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| format!("{key}: not UTF-8 once decoded"))?;
            if seen.contains(&key) {
                return Err(format!("{key} given more than once"));
            }
            seen.push(key);
            match key {
                "since" => {
                    parsed.since = Some(parse_position(&value).ok_or_else(|| {
                        format!("since `{value}`: write EPOCH:SEQ, two decimal numbers")
                    })?);
                }
                "limit" => {
                    parsed.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            format!("limit `{value}`: write a number, 1 to {MAX_LIMIT}")
                        })?;
                }
                "payload" => {
                    parsed.payload = match &*value {
                        "auto" => PayloadMode::Auto,
                        "base64" => PayloadMode::Base64,
                        _ => return Err(format!("payload `{value}`: auto or base64")),
                    };
                }
                other => {
                    return Err(format!(
                        "unsupported query parameter {other}; /v1/history takes since, limit and payload"
                    ));
                }
            }
        }
        Ok(parsed)
    }
}

/// `EPOCH:SEQ` as two decimal u64.
pub fn parse_position(text: &str) -> Option<Position> {
    let (epoch, seq) = text.split_once(':')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(epoch) && digits(seq)).then_some(())?;
    Some(Position {
        epoch: epoch.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

/// One answer's worth of a topic's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The topic's position (epoch 0, seq 0: the broker does not know it).
    pub position: Position,
    /// With `since`: whether the page continues right after it.
    pub recovered: Option<bool>,
    /// The delivery frames, oldest first.
    pub frames: Vec<Bytes>,
}

impl Page {
    /// The page of a topic the broker does not know.
    fn unknown(since: Option<Position>) -> Page {
        Page {
            position: Position { epoch: 0, seq: 0 },
            recovered: since.map(|_| false),
            frames: Vec::new(),
        }
    }

    /// The page `memory` (of a topic at `position`) gives `query` (see the
    /// module documentation).
    pub fn select(memory: &TopicMemory, position: Position, query: &HistoryQuery) -> Page {
        let mut frames = Vec::new();
        let recovered = query.since.map(|from| {
            let resumed = from.epoch == position.epoch
                && memory.frames_after(from.seq, position.seq, &mut frames);
            if !resumed {
                frames.clear();
                memory.history_frames(&mut frames);
            }
            frames.truncate(query.limit);
            resumed
        });
        if recovered.is_none() {
            memory.history_frames(&mut frames);
            let older = frames.len().saturating_sub(query.limit);
            frames.drain(..older);
        }
        Page {
            position,
            recovered,
            frames,
        }
    }

    /// The answer's JSON for `topic`.
    fn to_json(&self, topic: &str, mode: PayloadMode) -> Value {
        let messages: Vec<Value> = self
            .frames
            .iter()
            .filter_map(|frame| message_json(frame, mode))
            .collect();
        let mut body = json!({
            "topic": topic,
            "epoch": self.position.epoch.to_string(),
            "seq": self.position.seq,
            "messages": messages,
        });
        if let Some(recovered) = self.recovered {
            body["recovered"] = Value::Bool(recovered);
        }
        body
    }
}

/// `{"seq", "time", "payload" | "payload_base64"}` of one delivery frame.
fn message_json(frame: &Bytes, mode: PayloadMode) -> Option<Value> {
    let body = frame_body(frame)?;
    let ServerMessage::Message(delivery) = ServerMessage::decode(&body).ok()? else {
        return None;
    };
    let mut message = Map::new();
    message.insert("seq".to_owned(), Value::from(delivery.seq));
    message.insert("time".to_owned(), Value::from(delivery.time_us));
    PayloadJson::of(&delivery.payload, mode).insert_into(&mut message, "payload");
    Some(Value::Object(message))
}

/// The page of `topic` from this node's registry.
fn read_local(state: &BrokerState, topic: Topic<'_>, query: &HistoryQuery) -> Page {
    state
        .registry
        .read_memory(topic.as_str(), |memory, position| {
            Page::select(memory, position, query)
        })
        .unwrap_or_else(|| Page::unknown(query.since))
}

/// The page of `topic` from what Redis keeps (cluster mode).
async fn read_cluster(
    state: &BrokerState,
    backplane: &Backplane,
    topic: Topic<'_>,
    query: &HistoryQuery,
) -> Result<Page, ReadError> {
    let mut connection = backplane.connection().ok_or(ReadError::Unavailable)?;
    let policy = state.registry.policy(topic.as_str());
    let read = TopicRead {
        topic: topic.as_str().to_owned(),
        create: false,
        after: (policy.history_messages > 0).then_some(0),
        count: policy.history_messages,
        newest: false,
    };
    let records = read_topics(&mut connection, &[read]).await?;
    let Some(Some(record)) = records.into_iter().next() else {
        return Ok(Page::unknown(query.since));
    };
    let memory = restore(
        &backplane.replay_budget,
        &record,
        policy,
        std::time::Instant::now(),
    );
    Ok(Page::select(&memory, record.position, query))
}

/// Answers `GET /v1/history/{topic}` (the caller checked the admin
/// grant): 400 `invalid_topic` or `invalid_option`, 503 `internal` when a
/// cluster node cannot read Redis, else 200 with the page.
pub async fn answer(state: &BrokerState, topic: &str, query: Option<&str>) -> Response<Body> {
    let topic = match path_topic(state, topic) {
        Ok(topic) => topic,
        Err(answer) => return *answer,
    };
    let query = match HistoryQuery::parse(query) {
        Ok(query) => query,
        Err(message) => return bad_request(state, ErrorCode::InvalidOption, &message),
    };
    let page = match &state.backplane {
        None => read_local(state, topic, &query),
        Some(backplane) => match read_cluster(state, backplane, topic, &query).await {
            Ok(page) => page,
            Err(e) => {
                let message = format!("cannot read the topic's history in Redis: {e}");
                return counted_error(
                    state,
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::Internal,
                    &message,
                );
            }
        },
    };
    json_response(StatusCode::OK, page.to_json(topic.as_str(), query.payload))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use tickwire_protocol::message::encode_delivery_frame;
    use tickwire_protocol::topic::Pattern;

    use super::*;
    use crate::config::TopicPolicy;
    use crate::history::StorageBudget;
    use crate::outbound::SlowConsumerPolicy;

    const EPOCH: u64 = 77;

    /// A topic at seq 10 keeping messages 6..=10.
    fn memory() -> TopicMemory {
        let policy = TopicPolicy {
            pattern: Pattern::everything(),
            history_messages: 5,
            history_bytes: 1 << 20,
            history_age: None,
            retain: false,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            client_retain: None,
            presence: false,
        };
        let mut memory = TopicMemory::new(Arc::new(StorageBudget::detached()));
        for seq in 1..=10 {
            let at = Position { epoch: EPOCH, seq };
            let frame = encode_delivery_frame("t", at, seq * 1000, &[seq as u8]);
            memory
                .record(seq, Instant::now(), &frame, &policy, false)
                .unwrap();
        }
        memory
    }

    /// The page of the topic of [`memory`] at seq 10 for `query`.
    fn page_of(query: &str) -> (Page, PayloadMode) {
        let query = HistoryQuery::parse(Some(query)).unwrap();
        let at = Position {
            epoch: EPOCH,
            seq: 10,
        };
        (Page::select(&memory(), at, &query), query.payload)
    }

    fn seqs(query: &str) -> (Option<bool>, Vec<u64>) {
        let (page, mode) = page_of(query);
        let json = page.to_json("t", mode);
        let seqs = json["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        (page.recovered, seqs)
    }

    #[test]
    fn pages_follow_the_subscribe_since_rules() {
        assert_eq!(seqs(""), (None, vec![6, 7, 8, 9, 10]));
        assert_eq!(seqs("limit=2"), (None, vec![9, 10]));
        assert_eq!(seqs("since=77:7"), (Some(true), vec![8, 9, 10]));
        assert_eq!(seqs("since=77:5&limit=2"), (Some(true), vec![6, 7]));
        assert_eq!(seqs("since=77:10"), (Some(true), vec![]));
        assert_eq!(
            seqs("since=77:4&limit=2"),
            (Some(false), vec![6, 7]),
            "too old"
        );
        assert_eq!(
            seqs("since=77:11"),
            (Some(false), vec![6, 7, 8, 9, 10]),
            "ahead"
        );
        assert_eq!(
            seqs("since=78:7"),
            (Some(false), vec![6, 7, 8, 9, 10]),
            "stale epoch"
        );
    }

    #[test]
    fn messages_render_like_sse_payloads() {
        let (page, mode) = page_of("limit=1&payload=base64");
        assert_eq!(
            page.to_json("t", mode),
            json!({"topic": "t", "epoch": "77", "seq": 10,
                   "messages": [{"seq": 10, "time": 10000, "payload_base64": "Cg=="}]})
        );
        let (page, mode) = page_of("limit=1");
        assert_eq!(page.to_json("t", mode)["messages"][0]["payload"], 10);
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        for (query, word) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("since=1", "since"),
            ("since=a:1", "since"),
            ("since=1:-1", "since"),
            ("payload=json", "payload"),
            ("limit=1&limit=2", "limit"),
            ("after=x", "after"),
        ] {
            let message = HistoryQuery::parse(Some(query)).unwrap_err();
            assert!(message.contains(word), "{query}: {message}");
        }
        assert_eq!(
            HistoryQuery::parse(Some("since=18446744073709551615%3A3"))
                .unwrap()
                .since,
            Some(Position {
                epoch: u64::MAX,
                seq: 3
            })
        );
    }
}
