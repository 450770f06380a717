//! The human-readable output of the server API commands: aligned tables
//! made from the broker's JSON answers (`--json` prints the answers as
//! they are instead).

use std::time::{Duration, UNIX_EPOCH};

use serde_json::Value;

/// `rows` under `headers`, each column as wide as its widest cell, two
/// spaces apart; the last column is not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.zip(&widths).enumerate() {
            if i + 1 == headers.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.trim_end().to_owned()
    };
    let mut out = line(&mut headers.iter().copied());
    for row in rows {
        out.push('\n');
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// A JSON value as one cell: strings as they are, other values as JSON.
pub fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// The `{key}` or `{key}_base64` field of `object` as one cell: JSON, or
/// `base64:` and the text; `-` when neither is there.
pub fn payload_cell(object: &Value, key: &str) -> String {
    match (&object[key], &object[format!("{key}_base64").as_str()]) {
        (Value::Null, Value::String(text)) => format!("base64:{text}"),
        (Value::Null, _) if object.get(key).is_none() => "-".to_owned(),
        (value, _) => value.to_string(),
    }
}

/// Microseconds since the Unix epoch as RFC 3339 UTC (`-` when absent).
pub fn time_cell(micros: &Value) -> String {
    match micros.as_u64() {
        Some(us) => {
            humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_micros(us)).to_string()
        }
        None => "-".to_owned(),
    }
}

/// The human form of a history answer: its position, then one row per
/// message.
pub fn history(answer: &Value) -> String {
    let mut head = format!(
        "topic {}  epoch {}  seq {}",
        cell(&answer["topic"]),
        cell(&answer["epoch"]),
        cell(&answer["seq"])
    );
    if let Some(recovered) = answer["recovered"].as_bool() {
        head.push_str(&format!("  recovered {recovered}"));
    }
    let rows: Vec<Vec<String>> = messages(answer, "messages")
        .map(|m| {
            vec![
                cell(&m["seq"]),
                time_cell(&m["time"]),
                payload_cell(m, "payload"),
            ]
        })
        .collect();
    format!("{head}\n{}", table(&["SEQ", "TIME", "PAYLOAD"], &rows))
}

/// The human form of a `/v1/topics` page.
pub fn topics(answer: &Value) -> String {
    let rows: Vec<Vec<String>> = messages(answer, "topics")
        .map(|t| {
            vec![
                cell(&t["topic"]),
                cell(&t["subscribers"]),
                cell(&t["seq"]),
                cell(&t["epoch"]),
            ]
        })
        .collect();
    table(&["TOPIC", "SUBSCRIBERS", "SEQ", "EPOCH"], &rows)
}

/// The human form of a presence answer (or of its counts only).
pub fn presence(answer: &Value) -> String {
    let counts = format!(
        "topic {}  clients {}  users {}",
        cell(&answer["topic"]),
        cell(&answer["clients"]),
        cell(&answer["users"])
    );
    if answer.get("entries").is_none() {
        return counts;
    }
    let rows: Vec<Vec<String>> = messages(answer, "entries")
        .map(|e| {
            vec![
                cell(&e["client"]),
                cell(&e["user"]),
                payload_cell(e, "info"),
            ]
        })
        .collect();
    format!("{counts}\n{}", table(&["CLIENT", "USER", "INFO"], &rows))
}

/// The objects of array `key` of `answer` (none if it is not an array).
fn messages<'a>(answer: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    answer[key].as_array().into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn answers_become_aligned_tables() {
        let answer = json!({"topic": "t", "epoch": "7", "seq": 12, "recovered": true, "messages": [
            {"seq": 11, "time": 1_700_000_000_000_000u64, "payload": {"px": 1.5}},
            {"seq": 12, "time": 1_700_000_000_000_001u64, "payload_base64": "AAE="},
        ]});
        assert_eq!(
            history(&answer),
            "topic t  epoch 7  seq 12  recovered true\n\
             SEQ  TIME                         PAYLOAD\n\
             11   2023-11-14T22:13:20.000000Z  {\"px\":1.5}\n\
             12   2023-11-14T22:13:20.000001Z  base64:AAE="
        );
        let page = json!({"topics": [{"topic": "a.b", "subscribers": 2, "seq": 3, "epoch": "9"}], "next": null});
        assert_eq!(
            topics(&page),
            "TOPIC  SUBSCRIBERS  SEQ  EPOCH\na.b    2            3    9"
        );
        let who = json!({"topic": "r", "clients": 2, "users": 1, "entries": [
            {"client": "c1", "user": "ann", "info": {"name": "Ann"}},
            {"client": "c2"},
        ]});
        assert_eq!(
            presence(&who),
            "topic r  clients 2  users 1\nCLIENT  USER  INFO\nc1      ann   {\"name\":\"Ann\"}\nc2      -     -"
        );
        assert_eq!(
            presence(&json!({"topic": "r", "clients": 0, "users": 0})),
            "topic r  clients 0  users 0"
        );
    }
}
