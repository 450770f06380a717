//! The HTTP/1.1 upgrade to a tickwire WebSocket connection (RFC 6455
//! section 4), written and verified by hand.
//!
//! Subprotocol rule: the client offers `tickwire.v1`. A response that echoes
//! it is accepted; a response naming any other subprotocol (or several) is
//! rejected ([`HandshakeError::Subprotocol`]); a response without the header
//! is accepted for compatibility with proxies that drop it, as in section
//! 16.1 of docs/protocol.md (the tickwire broker itself always echoes the
//! offer, and refuses unknown subprotocols with `400`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::BytesMut;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use tickwire_protocol::SUBPROTOCOL;

use crate::error::HandshakeError;
use crate::url::BrokerUrl;

/// The GUID RFC 6455 appends to the key before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest response head (status line and headers) accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// Most response headers parsed.
const MAX_HEADERS: usize = 64;
/// Most bytes of an error response body kept for the error message.
const MAX_ERROR_BODY: usize = 4096;

/// Why the handshake failed: I/O or the response.
#[derive(Debug)]
pub(crate) enum Failure {
    Io(std::io::Error),
    Handshake(HandshakeError),
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Io(e)
    }
}

impl From<HandshakeError> for Failure {
    fn from(e: HandshakeError) -> Self {
        Failure::Handshake(e)
    }
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
pub(crate) fn generate_key() -> String {
    BASE64.encode(rand::random::<[u8; 16]>())
}

/// The `Sec-WebSocket-Accept` value a server must answer for `key`.
pub(crate) fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// The upgrade request bytes.
pub(crate) fn build_request(url: &BrokerUrl, key: &str, token: Option<&str>) -> Vec<u8> {
    let mut req = format!(
        "GET {resource} HTTP/1.1\r\n\
         Host: {host}\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\
         User-Agent: tickwire-client-rust/{version}\r\n",
        resource = url.resource,
        host = url.host_header(),
        version = env!("CARGO_PKG_VERSION"),
    );
    if let Some(token) = token {
        req.push_str("Authorization: Bearer ");
        req.push_str(token);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// A parsed response head, owned.
#[derive(Debug)]
struct ResponseHead {
    status: u16,
    reason: String,
    headers: Vec<(String, Vec<u8>)>,
}

impl ResponseHead {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn header_str(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).trim().to_owned())
    }

    /// All values of a (possibly repeated) comma-separated header, trimmed.
    fn tokens(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| {
                String::from_utf8_lossy(v)
                    .split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Parses a response head from `buf`; `Ok(None)` means more bytes are needed.
/// On success returns the head and its length in bytes.
fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HandshakeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            let head = ResponseHead {
                status: resp.code.unwrap_or(0),
                reason: resp.reason.unwrap_or("").to_owned(),
                headers: resp
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), h.value.to_vec()))
                    .collect(),
            };
            Ok(Some((head, len)))
        }
        Ok(httparse::Status::Partial) => {
            if buf.len() > MAX_RESPONSE_HEAD {
                Err(HandshakeError::MalformedResponse(format!(
                    "response head is larger than {MAX_RESPONSE_HEAD} bytes"
                )))
            } else {
                Ok(None)
            }
        }
        Err(e) => Err(HandshakeError::MalformedResponse(e.to_string())),
    }
}

/// Checks a `101` response against the request's key.
fn verify_upgrade(head: &ResponseHead, key: &str) -> Result<(), HandshakeError> {
    let upgrade = head.tokens("upgrade");
    if !upgrade.iter().any(|t| t.eq_ignore_ascii_case("websocket")) {
        return Err(HandshakeError::NotUpgrade(
            "missing `Upgrade: websocket` header".into(),
        ));
    }
    let connection = head.tokens("connection");
    if !connection.iter().any(|t| t.eq_ignore_ascii_case("upgrade")) {
        return Err(HandshakeError::NotUpgrade(
            "missing `Connection: upgrade` header".into(),
        ));
    }
    let expected = accept_key(key);
    let got = head.header_str("sec-websocket-accept");
    if got.as_deref() != Some(expected.as_str()) {
        return Err(HandshakeError::AcceptMismatch { expected, got });
    }
    let protocols = head.tokens("sec-websocket-protocol");
    match protocols.as_slice() {
        [] => {
            tracing::debug!("broker did not echo a subprotocol; assuming {SUBPROTOCOL}");
        }
        [p] if p == SUBPROTOCOL => {}
        _ => {
            return Err(HandshakeError::Subprotocol {
                offered: SUBPROTOCOL.to_owned(),
                got: protocols.join(", "),
            });
        }
    }
    let extensions = head.tokens("sec-websocket-extensions");
    if !extensions.is_empty() {
        return Err(HandshakeError::UnexpectedExtensions(extensions.join(", ")));
    }
    Ok(())
}

/// Reads the body of a non-101 response, best effort and bounded, and turns
/// it into the error.
async fn rejection<S: AsyncRead + Unpin>(
    stream: &mut S,
    head: &ResponseHead,
    mut body: BytesMut,
) -> HandshakeError {
    let content_length = head
        .header_str("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    let want = content_length.unwrap_or(MAX_ERROR_BODY).min(MAX_ERROR_BODY);
    // A body without a length ends at EOF; don't wait long for it.
    let read_more = async {
        while body.len() < want {
            body.reserve(want - body.len());
            match stream.read_buf(&mut body).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let limit = if content_length.is_some() {
        std::time::Duration::from_secs(2)
    } else {
        std::time::Duration::from_millis(500)
    };
    let _ = tokio::time::timeout(limit, read_more).await;
    body.truncate(want);
    let text = String::from_utf8_lossy(&body).trim().to_owned();
    HandshakeError::Status {
        status: head.status,
        reason: head.reason.clone(),
        body: text,
    }
}

/// Performs the upgrade on `stream`. On success returns the bytes already
/// read past the response head: the start of the WebSocket stream.
pub(crate) async fn handshake<S>(
    stream: &mut S,
    url: &BrokerUrl,
    token: Option<&str>,
) -> Result<BytesMut, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let key = generate_key();
    let request = build_request(url, &key, token);
    let written = async {
        stream.write_all(&request).await?;
        stream.flush().await
    }
    .await;
    // Read the response even if writing failed: a broker at its connection
    // limit answers 503 and closes without reading the request.
    let mut buf = BytesMut::with_capacity(1024);
    let (head, head_len) = loop {
        if let Some(parsed) = parse_head(&buf)? {
            break parsed;
        }
        buf.reserve(1024);
        match stream.read_buf(&mut buf).await {
            Ok(0) => {
                written?;
                return Err(HandshakeError::UnexpectedEof.into());
            }
            Ok(_) => {}
            Err(e) => {
                written?;
                return Err(e.into());
            }
        }
    };
    let rest = buf.split_off(head_len);
    if head.status != 101 {
        return Err(rejection(stream, &head, rest).await.into());
    }
    written?;
    verify_upgrade(&head, &key)?;
    Ok(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_example_accept_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn keys_are_random_16_bytes() {
        let a = generate_key();
        let b = generate_key();
        assert_ne!(a, b);
        assert_eq!(BASE64.decode(&a).unwrap().len(), 16);
    }

    #[test]
    fn request_has_required_headers() {
        let url = BrokerUrl::parse("ws://[::1]:8080").unwrap();
        let req = String::from_utf8(build_request(&url, "KEY", Some("tok"))).unwrap();
        assert!(req.starts_with("GET /ws HTTP/1.1\r\nHost: [::1]:8080\r\n"));
        for line in [
            "Upgrade: websocket\r\n",
            "Connection: Upgrade\r\n",
            "Sec-WebSocket-Key: KEY\r\n",
            "Sec-WebSocket-Version: 13\r\n",
            "Sec-WebSocket-Protocol: tickwire.v1\r\n",
            "Authorization: Bearer tok\r\n",
        ] {
            assert!(req.contains(line), "missing {line:?}");
        }
        assert!(req.ends_with("\r\n\r\n"));
        let req = String::from_utf8(build_request(&url, "KEY", None)).unwrap();
        assert!(!req.contains("Authorization"));
    }

    fn head(raw: &str) -> ResponseHead {
        parse_head(raw.as_bytes()).unwrap().unwrap().0
    }

    fn upgrade_response(accept: &str, extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
        )
    }

    #[test]
    fn verifies_upgrade_responses() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = accept_key(key);
        let proto = "Sec-WebSocket-Protocol: tickwire.v1\r\n";
        assert_eq!(
            verify_upgrade(&head(&upgrade_response(&good, proto)), key),
            Ok(())
        );
        // No subprotocol header: accepted for compatibility.
        assert_eq!(
            verify_upgrade(&head(&upgrade_response(&good, "")), key),
            Ok(())
        );
        assert!(matches!(
            verify_upgrade(&head(&upgrade_response("bm9wZQ==", proto)), key),
            Err(HandshakeError::AcceptMismatch { .. })
        ));
        assert!(matches!(
            verify_upgrade(
                &head(&upgrade_response(
                    &good,
                    "Sec-WebSocket-Protocol: tickwire.v2\r\n"
                )),
                key
            ),
            Err(HandshakeError::Subprotocol { .. })
        ));
        assert!(matches!(
            verify_upgrade(
                &head(&upgrade_response(
                    &good,
                    "Sec-WebSocket-Protocol: tickwire.v1, tickwire.v2\r\n"
                )),
                key
            ),
            Err(HandshakeError::Subprotocol { .. })
        ));
        assert!(matches!(
            verify_upgrade(
                &head(&upgrade_response(
                    &good,
                    "Sec-WebSocket-Extensions: permessage-deflate\r\n"
                )),
                key
            ),
            Err(HandshakeError::UnexpectedExtensions(_))
        ));
        let no_upgrade = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {good}\r\n\r\n"
        );
        assert!(matches!(
            verify_upgrade(&head(&no_upgrade), key),
            Err(HandshakeError::NotUpgrade(_))
        ));
    }

    #[test]
    fn partial_and_malformed_heads() {
        assert!(parse_head(b"HTTP/1.1 101 Swi").unwrap().is_none());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
        let huge = format!("HTTP/1.1 101 OK\r\nX: {}", "a".repeat(MAX_RESPONSE_HEAD));
        assert!(parse_head(huge.as_bytes()).is_err());
    }
}
