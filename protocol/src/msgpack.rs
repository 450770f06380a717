//! The small part of MessagePack that tickwire messages use, read strictly and
//! written canonically.
//!
//! [`Reader`] walks a frame without allocating: strings come back as `&str`
//! borrowed from the frame and binaries as positions the caller turns into a
//! [`bytes::Bytes`] slice, so a payload that is only forwarded is never copied.
//! Every read checks the remaining length first; hostile input yields a
//! [`MsgpackError`], never a panic. The writer functions always choose the
//! shortest encoding, which is what makes encoded frames byte-identical across
//! implementations that follow docs/protocol.md.

use thiserror::Error;

/// Deepest nesting [`Reader::skip_value`] follows before giving up.
pub const MAX_SKIP_DEPTH: usize = 32;

/// Why bytes could not be read as the expected MessagePack value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MsgpackError {
    /// The input ended inside a value.
    #[error("message ends inside a value")]
    UnexpectedEnd,
    /// A value of another type than expected.
    #[error("expected {expected}, found MessagePack marker 0x{marker:02x}")]
    UnexpectedType {
        /// What the reader wanted, e.g. "string".
        expected: &'static str,
        /// The marker byte found instead.
        marker: u8,
    },
    /// An unsigned integer did not fit in `u64`, or was negative.
    #[error("integer out of range")]
    IntegerOutOfRange,
    /// A string that is not valid UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// Values nested deeper than [`MAX_SKIP_DEPTH`].
    #[error("values nested deeper than {MAX_SKIP_DEPTH}")]
    TooDeep,
    /// Bytes left over after the message's last value.
    #[error("{0} unexpected bytes after the message")]
    TrailingBytes(usize),
}

/// A cursor over one MessagePack-encoded message.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Current offset into the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Fails unless every byte has been read.
    pub fn finish(&self) -> Result<(), MsgpackError> {
        match self.buf.len() - self.pos {
            0 => Ok(()),
            n => Err(MsgpackError::TrailingBytes(n)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], MsgpackError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.buf.len())
            .ok_or(MsgpackError::UnexpectedEnd)?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, MsgpackError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, MsgpackError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    /// The next marker byte, without consuming it.
    pub fn peek(&self) -> Result<u8, MsgpackError> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or(MsgpackError::UnexpectedEnd)
    }

    /// Consumes a `nil` if one is next; returns whether it did.
    pub fn read_nil(&mut self) -> Result<bool, MsgpackError> {
        if self.peek()? == 0xc0 {
            self.pos += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Reads a non-negative integer of any width (uint or int family).
    pub fn read_u64(&mut self) -> Result<u64, MsgpackError> {
        let marker = self.byte()?;
        let signed = |v: i64| u64::try_from(v).map_err(|_| MsgpackError::IntegerOutOfRange);
        match marker {
            0x00..=0x7f => Ok(u64::from(marker)),
            0xcc => self.be(1),
            0xcd => self.be(2),
            0xce => self.be(4),
            0xcf => self.be(8),
            0xd0 => signed(i64::from(self.be(1)? as u8 as i8)),
            0xd1 => signed(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => signed(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => signed(self.be(8)? as i64),
            0xe0..=0xff => Err(MsgpackError::IntegerOutOfRange),
            _ => Err(MsgpackError::UnexpectedType {
                expected: "unsigned integer",
                marker,
            }),
        }
    }

    /// Reads an array header and returns its length.
    pub fn read_array_len(&mut self) -> Result<usize, MsgpackError> {
        let marker = self.byte()?;
        let len = match marker {
            0x90..=0x9f => u64::from(marker & 0x0f),
            0xdc => self.be(2)?,
            0xdd => self.be(4)?,
            _ => {
                return Err(MsgpackError::UnexpectedType {
                    expected: "array",
                    marker,
                });
            }
        };
        usize::try_from(len).map_err(|_| MsgpackError::IntegerOutOfRange)
    }

    /// Reads a map header and returns its number of key/value pairs.
    pub fn read_map_len(&mut self) -> Result<usize, MsgpackError> {
        let marker = self.byte()?;
        let len = match marker {
            0x80..=0x8f => u64::from(marker & 0x0f),
            0xde => self.be(2)?,
            0xdf => self.be(4)?,
            _ => {
                return Err(MsgpackError::UnexpectedType {
                    expected: "map",
                    marker,
                });
            }
        };
        usize::try_from(len).map_err(|_| MsgpackError::IntegerOutOfRange)
    }

    fn str_len(&mut self) -> Result<usize, MsgpackError> {
        let marker = self.byte()?;
        let len = match marker {
            0xa0..=0xbf => u64::from(marker & 0x1f),
            0xd9 => self.be(1)?,
            0xda => self.be(2)?,
            0xdb => self.be(4)?,
            _ => {
                return Err(MsgpackError::UnexpectedType {
                    expected: "string",
                    marker,
                });
            }
        };
        usize::try_from(len).map_err(|_| MsgpackError::IntegerOutOfRange)
    }

    /// Reads a string, borrowed from the buffer.
    pub fn read_str(&mut self) -> Result<&'a str, MsgpackError> {
        let len = self.str_len()?;
        std::str::from_utf8(self.take(len)?).map_err(|_| MsgpackError::InvalidUtf8)
    }

    /// Reads a `bin` value and returns its byte range within the buffer, so
    /// the caller can slice a shared buffer without copying.
    pub fn read_bin_range(&mut self) -> Result<std::ops::Range<usize>, MsgpackError> {
        let marker = self.byte()?;
        let len = match marker {
            0xc4 => self.be(1)?,
            0xc5 => self.be(2)?,
            0xc6 => self.be(4)?,
            _ => {
                return Err(MsgpackError::UnexpectedType {
                    expected: "binary",
                    marker,
                });
            }
        };
        let len = usize::try_from(len).map_err(|_| MsgpackError::IntegerOutOfRange)?;
        let start = self.pos;
        self.take(len)?;
        Ok(start..self.pos)
    }

    /// Reads a boolean.
    pub fn read_bool(&mut self) -> Result<bool, MsgpackError> {
        match self.byte()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            marker => Err(MsgpackError::UnexpectedType {
                expected: "boolean",
                marker,
            }),
        }
    }

    /// Reads one value of any type (checked as [`Reader::skip_value`] does)
    /// and returns its byte range within the buffer, so the caller can keep
    /// it as raw MessagePack without copying.
    pub fn read_value_range(&mut self) -> Result<std::ops::Range<usize>, MsgpackError> {
        let start = self.pos;
        self.skip_value()?;
        Ok(start..self.pos)
    }

    /// Skips one value of any type, however nested (up to [`MAX_SKIP_DEPTH`]).
    pub fn skip_value(&mut self) -> Result<(), MsgpackError> {
        let mut pending: usize = 1;
        let mut depth_stack: Vec<usize> = Vec::new();
        while pending > 0 || !depth_stack.is_empty() {
            if pending == 0 {
                pending = depth_stack.pop().unwrap_or(0);
                continue;
            }
            pending -= 1;
            let marker = self.byte()?;
            let (skip, children): (u64, u64) = match marker {
                0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
                0x80..=0x8f => (0, 2 * u64::from(marker & 0x0f)),
                0x90..=0x9f => (0, u64::from(marker & 0x0f)),
                0xa0..=0xbf => (u64::from(marker & 0x1f), 0),
                0xcc | 0xd0 => (1, 0),
                0xcd | 0xd1 => (2, 0),
                0xce | 0xd2 | 0xca => (4, 0),
                0xcf | 0xd3 | 0xcb => (8, 0),
                0xd4 => (2, 0),
                0xd5 => (3, 0),
                0xd6 => (5, 0),
                0xd7 => (9, 0),
                0xd8 => (17, 0),
                0xc4 | 0xd9 => (self.be(1)?, 0),
                0xc5 | 0xda => (self.be(2)?, 0),
                0xc6 | 0xdb => (self.be(4)?, 0),
                0xc7 => (self.be(1)? + 1, 0),
                0xc8 => (self.be(2)? + 1, 0),
                0xc9 => (self.be(4)? + 1, 0),
                0xdc => (0, self.be(2)?),
                0xdd => (0, self.be(4)?),
                0xde => (0, 2 * self.be(2)?),
                0xdf => (0, 2 * self.be(4)?),
                _ => {
                    return Err(MsgpackError::UnexpectedType {
                        expected: "any value",
                        marker,
                    });
                }
            };
            let skip = usize::try_from(skip).map_err(|_| MsgpackError::UnexpectedEnd)?;
            self.take(skip)?;
            if children > 0 {
                if depth_stack.len() >= MAX_SKIP_DEPTH {
                    return Err(MsgpackError::TooDeep);
                }
                // Every child needs at least one byte: refuse counts the
                // remaining input cannot hold before doing any work.
                let remaining = (self.buf.len() - self.pos) as u64;
                if children > remaining {
                    return Err(MsgpackError::UnexpectedEnd);
                }
                depth_stack.push(pending);
                pending = children as usize;
            }
        }
        Ok(())
    }
}

/// Appends the shortest encoding of a non-negative integer.
pub fn write_u64(out: &mut Vec<u8>, v: u64) {
    if v < 0x80 {
        out.push(v as u8);
    } else if v <= 0xff {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= 0xffff {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

/// Appends `nil`.
pub fn write_nil(out: &mut Vec<u8>) {
    out.push(0xc0);
}

/// Appends a boolean.
pub fn write_bool(out: &mut Vec<u8>, v: bool) {
    out.push(if v { 0xc3 } else { 0xc2 });
}

fn write_len(out: &mut Vec<u8>, len: usize, fix: Option<(u8, usize)>, markers: [u8; 3]) {
    match fix {
        Some((base, max)) if len <= max => out.push(base | len as u8),
        _ if markers[0] != 0 && len <= 0xff => out.extend_from_slice(&[markers[0], len as u8]),
        _ if len <= 0xffff => {
            out.push(markers[1]);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(markers[2]);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
}

/// Appends an array header for `len` elements.
pub fn write_array_len(out: &mut Vec<u8>, len: usize) {
    write_len(out, len, Some((0x90, 15)), [0, 0xdc, 0xdd]);
}

/// Appends a map header for `len` key/value pairs.
pub fn write_map_len(out: &mut Vec<u8>, len: usize) {
    write_len(out, len, Some((0x80, 15)), [0, 0xde, 0xdf]);
}

/// Appends a string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    write_len(out, s.len(), Some((0xa0, 31)), [0xd9, 0xda, 0xdb]);
    out.extend_from_slice(s.as_bytes());
}

/// Appends the header of a `bin` value of `len` bytes (the bytes follow).
pub fn write_bin_header(out: &mut Vec<u8>, len: usize) {
    write_len(out, len, None, [0xc4, 0xc5, 0xc6]);
}

/// Length of the encoding [`write_u64`] produces.
pub fn u64_len(v: u64) -> usize {
    match v {
        0..=0x7f => 1,
        0x80..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Length of the header [`write_str`] produces for a string of `len` bytes.
pub fn str_header_len(len: usize) -> usize {
    match len {
        0..=31 => 1,
        32..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

/// Length of the header [`write_bin_header`] produces.
pub fn bin_header_len(len: usize) -> usize {
    match len {
        0..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_round_trip_at_every_width() {
        for v in [
            0,
            1,
            127,
            128,
            255,
            256,
            65535,
            65536,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_u64(&mut out, v);
            assert_eq!(out.len(), u64_len(v));
            let mut r = Reader::new(&out);
            assert_eq!(r.read_u64(), Ok(v));
            r.finish().unwrap();
        }
    }

    #[test]
    fn signed_non_negative_integers_are_accepted() {
        assert_eq!(Reader::new(&[0xd0, 0x05]).read_u64(), Ok(5));
        assert_eq!(
            Reader::new(&[0xd0, 0xff]).read_u64(),
            Err(MsgpackError::IntegerOutOfRange)
        );
        assert_eq!(
            Reader::new(&[0xff]).read_u64(),
            Err(MsgpackError::IntegerOutOfRange)
        );
    }

    #[test]
    fn strings_and_bins_at_every_width() {
        for len in [0, 31, 32, 255, 256, 70000] {
            let s = "x".repeat(len);
            let mut out = Vec::new();
            write_str(&mut out, &s);
            assert_eq!(out.len(), str_header_len(len) + len);
            assert_eq!(Reader::new(&out).read_str(), Ok(s.as_str()));

            let mut out = Vec::new();
            write_bin_header(&mut out, len);
            assert_eq!(out.len(), bin_header_len(len));
            out.extend(std::iter::repeat_n(7u8, len));
            let range = Reader::new(&out).read_bin_range().unwrap();
            assert_eq!(range, bin_header_len(len)..out.len());
        }
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        write_str(&mut out, "hello world");
        for cut in 0..out.len() {
            assert!(Reader::new(&out[..cut]).read_str().is_err());
        }
        assert_eq!(
            Reader::new(&[0xc6, 0xff, 0xff, 0xff, 0xff]).read_bin_range(),
            Err(MsgpackError::UnexpectedEnd)
        );
    }

    #[test]
    fn skip_handles_nesting_and_rejects_bombs() {
        // {"a": [1, "x", {"b": nil}]}
        let bytes = [
            0x81, 0xa1, b'a', 0x93, 0x01, 0xa1, b'x', 0x81, 0xa1, b'b', 0xc0,
        ];
        let mut r = Reader::new(&bytes);
        r.skip_value().unwrap();
        r.finish().unwrap();

        // An array claiming four billion elements in five bytes.
        let bomb = [0xdd, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            Reader::new(&bomb).skip_value(),
            Err(MsgpackError::UnexpectedEnd)
        );

        let deep = vec![0x91u8; MAX_SKIP_DEPTH + 2];
        assert_eq!(Reader::new(&deep).skip_value(), Err(MsgpackError::TooDeep));
    }
}
