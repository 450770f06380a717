//! The HTTP/1.1 upgrade to a tickwire WebSocket connection (RFC 6455
//! section 4): the I/O around `tickwire_protocol::handshake`, which builds
//! the request and checks the response head. Here: writing, reading until
//! the head is complete (at most 16 KiB), reading the body of a refusal, and
//! mapping to the public [`HandshakeError`].
//!
//! Subprotocol rule: the client offers `tickwire.v1`. A response that echoes
//! it is accepted; a response naming any other subprotocol (or several) is
//! rejected ([`HandshakeError::Subprotocol`]); a response without the header
//! is accepted for compatibility with proxies that drop it, as in section
//! 16.1 of docs/protocol.md (the tickwire broker itself always echoes the
//! offer, and refuses unknown subprotocols with `400`).

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use tickwire_protocol::SUBPROTOCOL;
use tickwire_protocol::handshake::{self as wire, ResponseHead, SubprotocolRule, UpgradeRequest};

use crate::error::HandshakeError;
use crate::url::BrokerUrl;

/// Largest response head (status line and headers) accepted.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
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

/// The SDK's public error for a response the protocol crate rejected.
fn public_error(e: wire::HandshakeError) -> HandshakeError {
    match e {
        wire::HandshakeError::Malformed(reason) => HandshakeError::MalformedResponse(reason),
        wire::HandshakeError::Status { status, reason } => HandshakeError::Status {
            status,
            reason,
            body: String::new(),
        },
        wire::HandshakeError::NotUpgrade(what) => HandshakeError::NotUpgrade(what.to_owned()),
        wire::HandshakeError::AcceptMismatch { expected, got } => {
            HandshakeError::AcceptMismatch { expected, got }
        }
        wire::HandshakeError::Subprotocol { got } => HandshakeError::Subprotocol {
            offered: SUBPROTOCOL.to_owned(),
            got,
        },
        wire::HandshakeError::MissingSubprotocol => HandshakeError::Subprotocol {
            offered: SUBPROTOCOL.to_owned(),
            got: String::new(),
        },
        wire::HandshakeError::UnexpectedExtensions(list) => {
            HandshakeError::UnexpectedExtensions(list)
        }
    }
}

/// The upgrade request: the WebSocket headers, the SDK's `User-Agent` and,
/// with a token, `Authorization: Bearer`.
pub(crate) fn build_request(url: &BrokerUrl, token: Option<&str>) -> UpgradeRequest {
    let request = UpgradeRequest::new(&url.host_header(), &url.resource).header(
        "User-Agent",
        concat!("tickwire-client-rust/", env!("CARGO_PKG_VERSION")),
    );
    match token {
        Some(token) => request.header("Authorization", &format!("Bearer {token}")),
        None => request,
    }
}

/// Parses a response head from `buf`; `Ok(None)` means more bytes are
/// needed, and a head larger than [`MAX_RESPONSE_HEAD`] is an error.
fn parse_head(buf: &[u8]) -> Result<Option<ResponseHead>, HandshakeError> {
    match ResponseHead::parse(buf).map_err(public_error)? {
        Some(head) => Ok(Some(head)),
        None if buf.len() > MAX_RESPONSE_HEAD => Err(HandshakeError::MalformedResponse(format!(
            "response head is larger than {MAX_RESPONSE_HEAD} bytes"
        ))),
        None => Ok(None),
    }
}

/// Reads the body of a non-101 response, best effort and bounded, and turns
/// it into the error.
async fn rejection<S: AsyncRead + Unpin>(
    stream: &mut S,
    head: &ResponseHead,
    mut body: BytesMut,
) -> HandshakeError {
    let content_length = head.content_length();
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

/// Performs the upgrade on `stream`, offering permessage-deflate if
/// `compression`. On success returns the bytes already read past the
/// response head (the start of the WebSocket stream) and, if the broker
/// accepted permessage-deflate, whether it resets its context per message.
pub(crate) async fn handshake<S>(
    stream: &mut S,
    url: &BrokerUrl,
    token: Option<&str>,
    compression: bool,
) -> Result<(BytesMut, Option<bool>), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = build_request(url, token).offer_deflate(compression);
    let written = async {
        stream.write_all(&request.to_bytes()).await?;
        stream.flush().await
    }
    .await;
    // Read the response even if writing failed: a broker at its connection
    // limit answers 503 and closes without reading the request.
    let mut buf = BytesMut::with_capacity(1024);
    let head = loop {
        if let Some(head) = parse_head(&buf)? {
            break head;
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
    let rest = buf.split_off(head.len());
    if head.status != 101 {
        return Err(rejection(stream, &head, rest).await.into());
    }
    written?;
    let inflate = if compression {
        head.verify_deflate(request.key(), SubprotocolRule::AllowMissing)
    } else {
        head.verify(request.key(), SubprotocolRule::AllowMissing)
            .map(|()| None)
    }
    .map_err(public_error)?;
    if head.tokens("sec-websocket-protocol").is_empty() {
        tracing::debug!("broker did not echo a subprotocol; assuming {SUBPROTOCOL}");
    }
    Ok((rest, inflate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_has_required_headers() {
        let url = BrokerUrl::parse("ws://[::1]:8080").unwrap();
        let request = build_request(&url, Some("tok"));
        let req = String::from_utf8(request.to_bytes()).unwrap();
        assert!(req.starts_with("GET /ws HTTP/1.1\r\nHost: [::1]:8080\r\n"));
        for line in [
            "Upgrade: websocket\r\n".to_owned(),
            "Connection: Upgrade\r\n".to_owned(),
            format!("Sec-WebSocket-Key: {}\r\n", request.key()),
            "Sec-WebSocket-Version: 13\r\n".to_owned(),
            "Sec-WebSocket-Protocol: tickwire.v1\r\n".to_owned(),
            "User-Agent: tickwire-client-rust/".to_owned(),
            "Authorization: Bearer tok\r\n".to_owned(),
        ] {
            assert!(req.contains(&line), "missing {line:?}");
        }
        assert!(req.ends_with("\r\n\r\n"));
        let req = String::from_utf8(build_request(&url, None).to_bytes()).unwrap();
        assert!(!req.contains("Authorization"));
    }

    #[test]
    fn protocol_errors_map_to_the_public_type() {
        assert!(matches!(
            public_error(wire::HandshakeError::MissingSubprotocol),
            HandshakeError::Subprotocol { offered, got } if offered == SUBPROTOCOL && got.is_empty()
        ));
        assert!(matches!(
            public_error(wire::HandshakeError::NotUpgrade("x")),
            HandshakeError::NotUpgrade(w) if w == "x"
        ));
    }

    #[test]
    fn partial_malformed_and_oversized_heads() {
        assert!(parse_head(b"HTTP/1.1 101 Swi").unwrap().is_none());
        assert!(matches!(
            parse_head(b"garbage\r\n\r\n"),
            Err(HandshakeError::MalformedResponse(_))
        ));
        let huge = format!("HTTP/1.1 101 OK\r\nX: {}", "a".repeat(MAX_RESPONSE_HEAD));
        assert!(parse_head(huge.as_bytes()).is_err());
    }
}
