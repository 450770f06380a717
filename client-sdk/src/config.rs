//! Client configuration: [`ClientBuilder`] and the policies it takes.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// Default for [`ClientBuilder::connect_timeout`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`ClientBuilder::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`ClientBuilder::subscription_capacity`].
pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 1024;
/// Default for [`ClientBuilder::max_message_size`]: 8 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 8 * 1024 * 1024;
/// Default for [`ClientBuilder::command_capacity`].
pub const DEFAULT_COMMAND_CAPACITY: usize = 1024;
/// Default for [`ClientBuilder::write_buffer_limit`]: 1 MiB.
pub const DEFAULT_WRITE_BUFFER_LIMIT: usize = 1024 * 1024;
/// Default [`ClientBuilder::max_outgoing_message_size`]: 1 MiB, the broker's
/// default `--max-message-size`.
pub const DEFAULT_MAX_OUTGOING_MESSAGE_SIZE: usize = 1024 * 1024;

/// How the client reconnects after losing its connection: exponential
/// backoff with full jitter, capped.
///
/// Before reconnect attempt `n` (counting from 1) the client sleeps a random
/// duration between zero and `min(max, initial * multiplier^(n-1))` ("full
/// jitter"), so a fleet of clients does not reconnect in lockstep after a
/// broker restart. `max_attempts` bounds the number of consecutive failed
/// attempts; `None` retries forever. The attempt counter starts over once a
/// connection has stayed up for 10 seconds.
///
/// ```
/// use std::time::Duration;
/// use tickwire_client::ReconnectPolicy;
///
/// let policy = ReconnectPolicy::default()
///     .with_initial(Duration::from_millis(200))
///     .with_max(Duration::from_secs(10))
///     .with_max_attempts(Some(20));
/// assert_eq!(policy.backoff_ceiling(1), Duration::from_millis(200));
/// assert_eq!(policy.backoff_ceiling(3), Duration::from_millis(800));
/// assert_eq!(policy.backoff_ceiling(30), Duration::from_secs(10));
/// assert!(!ReconnectPolicy::never().is_enabled());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Ceiling of the delay before the first attempt. Default: 100 ms.
    pub initial: Duration,
    /// Largest delay ceiling. Default: 30 s.
    pub max: Duration,
    /// Growth factor of the ceiling per attempt. Default: 2.0.
    pub multiplier: f64,
    /// Consecutive failed attempts before giving up (the client then moves to
    /// [`ConnectionState::Closed`](crate::ConnectionState::Closed)); `None`
    /// never gives up, `Some(0)` never reconnects. Default: `None`.
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// A policy that never reconnects: a lost connection closes the client.
    pub fn never() -> Self {
        ReconnectPolicy {
            max_attempts: Some(0),
            ..ReconnectPolicy::default()
        }
    }

    /// Sets [`ReconnectPolicy::initial`].
    pub fn with_initial(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// Sets [`ReconnectPolicy::max`].
    pub fn with_max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    /// Sets [`ReconnectPolicy::multiplier`].
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets [`ReconnectPolicy::max_attempts`].
    pub fn with_max_attempts(mut self, max_attempts: Option<u32>) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Whether this policy reconnects at all.
    pub fn is_enabled(&self) -> bool {
        self.max_attempts != Some(0)
    }

    /// The upper bound of the random delay before attempt `attempt`
    /// (counting from 1): `min(max, initial * multiplier^(attempt-1))`.
    pub fn backoff_ceiling(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(1024) as i32;
        let factor = self.multiplier.powi(exponent);
        let secs = self.initial.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs.max(0.0))
        }
    }

    /// A random delay in `[0, backoff_ceiling(attempt)]` (full jitter).
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.backoff_ceiling(attempt);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(rand::random_range(0..=nanos))
    }

    fn validate(&self) -> Result<()> {
        if !self.multiplier.is_finite() || self.multiplier < 1.0 {
            return Err(Error::Config(format!(
                "reconnect multiplier must be a finite number >= 1.0, got {}",
                self.multiplier
            )));
        }
        if self.initial > self.max {
            return Err(Error::Config(format!(
                "reconnect initial delay {:?} is larger than the maximum {:?}",
                self.initial, self.max
            )));
        }
        Ok(())
    }
}

/// WebSocket-level keepalive.
///
/// The client sends a WebSocket ping whenever it has sent nothing, or
/// received nothing, for `interval` (at most one ping per `interval`), which
/// keeps the broker's own keepalive satisfied and probes the broker. If
/// nothing at all arrives from the broker for `timeout`, or queued outgoing
/// data makes no progress for `timeout`, the connection is declared dead and
/// the client reconnects.
///
/// ```
/// use std::time::Duration;
/// use tickwire_client::Keepalive;
///
/// let keepalive = Keepalive::new(Duration::from_secs(5), Duration::from_secs(15));
/// assert_eq!(Keepalive::default().interval, Duration::from_secs(15));
/// # let _ = keepalive;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Keepalive {
    /// Idle time after which a ping is sent. Default: 15 s.
    pub interval: Duration,
    /// Silence after which the connection is considered dead; must be larger
    /// than `interval`. Default: 45 s.
    pub timeout: Duration,
}

impl Keepalive {
    /// A keepalive with the given ping interval and dead-connection timeout.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Keepalive { interval, timeout }
    }
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(45),
        }
    }
}

/// What `publish` calls do while the client is not connected (during
/// reconnects).
///
/// The default is `Buffer { max_messages: 1000, max_bytes: 1 MiB }`: short
/// outages are invisible to publishers, long ones surface quickly as
/// [`Error::OfflineBufferFull`].
///
/// ```
/// use tickwire_client::OfflinePolicy;
/// assert_eq!(
///     OfflinePolicy::default(),
///     OfflinePolicy::Buffer { max_messages: 1000, max_bytes: 1024 * 1024 }
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OfflinePolicy {
    /// Keep publishes in memory, in order, and send them right after the
    /// next connection is established (after resubscribing). A publish that
    /// would exceed either bound fails with [`Error::OfflineBufferFull`].
    /// An acknowledged publish still waiting in the buffer when its request
    /// timeout expires fails with [`Error::Timeout`] and is never sent.
    Buffer {
        /// Most messages kept.
        max_messages: usize,
        /// Most bytes kept (encoded frames, payload plus a few bytes).
        max_bytes: usize,
    },
    /// Fail publishes immediately with [`Error::NotConnected`].
    Fail,
}

impl Default for OfflinePolicy {
    fn default() -> Self {
        OfflinePolicy::Buffer {
            max_messages: 1000,
            max_bytes: 1024 * 1024,
        }
    }
}

/// Which certificate authorities a `wss://` connection trusts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsRoots {
    /// Mozilla's root program, compiled in (the `webpki-roots` crate). Works
    /// the same on every machine. The default.
    #[default]
    WebPki,
    /// The operating system's trust store (the `rustls-native-certs` crate),
    /// for brokers behind a corporate CA installed system-wide.
    Native,
    /// Only the certificates in this PEM file, for brokers with a private CA.
    CaFile(PathBuf),
}

/// What a [`ClientBuilder::token_provider`] callback returns: a future of a
/// fresh bearer token, or of the reason there is none.
pub type TokenFuture = Pin<Box<dyn Future<Output = std::result::Result<String, String>> + Send>>;

/// Whether `id` is a client id the broker takes (`client=`: 1-64 of
/// `[A-Za-z0-9_-]`).
fn is_valid_client_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A fresh client id: 128 random bits as 22 base64url characters, as the
/// broker would assign.
pub(crate) fn generate_client_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>())
}

/// Whether `token` can be sent in an `Authorization` header.
fn is_valid_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

/// The `exp` of a JWT, read without verifying it (the broker verifies): to
/// know when to refresh. `None` when `token` is not a JWT with a numeric
/// `exp`.
pub(crate) fn token_expiry(token: &str) -> Option<SystemTime> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&json).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(exp))
}

/// The application's token source, called before every connection attempt
/// and, while connected, before the current token expires.
#[derive(Clone)]
pub(crate) struct TokenProvider(Arc<dyn Fn() -> TokenFuture + Send + Sync>);

impl TokenProvider {
    /// A fresh token from the application's callback.
    pub(crate) async fn fetch(&self) -> Result<String> {
        let token = (self.0)().await.map_err(Error::TokenProvider)?;
        if is_valid_token(&token) {
            Ok(token)
        } else {
            Err(Error::TokenProvider(
                "the token is not non-empty visible ASCII".into(),
            ))
        }
    }
}

/// Every setting of a client; built by [`ClientBuilder`].
#[derive(Clone)]
pub(crate) struct Config {
    pub token: Option<String>,
    pub token_provider: Option<TokenProvider>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub subscription_capacity: usize,
    pub max_message_size: usize,
    pub max_outgoing_message_size: usize,
    pub command_capacity: usize,
    pub write_buffer_limit: usize,
    pub reconnect: ReconnectPolicy,
    pub keepalive: Option<Keepalive>,
    pub tls_roots: TlsRoots,
    /// Client certificate chain and key files (PEM), for brokers that ask
    /// for a client certificate.
    pub tls_client_identity: Option<(PathBuf, PathBuf)>,
    pub tls_config: Option<Arc<rustls::ClientConfig>>,
    pub offline: OfflinePolicy,
    pub retry_initial_connect: bool,
    /// The client id sent as `client=`; generated at connect when `None`.
    pub client_id: Option<String>,
    /// Offer permessage-deflate.
    pub compression: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            token: None,
            token_provider: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            subscription_capacity: DEFAULT_SUBSCRIPTION_CAPACITY,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_outgoing_message_size: DEFAULT_MAX_OUTGOING_MESSAGE_SIZE,
            command_capacity: DEFAULT_COMMAND_CAPACITY,
            write_buffer_limit: DEFAULT_WRITE_BUFFER_LIMIT,
            reconnect: ReconnectPolicy::default(),
            keepalive: Some(Keepalive::default()),
            tls_roots: TlsRoots::default(),
            tls_client_identity: None,
            tls_config: None,
            offline: OfflinePolicy::default(),
            retry_initial_connect: false,
            client_id: None,
            compression: false,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field(
                "token_provider",
                &self.token_provider.as_ref().map(|_| "<callback>"),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("max_message_size", &self.max_message_size)
            .field("max_outgoing_message_size", &self.max_outgoing_message_size)
            .field("command_capacity", &self.command_capacity)
            .field("write_buffer_limit", &self.write_buffer_limit)
            .field("reconnect", &self.reconnect)
            .field("keepalive", &self.keepalive)
            .field("tls_roots", &self.tls_roots)
            .field("tls_client_identity", &self.tls_client_identity)
            .field("tls_config", &self.tls_config.as_ref().map(|_| "<custom>"))
            .field("offline", &self.offline)
            .field("retry_initial_connect", &self.retry_initial_connect)
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<()> {
        // Deadlines are computed as `now + duration`; keep them far from
        // overflow.
        const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
        let mut durations = vec![
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ];
        if let Some(ka) = self.keepalive {
            durations.push(("keepalive interval", ka.interval));
            durations.push(("keepalive timeout", ka.timeout));
        }
        for (name, value) in durations {
            if value.is_zero() || value > MAX_DURATION {
                return Err(Error::Config(format!(
                    "{name} must be larger than zero and at most a year, got {value:?}"
                )));
            }
        }
        let sizes = [
            ("subscription_capacity", self.subscription_capacity),
            ("max_message_size", self.max_message_size),
            ("command_capacity", self.command_capacity),
            ("write_buffer_limit", self.write_buffer_limit),
        ];
        for (name, value) in sizes {
            if value == 0 {
                return Err(Error::Config(format!("{name} must be larger than zero")));
            }
        }
        if self.subscription_capacity > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(Error::Config("subscription_capacity is too large".into()));
        }
        if self.command_capacity > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(Error::Config("command_capacity is too large".into()));
        }
        if let Some(ka) = self.keepalive
            && (ka.interval.is_zero() || ka.timeout <= ka.interval)
        {
            return Err(Error::Config(format!(
                "keepalive timeout ({:?}) must be larger than its interval ({:?}), which must be larger than zero",
                ka.timeout, ka.interval
            )));
        }
        if let Some(token) = &self.token
            && !is_valid_token(token)
        {
            return Err(Error::Config(
                "token must be non-empty visible ASCII (no spaces or control characters)".into(),
            ));
        }
        if let Some(id) = &self.client_id
            && !is_valid_client_id(id)
        {
            return Err(Error::Config(format!(
                "client_id {id:?} must be 1-64 characters of A-Z, a-z, 0-9, _ and -"
            )));
        }
        if self.token.is_some() && self.token_provider.is_some() {
            return Err(Error::Config(
                "set either token or token_provider, not both".into(),
            ));
        }
        self.reconnect.validate()
    }
}

/// Configures and connects a [`Client`](crate::Client). Created by
/// [`Client::builder`](crate::Client::builder).
///
/// Every option has a production-ready default; see each method.
///
/// ```no_run
/// # async fn demo() -> tickwire_client::Result<()> {
/// use std::time::Duration;
/// use tickwire_client::{Client, OfflinePolicy, ReconnectPolicy};
///
/// let client = Client::builder("wss://broker.example.com")
///     .token("secret-token")
///     .connect_timeout(Duration::from_secs(5))
///     .request_timeout(Duration::from_secs(5))
///     .reconnect(ReconnectPolicy::default().with_max(Duration::from_secs(10)))
///     .offline_policy(OfflinePolicy::Fail)
///     .connect()
///     .await?;
/// # let _ = client;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .connect().await"]
pub struct ClientBuilder {
    pub(crate) url: String,
    pub(crate) config: Config,
}

impl ClientBuilder {
    pub(crate) fn new(url: String) -> Self {
        ClientBuilder {
            url,
            config: Config::default(),
        }
    }

    /// A bearer token, sent as `Authorization: Bearer <token>` on every
    /// upgrade request (including reconnects). Must be visible ASCII.
    /// Default: none.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.token = Some(token.into());
        self
    }

    /// A callback that supplies the bearer token, called before every
    /// connection attempt (the first one and each reconnect) and, while
    /// connected, after 80 % of the current token's remaining life (read
    /// from its `exp`): the new token is sent with `REFRESH`, so the broker
    /// does not close the connection with 4003 when the old one expires. If
    /// a refresh fails, the connection ends at the expiry and the reconnect
    /// calls the callback again. The call counts against the connect
    /// timeout; an error (`Err(reason)`) fails that attempt with
    /// [`Error::TokenProvider`] and, when reconnecting, is retried with the
    /// reconnect policy. Replaces [`Self::token`].
    ///
    /// ```no_run
    /// # async fn demo() -> tickwire_client::Result<()> {
    /// let client = tickwire_client::Client::builder("wss://broker.example/ws")
    ///     .token_provider(|| async {
    ///         std::fs::read_to_string("/run/secrets/tickwire-token")
    ///             .map(|t| t.trim().to_owned())
    ///             .map_err(|e| e.to_string())
    ///     })
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn token_provider<F, Fut>(mut self, provider: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<String, String>> + Send + 'static,
    {
        self.config.token_provider = Some(TokenProvider(Arc::new(move || {
            Box::pin(provider()) as TokenFuture
        })));
        self
    }

    /// Time allowed for one connection attempt: name resolution, TCP, TLS and
    /// the WebSocket handshake together. Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Time allowed for a request (subscribe, acknowledged publish, ping,
    /// close), from the call until the broker's reply, including time spent
    /// waiting for queue space or for a reconnect. Default: 10 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Messages buffered per [`Subscription`](crate::Subscription) before the
    /// subscription counts as lagging and drops new messages (see
    /// [`Subscription::dropped`](crate::Subscription::dropped)). Can be
    /// overridden per subscription with
    /// [`SubscribeOptions::capacity`](crate::SubscribeOptions::capacity).
    /// Default: 1024.
    pub fn subscription_capacity(mut self, capacity: usize) -> Self {
        self.config.subscription_capacity = capacity;
        self
    }

    /// Largest WebSocket message accepted from the broker; a larger one is a
    /// protocol error (close code 1009) and the client reconnects.
    /// Default: 8 MiB.
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.config.max_message_size = bytes;
        self
    }

    /// Largest WebSocket message the client sends: a publish whose encoded
    /// message is larger fails at once with [`Error::MessageTooLarge`]
    /// instead of reaching a broker that would close the connection for it
    /// (close code 1009). Set it to the broker's `--max-message-size`.
    /// Default: 1 MiB, the broker's default.
    pub fn max_outgoing_message_size(mut self, bytes: usize) -> Self {
        self.config.max_outgoing_message_size = bytes;
        self
    }

    /// Capacity of the queue from client handles to the connection task.
    /// When it is full, calls wait (backpressure). Default: 1024.
    pub fn command_capacity(mut self, capacity: usize) -> Self {
        self.config.command_capacity = capacity;
        self
    }

    /// Bytes of encoded frames the connection task holds for the socket
    /// before it stops taking new requests (backpressure when the network or
    /// the broker is slower than the publishers). Default: 1 MiB.
    pub fn write_buffer_limit(mut self, bytes: usize) -> Self {
        self.config.write_buffer_limit = bytes;
        self
    }

    /// How to reconnect after a lost connection. Default:
    /// [`ReconnectPolicy::default`] (100 ms doubling up to 30 s, forever).
    pub fn reconnect(mut self, policy: ReconnectPolicy) -> Self {
        self.config.reconnect = policy;
        self
    }

    /// Never reconnect: a lost connection closes the client. Same as
    /// `.reconnect(ReconnectPolicy::never())`.
    pub fn no_reconnect(self) -> Self {
        self.reconnect(ReconnectPolicy::never())
    }

    /// WebSocket ping interval and dead-connection timeout. Default:
    /// [`Keepalive::default`] (15 s / 45 s).
    pub fn keepalive(mut self, keepalive: Keepalive) -> Self {
        self.config.keepalive = Some(keepalive);
        self
    }

    /// Disable client-side keepalive pings and dead-connection detection.
    pub fn no_keepalive(mut self) -> Self {
        self.config.keepalive = None;
        self
    }

    /// Root certificates for `wss://`. Default: [`TlsRoots::WebPki`].
    pub fn tls_roots(mut self, roots: TlsRoots) -> Self {
        self.config.tls_roots = roots;
        self
    }

    /// A client certificate for `wss://` brokers that require one
    /// (`--tls-client-ca-file`): a PEM certificate chain (leaf first) and its
    /// PEM private key (PKCS#8, RSA or EC). The files are read when the
    /// client connects; an unreadable file is an [`Error::Tls`]. Default:
    /// none.
    pub fn tls_client_identity(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.config.tls_client_identity = Some((cert_file.into(), key_file.into()));
        self
    }

    /// A complete rustls client configuration for `wss://` (client
    /// certificates, custom verifiers, ...). Takes precedence over
    /// [`ClientBuilder::tls_roots`]. Default: none.
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.config.tls_config = Some(config);
        self
    }

    /// What publishes do while disconnected. Default:
    /// [`OfflinePolicy::default`] (buffer up to 1000 messages / 1 MiB).
    pub fn offline_policy(mut self, policy: OfflinePolicy) -> Self {
        self.config.offline = policy;
        self
    }

    /// This client's id, sent as the `client=` query parameter on every
    /// connection (1-64 characters of `A-Z a-z 0-9 _ -`). The broker keys
    /// presence entries by it, so a reconnect (or a second connection given
    /// the same id) is the same entry and, within the broker's presence
    /// grace, makes no leave or join. Default: 22 random base64url
    /// characters, generated once per client ([`Client::client_id`](crate::Client::client_id)).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = Some(id.into());
        self
    }

    /// When `true`, [`ClientBuilder::connect`] retries a failing first
    /// connection with the reconnect policy instead of returning the first
    /// error (useful when the application may start before the broker).
    /// Default: `false`.
    pub fn retry_initial_connect(mut self, retry: bool) -> Self {
        self.config.retry_initial_connect = retry;
        self
    }

    /// When `true`, every upgrade request offers permessage-deflate
    /// (RFC 7692) and, if the broker accepts (its `--compression on`),
    /// compressed messages from the broker are inflated (within
    /// [`ClientBuilder::max_message_size`]). The client itself sends
    /// uncompressed messages. Worth it for large, repetitive payloads (JSON)
    /// over slow or metered links; it costs CPU on both ends for small ones.
    /// Default: `false`, as the broker's.
    pub fn compression(mut self, offer: bool) -> Self {
        self.config.compression = offer;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let p = ReconnectPolicy::default();
        assert_eq!(p.backoff_ceiling(0), Duration::from_millis(100));
        assert_eq!(p.backoff_ceiling(1), Duration::from_millis(100));
        assert_eq!(p.backoff_ceiling(2), Duration::from_millis(200));
        assert_eq!(p.backoff_ceiling(9), Duration::from_millis(25_600));
        assert_eq!(p.backoff_ceiling(10), Duration::from_secs(30));
        assert_eq!(p.backoff_ceiling(u32::MAX), Duration::from_secs(30));
        for attempt in 1..40 {
            let d = p.delay(attempt);
            assert!(d <= p.backoff_ceiling(attempt));
        }
        let zero = ReconnectPolicy::default()
            .with_initial(Duration::ZERO)
            .with_max(Duration::ZERO);
        assert_eq!(zero.delay(5), Duration::ZERO);
    }

    #[test]
    fn validation() {
        assert!(Config::default().validate().is_ok());
        let bad = [
            Config {
                keepalive: Some(Keepalive::new(
                    Duration::from_secs(5),
                    Duration::from_secs(5),
                )),
                ..Config::default()
            },
            Config {
                token: Some("bad token".into()),
                ..Config::default()
            },
            Config {
                token: Some("abc\r\nX-Injected: 1".into()),
                ..Config::default()
            },
            Config {
                reconnect: ReconnectPolicy::default().with_multiplier(0.5),
                ..Config::default()
            },
            Config {
                subscription_capacity: 0,
                ..Config::default()
            },
            Config {
                request_timeout: Duration::ZERO,
                ..Config::default()
            },
            Config {
                request_timeout: Duration::MAX,
                ..Config::default()
            },
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(Error::Config(_))),
                "{config:?}"
            );
        }
    }

    #[test]
    fn client_ids_are_checked_and_generated_fresh() {
        for good in ["a", "tab-1_X", &"x".repeat(64)] {
            assert!(is_valid_client_id(good), "{good}");
        }
        for bad in ["", "has space", "é", &"x".repeat(65), "a=b"] {
            assert!(!is_valid_client_id(bad), "{bad}");
            let config = Config {
                client_id: Some(bad.to_owned()),
                ..Config::default()
            };
            assert!(matches!(config.validate(), Err(Error::Config(_))));
        }
        let (a, b) = (generate_client_id(), generate_client_id());
        assert_eq!(a.len(), 22);
        assert!(is_valid_client_id(&a));
        assert_ne!(a, b);
    }

    #[test]
    fn debug_redacts_token() {
        let b = ClientBuilder::new("ws://x".into()).token("s3cr3t");
        assert!(!format!("{b:?}").contains("s3cr3t"));
    }

    #[tokio::test]
    async fn token_provider_is_checked_and_exclusive_with_token() {
        let both = ClientBuilder::new("ws://x".into())
            .token("t")
            .token_provider(|| async { Ok("t".to_owned()) });
        assert!(matches!(both.config.validate(), Err(Error::Config(_))));
        let spaced = ClientBuilder::new("ws://x".into())
            .token_provider(|| async { Ok("has space".to_owned()) });
        assert!(spaced.config.validate().is_ok());
        let provider = spaced.config.token_provider.clone().unwrap();
        assert!(matches!(
            provider.fetch().await,
            Err(Error::TokenProvider(_))
        ));
        assert!(format!("{spaced:?}").contains("<callback>"));
    }
}
