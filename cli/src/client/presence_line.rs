//! `tickwire sub --join-leave`: one line per join or leave, in order with
//! the messages: `[TOPIC join] client=ID user=NAME info=JSON` in the text
//! format, `{"event":"join","topic",...}` in the json format.

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use tickwire_client::PresenceChange;

use super::output::Format;

/// Appends the line of a join (`join`) or leave of `change` in `format`
/// (`json`: a JSON object; anything else: the text line).
pub fn render_change(format: Format, join: bool, change: &PresenceChange, out: &mut Vec<u8>) {
    let event = if join { "join" } else { "leave" };
    let info = change
        .info
        .as_ref()
        .map(|bytes| rmp_serde::from_slice::<Value>(bytes).map_err(|_| BASE64.encode(bytes)));
    if format == Format::Json {
        // Fields in this order (a JSON map would sort them).
        let mut fields: Vec<(&str, Value)> = vec![
            ("event", event.into()),
            ("topic", change.topic.as_str().into()),
        ];
        if let Some(client) = &change.client {
            fields.push(("client", client.as_str().into()));
        }
        if let Some(user) = &change.user {
            fields.push(("user", user.as_str().into()));
        }
        match info {
            Some(Ok(value)) => fields.push(("info", value)),
            Some(Err(base64)) => fields.push(("info_base64", base64.into())),
            None => {}
        }
        out.push(b'{');
        for (n, (key, value)) in fields.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            let _ = write!(out, "{}:{value}", Value::from(*key));
        }
        out.push(b'}');
    } else {
        let _ = write!(out, "[{} {event}]", change.topic);
        if let Some(client) = &change.client {
            let _ = write!(out, " client={client}");
        }
        if let Some(user) = &change.user {
            let _ = write!(out, " user={}", escape(user));
        }
        match info {
            Some(Ok(value)) => {
                let _ = write!(out, " info={value}");
            }
            Some(Err(base64)) => {
                let _ = write!(out, " info=base64:{base64}");
            }
            None => {}
        }
    }
    out.push(b'\n');
}

/// `s` with control characters (a newline in a user name) escaped, so one
/// change stays one line.
fn escape(s: &str) -> String {
    s.chars().flat_map(char::escape_default).collect()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn change(client: Option<&str>, info: Option<Bytes>) -> PresenceChange {
        PresenceChange {
            topic: "room.1".into(),
            client: client.map(str::to_owned),
            user: Some("alice".into()),
            info,
        }
    }

    fn line(format: Format, join: bool, change: &PresenceChange) -> String {
        let mut out = Vec::new();
        render_change(format, join, change, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_and_json_lines() {
        let info = Bytes::from(rmp_serde::to_vec_named(&("A", 1)).unwrap());
        let c = change(Some("c1"), Some(info));
        assert_eq!(
            line(Format::Text, true, &c),
            "[room.1 join] client=c1 user=alice info=[\"A\",1]\n"
        );
        assert_eq!(
            line(Format::Json, false, &c),
            "{\"event\":\"leave\",\"topic\":\"room.1\",\"client\":\"c1\",\"user\":\"alice\",\"info\":[\"A\",1]}\n"
        );
        let user_level = change(None, Some(Bytes::from_static(&[0xc1])));
        assert_eq!(
            line(Format::Text, false, &user_level),
            "[room.1 leave] user=alice info=base64:wQ==\n"
        );
        assert!(line(Format::Json, true, &user_level).contains("\"info_base64\":\"wQ==\""));
    }
}
