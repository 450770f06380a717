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
    /// `[TOPIC #SEQ HH:MM:SS.mmm] PAYLOAD` (time in UTC; the payload shown
    /// as `--payload` says: by default text, MessagePack as JSON, or `hex:`
    /// and its bytes in hex).
    Text,
    /// One JSON object per line: `topic`, `epoch`, `seq`, `time` (RFC 3339,
    /// UTC, microseconds), `payload` and `payload_encoding` (`utf8`,
    /// `msgpack`, `base64` or `hex`: how `payload` was made from the bytes).
    Json,
    /// The payload bytes as they are, then a newline.
    Raw,
    /// The payload in lowercase hex, then a newline.
    Hex,
    /// The payload decoded from MessagePack, as one line of JSON.
    MsgpackJson,
}

impl Format {
    /// Whether `--payload` applies: `text` and `json` show a decoded
    /// payload next to the message's topic, position and time; the other
    /// formats print only the payload, in the form their name says.
    pub fn decodes_payload(self) -> bool {
        matches!(self, Format::Text | Format::Json)
    }
}

/// How the `text` and `json` formats show a payload (`--payload`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PayloadMode {
    /// Text if the payload is printable UTF-8, else JSON if it is one
    /// MessagePack value, else hex (`text`) or base64 (`json`).
    #[default]
    Auto,
    /// Decoded from MessagePack as JSON; other payloads are reported and
    /// skipped.
    Msgpack,
    /// As UTF-8 text (control characters escaped in `text`); other payloads
    /// are reported and skipped.
    Utf8,
    /// In lowercase hex.
    Hex,
    /// In standard base64.
    Base64,
}

/// How a shown payload was made from its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Encoding {
    /// UTF-8 text.
    Utf8,
    /// One MessagePack value, as JSON.
    Msgpack,
    /// Base64 of the bytes.
    Base64,
    /// Hex of the bytes.
    Hex,
}

impl Encoding {
    /// The name used in `payload_encoding` and in `text` markers.
    fn name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf8",
            Encoding::Msgpack => "msgpack",
            Encoding::Base64 => "base64",
            Encoding::Hex => "hex",
        }
    }
}

/// A payload decoded for display.
#[derive(Debug, Clone, PartialEq)]
struct Decoded<'a> {
    /// The decoding applied.
    encoding: Encoding,
    /// Whether the bytes are both UTF-8 text and one MessagePack value, so
    /// that the other decoding would have been possible too (only in
    /// `auto`).
    ambiguous: bool,
    value: Shown<'a>,
}

/// The shown form of a payload.
#[derive(Debug, Clone, PartialEq)]
enum Shown<'a> {
    Text(&'a str),
    Json(serde_json::Value),
    Bytes(&'a [u8]),
}

/// Decides how to show `payload` in `format` (`text` or `json`) under
/// `mode`. The `auto` precedence:
///
/// 1. printable UTF-8 text (no control characters but tab; in `json` also
///    newline and carriage return) is text;
/// 2. else a payload that is exactly one MessagePack value with a JSON
///    equivalent is that JSON;
/// 3. else, in `json`, any other UTF-8 is text;
/// 4. else the bytes: hex in `text`, base64 in `json`.
///
/// A payload that is both UTF-8 and one MessagePack value (for example the
/// one-byte payload `5`, text and the integer 53) is `ambiguous`.
///
/// # Errors
///
/// Why the payload cannot be shown as a forced `msgpack` or `utf8`.
fn decode(payload: &[u8], format: Format, mode: PayloadMode) -> Result<Decoded<'_>, String> {
    let json = format == Format::Json;
    let binary = if json {
        Encoding::Base64
    } else {
        Encoding::Hex
    };
    let decoded = |encoding, value| Decoded {
        encoding,
        ambiguous: false,
        value,
    };
    match mode {
        PayloadMode::Auto => {
            let text = std::str::from_utf8(payload).ok();
            let packed = msgpack_to_json(payload).ok();
            let ambiguous = text.is_some() && packed.is_some();
            let mut shown = match (text, packed) {
                (Some(t), _) if printable(t, json) => decoded(Encoding::Utf8, Shown::Text(t)),
                (_, Some(value)) => decoded(Encoding::Msgpack, Shown::Json(value)),
                (Some(t), None) if json => decoded(Encoding::Utf8, Shown::Text(t)),
                _ => decoded(binary, Shown::Bytes(payload)),
            };
            shown.ambiguous = ambiguous;
            Ok(shown)
        }
        PayloadMode::Msgpack => Ok(decoded(
            Encoding::Msgpack,
            Shown::Json(msgpack_to_json(payload)?),
        )),
        PayloadMode::Utf8 => match std::str::from_utf8(payload) {
            Ok(text) => Ok(decoded(Encoding::Utf8, Shown::Text(text))),
            Err(e) => Err(format!("the payload is not UTF-8 text: {e}")),
        },
        PayloadMode::Hex => Ok(decoded(Encoding::Hex, Shown::Bytes(payload))),
        PayloadMode::Base64 => Ok(decoded(Encoding::Base64, Shown::Bytes(payload))),
    }
}

/// Appends one delivery, as one line in `format`, to `out`; `mode` says how
/// `text` and `json` show the payload.
///
/// # Errors
///
/// Why the payload cannot be shown in `format` (`msgpack-json`, or
/// `--payload msgpack|utf8`, when the payload is not that); nothing is
/// appended then.
pub fn render(
    format: Format,
    mode: PayloadMode,
    msg: &Message,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let payload = msg.payload().as_ref();
    match format {
        Format::Text => {
            let decoded = decode(payload, format, mode)?;
            let time = format_time(msg.time());
            // `2024-05-01T14:03:05.123Z` → `14:03:05.123`
            let clock = time.get(11..23).unwrap_or(&time);
            let _ = write!(out, "[{} #{} {clock}] ", msg.topic(), msg.seq());
            if decoded.ambiguous {
                let _ = write!(out, "{}:", decoded.encoding.name());
            }
            match &decoded.value {
                Shown::Text(text) => push_escaped(out, text),
                Shown::Json(value) => {
                    serde_json::to_writer(&mut *out, value).map_err(|e| e.to_string())?;
                }
                Shown::Bytes(bytes) if decoded.encoding == Encoding::Base64 => {
                    out.extend_from_slice(b"base64:");
                    out.extend_from_slice(BASE64.encode(bytes).as_bytes());
                }
                Shown::Bytes(bytes) => {
                    out.extend_from_slice(b"hex:");
                    push_hex(out, bytes);
                }
            }
        }
        Format::Json => {
            let decoded = decode(payload, format, mode)?;
            let payload = match decoded.value {
                Shown::Text(text) => serde_json::Value::from(text),
                Shown::Json(value) => value,
                Shown::Bytes(bytes) if decoded.encoding == Encoding::Hex => {
                    let mut hex = Vec::with_capacity(bytes.len() * 2);
                    push_hex(&mut hex, bytes);
                    serde_json::Value::from(String::from_utf8_lossy(&hex))
                }
                Shown::Bytes(bytes) => serde_json::Value::from(BASE64.encode(bytes)),
            };
            let line = JsonLine {
                topic: msg.topic(),
                epoch: msg.epoch(),
                seq: msg.seq(),
                time: format_time(msg.time()),
                payload,
                payload_encoding: decoded.encoding,
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
    epoch: u64,
    seq: u64,
    time: String,
    payload: serde_json::Value,
    payload_encoding: Encoding,
}

/// RFC 3339 in UTC with microseconds (the broker's resolution).
fn format_time(time: SystemTime) -> String {
    humantime::format_rfc3339_micros(time).to_string()
}

/// Whether `text` reads as text: no control characters but tab (and, when
/// `multiline`, newline and carriage return, which JSON escapes).
fn printable(text: &str, multiline: bool) -> bool {
    !text
        .chars()
        .any(|c| c.is_control() && c != '\t' && !(multiline && matches!(c, '\n' | '\r')))
}

/// Appends `text` with control characters (but tab) escaped as in Rust
/// (`\n`, `\u{1b}`), so that one delivery stays one line.
fn push_escaped(out: &mut Vec<u8>, text: &str) {
    if printable(text, false) {
        out.extend_from_slice(text.as_bytes());
        return;
    }
    for c in text.chars() {
        if c.is_control() && c != '\t' {
            let _ = write!(out, "{}", c.escape_debug());
        } else {
            let mut utf8 = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut utf8).as_bytes());
        }
    }
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

    fn rendered_as(format: Format, mode: PayloadMode, payload: &[u8]) -> String {
        let mut out = Vec::new();
        render(format, mode, &message(payload), &mut out).expect("renders");
        String::from_utf8(out).expect("utf-8 output")
    }

    fn rendered(format: Format, payload: &[u8]) -> String {
        rendered_as(format, PayloadMode::Auto, payload)
    }

    fn json(mode: PayloadMode, payload: &[u8]) -> serde_json::Value {
        serde_json::from_str(&rendered_as(Format::Json, mode, payload)).expect("json")
    }

    /// The payload and its encoding of a `json` line.
    fn shown(line: &serde_json::Value) -> (serde_json::Value, &str) {
        (
            line["payload"].clone(),
            line["payload_encoding"].as_str().expect("payload_encoding"),
        )
    }

    fn packed(document: &str) -> Vec<u8> {
        json_to_msgpack(document.as_bytes()).expect("valid json")
    }

    const PREFIX: &str = "[stocks.AAPL #12 14:03:05.123] ";

    #[test]
    fn text_shows_printable_payloads_and_hex_otherwise() {
        assert_eq!(rendered(Format::Text, b"189.5"), format!("{PREFIX}189.5\n"));
        assert_eq!(
            rendered(Format::Text, b"a\nb"),
            format!("{PREFIX}hex:610a62\n")
        );
        assert_eq!(
            rendered(Format::Text, &[0xff, 0x00]),
            format!("{PREFIX}hex:ff00\n")
        );
        assert_eq!(rendered(Format::Text, b""), format!("{PREFIX}\n"));
    }

    #[test]
    fn text_shows_messagepack_as_json() {
        assert_eq!(
            rendered(Format::Text, &packed(r#"{"price":189.5}"#)),
            format!("{PREFIX}{{\"price\":189.5}}\n")
        );
        // A MessagePack string is a JSON string, quotes and all: 0xa3 is no
        // UTF-8 start byte, so this is not text.
        assert_eq!(
            rendered(Format::Text, &packed(r#""abc""#)),
            format!("{PREFIX}\"abc\"\n")
        );
    }

    #[test]
    fn text_marks_payloads_that_are_both_text_and_messagepack() {
        // `5` is printable text and the MessagePack integer 53: text wins.
        assert_eq!(rendered(Format::Text, b"5"), format!("{PREFIX}utf8:5\n"));
        // `abc` is three MessagePack values, so it is only text.
        assert_eq!(rendered(Format::Text, b"abc"), format!("{PREFIX}abc\n"));
        // 0x05 is UTF-8 (a control character, not printable) and the
        // MessagePack integer 5 (`pub --json 5`): MessagePack wins.
        assert_eq!(
            rendered(Format::Text, &packed("5")),
            format!("{PREFIX}msgpack:5\n")
        );
    }

    #[test]
    fn json_line_has_epoch_payload_and_its_encoding() {
        assert_eq!(
            rendered(Format::Json, &packed(r#"{"price":189.5}"#)),
            "{\"topic\":\"stocks.AAPL\",\"epoch\":9,\"seq\":12,\"time\":\"2024-05-01T14:03:05.123456Z\",\"payload\":{\"price\":189.5},\"payload_encoding\":\"msgpack\"}\n"
        );
        let line = json(PayloadMode::Auto, b"hello \"x\"");
        assert_eq!(shown(&line), ("hello \"x\"".into(), "utf8"));
    }

    #[test]
    fn json_uses_utf8_then_messagepack_then_base64() {
        // Multi-line text stays text in JSON (escaped by JSON).
        assert_eq!(
            shown(&json(PayloadMode::Auto, b"a\nb")),
            ("a\nb".into(), "utf8")
        );
        // Text wins an ambiguous payload...
        assert_eq!(shown(&json(PayloadMode::Auto, b"5")), ("5".into(), "utf8"));
        // ...unless it is not printable.
        assert_eq!(
            shown(&json(PayloadMode::Auto, &[0x05])),
            (5.into(), "msgpack")
        );
        // UTF-8 with control characters that is not MessagePack: text.
        assert_eq!(
            shown(&json(PayloadMode::Auto, b"\x1b[1mbold")),
            ("\u{1b}[1mbold".into(), "utf8")
        );
        // Binary that is not MessagePack (0xc1 is never used): base64.
        let line = json(PayloadMode::Auto, &[0xc1, 0xff, 0xfe]);
        assert_eq!(shown(&line), ("wf/+".into(), "base64"));
        assert!(line.get("payload_base64").is_none());
    }

    #[test]
    fn forced_payload_modes() {
        assert_eq!(
            rendered_as(Format::Text, PayloadMode::Hex, b"abc"),
            format!("{PREFIX}hex:616263\n")
        );
        assert_eq!(
            rendered_as(Format::Text, PayloadMode::Base64, b"abc"),
            format!("{PREFIX}base64:YWJj\n")
        );
        // Forced text escapes control characters to keep one line.
        assert_eq!(
            rendered_as(Format::Text, PayloadMode::Utf8, b"a\nb\tc"),
            format!("{PREFIX}a\\nb\tc\n")
        );
        // No marker when the user chose the decoding.
        assert_eq!(
            rendered_as(Format::Text, PayloadMode::Utf8, b"5"),
            format!("{PREFIX}5\n")
        );
        assert_eq!(
            rendered_as(Format::Text, PayloadMode::Msgpack, b"5"),
            format!("{PREFIX}53\n")
        );
        assert_eq!(
            shown(&json(PayloadMode::Hex, b"a\n")),
            ("610a".into(), "hex")
        );
        assert_eq!(
            shown(&json(PayloadMode::Base64, b"abc")),
            ("YWJj".into(), "base64")
        );
        assert_eq!(
            shown(&json(PayloadMode::Msgpack, &packed("[1,2]"))),
            (serde_json::json!([1, 2]), "msgpack")
        );
    }

    #[test]
    fn forced_modes_refuse_payloads_they_cannot_decode() {
        let mut out = Vec::new();
        for format in [Format::Text, Format::Json] {
            let err =
                render(format, PayloadMode::Msgpack, &message(b"hello"), &mut out).unwrap_err();
            assert!(err.contains("4 bytes follow the first one"), "{err}");
            let err = render(format, PayloadMode::Utf8, &message(&[0xff]), &mut out).unwrap_err();
            assert!(err.starts_with("the payload is not UTF-8 text"), "{err}");
        }
        assert!(out.is_empty());
    }

    #[test]
    fn only_text_and_json_decode_the_payload() {
        assert!(Format::Text.decodes_payload() && Format::Json.decodes_payload());
        for format in [Format::Raw, Format::Hex, Format::MsgpackJson] {
            assert!(!format.decodes_payload());
        }
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
        let err = render(
            Format::MsgpackJson,
            PayloadMode::Auto,
            &message(b"hello"),
            &mut out,
        )
        .unwrap_err();
        assert!(err.contains("4 bytes follow the first one"), "{err}");
        let err = render(
            Format::MsgpackJson,
            PayloadMode::Auto,
            &message(b""),
            &mut out,
        )
        .unwrap_err();
        assert!(err.contains("empty"), "{err}");
        // A truncated map.
        let err = render(
            Format::MsgpackJson,
            PayloadMode::Auto,
            &message(&[0x81]),
            &mut out,
        )
        .unwrap_err();
        assert!(err.starts_with("the payload is not MessagePack"), "{err}");
        assert!(out.is_empty());
    }

    #[test]
    fn pub_json_refuses_invalid_json() {
        let err = json_to_msgpack(b"{oops").unwrap_err();
        assert!(err.starts_with("not valid JSON"), "{err}");
    }
}
