//! What one client may make the broker keep or do, beyond the shape of its
//! requests: whether a publish may ask for `retain`, and how fast one
//! connection may publish ([`PublishLimiter`]).

use std::time::Instant;

use thiserror::Error;
use tickwire_protocol::topic::Topic;

use crate::config::BrokerConfig;

/// A publish asked for `retain` on a topic where clients may not.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "retain is not allowed on topic `{topic}`; an operator allows it with --client-retain-patterns (e.g. `{topic}` or `>`) or client_retain = true in a [[topic]] policy"
)]
pub struct RetainNotAllowed {
    /// The topic of the refused publish.
    pub topic: String,
}

/// Decides whether a publish may ask the broker to retain its message on
/// `topic` (WebSocket `PUBLISH` option `retain`, HTTP `?retain=true`).
///
/// This is the one place where that is decided; the WebSocket session and
/// HTTP publish both ask it before publishing. Today the configuration
/// decides ([`BrokerConfig::client_retain_allowed`]: the topic's
/// `[[topic]]` policy, else `client_retain_patterns`); a grant carried by
/// the client's credentials would be added here.
pub fn may_retain(config: &BrokerConfig, topic: Topic<'_>) -> Result<(), RetainNotAllowed> {
    if config.client_retain_allowed(topic.as_str()) {
        Ok(())
    } else {
        Err(RetainNotAllowed {
            topic: topic.as_str().to_owned(),
        })
    }
}

/// A token bucket: holds up to `burst` tokens and gains `rate` per second.
/// Plain arithmetic on the owner's state: no lock, no allocation.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate` per second.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Whether `n` tokens are available at `now` (after refilling).
    fn has(&mut self, n: f64, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= n
    }

    /// Takes `n` tokens if available; whether it did.
    pub fn try_take(&mut self, n: f64, now: Instant) -> bool {
        let available = self.has(n, now);
        if available {
            self.tokens -= n;
        }
        available
    }

    /// Whether the bucket has refilled completely by `now`.
    pub fn is_full(&mut self, now: Instant) -> bool {
        self.has(self.burst, now)
    }
}

/// Settings of a [`PublishLimiter`].
#[derive(Debug, Clone, Copy)]
pub struct PublishLimits {
    /// Messages per second, sustained.
    pub rate: u32,
    /// Messages allowed at once above the rate.
    pub burst: u32,
    /// Payload bytes per second, sustained.
    pub bytes_rate: usize,
    /// Payload bytes allowed at once above the rate.
    pub bytes_burst: usize,
    /// Refusals in a row (no accepted publish between them) after which the
    /// connection is closed as a flood.
    pub flood_refusals: u32,
}

impl PublishLimits {
    /// The limits `config` sets.
    pub fn from_config(config: &BrokerConfig) -> Self {
        PublishLimits {
            rate: config.publish_rate,
            burst: config.publish_burst,
            bytes_rate: config.publish_bytes_rate,
            bytes_burst: config.publish_bytes_burst,
            flood_refusals: config.publish_flood_refusals,
        }
    }
}

/// What a [`PublishLimiter`] says about one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the limits: publish it.
    Accepted,
    /// Over the limits: refuse it with `rate_limited`.
    Refused,
    /// Over the limits, and the connection keeps publishing regardless:
    /// refuse it and close the connection with 4005.
    Flood,
}

/// One connection's publish rate limit: a message bucket and a byte bucket
/// (a publish needs one message and its payload bytes from both), and a
/// count of refusals in a row for flood detection.
#[derive(Debug, Clone)]
pub struct PublishLimiter {
    messages: TokenBucket,
    bytes: TokenBucket,
    refused_in_a_row: u32,
    flood_refusals: u32,
}

impl PublishLimiter {
    /// A limiter with full buckets.
    pub fn new(limits: PublishLimits, now: Instant) -> Self {
        PublishLimiter {
            messages: TokenBucket::new(f64::from(limits.rate), f64::from(limits.burst), now),
            bytes: TokenBucket::new(limits.bytes_rate as f64, limits.bytes_burst as f64, now),
            refused_in_a_row: 0,
            flood_refusals: limits.flood_refusals,
        }
    }

    /// Decides on a publish of `bytes` payload bytes at `now`, taking its
    /// tokens if it is accepted.
    pub fn admit(&mut self, bytes: usize, now: Instant) -> Admission {
        let bytes = bytes as f64;
        if self.messages.has(1.0, now) && self.bytes.has(bytes, now) {
            self.messages.try_take(1.0, now);
            self.bytes.try_take(bytes, now);
            self.refused_in_a_row = 0;
            return Admission::Accepted;
        }
        self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
        if self.refused_in_a_row > self.flood_refusals {
            Admission::Flood
        } else {
            Admission::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 3.0, start);
        assert!((0..3).all(|_| bucket.try_take(1.0, start)));
        assert!(!bucket.try_take(1.0, start));
        assert!(bucket.try_take(1.0, start + Duration::from_millis(100)));
        assert!(!bucket.is_full(start + Duration::from_millis(100)));
        assert!(bucket.is_full(start + Duration::from_secs(1)));
    }

    #[test]
    fn publishes_need_both_buckets_and_a_flood_is_recognised() {
        let start = Instant::now();
        let limits = PublishLimits {
            rate: 1,
            burst: 2,
            bytes_rate: 100,
            bytes_burst: 100,
            flood_refusals: 2,
        };
        let mut limiter = PublishLimiter::new(limits, start);
        assert_eq!(limiter.admit(60, start), Admission::Accepted);
        assert_eq!(limiter.admit(60, start), Admission::Refused, "bytes");
        assert_eq!(limiter.admit(40, start), Admission::Accepted);
        assert_eq!(limiter.admit(0, start), Admission::Refused, "messages");
        assert_eq!(limiter.admit(0, start), Admission::Refused);
        assert_eq!(
            limiter.admit(0, start),
            Admission::Flood,
            "the third in a row"
        );
        let later = start + Duration::from_secs(1);
        assert_eq!(limiter.admit(10, later), Admission::Accepted);
        assert_eq!(
            limiter.admit(10, later),
            Admission::Refused,
            "in a row again"
        );
    }
}
