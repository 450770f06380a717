//! What one client may make the broker keep or do, beyond the shape of its
//! requests: whether a publish may ask for `retain`, how fast one
//! connection may publish ([`PublishLimiter`]), and how many connections one
//! source address may open, and how fast ([`IpLimits`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
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

/// The message of a publish refused with `rate_limited`.
pub const RATE_LIMITED_MESSAGE: &str = "publish refused: over this connection's publish rate (--publish-rate, --publish-bytes-rate); slow down";

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

/// Fewest source addresses [`IpLimits`] can track, whatever
/// `max_connections` is.
pub const MIN_TRACKED_ADDRESSES: usize = 65_536;

/// Why a new connection from one address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IpRefusal {
    /// The address already holds `max_connections_per_ip` connections.
    #[error(
        "too many connections from your address (max_connections_per_ip); close some or retry later"
    )]
    TooManyConnections,
    /// The address opens connections faster than `connection_rate_per_ip`.
    #[error(
        "too many new connections from your address (connection_rate_per_ip); retry later, with backoff"
    )]
    TooFast,
}

impl IpRefusal {
    /// The value of the `reason` label of
    /// `tickwire_connections_rejected_per_ip_total`: the setting refusing.
    pub const fn reason(self) -> &'static str {
        match self {
            IpRefusal::TooManyConnections => "max_connections_per_ip",
            IpRefusal::TooFast => "connection_rate_per_ip",
        }
    }
}

#[derive(Debug)]
struct AddressState {
    open: usize,
    attempts: TokenBucket,
}

/// Connections per source address: how many are open and how fast new
/// ones come. Consulted once per accepted TCP connection (never on the
/// publish path). The table is bounded: an address is forgotten as soon as
/// it has no open connection and its rate bucket has refilled, and when
/// the table is full such addresses are dropped first, then those with no
/// open connection; addresses with open connections always fit, since the
/// table holds at least `max_connections` plus the probe connections.
#[derive(Debug)]
pub struct IpLimits {
    addresses: Mutex<HashMap<IpAddr, AddressState>>,
    max_per_address: usize,
    rate: f64,
    burst: f64,
    capacity: usize,
    /// Reads the time when a connection ends ([`IpHold`]'s `Drop`, where
    /// no `now` can be passed in): `Instant::now`, a fixed clock in tests.
    clock: fn() -> Instant,
}

impl IpLimits {
    /// Limits as `config` sets them, for a broker that holds at most
    /// `connections` connections at once.
    pub fn new(config: &BrokerConfig, connections: usize) -> Self {
        IpLimits {
            addresses: Mutex::new(HashMap::new()),
            max_per_address: config.max_connections_per_ip,
            rate: f64::from(config.connection_rate_per_ip),
            burst: f64::from(config.connection_burst_per_ip),
            capacity: connections.saturating_add(1).max(MIN_TRACKED_ADDRESSES),
            clock: Instant::now,
        }
    }

    /// The same limits reading the time from `clock` when a connection
    /// ends, so that tests decide what time it is.
    #[cfg(test)]
    fn with_clock(self, clock: fn() -> Instant) -> Self {
        IpLimits { clock, ..self }
    }

    /// Admits a new connection from `ip` at `now`, or says why not. The
    /// returned hold counts the connection until it is dropped.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, now: Instant) -> Result<IpHold, IpRefusal> {
        let mut addresses = self.addresses.lock();
        if !addresses.contains_key(&ip) && addresses.len() >= self.capacity {
            addresses.retain(|_, a| a.open > 0 || !a.attempts.is_full(now));
            if addresses.len() >= self.capacity {
                addresses.retain(|_, a| a.open > 0);
            }
        }
        let address = addresses.entry(ip).or_insert_with(|| AddressState {
            open: 0,
            attempts: TokenBucket::new(self.rate, self.burst, now),
        });
        if !address.attempts.try_take(1.0, now) {
            return Err(IpRefusal::TooFast);
        }
        if address.open >= self.max_per_address {
            return Err(IpRefusal::TooManyConnections);
        }
        address.open += 1;
        Ok(IpHold {
            limits: Arc::clone(self),
            ip,
        })
    }

    /// Forgets addresses with no open connection whose rate bucket has
    /// refilled; returns how many addresses are still tracked.
    pub fn prune(&self, now: Instant) -> usize {
        let mut addresses = self.addresses.lock();
        addresses.retain(|_, a| a.open > 0 || !a.attempts.is_full(now));
        addresses.len()
    }

    fn release(&self, ip: IpAddr) {
        let mut addresses = self.addresses.lock();
        if let Some(address) = addresses.get_mut(&ip) {
            address.open = address.open.saturating_sub(1);
            if address.open == 0 && address.attempts.is_full((self.clock)()) {
                addresses.remove(&ip);
            }
        }
    }
}

/// One open connection from one address, counted in [`IpLimits`] until it
/// is dropped.
#[derive(Debug)]
pub struct IpHold {
    limits: Arc<IpLimits>,
    ip: IpAddr,
}

impl IpHold {
    /// Admits one more place for this hold's address at `now` (a long-poll
    /// session outlives its request's connection and counts as one), under
    /// the same limits as a new connection.
    pub fn admit_another(&self, now: Instant) -> Result<IpHold, IpRefusal> {
        self.limits.admit(self.ip, now)
    }
}

impl Drop for IpHold {
    fn drop(&mut self) {
        self.limits.release(self.ip);
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

    /// A fixed instant: the tests' "now", and the time [`IpLimits`] reads
    /// when a hold is dropped (however long the test really takes).
    fn frozen() -> Instant {
        static AT: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *AT.get_or_init(Instant::now)
    }

    /// Limits whose clock stands still at [`frozen`].
    fn ip_limits(max: usize, rate: u32, burst: u32) -> Arc<IpLimits> {
        let config = BrokerConfig {
            max_connections_per_ip: max,
            connection_rate_per_ip: rate,
            connection_burst_per_ip: burst,
            ..BrokerConfig::default()
        };
        Arc::new(IpLimits::new(&config, 10).with_clock(frozen))
    }

    #[test]
    fn an_address_is_limited_in_connections_and_rate_and_then_forgotten() {
        let limits = ip_limits(2, 1000, 3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let now = frozen();
        let first = limits.admit(a, now).unwrap();
        let _second = limits.admit(a, now).unwrap();
        assert_eq!(
            limits.admit(a, now).unwrap_err(),
            IpRefusal::TooManyConnections
        );
        assert!(
            limits.admit(b, now).is_ok(),
            "other addresses are not affected"
        );
        drop(first);
        assert_eq!(limits.admit(a, now).unwrap_err(), IpRefusal::TooFast);
        let later = now + Duration::from_secs(1);
        let third = limits.admit(a, later).unwrap();
        drop((third, _second));
        assert_eq!(limits.prune(later + Duration::from_secs(1)), 0);
    }

    #[test]
    fn a_full_table_forgets_idle_addresses_first() {
        let limits = ip_limits(10, 1, 1);
        // The clock stands still: however long admitting and dropping 65,536
        // holds takes, no bucket refills (with the real clock, a slow run
        // took over a second, refilled some and forgot them on release).
        let now = frozen();
        let held: Vec<IpHold> = (0..MIN_TRACKED_ADDRESSES as u32)
            .filter_map(|n| limits.admit(IpAddr::from(n.to_be_bytes()), now).ok())
            .collect();
        assert_eq!(held.len(), MIN_TRACKED_ADDRESSES);
        drop(held);
        assert_eq!(
            limits.prune(now),
            MIN_TRACKED_ADDRESSES,
            "idle addresses whose bucket has not refilled are kept"
        );
        // Each address is idle but its bucket is not refilled yet: they
        // are dropped anyway to make room.
        let new: IpAddr = [192, 168, 0, 1].into();
        assert!(limits.admit(new, now).is_ok());
        assert_eq!(limits.prune(now), 1);
    }
}
