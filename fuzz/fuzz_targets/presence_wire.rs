//! Fuzz target `presence_wire`: the presence inputs that do not come
//! through the WebSocket codec.
//!
//! The first byte chooses the parser, the rest is its input:
//!
//! * `0`, a presence event on a topic's Redis channel
//!   (`cluster::presence::event::parse_event`): an accepted event starts
//!   with `P`, has a valid client id, a user and info within the input, no
//!   empty info; written back with `encode_event` it parses the same.
//! * `1`, a message of the cluster's control channel (`parse_control`): an
//!   accepted disconnect has a non-empty target (a valid client id for
//!   `C`), a code `POST /v1/disconnect` could ask (4007, 4100-4999) and a
//!   reason of at most 123 bytes, so `DisconnectCode::new` takes it; it
//!   round-trips through `encode_disconnect`.
//! * `2`, a client id (`parse_client_id`) and the SSE/poll query
//!   `client=` (`fallback::query::parse`, percent-decoded): accepted
//!   exactly when a reference (1-64 of `[A-Za-z0-9_-]`) accepts the
//!   (decoded) id.
//! * `3`, the token's client info (`presence::info::info_to_msgpack`, what
//!   the verifier runs on the `info` claim): for any JSON serde_json
//!   parses and the verifier accepts (at most `MAX_SKIP_DEPTH` levels
//!   deep; deeper is refused), the MessagePack is exactly one value, at most 9 bytes per
//!   byte of JSON, and renders back to the same JSON whenever it renders.
#![no_main]

mod json;

use json::same_json;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tickwire_broker::cluster::presence::control::{
    ControlTarget, encode_disconnect, parse_control,
};
use tickwire_broker::cluster::presence::event::{encode_event, is_event, parse_event};
use tickwire_broker::directory::{DisconnectCode, MAX_REASON_BYTES};
use tickwire_broker::fallback::query::{Endpoint, parse};
use tickwire_broker::fallback::render::msgpack_to_json;
use tickwire_broker::presence::info::info_to_msgpack;
use tickwire_broker::presence::parse_client_id;
use tickwire_protocol::msgpack::Reader;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, input)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => event(input),
        1 => control(input),
        2 => {
            if let Ok(text) = std::str::from_utf8(input) {
                client_id(text);
            }
        }
        _ => info(input),
    }
});

/// The documented client id: 1-64 of `[A-Za-z0-9_-]`.
fn reference_client(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn event(bytes: &[u8]) {
    let Some(event) = parse_event(bytes) else {
        return;
    };
    assert!(is_event(bytes));
    assert!(reference_client(event.client), "{:?}", event.client);
    let user = event.user.map_or(0, str::len);
    let info = event.info.map_or(0, <[u8]>::len);
    assert!(user + info < bytes.len());
    assert!(event.info.is_none_or(|i| !i.is_empty()));
    assert_eq!(parse_event(&encode_event(&event)), Some(event));
}

fn control(bytes: &[u8]) {
    let Some(disconnect) = parse_control(bytes) else {
        return;
    };
    match disconnect.target {
        ControlTarget::Client(client) => assert!(reference_client(client), "{client:?}"),
        ControlTarget::User(user) => assert!(!user.is_empty()),
    }
    assert!(disconnect.reason.len() <= MAX_REASON_BYTES);
    let code = DisconnectCode::new(Some(disconnect.code), Some(disconnect.reason));
    assert!(code.is_ok(), "{disconnect:?}: {code:?}");
    assert_eq!(
        parse_control(&encode_disconnect(&disconnect)),
        Some(disconnect)
    );
}

fn client_id(text: &str) {
    assert_eq!(
        parse_client_id(text).is_ok(),
        reference_client(text),
        "{text:?}"
    );
    let query = format!("sub=a&client={text}");
    for endpoint in [Endpoint::Sse, Endpoint::Poll] {
        if let Ok(parsed) = parse(Some(&query), endpoint, 8) {
            let client = parsed.client.expect("client= was given");
            assert!(reference_client(&client), "{text:?} gave {client:?}");
        }
    }
}

fn info(json: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    // Too deep to read back: the token is refused (401) before any use.
    let Some(out) = info_to_msgpack(&value) else {
        return;
    };
    assert!(out.len() <= 9 * json.len().max(1), "{value}");
    let mut reader = Reader::new(&out);
    reader.skip_value().expect("one MessagePack value");
    assert_eq!(reader.position(), out.len());
    if let Some(rendered) = msgpack_to_json(&out) {
        assert!(same_json(&rendered, &value), "{value} rendered {rendered}");
    }
}
