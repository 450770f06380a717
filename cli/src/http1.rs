//! Just enough HTTP/1.1 for the benchmark's SSE and long-poll clients and
//! the server API commands (`tickwire history`, `topics`, `presence`): a
//! GET request, the response head, and the body framing (`Content-Length`,
//! chunked, or until the connection closes), decoded incrementally.
//!
//! The requests carry only what the broker needs (`Host`, `Accept`,
//! `Authorization` with `--token`): a browser's requests carry several hundred
//! bytes more (User-Agent, Accept-Language, cookies), so the bytes the
//! benchmark counts for SSE and long-poll are a lower bound.

use std::fmt::Write as _;

use tickwire_protocol::handshake::ResponseHead;

/// Longest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// Longest chunk-size line (hex digits, extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 1024;

/// A `GET` request for `target` (path and query).
pub fn get_request(host: &str, target: &str, accept: &str, token: Option<&str>) -> Vec<u8> {
    let mut request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\n");
    if let Some(token) = token {
        let _ = write!(request, "Authorization: Bearer {token}\r\n");
    }
    request.push_str("\r\n");
    request.into_bytes()
}

/// `path?k=v&k=v` with every value percent-encoded (all but RFC 3986
/// unreserved characters).
pub fn with_query(path: &str, pairs: &[(&str, &str)]) -> String {
    let mut out = path.to_owned();
    for (i, (key, value)) in pairs.iter().enumerate() {
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(key);
        out.push('=');
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// Parses a response head at the front of `buf`: `Ok(None)` while
/// incomplete, an error when malformed or longer than [`MAX_HEAD`].
pub fn parse_head(buf: &[u8]) -> Result<Option<ResponseHead>, String> {
    match ResponseHead::parse(buf) {
        Ok(Some(head)) => Ok(Some(head)),
        Ok(None) if buf.len() > MAX_HEAD => Err("HTTP response head too long".into()),
        Ok(None) => Ok(None),
        Err(e) => Err(format!(
            "bad HTTP response head: {e}: {}",
            String::from_utf8_lossy(&buf[..buf.len().min(200)])
        )),
    }
}

/// How a response body ends.
#[derive(Debug)]
pub enum Framing {
    /// After this many bytes.
    Length(usize),
    /// Chunked transfer coding, decoded by the [`Chunked`] state machine.
    Chunked(Chunked),
    /// When the connection closes.
    UntilClose,
}

impl Framing {
    /// The framing a response head announces.
    pub fn of(head: &ResponseHead) -> Framing {
        let chunked = head
            .tokens("transfer-encoding")
            .iter()
            .any(|t| t.eq_ignore_ascii_case("chunked"));
        if chunked {
            Framing::Chunked(Chunked::default())
        } else if let Some(n) = head.content_length() {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        }
    }
}

/// Where the chunked decoder is.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    #[default]
    Size,
    /// Reading chunk data, this many bytes left.
    Data(u64),
    /// Reading the CRLF after chunk data.
    DataEnd,
    /// After the last (zero) chunk: reading trailer lines until an empty one.
    Trailer,
    /// The body is complete.
    Done,
}

/// An incremental decoder of the chunked transfer coding (RFC 9112,
/// section 7.1).
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
    /// The current size or trailer line (without its LF).
    line: Vec<u8>,
}

impl Chunked {
    /// Decodes as much of `input` as possible, appending the body bytes to
    /// `out`; returns how many input bytes were used (all of them unless the
    /// body ended, see [`Chunked::done`]).
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                ChunkState::Done => break,
                ChunkState::Data(left) => {
                    let take = (input.len() - pos).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[pos..pos + take]);
                    pos += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    let b = input[pos];
                    pos += 1;
                    match b {
                        b'\r' => {}
                        b'\n' => self.state = ChunkState::Size,
                        _ => return Err("chunk data not followed by CRLF".into()),
                    }
                }
                ChunkState::Size | ChunkState::Trailer => {
                    let b = input[pos];
                    pos += 1;
                    if b != b'\n' {
                        if self.line.len() >= MAX_CHUNK_LINE {
                            return Err("chunk-size or trailer line too long".into());
                        }
                        self.line.push(b);
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = if self.state == ChunkState::Trailer {
                        if line.is_empty() {
                            ChunkState::Done
                        } else {
                            ChunkState::Trailer
                        }
                    } else {
                        match chunk_size(line)? {
                            0 => ChunkState::Trailer,
                            n => ChunkState::Data(n),
                        }
                    };
                }
            }
        }
        Ok(pos)
    }

    /// Whether the last chunk and the trailer were read.
    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// The size in a chunk-size line (hex digits, then optional extensions).
fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let digits = line
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    let text = std::str::from_utf8(digits).map_err(|_| "chunk size is not ASCII")?;
    if text.is_empty() || text.len() > 15 {
        return Err(format!("bad chunk size `{text}`"));
    }
    u64::from_str_radix(text, 16).map_err(|_| format!("bad chunk size `{text}`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> (Vec<u8>, usize, bool) {
        let mut chunked = Chunked::default();
        let mut out = Vec::new();
        let mut used = 0;
        for part in input.chunks(piece) {
            used += chunked.decode(part, &mut out).unwrap();
            if chunked.done() {
                break;
            }
        }
        (out, used, chunked.done())
    }

    #[test]
    fn chunked_bodies_decode_however_they_are_split() {
        let input = b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for piece in [1, 2, 3, 7, input.len()] {
            let (out, used, done) = decode_in_pieces(input, piece);
            assert_eq!(out, b"hello 0123456789", "piece {piece}");
            assert!(done);
            if piece == input.len() {
                assert_eq!(&input[used..], b"NEXT");
            }
        }
    }

    #[test]
    fn an_unfinished_stream_is_not_done() {
        let (out, _, done) = decode_in_pieces(b"3\r\nabc\r\n4\r\nde", 2);
        assert_eq!(out, b"abcde");
        assert!(!done);
    }

    #[test]
    fn malformed_chunks_are_errors() {
        for bad in [
            &b"zz\r\n"[..],
            b"\r\n",
            b"3\r\nabcX",
            b"1234567890abcdef0\r\n",
        ] {
            assert!(
                Chunked::default().decode(bad, &mut Vec::new()).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'1'; MAX_CHUNK_LINE + 1];
        assert!(Chunked::default().decode(&long, &mut Vec::new()).is_err());
    }

    #[test]
    fn framing_follows_the_head() {
        let head = |text: &str| ResponseHead::parse(text.as_bytes()).unwrap().unwrap();
        let chunked = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(Framing::of(&chunked), Framing::Chunked(_)));
        let length = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n");
        assert!(matches!(Framing::of(&length), Framing::Length(12)));
        let close = head("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        assert!(matches!(Framing::of(&close), Framing::UntilClose));
    }

    #[test]
    fn requests_and_queries() {
        let target = with_query(
            "/v1/poll",
            &[("sub", "a.*"), ("cursor", "gA"), ("x", "é &")],
        );
        assert_eq!(target, "/v1/poll?sub=a.%2A&cursor=gA&x=%C3%A9%20%26");
        let request = get_request("h:1", &target, "application/json", Some("T"));
        assert_eq!(
            String::from_utf8(request).unwrap(),
            format!(
                "GET {target} HTTP/1.1\r\nHost: h:1\r\nAccept: application/json\r\nAuthorization: Bearer T\r\n\r\n"
            )
        );
        assert!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap().is_none());
        assert!(parse_head(&vec![b'a'; MAX_HEAD + 1]).is_err());
    }
}
