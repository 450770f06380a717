//! Fuzz target `ws_frame`: the WebSocket frame decoder
//! (`tickwire_protocol::ws::FrameDecoder`), in both roles.
//!
//! Every input is used twice:
//!
//! * **Raw bytes.** Byte 0 picks the role (bit 0: 0 server, 1 client)
//!   and permessage-deflate (bit 1: negotiated, so RSV1 messages are
//!   inflated; bit 2: the inflater is dropped after each message), bytes 1-2 the message size limit (big endian, plus one), byte 3 seeds
//!   how the rest is cut into chunks; the rest is the byte stream. The
//!   decoder must never panic, never deliver a message over the limit
//!   (inflated messages included: a compression bomb stops at it), a
//!   text message that is not UTF-8 or a control payload over 125 bytes,
//!   never ask to buffer more than one frame header plus the limit, and
//!   reach exactly the same items and the same error whether the stream
//!   arrives whole or in chunks (text is checked as it arrives, so this
//!   also compares the early and the late UTF-8 verdicts).
//! * **Encoded frames.** The same bytes, read by `arbitrary`, describe a
//!   list of messages (binary and text, whole or fragmented, text cut at
//!   any byte, even inside a character), permessage-deflate messages
//!   (`deflate::compress`, RSV1 set, whole or fragmented) and control
//!   frames; the crate's own encoders (`write_client_frame`, `server_frame`,
//!   `close_body`) write them and the decoder, with inflation negotiated,
//!   must give back exactly those payloads.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tickwire_protocol::codes::is_valid_close_code;
use tickwire_protocol::deflate;
use tickwire_protocol::ws::{
    self, CloseFrame, FrameDecoder, FrameError, Incoming, MAX_CONTROL_PAYLOAD, MessageKind, OpCode,
    Role,
};

/// The longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

fuzz_target!(|data: &[u8]| {
    raw_stream(data);
    if let Ok(stream) = Stream::arbitrary(&mut Unstructured::new(data)) {
        encoded_frames(&stream);
    }
});

/// Everything a decoder produced from one stream.
#[derive(Debug, PartialEq)]
struct Outcome {
    items: Vec<Incoming>,
    /// The error that ended decoding, if any.
    error: Option<FrameError>,
    /// Without an error: bytes still buffered, and whether a fragmented
    /// message is in progress.
    pending: Option<(usize, bool)>,
}

fn raw_stream(data: &[u8]) {
    let [flags, hi, lo, seed, stream @ ..] = data else {
        return;
    };
    let role = if flags & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let max = usize::from(u16::from_be_bytes([*hi, *lo])) + 1;
    let inflate = (flags & 2 != 0).then_some(flags & 4 != 0);
    let whole = decode(role, max, inflate, &[stream]);
    let chunked = decode(role, max, inflate, &chunks(stream, *seed));
    assert_eq!(whole, chunked, "whole and chunked input disagree");
}

/// Cuts `stream` into chunks of 1 to 16 bytes, sizes drawn from `seed`.
fn chunks(stream: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut state = u32::from(seed) | 0x100;
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        // xorshift32: any deterministic spread of sizes will do.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = (state % 16 + 1) as usize;
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        out.push(chunk);
        rest = tail;
    }
    out
}

/// Feeds `chunks` one after the other, decoding everything each makes
/// available (inflating RSV1 messages when `inflate` is `Some(reset)`), and
/// checks every item and every wait on the way.
fn decode(role: Role, max: usize, inflate: Option<bool>, chunks: &[&[u8]]) -> Outcome {
    let mut decoder = FrameDecoder::new(role, max);
    if let Some(reset) = inflate {
        decoder = decoder.with_inflate(reset);
    }
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(item)) => {
                    check_item(&item, max);
                    items.push(item);
                }
                Ok(None) => {
                    assert!(decoder.wanted() > buf.len(), "waits without needing more");
                    assert!(
                        decoder.wanted() <= MAX_HEADER + max.max(MAX_CONTROL_PAYLOAD),
                        "wants {} bytes with a limit of {max}",
                        decoder.wanted()
                    );
                    break;
                }
                Err(error) => {
                    let code = error.close_code().as_u16();
                    assert!(matches!(code, 1002 | 1007 | 1009), "close code {code}");
                    return Outcome {
                        items,
                        error: Some(error),
                        pending: None,
                    };
                }
            }
        }
    }
    Outcome {
        items,
        error: None,
        pending: Some((buf.len(), decoder.mid_message())),
    }
}

fn check_item(item: &Incoming, max: usize) {
    match item {
        Incoming::Message(kind, body) => {
            assert!(body.len() <= max, "{} > {max}", body.len());
            if *kind == MessageKind::Text {
                assert!(
                    std::str::from_utf8(body).is_ok(),
                    "text message is not UTF-8"
                );
            }
        }
        Incoming::Ping(p) | Incoming::Pong(p) => assert!(p.len() <= MAX_CONTROL_PAYLOAD),
        Incoming::Close(CloseFrame { code, reason }) => {
            assert!(reason.len() + 2 <= MAX_CONTROL_PAYLOAD);
            match code {
                Some(code) => assert!(is_valid_close_code(*code), "close code {code}"),
                None => assert!(reason.is_empty()),
            }
        }
    }
}

/// A stream of frames to encode, as `arbitrary` reads it from the input.
#[derive(Arbitrary, Debug)]
struct Stream {
    /// Decode as a client (unmasked server frames) instead of as the broker.
    client_role: bool,
    key: [u8; 4],
    frames: Vec<Frame>,
}

#[derive(Arbitrary, Debug)]
enum Frame {
    Binary(Vec<u8>),
    Text(String),
    /// A permessage-deflate message (text if `text`: the bytes made UTF-8),
    /// compressed at `level`, cut into frames at `cuts` (modulo its
    /// compressed length).
    Compressed {
        body: Vec<u8>,
        text: bool,
        level: u8,
        cuts: Vec<u16>,
    },
    /// A binary message in several frames, with a ping after the first.
    Fragmented {
        parts: Vec<Vec<u8>>,
        ping: Option<Vec<u8>>,
    },
    /// A text message cut into frames at these byte offsets (taken modulo
    /// its length, so possibly inside a character).
    FragmentedText {
        text: String,
        cuts: Vec<u16>,
    },
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close {
        code: u16,
        reason: String,
    },
}

/// Writes frames the way the broker (client role) or a client (server
/// role) does.
struct Encoder {
    role: Role,
    key: [u8; 4],
    out: Vec<u8>,
}

impl Encoder {
    fn frame(&mut self, opcode: OpCode, fin: bool, payload: &[u8]) {
        let start = self.out.len();
        match self.role {
            Role::Server => ws::write_client_frame(&mut self.out, opcode, payload, self.key),
            Role::Client => self
                .out
                .extend_from_slice(&ws::server_frame(opcode, payload)),
        }
        if !fin {
            self.out[start] &= 0x7f;
        }
    }
}

fn control_payload(p: &[u8]) -> &[u8] {
    &p[..p.len().min(MAX_CONTROL_PAYLOAD)]
}

fn encoded_frames(stream: &Stream) {
    let role = if stream.client_role {
        Role::Client
    } else {
        Role::Server
    };
    let mut enc = Encoder {
        role,
        key: stream.key,
        out: Vec::new(),
    };
    let mut expected = Vec::new();
    for frame in &stream.frames {
        match frame {
            Frame::Binary(body) => {
                enc.frame(OpCode::Binary, true, body);
                let body = Bytes::copy_from_slice(body);
                expected.push(Incoming::Message(MessageKind::Binary, body));
            }
            Frame::Text(text) => {
                enc.frame(OpCode::Text, true, text.as_bytes());
                let body = Bytes::copy_from_slice(text.as_bytes());
                expected.push(Incoming::Message(MessageKind::Text, body));
            }
            Frame::Compressed {
                body,
                text,
                level,
                cuts,
            } => {
                let (kind, body) = if *text {
                    let text = String::from_utf8_lossy(body).into_owned();
                    (MessageKind::Text, text.into_bytes())
                } else {
                    (MessageKind::Binary, body.clone())
                };
                let squeezed = deflate::compress(&body, u32::from(*level % 10));
                let mut cuts: Vec<usize> = cuts
                    .iter()
                    .map(|c| usize::from(*c) % (squeezed.len() + 1))
                    .collect();
                cuts.push(squeezed.len());
                cuts.sort_unstable();
                let mut start = 0;
                for (i, end) in cuts.iter().enumerate() {
                    let opcode = if i > 0 {
                        OpCode::Continuation
                    } else {
                        kind.opcode()
                    };
                    let at = enc.out.len();
                    enc.frame(opcode, i + 1 == cuts.len(), &squeezed[start..*end]);
                    if i == 0 {
                        enc.out[at] |= 0x40;
                    }
                    start = *end;
                }
                expected.push(Incoming::Message(kind, Bytes::from(body)));
            }
            Frame::FragmentedText { text, cuts } => {
                let bytes = text.as_bytes();
                let mut cuts: Vec<usize> = cuts
                    .iter()
                    .map(|c| usize::from(*c) % (bytes.len() + 1))
                    .collect();
                cuts.push(bytes.len());
                cuts.sort_unstable();
                let mut start = 0;
                for (i, end) in cuts.iter().enumerate() {
                    let opcode = if i == 0 {
                        OpCode::Text
                    } else {
                        OpCode::Continuation
                    };
                    enc.frame(opcode, i + 1 == cuts.len(), &bytes[start..*end]);
                    start = *end;
                }
                let body = Bytes::copy_from_slice(bytes);
                expected.push(Incoming::Message(MessageKind::Text, body));
            }
            Frame::Fragmented { parts, ping } => {
                let mut whole = Vec::new();
                for (i, part) in parts.iter().enumerate() {
                    let opcode = if i == 0 {
                        OpCode::Binary
                    } else {
                        OpCode::Continuation
                    };
                    let last = i + 1 == parts.len();
                    enc.frame(opcode, last, part);
                    whole.extend_from_slice(part);
                    if last {
                        let body = Bytes::from(std::mem::take(&mut whole));
                        expected.push(Incoming::Message(MessageKind::Binary, body));
                    }
                    if let (0, Some(ping)) = (i, ping) {
                        let ping = control_payload(ping);
                        enc.frame(OpCode::Ping, true, ping);
                        expected.push(Incoming::Ping(Bytes::copy_from_slice(ping)));
                    }
                }
            }
            Frame::Ping(p) => {
                enc.frame(OpCode::Ping, true, control_payload(p));
                expected.push(Incoming::Ping(Bytes::copy_from_slice(control_payload(p))));
            }
            Frame::Pong(p) => {
                enc.frame(OpCode::Pong, true, control_payload(p));
                expected.push(Incoming::Pong(Bytes::copy_from_slice(control_payload(p))));
            }
            Frame::Close { code, reason } => {
                let code = if is_valid_close_code(*code) {
                    *code
                } else {
                    1000
                };
                let body = ws::close_body(code, reason);
                assert!(body.len() <= MAX_CONTROL_PAYLOAD);
                let kept =
                    std::str::from_utf8(&body[2..]).expect("close_body cuts on a char boundary");
                assert!(reason.starts_with(kept));
                enc.frame(OpCode::Close, true, &body);
                expected.push(Incoming::Close(CloseFrame {
                    code: Some(code),
                    reason: kept.to_owned(),
                }));
            }
        }
    }
    let max = 1 << 20;
    let want = Outcome {
        items: expected,
        error: None,
        pending: Some((0, false)),
    };
    let inflate = Some(stream.key[1] & 1 == 0);
    assert_eq!(decode(role, max, inflate, &[&enc.out]), want);
    assert_eq!(
        decode(role, max, inflate, &chunks(&enc.out, stream.key[0])),
        want
    );
}
