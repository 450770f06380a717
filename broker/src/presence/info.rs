//! The client info claim: the token's JSON value converted to MessagePack
//! once, at verification, so that every presence answer and event copies
//! bytes instead of converting again.

use serde_json::Value;
use tickwire_protocol::msgpack;

/// The MessagePack form of a token's client info, or `None` when it nests
/// deeper than [`msgpack::MAX_SKIP_DEPTH`] levels: such an info could not be
/// read back by the broker's own MessagePack reader (presence events in a
/// cluster carry it), so the token is refused instead.
pub fn info_to_msgpack(value: &Value) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    json_to_msgpack(value, &mut out);
    msgpack::Reader::new(&out).skip_value().ok()?;
    Some(out)
}

/// Appends the MessagePack form of `value` to `out`: integers in their
/// shortest form, other numbers as float 64, strings, arrays and maps as
/// such. serde_json bounds the nesting when it parses (128 levels).
pub fn json_to_msgpack(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => msgpack::write_nil(out),
        Value::Bool(b) => msgpack::write_bool(out, *b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => msgpack::write_u64(out, u),
            (None, Some(i)) => write_negative(out, i),
            (None, None) => {
                out.push(0xcb);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_be_bytes());
            }
        },
        Value::String(s) => msgpack::write_str(out, s),
        Value::Array(items) => {
            msgpack::write_array_len(out, items.len());
            for item in items {
                json_to_msgpack(item, out);
            }
        }
        Value::Object(map) => {
            msgpack::write_map_len(out, map.len());
            for (key, item) in map {
                msgpack::write_str(out, key);
                json_to_msgpack(item, out);
            }
        }
    }
}

/// A negative integer in its shortest MessagePack form.
fn write_negative(out: &mut Vec<u8>, i: i64) {
    if i >= -32 {
        out.push(i as i8 as u8);
    } else if let Ok(v) = i8::try_from(i) {
        out.extend_from_slice(&[0xd0, v as u8]);
    } else if let Ok(v) = i16::try_from(i) {
        out.push(0xd1);
        out.extend_from_slice(&v.to_be_bytes());
    } else if let Ok(v) = i32::try_from(i) {
        out.push(0xd2);
        out.extend_from_slice(&v.to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn info_the_broker_cannot_read_back_is_refused() {
        let nested = |depth: usize| -> Value {
            serde_json::from_str(&format!("{}1{}", "[".repeat(depth), "]".repeat(depth))).unwrap()
        };
        assert!(info_to_msgpack(&nested(msgpack::MAX_SKIP_DEPTH)).is_some());
        assert!(info_to_msgpack(&nested(40)).is_none());
        assert!(info_to_msgpack(&serde_json::json!({"name": "ann"})).is_some());
    }
    use serde_json::json;

    use super::*;

    fn encode(value: Value) -> Vec<u8> {
        let mut out = Vec::new();
        json_to_msgpack(&value, &mut out);
        out
    }

    #[test]
    fn json_values_become_canonical_msgpack() {
        assert_eq!(encode(json!(null)), [0xc0]);
        assert_eq!(encode(json!(true)), [0xc3]);
        assert_eq!(encode(json!(5)), [0x05]);
        assert_eq!(encode(json!(-1)), [0xff]);
        assert_eq!(encode(json!(-33)), [0xd0, 0xdf]);
        assert_eq!(encode(json!(-200)), [0xd1, 0xff, 0x38]);
        assert_eq!(encode(json!(-70000)), [0xd2, 0xff, 0xfe, 0xee, 0x90]);
        assert_eq!(encode(json!(i64::MIN))[0], 0xd3);
        assert_eq!(encode(json!(1.5)), [0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            encode(json!({"name": "Al", "tags": [1]})),
            b"\x82\xa4name\xa2Al\xa4tags\x91\x01"
        );
        let mut r = msgpack::Reader::new(&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]);
        assert!(r.skip_value().is_ok());
    }
}
