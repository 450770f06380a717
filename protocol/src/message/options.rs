//! Positions in a topic's stream and the options of `SUBSCRIBE` and
//! `PUBLISH`, with their MessagePack encodings.

use crate::msgpack::{self, MsgpackError, Reader};

use super::DecodeError;

/// A position in one topic's stream: the topic's epoch and a sequence number.
///
/// The epoch changes whenever the topic's history is lost (broker restart,
/// topic forgotten after idling); sequence numbers are only comparable within
/// one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The topic's epoch.
    pub epoch: u64,
    /// A sequence number within that epoch.
    pub seq: u64,
}

/// Most entries a `since` map may hold.
pub const MAX_SINCE_ENTRIES: usize = 65_536;

/// The `join_leave` subscribe option: which presence events the
/// subscription receives (`JOIN`/`LEAVE`, in order with the topic's
/// messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JoinLeave {
    /// `true` or `"clients"`: one event per entry (client instance).
    Clients,
    /// `"users"`: one event per user, when its first entry on the topic
    /// joins and when its last one leaves; anonymous entries make none.
    Users,
}

impl JoinLeave {
    /// The option's wire value (a string; `true` decodes as
    /// [`JoinLeave::Clients`] too).
    pub const fn as_str(self) -> &'static str {
        match self {
            JoinLeave::Clients => "clients",
            JoinLeave::Users => "users",
        }
    }
}

/// Options of a subscribe request (the map in `[1, id, pattern, options]`).
/// An unknown key, or a value of the wrong type, is refused with
/// [`ErrorCode::InvalidOption`](crate::ErrorCode::InvalidOption) rather than silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// `since`: resume after these positions (topic → position). `Some` with
    /// an empty list asks for every retained message of the matching topics.
    pub since: Option<Vec<(String, Position)>>,
    /// `last`: deliver the latest retained message of each matching topic
    /// before live messages.
    pub last: bool,
    /// `max_rate`: at most this many messages per second per topic, always
    /// the latest (conflated).
    pub max_rate: Option<u32>,
    /// `join_leave`: receive the topic's (or, for a pattern, every matching
    /// presence topic's) `JOIN`/`LEAVE` events; `None` is `false`.
    pub join_leave: Option<JoinLeave>,
}

impl SubscribeOptions {
    /// Options with `since` set.
    pub fn since(mut self, positions: Vec<(String, Position)>) -> Self {
        self.since = Some(positions);
        self
    }

    /// Options with `last` set.
    pub fn last(mut self, last: bool) -> Self {
        self.last = last;
        self
    }

    /// Options with `max_rate` set.
    pub fn max_rate(mut self, per_second: u32) -> Self {
        self.max_rate = Some(per_second);
        self
    }

    /// Options with `join_leave` set.
    pub fn join_leave(mut self, kind: JoinLeave) -> Self {
        self.join_leave = Some(kind);
        self
    }

    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        let len = usize::from(self.since.is_some())
            + usize::from(self.last)
            + usize::from(self.max_rate.is_some())
            + usize::from(self.join_leave.is_some());
        msgpack::write_map_len(out, len);
        if let Some(since) = &self.since {
            msgpack::write_str(out, "since");
            write_positions(
                out,
                since.iter().map(|(t, p)| (t.as_str(), *p)),
                since.len(),
            );
        }
        if self.last {
            msgpack::write_str(out, "last");
            msgpack::write_bool(out, true);
        }
        if let Some(rate) = self.max_rate {
            msgpack::write_str(out, "max_rate");
            msgpack::write_u64(out, u64::from(rate));
        }
        if let Some(kind) = self.join_leave {
            msgpack::write_str(out, "join_leave");
            msgpack::write_str(out, kind.as_str());
        }
    }
}

pub(crate) fn write_positions<'t>(
    out: &mut Vec<u8>,
    positions: impl Iterator<Item = (&'t str, Position)>,
    len: usize,
) {
    msgpack::write_map_len(out, len);
    for (topic, p) in positions {
        msgpack::write_str(out, topic);
        msgpack::write_array_len(out, 2);
        msgpack::write_u64(out, p.epoch);
        msgpack::write_u64(out, p.seq);
    }
}

fn read_position(r: &mut Reader<'_>) -> Result<Position, MsgpackError> {
    if r.read_array_len()? != 2 {
        return Err(MsgpackError::UnexpectedType {
            expected: "[epoch, seq]",
            marker: 0x92,
        });
    }
    Ok(Position {
        epoch: r.read_u64()?,
        seq: r.read_u64()?,
    })
}

pub(crate) fn read_positions(
    r: &mut Reader<'_>,
    limit: usize,
) -> Result<Vec<(String, Position)>, MsgpackError> {
    let len = r.read_map_len()?;
    if len > limit {
        return Err(MsgpackError::IntegerOutOfRange);
    }
    let mut positions = Vec::with_capacity(len.min(1024));
    for _ in 0..len {
        let topic = r.read_str()?.to_owned();
        positions.push((topic, read_position(r)?));
    }
    Ok(positions)
}

/// The known option keys already read in one options map, to refuse a key
/// given twice instead of silently keeping one of the values.
#[derive(Default)]
struct SeenKeys(u32);

impl SeenKeys {
    /// Records `key` if it is one of `known` (at most 32); an error if it
    /// was already seen. Unknown keys are left to the caller.
    fn first(&mut self, key: &str, known: &[&str]) -> Result<(), DecodeError> {
        let Some(index) = known.iter().position(|k| *k == key) else {
            return Ok(());
        };
        let bit = 1u32 << index;
        if self.0 & bit != 0 {
            return Err(DecodeError::DuplicateOption(key.to_owned()));
        }
        self.0 |= bit;
        Ok(())
    }
}

pub(crate) fn read_subscribe_options(r: &mut Reader<'_>) -> Result<SubscribeOptions, DecodeError> {
    let mut options = SubscribeOptions::default();
    if r.read_nil()? {
        return Ok(options);
    }
    let pairs = r.read_map_len()?;
    let mut seen = SeenKeys::default();
    for _ in 0..pairs {
        let key = r.read_str()?;
        let invalid = |_| DecodeError::InvalidOption(key.to_owned());
        seen.first(key, &["since", "last", "max_rate", "join_leave"])?;
        match key {
            "since" => options.since = Some(read_positions(r, MAX_SINCE_ENTRIES).map_err(invalid)?),
            "last" => options.last = r.read_bool().map_err(invalid)?,
            "max_rate" => {
                let rate = r.read_u64().map_err(invalid)?;
                let rate = u32::try_from(rate)
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or_else(|| DecodeError::InvalidOption(key.to_owned()))?;
                options.max_rate = Some(rate);
            }
            "join_leave" => options.join_leave = read_join_leave(r).map_err(invalid)?,
            _ => return Err(DecodeError::InvalidOption(key.to_owned())),
        }
    }
    Ok(options)
}

/// `join_leave`: `true`/`"clients"`, `"users"`, or `false` (none).
fn read_join_leave(r: &mut Reader<'_>) -> Result<Option<JoinLeave>, MsgpackError> {
    const BOOLEANS: [u8; 2] = [0xc2, 0xc3];
    if BOOLEANS.contains(&r.peek()?) {
        return Ok(r.read_bool()?.then_some(JoinLeave::Clients));
    }
    match r.read_str()? {
        "clients" => Ok(Some(JoinLeave::Clients)),
        "users" => Ok(Some(JoinLeave::Users)),
        _ => Err(MsgpackError::UnexpectedType {
            expected: "true, false, \"clients\" or \"users\"",
            marker: 0xa0,
        }),
    }
}

/// Options of a `PRESENCE` request: `counts` (bool). Returns whether only
/// counts are asked for.
pub(crate) fn read_presence_options(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    read_one_flag(r, "counts")
}

/// Options of a `PUBLISH`: `retain` (bool).
pub(crate) fn read_publish_options(r: &mut Reader<'_>) -> Result<bool, DecodeError> {
    read_one_flag(r, "retain")
}

/// An options map (or `nil`) whose only key is the boolean `flag`; returns
/// its value, false when absent.
fn read_one_flag(r: &mut Reader<'_>, flag: &str) -> Result<bool, DecodeError> {
    let mut value = false;
    if r.read_nil()? {
        return Ok(value);
    }
    let mut seen = SeenKeys::default();
    for _ in 0..r.read_map_len()? {
        let key = r.read_str()?;
        seen.first(key, &[flag])?;
        if key != flag {
            return Err(DecodeError::InvalidOption(key.to_owned()));
        }
        value = r
            .read_bool()
            .map_err(|_| DecodeError::InvalidOption(key.to_owned()))?;
    }
    Ok(value)
}
