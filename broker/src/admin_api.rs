//! The operational JSON endpoints the dashboard (and any operator tool)
//! reads: `GET /v1/stats` and `GET /v1/topics`.
//!
//! This module builds the JSON bodies; [`crate::http`] routes the requests
//! and checks the `admin` grant first (with authentication on). Both
//! endpoints exist whether or not `--dashboard` is on. docs/protocol.md
//! (section 15) documents the fields.

use percent_encoding::percent_decode_str;
use serde_json::{Value, json};
use tickwire_protocol::ErrorCode;
use tickwire_protocol::topic::{Pattern, Topic};

use crate::metrics::FALLBACK_TRANSPORTS;
use crate::registry::MAX_PAGE;
use crate::state::BrokerState;

/// Topics per `/v1/topics` page when `limit` is not given.
pub const DEFAULT_PAGE: usize = 100;

/// A `/v1/topics` query that cannot be answered: a 400 with this code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// `invalid_option` (a bad or unknown parameter) or `invalid_pattern`.
    pub code: ErrorCode,
    /// What is wrong, naming the parameter.
    pub message: String,
}

impl QueryError {
    fn option(message: String) -> Self {
        QueryError {
            code: ErrorCode::InvalidOption,
            message,
        }
    }
}

/// The body of `GET /v1/stats`: what the broker is doing now, as counters
/// since start (rates are deltas between two reads) and gauges.
pub fn stats(state: &BrokerState) -> Value {
    let m = &state.metrics;
    let busiest = state.busiest.latest().map(|list| {
        list.into_iter()
            .map(|b| json!({ "topic": b.topic, "rate": b.rate }))
            .collect::<Vec<_>>()
    });
    let backplane = state.backplane.as_ref().map(|b| {
        json!({
            "up": b.health.is_up(),
            "channels": m.backplane_channels.get(),
        })
    });
    let sessions = |transport: &str| m.transport_sessions.with_label_values(&[transport]).get();
    let fallback_bytes: u64 = FALLBACK_TRANSPORTS
        .iter()
        .map(|t| m.transport_bytes_out.with_label_values(&[*t]).get())
        .sum();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "ready": state.readyz_ok(),
        "connections": {
            "tcp": m.connections.get(),
            "websocket": sessions("ws"),
            "sse": sessions("sse"),
            "poll": sessions("poll"),
        },
        "subscriptions": m.subscriptions.get(),
        "topics": m.topics.get(),
        "counters": {
            "publishes": m.messages_published.get(),
            "deliveries": m.deliveries.get(),
            "bytes_in": m.bytes_in.get(),
            "bytes_out": m.bytes_out.get() + fallback_bytes,
            "dropped": m.dropped.get(),
            "conflated": m.conflated.get(),
            "slow_consumer_closes": m.slow_consumer_disconnects.get(),
        },
        "backplane": backplane,
        "busiest": busiest,
    })
}

/// The parameters of a `/v1/topics` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicsQuery {
    /// Topics to list (default `>`: all).
    pub pattern: Pattern,
    /// List only topics whose names sort after this one (the previous
    /// page's `next`).
    pub after: Option<String>,
    /// Most topics to list, 1 ..= [`MAX_PAGE`].
    pub limit: usize,
}

impl TopicsQuery {
    /// Parses `pattern`, `limit` and `after` (each at most once,
    /// percent-decoded); any other parameter is refused.
    pub fn parse(query: Option<&str>) -> Result<TopicsQuery, QueryError> {
        let mut pattern = None;
        let mut after = None;
        let mut limit = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| QueryError::option(format!("{key}: not UTF-8 once decoded")))?
                .into_owned();
            let slot = match key {
                "pattern" => &mut pattern,
                "after" => &mut after,
                "limit" => &mut limit,
                other => {
                    return Err(QueryError::option(format!(
                        "unsupported query parameter {other}; /v1/topics takes pattern, limit and after"
                    )));
                }
            };
            if slot.replace(value).is_some() {
                return Err(QueryError::option(format!("{key} given more than once")));
            }
        }
        let pattern = match pattern {
            None => Pattern::everything(),
            Some(p) => Pattern::new(p.as_str()).map_err(|e| QueryError {
                code: ErrorCode::InvalidPattern,
                message: format!("pattern `{p}`: {e}"),
            })?,
        };
        if let Some(after) = &after {
            Topic::new(after.as_str())
                .map_err(|e| QueryError::option(format!("after `{after}`: {e}")))?;
        }
        let limit = match limit {
            None => DEFAULT_PAGE,
            Some(text) => text
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_PAGE).contains(n))
                .ok_or_else(|| {
                    QueryError::option(format!("limit `{text}`: write a number, 1 to {MAX_PAGE}"))
                })?,
        };
        Ok(TopicsQuery {
            pattern,
            after,
            limit,
        })
    }
}

/// The body of `GET /v1/topics?QUERY`: the matching topics sorted by name,
/// with subscriber counts and positions, and `next` (the last topic listed
/// when more follow, else `null`).
pub fn topics(state: &BrokerState, query: Option<&str>) -> Result<Value, QueryError> {
    let query = TopicsQuery::parse(query)?;
    let page = state
        .registry
        .list_topics(&query.pattern, query.after.as_deref(), query.limit);
    let next = match page.more {
        true => page.topics.last().map(|t| t.name.clone()),
        false => None,
    };
    let topics: Vec<Value> = page
        .topics
        .into_iter()
        .map(|t| {
            json!({
                "topic": t.name,
                "subscribers": t.subscribers,
                "epoch": t.epoch.to_string(),
                "seq": t.seq,
            })
        })
        .collect();
    Ok(json!({ "topics": topics, "next": next }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_queries_parse_with_defaults_and_bounds() {
        let q = TopicsQuery::parse(None).unwrap();
        assert_eq!(q.pattern.as_str(), ">");
        assert_eq!((q.after, q.limit), (None, DEFAULT_PAGE));
        let q = TopicsQuery::parse(Some("pattern=stocks.%2A&limit=1000&after=stocks.A")).unwrap();
        assert_eq!(q.pattern.as_str(), "stocks.*");
        assert_eq!(q.after.as_deref(), Some("stocks.A"));
        assert_eq!(q.limit, 1000);
        let q = TopicsQuery::parse(Some("pattern=a.%3E")).unwrap();
        assert_eq!(q.pattern.as_str(), "a.>");

        let code = |query: &str| TopicsQuery::parse(Some(query)).unwrap_err().code;
        assert_eq!(code("limit=0"), ErrorCode::InvalidOption);
        assert_eq!(code("limit=1001"), ErrorCode::InvalidOption);
        assert_eq!(code("limit=x"), ErrorCode::InvalidOption);
        assert_eq!(code("limit=1&limit=2"), ErrorCode::InvalidOption);
        assert_eq!(code("other=1"), ErrorCode::InvalidOption);
        assert_eq!(code("after=a..b"), ErrorCode::InvalidOption);
        assert_eq!(code("after=a.*"), ErrorCode::InvalidOption);
        assert_eq!(code("pattern=a..b"), ErrorCode::InvalidPattern);
        assert_eq!(code("pattern=%FF"), ErrorCode::InvalidOption);
        let message = TopicsQuery::parse(Some("sort=1")).unwrap_err().message;
        assert!(message.contains("sort"), "{message}");
    }
}
