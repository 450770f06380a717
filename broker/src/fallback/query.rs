//! The query string of `GET /v1/sse` and `GET /v1/poll`: parsed and
//! checked before anything is subscribed, so a bad request gets a 400 that
//! names the offending parameter.

use std::borrow::Cow;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use tickwire_protocol::message::{JoinLeave, Position};
use tickwire_protocol::topic::Pattern;

use super::cursor;
use super::render::PayloadMode;
use crate::presence::identity::parse_client_id;

/// Which endpoint a query is for: `timeout` and `session` belong to the
/// poll only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /v1/sse`.
    Sse,
    /// `GET /v1/poll`.
    Poll,
}

/// Default of `timeout=` on the poll.
pub const DEFAULT_POLL_TIMEOUT: Duration = Duration::from_secs(25);

/// Largest `timeout=` on the poll, in seconds.
pub const MAX_POLL_TIMEOUT_SECS: u64 = 60;

/// A poll session id: 128 bits, 32 hex digits on the wire.
pub type SessionId = u128;

/// A checked query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The `sub` patterns, in request order, each once.
    pub subs: Vec<Pattern>,
    /// `last`.
    pub last: bool,
    /// `max_rate`.
    pub max_rate: Option<u32>,
    /// `payload`.
    pub payload: PayloadMode,
    /// `cursor`, decoded; `None` without one.
    pub cursor: Option<Vec<(String, Position)>>,
    /// `token`, as given.
    pub token: Option<String>,
    /// `timeout` (poll).
    pub timeout: Duration,
    /// `session` (poll).
    pub session: Option<SessionId>,
    /// `client`: the client id of the session's presence entries; `None`:
    /// a random one.
    pub client: Option<std::sync::Arc<str>>,
    /// `join_leave` (`true`/`clients`, `users`, `false`): presence events
    /// on every `sub`.
    pub join_leave: Option<JoinLeave>,
}

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryError {
    /// A parameter is unknown, repeated or has a bad value (400
    /// `invalid_option`); the text names it.
    Option(String),
    /// A `sub` is not a valid pattern (400 `invalid_pattern`).
    Pattern(String),
}

/// Percent-decodes one `application/x-www-form-urlencoded` component (`+`
/// is a space).
fn form_decode(s: &str) -> Result<Cow<'_, str>, QueryError> {
    let spaced = if s.contains('+') {
        Cow::Owned(s.replace('+', " "))
    } else {
        Cow::Borrowed(s)
    };
    let decoded = percent_decode_str(&spaced)
        .decode_utf8()
        .map_err(|_| QueryError::Option(format!("query component {s:?} is not UTF-8")))?;
    Ok(Cow::Owned(decoded.into_owned()))
}

/// Reads the query string of `endpoint`; `max_subscriptions` bounds the
/// number of `sub`s.
pub fn parse(
    query: Option<&str>,
    endpoint: Endpoint,
    max_subscriptions: usize,
) -> Result<Query, QueryError> {
    let mut q = Query {
        subs: Vec::new(),
        last: false,
        max_rate: None,
        payload: PayloadMode::Auto,
        cursor: None,
        token: None,
        timeout: DEFAULT_POLL_TIMEOUT,
        session: None,
        client: None,
        join_leave: None,
    };
    let mut seen: Vec<String> = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = form_decode(key)?;
        let value = form_decode(value)?;
        let bad = |what: &str| QueryError::Option(format!("query parameter {key}: {what}"));
        if key == "sub" {
            let pattern = Pattern::new(value.as_ref())
                .map_err(|e| QueryError::Pattern(format!("sub={value}: {e}")))?;
            if q.subs.contains(&pattern) {
                return Err(bad("the same pattern given twice"));
            }
            q.subs.push(pattern);
            continue;
        }
        if seen.iter().any(|k| *k == key) {
            return Err(bad("given more than once"));
        }
        seen.push(key.clone().into_owned());
        match (&*key, endpoint) {
            ("last", _) => {
                q.last = match &*value {
                    "1" | "true" => true,
                    "0" | "false" => false,
                    _ => return Err(bad("expected 1, true, 0 or false")),
                }
            }
            ("max_rate", _) => {
                q.max_rate = Some(
                    value
                        .parse::<u32>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| bad("expected an integer from 1 to 4294967295"))?,
                )
            }
            ("payload", _) => {
                q.payload = match &*value {
                    "auto" => PayloadMode::Auto,
                    "base64" => PayloadMode::Base64,
                    _ => return Err(bad("expected auto or base64")),
                }
            }
            ("cursor", _) => q.cursor = Some(cursor::decode(&value).map_err(|e| bad(&e))?),
            ("token", _) if value.is_empty() => return Err(bad("empty")),
            ("token", _) => q.token = Some(value.into_owned()),
            ("client", _) => {
                q.client = Some(parse_client_id(&value).map_err(|e| bad(&e.to_string()))?)
            }
            ("join_leave", _) => {
                q.join_leave = match &*value {
                    "1" | "true" | "clients" => Some(JoinLeave::Clients),
                    "users" => Some(JoinLeave::Users),
                    "0" | "false" => None,
                    _ => return Err(bad("expected true, clients, users or false")),
                }
            }
            ("timeout", Endpoint::Poll) => {
                let secs = value
                    .parse::<u64>()
                    .ok()
                    .filter(|s| *s <= MAX_POLL_TIMEOUT_SECS)
                    .ok_or_else(|| bad("expected whole seconds from 0 to 60"))?;
                q.timeout = Duration::from_secs(secs);
            }
            ("session", Endpoint::Poll) => {
                q.session =
                    Some(parse_session_id(&value).ok_or_else(|| bad("expected 32 hex digits"))?)
            }
            _ => return Err(bad("not supported by this endpoint")),
        }
    }
    if q.subs.is_empty() {
        return Err(QueryError::Option(
            "query parameter sub: at least one is required".to_owned(),
        ));
    }
    if q.subs.len() > max_subscriptions {
        return Err(QueryError::Option(format!(
            "query parameter sub: at most {max_subscriptions} (max_subscriptions)"
        )));
    }
    Ok(q)
}

/// A session id from its 32 hex digits.
pub fn parse_session_id(text: &str) -> Option<SessionId> {
    (text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u128::from_str_radix(text, 16).ok())
        .flatten()
}

/// The 32 lowercase hex digits of a session id.
pub fn session_id_text(id: SessionId) -> String {
    format!("{id:032x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(query: &str, endpoint: Endpoint) -> Query {
        parse(Some(query), endpoint, 4).unwrap()
    }

    fn option_error(query: &str, endpoint: Endpoint) -> String {
        match parse(Some(query), endpoint, 4) {
            Err(QueryError::Option(message)) => message,
            other => panic!("{query}: {other:?}"),
        }
    }

    #[test]
    fn every_parameter_is_read_and_decoded() {
        let q = ok(
            "sub=stocks.%2A&sub=news.%3E&last=true&max_rate=5&payload=base64&cursor=gA&token=a.b.c&timeout=0&session=0000000000000000000000000000002a",
            Endpoint::Poll,
        );
        let subs: Vec<&str> = q.subs.iter().map(Pattern::as_str).collect();
        assert_eq!(subs, ["stocks.*", "news.>"]);
        assert!(q.last);
        assert_eq!(q.max_rate, Some(5));
        assert_eq!(q.payload, PayloadMode::Base64);
        assert_eq!(q.cursor, Some(vec![]));
        assert_eq!(q.token.as_deref(), Some("a.b.c"));
        assert_eq!(q.timeout, Duration::ZERO);
        assert_eq!(q.session, Some(42));
        let p = ok("sub=a&client=tab-1_x&join_leave=users", Endpoint::Sse);
        assert_eq!(p.client.as_deref(), Some("tab-1_x"));
        assert_eq!(p.join_leave, Some(JoinLeave::Users));
        assert_eq!(
            ok("sub=a&join_leave=true", Endpoint::Poll).join_leave,
            Some(JoinLeave::Clients)
        );
        assert_eq!(
            ok("sub=a&join_leave=false", Endpoint::Poll).join_leave,
            None
        );
        let d = ok("sub=a", Endpoint::Sse);
        assert_eq!(
            (d.last, d.payload, d.timeout),
            (false, PayloadMode::Auto, DEFAULT_POLL_TIMEOUT)
        );
    }

    #[test]
    fn bad_queries_name_the_parameter() {
        assert!(option_error("", Endpoint::Sse).contains("sub"));
        assert!(option_error("sub=a&sub=b&sub=c&sub=d&sub=e", Endpoint::Sse).contains("at most 4"));
        assert!(option_error("sub=a&sub=a", Endpoint::Sse).contains("twice"));
        assert!(option_error("sub=a&last=yes", Endpoint::Sse).contains("last"));
        assert!(option_error("sub=a&last=1&last=1", Endpoint::Sse).contains("more than once"));
        assert!(option_error("sub=a&max_rate=0", Endpoint::Sse).contains("max_rate"));
        assert!(option_error("sub=a&payload=json", Endpoint::Sse).contains("payload"));
        assert!(option_error("sub=a&client=a.b", Endpoint::Sse).contains("client"));
        assert!(option_error("sub=a&client=", Endpoint::Poll).contains("client"));
        assert!(option_error("sub=a&join_leave=all", Endpoint::Sse).contains("join_leave"));
        assert!(option_error("sub=a&cursor=%21", Endpoint::Sse).contains("cursor"));
        assert!(option_error("sub=a&timeout=1", Endpoint::Sse).contains("timeout"));
        assert!(option_error("sub=a&session=00", Endpoint::Sse).contains("session"));
        assert!(option_error("sub=a&timeout=61", Endpoint::Poll).contains("timeout"));
        assert!(option_error("sub=a&session=xyz", Endpoint::Poll).contains("session"));
        assert!(option_error("sub=a&foo=1", Endpoint::Poll).contains("foo"));
        assert!(option_error("sub=a&token=", Endpoint::Poll).contains("token"));
        assert!(option_error("sub=%FF", Endpoint::Poll).contains("UTF-8"));
        assert!(matches!(
            parse(Some("sub=a..b"), Endpoint::Sse, 4),
            Err(QueryError::Pattern(_))
        ));
    }

    #[test]
    fn session_ids_are_32_hex_digits() {
        let id = 0x9f2c_0000_0000_0000_0000_0000_0000_0001u128;
        assert_eq!(parse_session_id(&session_id_text(id)), Some(id));
        assert_eq!(parse_session_id("+f2c0000000000000000000000000001"), None);
    }
}
