//! permessage-deflate (RFC 7692) as tickwire uses it, without I/O: the
//! negotiation of the `Sec-WebSocket-Extensions` header on both sides, the
//! compression of one message, and the bounded inflation of a received one.
//!
//! What the broker agrees to (docs/protocol.md, "Extensions"):
//!
//! * It always answers `server_no_context_takeover`: every message it sends
//!   is compressed on its own, so one compressed frame can go to every
//!   subscriber that negotiated the extension, and no connection keeps a
//!   compressor.
//! * It compresses with a 32 KiB window (15 bits) only: an offer with
//!   `server_max_window_bits` under 15 is declined (RFC 7692 section 5
//!   allows declining any offer), and the next offer, if any, considered.
//!   A smaller window would need a compression per window size instead of
//!   one per message.
//! * It inflates with a 32 KiB window, which reads a client's messages
//!   whatever `client_max_window_bits` the client uses; it keeps the
//!   client's context between messages unless the client offered
//!   `client_no_context_takeover`.
//!
//! The rust backend of flate2 (miniz_oxide) does the work: it always uses
//! a 15-bit window, which is all the above needs.
//!
//! A compressed message is deflated with a sync flush and sent without the
//! final `00 00 ff ff` (section 7.2.1); the receiver appends those four
//! bytes back before inflating (section 7.2.2).

use std::cell::RefCell;
use std::fmt::Write as _;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use thiserror::Error;

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION: &str = "permessage-deflate";

/// The window size the broker compresses and inflates with.
pub const MAX_WINDOW_BITS: u8 = 15;

/// The empty stored block a sync flush ends with, removed from each sent
/// message and appended to each received one.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Output space reserved at a time while inflating, at least.
const INFLATE_STEP: usize = 4096;

/// One `permessage-deflate` element of a `Sec-WebSocket-Extensions`
/// header, with its parameters checked (RFC 7692 section 7.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeflateParams {
    /// `server_no_context_takeover`.
    pub server_no_context_takeover: bool,
    /// `client_no_context_takeover`.
    pub client_no_context_takeover: bool,
    /// `server_max_window_bits=N` (8 to 15).
    pub server_max_window_bits: Option<u8>,
    /// `client_max_window_bits`: `Some(None)` without a value (allowed in an
    /// offer only), `Some(Some(n))` with one.
    pub client_max_window_bits: Option<Option<u8>>,
}

/// Why a `permessage-deflate` element is not valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParamsError {
    /// A parameter RFC 7692 does not define.
    #[error("unknown permessage-deflate parameter {0:?}")]
    Unknown(String),
    /// A parameter given twice.
    #[error("permessage-deflate parameter {0:?} given twice")]
    Duplicate(String),
    /// A value where none is allowed, none where one is needed, or a window
    /// size outside 8-15.
    #[error("invalid value for permessage-deflate parameter {0:?}")]
    Value(String),
}

/// Parses a window size: 8 to 15, as a token or a quoted string.
fn window_bits(name: &str, value: Option<&str>) -> Result<u8, ParamsError> {
    let value = value.ok_or_else(|| ParamsError::Value(name.to_owned()))?;
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    // RFC 7692 section 7.1.2: 1*DIGIT without leading zeros, 8 to 15.
    match value.parse::<u8>() {
        Ok(bits @ 8..=15)
            if !value.starts_with('0') && value.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(bits)
        }
        _ => Err(ParamsError::Value(name.to_owned())),
    }
}

impl DeflateParams {
    /// Parses the parameters of one element (what follows the extension
    /// name: `; name[=value]` pairs).
    fn parse<'a>(params: impl Iterator<Item = &'a str>) -> Result<DeflateParams, ParamsError> {
        let mut out = DeflateParams::default();
        for param in params {
            let (name, value) = match param.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim())),
                None => (param.trim(), None),
            };
            let name = name.to_ascii_lowercase();
            let duplicate = || ParamsError::Duplicate(name.clone());
            match name.as_str() {
                "server_no_context_takeover" | "client_no_context_takeover" => {
                    if value.is_some() {
                        return Err(ParamsError::Value(name));
                    }
                    let flag = if name.starts_with("server") {
                        &mut out.server_no_context_takeover
                    } else {
                        &mut out.client_no_context_takeover
                    };
                    if std::mem::replace(flag, true) {
                        return Err(duplicate());
                    }
                }
                "server_max_window_bits" => {
                    if out.server_max_window_bits.is_some() {
                        return Err(duplicate());
                    }
                    out.server_max_window_bits = Some(window_bits(&name, value)?);
                }
                "client_max_window_bits" => {
                    if out.client_max_window_bits.is_some() {
                        return Err(duplicate());
                    }
                    let bits = value.map(|v| window_bits(&name, Some(v))).transpose()?;
                    out.client_max_window_bits = Some(bits);
                }
                _ => return Err(ParamsError::Unknown(name)),
            }
        }
        Ok(out)
    }
}

/// Every `permessage-deflate` element of the `Sec-WebSocket-Extensions`
/// header values `values`, in order, each parsed or refused; elements of
/// other extensions are skipped.
pub fn parse_elements<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Vec<Result<DeflateParams, ParamsError>> {
    values
        .into_iter()
        .flat_map(|value| value.split(','))
        .filter_map(|element| {
            let mut parts = element.split(';');
            let name = parts.next().unwrap_or_default().trim();
            name.eq_ignore_ascii_case(EXTENSION)
                .then(|| DeflateParams::parse(parts.filter(|p| !p.trim().is_empty())))
        })
        .collect()
}

/// The server's side of a negotiated permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerAgreement {
    /// The client resets its compression context after each message
    /// (`client_no_context_takeover` was offered): the inflater need not be
    /// kept between messages.
    pub client_no_context_takeover: bool,
    /// The accepted offer named `server_max_window_bits` (necessarily 15):
    /// accepting it means answering it.
    pub server_max_window_bits: bool,
}

impl ServerAgreement {
    /// The `Sec-WebSocket-Extensions` value of the `101` answer.
    pub fn response_header(&self) -> String {
        let mut out = format!("{EXTENSION}; server_no_context_takeover");
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if self.server_max_window_bits {
            let _ = write!(out, "; server_max_window_bits={MAX_WINDOW_BITS}");
        }
        out
    }
}

/// The server's choice among a client's offers (the
/// `Sec-WebSocket-Extensions` request header values): the first valid
/// `permessage-deflate` offer the broker can honour, or `None` (no
/// extension; invalid offers and offers of a window under 15 bits for the
/// broker's messages are declined).
pub fn negotiate_server<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<ServerAgreement> {
    parse_elements(values)
        .into_iter()
        .filter_map(Result::ok)
        .find(|offer| {
            offer
                .server_max_window_bits
                .is_none_or(|b| b == MAX_WINDOW_BITS)
        })
        .map(|offer| ServerAgreement {
            client_no_context_takeover: offer.client_no_context_takeover,
            server_max_window_bits: offer.server_max_window_bits.is_some(),
        })
}

/// The offer a tickwire client sends: it never compresses what it sends, so
/// it can promise `client_no_context_takeover`.
pub const CLIENT_OFFER: &str = "permessage-deflate; client_no_context_takeover";

/// Checks a server's `Sec-WebSocket-Extensions` answer to
/// [`CLIENT_OFFER`]: `Ok(None)` without the extension, `Ok(Some(reset))`
/// with it, `reset` telling whether the server resets its context after
/// each message (`server_no_context_takeover`). Anything else (another
/// extension, two elements, an invalid parameter) is an error.
pub fn client_accepts<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Option<bool>, String> {
    let values: Vec<&str> = values.into_iter().collect();
    let elements: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    match elements.as_slice() {
        [] => Ok(None),
        [_] => match parse_elements(values).as_slice() {
            [Ok(params)] if params.client_max_window_bits != Some(None) => {
                Ok(Some(params.server_no_context_takeover))
            }
            _ => Err(elements.join(", ")),
        },
        _ => Err(elements.join(", ")),
    }
}

/// Why a received compressed message cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InflateError {
    /// It inflates to more than the message size limit.
    #[error("compressed message inflates past the limit of {limit} bytes")]
    TooBig {
        /// The configured maximum.
        limit: usize,
    },
    /// It is not valid DEFLATE data.
    #[error("compressed message is not valid DEFLATE data")]
    Corrupt,
}

/// Inflates received messages; one per connection that sends compressed
/// messages, made when the first one arrives.
pub struct Inflater {
    state: Decompress,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Self::new()
    }
}

impl Inflater {
    /// A fresh inflater (raw DEFLATE, 32 KiB window).
    pub fn new() -> Self {
        Inflater {
            state: Decompress::new(false),
        }
    }

    /// Inflates one message's `compressed` payload (without the sync-flush
    /// tail). The output never takes more than `limit + 1` bytes of memory,
    /// whatever the input: past `limit` it stops with
    /// [`InflateError::TooBig`]. The inflater keeps the context for the
    /// next message; after an error it must not be used again.
    pub fn inflate(&mut self, compressed: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
        let mut out = Vec::new();
        for mut input in [compressed, &TAIL[..]] {
            loop {
                if out.len() == out.capacity() {
                    if out.len() > limit {
                        return Err(InflateError::TooBig { limit });
                    }
                    let step = out.len().max(INFLATE_STEP).max(input.len());
                    out.reserve_exact(step.min(limit + 1 - out.len()));
                }
                let (before_in, before_out) = (self.state.total_in(), self.state.total_out());
                let status = self
                    .state
                    .decompress_vec(input, &mut out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                let consumed = (self.state.total_in() - before_in) as usize;
                let produced = self.state.total_out() - before_out;
                input = &input[consumed..];
                if out.len() > limit {
                    return Err(InflateError::TooBig { limit });
                }
                if status == Status::StreamEnd {
                    // A final block (BFINAL): the message ends here and the
                    // next one starts a new stream.
                    self.state.reset(false);
                    return Ok(out);
                }
                let room_left = out.len() < out.capacity();
                if input.is_empty() && room_left {
                    break;
                }
                if consumed == 0 && produced == 0 && room_left {
                    return Err(InflateError::Corrupt);
                }
            }
        }
        Ok(out)
    }
}

thread_local! {
    /// This thread's compressor and its level, reset after each message:
    /// compression state is per thread, never per connection.
    static COMPRESSOR: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
}

/// Compresses `payload` as one permessage-deflate message with no context
/// takeover, at `level` (0-9), without the sync-flush tail: the payload of
/// a frame with RSV1 set.
pub fn compress(payload: &[u8], level: u32) -> Vec<u8> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match &mut *cell {
            Some((l, c)) if *l == level => c,
            slot => {
                &mut slot
                    .insert((level, Compress::new(Compression::new(level), false)))
                    .1
            }
        };
        let out = compress_with(compressor, payload);
        compressor.reset();
        out
    })
}

fn compress_with(compressor: &mut Compress, payload: &[u8]) -> Vec<u8> {
    // Incompressible data grows by a few bytes per 16 KiB stored block.
    let mut out = Vec::with_capacity(payload.len() + payload.len() / 1024 + 64);
    let mut input = payload;
    loop {
        let before = compressor.total_in();
        // Compressing into a Vec cannot fail: its errors are for invalid
        // stream states, which a fresh or reset compressor never has.
        let _ = compressor.compress_vec(input, &mut out, FlushCompress::Sync);
        input = &input[(compressor.total_in() - before) as usize..];
        if input.is_empty() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    if out.ends_with(&TAIL) {
        out.truncate(out.len() - TAIL.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(values: &[&str]) -> Option<ServerAgreement> {
        negotiate_server(values.iter().copied())
    }

    #[test]
    fn the_first_offer_the_broker_can_honour_is_chosen() {
        let plain = ServerAgreement {
            client_no_context_takeover: false,
            server_max_window_bits: false,
        };
        assert_eq!(server(&["permessage-deflate"]), Some(plain));
        assert_eq!(
            server(&["permessage-deflate; client_max_window_bits"]),
            Some(plain)
        );
        assert_eq!(
            server(&["x-webkit-deflate-frame, permessage-deflate; client_no_context_takeover"]),
            Some(ServerAgreement {
                client_no_context_takeover: true,
                ..plain
            })
        );
        // A window under 15 bits for the broker's messages: declined, the
        // next offer is taken.
        assert_eq!(
            server(&[
                "permessage-deflate; server_max_window_bits=9",
                "permessage-deflate; server_max_window_bits=\"15\""
            ]),
            Some(ServerAgreement {
                server_max_window_bits: true,
                ..plain
            })
        );
        assert_eq!(
            server(&["permessage-deflate; server_max_window_bits=10"]),
            None
        );
        assert_eq!(server(&["x-webkit-deflate-frame"]), None);
        assert_eq!(server(&[]), None);
    }

    #[test]
    fn invalid_offers_are_declined() {
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=015",
            "permessage-deflate; client_max_window_bits=+9",
            "permessage-deflate; client_max_window_bits=9; client_max_window_bits",
        ] {
            assert_eq!(server(&[bad]), None, "{bad}");
            assert!(parse_elements([bad])[0].is_err(), "{bad}");
        }
    }

    #[test]
    fn the_answer_names_what_was_agreed() {
        let agreed =
            server(&["permessage-deflate; client_no_context_takeover; server_max_window_bits=15"])
                .unwrap();
        assert_eq!(
            agreed.response_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15"
        );
        // The broker's own answer passes its own client's check.
        assert_eq!(
            client_accepts([agreed.response_header().as_str()]),
            Ok(Some(true))
        );
    }

    #[test]
    fn the_client_checks_the_answer() {
        assert_eq!(client_accepts([]), Ok(None));
        assert_eq!(client_accepts(["permessage-deflate"]), Ok(Some(false)));
        assert_eq!(
            client_accepts(["permessage-deflate; server_max_window_bits=10"]),
            Ok(Some(false))
        );
        for bad in [
            "x-webkit-deflate-frame",
            "permessage-deflate, permessage-deflate",
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; bogus",
        ] {
            assert!(client_accepts([bad]).is_err(), "{bad}");
        }
    }

    fn json_like(n: usize) -> Vec<u8> {
        (0..n)
            .flat_map(|i| {
                format!("{{\"seq\":{i},\"price\":{}.25,\"sym\":\"ABC\"}}", i % 97).into_bytes()
            })
            .collect()
    }

    #[test]
    fn compress_then_inflate_round_trips() {
        for payload in [
            Vec::new(),
            b"x".to_vec(),
            json_like(1000),
            (0..70_000u32).map(|i| (i * 7919 % 251) as u8).collect(),
        ] {
            let compressed = compress(&payload, 1);
            assert!(!compressed.ends_with(&TAIL));
            let mut inflater = Inflater::new();
            assert_eq!(
                inflater.inflate(&compressed, payload.len()).unwrap(),
                payload
            );
        }
        assert!(compress(&json_like(100), 6).len() < json_like(100).len() / 3);
    }

    #[test]
    fn context_is_kept_between_messages() {
        // A client with context takeover: the second message refers back
        // into the first (here: compressed in one stream, flushed between).
        let mut compressor = Compress::new(Compression::new(6), false);
        let first = compress_with(&mut compressor, b"hello hello hello");
        let second = compress_with(&mut compressor, b"hello hello hello");
        assert!(second.len() < first.len());
        let mut inflater = Inflater::new();
        assert_eq!(inflater.inflate(&first, 100).unwrap(), b"hello hello hello");
        assert_eq!(
            inflater.inflate(&second, 100).unwrap(),
            b"hello hello hello"
        );
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let bomb = compress(&vec![0u8; 10 << 20], 9);
        assert!(bomb.len() < 20_000);
        let mut inflater = Inflater::new();
        assert_eq!(
            inflater.inflate(&bomb, 1 << 16),
            Err(InflateError::TooBig { limit: 1 << 16 })
        );
        // Exactly at the limit is fine.
        let exact = compress(&vec![1u8; 1000], 1);
        assert_eq!(Inflater::new().inflate(&exact, 1000).unwrap().len(), 1000);
        assert_eq!(
            Inflater::new().inflate(&exact, 999),
            Err(InflateError::TooBig { limit: 999 })
        );
    }

    #[test]
    fn garbage_is_corrupt() {
        // Block type 3 is reserved.
        assert_eq!(
            Inflater::new().inflate(&[0xff, 0xff, 0xff], 100),
            Err(InflateError::Corrupt)
        );
    }
}
