//! Payloads a JSON request carries: a JSON value, sent to subscribers as
//! its MessagePack encoding, or bytes in base64 (`payload_base64`), sent
//! as they are.
//!
//! The encoding is the smallest MessagePack form of each value: integers
//! as the shortest int or uint, other numbers as float 64, strings as str,
//! arrays and objects as array and map (keys sorted, as the JSON parser
//! keeps them), so
//! that the SSE rendering ([`crate::fallback::render::msgpack_to_json`])
//! turns it back into the same JSON.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use tickwire_protocol::msgpack;

/// The MessagePack encoding of `value`. serde_json's parser bounds the
/// nesting (128 levels), so the recursion is bounded too.
pub fn to_msgpack(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => msgpack::write_nil(out),
        Value::Bool(b) => msgpack::write_bool(out, *b),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => msgpack::write_u64(out, u),
            (None, Some(i)) => write_negative(out, i),
            (None, None) => {
                out.push(0xcb);
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_bits().to_be_bytes());
            }
        },
        Value::String(s) => msgpack::write_str(out, s),
        Value::Array(items) => {
            msgpack::write_array_len(out, items.len());
            for item in items {
                write(item, out);
            }
        }
        Value::Object(map) => {
            msgpack::write_map_len(out, map.len());
            for (key, item) in map {
                msgpack::write_str(out, key);
                write(item, out);
            }
        }
    }
}

/// A negative integer in its shortest MessagePack form.
fn write_negative(out: &mut Vec<u8>, i: i64) {
    if i >= -32 {
        out.push(i as u8);
    } else if let Ok(v) = i8::try_from(i) {
        out.push(0xd0);
        out.push(v as u8);
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

/// The payload of one JSON message: `payload` (any JSON, encoded as
/// MessagePack) or `payload_base64` (standard base64 with padding), exactly
/// one of the two; the error says what is wrong.
pub fn payload_of(
    payload: Option<&Value>,
    payload_base64: Option<&Value>,
) -> Result<Vec<u8>, String> {
    match (payload, payload_base64) {
        (Some(value), None) => Ok(to_msgpack(value)),
        (None, Some(Value::String(text))) => STANDARD
            .decode(text)
            .map_err(|e| format!("payload_base64 is not standard base64 with padding: {e}")),
        (None, Some(_)) => Err("payload_base64 must be a string".to_owned()),
        (Some(_), Some(_)) => Err("give payload or payload_base64, not both".to_owned()),
        (None, None) => Err("payload or payload_base64 is missing".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::fallback::render::msgpack_to_json;

    #[test]
    fn json_round_trips_through_msgpack() {
        let value = json!({"px": 1.5, "n": -40000, "small": -3, "big": 18446744073709551615u64,
            "list": [null, true, "é", {"k": []}], "i8": -100, "i32": -3000000000i64});
        let encoded = to_msgpack(&value);
        // u64::MAX has no exact JSON form for JavaScript: it renders as base64.
        assert_eq!(msgpack_to_json(&encoded), None);
        let mut safe = value.clone();
        safe["big"] = json!(7);
        assert_eq!(msgpack_to_json(&to_msgpack(&safe)), Some(safe));
        assert_eq!(
            to_msgpack(&json!({"px": 1.5})),
            [0x81, 0xa2, b'p', b'x', 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn a_payload_is_json_or_base64_never_both() {
        assert_eq!(payload_of(Some(&json!(1)), None), Ok(vec![1]));
        assert_eq!(payload_of(None, Some(&json!("aGk="))), Ok(b"hi".to_vec()));
        assert!(payload_of(None, Some(&json!("***"))).is_err());
        assert!(payload_of(None, Some(&json!(3))).is_err());
        assert!(payload_of(Some(&json!(1)), Some(&json!("aGk="))).is_err());
        assert!(payload_of(None, None).is_err());
    }
}
