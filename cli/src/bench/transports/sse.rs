//! The SSE subscriber: `GET /v1/sse?sub=TOPIC` on a raw socket, the
//! `text/event-stream` body (chunked or not) parsed into events, and each
//! `message` event's delivery JSON read.
//!
//! [`Parser`] follows the event-stream rules of the HTML standard that the
//! broker's streams use: lines end in LF (a CR before it is dropped), a line
//! starting with `:` is a comment, `field: value` lines accumulate an event
//! (`data` lines joined by LF), and an empty line dispatches it (an event
//! with no data is dropped, like the opening `retry:` block).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::super::raw_client::{ConnectError, connect_tcp};
use super::json::{Delivery, Event};
use super::payload::now_ns;
use super::tally::{RunShared, Tally, report_progress};
use super::{Setup, refused, with_deadline};
use crate::http1::{self as http, Framing};

/// Longest event-stream line (and event) accepted.
const MAX_LINE: usize = 1 << 20;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name (`message` when none was given).
    pub name: String,
    /// The `data:` lines joined by LF.
    pub data: String,
}

/// An incremental `text/event-stream` parser.
#[derive(Debug, Default)]
pub struct Parser {
    /// Body bytes not yet parsed (an incomplete line).
    pending: Vec<u8>,
    name: String,
    data: String,
    has_data: bool,
}

impl Parser {
    /// Buffers the body bytes `input` and appends every event they complete
    /// to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<SseEvent>) -> Result<(), String> {
        let mut pending = std::mem::take(&mut self.pending);
        pending.extend_from_slice(input);
        let mut start = 0;
        while let Some(n) = pending[start..].iter().position(|b| *b == b'\n') {
            let line = &pending[start..start + n];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let line = std::str::from_utf8(line)
                .map_err(|_| "event-stream line is not UTF-8".to_owned())?;
            start += n + 1;
            self.line(line, out);
        }
        pending.drain(..start);
        self.pending = pending;
        if self.pending.len() > MAX_LINE || self.data.len() > MAX_LINE {
            return Err(format!("event-stream line or event over {MAX_LINE} bytes"));
        }
        Ok(())
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let name = std::mem::take(&mut self.name);
            let data = std::mem::take(&mut self.data);
            if std::mem::take(&mut self.has_data) {
                out.push(SseEvent {
                    name: if name.is_empty() {
                        "message".into()
                    } else {
                        name
                    },
                    data,
                });
            }
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => value.clone_into(&mut self.name),
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            // `id` (the cursor) and `retry` matter to a reconnecting client,
            // not to the benchmark; their bytes are counted all the same.
            _ => {}
        }
    }
}

/// An open SSE stream: the socket, its body framing and the parser.
#[derive(Debug)]
pub struct Stream {
    stream: TcpStream,
    framing: Framing,
    /// Bytes read but not yet decoded.
    raw: Vec<u8>,
    /// Decoded body bytes (reused).
    body: Vec<u8>,
    parser: Parser,
    /// Events parsed but not yet handled (those after `subscribed` in the
    /// read that completed the setup).
    events: Vec<SseEvent>,
}

impl Stream {
    /// Decodes what `raw` holds into events.
    fn decode(&mut self, out: &mut Vec<SseEvent>) -> Result<(), String> {
        self.body.clear();
        match &mut self.framing {
            Framing::Chunked(chunked) => {
                let used = chunked.decode(&self.raw, &mut self.body)?;
                self.raw.drain(..used);
            }
            Framing::Length(_) | Framing::UntilClose => self.body.append(&mut self.raw),
        }
        self.parser.feed(&self.body, out)
    }

    /// Whether the body ended (the last chunk of a chunked stream).
    fn ended(&self) -> bool {
        matches!(&self.framing, Framing::Chunked(c) if c.done())
    }
}

/// Opens `GET /v1/sse?sub=TOPIC` and reads until the `subscribed` event.
pub async fn open(setup: &Setup<'_>) -> Result<Stream, ConnectError> {
    with_deadline(setup, async {
        let target = setup.target;
        let addr = target.addr;
        let mut stream = connect_tcp(addr, setup.source).await?;
        let path = http::with_query("/v1/sse", &[("sub", setup.topic)]);
        let request = http::get_request(&target.host, &path, "text/event-stream", setup.token);
        stream
            .write_all(&request)
            .await
            .map_err(|e| ConnectError::Io(addr, e))?;
        let mut raw = Vec::with_capacity(4096);
        let head = loop {
            if let Some(head) = http::parse_head(&raw).map_err(ConnectError::Closed)? {
                break head;
            }
            read_some(&mut stream, &mut raw, addr).await?;
        };
        raw.drain(..head.len());
        if head.status != 200 {
            return Err(refused("SSE", &head, &raw));
        }
        let mut sse = Stream {
            stream,
            framing: Framing::of(&head),
            raw,
            body: Vec::new(),
            parser: Parser::default(),
            events: Vec::new(),
        };
        let mut events = Vec::new();
        loop {
            sse.decode(&mut events).map_err(ConnectError::Closed)?;
            let mut parsed = events.drain(..);
            while let Some(event) = parsed.next() {
                match event.name.as_str() {
                    "subscribed" => {
                        sse.events.extend(parsed);
                        return Ok(sse);
                    }
                    "error" | "close" => {
                        return Err(ConnectError::Subscribe(format!(
                            "SSE {} event: {}",
                            event.name, event.data
                        )));
                    }
                    _ => {}
                }
            }
            read_some(&mut sse.stream, &mut sse.raw, addr).await?;
        }
    })
    .await
}

/// Reads once into `buf`; EOF is an error during setup.
async fn read_some(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    addr: std::net::SocketAddr,
) -> Result<(), ConnectError> {
    buf.reserve(4096);
    match stream.read_buf(buf).await {
        Ok(0) => Err(ConnectError::Closed("EOF during setup".into())),
        Ok(_) => Ok(()),
        Err(e) => Err(ConnectError::Io(addr, e)),
    }
}

/// Receives until the run ends or the stream ends; returns the socket.
pub async fn receive(mut sse: Stream, shared: &RunShared, tally: &mut Tally) -> TcpStream {
    let mut events = std::mem::take(&mut sse.events);
    let mut reported = 0;
    loop {
        let now = now_ns();
        if let Err(e) = sse.decode(&mut events) {
            tally.close(e);
            return sse.stream;
        }
        for event in events.drain(..) {
            match event.name.as_str() {
                "message" => match serde_json::from_str::<Delivery>(&event.data) {
                    Ok(d) => tally.record(d.seq, d.sent_ns(), now),
                    Err(e) => {
                        tally.close(format!("bad delivery JSON: {e}: {}", event.data));
                        return sse.stream;
                    }
                },
                "error" => tally.errors += 1,
                "close" => {
                    let why = serde_json::from_str::<Event>(&event.data)
                        .map_or_else(|_| event.data.clone(), |e| e.describe());
                    tally.close(format!("close {why}"));
                    return sse.stream;
                }
                _ => {}
            }
        }
        report_progress(shared, tally, &mut reported);
        if sse.ended() {
            tally.close("the SSE body ended");
            return sse.stream;
        }
        sse.raw.reserve(64 * 1024);
        tokio::select! {
            biased;
            _ = shared.finish.cancelled() => return sse.stream,
            read = sse.stream.read_buf(&mut sse.raw) => match read {
                Ok(0) => {
                    tally.close("EOF");
                    return sse.stream;
                }
                Ok(_) => {}
                Err(e) => {
                    tally.close(format!("read failed: {e}"));
                    return sse.stream;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut parser = Parser::default();
        let mut out = Vec::new();
        for part in input.chunks(piece) {
            parser.feed(part, &mut out).unwrap();
        }
        out
    }

    const STREAM: &[u8] = b"retry: 1000\n\n\
        event: subscribed\ndata: {\"sub\":\"b.t\"}\n\n\
        : keepalive\n\n\
        id: gYNiLnTCkM8AAAAAAAAAAQE\r\nevent: message\r\ndata: {\"topic\":\"b.t\",\"epoch\":\"1\",\"seq\":1,\"time\":5,\"data\":{\"t\":9,\"p\":\"ab\"}}\r\n\r\n\
        data: first\ndata:second\n\n\
        event: close\ndata: {\"code\":4001,\"reason\":\"slow consumer\"}\n\n";

    #[test]
    fn events_parse_however_the_stream_is_split() {
        for piece in [1, 2, 5, 13, STREAM.len()] {
            let events = parse_in_pieces(STREAM, piece);
            let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(
                names,
                ["subscribed", "message", "message", "close"],
                "piece {piece}"
            );
            let d: Delivery = serde_json::from_str(&events[1].data).unwrap();
            assert_eq!((d.seq, d.sent_ns()), (1, Some(9)));
            assert_eq!(events[2].data, "first\nsecond");
            let close: Event = serde_json::from_str(&events[3].data).unwrap();
            assert_eq!(close.describe(), "4001 slow consumer");
        }
    }

    #[test]
    fn an_unterminated_event_is_not_dispatched() {
        let events = parse_in_pieces(b"event: message\ndata: x\n", 3);
        assert!(events.is_empty());
    }

    #[test]
    fn overlong_lines_and_bad_utf8_are_errors() {
        let mut parser = Parser::default();
        assert!(
            parser
                .feed(&vec![b'a'; MAX_LINE + 1], &mut Vec::new())
                .is_err()
        );
        let mut parser = Parser::default();
        assert!(parser.feed(b"data: \xff\n", &mut Vec::new()).is_err());
    }

    #[test]
    fn a_chunked_event_stream_decodes_into_events() {
        let body = b"event: subscribed\ndata: {}\n\n";
        let mut chunked = format!("{:x}\r\n", 10).into_bytes();
        chunked.extend_from_slice(&body[..10]);
        chunked.extend_from_slice(format!("\r\n{:x}\r\n", body.len() - 10).as_bytes());
        chunked.extend_from_slice(&body[10..]);
        chunked.extend_from_slice(b"\r\n");
        let mut parser = Parser::default();
        let mut decoder = http::Chunked::default();
        let mut decoded = Vec::new();
        let mut events = Vec::new();
        for part in chunked.chunks(4) {
            decoded.clear();
            decoder.decode(part, &mut decoded).unwrap();
            parser.feed(&decoded, &mut events).unwrap();
        }
        assert_eq!(
            events,
            [SseEvent {
                name: "subscribed".into(),
                data: "{}".into()
            }]
        );
    }
}
