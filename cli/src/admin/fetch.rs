//! One `GET` of the server API over plain HTTP/1.1 ([`crate::http1`]), on
//! a fresh connection, within a deadline: the status and the JSON body.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::http1::{self, Framing};

use super::{Exit, Failure};

/// Largest answer body accepted (a history page of 1000 large messages).
const MAX_BODY: usize = 256 << 20;

/// Where the broker's HTTP API is: `host:port` for the connection and the
/// `Host` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `host:port`.
    pub authority: String,
}

impl Origin {
    /// The origin of `url`: `http://HOST[:PORT]` (any path is ignored), or
    /// the `ws://` URL the other commands take (`TICKWIRE_URL`), whose
    /// HTTP API is on the same port. `https://` and `wss://` are refused:
    /// these commands speak plain HTTP only.
    pub fn parse(url: &str) -> Result<Origin, Failure> {
        let usage = |why: &str| Failure::new(Exit::Usage, format!("invalid --url `{url}`: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| usage("write http://HOST:PORT"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => {}
            "https" | "wss" => {
                return Err(usage(
                    "these commands speak plain HTTP only; use http:// (for example through a local port of the broker)",
                ));
            }
            _ => return Err(usage("write http://HOST:PORT")),
        }
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() || host.contains('@') {
            return Err(usage("no host, or credentials in the URL (use --token)"));
        }
        let has_port = match host.rsplit_once(':') {
            Some((_, port)) => !port.contains(']'),
            None => false,
        };
        let authority = if has_port {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        Ok(Origin { authority })
    }
}

/// `GET target` (path and query) with `token` as bearer; the status and
/// the body as JSON. Not JSON, a connection failure (exit 3) or the
/// `timeout` (exit 4) are failures.
pub async fn get_json(
    origin: &Origin,
    target: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(u16, Value), Failure> {
    let exchange = async {
        let mut stream = TcpStream::connect(&origin.authority).await.map_err(|e| {
            Failure::new(
                Exit::Connect,
                format!("cannot connect to {}: {e}", origin.authority),
            )
        })?;
        let request = http1::get_request(&origin.authority, target, "application/json", token);
        let lost = |e: String| Failure::new(Exit::Failed, format!("{}: {e}", origin.authority));
        stream
            .write_all(&request)
            .await
            .map_err(|e| lost(format!("write failed: {e}")))?;
        let (status, body) = read_response(&mut stream).await.map_err(lost)?;
        let json = serde_json::from_slice(&body).map_err(|e| {
            lost(format!(
                "answer {status} is not JSON ({e}): {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            ))
        })?;
        Ok((status, json))
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| {
        Failure::new(
            Exit::Timeout,
            format!(
                "{} did not answer within {} (--timeout)",
                origin.authority,
                humantime::format_duration(timeout)
            ),
        )
    })?
}

/// Reads one response: its status and its whole body.
async fn read_response(stream: &mut TcpStream) -> Result<(u16, Vec<u8>), String> {
    let mut raw = Vec::new();
    let head = loop {
        if let Some(head) = http1::parse_head(&raw)? {
            break head;
        }
        read_more(stream, &mut raw).await?;
    };
    raw.drain(..head.len());
    let body = match Framing::of(&head) {
        Framing::Length(n) if n > MAX_BODY => return Err(format!("answer of {n} bytes")),
        Framing::Length(n) => {
            while raw.len() < n {
                read_more(stream, &mut raw).await?;
            }
            raw.truncate(n);
            raw
        }
        Framing::Chunked(mut chunked) => {
            let mut body = Vec::new();
            loop {
                let used = chunked.decode(&raw, &mut body)?;
                raw.drain(..used);
                if chunked.done() {
                    break body;
                }
                if body.len() > MAX_BODY {
                    return Err(format!("answer over {MAX_BODY} bytes"));
                }
                read_more(stream, &mut raw).await?;
            }
        }
        Framing::UntilClose => {
            while read_more(stream, &mut raw).await.is_ok() {
                if raw.len() > MAX_BODY {
                    return Err(format!("answer over {MAX_BODY} bytes"));
                }
            }
            raw
        }
    };
    Ok((head.status, body))
}

async fn read_more(stream: &mut TcpStream, raw: &mut Vec<u8>) -> Result<(), String> {
    raw.reserve(16 * 1024);
    match stream.read_buf(raw).await {
        Ok(0) => Err("the broker closed the connection before answering".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_origin() {
        let origin = |url: &str| Origin::parse(url).map(|o| o.authority);
        assert_eq!(origin("http://127.0.0.1:8080").unwrap(), "127.0.0.1:8080");
        assert_eq!(origin("ws://127.0.0.1:9/ws").unwrap(), "127.0.0.1:9");
        assert_eq!(origin("http://broker/x").unwrap(), "broker:80");
        assert_eq!(origin("http://[::1]:7").unwrap(), "[::1]:7");
        assert_eq!(origin("http://[::1]").unwrap(), "[::1]:80");
        for bad in [
            "https://a:1",
            "wss://a",
            "ftp://a",
            "a:1",
            "http://",
            "http://u@a:1",
        ] {
            assert_eq!(Origin::parse(bad).unwrap_err().exit, Exit::Usage, "{bad}");
        }
    }
}
