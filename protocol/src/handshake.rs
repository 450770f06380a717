//! The client side of the WebSocket opening handshake (RFC 6455 section 4)
//! as tickwire uses it (docs/protocol.md, section 2), with no I/O: building
//! the upgrade request, parsing the response head and checking that it
//! answers this request with `tickwire.v1`.
//!
//! A caller writes [`UpgradeRequest::to_bytes`], reads until
//! [`ResponseHead::parse`] returns a head, keeps the bytes after
//! [`ResponseHead::len`] (the start of the WebSocket stream), and calls
//! [`ResponseHead::verify`] (or [`ResponseHead::verify_deflate`] when the
//! request offered permessage-deflate, [`UpgradeRequest::offer_deflate`]). Limits on the head's size and on time are the
//! caller's. [`accept_key`] is also what a (fake) server answers.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha1::{Digest, Sha1};

use crate::deflate;
use crate::{SUBPROTOCOL, WEBSOCKET_PATH};

/// The GUID RFC 6455 appends to the key before hashing.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Most response headers parsed.
const MAX_HEADERS: usize = 64;

/// Why a response head does not complete the handshake.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The bytes are not an HTTP/1.1 response head.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
    /// The status is not `101 Switching Protocols`.
    #[error("HTTP {status} {reason} instead of 101 Switching Protocols")]
    Status {
        /// The HTTP status code.
        status: u16,
        /// The reason phrase.
        reason: String,
    },
    /// A `101` without `Upgrade: websocket` or `Connection: upgrade`.
    #[error("response is not a WebSocket upgrade: {0}")]
    NotUpgrade(&'static str),
    /// `Sec-WebSocket-Accept` is missing or does not answer the key sent.
    #[error("Sec-WebSocket-Accept mismatch: expected {expected:?}, got {got:?}")]
    AcceptMismatch {
        /// The value [`accept_key`] computes for the key.
        expected: String,
        /// The value received, if any.
        got: Option<String>,
    },
    /// The server selected something other than `tickwire.v1` (or several).
    #[error("server selected subprotocol {got:?}, not {SUBPROTOCOL:?}")]
    Subprotocol {
        /// The `Sec-WebSocket-Protocol` value(s) received.
        got: String,
    },
    /// The server did not echo `tickwire.v1` and the rule required it.
    #[error("server did not select subprotocol {SUBPROTOCOL:?}")]
    MissingSubprotocol,
    /// The server enabled extensions that were not offered (anything but
    /// the permessage-deflate that was, with valid parameters).
    #[error("server enabled WebSocket extensions that were not offered: {0}")]
    UnexpectedExtensions(String),
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
pub fn generate_key() -> String {
    BASE64.encode(rand::random::<[u8; 16]>())
}

/// Whether `key` is a valid `Sec-WebSocket-Key`: the base64 encoding of
/// exactly 16 bytes (RFC 6455 section 4.1), so 24 characters. Surrounding
/// whitespace is not part of a header value and is ignored.
pub fn is_valid_key(key: &[u8]) -> bool {
    let key = key.trim_ascii();
    let mut decoded = [0u8; 18];
    key.len() == 24 && BASE64.decode_slice(key, &mut decoded) == Ok(16)
}

/// The `Sec-WebSocket-Accept` value that answers `key`: base64 of the SHA-1
/// of the key followed by the RFC 6455 GUID.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(WEBSOCKET_GUID.as_bytes());
    BASE64.encode(sha.finalize())
}

/// A client's upgrade request: `GET` with the WebSocket headers, offering
/// `tickwire.v1` unless told not to, plus any extra headers.
#[derive(Debug, Clone)]
pub struct UpgradeRequest {
    host: String,
    path: String,
    key: String,
    offer_subprotocol: bool,
    offer_deflate: bool,
    headers: Vec<(String, String)>,
}

impl UpgradeRequest {
    /// A request for `path` (the request target, e.g. `/ws?x=1`) on `host`
    /// (the `Host` header value), with a random key.
    pub fn new(host: &str, path: &str) -> UpgradeRequest {
        UpgradeRequest {
            host: host.to_owned(),
            path: if path.is_empty() {
                WEBSOCKET_PATH.to_owned()
            } else {
                path.to_owned()
            },
            key: generate_key(),
            offer_subprotocol: true,
            offer_deflate: false,
            headers: Vec::new(),
        }
    }

    /// Uses `key` as `Sec-WebSocket-Key` instead of a random one.
    pub fn with_key(mut self, key: &str) -> UpgradeRequest {
        self.key = key.to_owned();
        self
    }

    /// Whether to offer `Sec-WebSocket-Protocol: tickwire.v1` (the default).
    pub fn offer_subprotocol(mut self, offer: bool) -> UpgradeRequest {
        self.offer_subprotocol = offer;
        self
    }

    /// Whether to offer permessage-deflate ([`deflate::CLIENT_OFFER`]; off
    /// by default).
    pub fn offer_deflate(mut self, offer: bool) -> UpgradeRequest {
        self.offer_deflate = offer;
        self
    }

    /// Adds a header line `name: value` after the WebSocket headers.
    pub fn header(mut self, name: &str, value: &str) -> UpgradeRequest {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The `Sec-WebSocket-Key` sent, to verify the response with.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The request head, ending with the empty line.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut req = format!(
            "GET {path} HTTP/1.1\r\n\
             Host: {host}\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\n\
             Sec-WebSocket-Version: 13\r\n",
            path = self.path,
            host = self.host,
            key = self.key,
        );
        if self.offer_subprotocol {
            req.push_str("Sec-WebSocket-Protocol: ");
            req.push_str(SUBPROTOCOL);
            req.push_str("\r\n");
        }
        if self.offer_deflate {
            req.push_str("Sec-WebSocket-Extensions: ");
            req.push_str(deflate::CLIENT_OFFER);
            req.push_str("\r\n");
        }
        for (name, value) in &self.headers {
            req.push_str(name);
            req.push_str(": ");
            req.push_str(value);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        req.into_bytes()
    }
}

/// What [`ResponseHead::verify`] does when the `101` names no subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubprotocolRule {
    /// A missing `Sec-WebSocket-Protocol` is an error
    /// ([`HandshakeError::MissingSubprotocol`]).
    Required,
    /// A missing header means v1 (for proxies that drop it); a different
    /// subprotocol is still an error.
    AllowMissing,
}

/// A parsed HTTP response head, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// The reason phrase.
    pub reason: String,
    /// The headers in order, names as received.
    pub headers: Vec<(String, Vec<u8>)>,
    len: usize,
}

impl ResponseHead {
    /// Parses the response head at the start of `buf`. `Ok(None)` means the
    /// head is not complete yet: read more and parse again.
    pub fn parse(buf: &[u8]) -> Result<Option<ResponseHead>, HandshakeError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => Ok(Some(ResponseHead {
                status: resp.code.unwrap_or(0),
                reason: resp.reason.unwrap_or("").to_owned(),
                headers: resp
                    .headers
                    .iter()
                    .map(|h| (h.name.to_owned(), h.value.to_vec()))
                    .collect(),
                len,
            })),
            Ok(httparse::Status::Partial) => Ok(None),
            Err(e) => Err(HandshakeError::Malformed(e.to_string())),
        }
    }

    /// How many bytes of the parsed buffer the head used; the bytes after it
    /// belong to the body or, after a `101`, to the WebSocket stream.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the head used no bytes (never true for a parsed head).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first value of header `name` (case-insensitive), trimmed, as
    /// lossy UTF-8.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).trim().to_owned())
    }

    /// The comma-separated tokens of every `name` header, trimmed.
    pub fn tokens(&self, name: &str) -> Vec<String> {
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

    /// The `Content-Length`, if present and a number.
    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length")?.parse().ok()
    }

    /// Checks that this head completes the handshake for `key`: status
    /// `101`, `Upgrade: websocket`, `Connection: upgrade`, the matching
    /// `Sec-WebSocket-Accept`, `tickwire.v1` as the subprotocol (see
    /// `rule` for a missing one) and no extensions.
    pub fn verify(&self, key: &str, rule: SubprotocolRule) -> Result<(), HandshakeError> {
        self.verify_head(key, rule)?;
        let extensions = self.tokens("sec-websocket-extensions");
        if !extensions.is_empty() {
            return Err(HandshakeError::UnexpectedExtensions(extensions.join(", ")));
        }
        Ok(())
    }

    /// [`ResponseHead::verify`] for a request that offered permessage-deflate:
    /// the server may accept it. `Ok(None)`: no extension; `Ok(Some(reset))`:
    /// permessage-deflate, `reset` telling whether the server compresses
    /// each message on its own (`server_no_context_takeover`, always so
    /// from a tickwire broker).
    pub fn verify_deflate(
        &self,
        key: &str,
        rule: SubprotocolRule,
    ) -> Result<Option<bool>, HandshakeError> {
        self.verify_head(key, rule)?;
        let values: Vec<String> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-extensions"))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect();
        deflate::client_accepts(values.iter().map(String::as_str))
            .map_err(HandshakeError::UnexpectedExtensions)
    }

    /// Everything [`ResponseHead::verify`] checks but the extensions.
    fn verify_head(&self, key: &str, rule: SubprotocolRule) -> Result<(), HandshakeError> {
        if self.status != 101 {
            return Err(HandshakeError::Status {
                status: self.status,
                reason: self.reason.clone(),
            });
        }
        let has = |name: &str, token: &str| {
            self.tokens(name)
                .iter()
                .any(|t| t.eq_ignore_ascii_case(token))
        };
        if !has("upgrade", "websocket") {
            return Err(HandshakeError::NotUpgrade(
                "missing `Upgrade: websocket` header",
            ));
        }
        if !has("connection", "upgrade") {
            return Err(HandshakeError::NotUpgrade(
                "missing `Connection: upgrade` header",
            ));
        }
        let expected = accept_key(key);
        let got = self.header("sec-websocket-accept");
        if got.as_deref() != Some(expected.as_str()) {
            return Err(HandshakeError::AcceptMismatch { expected, got });
        }
        let protocols = self.tokens("sec-websocket-protocol");
        match protocols.as_slice() {
            [] if rule == SubprotocolRule::AllowMissing => {}
            [] => return Err(HandshakeError::MissingSubprotocol),
            [p] if p == SUBPROTOCOL => {}
            _ => {
                return Err(HandshakeError::Subprotocol {
                    got: protocols.join(", "),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn keys_must_be_sixteen_bytes_of_base64() {
        assert!(is_valid_key(KEY.as_bytes()));
        assert!(is_valid_key(generate_key().as_bytes()));
        for bad in [
            "",
            "abc",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25jZQ==AA",
            "dGhlIHNhbXBsZSBub25jZ!==",
            "dGhlIHNhbXBsZSBub25jZXg=",
        ] {
            assert!(!is_valid_key(bad.as_bytes()), "{bad}");
        }
    }

    fn response(accept: &str, extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{extra}\r\n"
        )
    }

    fn verify(raw: &str, rule: SubprotocolRule) -> Result<(), HandshakeError> {
        ResponseHead::parse(raw.as_bytes())
            .unwrap()
            .unwrap()
            .verify(KEY, rule)
    }

    const PROTO: &str = "Sec-WebSocket-Protocol: tickwire.v1\r\n";

    #[test]
    fn rfc6455_sample_accept_key() {
        assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn keys_are_random_16_bytes() {
        let a = generate_key();
        assert_ne!(a, generate_key());
        assert_eq!(BASE64.decode(&a).unwrap().len(), 16);
        assert_ne!(UpgradeRequest::new("h", "/ws").key(), a);
    }

    #[test]
    fn request_has_the_websocket_headers() {
        let req = UpgradeRequest::new("[::1]:8080", "/ws?a=1")
            .with_key(KEY)
            .header("Authorization", "Bearer tok");
        assert_eq!(req.key(), KEY);
        let text = String::from_utf8(req.to_bytes()).unwrap();
        assert_eq!(
            text,
            "GET /ws?a=1 HTTP/1.1\r\nHost: [::1]:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: tickwire.v1\r\nAuthorization: Bearer tok\r\n\r\n"
        );
        let bare = UpgradeRequest::new("h", "").offer_subprotocol(false);
        let text = String::from_utf8(bare.to_bytes()).unwrap();
        assert!(text.starts_with("GET /ws HTTP/1.1\r\n"));
        assert!(!text.contains("Sec-WebSocket-Protocol"));
    }

    #[test]
    fn accepts_a_correct_upgrade() {
        let good = response(&accept_key(KEY), PROTO);
        assert_eq!(verify(&good, SubprotocolRule::Required), Ok(()));
        assert_eq!(verify(&good, SubprotocolRule::AllowMissing), Ok(()));
    }

    #[test]
    fn rejects_a_status_other_than_101() {
        let raw = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nfull";
        let head = ResponseHead::parse(raw.as_bytes()).unwrap().unwrap();
        assert_eq!(head.content_length(), Some(4));
        assert_eq!(&raw.as_bytes()[head.len()..], b"full");
        assert_eq!(
            head.verify(KEY, SubprotocolRule::AllowMissing),
            Err(HandshakeError::Status {
                status: 503,
                reason: "Service Unavailable".into()
            })
        );
    }

    #[test]
    fn rejects_a_missing_or_incorrect_accept() {
        let missing = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Protocol: tickwire.v1\r\n\r\n";
        assert_eq!(
            verify(missing, SubprotocolRule::Required),
            Err(HandshakeError::AcceptMismatch {
                expected: accept_key(KEY),
                got: None
            })
        );
        assert!(matches!(
            verify(&response("bm9wZQ==", PROTO), SubprotocolRule::Required),
            Err(HandshakeError::AcceptMismatch { got: Some(g), .. }) if g == "bm9wZQ=="
        ));
    }

    #[test]
    fn rejects_a_wrong_or_missing_subprotocol() {
        let accept = accept_key(KEY);
        for other in ["tickwire.v2", "tickwire.v1, tickwire.v2"] {
            let raw = response(&accept, &format!("Sec-WebSocket-Protocol: {other}\r\n"));
            for rule in [SubprotocolRule::Required, SubprotocolRule::AllowMissing] {
                assert_eq!(
                    verify(&raw, rule),
                    Err(HandshakeError::Subprotocol { got: other.into() })
                );
            }
        }
        let none = response(&accept, "");
        assert_eq!(
            verify(&none, SubprotocolRule::Required),
            Err(HandshakeError::MissingSubprotocol)
        );
        assert_eq!(verify(&none, SubprotocolRule::AllowMissing), Ok(()));
    }

    #[test]
    fn rejects_missing_upgrade_headers_and_extensions() {
        let accept = accept_key(KEY);
        let no_upgrade = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{PROTO}\r\n"
        );
        assert!(matches!(
            verify(&no_upgrade, SubprotocolRule::Required),
            Err(HandshakeError::NotUpgrade(_))
        ));
        let no_connection = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: {accept}\r\n{PROTO}\r\n"
        );
        assert!(matches!(
            verify(&no_connection, SubprotocolRule::Required),
            Err(HandshakeError::NotUpgrade(_))
        ));
        let deflate = response(
            &accept,
            "Sec-WebSocket-Protocol: tickwire.v1\r\nSec-WebSocket-Extensions: permessage-deflate\r\n",
        );
        assert_eq!(
            verify(&deflate, SubprotocolRule::Required),
            Err(HandshakeError::UnexpectedExtensions(
                "permessage-deflate".into()
            ))
        );
    }

    #[test]
    fn an_offered_deflate_may_be_accepted() {
        let req = UpgradeRequest::new("h", "/ws").offer_deflate(true);
        let text = String::from_utf8(req.to_bytes()).unwrap();
        assert!(text.contains(
            "\r\nSec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover\r\n"
        ));
        let accept = accept_key(KEY);
        let head = |extra: &str| {
            ResponseHead::parse(response(&accept, &format!("{PROTO}{extra}")).as_bytes())
                .unwrap()
                .unwrap()
        };
        let rule = SubprotocolRule::Required;
        assert_eq!(head("").verify_deflate(KEY, rule), Ok(None));
        assert_eq!(
            head("Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n")
                .verify_deflate(KEY, rule),
            Ok(Some(true))
        );
        assert_eq!(
            head("Sec-WebSocket-Extensions: permessage-deflate\r\n").verify_deflate(KEY, rule),
            Ok(Some(false))
        );
        assert!(matches!(
            head("Sec-WebSocket-Extensions: permessage-deflate; nope\r\n")
                .verify_deflate(KEY, rule),
            Err(HandshakeError::UnexpectedExtensions(_))
        ));
        // The other checks still apply.
        assert!(matches!(
            ResponseHead::parse(response("bm9wZQ==", PROTO).as_bytes())
                .unwrap()
                .unwrap()
                .verify_deflate(KEY, rule),
            Err(HandshakeError::AcceptMismatch { .. })
        ));
    }

    #[test]
    fn a_partial_head_needs_more_bytes() {
        let full = response(&accept_key(KEY), PROTO);
        for cut in [0, 1, 16, full.len() - 1] {
            assert_eq!(ResponseHead::parse(&full.as_bytes()[..cut]), Ok(None));
        }
        assert!(ResponseHead::parse(full.as_bytes()).unwrap().is_some());
    }

    #[test]
    fn leftover_bytes_after_the_head_are_not_consumed() {
        let mut buf = response(&accept_key(KEY), PROTO).into_bytes();
        let head_len = buf.len();
        buf.extend_from_slice(&[0x82, 0x01, 0x90]);
        let head = ResponseHead::parse(&buf).unwrap().unwrap();
        assert_eq!(head.len(), head_len);
        assert!(!head.is_empty());
        assert_eq!(&buf[head.len()..], &[0x82, 0x01, 0x90]);
        assert_eq!(head.verify(KEY, SubprotocolRule::Required), Ok(()));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            ResponseHead::parse(b"garbage\r\n\r\n"),
            Err(HandshakeError::Malformed(_))
        ));
    }
}
