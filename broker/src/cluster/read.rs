//! Reading what Redis keeps of topics (position, history, retained value),
//! for the reply and the replay of a new subscription.
//!
//! Each topic is one call of [`READ_SCRIPT`], so its position, history and
//! retained value are read in one atomic step: the history stands for
//! exactly the messages up to the position read with it. Calls for many
//! topics (a wildcard's replay) are pipelined, [`BATCH`] at a time. The
//! topics a wildcard covers are found with `SCAN` over the position keys,
//! at most [`MAX_SCANNED_TOPICS`] of them.

use redis::aio::MultiplexedConnection;
use redis::{Script, Value};
use thiserror::Error;
use tickwire_protocol::message::Position;
use tickwire_protocol::topic::Pattern;
use tokio::time::Instant;

use crate::cluster::publisher::REDIS_TIMEOUT;
use crate::cluster::wire::{
    POSITION_TTL_SECS, READ_SCRIPT, history_key, position_key, position_key_glob,
    topic_of_position_key,
};

/// Topic reads per pipeline.
pub const BATCH: usize = 256;
/// Most topics a wildcard replay covers; the rest are not replayed.
pub const MAX_SCANNED_TOPICS: usize = 10_000;
/// Keys `SCAN` looks at per call.
const SCAN_COUNT: usize = 1000;

/// Why Redis could not be read.
#[derive(Debug, Error)]
pub enum ReadError {
    /// No connection to Redis.
    #[error("no connection to Redis")]
    Unavailable,
    /// Redis did not answer in time.
    #[error("Redis did not answer in time")]
    TimedOut,
    /// Redis answered with an error or the connection failed.
    #[error("Redis read failed: {0}")]
    Failed(#[from] redis::RedisError),
    /// Too many wildcard replays wait for Redis on this node.
    #[error("too many wildcard replays are reading Redis on this node")]
    Busy,
    /// The answer was not what the read script returns.
    #[error("unexpected answer from Redis to a topic read")]
    Malformed,
}

/// What to read of one topic.
#[derive(Debug, Clone)]
pub struct TopicRead {
    /// The topic.
    pub topic: String,
    /// Create the topic's position (a fresh epoch, seq 0) if it has none.
    pub create: bool,
    /// Read the history after this seq (`None`: no history).
    pub after: Option<u64>,
    /// Most history entries to read.
    pub count: usize,
    /// Read the newest history entry (for `last`).
    pub newest: bool,
}

/// One message Redis keeps: in a topic's history, or as its retained value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its sequence number.
    pub seq: u64,
    /// When it was published (µs since the Unix epoch).
    pub time_us: u64,
    /// The payload.
    pub payload: Vec<u8>,
}

/// What Redis keeps of one topic, read in one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRecord {
    /// The topic.
    pub topic: String,
    /// Its epoch and latest seq.
    pub position: Position,
    /// The history asked for, oldest first.
    pub history: Vec<StoredMessage>,
    /// Its retained value.
    pub retained: Option<StoredMessage>,
    /// Its newest history entry, if asked for.
    pub newest: Option<StoredMessage>,
}

/// Reads `reads` (pipelined); one record per read, `None` for a topic that
/// does not exist in Redis (and was not to be created).
pub async fn read_topics(
    connection: &mut MultiplexedConnection,
    reads: &[TopicRead],
) -> Result<Vec<Option<TopicRecord>>, ReadError> {
    let sha = Script::new(READ_SCRIPT).get_hash().to_owned();
    let mut records = Vec::with_capacity(reads.len());
    for chunk in reads.chunks(BATCH) {
        let mut pipe = redis::pipe();
        pipe.cmd("SCRIPT").arg("LOAD").arg(READ_SCRIPT).ignore();
        for read in chunk {
            let epoch = if read.create {
                rand::random::<u64>().max(1)
            } else {
                0
            };
            let after = read.after.map_or(-1, |seq| seq.min(i64::MAX as u64) as i64);
            pipe.cmd("EVALSHA")
                .arg(&sha)
                .arg(2)
                .arg(position_key(&read.topic))
                .arg(history_key(&read.topic))
                .arg(epoch)
                .arg(POSITION_TTL_SECS)
                .arg(after)
                .arg(read.count.max(1))
                .arg(u8::from(read.newest));
        }
        let answers: Vec<Value> = within_timeout(pipe.query_async(connection)).await?;
        if answers.len() != chunk.len() {
            return Err(ReadError::Malformed);
        }
        for (read, answer) in chunk.iter().zip(answers) {
            records.push(parse_record(&read.topic, answer).ok_or(ReadError::Malformed)?);
        }
    }
    Ok(records)
}

/// The topics Redis has a position for that `pattern` matches, at most
/// [`MAX_SCANNED_TOPICS`]; whether that bound cut the list short.
pub async fn scan_topics(
    connection: &mut MultiplexedConnection,
    pattern: &Pattern,
) -> Result<(Vec<String>, bool), ReadError> {
    let glob = position_key_glob(pattern);
    let deadline = Instant::now() + REDIS_TIMEOUT;
    let mut topics = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let mut command = redis::cmd("SCAN");
        command
            .arg(cursor)
            .arg("MATCH")
            .arg(&glob)
            .arg("COUNT")
            .arg(SCAN_COUNT);
        let scan = command.query_async::<(u64, Vec<String>)>(connection);
        let (next, keys) = tokio::time::timeout_at(deadline, scan)
            .await
            .map_err(|_| ReadError::TimedOut)??;
        for key in &keys {
            if let Some(topic) = topic_of_position_key(key) {
                if pattern.matches(topic.as_str()) {
                    topics.push(topic.as_str().to_owned());
                }
            }
        }
        if topics.len() >= MAX_SCANNED_TOPICS {
            topics.truncate(MAX_SCANNED_TOPICS);
            return Ok((topics, true));
        }
        if next == 0 {
            return Ok((topics, false));
        }
        cursor = next;
    }
}

async fn within_timeout<T>(
    query: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, ReadError> {
    match tokio::time::timeout(REDIS_TIMEOUT, query).await {
        Err(_) => Err(ReadError::TimedOut),
        Ok(result) => Ok(result?),
    }
}

/// Parses the read script's answer for `topic`: `Some(None)` for a topic
/// that does not exist, `None` for an answer the script does not give.
fn parse_record(topic: &str, answer: Value) -> Option<Option<TopicRecord>> {
    let Value::Array(parts) = answer else {
        return None;
    };
    let [position, history, newest] = <[Value; 3]>::try_from(parts).ok()?;
    let Value::Array(fields) = position else {
        return None;
    };
    let [epoch, seq, rs, rt, rp] = <[Value; 5]>::try_from(fields).ok()?;
    if epoch == Value::Nil {
        return Some(None);
    }
    let position = Position {
        epoch: number(&epoch)?,
        seq: number(&seq)?,
    };
    let retained = match (rs, rt, rp) {
        (Value::Nil, _, _) => None,
        (rs, rt, Value::BulkString(payload)) => Some(StoredMessage {
            seq: number(&rs)?,
            time_us: number(&rt)?,
            payload,
        }),
        _ => return None,
    };
    let mut history = entries(history)?;
    // Read newest first (the newest `count` entries): oldest first here.
    history.reverse();
    let newest = entries(newest)?.pop();
    Some(Some(TopicRecord {
        topic: topic.to_owned(),
        position,
        history,
        retained,
        newest,
    }))
}

/// Stream entries as `XRANGE` answers them: `[[ID, [t, TIME, p, PAYLOAD]], …]`
/// with ids `0-SEQ`.
fn entries(answer: Value) -> Option<Vec<StoredMessage>> {
    let Value::Array(items) = answer else {
        return None;
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Array(pair) = item else {
                return None;
            };
            let [id, fields] = <[Value; 2]>::try_from(pair).ok()?;
            let Value::BulkString(id) = id else {
                return None;
            };
            let seq = std::str::from_utf8(&id)
                .ok()?
                .strip_prefix("0-")?
                .parse()
                .ok()?;
            let Value::Array(fields) = fields else {
                return None;
            };
            let mut time_us = None;
            let mut payload = None;
            let mut fields = fields.into_iter();
            while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
                match (name, value) {
                    (Value::BulkString(name), value) if name == b"t" => {
                        time_us = number(&value);
                    }
                    (Value::BulkString(name), Value::BulkString(value)) if name == b"p" => {
                        payload = Some(value);
                    }
                    _ => {}
                }
            }
            Some(StoredMessage {
                seq,
                time_us: time_us?,
                payload: payload?,
            })
        })
        .collect()
}

/// A non-negative integer Redis gave as an integer or a decimal string.
fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        Value::BulkString(digits) => std::str::from_utf8(digits).ok()?.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    fn entry(seq: u64, payload: &[u8]) -> Value {
        Value::Array(vec![
            bulk(format!("0-{seq}").as_bytes()),
            Value::Array(vec![bulk(b"t"), bulk(b"1000"), bulk(b"p"), bulk(payload)]),
        ])
    }

    #[test]
    fn a_read_answer_parses_into_position_history_and_retained_value() {
        let answer = Value::Array(vec![
            Value::Array(vec![
                bulk(b"77"),
                bulk(b"9"),
                bulk(b"8"),
                bulk(b"900"),
                bulk(b"kept"),
            ]),
            Value::Array(vec![entry(9, b"h9"), entry(8, b"h8")]),
            Value::Array(vec![entry(9, b"h9")]),
        ]);
        let record = parse_record("a.b", answer).unwrap().unwrap();
        assert_eq!(record.position, Position { epoch: 77, seq: 9 });
        assert_eq!(record.history.len(), 2);
        assert_eq!(record.history[0].seq, 8, "oldest first");
        assert_eq!(record.history[1].payload, b"h9");
        assert_eq!(record.history[1].time_us, 1000);
        assert_eq!(
            record.retained,
            Some(StoredMessage {
                seq: 8,
                time_us: 900,
                payload: b"kept".to_vec()
            })
        );
        assert_eq!(record.newest.map(|m| m.seq), Some(9));
    }

    #[test]
    fn a_missing_topic_and_a_foreign_answer_are_told_apart() {
        let missing = Value::Array(vec![
            Value::Array(vec![Value::Nil; 5]),
            Value::Array(vec![]),
            Value::Array(vec![]),
        ]);
        assert_eq!(parse_record("a", missing), Some(None));
        for bad in [
            Value::Nil,
            Value::Array(vec![Value::Nil]),
            Value::Array(vec![
                Value::Array(vec![
                    bulk(b"1"),
                    bulk(b"x"),
                    Value::Nil,
                    Value::Nil,
                    Value::Nil,
                ]),
                Value::Array(vec![]),
                Value::Array(vec![]),
            ]),
            Value::Array(vec![
                Value::Array(vec![
                    bulk(b"1"),
                    bulk(b"2"),
                    Value::Nil,
                    Value::Nil,
                    Value::Nil,
                ]),
                Value::Array(vec![Value::Array(vec![bulk(b"5-0"), Value::Array(vec![])])]),
                Value::Array(vec![]),
            ]),
        ] {
            assert_eq!(parse_record("a", bad.clone()), None, "{bad:?}");
        }
    }
}
