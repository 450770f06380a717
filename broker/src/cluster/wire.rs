//! What tickwire writes to Redis: key and channel names, the publish and
//! read scripts, and the header of a message on a topic's channel.
//!
//! Topic `T` has the hash `tickwire:{T}:pos` (fields `seq`, `epoch`, and,
//! while it has a retained value, `rs`/`rt`/`rp`: its seq, time and
//! payload), the stream `tickwire:{T}:hist` (its history: entry id `0-SEQ`,
//! fields `t`, the time, and `p`, the payload) and the channel
//! `tickwire:{T}:msg`. The braces are a Redis Cluster hash tag: a topic's
//! keys and channel hash to the same slot. A topic's characters (letters,
//! digits, `_ - : @ ~ .`) include none of Redis' glob specials
//! (`* ? [ ] \`) nor braces, so names need no escaping and the topic is
//! recovered from a key or channel name by cutting prefix and suffix.
//!
//! A message on a channel is a text header, a newline, then the payload
//! as published: `EPOCH SEQ TIME_US RETAIN\n PAYLOAD` (decimal numbers,
//! `RETAIN` is `0` or `1`).

use tickwire_protocol::message::Position;
use tickwire_protocol::topic::{Pattern, Topic};

const PREFIX: &str = "tickwire:{";
const KEY_SUFFIX: &str = "}:pos";
const HISTORY_SUFFIX: &str = "}:hist";
const CHANNEL_SUFFIX: &str = "}:msg";

/// Seconds a topic's position and history stay in Redis after its last
/// publish (or, for a topic never published, after a subscribe created
/// its epoch); a topic published again later starts a new epoch. A topic
/// with a retained value never expires.
pub const POSITION_TTL_SECS: u64 = 24 * 60 * 60;

/// The publish script. `KEYS`: the topic's position hash and history
/// stream; `ARGV`: the channel, an epoch to use if the topic has none, the
/// publish time (µs), whether to keep it as the retained value (`0`/`1`),
/// the payload, the keys' time to live (s), and how many history entries
/// the topic keeps (`0`: no history).
///
/// In one atomic step it takes the topic's next sequence number (setting
/// the epoch, and dropping any history left from an older epoch, if the
/// position is new), appends the message to the history stream (trimmed
/// to about the policy's count: `MAXLEN ~` trims whole stream nodes, much
/// cheaper than an exact trim, and a replay reads at most the count), keeps it
/// as the retained value if asked, publishes it with its header and
/// returns the sequence number. Numbers are formatted with `%d` (Lua
/// numbers are doubles: exact up to 2^53).
pub const PUBLISH_SCRIPT: &str = r#"
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2]) == 1 then
  redis.call('DEL', KEYS[2])
end
local seq = string.format('%d', redis.call('HINCRBY', KEYS[1], 'seq', 1))
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if ARGV[7] ~= '0' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '0-' .. seq, 't', ARGV[3], 'p', ARGV[5])
end
if ARGV[4] == '1' then
  redis.call('HSET', KEYS[1], 'rs', seq, 'rt', ARGV[3], 'rp', ARGV[5])
end
if redis.call('HEXISTS', KEYS[1], 'rs') == 1 then
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[6])
end
redis.call('PUBLISH', ARGV[1], epoch .. ' ' .. seq .. ' ' .. ARGV[3] .. ' ' .. ARGV[4] .. '\n' .. ARGV[5])
return tonumber(seq)
"#;

/// The read script: what a subscribe needs of one topic, in one atomic
/// step. `KEYS`: the position hash and history stream; `ARGV`: an epoch to
/// create the topic with if it has none (`0`: do not create it), the keys'
/// time to live (s), the seq after which to read history (`-1`: none),
/// the most entries to read, and whether to read the newest entry (`0`/`1`).
///
/// Returns `{{epoch, seq, rs, rt, rp}, history after the seq, newest
/// entry}` (history entries as `XREVRANGE` gives them, newest first: at
/// most the given count of the newest entries after the seq; `epoch` is
/// nil for a topic that does not exist and was not created).
pub const READ_SCRIPT: &str = r#"
if ARGV[1] ~= '0' and redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'seq', 0)
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local position = redis.call('HMGET', KEYS[1], 'epoch', 'seq', 'rs', 'rt', 'rp')
local history = {}
if ARGV[3] ~= '-1' then
  history = redis.call('XREVRANGE', KEYS[2], '+', '(0-' .. ARGV[3], 'COUNT', ARGV[4])
end
local newest = {}
if ARGV[5] == '1' then
  newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
end
return {position, history, newest}
"#;

/// The Redis hash holding topic `topic`'s sequence number and epoch.
pub fn position_key(topic: &str) -> String {
    format!("{PREFIX}{topic}{KEY_SUFFIX}")
}

/// The Redis stream holding topic `topic`'s history.
pub fn history_key(topic: &str) -> String {
    format!("{PREFIX}{topic}{HISTORY_SUFFIX}")
}

/// The glob matching the position keys of every topic `pattern` covers
/// (and more: see [`channel_glob`]).
pub fn position_key_glob(pattern: &Pattern) -> String {
    format!("{PREFIX}{}{KEY_SUFFIX}", glob_body(pattern))
}

/// The topic of position key `name`, if it is one.
pub fn topic_of_position_key(name: &str) -> Option<Topic<'_>> {
    let topic = name.strip_prefix(PREFIX)?.strip_suffix(KEY_SUFFIX)?;
    Topic::new(topic).ok()
}

/// The Redis channel of topic `topic`.
pub fn channel(topic: &str) -> String {
    format!("{PREFIX}{topic}{CHANNEL_SUFFIX}")
}

/// The Redis glob pattern covering every channel whose topic matches
/// `pattern`: `*` and `>` both become `*`, which matches any characters,
/// dots included, so it covers more than the pattern; the registry
/// filters exactly.
pub fn channel_glob(pattern: &Pattern) -> String {
    channel(&glob_body(pattern))
}

/// `pattern` with `*` and `>` both as Redis' `*`.
fn glob_body(pattern: &Pattern) -> String {
    let globbed: Vec<&str> = pattern
        .as_str()
        .split('.')
        .map(|token| if token == ">" { "*" } else { token })
        .collect();
    globbed.join(".")
}

/// The Redis name a subscription to `pattern` needs: the topic's channel
/// for an exact topic, a glob for a wildcard pattern.
pub fn subscription_name(pattern: &Pattern) -> Subscription {
    match pattern.as_topic() {
        Some(topic) => Subscription::Channel(channel(topic.as_str())),
        None => Subscription::Pattern(channel_glob(pattern)),
    }
}

/// A Redis subscription: `SUBSCRIBE` to a channel or `PSUBSCRIBE` to a
/// glob.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subscription {
    /// An exact topic's channel.
    Channel(String),
    /// A glob covering a wildcard pattern's channels.
    Pattern(String),
}

/// The topic of channel `name`, if it is a valid tickwire topic channel.
pub fn topic_of_channel(name: &str) -> Option<Topic<'_>> {
    let topic = name.strip_prefix(PREFIX)?.strip_suffix(CHANNEL_SUFFIX)?;
    Topic::new(topic).ok()
}

/// A message as it arrives on a topic's channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelMessage<'a> {
    /// Epoch and sequence number Redis gave it.
    pub at: Position,
    /// When it was published (µs since the Unix epoch, the publishing
    /// node's clock).
    pub time_us: u64,
    /// Whether the publisher asked for retain.
    pub retain: bool,
    /// The payload as published.
    pub payload: &'a [u8],
}

/// The longest header: four numbers of at most 20 digits, separators.
const MAX_HEADER: usize = 4 * 20 + 4;

/// Parses a channel message; `None` if it is not one written by
/// [`PUBLISH_SCRIPT`].
pub fn parse_message(bytes: &[u8]) -> Option<ChannelMessage<'_>> {
    let (mut fields, payload) = split_header(bytes, MAX_HEADER)?;
    let mut number = || fields.next()?.parse::<u64>().ok();
    let epoch = number()?;
    let seq = number()?;
    let time_us = number()?;
    let retain = match number()? {
        0 => false,
        1 => true,
        _ => return None,
    };
    if fields.next().is_some() {
        return None;
    }
    Some(ChannelMessage {
        at: Position { epoch, seq },
        time_us,
        retain,
        payload,
    })
}

/// The text header every tickwire channel message starts with (up to its
/// first newline, found within `max` bytes), split at spaces, and the bytes
/// after that newline; `None` without a newline there or if the header is
/// not UTF-8.
pub fn split_header(bytes: &[u8], max: usize) -> Option<(std::str::Split<'_, char>, &[u8])> {
    let end = bytes.iter().take(max).position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..end]).ok()?;
    Some((header.split(' '), &bytes[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(s: &str) -> Pattern {
        Pattern::new(s).unwrap()
    }

    #[test]
    fn names_share_the_hash_tag_and_channels_give_back_their_topic() {
        assert_eq!(position_key("a.b"), "tickwire:{a.b}:pos");
        assert_eq!(channel("a.b"), "tickwire:{a.b}:msg");
        assert_eq!(history_key("a.b"), "tickwire:{a.b}:hist");
        assert_eq!(position_key_glob(&pattern("a.>")), "tickwire:{a.*}:pos");
        assert_eq!(
            topic_of_position_key("tickwire:{a.b}:pos").map(|t| t.as_str().to_owned()),
            Some("a.b".to_owned())
        );
        assert_eq!(topic_of_position_key("tickwire:{a.b}:hist"), None);
        let name = channel("s_1.x-y:z@w~v");
        assert_eq!(
            topic_of_channel(&name).map(|t| t.as_str().to_owned()),
            Some("s_1.x-y:z@w~v".to_owned())
        );
        assert_eq!(topic_of_channel("tickwire:{a.*}:msg"), None);
        assert_eq!(topic_of_channel("other:{a}:msg"), None);
    }

    #[test]
    fn wildcards_become_globs_and_exact_topics_channels() {
        assert_eq!(
            subscription_name(&pattern("a.*.c")),
            Subscription::Pattern("tickwire:{a.*.c}:msg".to_owned())
        );
        assert_eq!(
            subscription_name(&pattern("a.>")),
            Subscription::Pattern("tickwire:{a.*}:msg".to_owned())
        );
        assert_eq!(
            subscription_name(&pattern("a.b")),
            Subscription::Channel("tickwire:{a.b}:msg".to_owned())
        );
    }

    #[test]
    fn a_channel_message_parses_and_anything_else_does_not() {
        let bytes = b"18446744073709551615 7 1700000000000000 1\n\x00payload\n";
        let message = parse_message(bytes).unwrap();
        assert_eq!(
            message.at,
            Position {
                epoch: u64::MAX,
                seq: 7
            }
        );
        assert_eq!(message.time_us, 1_700_000_000_000_000);
        assert!(message.retain);
        assert_eq!(message.payload, b"\x00payload\n");
        assert_eq!(parse_message(b"1 2 3 0\n").unwrap().payload, b"");
        for bad in [
            &b"1 2 3\npayload"[..],
            b"1 2 3 2\n",
            b"1 2 3 0 5\n",
            b"x 2 3 0\n",
            b"1 2 3 0",
            b"",
        ] {
            assert_eq!(parse_message(bad), None, "{bad:?}");
        }
    }
}
