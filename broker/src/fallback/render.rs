//! What the fallback transports send, as JSON text: deliveries, and the
//! events that stand for the WebSocket replies (`subscribed`, `error`,
//! `close`).
//!
//! A delivery's payload is rendered as `"data": <json>` when it is one
//! complete MessagePack value that maps to JSON ([`msgpack_to_json`]),
//! unless the client asked for `payload=base64`; otherwise as
//! `"data_base64"`, standard base64 with padding.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Number, Value, json};
use tickwire_protocol::message::{Delivery, Position, PresenceEntry};

/// How a client wants payloads rendered (`payload=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PayloadMode {
    /// JSON when the payload is a MessagePack value that maps to JSON, else
    /// base64.
    #[default]
    Auto,
    /// Always base64.
    Base64,
}

/// Largest integer magnitude a JavaScript number holds exactly (2^53 − 1).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Deepest nesting of arrays and maps rendered as JSON; deeper payloads go
/// as base64 (and the reader's recursion stays bounded).
const MAX_DEPTH: usize = 64;

/// Most values (scalars, arrays and maps, at any depth) a payload rendered
/// as JSON may hold; larger ones go as base64. A value of one byte can
/// become tens of bytes of JSON tree, rendered once per SSE or poll
/// subscriber: this bounds that amplification.
const MAX_VALUES: usize = 65_536;

/// The JSON value of `payload` when it is exactly one MessagePack value
/// (every byte used) made of nil, booleans, integers within ±(2^53 − 1),
/// finite floats, strings, arrays and maps with string keys (no key twice);
/// `None` otherwise (bin, ext, other key types, trailing bytes, …).
pub fn msgpack_to_json(payload: &[u8]) -> Option<Value> {
    let mut reader = ValueReader {
        buf: payload,
        pos: 0,
        values: 0,
    };
    let value = reader.value(0)?;
    (reader.pos == payload.len()).then_some(value)
}

struct ValueReader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Values read so far, bounded by [`MAX_VALUES`].
    values: usize,
}

impl ValueReader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        )
    }

    fn len(&mut self, n: usize) -> Option<usize> {
        usize::try_from(self.be(n)?).ok()
    }

    fn unsigned(v: u64) -> Option<Value> {
        (v <= MAX_SAFE_INTEGER).then(|| Value::from(v))
    }

    fn signed(v: i64) -> Option<Value> {
        (v.unsigned_abs() <= MAX_SAFE_INTEGER).then(|| Value::from(v))
    }

    fn float(v: f64) -> Option<Value> {
        Number::from_f64(v).map(Value::Number)
    }

    fn str(&mut self, len: usize) -> Option<Value> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).ok().map(Value::from)
    }

    fn array(&mut self, len: usize, depth: usize) -> Option<Value> {
        // Every element takes at least one byte: a count beyond what is left
        // is a lie, and nothing is allocated for it.
        if len > self.buf.len() - self.pos {
            return None;
        }
        let mut items = Vec::with_capacity(len);
        for _ in 0..len {
            items.push(self.value(depth + 1)?);
        }
        Some(Value::Array(items))
    }

    fn map(&mut self, len: usize, depth: usize) -> Option<Value> {
        if len > self.buf.len() - self.pos {
            return None;
        }
        let mut map = Map::new();
        for _ in 0..len {
            let Value::String(key) = self.value(depth + 1)? else {
                return None;
            };
            let value = self.value(depth + 1)?;
            if map.insert(key, value).is_some() {
                return None;
            }
        }
        Some(Value::Object(map))
    }

    fn value(&mut self, depth: usize) -> Option<Value> {
        self.values += 1;
        if depth > MAX_DEPTH || self.values > MAX_VALUES {
            return None;
        }
        let marker = *self.take(1)?.first()?;
        match marker {
            0x00..=0x7f => Some(Value::from(marker)),
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), depth),
            0x90..=0x9f => self.array(usize::from(marker & 0x0f), depth),
            0xa0..=0xbf => self.str(usize::from(marker & 0x1f)),
            0xc0 => Some(Value::Null),
            0xc2 => Some(Value::Bool(false)),
            0xc3 => Some(Value::Bool(true)),
            0xca => {
                let bits = u32::try_from(self.be(4)?).ok()?;
                Self::float(f64::from(f32::from_bits(bits)))
            }
            0xcb => Self::float(f64::from_bits(self.be(8)?)),
            0xcc => Self::unsigned(self.be(1)?),
            0xcd => Self::unsigned(self.be(2)?),
            0xce => Self::unsigned(self.be(4)?),
            0xcf => Self::unsigned(self.be(8)?),
            // Sign-extend from the encoded width.
            0xd0 => Self::signed(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => Self::signed(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Self::signed(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Self::signed(self.be(8)? as i64),
            0xd9 => {
                let len = self.len(1)?;
                self.str(len)
            }
            0xda => {
                let len = self.len(2)?;
                self.str(len)
            }
            0xdb => {
                let len = self.len(4)?;
                self.str(len)
            }
            0xdc => {
                let len = self.len(2)?;
                self.array(len, depth)
            }
            0xdd => {
                let len = self.len(4)?;
                self.array(len, depth)
            }
            0xde => {
                let len = self.len(2)?;
                self.map(len, depth)
            }
            0xdf => {
                let len = self.len(4)?;
                self.map(len, depth)
            }
            0xe0..=0xff => Some(Value::from(i64::from(marker as i8))),
            // bin, ext, fixext and the never-used 0xc1.
            _ => None,
        }
    }
}

/// A payload (or presence client info) as JSON shows it: the JSON value it
/// converts to, or its base64 text.
#[derive(Debug, Clone, PartialEq)]
pub enum PayloadJson {
    /// It converts ([`msgpack_to_json`]) and `payload=auto` was asked for.
    Json(Value),
    /// Standard base64 with padding.
    Base64(String),
}

impl PayloadJson {
    /// `payload` rendered as `mode` asks.
    pub fn of(payload: &[u8], mode: PayloadMode) -> Self {
        let json = match mode {
            PayloadMode::Auto => msgpack_to_json(payload),
            PayloadMode::Base64 => None,
        };
        json.map_or_else(
            || PayloadJson::Base64(STANDARD.encode(payload)),
            PayloadJson::Json,
        )
    }

    /// Inserts it into `object` under `key`, or as text under
    /// `{key}_base64`.
    pub fn insert_into(self, object: &mut Map<String, Value>, key: &str) {
        match self {
            PayloadJson::Json(value) => object.insert(key.to_owned(), value),
            PayloadJson::Base64(text) => object.insert(format!("{key}_base64"), Value::from(text)),
        };
    }
}

/// The delivery JSON of one message:
/// `{"topic":…,"epoch":"…","seq":…,"time":…,"data":…}` (or `data_base64`).
pub fn delivery_json(delivery: &Delivery<'_>, mode: PayloadMode) -> String {
    let payload = match PayloadJson::of(&delivery.payload, mode) {
        PayloadJson::Json(value) => format!("\"data\":{value}"),
        PayloadJson::Base64(text) => format!("\"data_base64\":\"{text}\""),
    };
    format!(
        "{{\"topic\":{},\"epoch\":\"{}\",\"seq\":{},\"time\":{},{payload}}}",
        Value::from(delivery.topic),
        delivery.epoch,
        delivery.seq,
        delivery.time_us,
    )
}

/// The JSON of a `join` or `leave` event: `{"topic", "client", "user"?,
/// "info"?}` (no `client` in user-level events); the client info as JSON
/// when it converts (as payloads do with `payload=auto`), else as
/// `info_base64`.
pub fn presence_json(topic: &str, entry: &PresenceEntry<'_>) -> Value {
    let mut event = Map::new();
    event.insert("topic".into(), Value::from(topic));
    if let Some(client) = entry.client {
        event.insert("client".into(), Value::from(client));
    }
    if let Some(user) = entry.user {
        event.insert("user".into(), Value::from(user));
    }
    if let Some(info) = &entry.info {
        match msgpack_to_json(info) {
            Some(value) => event.insert("info".into(), value),
            None => event.insert("info_base64".into(), Value::from(STANDARD.encode(info))),
        };
    }
    Value::Object(event)
}

/// The `missed` map of a `subscribed` event: topic → `["EPOCH", "SEQ"]`
/// (strings: u64 does not fit a JSON number).
pub fn missed_json(missed: &[(String, Position)]) -> Value {
    missed
        .iter()
        .map(|(topic, at)| {
            (
                topic.clone(),
                json!([at.epoch.to_string(), at.seq.to_string()]),
            )
        })
        .collect::<Map<_, _>>()
        .into()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tickwire_protocol::msgpack;

    use super::*;

    fn delivery(payload: &[u8]) -> Delivery<'static> {
        Delivery {
            topic: "stocks.AAPL",
            epoch: 9_961_694_294_009_780_550,
            seq: 12,
            time_us: 1_700_000_000_000_000,
            payload: Bytes::copy_from_slice(payload),
        }
    }

    #[test]
    fn a_msgpack_map_renders_as_json_data() {
        // {"px": 1.5}
        let payload = [0x81, 0xa2, b'p', b'x', 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            delivery_json(&delivery(&payload), PayloadMode::Auto),
            r#"{"topic":"stocks.AAPL","epoch":"9961694294009780550","seq":12,"time":1700000000000000,"data":{"px":1.5}}"#
        );
        assert_eq!(
            delivery_json(&delivery(&payload), PayloadMode::Base64),
            r#"{"topic":"stocks.AAPL","epoch":"9961694294009780550","seq":12,"time":1700000000000000,"data_base64":"gaJweMs/+AAAAAAAAA=="}"#
        );
    }

    #[test]
    fn every_json_type_converts() {
        let mut p = Vec::new();
        msgpack::write_array_len(&mut p, 8);
        msgpack::write_nil(&mut p);
        msgpack::write_bool(&mut p, true);
        msgpack::write_u64(&mut p, MAX_SAFE_INTEGER);
        p.extend_from_slice(&[0xd3, 0xff, 0xe0, 0, 0, 0, 0, 0, 1]); // -(2^53 - 1)
        p.push(0xff); // -1
        p.extend_from_slice(&[0xca, 0x3f, 0xc0, 0, 0]); // 1.5f32
        msgpack::write_str(&mut p, "é");
        p.extend_from_slice(&[0xde, 0, 1, 0xa1, b'k', 0x90]); // map16 {"k": []}
        assert_eq!(
            msgpack_to_json(&p),
            Some(
                json!([null, true, 9_007_199_254_740_991u64, -9_007_199_254_740_991i64, -1, 1.5, "é", {"k": []}])
            )
        );
    }

    #[test]
    fn payloads_without_a_json_form_go_as_base64() {
        let cases: &[&[u8]] = &[
            b"",                                         // no value
            &[0x01, 0x02],                               // trailing bytes
            &[0xc4, 0x01, 0x00],                         // bin
            &[0xd4, 0x01, 0x00],                         // fixext
            &[0x81, 0x01, 0x02],                         // integer key
            &[0x82, 0xa1, b'a', 0x01, 0xa1, b'a', 0x02], // key twice
            &[0xcf, 0, 0x20, 0, 0, 0, 0, 0, 0],          // 2^53
            &[0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 1],       // NaN
            &[0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0],       // +inf
            &[0xa2, 0xff, 0xfe],                         // invalid UTF-8
            &[0xdd, 0xff, 0xff, 0xff, 0xff],             // array count beyond the bytes
            &[0xc1],                                     // never used
            b"random bytes \x00\xff",
        ];
        for payload in cases {
            assert_eq!(msgpack_to_json(payload), None, "{payload:?}");
            assert!(delivery_json(&delivery(payload), PayloadMode::Auto).contains("data_base64"));
        }
        let deep = [vec![0x91; MAX_DEPTH + 1], vec![0xc0]].concat();
        assert_eq!(msgpack_to_json(&deep), None);
        let ok = [vec![0x91; MAX_DEPTH], vec![0xc0]].concat();
        assert!(msgpack_to_json(&ok).is_some());
        // An array32 of nils: the array and its elements are the values.
        let wide = |nils: u32| {
            [
                vec![0xdd],
                nils.to_be_bytes().to_vec(),
                vec![0xc0; nils as usize],
            ]
            .concat()
        };
        let most = u32::try_from(MAX_VALUES - 1).expect("fits");
        assert!(msgpack_to_json(&wide(most)).is_some());
        assert_eq!(msgpack_to_json(&wide(most + 1)), None);
    }

    #[test]
    fn missed_positions_are_strings() {
        let missed = vec![("t".to_owned(), Position { epoch: 7, seq: 3 })];
        assert_eq!(missed_json(&missed), json!({"t": ["7", "3"]}));
    }

    #[test]
    fn presence_events_render_as_documented() {
        let entry = PresenceEntry {
            client: Some("c1"),
            user: Some("alice"),
            info: Some(Bytes::from_static(b"\x81\xa4name\xa5Alice")),
        };
        assert_eq!(
            presence_json("room.1", &entry).to_string(),
            r#"{"client":"c1","info":{"name":"Alice"},"topic":"room.1","user":"alice"}"#
        );
        let user_level = PresenceEntry {
            client: None,
            user: Some("alice"),
            info: Some(Bytes::from_static(b"\xc4\x01\x07")),
        };
        assert_eq!(
            presence_json("room.1", &user_level).to_string(),
            r#"{"info_base64":"xAEH","topic":"room.1","user":"alice"}"#
        );
        let anonymous = PresenceEntry {
            client: Some("c2"),
            ..PresenceEntry::default()
        };
        assert_eq!(
            presence_json("room.1", &anonymous),
            json!({"topic": "room.1", "client": "c2"})
        );
    }
}
