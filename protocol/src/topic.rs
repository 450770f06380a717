//! Topic names and subscription patterns.
//!
//! A **topic** is a dot-separated list of tokens, such as `stocks.AAPL` or
//! `sensors.eu-west.t-1042`. A **pattern** is a topic in which whole tokens
//! may be wildcards, as in NATS:
//!
//! * `*` matches exactly one token: `stocks.*` matches `stocks.AAPL` but not
//!   `stocks` or `stocks.AAPL.bid`.
//! * `>` matches one or more trailing tokens and may only be the last token:
//!   `stocks.>` matches `stocks.AAPL` and `stocks.AAPL.bid` but not `stocks`.
//!
//! The rules, which docs/protocol.md repeats word for word:
//!
//! * at most [`MAX_TOPIC_LEN`] bytes and [`MAX_TOKENS`] tokens;
//! * tokens are non-empty; a topic neither starts nor ends with `.`;
//! * token characters are ASCII letters, digits and `_ - : @ ~` (see
//!   [`is_token_byte`]); `*` and `>` are allowed only as a whole token of a
//!   pattern.

use std::fmt;

use thiserror::Error;

/// Longest topic or pattern, in bytes.
pub const MAX_TOPIC_LEN: usize = 255;

/// Most tokens a topic or pattern may have.
pub const MAX_TOKENS: usize = 16;

/// Why a string is not a valid topic or pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TopicError {
    /// The string is empty.
    #[error("topic is empty")]
    Empty,
    /// The string is longer than [`MAX_TOPIC_LEN`] bytes.
    #[error("topic is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    /// The string has more than [`MAX_TOKENS`] tokens.
    #[error("topic has more than {MAX_TOKENS} tokens")]
    TooManyTokens,
    /// Two dots in a row, or a leading or trailing dot.
    #[error("topic has an empty token (leading, trailing or double '.')")]
    EmptyToken,
    /// A byte outside the allowed token alphabet.
    #[error("topic contains {0:?}; allowed are ASCII letters, digits and _ - : @ ~")]
    InvalidCharacter(char),
    /// A wildcard (`*` or `>`) in a topic that is published to.
    #[error("wildcards '*' and '>' are only allowed in subscription patterns")]
    WildcardInTopic,
    /// A wildcard that is not a whole token, or `>` that is not the last token.
    #[error("'*' must be a whole token and '>' must be the whole last token")]
    MisplacedWildcard,
}

/// Whether `b` may appear in a topic token.
pub const fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'@' | b'~')
}

/// Checks length, token count and emptiness, and hands each token to `token`.
fn validate_tokens(
    s: &str,
    mut token: impl FnMut(&str, bool) -> Result<(), TopicError>,
) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    let count = s.split('.').count();
    if count > MAX_TOKENS {
        return Err(TopicError::TooManyTokens);
    }
    for (i, t) in s.split('.').enumerate() {
        if t.is_empty() {
            return Err(TopicError::EmptyToken);
        }
        token(t, i + 1 == count)?;
    }
    Ok(())
}

fn check_plain_token(t: &str) -> Result<(), TopicError> {
    match t.bytes().find(|b| !is_token_byte(*b)) {
        None => Ok(()),
        Some(b'*' | b'>') => Err(TopicError::MisplacedWildcard),
        Some(b) => Err(TopicError::InvalidCharacter(char::from(b))),
    }
}

/// Validates a topic that messages are published to (no wildcards).
pub fn validate_topic(s: &str) -> Result<(), TopicError> {
    validate_tokens(s, |t, _| match t {
        "*" | ">" => Err(TopicError::WildcardInTopic),
        _ => check_plain_token(t).map_err(|e| match e {
            TopicError::MisplacedWildcard => TopicError::WildcardInTopic,
            other => other,
        }),
    })
}

/// Validates a subscription pattern (a topic that may contain wildcards).
pub fn validate_pattern(s: &str) -> Result<(), TopicError> {
    validate_tokens(s, |t, last| match t {
        "*" => Ok(()),
        ">" if last => Ok(()),
        ">" => Err(TopicError::MisplacedWildcard),
        _ => check_plain_token(t),
    })
}

/// One token of a parsed [`Pattern`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PatternToken<'a> {
    /// A literal token that must match exactly.
    Literal(&'a str),
    /// `*`: any one token.
    AnyOne,
    /// `>`: one or more trailing tokens.
    Rest,
}

impl<'a> PatternToken<'a> {
    /// Classifies one token of an already validated pattern.
    pub fn parse(token: &'a str) -> Self {
        match token {
            "*" => PatternToken::AnyOne,
            ">" => PatternToken::Rest,
            literal => PatternToken::Literal(literal),
        }
    }
}

/// A validated subscription pattern.
///
/// ```
/// use tickwire_protocol::topic::Pattern;
/// let p = Pattern::new("stocks.*.bid").unwrap();
/// assert!(p.matches("stocks.AAPL.bid"));
/// assert!(!p.matches("stocks.AAPL.ask"));
/// assert!(Pattern::new("stocks.>").unwrap().matches("stocks.AAPL.bid"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pattern(String);

impl Pattern {
    /// Validates `s` and wraps it.
    pub fn new(s: impl Into<String>) -> Result<Self, TopicError> {
        let s = s.into();
        validate_pattern(&s)?;
        Ok(Pattern(s))
    }

    /// `>`: the pattern every topic matches.
    pub fn everything() -> Self {
        Pattern(">".to_owned())
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the pattern contains `*` or `>`.
    pub fn is_wildcard(&self) -> bool {
        is_wildcard(&self.0)
    }

    /// The pattern's tokens, in order.
    pub fn tokens(&self) -> impl Iterator<Item = PatternToken<'_>> {
        self.0.split('.').map(PatternToken::parse)
    }

    /// Whether `topic` (assumed valid) matches this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        pattern_matches(&self.0, topic)
    }

    /// The pattern as a topic when it has no wildcard (an exact
    /// subscription); `None` for a wildcard pattern.
    pub fn as_topic(&self) -> Option<Topic<'_>> {
        // A valid pattern without wildcards passes the topic rules.
        (!self.is_wildcard()).then_some(Topic(&self.0))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated topic name (no wildcards), borrowed from the text it was
/// read from.
///
/// The constructor validates once; code that takes a `Topic` can rely on it
/// and never validates again. It is a `&str` underneath, so passing one
/// around costs nothing and allocates nothing.
///
/// ```
/// use tickwire_protocol::topic::Topic;
/// let t = Topic::new("stocks.AAPL").unwrap();
/// assert_eq!(t.as_str(), "stocks.AAPL");
/// assert!(Topic::new("stocks.*").is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic<'a>(&'a str);

impl<'a> Topic<'a> {
    /// Validates `s` as a topic and wraps it.
    pub fn new(s: &'a str) -> Result<Self, TopicError> {
        validate_topic(s)?;
        Ok(Topic(s))
    }

    /// The topic name.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

impl<'a> TryFrom<&'a str> for Topic<'a> {
    type Error = TopicError;

    fn try_from(s: &'a str) -> Result<Self, TopicError> {
        Topic::new(s)
    }
}

impl fmt::Display for Topic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Whether `pattern` (assumed valid) has a `*` or `>` token, so it can match
/// more than one topic.
pub fn is_wildcard(pattern: &str) -> bool {
    pattern
        .split('.')
        .any(|t| !matches!(PatternToken::parse(t), PatternToken::Literal(_)))
}

/// Whether `topic` matches `pattern`; both are assumed valid.
pub fn pattern_matches(pattern: &str, topic: &str) -> bool {
    let mut topic_tokens = topic.split('.');
    for p in pattern.split('.') {
        match (PatternToken::parse(p), topic_tokens.next()) {
            (PatternToken::Rest, Some(_)) => return true,
            (PatternToken::AnyOne, Some(_)) => {}
            (PatternToken::Literal(l), Some(t)) if l == t => {}
            _ => return false,
        }
    }
    topic_tokens.next().is_none()
}

/// Whether every topic `requested` can match is also matched by `granted`:
/// the test a subscription must pass against a grant. Both are assumed to be
/// valid patterns.
///
/// Token by token: `>` in `granted` covers whatever non-empty rest
/// `requested` has; `*` in `granted` covers a literal or `*` but not `>`
/// (which may stand for several tokens); a literal covers only the same
/// literal. Without a `>`, both must have the same number of tokens.
///
/// ```
/// use tickwire_protocol::topic::pattern_covers;
/// assert!(pattern_covers("stocks.>", "stocks.*"));
/// assert!(pattern_covers("stocks.*", "stocks.AAPL"));
/// assert!(!pattern_covers("stocks.*", "stocks.>"));
/// assert!(!pattern_covers("stocks.AAPL", "stocks.*"));
/// ```
pub fn pattern_covers(granted: &str, requested: &str) -> bool {
    let mut requested_tokens = requested.split('.').map(PatternToken::parse);
    for g in granted.split('.').map(PatternToken::parse) {
        match (g, requested_tokens.next()) {
            (PatternToken::Rest, Some(_)) => return true,
            (PatternToken::AnyOne, Some(PatternToken::Literal(_) | PatternToken::AnyOne)) => {}
            (PatternToken::Literal(g), Some(PatternToken::Literal(r))) if g == r => {}
            _ => return false,
        }
    }
    requested_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_type_validates_once_and_patterns_convert() {
        assert_eq!(Topic::new("a.b").map(|t| t.as_str()), Ok("a.b"));
        assert_eq!(Topic::try_from("a.*"), Err(TopicError::WildcardInTopic));
        assert_eq!(Topic::new("a..b"), Err(TopicError::EmptyToken));
        assert_eq!(
            Topic::new("x.y").map(|t| t.to_string()),
            Ok("x.y".to_owned())
        );
        let exact = Pattern::new("a.b").unwrap();
        assert_eq!(exact.as_topic(), Topic::new("a.b").ok());
        assert_eq!(Pattern::new("a.>").unwrap().as_topic(), None);
    }

    #[test]
    fn valid_topics() {
        for t in ["a", "stocks.AAPL", "sensors.eu-west.t_1042", "a:b@c~d"] {
            assert_eq!(validate_topic(t), Ok(()), "{t}");
        }
    }

    #[test]
    fn invalid_topics() {
        assert_eq!(validate_topic(""), Err(TopicError::Empty));
        assert_eq!(validate_topic("a..b"), Err(TopicError::EmptyToken));
        assert_eq!(validate_topic(".a"), Err(TopicError::EmptyToken));
        assert_eq!(validate_topic("a."), Err(TopicError::EmptyToken));
        assert_eq!(
            validate_topic("a b"),
            Err(TopicError::InvalidCharacter(' '))
        );
        assert_eq!(validate_topic("a.*"), Err(TopicError::WildcardInTopic));
        assert_eq!(validate_topic("a.>"), Err(TopicError::WildcardInTopic));
        assert_eq!(validate_topic("a.b*"), Err(TopicError::WildcardInTopic));
        assert_eq!(validate_topic("é"), Err(TopicError::InvalidCharacter('Ã')));
        let long = "a".repeat(MAX_TOPIC_LEN + 1);
        assert_eq!(validate_topic(&long), Err(TopicError::TooLong));
        let deep = vec!["a"; MAX_TOKENS + 1].join(".");
        assert_eq!(validate_topic(&deep), Err(TopicError::TooManyTokens));
        let deepest = vec!["a"; MAX_TOKENS].join(".");
        assert_eq!(validate_topic(&deepest), Ok(()));
    }

    #[test]
    fn patterns() {
        assert_eq!(validate_pattern("a.*.c"), Ok(()));
        assert_eq!(validate_pattern(">"), Ok(()));
        assert_eq!(validate_pattern("a.>"), Ok(()));
        assert_eq!(
            validate_pattern("a.>.c"),
            Err(TopicError::MisplacedWildcard)
        );
        assert_eq!(validate_pattern("a.b*"), Err(TopicError::MisplacedWildcard));
        assert_eq!(validate_pattern("a.>x"), Err(TopicError::MisplacedWildcard));
    }

    #[test]
    fn matching() {
        let cases = [
            ("stocks.*", "stocks.AAPL", true),
            ("stocks.*", "stocks", false),
            ("stocks.*", "stocks.AAPL.bid", false),
            ("stocks.>", "stocks.AAPL", true),
            ("stocks.>", "stocks.AAPL.bid", true),
            ("stocks.>", "stocks", false),
            (">", "a", true),
            ("*.b", "a.b", true),
            ("*.b", "a.c", false),
            ("a.b", "a.b", true),
            ("a.b", "a.b.c", false),
            ("a.b.c", "a.b", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(pattern_matches(p, t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn covering() {
        let cases = [
            ("stocks.>", "stocks.*", true),
            ("stocks.>", "stocks.AAPL", true),
            ("stocks.>", "stocks.>", true),
            ("stocks.>", "stocks.AAPL.bid", true),
            ("stocks.>", "stocks.*.bid", true),
            ("stocks.>", "stocks", false),
            ("stocks.>", ">", false),
            ("stocks.>", "*.AAPL", false),
            ("stocks.*", "stocks.AAPL", true),
            ("stocks.*", "stocks.*", true),
            ("stocks.*", "stocks.>", false),
            ("stocks.*", "stocks.AAPL.bid", false),
            ("stocks.*", "stocks", false),
            ("stocks.AAPL", "stocks.AAPL", true),
            ("stocks.AAPL", "stocks.*", false),
            ("stocks.AAPL", "stocks.>", false),
            ("stocks.AAPL", "stocks.AAPL.bid", false),
            ("stocks.AAPL", "stocks.MSFT", false),
            (">", ">", true),
            (">", "*", true),
            (">", "a", true),
            (">", "a.b.c", true),
            (">", "*.>", true),
            ("*", ">", false),
            ("*", "a", true),
            ("*", "a.b", false),
            ("*.x", "a.x", true),
            ("*.x", "*.x", true),
            ("*.x", "a.*", false),
            ("a.*", "*.x", false),
            ("a.*", "a.x", true),
            ("*.*", "a.*", true),
            ("*.*", "*.>", false),
            ("*.>", "a.b.>", true),
            ("*.>", ">", false),
            ("a.*.c", "a.b.c", true),
            ("a.*.c", "a.*.c", true),
            ("a.*.c", "a.*.*", false),
            ("a.*.>", "a.b.c", true),
            ("a.*.>", "a.b", false),
            ("a.b.c", "a.b", false),
        ];
        for (granted, requested, want) in cases {
            assert_eq!(
                pattern_covers(granted, requested),
                want,
                "{granted} covers {requested}"
            );
        }
    }

    #[test]
    fn covering_agrees_with_matching() {
        // If `granted` covers `requested`, every topic `requested` matches
        // is matched by `granted`; checked over a small universe of topics.
        let patterns = [
            ">", "*", "a", "a.*", "a.>", "*.b", "a.b", "*.*", "a.*.c", "*.>", "a.b.>",
        ];
        let topics = [
            "a", "b", "a.b", "a.c", "b.b", "a.b.c", "a.x.c", "a.b.d", "x.y.z.w",
        ];
        for g in patterns {
            for r in patterns {
                if pattern_covers(g, r) {
                    for t in topics {
                        assert!(
                            !pattern_matches(r, t) || pattern_matches(g, t),
                            "{g} covers {r} but not {t}"
                        );
                    }
                }
            }
        }
    }
}
