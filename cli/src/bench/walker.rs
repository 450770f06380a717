//! The subscriber's hot path: walks broker frames in place in a receive
//! buffer, reading only what the benchmark needs.
//!
//! For each `MESSAGE` (`[16, topic, epoch, seq, time, payload]`) it reads the
//! sequence number (to count gaps) and the first 8 payload bytes (the
//! publisher's send time, nanoseconds since the Unix epoch, little-endian) and
//! skips everything else. It never allocates and never copies a payload.
//! Control frames (ping, close) stop the walk so the caller can answer them.
//!
//! With permessage-deflate agreed ([`Walker::with_deflate`]) a compressed
//! message (RSV1 set) also stops the walk: the caller inflates its body
//! and hands the result to [`Walker::binary`]. The check for it sits on
//! the branch that otherwise refuses reserved bits, so a plain walk pays
//! nothing for it.
//!
//! This file depends on nothing but `std` so that the criterion benchmark
//! `cli/benches/bench_client.rs` can include it and measure the load
//! tool's receive ceiling without sockets.

/// Frames larger than this are refused as corrupt input rather than buffered.
pub const MAX_FRAME: usize = 64 << 20;

/// A control frame that stopped the walk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// A ping; the caller answers with a pong carrying the same payload.
    Ping(Vec<u8>),
    /// The broker's close frame, with its code (1005 when none was given).
    Close(u16),
    /// A compressed binary message (only with [`Walker::with_deflate`]):
    /// the range of its compressed body in the walked buffer.
    Compressed(std::ops::Range<usize>),
}

/// What one call to [`Walker::walk`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Walked {
    /// Bytes at the front of the buffer that were fully processed.
    pub consumed: usize,
    /// When the remaining bytes hold an incomplete frame whose total size is
    /// known, that size (the caller must be able to buffer it).
    pub need: usize,
    /// A control frame that ended the walk early.
    pub control: Option<Control>,
}

/// Input that cannot come from a tickwire broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalkError {
    /// A masked server frame, a reserved opcode or reserved bits.
    BadFrame(u8, u8),
    /// A frame over [`MAX_FRAME`] bytes.
    TooBig(u64),
}

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WalkError::BadFrame(b0, b1) => {
                write!(
                    f,
                    "invalid frame header {b0:#04x} {b1:#04x} from the broker"
                )
            }
            WalkError::TooBig(n) => write!(f, "frame of {n} bytes from the broker"),
        }
    }
}

/// Per-connection receive state and counters.
#[derive(Debug, Default, Clone)]
pub struct Walker {
    /// `MESSAGE` frames seen.
    pub messages: u64,
    /// Sequence numbers skipped (messages the broker numbered but this
    /// connection never received).
    pub seq_gaps: u64,
    /// Times a sequence number went backwards or repeated.
    pub seq_regressions: u64,
    /// `ERROR` replies received.
    pub errors: u64,
    /// Other well-formed frames (replies, pongs).
    pub other: u64,
    /// Binary frames that are not well-formed tickwire messages.
    pub malformed: u64,
    /// Compressed messages handed back to the caller.
    pub compressed: u64,
    last_seq: u64,
    deflate: bool,
}

/// Reads a MessagePack unsigned integer at `pos`; returns it and the position
/// after it.
#[inline(always)]
fn read_uint(b: &[u8], pos: usize) -> Option<(u64, usize)> {
    let marker = *b.get(pos)?;
    match marker {
        0x00..=0x7f => Some((u64::from(marker), pos + 1)),
        0xcc => Some((u64::from(*b.get(pos + 1)?), pos + 2)),
        0xcd => {
            let s = b.get(pos + 1..pos + 3)?;
            Some((u64::from(u16::from_be_bytes([s[0], s[1]])), pos + 3))
        }
        0xce => {
            let s = b.get(pos + 1..pos + 5)?;
            Some((
                u64::from(u32::from_be_bytes([s[0], s[1], s[2], s[3]])),
                pos + 5,
            ))
        }
        0xcf => {
            let s: [u8; 8] = b.get(pos + 1..pos + 9)?.try_into().ok()?;
            Some((u64::from_be_bytes(s), pos + 9))
        }
        _ => None,
    }
}

/// Parses the fields of a `MESSAGE` body the benchmark needs: the sequence
/// number and the send time in the first 8 payload bytes (0 if shorter).
#[inline(always)]
fn parse_message(b: &[u8]) -> Option<(u64, u64)> {
    // b[0] = 0x96 (array of 6) and b[1] = 16 were checked by the caller.
    let marker = *b.get(2)?;
    let after_topic = match marker {
        0xa0..=0xbf => 3 + usize::from(marker & 0x1f),
        0xd9 => 4 + usize::from(*b.get(3)?),
        0xda => {
            let s = b.get(3..5)?;
            5 + usize::from(u16::from_be_bytes([s[0], s[1]]))
        }
        _ => return None,
    };
    let (_epoch, pos) = read_uint(b, after_topic)?;
    let (seq, pos) = read_uint(b, pos)?;
    let (_time, pos) = read_uint(b, pos)?;
    let (len, start) = match *b.get(pos)? {
        0xc4 => (usize::from(*b.get(pos + 1)?), pos + 2),
        0xc5 => {
            let s = b.get(pos + 1..pos + 3)?;
            (usize::from(u16::from_be_bytes([s[0], s[1]])), pos + 3)
        }
        0xc6 => {
            let s = b.get(pos + 1..pos + 5)?;
            (
                u32::from_be_bytes([s[0], s[1], s[2], s[3]]) as usize,
                pos + 5,
            )
        }
        _ => return None,
    };
    if start + len != b.len() {
        return None;
    }
    let sent = match b.get(start..start + 8) {
        Some(s) if len >= 8 => u64::from_le_bytes(s.try_into().ok()?),
        _ => 0,
    };
    Some((seq, sent))
}

impl Walker {
    /// A walker with zeroed counters.
    pub fn new() -> Self {
        Walker::default()
    }

    /// A walker for a connection with permessage-deflate agreed when
    /// `deflate` is true: compressed binary frames stop the walk with
    /// [`Control::Compressed`] instead of being refused.
    pub fn with_deflate(deflate: bool) -> Self {
        Walker {
            deflate,
            ..Walker::default()
        }
    }

    /// Walks every complete frame at the front of `buf`, calling
    /// `on_message(sent_ns)` for each `MESSAGE` (`sent_ns` is 0 when the
    /// payload is shorter than 8 bytes). Stops early at a ping or close.
    #[inline]
    pub fn walk(
        &mut self,
        buf: &[u8],
        mut on_message: impl FnMut(u64),
    ) -> Result<Walked, WalkError> {
        let mut pos = 0;
        loop {
            let rest = &buf[pos..];
            let [b0, b1, ..] = *rest else {
                return Ok(Walked {
                    consumed: pos,
                    need: 0,
                    control: None,
                });
            };
            // Unmasked, no reserved bits (but RSV1 on a whole binary
            // message with deflate), opcode 0-2 or 8-10.
            let compressed = b0 & 0x70 != 0;
            if b1 & 0x80 != 0 || (compressed && !(b0 == 0xc2 && self.deflate)) {
                return Err(WalkError::BadFrame(b0, b1));
            }
            let (len, header) = match b1 {
                126 => match rest.get(2..4) {
                    Some(s) => (u64::from(u16::from_be_bytes([s[0], s[1]])), 4),
                    None => return Ok(self.partial(pos, 0)),
                },
                127 => match rest.get(2..10) {
                    Some(s) => {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(s);
                        (u64::from_be_bytes(a), 10)
                    }
                    None => return Ok(self.partial(pos, 0)),
                },
                n => (u64::from(n), 2),
            };
            if len > MAX_FRAME as u64 {
                return Err(WalkError::TooBig(len));
            }
            let total = header + len as usize;
            let Some(body) = rest.get(header..total) else {
                return Ok(self.partial(pos, total));
            };
            let start = pos + header;
            pos += total;
            match b0 {
                0x82 => self.binary(body, &mut on_message),
                0xc2 => {
                    self.compressed += 1;
                    return Ok(Walked {
                        consumed: pos,
                        need: 0,
                        control: Some(Control::Compressed(start..pos)),
                    });
                }
                0x89 => {
                    return Ok(Walked {
                        consumed: pos,
                        need: 0,
                        control: Some(Control::Ping(body.to_vec())),
                    });
                }
                0x88 => {
                    let code = match body {
                        [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
                        _ => 1005,
                    };
                    return Ok(Walked {
                        consumed: pos,
                        need: 0,
                        control: Some(Control::Close(code)),
                    });
                }
                0x8a => self.other += 1,
                // Text, continuation or fragmented frames: the broker never
                // sends them.
                _ => self.malformed += 1,
            }
        }
    }

    /// Counts one binary message `body` (a frame's, or an inflated
    /// compressed one's), calling `on_message(sent_ns)` for a `MESSAGE`.
    #[inline(always)]
    pub fn binary(&mut self, body: &[u8], mut on_message: impl FnMut(u64)) {
        if let [0x96, 0x10, ..] = body {
            match parse_message(body) {
                Some((seq, sent)) => {
                    self.messages += 1;
                    if self.last_seq != 0 && seq != self.last_seq + 1 {
                        if seq > self.last_seq {
                            self.seq_gaps += seq - self.last_seq - 1;
                        } else {
                            self.seq_regressions += 1;
                        }
                    }
                    self.last_seq = seq;
                    on_message(sent);
                }
                None => self.malformed += 1,
            }
        } else if let [0x94, 0x0f, ..] = body {
            self.errors += 1;
        } else {
            self.other += 1;
        }
    }

    fn partial(&self, consumed: usize, need: usize) -> Walked {
        Walked {
            consumed,
            need,
            control: None,
        }
    }
}
