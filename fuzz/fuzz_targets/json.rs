//! JSON comparison shared by the JSON targets (`server_api_json`,
//! `presence_wire`).

use serde_json::Value;

/// JSON equality where numbers compare by value (`1.0` and `1`, `-0` and
/// `0` are the same number), as a JSON reader in JavaScript sees them.
pub fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}
