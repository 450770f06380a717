//! How `tickwire sub` prints a delivery, and how `tickwire pub --json`
//! turns JSON into MessagePack.

use std::io::{Cursor, Write};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use tickwire_client::Message;

/// Output format of `tickwire sub`, one line per delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `[TOPIC #SEQ HH:MM:SS.mmm] PAYLOAD` (time in UTC; the payload as text
    /// when it is printable UTF-8, else `hex:` and its bytes in hex).
    Text,
    /// One JSON object per line: `topic`, `seq`, `time` (RFC 3339, UTC,
    /// microseconds) and `payload` (a string, when the payload is UTF-8) or
    /// `payload_base64` (standard base64, otherwise).
    Json,
    /// The payload bytes as they are, then a newline.
    Raw,
    /// The payload in lowercase hex, then a newline.
    Hex,
    /// The payload decoded from MessagePack, as one line of JSON.
    MsgpackJson,
}

/// Appends one delivery, as one line in `format`, to `out`.
///
/// # Errors
///
/// Why the payload cannot be shown in `format` (only `msgpack-json`, when
/// the payload is not MessagePack that has a JSON equivalent); nothing is
/// appended then.
pub fn render(format: Format, msg: &Message, out: &mut Vec<u8>) -> Result<(), String> {
    let payload = msg.payload().as_ref();
    match format {
        Format::Text => {
            let time = format_time(msg.time());
            // `2024-05-01T14:03:05.123Z` → `14:03:05.123`
            let clock = time.get(11..23).unwrap_or(&time);
            let _ = write!(out, "[{} #{} {clock}] ", msg.topic(), msg.seq());
            match printable(payload) {
                Some(text) => out.extend_from_slice(text.as_bytes()),
                None => {
                    out.extend_from_slice(b"hex:");
                    push_hex(out, payload);
                }
            }
        }
        Format::Json => {
            let text = std::str::from_utf8(payload).ok();
            let line = JsonLine {
                topic: msg.topic(),
                seq: msg.seq(),
                time: format_time(msg.time()),
                payload: text,
                payload_base64: text.is_none().then(|| BASE64.encode(payload)),
            };
            serde_json::to_writer(&mut *out, &line).map_err(|e| e.to_string())?;
        }
        Format::Raw => out.extend_from_slice(payload),
        Format::Hex => push_hex(out, payload),
        Format::MsgpackJson => {
            let value = msgpack_to_json(payload)?;
            serde_json::to_writer(&mut *out, &value).map_err(|e| e.to_string())?;
        }
    }
    out.push(b'\n');
    Ok(())
}

/// A line of `--format json`.
#[derive(Serialize)]
struct JsonLine<'a> {
    topic: &'a str,
    seq: u64,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

/// RFC 3339 in UTC with microseconds (the broker's resolution).
fn format_time(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

/// The payload as text if it is UTF-8 without control characters (tabs
/// allowed), so that one delivery stays one line.
fn printable(payload: &[u8]) -> Option<&str> {
    std::str::from_utf8(payload)
        .ok()
        .filter(|s| !s.chars().any(|c| c.is_control() && c != '\t'))
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0xf)]);
    }
}

/// Decodes a payload that must be exactly one MessagePack value.
fn msgpack_to_json(payload: &[u8]) -> Result<serde_json::Value, String> {
    if payload.is_empty() {
        return Err("the payload is empty, not MessagePack".to_owned());
    }
    let mut de = rmp_serde::Deserializer::new(Cursor::new(payload));
    let value = serde_json::Value::deserialize(&mut de)
        .map_err(|e| format!("the payload is not MessagePack convertible to JSON: {e}"))?;
    let used = usize::try_from(de.position()).unwrap_or(usize::MAX);
    if used < payload.len() {
        return Err(format!(
            "the payload is not a single MessagePack value ({} bytes follow the first one)",
            payload.len() - used
        ));
    }
    Ok(value)
}

/// Parses `input` as JSON and encodes it as MessagePack, for
/// `tickwire pub --json`.
///
/// # Errors
///
/// The JSON parser's explanation when `input` is not one JSON document.
pub fn json_to_msgpack(input: &[u8]) -> Result<Vec<u8>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(input).map_err(|e| format!("not valid JSON: {e}"))?;
    rmp_serde::to_vec_named(&value).map_err(|e| format!("cannot encode as MessagePack: {e}"))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use tickwire_client::Position;

    use super::*;

    fn message(payload: &[u8]) -> Message {
        // 2024-05-01T14:03:05.123456Z
        let time = UNIX_EPOCH + Duration::from_micros(1_714_572_185_123_456);
        Message::new(
            "stocks.AAPL",
            Position { epoch: 9, seq: 12 },
            time,
            payload.to_vec(),
        )
    }

    fn rendered(format: Format, payload: &[u8]) -> String {
        let mut out = Vec::new();
        render(format, &message(payload), &mut out).expect("renders");
        String::from_utf8(out).expect("utf-8 output")
    }

    #[test]
    fn text_shows_printable_payloads_and_hex_otherwise() {
        assert_eq!(
            rendered(Format::Text, b"189.5"),
            "[stocks.AAPL #12 14:03:05.123] 189.5\n"
        );
        assert_eq!(
            rendered(Format::Text, b"a\nb"),
            "[stocks.AAPL #12 14:03:05.123] hex:610a62\n"
        );
        assert_eq!(
            rendered(Format::Text, &[0xff, 0x00]),
            "[stocks.AAPL #12 14:03:05.123] hex:ff00\n"
        );
    }

    #[test]
    fn json_uses_a_string_for_utf8_and_base64_otherwise() {
        let line = rendered(Format::Json, b"hello \"x\"");
        assert_eq!(
            line,
            "{\"topic\":\"stocks.AAPL\",\"seq\":12,\"time\":\"2024-05-01T14:03:05.123456Z\",\"payload\":\"hello \\\"x\\\"\"}\n"
        );
        let line = rendered(Format::Json, &[0xff, 0xfe]);
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["payload_base64"], "//4=");
        assert!(value.get("payload").is_none());
    }

    #[test]
    fn raw_and_hex_print_only_the_payload() {
        assert_eq!(rendered(Format::Raw, b"abc"), "abc\n");
        assert_eq!(rendered(Format::Hex, b"\x01\xab"), "01ab\n");
    }

    #[test]
    fn msgpack_json_round_trips_pub_json() {
        let packed =
            json_to_msgpack(br#"{"price":189.5,"tags":["a",1,null,true]}"#).expect("valid json");
        assert_eq!(
            rendered(Format::MsgpackJson, &packed),
            "{\"price\":189.5,\"tags\":[\"a\",1,null,true]}\n"
        );
    }

    #[test]
    fn msgpack_json_refuses_what_is_not_one_value() {
        let mut out = Vec::new();
        // `h` is a MessagePack integer; the rest would be silently ignored.
        let err = render(Format::MsgpackJson, &message(b"hello"), &mut out).unwrap_err();
        assert!(err.contains("4 bytes follow the first one"), "{err}");
        let err = render(Format::MsgpackJson, &message(b""), &mut out).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        // A truncated map.
        let err = render(Format::MsgpackJson, &message(&[0x81]), &mut out).unwrap_err();
        assert!(err.starts_with("the payload is not MessagePack"), "{err}");
        assert!(out.is_empty());
    }

    #[test]
    fn pub_json_refuses_invalid_json() {
        let err = json_to_msgpack(b"{oops").unwrap_err();
        assert!(err.starts_with("not valid JSON"), "{err}");
    }
}
