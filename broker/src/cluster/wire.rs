//! What tickwire writes to Redis: key and channel names, the publish
//! script, and the header of a message on a topic's channel.
//!
//! Topic `T` has the hash `tickwire:{T}:pos` (fields `seq` and `epoch`) and
//! the channel `tickwire:{T}:msg`. The braces are a Redis Cluster hash tag:
//! a topic's key and channel hash to the same slot. A topic's characters
//! (letters, digits, `_ - : @ ~ .`) include none of Redis' glob specials
//! (`* ? [ ] \`) nor braces, so names need no escaping and the topic is
//! recovered from a channel name by cutting prefix and suffix.
//!
//! A message on a channel is a text header, a newline, then the payload
//! as published: `EPOCH SEQ TIME_US RETAIN\n PAYLOAD` (decimal numbers,
//! `RETAIN` is `0` or `1`).

use tickwire_protocol::message::Position;
use tickwire_protocol::topic::{Pattern, Topic};

const PREFIX: &str = "tickwire:{";
const KEY_SUFFIX: &str = "}:pos";
const CHANNEL_SUFFIX: &str = "}:msg";

/// Seconds a topic's position (`seq`, `epoch`) stays in Redis after its
/// last publish; a topic published again later starts a new epoch.
pub const POSITION_TTL_SECS: u64 = 24 * 60 * 60;

/// The publish script. `KEYS[1]`: the topic's position hash; `ARGV`: the
/// channel, an epoch to use if the topic has none, the publish time (µs),
/// the retain flag, the payload, the position's time to live (s).
///
/// In one atomic step it takes the topic's next sequence number, sets the
/// epoch if the position is new, publishes the message with its header and
/// returns the sequence number. Numbers are formatted with `%d` (Lua
/// numbers are doubles: exact up to 2^53).
pub const PUBLISH_SCRIPT: &str = r#"
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[2])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
redis.call('EXPIRE', KEYS[1], ARGV[6])
local header = epoch .. ' ' .. string.format('%d', seq) .. ' ' .. ARGV[3] .. ' ' .. ARGV[4] .. '\n'
redis.call('PUBLISH', ARGV[1], header .. ARGV[5])
return seq
"#;

/// The Redis hash holding topic `topic`'s sequence number and epoch.
pub fn position_key(topic: &str) -> String {
    format!("{PREFIX}{topic}{KEY_SUFFIX}")
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
    let globbed: Vec<&str> = pattern
        .as_str()
        .split('.')
        .map(|token| if token == ">" { "*" } else { token })
        .collect();
    channel(&globbed.join("."))
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
    let end = bytes.iter().take(MAX_HEADER).position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..end]).ok()?;
    let mut fields = header.split(' ');
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
        payload: &bytes[end + 1..],
    })
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
