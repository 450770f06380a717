//! Fuzz target `topic_pattern`: topic and pattern validation and matching
//! (`tickwire_protocol::topic`) and the broker's wildcard index
//! (`tickwire_broker::pattern_trie::PatternTrie`), against slow reference
//! implementations written here from the rules in docs/protocol.md,
//! section 9.
//!
//! The input is text; each line is a candidate topic and pattern. Checked:
//!
//! * `validate_topic`, `validate_pattern`, `Topic::new` and `Pattern::new`
//!   accept exactly what the reference rules accept;
//! * for every valid pattern and every topic (the valid lines, plus topics
//!   made from each pattern by filling in its wildcards), `Pattern::matches`
//!   agrees with the reference matcher, and a `PatternTrie` holding all the
//!   patterns returns exactly the matching ones, also after removing half
//!   of them;
//! * `pattern_covers(granted, requested)` is true exactly when every topic
//!   that `requested` matches is matched by `granted`, checked over every
//!   topic of a small universe that represents all topics (the patterns'
//!   literals plus one fresh token, up to one token longer than the longer
//!   pattern).
#![no_main]

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tickwire_broker::metrics::Metrics;
use tickwire_broker::outbound::OutboundQueue;
use tickwire_broker::pattern_trie::{PatternTrie, Subscriber};
use tickwire_protocol::topic::{
    MAX_TOKENS, MAX_TOPIC_LEN, Pattern, Topic, pattern_covers, validate_pattern, validate_topic,
};

/// Most lines of one input that are looked at.
const MAX_LINES: usize = 24;
/// Most pattern pairs whose coverage is checked per input.
const MAX_COVER_PATTERNS: usize = 6;
/// Largest topic universe enumerated for one coverage check.
const MAX_UNIVERSE: usize = 512;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let lines: Vec<&str> = text.split('\n').take(MAX_LINES).collect();
    let mut patterns = Vec::new();
    let mut topics = BTreeSet::new();
    for line in &lines {
        check_validation(line);
        if let Ok(p) = Pattern::new(*line) {
            topics.extend(instances(&p));
            patterns.push(p);
        }
        if Topic::new(line).is_ok() {
            topics.insert((*line).to_owned());
        }
    }
    for p in &patterns {
        check_pattern(p, &topics);
    }
    check_trie(&patterns, &topics);
    for granted in patterns.iter().take(MAX_COVER_PATTERNS) {
        for requested in patterns.iter().take(MAX_COVER_PATTERNS) {
            check_covers(granted.as_str(), requested.as_str());
        }
    }
});

/// The token alphabet of docs/protocol.md, section 9.
fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_-:@~".contains(c)
}

/// The reference rules: 1 to 255 bytes, 1 to 16 non-empty tokens of the
/// alphabet; in a pattern a token may also be `*`, and the last one `>`.
fn reference_valid(s: &str, pattern: bool) -> bool {
    let tokens: Vec<&str> = s.split('.').collect();
    let token_ok = |i: usize, t: &str| match t {
        "*" => pattern,
        ">" => pattern && i + 1 == tokens.len(),
        _ => !t.is_empty() && t.chars().all(token_char),
    };
    !s.is_empty()
        && s.len() <= 255
        && tokens.len() <= 16
        && tokens.iter().enumerate().all(|(i, t)| token_ok(i, t))
}

fn check_validation(s: &str) {
    let topic = reference_valid(s, false);
    let pattern = reference_valid(s, true);
    assert_eq!(validate_topic(s).is_ok(), topic, "validate_topic({s:?})");
    assert_eq!(Topic::new(s).is_ok(), topic, "Topic::new({s:?})");
    assert_eq!(
        validate_pattern(s).is_ok(),
        pattern,
        "validate_pattern({s:?})"
    );
    assert_eq!(Pattern::new(s).is_ok(), pattern, "Pattern::new({s:?})");
}

/// The reference matcher: without `>`, the same number of tokens and each
/// pattern token `*` or equal; with a final `>`, more topic tokens than the
/// pattern has before it, and those match the same way.
fn reference_matches(pattern: &str, topic: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let t: Vec<&str> = topic.split('.').collect();
    reference_matches_tokens(&p, &t)
}

fn reference_matches_tokens(p: &[&str], t: &[&str]) -> bool {
    let (fixed, rest) = match p.split_last() {
        Some((&">", fixed)) => (fixed, true),
        _ => (p, false),
    };
    let lengths_fit = if rest {
        t.len() > fixed.len()
    } else {
        t.len() == fixed.len()
    };
    lengths_fit && fixed.iter().zip(t).all(|(p, t)| *p == "*" || p == t)
}

/// Topics the pattern matches: each `*` and a `>` filled with one token,
/// and `>` also with two.
fn instances(p: &Pattern) -> Vec<String> {
    let one = p.as_str().split('.').map(|t| match t {
        "*" | ">" => "w",
        t => t,
    });
    let one: Vec<&str> = one.collect();
    let mut out = vec![one.join(".")];
    if p.as_str() == ">" || p.as_str().ends_with(".>") {
        out.push(format!("{}.w2", one.join(".")));
    }
    out.retain(|t| validate_topic(t).is_ok());
    out
}

fn check_pattern(p: &Pattern, topics: &BTreeSet<String>) {
    let wildcard = p.as_str().split('.').any(|t| t == "*" || t == ">");
    assert_eq!(p.is_wildcard(), wildcard);
    match p.as_topic() {
        Some(t) => {
            assert!(!wildcard);
            assert_eq!(t.as_str(), p.as_str());
        }
        None => assert!(wildcard),
    }
    for t in topics {
        assert_eq!(
            p.matches(t),
            reference_matches(p.as_str(), t),
            "pattern {p} on topic {t}"
        );
    }
}

/// One outbound queue per pattern slot: the trie stores subscribers, and a
/// subscriber is a connection's queue.
fn queues() -> &'static [Arc<OutboundQueue>] {
    static QUEUES: OnceLock<Vec<Arc<OutboundQueue>>> = OnceLock::new();
    QUEUES.get_or_init(|| {
        let metrics = Metrics::new();
        (0..MAX_LINES as u64)
            .map(|id| OutboundQueue::new(id, 1 << 20, metrics.clone()).0)
            .collect()
    })
}

fn check_trie(patterns: &[Pattern], topics: &BTreeSet<String>) {
    let mut trie = PatternTrie::default();
    for (p, queue) in patterns.iter().zip(queues()) {
        trie.insert(p, Subscriber::unlimited(queue.clone()));
    }
    assert_eq!(trie.len(), patterns.len());
    let mut live: Vec<bool> = vec![true; patterns.len()];
    check_trie_matches(&trie, patterns, &live, topics);
    for (i, p) in patterns.iter().enumerate().step_by(2) {
        assert!(trie.remove(p, i as u64), "remove {p}");
        assert!(!trie.remove(p, i as u64), "removed {p} twice");
        live[i] = false;
    }
    assert_eq!(trie.len(), live.iter().filter(|l| **l).count());
    check_trie_matches(&trie, patterns, &live, topics);
}

fn check_trie_matches(
    trie: &PatternTrie,
    patterns: &[Pattern],
    live: &[bool],
    topics: &BTreeSet<String>,
) {
    for t in topics {
        let mut found = Vec::new();
        trie.collect(t, &mut found);
        let mut found: Vec<u64> = found.iter().map(Subscriber::id).collect();
        found.sort_unstable();
        let expected: Vec<u64> = (0..patterns.len())
            .filter(|i| live[*i] && reference_matches(patterns[*i].as_str(), t))
            .map(|i| i as u64)
            .collect();
        assert_eq!(found, expected, "trie on topic {t}");
    }
}

/// Compares `pattern_covers` with its meaning over a universe of topics
/// that stands for all of them: since matching only compares tokens for
/// equality, every token outside both patterns behaves like one fresh
/// token, and every length beyond the longer pattern like one more token.
/// Skipped when that universe is too large, or when it would need more
/// than `MAX_TOKENS` tokens (at that limit `pattern_covers` is knowingly
/// conservative: `*` never covers `>`).
fn check_covers(granted: &str, requested: &str) {
    let mut alphabet: BTreeSet<&str> = granted
        .split('.')
        .chain(requested.split('.'))
        .filter(|t| !matches!(*t, "*" | ">"))
        .collect();
    let fresh = (0..)
        .map(|n| format!("f{n}"))
        .find(|f| !alphabet.contains(f.as_str()))
        .unwrap_or_default();
    alphabet.insert(&fresh);
    let longest = granted.split('.').count().max(requested.split('.').count()) + 1;
    if longest > MAX_TOKENS {
        return;
    }
    let universe: usize = (1..=longest)
        .map(|len| alphabet.len().saturating_pow(len as u32))
        .fold(0, usize::saturating_add);
    if universe > MAX_UNIVERSE {
        return;
    }
    let alphabet: Vec<&str> = alphabet.into_iter().collect();
    let longest_token = alphabet.iter().map(|t| t.len()).max().unwrap_or(0);
    if longest * (longest_token + 1) > MAX_TOPIC_LEN + 1 {
        // Some topics of the universe would break the length rule, so it
        // would not stand for valid topics only: no verdict.
        return;
    }
    let granted_tokens: Vec<&str> = granted.split('.').collect();
    let requested_tokens: Vec<&str> = requested.split('.').collect();
    let mut covered = true;
    for len in 1..=longest {
        let mut digits = vec![0usize; len];
        let mut topic = vec![""; len];
        loop {
            for (token, d) in topic.iter_mut().zip(&digits) {
                *token = alphabet[*d];
            }
            if reference_matches_tokens(&requested_tokens, &topic)
                && !reference_matches_tokens(&granted_tokens, &topic)
            {
                covered = false;
            }
            // Next topic of this length, like an odometer.
            let Some(i) = digits.iter().rposition(|d| d + 1 < alphabet.len()) else {
                break;
            };
            digits[i] += 1;
            digits[i + 1..].fill(0);
        }
    }
    assert_eq!(
        pattern_covers(granted, requested),
        covered,
        "pattern_covers({granted}, {requested})"
    );
}
