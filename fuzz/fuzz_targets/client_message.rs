//! Fuzz target `client_message`: the broker's decoder of client messages
//! (`tickwire_protocol::ClientMessage::decode`).
//!
//! Every input is used twice:
//!
//! * **As a frame.** When it decodes, encoding the value and decoding that
//!   again gives the same value, and encoding is canonical (the second
//!   encoding equals the first); nothing decoded is longer than the frame,
//!   `since` holds at most `MAX_SINCE_ENTRIES` positions, `max_rate` is
//!   never 0, and `request_id_hint` names the decoded request id.
//! * **As a message.** `arbitrary` reads a message from the same bytes;
//!   `decode(encode(x)) == x`.
#![no_main]

mod common;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tickwire_protocol::message::{JoinLeave, MAX_SINCE_ENTRIES};
use tickwire_protocol::{ClientMessage, SubscribeOptions};

use common::{encoded, positions};

fuzz_target!(|data: &[u8]| {
    frame(data);
    if let Ok(spec) = Spec::arbitrary(&mut Unstructured::new(data)) {
        round_trip(&spec);
    }
});

fn encode(msg: &ClientMessage<'_>) -> Bytes {
    encoded(|out| msg.encode(out))
}

fn frame(data: &[u8]) {
    let frame = Bytes::copy_from_slice(data);
    let hint = ClientMessage::request_id_hint(&frame);
    let Ok(msg) = ClientMessage::decode(&frame) else {
        return;
    };
    let (id, texts, payload) = match &msg {
        ClientMessage::Subscribe {
            id,
            pattern,
            options,
        } => {
            let since = options.since.as_deref().unwrap_or_default();
            assert!(since.len() <= MAX_SINCE_ENTRIES);
            assert_ne!(options.max_rate, Some(0));
            (Some(*id), vec![*pattern], 0)
        }
        ClientMessage::Unsubscribe { id, pattern } => (Some(*id), vec![*pattern], 0),
        ClientMessage::Publish {
            id, topic, payload, ..
        } => (*id, vec![*topic], payload.len()),
        ClientMessage::Ping { id } => (Some(*id), vec![], 0),
        ClientMessage::Refresh { id, token } | ClientMessage::Auth { id, token } => {
            (Some(*id), vec![*token], 0)
        }
        ClientMessage::Presence { id, topic, .. } => (Some(*id), vec![*topic], 0),
    };
    assert_eq!(hint, id, "request_id_hint disagrees with decode");
    let text_len: usize = texts.iter().map(|t| t.len()).sum();
    assert!(text_len + payload <= frame.len());

    let encoded = encode(&msg);
    let again = ClientMessage::decode(&encoded).expect("an encoded message decodes");
    assert_eq!(again, msg);
    assert_eq!(encode(&again), encoded, "encoding is not canonical");
}

/// A client message with owned fields, as `arbitrary` reads it.
#[derive(Arbitrary, Debug)]
enum Spec {
    Subscribe {
        id: u64,
        pattern: String,
        since: Option<Vec<(String, u64, u64)>>,
        last: bool,
        max_rate: Option<u32>,
        /// `Some(true)`: `clients`, `Some(false)`: `users`.
        join_leave: Option<bool>,
    },
    Unsubscribe {
        id: u64,
        pattern: String,
    },
    Publish {
        id: Option<u64>,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    },
    Ping {
        id: u64,
    },
    Refresh {
        id: u64,
        token: String,
    },
    Auth {
        id: u64,
        token: String,
    },
    Presence {
        id: u64,
        topic: String,
        counts_only: bool,
    },
}

fn round_trip(spec: &Spec) {
    let msg = match spec {
        Spec::Subscribe {
            id,
            pattern,
            since,
            last,
            max_rate,
            join_leave,
        } => {
            let mut options = SubscribeOptions::default().last(*last);
            if let Some(since) = since {
                options = options.since(positions(since));
            }
            // 0 is not a rate: the decoder refuses it (invalid_option).
            if let Some(rate) = max_rate.filter(|r| *r > 0) {
                options = options.max_rate(rate);
            }
            if let Some(clients) = join_leave {
                options = options.join_leave(if *clients {
                    JoinLeave::Clients
                } else {
                    JoinLeave::Users
                });
            }
            ClientMessage::Subscribe {
                id: *id,
                pattern,
                options,
            }
        }
        Spec::Unsubscribe { id, pattern } => ClientMessage::Unsubscribe { id: *id, pattern },
        Spec::Publish {
            id,
            topic,
            payload,
            retain,
        } => ClientMessage::Publish {
            id: *id,
            topic,
            payload: Bytes::copy_from_slice(payload),
            retain: *retain,
        },
        Spec::Ping { id } => ClientMessage::Ping { id: *id },
        Spec::Refresh { id, token } => ClientMessage::Refresh { id: *id, token },
        Spec::Auth { id, token } => ClientMessage::Auth { id: *id, token },
        Spec::Presence {
            id,
            topic,
            counts_only,
        } => ClientMessage::Presence {
            id: *id,
            topic,
            counts_only: *counts_only,
        },
    };
    let encoded = encode(&msg);
    assert_eq!(ClientMessage::decode(&encoded), Ok(msg));
}
