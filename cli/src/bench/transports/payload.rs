//! The payload every transport run publishes, and the clock that stamps it.
//!
//! The payload is one MessagePack map `{"t": SENT_NS, "p": "abc…"}`: a value
//! that maps to JSON, so SSE and long-poll carry it as `"data": {...}` (as a
//! dashboard's JSON-shaped messages would be) and not as base64, and all three
//! transports carry the same bytes. `t` is the send time in nanoseconds on
//! [`now_ns`]'s clock (since this process started, so it stays far below
//! 2^53 and the broker renders it as a JSON number); `p` pads the map to the
//! requested size.
//!
//! Layout (fixed, so the stamp is patched in place and read back without a
//! MessagePack decoder): `0x82`, `0xa1 't'`, `0xcf` + 8 bytes big-endian,
//! `0xa1 'p'`, a str8/str16/str32 header, the padding.

use std::sync::OnceLock;
use std::time::Instant;

/// The smallest payload: the map with an empty padding string.
pub const MIN_PAYLOAD: usize = 16;

/// The bytes before the stamp: map of 2, key "t", uint64 marker.
const PREFIX: [u8; 4] = [0x82, 0xa1, b't', 0xcf];

/// Where the 8 stamp bytes start.
const STAMP_AT: usize = PREFIX.len();

/// Nanoseconds on a monotonic clock that starts when this process first
/// reads it. Publisher and subscribers run in the same process, so send and
/// receive times compare directly.
pub fn now_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    BASE.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A payload of a fixed size whose stamp is set per message.
#[derive(Debug, Clone)]
pub struct Payload {
    bytes: Vec<u8>,
}

impl Payload {
    /// A payload of exactly `size` bytes (at least [`MIN_PAYLOAD`]).
    pub fn new(size: usize) -> Payload {
        let size = size.max(MIN_PAYLOAD);
        // Header bytes of the padding string: str8 (2) up to 255 bytes of
        // padding, str16 (3) up to 65535, str32 (5) beyond; MessagePack
        // allows a wider header than needed, which keeps every size exact.
        let fixed = STAMP_AT + 8 + 2;
        let (header, pad_len) = if size - fixed - 2 <= 0xff {
            (2, size - fixed - 2)
        } else if size - fixed - 3 <= 0xffff {
            (3, size - fixed - 3)
        } else {
            (5, size - fixed - 5)
        };
        let mut bytes = Vec::with_capacity(size);
        bytes.extend_from_slice(&PREFIX);
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&[0xa1, b'p']);
        match header {
            2 => bytes.extend_from_slice(&[0xd9, pad_len as u8]),
            3 => {
                bytes.push(0xda);
                bytes.extend_from_slice(&(pad_len as u16).to_be_bytes());
            }
            _ => {
                bytes.push(0xdb);
                bytes.extend_from_slice(&(pad_len as u32).to_be_bytes());
            }
        }
        bytes.extend((0..pad_len).map(|i| b'a' + (i % 26) as u8));
        Payload { bytes }
    }

    /// A copy stamped with `sent_ns`.
    pub fn stamped(&self, sent_ns: u64) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out[STAMP_AT..STAMP_AT + 8].copy_from_slice(&sent_ns.to_be_bytes());
        out
    }
}

/// The send time in a MessagePack payload built by [`Payload`]; `None` for
/// any other payload.
pub fn stamp_of(payload: &[u8]) -> Option<u64> {
    if payload.get(..STAMP_AT)? != PREFIX {
        return None;
    }
    let stamp: [u8; 8] = payload.get(STAMP_AT..STAMP_AT + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_is_exact_and_decodes_as_a_two_key_map() {
        for size in [0, 16, 17, 100, 128, 271, 272, 300, 65_552, 65_553, 70_000] {
            let bytes = Payload::new(size).stamped(0x0102_0304_0506_0708);
            assert_eq!(bytes.len(), size.max(MIN_PAYLOAD), "size {size}");
            let value: serde_json::Value = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(value["t"], 0x0102_0304_0506_0708u64, "size {size}");
            assert!(value["p"].is_string(), "size {size}");
            assert_eq!(stamp_of(&bytes), Some(0x0102_0304_0506_0708));
        }
    }

    #[test]
    fn foreign_payloads_have_no_stamp() {
        assert_eq!(stamp_of(b""), None);
        assert_eq!(stamp_of(&[0x82, 0xa1, b't', 0xcf, 1, 2]), None);
        assert_eq!(
            stamp_of(&[0x81, 0xa1, b't', 0xcf, 0, 0, 0, 0, 0, 0, 0, 1]),
            None
        );
    }

    #[test]
    fn the_clock_does_not_go_backwards() {
        let a = now_ns();
        assert!(now_ns() >= a);
    }
}
