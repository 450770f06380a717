//! Fuzz target `http_publish_query`: how the broker reads the target of
//! an HTTP publish, `POST /v1/publish/{topic}?retain=...`
//! (`tickwire_broker::http::publish_topic` and `publish_retain_param`).
//!
//! The input is a request target. It is read twice: split at the first `?`
//! as raw text, and parsed as a URI the way the HTTP server does (when it
//! is one). Checked:
//!
//! * the topic is exactly the path after `/v1/publish/`; when it is
//!   accepted as a topic it is 1 to 255 bytes of the topic alphabet, so no
//!   `/`, `?`, `#`, `%` or space can reach the registry;
//! * `retain` is read as documented: only `retain`, `retain=true|1` and
//!   `retain=false|0` are accepted, empty pairs are skipped, the last one
//!   wins, anything else is refused with a message naming the parameter;
//! * the accepted value round-trips: writing it back as `retain=true` or
//!   `retain=false` (or `1`/`0`) reads the same value, and so does the
//!   query rewritten in that canonical form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire_broker::http::{publish_retain_param, publish_topic};
use tickwire_protocol::topic::{MAX_TOPIC_LEN, Topic, is_token_byte};

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    check(path, query);
    if let Ok(uri) = target.parse::<http::Uri>() {
        check(uri.path(), uri.query());
    }
});

fn check(path: &str, query: Option<&str>) {
    match publish_topic(path) {
        Some(topic) => {
            assert_eq!(format!("/v1/publish/{topic}"), path);
            if let Ok(topic) = Topic::new(topic) {
                let t = topic.as_str();
                assert!(!t.is_empty() && t.len() <= MAX_TOPIC_LEN);
                assert!(t.bytes().all(|b| b == b'.' || is_token_byte(b)), "{t:?}");
            }
        }
        None => assert!(!path.starts_with("/v1/publish/")),
    }
    check_retain(query);
}

/// The documented meaning of one `retain` pair: `Some(value)`, or `None`
/// for a pair that must be refused.
fn reference_pair(pair: &str) -> Option<bool> {
    match pair {
        "retain" | "retain=true" | "retain=1" => Some(true),
        "retain=false" | "retain=0" => Some(false),
        _ => None,
    }
}

fn check_retain(query: Option<&str>) {
    let pairs: Vec<&str> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .collect();
    let reference: Option<Vec<bool>> = pairs.iter().map(|p| reference_pair(p)).collect();
    match (publish_retain_param(query), reference) {
        (Ok(retain), Some(values)) => {
            assert_eq!(retain, values.last().copied().unwrap_or(false));
            for (text, number) in [("true", "1"), ("false", "0")] {
                let expect = text == "true";
                let canonical = format!("retain={text}");
                assert_eq!(publish_retain_param(Some(&canonical)), Ok(expect));
                let numeric = format!("retain={number}");
                assert_eq!(publish_retain_param(Some(&numeric)), Ok(expect));
            }
            let rewritten: Vec<String> = values.iter().map(|v| format!("retain={v}")).collect();
            assert_eq!(publish_retain_param(Some(&rewritten.join("&"))), Ok(retain));
        }
        (Err(message), None) => {
            let bad = pairs
                .iter()
                .find(|p| reference_pair(p).is_none())
                .map(|p| p.split_once('=').map_or(*p, |(key, _)| key));
            let bad = bad.unwrap_or_default();
            assert!(message.contains(bad), "{message:?} does not name {bad:?}");
        }
        (got, reference) => panic!("query {query:?}: got {got:?}, documented {reference:?}"),
    }
}
