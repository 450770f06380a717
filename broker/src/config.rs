//! Broker configuration: flags, `TICKWIRE_*` environment variables and an
//! optional TOML file, in that order of precedence, over safe defaults.
//!
//! Every setting is declared once, in the `broker_settings!` table below,
//! which generates the resolved [`BrokerConfig`], the [`SETTINGS`] list the
//! command line turns into flags, and the file keys, so the three can never
//! disagree. File
//! values use the same syntax as flags (`"64KiB"`, `"30s"`), and the file key
//! is the flag name with `-` replaced by `_`. docs/configuration.md lists the
//! same table.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use thiserror::Error;
use tickwire_protocol::topic::Pattern;

use crate::cluster::target::ClusterTlsFiles;
use crate::outbound::{QueueSettings, SlowConsumerPolicy};
use crate::tls::TlsFiles;

/// The file key of the per-topic policy tables: `[[topic]]`.
pub const TOPIC_TABLE: &str = "topic";

/// Settings whose values may hold a secret (the `cluster` URL's password):
/// `tickwire serve --help` does not show their environment values.
pub const SECRET_SETTINGS: &[&str] = &["cluster"];

/// What the broker keeps and how it treats slow subscribers for the topics
/// matching one pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicPolicy {
    /// The topics this policy applies to.
    pub pattern: Pattern,
    /// Messages kept in the topic's history ring (0: no history).
    pub history_messages: usize,
    /// Bytes the history ring may hold.
    pub history_bytes: usize,
    /// Age after which history entries expire (`None`: no age limit).
    pub history_age: Option<Duration>,
    /// Keep the latest message as the topic's last value even without
    /// history (as if every publish asked for `retain`).
    pub retain: bool,
    /// What happens to this topic's messages for a subscriber over budget.
    pub slow_consumer: SlowConsumerPolicy,
    /// Whether a client may ask for `retain` on these topics (`None`: as
    /// `client_retain_patterns` says).
    pub client_retain: Option<bool>,
    /// Whether the topics keep presence (who is subscribed) and send
    /// `JOIN`/`LEAVE` events (`presence = true`; default false).
    pub presence: bool,
}

impl TopicPolicy {
    /// The policy of topics no `[[topic]]` table matches: no history, no
    /// retained value unless a publish asks for it, disconnect slow
    /// consumers.
    pub fn fallback() -> Self {
        TopicPolicy {
            pattern: Pattern::everything(),
            history_messages: 0,
            history_bytes: 0,
            history_age: None,
            retain: false,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            client_retain: None,
            presence: false,
        }
    }
}

/// Default history byte bound when a policy sets `history_messages` only.
pub const DEFAULT_HISTORY_BYTES: usize = 1 << 20;

fn parse_slow_consumer(s: &str) -> Result<SlowConsumerPolicy, String> {
    match s.trim() {
        "disconnect" => Ok(SlowConsumerPolicy::Disconnect),
        "drop-oldest" => Ok(SlowConsumerPolicy::DropOldest),
        "conflate" => Ok(SlowConsumerPolicy::Conflate),
        other => Err(format!(
            "`{other}` is not a slow-consumer policy; use disconnect, drop-oldest or conflate"
        )),
    }
}

/// Parses the `[[topic]]` array of tables.
fn parse_topic_policies(value: &toml::Value) -> Result<Vec<TopicPolicy>, String> {
    let tables = value
        .as_array()
        .ok_or("write each policy as a [[topic]] table")?;
    tables
        .iter()
        .map(|table| {
            let table = table.as_table().ok_or("write each policy as a [[topic]] table")?;
            let text = |key: &str| {
                table.get(key).map(|v| match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            };
            let pattern = text("pattern").ok_or("every [[topic]] needs a `pattern`")?;
            let mut policy = TopicPolicy {
                pattern: Pattern::new(pattern.as_str()).map_err(|e| format!("pattern `{pattern}`: {e}"))?,
                ..TopicPolicy::fallback()
            };
            for key in table.keys() {
                let v = text(key).unwrap_or_default();
                let field = |e: String| format!("[[topic]] `{pattern}` {key}: {e}");
                match key.as_str() {
                    "pattern" => {}
                    "history_messages" => {
                        policy.history_messages = v.trim().parse().map_err(|_| field(format!("`{v}` is not a count")))?
                    }
                    "history_bytes" => policy.history_bytes = parse_size(&v).map_err(field)?,
                    "history_age" => policy.history_age = Some(parse_duration(&v).map_err(field)?),
                    "retain" => policy.retain = v.trim().parse().map_err(|_| field(format!("`{v}` is not true or false")))?,
                    "slow_consumer" => policy.slow_consumer = parse_slow_consumer(&v).map_err(field)?,
                    "client_retain" => policy.client_retain = Some(v.trim().parse().map_err(|_| field(format!("`{v}` is not true or false")))?),
                    "presence" => policy.presence = v.trim().parse().map_err(|_| field(format!("`{v}` is not true or false")))?,
                    other => {
                        return Err(format!(
                            "unknown key `{other}` in [[topic]] `{pattern}`; valid: pattern, history_messages, history_bytes, history_age, retain, slow_consumer, client_retain, presence"
                        ));
                    }
                }
            }
            if policy.history_messages > 0 && policy.history_bytes == 0 {
                policy.history_bytes = DEFAULT_HISTORY_BYTES;
            }
            Ok(policy)
        })
        .collect()
}

/// Why the configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {source}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: Box<toml::de::Error>,
    },
    /// A key the broker does not know.
    #[error("unknown key `{key}` in config file {path}; valid keys: {valid}")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The unknown key.
        key: String,
        /// Every valid key.
        valid: String,
    },
    /// A flag or environment value that does not parse.
    #[error("invalid value for `{key}`: {message}")]
    InvalidSetting {
        /// The setting's file key.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// Settings that contradict each other.
    #[error("invalid configuration: {0}")]
    Inconsistent(String),
    /// A value that does not parse.
    #[error("invalid value for `{key}` in config file {path}: {message}")]
    InvalidValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// Room left for a delivery's envelope (WebSocket header, topic, epoch, seq,
/// time) on top of the largest payload when sizing queues.
pub const ENVELOPE_ALLOWANCE: usize = 1024;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Parses a byte size: a whole number with an optional unit `B`, `KiB`,
/// `MiB`, `GiB` (powers of 1024) or `KB`, `MB`, `GB` (powers of 1000).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write e.g. 65536, 64KiB or 8MiB"))?;
    let factor: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}`; use B, KiB, MiB, GiB, KB, MB or GB"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("`{s}` is too large"))
}

/// Parses a duration such as `500ms`, `10s` or `5m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. 500ms, 10s or 5m"))
}

/// Parses a positive count.
pub fn parse_count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

/// Parses a positive count that fits in 32 bits.
fn parse_u32(s: &str) -> Result<u32, String> {
    let n = parse_count(s)?;
    u32::try_from(n).map_err(|_| format!("`{s}` is too large"))
}

fn parse_backlog(s: &str) -> Result<u32, String> {
    let n = parse_count(s)?;
    u32::try_from(n).map_err(|_| format!("`{s}` is too large"))
}

/// Parses a duration that must not be zero.
fn parse_nonzero_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be longer than 0s".to_owned()),
        d => Ok(d),
    }
}

/// Parses the presence lease TTL: a duration of at least 3 s, so that a
/// refresh every third of it has a second of slack.
fn parse_lease_ttl(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d < Duration::from_secs(3) => Err("must be at least 3s".to_owned()),
        d => Ok(d),
    }
}

/// Parses a size that must not be zero.
fn parse_nonzero_size(s: &str) -> Result<usize, String> {
    match parse_size(s)? {
        0 => Err("must be at least 1 byte".to_owned()),
        n => Ok(n),
    }
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{s}` is not an address; write e.g. 0.0.0.0:8080 or 127.0.0.1:0"))
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("`{other}` is not a log format; use text or json")),
    }
}

/// Parses a comma-separated list of web origins (`scheme://host[:port]`),
/// kept in lower case; empty means any origin.
fn parse_origins(s: &str) -> Result<Vec<String>, String> {
    list_items(s)
        .map(|o| {
            let host = o
                .split_once("://")
                .map(|(_, host)| host)
                .filter(|host| !host.is_empty() && !host.contains('/'));
            match host {
                Some(_) => Ok(o.to_ascii_lowercase()),
                None => Err(format!(
                    "`{o}` is not an origin; write scheme://host[:port], e.g. https://app.example.com"
                )),
            }
        })
        .collect()
}

fn parse_string(s: &str) -> Result<String, String> {
    Ok(s.to_owned())
}

/// Parses an optional address; empty means none.
fn parse_optional_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    match s.trim() {
        "" => Ok(None),
        addr => parse_addr(addr).map(Some),
    }
}

/// Parses the optional `--cluster` URL; empty means none (single node).
fn parse_cluster(s: &str) -> Result<Option<String>, String> {
    match s.trim() {
        "" => Ok(None),
        url => crate::cluster::url::parse(url)
            .map(|_| Some(url.to_owned()))
            .map_err(|e| e.to_string()),
    }
}

/// Parses an optional file path; empty means none.
fn parse_optional_path(s: &str) -> Result<Option<PathBuf>, String> {
    Ok(Some(s.trim()).filter(|s| !s.is_empty()).map(PathBuf::from))
}

/// The items of a comma-separated list, trimmed, empty ones skipped: `""`
/// is the empty list.
fn list_items(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|item| !item.is_empty())
}

/// Parses a comma-separated list of file paths.
fn parse_paths(s: &str) -> Result<Vec<PathBuf>, String> {
    Ok(list_items(s).map(PathBuf::from).collect())
}

/// Parses a comma-separated list of strings.
fn parse_strings(s: &str) -> Result<Vec<String>, String> {
    Ok(list_items(s).map(str::to_owned).collect())
}

/// Parses a comma-separated list of topic patterns.
fn parse_patterns(s: &str) -> Result<Vec<Pattern>, String> {
    list_items(s)
        .map(|p| Pattern::new(p).map_err(|e| format!("pattern `{p}`: {e}")))
        .collect()
}

/// Parses `true` or `false`.
fn parse_on_off(s: &str) -> Result<bool, String> {
    match s.trim() {
        "on" => Ok(true),
        "off" => Ok(false),
        other => parse_bool(other).map_err(|_| format!("`{other}` is not on or off")),
    }
}

fn parse_compression_level(s: &str) -> Result<u32, String> {
    match s.trim().parse() {
        Ok(level @ 0..=9) => Ok(level),
        _ => Err(format!("`{s}` is not a compression level from 0 to 9")),
    }
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("`{other}` is not true or false")),
    }
}

/// Parses the claim holding the grants: a top-level claim name, or a JSON
/// Pointer (RFC 6901) starting with `/`.
fn parse_claim_path(s: &str) -> Result<String, String> {
    match s.trim() {
        "" => Err(
            "name a claim, e.g. tw, or a JSON Pointer such as /https:~1~1example.com/tw".to_owned(),
        ),
        path => Ok(path.to_owned()),
    }
}

/// One setting of the broker, as a flag, an environment variable and a file
/// key. The command line builds its `tickwire serve` flags from
/// [`SETTINGS`], so flags, environment and file can never disagree.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// The file key, e.g. `max_message_size`; the flag is the same with `-`
    /// for `_` ([`Setting::flag`]).
    pub key: &'static str,
    /// The environment variable, e.g. `TICKWIRE_MAX_MESSAGE_SIZE`.
    pub env: &'static str,
    /// The default, written as a user would write it.
    pub default: &'static str,
    /// One-paragraph help text.
    pub help: &'static str,
    check: fn(&str) -> Result<(), String>,
    switch: bool,
}

impl Setting {
    /// The long flag without its dashes, e.g. `max-message-size`.
    pub fn flag(&self) -> String {
        self.key.replace('_', "-")
    }

    /// Whether `value` parses for this setting; the error says what to write.
    pub fn check(&self, value: &str) -> Result<(), String> {
        (self.check)(value)
    }

    /// Whether this is an on/off setting (`true` or `false`): its flag may
    /// be given alone, meaning `true` (`--dashboard`).
    pub fn is_switch(&self) -> bool {
        self.switch
    }
}

macro_rules! broker_settings {
    ($(
        $field:ident: $ty:ty = $default:expr, $default_text:literal,
            env $env:literal, parse $parser:ident, $help:literal;
    )*) => {
        /// The resolved broker configuration.
        #[derive(Debug, Clone)]
        pub struct BrokerConfig {
            $( #[doc = $help] pub $field: $ty, )*
            /// Per-topic-pattern delivery policies (`[[topic]]` tables in the
            /// file), first match wins.
            pub topic_policies: Vec<TopicPolicy>,
        }

        impl Default for BrokerConfig {
            fn default() -> Self {
                BrokerConfig { $( $field: $default, )* topic_policies: Vec::new() }
            }
        }

        /// Every setting that is a single value, in the order `--help` lists
        /// them.
        pub const SETTINGS: &[Setting] = &[$(
            Setting {
                key: stringify!($field),
                env: $env,
                default: $default_text,
                help: $help,
                check: |v| $parser(v).map(drop),
                switch: matches!(stringify!($parser).as_bytes(), b"parse_bool"),
            },
        )*];

        /// Every key accepted in the configuration file.
        pub const FILE_KEYS: &[&str] = &[$( stringify!($field), )* TOPIC_TABLE];

        impl BrokerConfig {
            /// Sets one setting from its text form; `Ok(false)` if `key` is
            /// not a setting.
            fn set(&mut self, key: &str, text: &str) -> Result<bool, String> {
                match key {
                    $( stringify!($field) => self.$field = $parser(text)?, )*
                    _ => return Ok(false),
                }
                Ok(true)
            }
        }
    };
}

broker_settings! {
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)), "127.0.0.1:8080",
        env "TICKWIRE_LISTEN", parse parse_addr,
        "Address and port to listen on (WebSocket, HTTP publish, and metrics and health unless --metrics-listen is set); 0.0.0.0:8080 accepts clients from other hosts.";
    listen_backlog: u32 = 4096, "4096",
        env "TICKWIRE_LISTEN_BACKLOG", parse parse_backlog,
        "Length of the queue of connections not yet accepted (capped by net.core.somaxconn); matters when many clients reconnect at once.";
    max_connections: usize = 100_000, "100000",
        env "TICKWIRE_MAX_CONNECTIONS", parse parse_count,
        "Most simultaneous TCP connections; more are answered with HTTP 503.";
    max_message_size: usize = 1 << 20, "1MiB",
        env "TICKWIRE_MAX_MESSAGE_SIZE", parse parse_nonzero_size,
        "Largest WebSocket message (after reassembly of fragments); larger ones close with 1009.";
    max_subscriptions: usize = 1024, "1024",
        env "TICKWIRE_MAX_SUBSCRIPTIONS", parse parse_count,
        "Most subscriptions one connection may hold.";
    max_topics: usize = 1_000_000, "1000000",
        env "TICKWIRE_MAX_TOPICS", parse parse_count,
        "Most topics the broker tracks at once; publishes to new topics beyond it are refused.";
    topic_idle_ttl: Duration = Duration::from_secs(300), "5m",
        env "TICKWIRE_TOPIC_IDLE_TTL", parse parse_nonzero_duration,
        "A topic with no exact subscriber, nothing kept (history, retained value) and no activity for this long is forgotten; it comes back with a new epoch and its sequence restarts.";
    outbound_queue_bytes: usize = 8 << 20, "8MiB",
        env "TICKWIRE_OUTBOUND_QUEUE_BYTES", parse parse_nonzero_size,
        "Byte budget of each connection's outbound queue; beyond it the topic's slow-consumer policy applies (default: close with 4001).";
    slow_consumer_timeout: Duration = Duration::from_secs(2), "2s",
        env "TICKWIRE_SLOW_CONSUMER_TIMEOUT", parse parse_nonzero_duration,
        "A connection whose outbound queue holds more than half its budget and whose socket took nothing for this long is a slow consumer: its topic's slow-consumer policy applies (default: close with 4001). A subscriber that keeps reading is never cut for the broker's own backlog: publishers are slowed down instead.";
    publish_backpressure_wait: Duration = Duration::from_secs(1), "1s",
        env "TICKWIRE_PUBLISH_BACKPRESSURE_WAIT", parse parse_duration,
        "Longest an HTTP publish waits for a topic's backed-up subscriber queues to drain before it is refused with 503 overloaded and Retry-After (nothing published); also the longest the cluster's delivery of one message waits for them. 0s: refuse at once.";
    write_batch_bytes: usize = 64 << 10, "64KiB",
        env "TICKWIRE_WRITE_BATCH_BYTES", parse parse_nonzero_size,
        "Most bytes gathered into one socket write.";
    write_coalesce: Duration = Duration::from_millis(10), "10ms",
        env "TICKWIRE_WRITE_COALESCE", parse parse_duration,
        "When the broker falls behind (a batch waited 2ms or more), a writer pauses up to this long after a write that did not fill a batch, so deliveries go out in fewer, larger writes; replies end the pause; 0s turns it off.";
    compression: bool = false, "off",
        env "TICKWIRE_COMPRESSION", parse parse_on_off,
        "permessage-deflate (RFC 7692) on /ws and the echo listener: on accepts a client's offer; each published message is then compressed once, when a subscriber that negotiated it needs it, and the same compressed frame goes to every such subscriber. off: the offer is declined. on or off.";
    compression_min_size: usize = 256, "256B",
        env "TICKWIRE_COMPRESSION_MIN_SIZE", parse parse_size,
        "Delivery frames smaller than this go out uncompressed even to subscribers that negotiated permessage-deflate (as do frames compression does not shrink).";
    compression_level: u32 = 1, "1",
        env "TICKWIRE_COMPRESSION_LEVEL", parse parse_compression_level,
        "DEFLATE level of compressed deliveries, 0 (stored) to 9 (smallest, slowest); 1 compresses typical JSON almost as well as 6 at a fraction of the CPU (docs/configuration.md).";
    handshake_timeout: Duration = Duration::from_secs(10), "10s",
        env "TICKWIRE_HANDSHAKE_TIMEOUT", parse parse_nonzero_duration,
        "Time allowed to send a complete HTTP request (and so to finish the WebSocket handshake).";
    max_http_body: usize = 1 << 20, "1MiB",
        env "TICKWIRE_MAX_HTTP_BODY", parse parse_nonzero_size,
        "Largest HTTP request body (publish, batch publish, disconnect); larger ones get 413.";
    keepalive_interval: Duration = Duration::from_secs(20), "20s",
        env "TICKWIRE_KEEPALIVE_INTERVAL", parse parse_nonzero_duration,
        "Ping a WebSocket connection after this long without receiving anything.";
    keepalive_timeout: Duration = Duration::from_secs(10), "10s",
        env "TICKWIRE_KEEPALIVE_TIMEOUT", parse parse_nonzero_duration,
        "Close a connection (4002) that stays silent this long after the ping.";
    close_timeout: Duration = Duration::from_secs(5), "5s",
        env "TICKWIRE_CLOSE_TIMEOUT", parse parse_duration,
        "Time a closing connection gets to flush its close frame and answer it before the socket is dropped.";
    shutdown_delay: Duration = Duration::ZERO, "0s",
        env "TICKWIRE_SHUTDOWN_DELAY", parse parse_duration,
        "On SIGTERM/SIGINT, keep serving this long with /readyz failing before closing connections (lets load balancers drain).";
    shutdown_grace: Duration = Duration::from_secs(10), "10s",
        env "TICKWIRE_SHUTDOWN_GRACE", parse parse_duration,
        "On SIGTERM/SIGINT, time allowed for connections to flush and close before the process exits.";
    log_level: String = "info".to_owned(), "info",
        env "TICKWIRE_LOG_LEVEL", parse parse_string,
        "Log filter, e.g. info, debug or tickwire_broker=debug (RUST_LOG syntax).";
    log_format: LogFormat = LogFormat::Text, "text",
        env "TICKWIRE_LOG_FORMAT", parse parse_log_format,
        "Log format: text or json.";
    http_body_timeout: Duration = Duration::from_secs(10), "10s",
        env "TICKWIRE_HTTP_BODY_TIMEOUT", parse parse_nonzero_duration,
        "Time allowed to receive a whole HTTP request body (publish, batch publish, disconnect) once the request head is in; a slower body gets 408 and the connection is closed.";
    message_timeout: Duration = Duration::from_secs(10), "10s",
        env "TICKWIRE_MESSAGE_TIMEOUT", parse parse_nonzero_duration,
        "Time allowed to complete a WebSocket message (all its fragments) once its first byte has arrived; a slower one closes the connection with 4006.";
    max_retained_bytes: usize = 256 << 20, "256MiB",
        env "TICKWIRE_MAX_RETAINED_BYTES", parse parse_nonzero_size,
        "Most bytes of messages kept for all topics together (retained values and history); beyond it a client's retain is refused with `storage_full` and policy-kept messages evict their topic's oldest.";
    client_retain_patterns: Vec<Pattern> = Vec::new(), "",
        env "TICKWIRE_CLIENT_RETAIN_PATTERNS", parse parse_patterns,
        "Comma-separated topic patterns on which clients may ask for retain (`>`: all); empty: none, unless a `[[topic]]` policy sets `client_retain = true`.";
    publish_rate: u32 = 100_000, "100000",
        env "TICKWIRE_PUBLISH_RATE", parse parse_u32,
        "Publishes per second one connection (WebSocket or HTTP) may sustain; over it (and the burst) a publish is refused with rate_limited (HTTP 429).";
    publish_burst: u32 = 200_000, "200000",
        env "TICKWIRE_PUBLISH_BURST", parse parse_u32,
        "Publishes one connection may send at once above publish_rate.";
    publish_bytes_rate: usize = 64 << 20, "64MiB",
        env "TICKWIRE_PUBLISH_BYTES_RATE", parse parse_nonzero_size,
        "Payload bytes per second one connection may sustain in publishes; over it (and the burst) a publish is refused with rate_limited.";
    publish_bytes_burst: usize = 64 << 20, "64MiB",
        env "TICKWIRE_PUBLISH_BYTES_BURST", parse parse_nonzero_size,
        "Payload bytes one connection may publish at once above publish_bytes_rate; at least max_message_size and max_http_body.";
    publish_flood_refusals: u32 = 1000, "1000",
        env "TICKWIRE_PUBLISH_FLOOD_REFUSALS", parse parse_u32,
        "Publishes refused with rate_limited in a row, with none accepted in between, after which the connection is closed with 4005.";
    max_connections_per_ip: usize = 1000, "1000",
        env "TICKWIRE_MAX_CONNECTIONS_PER_IP", parse parse_count,
        "Most simultaneous TCP connections from one source address; more are answered with HTTP 429. Behind a proxy every client has the proxy's address: raise it.";
    connection_rate_per_ip: u32 = 100, "100",
        env "TICKWIRE_CONNECTION_RATE_PER_IP", parse parse_u32,
        "New TCP connections per second one source address may sustain; faster ones (beyond the burst) are answered with HTTP 429.";
    connection_burst_per_ip: u32 = 1000, "1000",
        env "TICKWIRE_CONNECTION_BURST_PER_IP", parse parse_u32,
        "New TCP connections one source address may open at once above connection_rate_per_ip.";
    allowed_origins: Vec<String> = Vec::new(), "",
        env "TICKWIRE_ALLOWED_ORIGINS", parse parse_origins,
        "Comma-separated web origins (e.g. `https://app.example.com`) whose pages may open WebSocket connections; an upgrade with another Origin header gets 403; requests without Origin (non-browser clients) are allowed; empty: any origin.";
    tls_cert_file: Option<PathBuf> = None, "",
        env "TICKWIRE_TLS_CERT_FILE", parse parse_optional_path,
        "PEM certificate chain (leaf first); with --tls-key-file, the port speaks TLS (wss://, https://). Reloaded on SIGHUP.";
    tls_key_file: Option<PathBuf> = None, "",
        env "TICKWIRE_TLS_KEY_FILE", parse parse_optional_path,
        "PEM private key (PKCS#8, RSA or EC) of --tls-cert-file. Reloaded on SIGHUP.";
    tls_client_ca_file: Option<PathBuf> = None, "",
        env "TICKWIRE_TLS_CLIENT_CA_FILE", parse parse_optional_path,
        "PEM CA bundle; when set, every client must present a TLS certificate signed by one of these CAs. Reloaded on SIGHUP.";
    tls_client_grants_file: Option<PathBuf> = None, "",
        env "TICKWIRE_TLS_CLIENT_GRANTS_FILE", parse parse_optional_path,
        "TOML file of `[[client]]` entries (`name`, `sub`, `pub`) mapping a verified client certificate's CN or SAN name to grants; a client presenting such a certificate and no token gets exactly those grants. Needs --tls-client-ca-file; turns authentication on. Reloaded on SIGHUP.";
    metrics_listen: Option<SocketAddr> = None, "",
        env "TICKWIRE_METRICS_LISTEN", parse parse_optional_addr,
        "Serve /metrics, /healthz and /readyz on this address (plain HTTP) instead of the main port, which then serves only clients (/ws, /v1/publish).";
    echo_listen: Option<SocketAddr> = None, "",
        env "TICKWIRE_ECHO_LISTEN", parse parse_optional_addr,
        "Conformance-testing aid: serve a WebSocket echo service on this address (plain ws://, any path; every message is sent back as it came, text or binary) on the broker's own WebSocket layer and limits. No authentication: never expose it. Off by default.";
    jwt_hmac_secret_file: Vec<PathBuf> = Vec::new(), "",
        env "TICKWIRE_JWT_HMAC_SECRET_FILE", parse parse_paths,
        "Files holding HMAC secrets (the whole file, trailing newline removed) for HS256/384/512 tokens; comma-separated for several. Any key configured turns authentication on.";
    jwt_public_key_file: Vec<PathBuf> = Vec::new(), "",
        env "TICKWIRE_JWT_PUBLIC_KEY_FILE", parse parse_paths,
        "PEM public key files (RSA for RS*/PS*, EC P-256/P-384 for ES256/ES384, Ed25519 for EdDSA); comma-separated for several.";
    jwks_file: Vec<PathBuf> = Vec::new(), "",
        env "TICKWIRE_JWKS_FILE", parse parse_paths,
        "JWK Set files (JSON); a token names its key with the `kid` header; comma-separated for several.";
    jwt_audience: Vec<String> = Vec::new(), "",
        env "TICKWIRE_JWT_AUDIENCE", parse parse_strings,
        "When set, a token's `aud` must contain one of these (comma-separated); when empty, `aud` is not checked.";
    jwt_issuer: Vec<String> = Vec::new(), "",
        env "TICKWIRE_JWT_ISSUER", parse parse_strings,
        "When set, a token's `iss` must be one of these (comma-separated); when empty, `iss` is not checked.";
    jwt_leeway: Duration = Duration::from_secs(30), "30s",
        env "TICKWIRE_JWT_LEEWAY", parse parse_duration,
        "Clock skew allowed when checking a token's `exp`, `nbf` and `iat`.";
    jwt_grants_claim: String = "tw".to_owned(), "tw",
        env "TICKWIRE_JWT_GRANTS_CLAIM", parse parse_claim_path,
        "The claim holding a token's grants (`{\"sub\": [patterns], \"pub\": [patterns]}`): a top-level claim name, or a JSON Pointer starting with `/`.";
    allow_anonymous: Vec<Pattern> = Vec::new(), "",
        env "TICKWIRE_ALLOW_ANONYMOUS", parse parse_patterns,
        "With authentication on: patterns a client without a token may both subscribe to and publish on (comma-separated); --allow-anonymous-sub and --allow-anonymous-pub add one direction only. Ignored when authentication is off.";
    allow_anonymous_sub: Vec<Pattern> = Vec::new(), "",
        env "TICKWIRE_ALLOW_ANONYMOUS_SUB", parse parse_patterns,
        "With authentication on: patterns a client without a token may subscribe to (comma-separated). Ignored when authentication is off.";
    allow_anonymous_pub: Vec<Pattern> = Vec::new(), "",
        env "TICKWIRE_ALLOW_ANONYMOUS_PUB", parse parse_patterns,
        "With authentication on: patterns a client without a token may publish to (comma-separated). With no anonymous setting, tokenless clients are refused (401). Ignored when authentication is off.";
    api_key_file: Vec<PathBuf> = Vec::new(), "",
        env "TICKWIRE_API_KEY_FILE", parse parse_paths,
        "Files of API keys for HTTP publish (comma-separated): one key per line as `sha256-hex pattern[,pattern] [admin]` (the SHA-256 of the key, then the topics it may publish on, `-` for none; a last field `admin` lets the key read /v1/stats and /v1/topics). Turns authentication on.";
    cluster: Option<String> = None, "",
        env "TICKWIRE_CLUSTER", parse parse_cluster,
        "Run as one node of a cluster through Redis at this URL: `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`, `rediss://…` (TLS), or `redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]…]/MASTER[/DB]` (the master Redis Sentinel names; `rediss+sentinel://` with TLS). Publishes get their sequence number from Redis and reach subscribers on every node; a node subscribes in Redis only to what its clients subscribe to. While Redis is unreachable publishes are refused and /readyz fails. Empty: a single node (see docs/cluster.md).";
    cluster_ca_file: Option<PathBuf> = None, "",
        env "TICKWIRE_CLUSTER_CA_FILE", parse parse_optional_path,
        "PEM CA bundle Redis' TLS certificate must chain to (rediss:// and rediss+sentinel:// URLs); empty: the system's trusted roots. Read at start.";
    cluster_cert_file: Option<PathBuf> = None, "",
        env "TICKWIRE_CLUSTER_CERT_FILE", parse parse_optional_path,
        "PEM certificate chain this node presents to Redis over TLS (for Redis' tls-auth-clients); with --cluster-key-file. Read at start.";
    cluster_key_file: Option<PathBuf> = None, "",
        env "TICKWIRE_CLUSTER_KEY_FILE", parse parse_optional_path,
        "PEM private key (PKCS#8, RSA or EC) of --cluster-cert-file. Read at start.";
    auth_message: bool = false, "false",
        env "TICKWIRE_AUTH_MESSAGE", parse parse_bool,
        "With authentication on: accept WebSocket upgrades without a token when the client authenticates with an AUTH message as its first request, within the handshake timeout (else close 4004). Lets browsers keep tokens out of URLs.";
    dashboard: bool = false, "false",
        env "TICKWIRE_DASHBOARD", parse parse_bool,
        "Serve the live dashboard page at /dashboard on the main port (assets embedded in the binary; the page itself needs no credentials, the data it reads does: see docs/dashboard.md) and sample the busiest topics for /v1/stats once a second.";
    max_poll_sessions: usize = 10_000, "10000",
        env "TICKWIRE_MAX_POLL_SESSIONS", parse parse_count,
        "Most long-poll sessions (GET /v1/poll) alive at once on this node; a poll that would create another is answered 503.";
    poll_session_ttl: Duration = Duration::from_secs(30), "30s",
        env "TICKWIRE_POLL_SESSION_TTL", parse parse_nonzero_duration,
        "A long-poll session is forgotten this long after its last request ended; the client then resumes with its cursor.";
    poll_batch: usize = 1000, "1000",
        env "TICKWIRE_POLL_BATCH", parse parse_count,
        "Most messages in one long-poll answer; the rest stay buffered for the next poll.";
    max_presence_per_topic: usize = 10_000, "10000",
        env "TICKWIRE_MAX_PRESENCE_PER_TOPIC", parse parse_count,
        "Most presence entries (client instances) one topic with presence may have; a SUBSCRIBE that would create another is refused with presence_full.";
    max_presence_entries: usize = 1_000_000, "1000000",
        env "TICKWIRE_MAX_PRESENCE_ENTRIES", parse parse_count,
        "Most presence entries this node holds, all topics together; a SUBSCRIBE that would create another is refused with presence_full.";
    max_presence_info_bytes: usize = 1024, "1KiB",
        env "TICKWIRE_MAX_PRESENCE_INFO_BYTES", parse parse_nonzero_size,
        "Largest client info (the token's `info` grant, as MessagePack) a presence entry may carry; a token with more is refused (HTTP 401).";
    presence_grace: Duration = Duration::from_secs(5), "5s",
        env "TICKWIRE_PRESENCE_GRACE", parse parse_duration,
        "How long a connection that ended without UNSUBSCRIBE, a close 1000 or a server disconnect stays present; a reconnect with the same client id within it makes no LEAVE/JOIN. 0s: leave at once.";
    presence_lease_ttl: Duration = Duration::from_secs(15), "15s",
        env "TICKWIRE_PRESENCE_LEASE_TTL", parse parse_lease_ttl,
        "Cluster mode: a node's presence lease in Redis; when a node dies without leaving, its entries leave within this time (at least 3s; refreshed every third of it).";
}

impl BrokerConfig {
    /// Resolves `overrides` (flags and environment, as `(key, text)`) over
    /// the optional TOML `file` over the defaults, then validates.
    pub fn load(file: Option<&Path>, overrides: &[(&str, String)]) -> Result<Self, ConfigError> {
        let text = match file {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                        path: path.to_owned(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        Self::resolve(file.zip(text.as_deref()), overrides)
    }

    /// Parses `text`, the content of the configuration file `path` (named
    /// in errors only, never read), over the defaults and validates the
    /// result: [`BrokerConfig::load`] without I/O and without flags. The
    /// fuzz target `config_file` drives it with arbitrary text.
    pub fn from_file_text(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::resolve(Some((path, text)), &[])
    }

    /// The file's text (if any), then `overrides`, over the defaults; then
    /// validation.
    fn resolve(
        file: Option<(&Path, &str)>,
        overrides: &[(&str, String)],
    ) -> Result<Self, ConfigError> {
        let mut config = BrokerConfig::default();
        if let Some((path, text)) = file {
            let table: BTreeMap<String, toml::Value> =
                toml::from_str(text).map_err(|source| ConfigError::Toml {
                    path: path.to_owned(),
                    source: Box::new(source),
                })?;
            config.apply_file(path, table)?;
        }
        for (key, text) in overrides {
            let invalid = |message: String| ConfigError::InvalidSetting {
                key: (*key).to_owned(),
                message,
            };
            if !config.set(key, text).map_err(invalid)? {
                return Err(invalid("not a setting".to_owned()));
            }
        }
        config.validate()?;
        Ok(config)
    }

    fn apply_file(
        &mut self,
        path: &Path,
        table: BTreeMap<String, toml::Value>,
    ) -> Result<(), ConfigError> {
        for (key, value) in table {
            let invalid = |message: String| ConfigError::InvalidValue {
                path: path.to_owned(),
                key: key.clone(),
                message,
            };
            if key == TOPIC_TABLE {
                self.topic_policies = parse_topic_policies(&value).map_err(invalid)?;
                continue;
            }
            let text = match &value {
                toml::Value::String(s) => s.clone(),
                // A list setting may be a TOML array of strings.
                toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => items
                    .iter()
                    .filter_map(toml::Value::as_str)
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            if !self.set(&key, &text).map_err(invalid)? {
                return Err(ConfigError::UnknownKey {
                    path: path.to_owned(),
                    key,
                    valid: FILE_KEYS.join(", "),
                });
            }
        }
        Ok(())
    }

    /// Refuses combinations that would make the broker misbehave.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let largest_publish = self.max_message_size.max(self.max_http_body);
        if self.publish_bytes_burst < largest_publish {
            return Err(ConfigError::Inconsistent(format!(
                "publish_bytes_burst ({}) must be at least max_message_size and max_http_body ({largest_publish}), or the largest messages could never be published; \
                 raise --publish-bytes-burst or lower --max-message-size / --max-http-body",
                self.publish_bytes_burst
            )));
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError::Inconsistent(
                    "--tls-cert-file and --tls-key-file go together: give both to serve TLS, or neither"
                        .to_owned(),
                ));
            }
            (None, None) if self.tls_client_ca_file.is_some() => {
                return Err(ConfigError::Inconsistent(
                    "--tls-client-ca-file needs TLS: also give --tls-cert-file and --tls-key-file"
                        .to_owned(),
                ));
            }
            _ => {}
        }
        if self.tls_client_grants_file.is_some() && self.tls_client_ca_file.is_none() {
            return Err(ConfigError::Inconsistent(
                "--tls-client-grants-file needs verified client certificates: also give --tls-client-ca-file"
                    .to_owned(),
            ));
        }
        self.validate_cluster_tls()?;
        let fixed = |addr: &SocketAddr| addr.port() != 0;
        if self.metrics_listen == Some(self.listen) && fixed(&self.listen) {
            return Err(ConfigError::Inconsistent(format!(
                "--metrics-listen {} is the address of --listen; choose another port",
                self.listen
            )));
        }
        if let Some(echo) = self.echo_listen.filter(fixed) {
            if echo == self.listen || Some(echo) == self.metrics_listen {
                return Err(ConfigError::Inconsistent(format!(
                    "--echo-listen {echo} is the address of another listener; choose another port"
                )));
            }
        }
        // A delivery frame is the message plus its envelope (topic, seq,
        // time, headers); leave room for the largest one.
        // Checked arithmetic: sizes near usize::MAX are refused here, not
        // wrapped around.
        let largest_frame = largest_publish.saturating_add(ENVELOPE_ALLOWANCE);
        let needed = largest_publish
            .checked_add(ENVELOPE_ALLOWANCE)
            .and_then(|frame| frame.checked_mul(2));
        if needed.is_none_or(|needed| self.outbound_queue_bytes < needed) {
            return Err(ConfigError::Inconsistent(format!(
                "outbound_queue_bytes ({}) must be at least twice the largest message plus envelope ({largest_frame}); \
                 raise --outbound-queue-bytes or lower --max-message-size / --max-http-body",
                self.outbound_queue_bytes
            )));
        }
        Ok(())
    }

    /// The cluster's TLS files go together (certificate and key) and need
    /// a TLS `--cluster` URL.
    fn validate_cluster_tls(&self) -> Result<(), ConfigError> {
        let inconsistent = |message: &str| Err(ConfigError::Inconsistent(message.to_owned()));
        if self.cluster_cert_file.is_some() != self.cluster_key_file.is_some() {
            return inconsistent(
                "--cluster-cert-file and --cluster-key-file go together: give both to present a certificate to Redis, or neither",
            );
        }
        let files = self.cluster_ca_file.is_some() || self.cluster_cert_file.is_some();
        let tls = self
            .cluster
            .as_deref()
            .and_then(|url| crate::cluster::url::parse(url).ok())
            .is_some_and(|url| url.tls());
        if files && !tls {
            return inconsistent(
                "--cluster-ca-file, --cluster-cert-file and --cluster-key-file need TLS to Redis: write --cluster rediss://HOST:PORT (or rediss+sentinel://…)",
            );
        }
        Ok(())
    }

    /// The TLS files of the cluster's Redis connections.
    pub fn cluster_tls_files(&self) -> ClusterTlsFiles {
        ClusterTlsFiles {
            ca: self.cluster_ca_file.clone(),
            cert: self.cluster_cert_file.clone(),
            key: self.cluster_key_file.clone(),
        }
    }

    /// Whether any token key, API key or client grants file is configured,
    /// which turns authentication on.
    pub fn auth_enabled(&self) -> bool {
        !(self.jwt_hmac_secret_file.is_empty()
            && self.jwt_public_key_file.is_empty()
            && self.jwks_file.is_empty()
            && self.api_key_file.is_empty()
            && self.tls_client_grants_file.is_none())
    }

    /// The policy for `topic`: the first `[[topic]]` whose pattern matches,
    /// else [`TopicPolicy::fallback`].
    pub fn policy_for(&self, topic: &str) -> Option<&TopicPolicy> {
        self.topic_policies
            .iter()
            .find(|p| p.pattern.matches(topic))
    }

    /// Whether a client may ask the broker to retain a message on `topic`:
    /// the topic's policy retains anyway, or its `client_retain` allows it,
    /// or (when the policy does not say) `client_retain_patterns` matches.
    /// The one place this is decided is [`crate::limits::may_retain`].
    pub fn client_retain_allowed(&self, topic: &str) -> bool {
        match self.policy_for(topic) {
            Some(policy) if policy.retain => true,
            Some(TopicPolicy {
                client_retain: Some(allowed),
                ..
            }) => *allowed,
            _ => self.client_retain_patterns.iter().any(|p| p.matches(topic)),
        }
    }

    /// Whether a browser page from `origin` (an `Origin` header) may open a
    /// WebSocket connection: any origin when `allowed_origins` is empty.
    pub fn origin_allowed(&self, origin: &[u8]) -> bool {
        self.allowed_origins.is_empty()
            || self
                .allowed_origins
                .iter()
                .any(|allowed| allowed.as_bytes().eq_ignore_ascii_case(origin.trim_ascii()))
    }

    /// The TLS files, when the port is to speak TLS.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert_file.clone()?,
            key: self.tls_key_file.clone()?,
            client_ca: self.tls_client_ca_file.clone(),
        })
    }

    /// How each WebSocket connection's outbound queue is bounded:
    /// `outbound_queue_bytes` and `slow_consumer_timeout`, holding
    /// publishers back while it is backed up (producer backpressure).
    pub fn queue_settings(&self) -> QueueSettings {
        QueueSettings {
            budget: self.outbound_queue_bytes,
            slow_consumer_timeout: self.slow_consumer_timeout,
            backpressure: true,
        }
    }

    /// A configuration for tests and embedding: listen on 127.0.0.1 with an
    /// OS-chosen port, everything else default.
    pub fn local_ephemeral() -> Self {
        BrokerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..BrokerConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("2KB"), Ok(2000));
        assert!(parse_size("8 furlongs").is_err());
        assert!(parse_size("-1").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_count("0").is_err());
        assert!(parse_nonzero_size("0").is_err());
        assert!(parse_nonzero_duration("0s").is_err());
    }

    #[test]
    fn every_setting_is_listed_once_and_its_default_text_parses() {
        let mut keys: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), SETTINGS.len());
        for setting in SETTINGS {
            assert_eq!(setting.check(setting.default), Ok(()), "{}", setting.key);
            assert_eq!(
                setting.env,
                format!("TICKWIRE_{}", setting.key.to_uppercase())
            );
        }
        let defaults: Vec<(&str, String)> = SETTINGS
            .iter()
            .map(|s| (s.key, s.default.to_owned()))
            .collect();
        let loaded = BrokerConfig::load(None, &defaults).unwrap();
        let default = BrokerConfig::default();
        assert_eq!(format!("{loaded:?}"), format!("{default:?}"));
    }

    #[test]
    fn side_listeners_may_not_share_a_fixed_address() {
        let load = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(&str, String)> =
                pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
            BrokerConfig::load(None, &pairs)
        };
        let err = load(&[
            ("listen", "127.0.0.1:8080"),
            ("echo_listen", "127.0.0.1:8080"),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("--echo-listen 127.0.0.1:8080"),
            "{err}"
        );
        let err = load(&[
            ("metrics_listen", "127.0.0.1:9090"),
            ("echo_listen", "127.0.0.1:9090"),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("another listener"), "{err}");
        // Port 0 picks a free port each time: no clash.
        let config = load(&[("listen", "127.0.0.1:0"), ("echo_listen", "127.0.0.1:0")]).unwrap();
        assert_eq!(
            config.echo_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 0)))
        );
        assert_eq!(BrokerConfig::default().echo_listen, None, "off by default");
    }

    #[test]
    fn overrides_are_checked_like_file_values() {
        let err = BrokerConfig::load(None, &[("max_topics", "lots".to_owned())]).unwrap_err();
        assert!(err.to_string().contains("`max_topics`"), "{err}");
        let err = BrokerConfig::load(None, &[("max_topicz", "1".to_owned())]).unwrap_err();
        assert!(err.to_string().contains("not a setting"), "{err}");
    }

    #[test]
    fn tls_files_come_in_pairs() {
        let load = |pairs: &[(&str, &str)]| {
            let overrides: Vec<(&str, String)> =
                pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
            BrokerConfig::load(None, &overrides)
        };
        let err = load(&[("tls_cert_file", "c.pem")]).unwrap_err().to_string();
        assert!(err.contains("give both"), "{err}");
        let err = load(&[("tls_key_file", "k.pem")]).unwrap_err().to_string();
        assert!(err.contains("give both"), "{err}");
        let err = load(&[("tls_client_ca_file", "ca.pem")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--tls-client-ca-file needs TLS"), "{err}");
        let err = load(&[
            ("tls_cert_file", "c.pem"),
            ("tls_key_file", "k.pem"),
            ("tls_client_grants_file", "g.toml"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("also give --tls-client-ca-file"), "{err}");
        let config = load(&[
            ("tls_cert_file", "c.pem"),
            ("tls_key_file", "k.pem"),
            ("tls_client_ca_file", "ca.pem"),
            ("tls_client_grants_file", "g.toml"),
        ])
        .unwrap();
        assert!(config.auth_enabled());
        let config = load(&[("tls_cert_file", "c.pem"), ("tls_key_file", "k.pem")]).unwrap();
        let files = config.tls_files().unwrap();
        assert_eq!((files.cert, files.key), ("c.pem".into(), "k.pem".into()));
        assert!(BrokerConfig::default().tls_files().is_none());
    }

    #[test]
    fn cluster_tls_files_need_a_tls_url() {
        let load = |pairs: &[(&str, &str)]| {
            let overrides: Vec<(&str, String)> =
                pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
            BrokerConfig::load(None, &overrides).map_err(|e| e.to_string())
        };
        let err = load(&[("cluster", "redis://h:1"), ("cluster_ca_file", "ca.pem")]).unwrap_err();
        assert!(err.contains("write --cluster rediss://"), "{err}");
        let err = load(&[("cluster_ca_file", "ca.pem")]).unwrap_err();
        assert!(err.contains("need TLS to Redis"), "{err}");
        let err = load(&[("cluster", "rediss://h:1"), ("cluster_cert_file", "c.pem")]).unwrap_err();
        assert!(err.contains("go together"), "{err}");
        let config = load(&[
            ("cluster", "rediss+sentinel://h:1/m"),
            ("cluster_ca_file", "ca.pem"),
            ("cluster_cert_file", "c.pem"),
            ("cluster_key_file", "k.pem"),
        ])
        .unwrap();
        assert_eq!(config.cluster_tls_files().ca, Some(PathBuf::from("ca.pem")));
        let err = load(&[("cluster", "redis+cluster://h:1")]).unwrap_err();
        assert!(err.contains("Redis Cluster is not supported"), "{err}");
    }

    #[test]
    fn lists_are_comma_separated() {
        let config = BrokerConfig::load(
            None,
            &[
                ("jwt_hmac_secret_file", "a, b,".to_owned()),
                ("allow_anonymous_sub", "public.>,news.*".to_owned()),
                ("jwt_audience", "tickwire".to_owned()),
            ],
        )
        .unwrap();
        assert_eq!(
            config.jwt_hmac_secret_file,
            [PathBuf::from("a"), PathBuf::from("b")]
        );
        assert_eq!(config.allow_anonymous_sub.len(), 2);
        assert_eq!(config.jwt_audience, ["tickwire"]);
        assert!(config.auth_enabled());
        assert!(!BrokerConfig::default().auth_enabled());
        let err =
            BrokerConfig::load(None, &[("allow_anonymous_pub", "a..b".to_owned())]).unwrap_err();
        assert!(err.to_string().contains("a..b"), "{err}");
    }

    #[test]
    fn queue_budget_must_hold_the_largest_message() {
        let mut config = BrokerConfig::default();
        assert!(config.validate().is_ok());
        config.outbound_queue_bytes = config.max_message_size;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("--outbound-queue-bytes"), "{err}");

        let mut config = BrokerConfig::default();
        config.max_http_body = config.publish_bytes_burst + 1;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("--publish-bytes-burst"), "{err}");
    }

    /// Found with the fuzz target `config_file` (its bound on
    /// `outbound_queue_bytes`): sizes near usize::MAX made the queue budget
    /// check overflow, a panic in debug builds and a wrapped, wrong verdict
    /// in release builds.
    #[test]
    fn compression_settings() {
        let parse = |text: &str| BrokerConfig::from_file_text(Path::new("c.toml"), text);
        let on =
            parse("compression = \"on\"\ncompression_level = 6\ncompression_min_size = \"1KiB\"\n")
                .unwrap();
        assert!(on.compression);
        assert_eq!((on.compression_level, on.compression_min_size), (6, 1024));
        assert!(parse("compression = true\n").unwrap().compression);
        assert!(!parse("compression = \"off\"\n").unwrap().compression);
        let defaults = parse("").unwrap();
        assert!(!defaults.compression);
        assert_eq!(
            (defaults.compression_level, defaults.compression_min_size),
            (1, 256)
        );
        for bad in ["compression = \"maybe\"\n", "compression_level = 10\n"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_near_the_maximum_are_refused_not_overflowed() {
        let max = usize::MAX;
        let text = format!(
            "max_message_size = \"{max}\"\npublish_bytes_burst = \"{max}\"\noutbound_queue_bytes = \"{max}\"\n"
        );
        let err = BrokerConfig::from_file_text(Path::new("big.toml"), &text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--outbound-queue-bytes"), "{err}");
    }

    #[test]
    fn flags_override_file_override_defaults() {
        let dir = std::env::temp_dir().join(format!("tickwire-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tickwire.toml");
        std::fs::write(
            &path,
            "max_message_size = \"64KiB\"\nmax_subscriptions = 7\nkeepalive_interval = \"3s\"\n",
        )
        .unwrap();
        let load = || BrokerConfig::load(Some(&path), &[("max_subscriptions", "9".to_owned())]);
        let config = load().unwrap();
        assert_eq!(config.max_message_size, 64 << 10);
        assert_eq!(config.max_subscriptions, 9);
        assert_eq!(config.keepalive_interval, Duration::from_secs(3));
        assert_eq!(config.max_topics, 1_000_000);

        std::fs::write(&path, "max_mesage_size = 1\n").unwrap();
        let err = load().unwrap_err().to_string();
        assert!(err.contains("unknown key `max_mesage_size`"), "{err}");
        assert!(err.contains("max_message_size"), "{err}");

        std::fs::write(
            &path,
            "[[topic]]\npattern = \"stocks.>\"\nhistory_messages = 1000\nhistory_age = \"60s\"\nslow_consumer = \"conflate\"\n\n[[topic]]\npattern = \"chat.>\"\nhistory_messages = 100\n",
        )
        .unwrap();
        let config = load().unwrap();
        let stocks = config.policy_for("stocks.AAPL").unwrap();
        assert_eq!(stocks.history_messages, 1000);
        assert_eq!(stocks.history_age, Some(Duration::from_secs(60)));
        assert_eq!(stocks.slow_consumer, SlowConsumerPolicy::Conflate);
        assert_eq!(
            config.policy_for("chat.room1").unwrap().history_bytes,
            DEFAULT_HISTORY_BYTES
        );
        assert!(config.policy_for("fx.EURUSD").is_none());

        std::fs::write(
            &path,
            "[[topic]]\npattern = \"a\"\nslow_consumer = \"panic\"\n",
        )
        .unwrap();
        let err = load().unwrap_err().to_string();
        assert!(err.contains("drop-oldest"), "{err}");

        std::fs::write(&path, "max_topics = \"lots\"\n").unwrap();
        let err = load().unwrap_err().to_string();
        assert!(err.contains("max_topics"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
