//! The cursor of the fallback transports: the per-topic positions a client
//! has received, as one opaque-looking string.
//!
//! A cursor is base64url without padding (RFC 4648 section 5) of the
//! MessagePack map `{topic: [epoch, seq]}`, exactly the value of the
//! `SUBSCRIBE` option `since`. [`decode`] reads one from a request;
//! [`Cursor`] tracks the positions of one SSE stream or poll session and
//! encodes them, keeping at most [`MAX_TOPICS`] topics and [`MAX_TEXT`]
//! bytes of text: over that, the topics delivered longest ago are dropped.

use std::collections::{BTreeMap, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tickwire_protocol::message::Position;
use tickwire_protocol::msgpack::{self, Reader};
use tickwire_protocol::topic::Topic;

/// Most topics a cursor names.
pub const MAX_TOPICS: usize = 1024;

/// Most characters of a cursor's text.
pub const MAX_TEXT: usize = 64 * 1024;

/// Most bytes of the MessagePack map behind a cursor of [`MAX_TEXT`]
/// characters (base64 turns 3 bytes into 4 characters).
const MAX_ENCODED: usize = MAX_TEXT / 4 * 3;

const MALFORMED: &str = "cursor is not a MessagePack map {topic: [epoch, seq]}";

/// Reads a cursor: the positions it names, in its order. The error says
/// what is wrong, for the 400 answer.
pub fn decode(text: &str) -> Result<Vec<(String, Position)>, String> {
    if text.len() > MAX_TEXT {
        return Err(format!("cursor longer than {MAX_TEXT} characters"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| "cursor is not base64url without padding".to_owned())?;
    let mut r = Reader::new(&bytes);
    let malformed = |_| MALFORMED.to_owned();
    let len = r.read_map_len().map_err(malformed)?;
    if len > MAX_TOPICS {
        return Err(format!("cursor names more than {MAX_TOPICS} topics"));
    }
    let mut positions: Vec<(String, Position)> = Vec::with_capacity(len);
    for _ in 0..len {
        let topic = r.read_str().map_err(malformed)?;
        if Topic::new(topic).is_err() {
            return Err(format!("cursor names {topic:?}, which is not a topic"));
        }
        if r.read_array_len().map_err(malformed)? != 2 {
            return Err(MALFORMED.to_owned());
        }
        let epoch = r.read_u64().map_err(malformed)?;
        let seq = r.read_u64().map_err(malformed)?;
        if positions.iter().any(|(t, _)| t == topic) {
            return Err(format!("cursor names {topic:?} twice"));
        }
        positions.push((topic.to_owned(), Position { epoch, seq }));
    }
    r.finish().map_err(malformed)?;
    Ok(positions)
}

/// Bytes one entry adds to the encoded map.
fn entry_len(topic: &str, at: Position) -> usize {
    msgpack::str_header_len(topic.len())
        + topic.len()
        + 1
        + msgpack::u64_len(at.epoch)
        + msgpack::u64_len(at.seq)
}

/// The positions of one SSE stream or poll session: those of the request's
/// cursor, then moved by every delivered message.
#[derive(Debug, Default)]
pub struct Cursor {
    /// Topic → its position and the stamp of its last update.
    positions: HashMap<String, (Position, u64)>,
    /// Stamp → topic, oldest update first.
    order: BTreeMap<u64, String>,
    next_stamp: u64,
    /// Bytes of the entries' encodings (the map header aside).
    encoded: usize,
}

impl Cursor {
    /// A cursor starting from `positions` (a request's cursor).
    pub fn new(positions: &[(String, Position)]) -> Self {
        let mut cursor = Cursor::default();
        for (topic, at) in positions {
            cursor.record(topic, *at);
        }
        cursor
    }

    /// Whether the cursor names no topic.
    pub fn is_empty(&self) -> bool {
        self.positions.is_empty()
    }

    /// Moves `topic` to `at` (a delivered message), dropping the topics
    /// updated longest ago if the cursor outgrows its bounds.
    pub fn record(&mut self, topic: &str, at: Position) {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        match self.positions.get_mut(topic) {
            Some((position, old_stamp)) => {
                self.encoded -= entry_len(topic, *position);
                self.order.remove(old_stamp);
                *position = at;
                *old_stamp = stamp;
            }
            None => {
                self.positions.insert(topic.to_owned(), (at, stamp));
            }
        }
        self.encoded += entry_len(topic, at);
        self.order.insert(stamp, topic.to_owned());
        // The map header takes at most 5 bytes.
        while self.positions.len() > MAX_TOPICS || self.encoded + 5 > MAX_ENCODED {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((position, _)) = self.positions.remove(&oldest) {
                self.encoded -= entry_len(&oldest, position);
            }
        }
    }

    /// The cursor's text: base64url of the MessagePack map, oldest update
    /// first.
    pub fn encode(&self) -> String {
        let mut out = Vec::with_capacity(self.encoded + 5);
        msgpack::write_map_len(&mut out, self.positions.len());
        for topic in self.order.values() {
            if let Some((at, _)) = self.positions.get(topic) {
                msgpack::write_str(&mut out, topic);
                msgpack::write_array_len(&mut out, 2);
                msgpack::write_u64(&mut out, at.epoch);
                msgpack::write_u64(&mut out, at.seq);
            }
        }
        URL_SAFE_NO_PAD.encode(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(epoch: u64, seq: u64) -> Position {
        Position { epoch, seq }
    }

    #[test]
    fn the_documented_example_round_trips() {
        // docs/protocol.md section 15.5 shows these bytes and this text.
        let doc = include_str!("../../../docs/protocol.md");
        let epoch = 0x8a3f_0c2e_5b7d_1946;
        let mut cursor = Cursor::default();
        cursor.record("stocks.AAPL", at(epoch, 12));
        let text = cursor.encode();
        assert_eq!(text, "gatzdG9ja3MuQUFQTJLPij8MLlt9GUYM");
        let bytes = URL_SAFE_NO_PAD.decode(&text).unwrap();
        let hex: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert!(doc.contains(&hex.join(" ")), "{}", hex.join(" "));
        assert!(doc.contains(&text));
        assert_eq!(
            decode(&text).unwrap(),
            vec![("stocks.AAPL".into(), at(epoch, 12))]
        );
        assert_eq!(Cursor::default().encode(), "gA");
        assert_eq!(decode("gA").unwrap(), vec![]);
    }

    #[test]
    fn a_later_position_replaces_the_earlier_and_moves_to_the_end() {
        let mut cursor = Cursor::new(&[("x".into(), at(1, 1)), ("y".into(), at(1, 5))]);
        cursor.record("x", at(1, 2));
        let positions = decode(&cursor.encode()).unwrap();
        assert_eq!(
            positions,
            vec![("y".into(), at(1, 5)), ("x".into(), at(1, 2))]
        );
    }

    #[test]
    fn bad_cursors_are_refused_with_a_reason() {
        assert!(decode("gA==").is_err(), "padding");
        assert!(decode("!!").is_err(), "not base64url");
        assert!(decode("kA").is_err(), "an array, not a map");
        assert!(decode("gaNhLmKSCQwA").is_err(), "trailing byte");
        let mut bad_topic = Vec::new();
        msgpack::write_map_len(&mut bad_topic, 1);
        msgpack::write_str(&mut bad_topic, "a.*");
        msgpack::write_array_len(&mut bad_topic, 2);
        msgpack::write_u64(&mut bad_topic, 1);
        msgpack::write_u64(&mut bad_topic, 1);
        let err = decode(&URL_SAFE_NO_PAD.encode(bad_topic)).unwrap_err();
        assert!(err.contains("not a topic"), "{err}");
        assert!(decode(&"A".repeat(MAX_TEXT + 1)).is_err(), "too long");
        let mut many = Vec::new();
        msgpack::write_map_len(&mut many, MAX_TOPICS + 1);
        assert!(
            decode(&URL_SAFE_NO_PAD.encode(many))
                .unwrap_err()
                .contains("more than")
        );
    }

    #[test]
    fn the_cursor_keeps_the_most_recently_delivered_topics_within_its_bounds() {
        let mut cursor = Cursor::default();
        for i in 0..MAX_TOPICS + 10 {
            cursor.record(&format!("t{i}"), at(1, i as u64));
        }
        let positions = decode(&cursor.encode()).unwrap();
        assert_eq!(positions.len(), MAX_TOPICS);
        assert_eq!(positions[0].0, "t10");
        // Long topic names: the text bound applies first.
        let mut long = Cursor::default();
        for i in 0..MAX_TOPICS {
            long.record(
                &format!("{i:04}.{}", "x".repeat(200)),
                at(u64::MAX, u64::MAX),
            );
        }
        let text = long.encode();
        assert!(text.len() <= MAX_TEXT, "{}", text.len());
        let kept = decode(&text).unwrap();
        assert!(kept.len() < MAX_TOPICS);
        assert!(kept.last().unwrap().0.starts_with("1023."));
    }
}
