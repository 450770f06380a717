//! A presence event as the join, leave and reap scripts publish it on a
//! topic's channel (`tickwire:{T}:msg`), beside the topic's messages.
//!
//! It is a text header, a newline, then the user id's bytes and the
//! client info's bytes:
//!
//! ```text
//! P KIND USERS CLIENT USER_LEN\nUSER INFO
//! ```
//!
//! `KIND` is `J` (JOIN) or `L` (LEAVE); `USERS` is `1` when the event is
//! also the user's (the user's first entry on the topic was created, or
//! its last removed), else `0`; `CLIENT` is the client id; `USER_LEN` is
//! the user id's length in bytes, or `-` for an anonymous entry (then no
//! user bytes follow); `INFO` (possibly empty: none) is the client info,
//! MessagePack. A message header starts with a digit (its epoch), an event
//! with `P`: one is never taken for the other.

use crate::cluster::wire::split_header;

/// The first byte of every presence event on a topic channel.
pub const EVENT_MARK: u8 = b'P';

/// JOIN or LEAVE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The entry was created (its first holder, cluster-wide).
    Join,
    /// The entry was removed (its last holder let go, or was reaped).
    Leave,
}

/// One presence event read from a topic's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelEvent<'a> {
    /// JOIN or LEAVE.
    pub kind: EventKind,
    /// Whether it is also the user's JOIN or LEAVE.
    pub user_level: bool,
    /// The client id.
    pub client: &'a str,
    /// The user id, `None` for an anonymous entry.
    pub user: Option<&'a str>,
    /// The client info (MessagePack), `None` when the entry has none.
    pub info: Option<&'a [u8]>,
}

/// The longest header: mark, kind, flag, a client id of at most 64
/// characters, a length of at most 20 digits, separators.
const MAX_HEADER: usize = 2 + 2 + 2 + 65 + 20;

/// Whether `bytes`, received on a topic's channel, is a presence event
/// (rather than a message).
pub fn is_event(bytes: &[u8]) -> bool {
    bytes.first() == Some(&EVENT_MARK)
}

/// Whether `client` is a valid client id: 1-64 of `[A-Za-z0-9_-]`.
fn valid_client(client: &str) -> bool {
    (1..=64).contains(&client.len())
        && client
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Parses a presence event; `None` if `bytes` is not one.
pub fn parse_event(bytes: &[u8]) -> Option<ChannelEvent<'_>> {
    let (mut fields, rest) = split_header(bytes, MAX_HEADER)?;
    if fields.next()? != "P" {
        return None;
    }
    let kind = match fields.next()? {
        "J" => EventKind::Join,
        "L" => EventKind::Leave,
        _ => return None,
    };
    let user_level = match fields.next()? {
        "0" => false,
        "1" => true,
        _ => return None,
    };
    let client = fields.next().filter(|c| valid_client(c))?;
    let user_len = match fields.next()? {
        "-" => None,
        n => Some(n.parse::<usize>().ok()?),
    };
    if fields.next().is_some() {
        return None;
    }
    let (user, info) = match user_len {
        None => (None, rest),
        Some(n) if n <= rest.len() => {
            let (user, info) = rest.split_at(n);
            (Some(std::str::from_utf8(user).ok()?), info)
        }
        Some(_) => return None,
    };
    Some(ChannelEvent {
        kind,
        user_level,
        client,
        user,
        info: (!info.is_empty()).then_some(info),
    })
}

/// The event the scripts publish, built the same way (for tests of the
/// parser and of code receiving events).
pub fn encode_event(event: &ChannelEvent<'_>) -> Vec<u8> {
    let kind = match event.kind {
        EventKind::Join => 'J',
        EventKind::Leave => 'L',
    };
    let users = u8::from(event.user_level);
    let length = event
        .user
        .map_or_else(|| "-".to_owned(), |u| u.len().to_string());
    let mut bytes = format!("P {kind} {users} {} {length}\n", event.client).into_bytes();
    bytes.extend_from_slice(event.user.unwrap_or("").as_bytes());
    bytes.extend_from_slice(event.info.unwrap_or(b""));
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::wire::parse_message;

    #[test]
    fn events_parse_and_round_trip() {
        let event = parse_event(b"P J 1 c-1_X 11\nalice\nsmith\x81\xa1a\x01").unwrap();
        assert_eq!(
            event,
            ChannelEvent {
                kind: EventKind::Join,
                user_level: true,
                client: "c-1_X",
                user: Some("alice\nsmith"),
                info: Some(b"\x81\xa1a\x01"),
            }
        );
        assert_eq!(parse_event(&encode_event(&event)), Some(event));
        let anonymous = parse_event(b"P L 0 abc -\n").unwrap();
        assert_eq!(anonymous.kind, EventKind::Leave);
        assert_eq!((anonymous.user, anonymous.info), (None, None));
        let empty_user = parse_event(b"P L 1 abc 0\n\xc0").unwrap();
        assert_eq!(
            (empty_user.user, empty_user.info),
            (Some(""), Some(&b"\xc0"[..]))
        );
    }

    #[test]
    fn malformed_events_are_refused() {
        for bad in [
            &b"P J 1 abc 9\nshort"[..],
            b"P X 0 abc -\n",
            b"P J 2 abc -\n",
            b"P J 0 a.c -\n",
            b"P J 0 abc -",
            b"P J 0 abc - x\n",
            b"P J 0  -\n",
            b"P J 0 abc 1x\nu",
            b"P J 0 abc 1\n\xff",
            b"Q J 0 abc -\n",
            b"",
        ] {
            assert_eq!(parse_event(bad), None, "{bad:?}");
        }
        let long = format!("P J 0 {} -\n", "c".repeat(65));
        assert_eq!(parse_event(long.as_bytes()), None);
    }

    #[test]
    fn events_and_messages_are_never_confused() {
        let event = b"P J 0 abc -\n";
        assert!(is_event(event));
        assert_eq!(parse_message(event), None);
        let message = b"1 2 3 0\nP J 0 abc -\n";
        assert!(!is_event(message));
        assert_eq!(parse_event(message), None);
        assert!(!is_event(b""));
    }
}
