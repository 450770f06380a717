//! The cluster's control channel `tickwire:control`: every node subscribes
//! to it, and a disconnect asked on one node (`POST /v1/disconnect`) is
//! published there for every node to apply to its own connections.
//!
//! A control message is a text header, a newline, then the target's bytes
//! and the close reason's bytes:
//!
//! ```text
//! D KIND CODE TARGET_LEN\nTARGET REASON
//! ```
//!
//! `KIND` is `C` (a client id) or `U` (a user id); `CODE` the close code
//! (4007 or 4100-4999); `TARGET_LEN` the target's length in bytes. A
//! message whose target is empty, whose client id is not one, or whose
//! reason is over [`MAX_REASON_BYTES`] is refused like any other malformed
//! one: whatever reaches the channel, a node only closes connections with
//! what `POST /v1/disconnect` could have asked.

use crate::cluster::wire::split_header;
use crate::directory::MAX_REASON_BYTES;
use crate::presence::parse_client_id;

/// The channel every node subscribes to.
pub const CONTROL_CHANNEL: &str = "tickwire:control";

/// Whose connections a disconnect closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlTarget<'a> {
    /// Every connection with this client id.
    Client(&'a str),
    /// Every connection of this user.
    User(&'a str),
}

/// A disconnect read from the control channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlDisconnect<'a> {
    /// Whose connections.
    pub target: ControlTarget<'a>,
    /// The close code.
    pub code: u16,
    /// The close reason.
    pub reason: &'a str,
}

/// The longest header: mark, kind, a code, a length, separators.
const MAX_HEADER: usize = 2 + 2 + 6 + 20;

/// Whether `code` may close a connection from the server API: 4007 or
/// 4100-4999.
pub fn valid_code(code: u16) -> bool {
    code == 4007 || (4100..=4999).contains(&code)
}

/// The control message for `disconnect`.
pub fn encode_disconnect(disconnect: &ControlDisconnect<'_>) -> Vec<u8> {
    let (kind, target) = match disconnect.target {
        ControlTarget::Client(t) => ('C', t),
        ControlTarget::User(t) => ('U', t),
    };
    let mut bytes = format!("D {kind} {} {}\n", disconnect.code, target.len()).into_bytes();
    bytes.extend_from_slice(target.as_bytes());
    bytes.extend_from_slice(disconnect.reason.as_bytes());
    bytes
}

/// Parses a control message; `None` if `bytes` is not one.
pub fn parse_control(bytes: &[u8]) -> Option<ControlDisconnect<'_>> {
    let (mut fields, rest) = split_header(bytes, MAX_HEADER)?;
    if fields.next()? != "D" {
        return None;
    }
    let user = match fields.next()? {
        "C" => false,
        "U" => true,
        _ => return None,
    };
    let code = fields
        .next()?
        .parse::<u16>()
        .ok()
        .filter(|c| valid_code(*c))?;
    let length = fields.next()?.parse::<usize>().ok()?;
    if fields.next().is_some() {
        return None;
    }
    let rest = std::str::from_utf8(rest).ok()?;
    let target = rest.get(..length).filter(|t| !t.is_empty())?;
    let reason = rest.get(length..).filter(|r| r.len() <= MAX_REASON_BYTES)?;
    let target = if user {
        ControlTarget::User(target)
    } else {
        parse_client_id(target).ok()?;
        ControlTarget::Client(target)
    };
    Some(ControlDisconnect {
        target,
        code,
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnects_round_trip() {
        for disconnect in [
            ControlDisconnect {
                target: ControlTarget::User("alice 1\n"),
                code: 4007,
                reason: "disconnected by the server",
            },
            ControlDisconnect {
                target: ControlTarget::Client("c-1"),
                code: 4999,
                reason: "",
            },
        ] {
            assert_eq!(
                parse_control(&encode_disconnect(&disconnect)),
                Some(disconnect)
            );
        }
        assert_eq!(
            encode_disconnect(&ControlDisconnect {
                target: ControlTarget::Client("c"),
                code: 4100,
                reason: "bye",
            }),
            b"D C 4100 1\ncbye"
        );
    }

    #[test]
    fn malformed_control_messages_are_refused() {
        let long_reason = format!("D U 4100 1\nu{}", "r".repeat(MAX_REASON_BYTES + 1));
        assert_eq!(parse_control(long_reason.as_bytes()), None);
        for bad in [
            &b"D C 4100 5\nabc"[..],
            b"D X 4100 1\nc",
            b"D C 1000 1\nc",
            b"D C 4006 1\nc",
            b"D C 5000 1\nc",
            b"D C 4100 1 2\nc",
            b"D C 4100 1",
            b"D U 4100 1\n\xff",
            b"E C 4100 1\nc",
            b"D U 4100 0\n",
            b"D C 4100 3\na.b",
            b"",
        ] {
            assert_eq!(parse_control(bad), None, "{bad:?}");
        }
    }
}
