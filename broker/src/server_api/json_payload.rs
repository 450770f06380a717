//! Payloads a JSON request carries: a JSON value, sent to subscribers as
//! its MessagePack encoding, or bytes in base64 (`payload_base64`), sent
//! as they are.
//!
//! The encoding is the one of the token's client info
//! ([`crate::presence::info::json_to_msgpack`]): the smallest MessagePack
//! form of each value (integers as the shortest int or uint, other numbers
//! as float 64, objects as maps with their keys sorted, as the JSON parser
//! keeps them), so that the SSE rendering
//! ([`crate::fallback::render::msgpack_to_json`]) turns it back into the
//! same JSON.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

use crate::presence::info::json_to_msgpack;

/// The payload of one JSON message: `payload` (any JSON, encoded as
/// MessagePack) or `payload_base64` (standard base64 with padding), exactly
/// one of the two; the error says what is wrong.
pub fn payload_of(
    payload: Option<&Value>,
    payload_base64: Option<&Value>,
) -> Result<Vec<u8>, String> {
    match (payload, payload_base64) {
        (Some(value), None) => {
            let mut payload = Vec::new();
            json_to_msgpack(value, &mut payload);
            Ok(payload)
        }
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
    fn json_payloads_round_trip_through_msgpack() {
        let value = json!({"px": 1.5, "n": -40000, "small": -3,
            "list": [null, true, "é", {"k": []}], "i8": -100, "i32": -3000000000i64});
        let payload = payload_of(Some(&value), None).unwrap();
        assert_eq!(msgpack_to_json(&payload), Some(value));
        // u64::MAX has no exact JSON form for JavaScript: it renders as base64.
        let big = payload_of(Some(&json!(u64::MAX)), None).unwrap();
        assert_eq!(msgpack_to_json(&big), None);
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
