//! WebSocket framing (RFC 6455) as tickwire enforces it, without I/O.
//!
//! The broker and the client SDK read and write frames with this module; the
//! HTTP upgrade handshake happens elsewhere. [`FrameDecoder`] turns bytes
//! received from the peer into whole messages and control frames and refuses
//! everything the RFC forbids, each with the close code to send:
//!
//! | violation | close code |
//! |---|---|
//! | RSV2/RSV3 set; RSV1 set without permessage-deflate, or on a control or continuation frame; reserved opcode | 1002 |
//! | client frame not masked (server side) / server frame masked (client side) | 1002 |
//! | control frame over 125 bytes, or fragmented | 1002 |
//! | continuation without a started message, new message inside a fragmented one | 1002 |
//! | 64-bit length with the top bit set | 1002 |
//! | length not in its shortest encoding (RFC 6455 section 5.2) | 1002 |
//! | close frame with a 1-byte body or a code not allowed on the wire | 1002 |
//! | text message or close reason that is not UTF-8 | 1007 |
//! | a frame or a fragmented message over the size limit | 1009 |
//! | a compressed message that inflates past the size limit | 1009 |
//! | a compressed message that is not valid DEFLATE data | 1007 |
//!
//! Oversized input is refused as soon as the header announces it, before the
//! payload is buffered. Text is checked as it arrives, fragment by fragment
//! and even within a frame still being received, so invalid UTF-8 is refused
//! at the first byte that makes it invalid; only a character cut at the very
//! end of the message is an error that must wait for the final frame.
//!
//! With permessage-deflate negotiated ([`FrameDecoder::with_inflate`], see
//! [`crate::deflate`]), a message whose first frame has RSV1 set is
//! inflated once complete, into at most the size limit (a compression
//! bomb is refused without allocating past it); a compressed text
//! message's UTF-8 is checked after inflating. The inflater is made when
//! the first compressed message arrives.
//!
//! Text messages are delivered ([`MessageKind::Text`]); whether to accept
//! them is the receiver's decision (tickwire's `/ws` is binary-only and
//! closes with 1003, the echo service echoes them).

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use crate::codes::{CloseCode, is_valid_close_code};
use crate::deflate::{InflateError, Inflater};
use crate::utf8::Utf8Validator;

/// The largest payload a control frame may carry.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Which end of the connection is decoding; decides the masking rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The broker: incoming (client) frames must be masked.
    Server,
    /// A client: incoming (server) frames must not be masked.
    Client,
}

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: a text message (UTF-8).
    Text,
    /// 0x2: a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Whether this is a control opcode (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A framing violation, with the close code that answers it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    /// RSV2 or RSV3 set, or RSV1 where permessage-deflate does not allow
    /// it (not negotiated, a control frame, a continuation frame).
    #[error("reserved bits set")]
    ReservedBits,
    /// A compressed message that is not valid DEFLATE data.
    #[error("compressed message is not valid DEFLATE data")]
    Inflate,
    /// Opcode 0x3-0x7 or 0xB-0xF.
    #[error("reserved opcode 0x{0:x}")]
    ReservedOpcode(u8),
    /// A client frame without a mask (decoded by the server).
    #[error("client frame is not masked")]
    Unmasked,
    /// A server frame with a mask (decoded by a client).
    #[error("server frame is masked")]
    Masked,
    /// A control frame with more than 125 payload bytes.
    #[error("control frame payload over {MAX_CONTROL_PAYLOAD} bytes")]
    ControlTooLong,
    /// A control frame without FIN.
    #[error("fragmented control frame")]
    FragmentedControl,
    /// A continuation frame with no message in progress.
    #[error("continuation frame without a started message")]
    UnexpectedContinuation,
    /// A new data frame while a fragmented message is in progress.
    #[error("new message started inside a fragmented message")]
    ExpectedContinuation,
    /// A 64-bit payload length with its most significant bit set.
    #[error("invalid 64-bit payload length")]
    InvalidLength,
    /// A payload length in a longer encoding than needed (a 16-bit length
    /// under 126, a 64-bit length under 65536): RFC 6455 section 5.2 says
    /// the minimal number of bytes MUST be used.
    #[error("payload length {0} not in its shortest encoding")]
    NonMinimalLength(u64),
    /// The close frame body is one byte long or carries a forbidden code.
    #[error("invalid close frame")]
    InvalidClose,
    /// The close frame's reason is not UTF-8.
    #[error("close reason is not valid UTF-8")]
    InvalidCloseReason,
    /// A text message that is not UTF-8 (found as soon as a byte makes it
    /// invalid, or at its final frame if that ends inside a character).
    #[error("text message is not valid UTF-8")]
    InvalidText,
    /// A frame or fragmented message over the limit.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooBig {
        /// Announced (or accumulated) size.
        size: u64,
        /// The configured maximum.
        limit: usize,
    },
}

impl FrameError {
    /// The close code to send for this violation.
    pub fn close_code(&self) -> CloseCode {
        match self {
            FrameError::TooBig { .. } => CloseCode::MessageTooBig,
            FrameError::InvalidCloseReason | FrameError::InvalidText | FrameError::Inflate => {
                CloseCode::InvalidPayload
            }
            _ => CloseCode::ProtocolError,
        }
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// FIN bit: last frame of a message.
    pub fin: bool,
    /// RSV1: with permessage-deflate, the message is compressed (first
    /// frame of a data message only).
    pub rsv1: bool,
    /// The frame's opcode.
    pub opcode: OpCode,
    /// The masking key, if the frame is masked.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
    /// Length of the header itself (2 to 14 bytes).
    pub header_len: usize,
}

impl FrameHeader {
    /// Parses a header from the start of `buf`; `Ok(None)` means more bytes
    /// are needed. Checks every header-level rule for frames sent to `role`.
    pub fn parse(buf: &[u8], role: Role) -> Result<Option<FrameHeader>, FrameError> {
        let [b0, b1, ..] = *buf else { return Ok(None) };
        if b0 & 0x30 != 0 {
            return Err(FrameError::ReservedBits);
        }
        let rsv1 = b0 & 0x40 != 0;
        let fin = b0 & 0x80 != 0;
        let opcode = OpCode::from_bits(b0 & 0x0f).ok_or(FrameError::ReservedOpcode(b0 & 0x0f))?;
        let masked = b1 & 0x80 != 0;
        match (role, masked) {
            (Role::Server, false) => return Err(FrameError::Unmasked),
            (Role::Client, true) => return Err(FrameError::Masked),
            _ => {}
        }
        // The smallest length each encoding may carry: a length that fits a
        // shorter encoding must use it.
        let (payload_len, mut header_len, minimal) = match b1 & 0x7f {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4, 126),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    (u64::from_be_bytes(a), 10, 0x1_0000)
                }
                None => return Ok(None),
            },
            n => (u64::from(n), 2, 0),
        };
        if payload_len & (1 << 63) != 0 {
            return Err(FrameError::InvalidLength);
        }
        if payload_len < minimal {
            return Err(FrameError::NonMinimalLength(payload_len));
        }
        if opcode.is_control() {
            if !fin {
                return Err(FrameError::FragmentedControl);
            }
            if payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(FrameError::ControlTooLong);
            }
        }
        let mask = if masked {
            let Some(b) = buf.get(header_len..header_len + 4) else {
                return Ok(None);
            };
            header_len += 4;
            Some([b[0], b[1], b[2], b[3]])
        } else {
            None
        };
        Ok(Some(FrameHeader {
            fin,
            rsv1,
            opcode,
            mask,
            payload_len,
            header_len,
        }))
    }
}

/// XORs `buf` with the masking key, in place (masking and unmasking are the
/// same operation).
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let word = u32::from_ne_bytes(key);
    let mut chunks = buf.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i];
    }
}

/// A close frame's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code; `None` when the body was empty.
    pub code: Option<u16>,
    /// The reason text (may be empty).
    pub reason: String,
}

/// Whether a data message is text or binary (its first frame's opcode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// Opcode 0x1: the payload is valid UTF-8 (the decoder checked it).
    Text,
    /// Opcode 0x2: any bytes. Every tickwire protocol message is binary.
    Binary,
}

impl MessageKind {
    /// The opcode that sends a message of this kind in one frame.
    pub fn opcode(self) -> OpCode {
        match self {
            MessageKind::Text => OpCode::Text,
            MessageKind::Binary => OpCode::Binary,
        }
    }
}

/// What [`FrameDecoder::decode`] produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A whole data message (reassembled if it was fragmented); a text
    /// message's payload is valid UTF-8.
    Message(MessageKind, Bytes),
    /// A ping with its payload, to be answered with a pong.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer's close frame.
    Close(CloseFrame),
}

/// Turns received bytes into [`Incoming`] items, enforcing every framing rule
/// and the message size limit.
#[derive(Debug)]
pub struct FrameDecoder {
    role: Role,
    max_message_size: usize,
    /// The first frames of a fragmented message, its kind and whether it
    /// is compressed.
    fragments: Option<(MessageKind, bool, BytesMut)>,
    /// permessage-deflate, if negotiated.
    inflate: Option<InflateState>,
    /// The UTF-8 check of the text message in progress (fresh otherwise).
    utf8: Utf8Validator,
    /// How many payload bytes of the text frame still being received were
    /// already checked.
    checked: usize,
    wanted: usize,
}

impl FrameDecoder {
    /// A decoder for frames sent to `role`, refusing messages over
    /// `max_message_size` bytes.
    pub fn new(role: Role, max_message_size: usize) -> Self {
        FrameDecoder {
            role,
            max_message_size,
            fragments: None,
            inflate: None,
            utf8: Utf8Validator::new(),
            checked: 0,
            wanted: 2,
        }
    }

    /// The same decoder, accepting compressed messages (permessage-deflate
    /// was negotiated). `reset_per_message`: the peer compresses each
    /// message on its own (it agreed to no context takeover), so the
    /// inflater is dropped after each message instead of kept.
    pub fn with_inflate(mut self, reset_per_message: bool) -> Self {
        self.inflate = Some(InflateState {
            reset_per_message,
            inflater: None,
        });
        self
    }

    /// Whether an inflater is held (made by the first compressed message,
    /// kept only with context takeover).
    pub fn holds_inflater(&self) -> bool {
        self.inflate.as_ref().is_some_and(|s| s.inflater.is_some())
    }

    /// How many bytes `buf` must hold, at least, for the next call to make
    /// progress. Readers use it to reserve buffer space once for big frames.
    pub fn wanted(&self) -> usize {
        self.wanted
    }

    /// Whether a fragmented message has started and not yet ended: its
    /// first frames are held until the last one arrives.
    pub fn mid_message(&self) -> bool {
        self.fragments.is_some()
    }

    /// Decodes the next item from the front of `buf`, consuming its bytes.
    /// `Ok(None)` means more input is needed.
    ///
    /// After an error the decoder's state is unspecified: the connection
    /// must be closed with the error's close code.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, FrameError> {
        loop {
            let Some(header) = FrameHeader::parse(buf, self.role)? else {
                self.wanted = buf.len() + 1;
                return Ok(None);
            };
            // RSV1 marks a compressed message, on its first frame only.
            let starts_message = matches!(header.opcode, OpCode::Text | OpCode::Binary);
            if header.rsv1 && !(starts_message && self.inflate.is_some()) {
                return Err(FrameError::ReservedBits);
            }
            let (kind, compressed) = match (header.opcode, &self.fragments) {
                (OpCode::Text | OpCode::Binary, Some(_)) => {
                    return Err(FrameError::ExpectedContinuation);
                }
                (OpCode::Continuation, None) => return Err(FrameError::UnexpectedContinuation),
                (OpCode::Continuation, Some((kind, compressed, fragments))) => {
                    self.check_size(fragments.len() as u64, header.payload_len)?;
                    (Some(*kind), *compressed)
                }
                (OpCode::Text, None) => {
                    self.check_size(0, header.payload_len)?;
                    (Some(MessageKind::Text), header.rsv1)
                }
                (OpCode::Binary, None) => {
                    self.check_size(0, header.payload_len)?;
                    (Some(MessageKind::Binary), header.rsv1)
                }
                // Control frames: at most 125 bytes, checked by the header.
                (OpCode::Close | OpCode::Ping | OpCode::Pong, _) => (None, false),
            };
            // Compressed text is checked once inflated.
            let text = kind == Some(MessageKind::Text) && !compressed;
            // Bounded by max_message_size (data) or 125 (control) above.
            let total = header.header_len + header.payload_len as usize;
            if buf.len() < total {
                if text {
                    self.check_partial_text(&buf[header.header_len..], header.mask)?;
                }
                self.wanted = total;
                return Ok(None);
            }
            self.wanted = 2;
            buf.advance(header.header_len);
            let mut payload = buf.split_to(header.payload_len as usize);
            if let Some(key) = header.mask {
                apply_mask(&mut payload, key);
            }
            if text {
                let unchecked = payload.get(self.checked..).unwrap_or_default();
                self.checked = 0;
                self.utf8
                    .feed(unchecked)
                    .map_err(|_| FrameError::InvalidText)?;
                if header.fin && !self.utf8.is_complete() {
                    return Err(FrameError::InvalidText);
                }
            }
            let Some(kind) = kind else {
                return match header.opcode {
                    OpCode::Ping => Ok(Some(Incoming::Ping(payload.freeze()))),
                    OpCode::Pong => Ok(Some(Incoming::Pong(payload.freeze()))),
                    _ => parse_close(&payload).map(|c| Some(Incoming::Close(c))),
                };
            };
            let whole = match self.fragments.take() {
                None if header.fin => payload,
                None => {
                    self.fragments = Some((kind, compressed, payload));
                    continue;
                }
                Some((kind, compressed, mut fragments)) => {
                    fragments.extend_from_slice(&payload);
                    if !header.fin {
                        self.fragments = Some((kind, compressed, fragments));
                        continue;
                    }
                    fragments
                }
            };
            let whole = if compressed {
                self.inflate_message(kind, &whole)?
            } else {
                whole.freeze()
            };
            return Ok(Some(Incoming::Message(kind, whole)));
        }
    }

    /// Inflates a complete compressed message (checking a text message's
    /// UTF-8), making the inflater if this is the first one, and dropping
    /// it afterwards if the peer resets its context per message.
    fn inflate_message(
        &mut self,
        kind: MessageKind,
        compressed: &[u8],
    ) -> Result<Bytes, FrameError> {
        let limit = self.max_message_size;
        // `compressed` is only set when inflating was negotiated.
        let Some(state) = self.inflate.as_mut() else {
            return Err(FrameError::ReservedBits);
        };
        let inflater = state.inflater.get_or_insert_with(Box::default);
        let result = inflater.inflate(compressed, limit);
        if state.reset_per_message || result.is_err() {
            state.inflater = None;
        }
        let plain = result.map_err(|e| match e {
            InflateError::TooBig { limit } => FrameError::TooBig {
                size: limit as u64 + 1,
                limit,
            },
            InflateError::Corrupt => FrameError::Inflate,
        })?;
        if kind == MessageKind::Text && std::str::from_utf8(&plain).is_err() {
            return Err(FrameError::InvalidText);
        }
        Ok(Bytes::from(plain))
    }

    /// Refuses a data frame of `len` bytes that would take the message,
    /// `so_far` bytes until now, over the size limit.
    fn check_size(&self, so_far: u64, len: u64) -> Result<(), FrameError> {
        let size = so_far.saturating_add(len);
        if size > self.max_message_size as u64 {
            return Err(FrameError::TooBig {
                size,
                limit: self.max_message_size,
            });
        }
        Ok(())
    }

    /// Checks the UTF-8 of the part of a text frame's payload received so
    /// far (`received`, still masked with `mask`), from where the last call
    /// stopped, so invalid text is refused before the frame is complete.
    fn check_partial_text(
        &mut self,
        received: &[u8],
        mask: Option<[u8; 4]>,
    ) -> Result<(), FrameError> {
        let new = received.get(self.checked..).unwrap_or_default();
        let mut chunk = [0u8; 256];
        for (i, piece) in new.chunks(chunk.len()).enumerate() {
            let chunk = &mut chunk[..piece.len()];
            chunk.copy_from_slice(piece);
            if let Some(key) = mask {
                // The key's phase at this piece's first byte.
                let offset = self.checked + i * 256;
                let key: [u8; 4] = std::array::from_fn(|k| key[(offset + k) % 4]);
                apply_mask(chunk, key);
            }
            self.utf8.feed(chunk).map_err(|_| FrameError::InvalidText)?;
        }
        self.checked += new.len();
        Ok(())
    }
}

/// The permessage-deflate side of a [`FrameDecoder`].
#[derive(Debug)]
struct InflateState {
    /// Drop the inflater after each message (the peer agreed to no context
    /// takeover).
    reset_per_message: bool,
    /// Made when the first compressed message arrives.
    inflater: Option<Box<Inflater>>,
}

fn parse_close(payload: &[u8]) -> Result<CloseFrame, FrameError> {
    match payload {
        [] => Ok(CloseFrame {
            code: None,
            reason: String::new(),
        }),
        [_] => Err(FrameError::InvalidClose),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(FrameError::InvalidClose);
            }
            let reason = std::str::from_utf8(reason).map_err(|_| FrameError::InvalidCloseReason)?;
            Ok(CloseFrame {
                code: Some(code),
                reason: reason.to_owned(),
            })
        }
    }
}

/// Length of an unmasked (server) frame header for a payload of `len`.
pub fn server_header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xffff => 4,
        _ => 10,
    }
}

fn write_header(out: &mut Vec<u8>, first: u8, len: usize, mask_bit: u8) {
    out.push(first);
    match len {
        0..=125 => out.push(mask_bit | len as u8),
        126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
}

/// Appends the header of an unmasked, final frame (as the broker sends).
pub fn write_server_header(out: &mut Vec<u8>, opcode: OpCode, len: usize) {
    write_header(out, 0x80 | opcode.bits(), len, 0);
}

/// Encodes `body` as one unmasked, final frame of `opcode`.
pub fn server_frame(opcode: OpCode, body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(server_header_len(body.len()) + body.len());
    write_server_header(&mut out, opcode, body.len());
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// Encodes `compressed` (from [`crate::deflate::compress`]) as one
/// unmasked, final frame of `opcode` with RSV1 set: a permessage-deflate
/// message.
pub fn compressed_server_frame(opcode: OpCode, compressed: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(server_header_len(compressed.len()) + compressed.len());
    write_header(&mut out, 0xc0 | opcode.bits(), compressed.len(), 0);
    out.extend_from_slice(compressed);
    Bytes::from(out)
}

/// Encodes `body` as one unmasked, final binary frame.
pub fn binary_frame(body: &[u8]) -> Bytes {
    server_frame(OpCode::Binary, body)
}

/// The body of a close frame: the code, then the reason truncated to fit the
/// 125-byte control frame limit on a character boundary.
pub fn close_body(code: u16, reason: &str) -> Vec<u8> {
    let mut cut = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut body = Vec::with_capacity(2 + cut);
    body.extend_from_slice(&code.to_be_bytes());
    body.extend_from_slice(&reason.as_bytes()[..cut]);
    body
}

/// An unmasked close frame with `code` and its documented reason.
pub fn server_close_frame(code: CloseCode) -> Bytes {
    server_frame(OpCode::Close, &close_body(code.as_u16(), code.reason()))
}

/// Appends a masked, final frame (as a client sends) with the given key.
pub fn write_client_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], key: [u8; 4]) {
    write_header(out, 0x80 | opcode.bits(), payload.len(), 0x80);
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key);
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [1, 2, 3, 4];

    fn client_frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_client_frame(&mut out, opcode, payload, KEY);
        if !fin {
            out[0] &= 0x7f;
        }
        out
    }

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Incoming>, FrameError> {
        decode_with(&mut FrameDecoder::new(Role::Server, max), bytes)
    }

    #[test]
    fn masked_binary_round_trip_at_every_length_class() {
        for len in [0, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let items = decode_all(&client_frame(OpCode::Binary, true, &payload), 1 << 20).unwrap();
            assert_eq!(
                items,
                vec![Incoming::Message(MessageKind::Binary, Bytes::from(payload))]
            );
        }
    }

    #[test]
    fn partial_input_waits_for_more() {
        let frame = client_frame(OpCode::Binary, true, &[7; 300]);
        let mut decoder = FrameDecoder::new(Role::Server, 1024);
        let mut buf = BytesMut::new();
        for (i, b) in frame.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let item = decoder.decode(&mut buf).unwrap();
            assert_eq!(item.is_some(), i + 1 == frame.len(), "byte {i}");
            if item.is_none() {
                assert!(decoder.wanted() > buf.len());
            }
        }
    }

    #[test]
    fn fragments_reassemble_with_interleaved_control() {
        let mut bytes = client_frame(OpCode::Binary, false, b"ab");
        bytes.extend(client_frame(OpCode::Ping, true, b"p"));
        bytes.extend(client_frame(OpCode::Continuation, false, b"cd"));
        bytes.extend(client_frame(OpCode::Continuation, true, b"e"));
        let items = decode_all(&bytes, 1024).unwrap();
        assert_eq!(
            items,
            vec![
                Incoming::Ping(Bytes::from_static(b"p")),
                Incoming::Message(MessageKind::Binary, Bytes::from_static(b"abcde")),
            ]
        );
    }

    fn first_error(bytes: &[u8], max: usize) -> FrameError {
        decode_all(bytes, max).unwrap_err()
    }

    #[test]
    fn violations_map_to_close_codes() {
        let mut rsv = client_frame(OpCode::Binary, true, b"x");
        rsv[0] |= 0x40;
        assert_eq!(first_error(&rsv, 64).close_code(), CloseCode::ProtocolError);

        let mut reserved_op = client_frame(OpCode::Binary, true, b"x");
        reserved_op[0] = 0x83;
        assert_eq!(first_error(&reserved_op, 64), FrameError::ReservedOpcode(3));

        let unmasked = [0x82, 0x01, b'x'];
        assert_eq!(first_error(&unmasked, 64), FrameError::Unmasked);

        let big_ping = client_frame(OpCode::Ping, true, &[0; 126]);
        assert_eq!(first_error(&big_ping, 1024), FrameError::ControlTooLong);
        assert_eq!(FrameError::ControlTooLong.close_code().as_u16(), 1002);

        let frag_ping = client_frame(OpCode::Ping, false, b"");
        assert_eq!(first_error(&frag_ping, 64), FrameError::FragmentedControl);

        let cont = client_frame(OpCode::Continuation, true, b"x");
        assert_eq!(first_error(&cont, 64), FrameError::UnexpectedContinuation);

        let mut nested = client_frame(OpCode::Binary, false, b"x");
        nested.extend(client_frame(OpCode::Binary, true, b"y"));
        assert_eq!(first_error(&nested, 64), FrameError::ExpectedContinuation);

        let big = client_frame(OpCode::Binary, true, &[0; 65]);
        assert_eq!(first_error(&big, 64).close_code().as_u16(), 1009);

        let bad_reason = client_frame(OpCode::Close, true, &[0x03, 0xe8, 0xff, 0xfe]);
        assert_eq!(first_error(&bad_reason, 64).close_code().as_u16(), 1007);

        let bad_code = client_frame(OpCode::Close, true, &[0x03, 0xed]);
        assert_eq!(first_error(&bad_code, 64), FrameError::InvalidClose);

        let one_byte = client_frame(OpCode::Close, true, &[0x03]);
        assert_eq!(first_error(&one_byte, 64), FrameError::InvalidClose);

        let huge_len = [0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(first_error(&huge_len, 64), FrameError::InvalidLength);
    }

    #[test]
    fn oversized_fragmented_message_is_refused_before_buffering() {
        let mut decoder = FrameDecoder::new(Role::Server, 100);
        let mut buf = BytesMut::from(&client_frame(OpCode::Binary, false, &[0; 60])[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        // Only the header of the second fragment has arrived.
        let second = client_frame(OpCode::Continuation, true, &[0; 60]);
        buf.extend_from_slice(&second[..8]);
        assert_eq!(
            decoder.decode(&mut buf).unwrap_err().close_code(),
            CloseCode::MessageTooBig
        );
    }

    #[test]
    fn close_frames() {
        let items = decode_all(
            &client_frame(OpCode::Close, true, &close_body(1000, "bye")),
            64,
        )
        .unwrap();
        assert_eq!(
            items,
            vec![Incoming::Close(CloseFrame {
                code: Some(1000),
                reason: "bye".into()
            })]
        );
        let long_reason = "é".repeat(100);
        assert!(close_body(1000, &long_reason).len() <= MAX_CONTROL_PAYLOAD);
        assert_eq!(
            &server_close_frame(CloseCode::GoingAway)[..4],
            &[0x88, 22, 0x03, 0xe9]
        );
    }

    #[test]
    fn client_role_rejects_masked_frames() {
        let mut decoder = FrameDecoder::new(Role::Client, 64);
        let mut buf = BytesMut::from(&client_frame(OpCode::Binary, true, b"x")[..]);
        assert_eq!(decoder.decode(&mut buf), Err(FrameError::Masked));
        let mut buf = BytesMut::from(&binary_frame(b"ok")[..]);
        assert_eq!(
            decoder.decode(&mut buf),
            Ok(Some(Incoming::Message(
                MessageKind::Binary,
                Bytes::from_static(b"ok")
            )))
        );
    }

    #[test]
    fn text_messages_are_delivered_as_text() {
        let mut bytes = client_frame(OpCode::Text, true, "κόσμε".as_bytes());
        // "€" (e2 82 ac) split across fragments, a ping in between.
        bytes.extend(client_frame(OpCode::Text, false, b"a\xe2"));
        bytes.extend(client_frame(OpCode::Ping, true, b""));
        bytes.extend(client_frame(OpCode::Continuation, false, b"\x82"));
        bytes.extend(client_frame(OpCode::Continuation, true, b"\xac"));
        bytes.extend(client_frame(OpCode::Text, true, b""));
        assert_eq!(
            decode_all(&bytes, 64).unwrap(),
            vec![
                Incoming::Message(MessageKind::Text, Bytes::from("κόσμε")),
                Incoming::Ping(Bytes::new()),
                Incoming::Message(MessageKind::Text, Bytes::from("a€")),
                Incoming::Message(MessageKind::Text, Bytes::new()),
            ]
        );
    }

    #[test]
    fn invalid_text_is_refused_with_1007() {
        let surrogate = client_frame(OpCode::Text, true, b"ok\xed\xa0\x80");
        assert_eq!(first_error(&surrogate, 64), FrameError::InvalidText);
        assert_eq!(FrameError::InvalidText.close_code().as_u16(), 1007);

        // A character cut at the end of the final frame.
        let mut cut = client_frame(OpCode::Text, false, b"a");
        cut.extend(client_frame(OpCode::Continuation, true, b"\xe2\x82"));
        assert_eq!(first_error(&cut, 64), FrameError::InvalidText);

        // Binary messages are not checked.
        let binary = client_frame(OpCode::Binary, true, b"\xff");
        assert!(decode_all(&binary, 64).is_ok());
    }

    #[test]
    fn invalid_text_fails_fast_fragment_by_fragment() {
        let mut decoder = FrameDecoder::new(Role::Server, 1024);
        // A valid first fragment ending inside a character is held.
        let mut buf = BytesMut::from(&client_frame(OpCode::Text, false, b"ok\xf4")[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        // The next fragment's first byte makes it invalid: refused without
        // waiting for the final frame.
        buf.extend_from_slice(&client_frame(OpCode::Continuation, false, b"\x90\x80")[..]);
        assert_eq!(decoder.decode(&mut buf), Err(FrameError::InvalidText));
    }

    #[test]
    fn invalid_text_fails_fast_within_a_frame() {
        let mut payload = vec![b'a'; 200];
        payload.extend_from_slice(b"\xc0\xaf");
        payload.extend(vec![b'b'; 300]);
        let frame = client_frame(OpCode::Text, true, &payload);
        let header_len = 4 + 4;
        let bad_at = header_len + 200;
        let mut decoder = FrameDecoder::new(Role::Server, 1024);
        let mut buf = BytesMut::new();
        for (i, b) in frame.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let result = decoder.decode(&mut buf);
            if i < bad_at {
                assert_eq!(result, Ok(None), "byte {i}");
            } else {
                // 0xc0 can never start a character.
                assert_eq!(result, Err(FrameError::InvalidText), "byte {i}");
                return;
            }
        }
        panic!("invalid text not detected");
    }

    #[test]
    fn non_minimal_lengths_are_refused() {
        // 5 bytes announced with the 16-bit form.
        let mut frame = vec![0x82, 0x80 | 126, 0, 5];
        frame.extend_from_slice(&KEY);
        frame.extend_from_slice(b"hello");
        assert_eq!(first_error(&frame, 64), FrameError::NonMinimalLength(5));
        // 200 bytes announced with the 64-bit form.
        let mut frame = vec![0x82, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 200];
        frame.extend_from_slice(&KEY);
        assert_eq!(first_error(&frame, 1024), FrameError::NonMinimalLength(200));
        // Control frames too; every refusal is 1002.
        let frame = [0x89, 0x80 | 126, 0, 0, 1, 2, 3, 4];
        assert_eq!(first_error(&frame, 64), FrameError::NonMinimalLength(0));
        assert_eq!(FrameError::NonMinimalLength(0).close_code().as_u16(), 1002);
    }

    #[test]
    fn encoders_use_the_shortest_length_form() {
        for (len, header) in [(0, 2), (125, 2), (126, 4), (0xffff, 4), (0x1_0000, 10)] {
            let payload = vec![0; len];
            let server = server_frame(OpCode::Binary, &payload);
            assert_eq!(server.len() - len, header, "server frame of {len}");
            assert_eq!(server_header_len(len), header);
            let mut client = Vec::new();
            write_client_frame(&mut client, OpCode::Binary, &payload, KEY);
            assert_eq!(client.len() - len, header + 4, "client frame of {len}");
            // And the strict decoders accept what they produce.
            let mut buf = BytesMut::from(&server[..]);
            let mut decoder = FrameDecoder::new(Role::Client, 1 << 20);
            assert!(decoder.decode(&mut buf).unwrap().is_some());
            assert_eq!(decode_all(&client, 1 << 20).unwrap().len(), 1);
        }
    }

    #[test]
    fn close_codes_of_the_registry_are_accepted() {
        for code in [1012, 1013, 1014] {
            let frame = client_frame(OpCode::Close, true, &close_body(code, ""));
            assert!(decode_all(&frame, 64).is_ok(), "{code}");
        }
        for code in [1004, 1005, 1006, 1015] {
            let frame = client_frame(OpCode::Close, true, &close_body(code, ""));
            assert_eq!(first_error(&frame, 64), FrameError::InvalidClose, "{code}");
        }
    }

    fn compressed_client_frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = client_frame(opcode, fin, payload);
        out[0] |= 0x40;
        out
    }

    fn inflating(max: usize, reset: bool) -> FrameDecoder {
        FrameDecoder::new(Role::Server, max).with_inflate(reset)
    }

    fn decode_with(decoder: &mut FrameDecoder, bytes: &[u8]) -> Result<Vec<Incoming>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        let mut items = Vec::new();
        while let Some(item) = decoder.decode(&mut buf)? {
            items.push(item);
        }
        Ok(items)
    }

    #[test]
    fn rsv1_needs_permessage_deflate_and_a_first_data_frame() {
        let squeezed = crate::deflate::compress(b"hello", 1);
        let frame = compressed_client_frame(OpCode::Binary, true, &squeezed);
        assert_eq!(first_error(&frame, 64), FrameError::ReservedBits);
        let items = decode_with(&mut inflating(64, true), &frame).unwrap();
        assert_eq!(
            items,
            vec![Incoming::Message(
                MessageKind::Binary,
                Bytes::from_static(b"hello")
            )]
        );
        // RSV1 on a control frame or a continuation: 1002 even when
        // negotiated; RSV2 and RSV3 never.
        let ping = compressed_client_frame(OpCode::Ping, true, b"");
        assert_eq!(
            decode_with(&mut inflating(64, true), &ping),
            Err(FrameError::ReservedBits)
        );
        let mut cont = client_frame(OpCode::Binary, false, b"a");
        cont.extend(compressed_client_frame(OpCode::Continuation, true, b"b"));
        assert_eq!(
            decode_with(&mut inflating(64, true), &cont),
            Err(FrameError::ReservedBits)
        );
        for bit in [0x20, 0x10] {
            let mut frame = client_frame(OpCode::Binary, true, b"x");
            frame[0] |= bit;
            assert_eq!(
                decode_with(&mut inflating(64, true), &frame),
                Err(FrameError::ReservedBits)
            );
        }
    }

    #[test]
    fn compressed_fragments_and_text() {
        let text = "κόσμε ".repeat(20);
        let squeezed = crate::deflate::compress(text.as_bytes(), 6);
        let (a, b) = squeezed.split_at(squeezed.len() / 2);
        let mut bytes = compressed_client_frame(OpCode::Text, false, a);
        bytes.extend(client_frame(OpCode::Ping, true, b""));
        bytes.extend(client_frame(OpCode::Continuation, true, b));
        // And an uncompressed message on the same connection.
        bytes.extend(client_frame(OpCode::Binary, true, b"plain"));
        let mut decoder = inflating(1024, false);
        assert_eq!(
            decode_with(&mut decoder, &bytes).unwrap(),
            vec![
                Incoming::Ping(Bytes::new()),
                Incoming::Message(MessageKind::Text, Bytes::from(text)),
                Incoming::Message(MessageKind::Binary, Bytes::from_static(b"plain")),
            ]
        );
        // Inflated text that is not UTF-8: 1007.
        let bad = crate::deflate::compress(b"ok\xff", 1);
        let frame = compressed_client_frame(OpCode::Text, true, &bad);
        assert_eq!(
            decode_with(&mut inflating(64, true), &frame),
            Err(FrameError::InvalidText)
        );
        // Not DEFLATE data: 1007.
        let frame = compressed_client_frame(OpCode::Binary, true, &[0xff, 0xff]);
        let error = decode_with(&mut inflating(64, true), &frame).unwrap_err();
        assert_eq!(error, FrameError::Inflate);
        assert_eq!(error.close_code().as_u16(), 1007);
    }

    #[test]
    fn a_compression_bomb_is_refused_with_1009() {
        let bomb = crate::deflate::compress(&vec![0; 1 << 20], 9);
        let frame = compressed_client_frame(OpCode::Binary, true, &bomb);
        let error = decode_with(&mut inflating(4096, true), &frame).unwrap_err();
        assert_eq!(error.close_code(), CloseCode::MessageTooBig);
    }

    #[test]
    fn the_inflater_is_made_lazily_and_kept_only_with_context_takeover() {
        let mut kept = inflating(64, false);
        let mut reset = inflating(64, true);
        assert!(!kept.holds_inflater() && !reset.holds_inflater());
        decode_with(&mut kept, &client_frame(OpCode::Binary, true, b"plain")).unwrap();
        assert!(!kept.holds_inflater(), "uncompressed messages need none");
        let frame =
            compressed_client_frame(OpCode::Binary, true, &crate::deflate::compress(b"z", 1));
        decode_with(&mut kept, &frame).unwrap();
        decode_with(&mut reset, &frame).unwrap();
        assert!(kept.holds_inflater());
        assert!(!reset.holds_inflater());
    }

    #[test]
    fn compressed_server_frames_have_rsv1() {
        let squeezed = crate::deflate::compress(b"abcabcabc", 1);
        let frame = compressed_server_frame(OpCode::Binary, &squeezed);
        assert_eq!(frame[0], 0xc2);
        let mut decoder = FrameDecoder::new(Role::Client, 64).with_inflate(true);
        assert_eq!(
            decode_with(&mut decoder, &frame).unwrap(),
            vec![Incoming::Message(
                MessageKind::Binary,
                Bytes::from_static(b"abcabcabc")
            )]
        );
    }

    #[test]
    fn mask_is_an_involution() {
        let original: Vec<u8> = (0..37).collect();
        let mut data = original.clone();
        apply_mask(&mut data, [9, 8, 7, 6]);
        assert_ne!(data, original);
        apply_mask(&mut data, [9, 8, 7, 6]);
        assert_eq!(data, original);
    }
}
