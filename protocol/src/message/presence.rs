//! The presence parts of broker messages: the `PRESENCE_INFO` answer
//! ([`PresenceInfo`]) and the entry map ([`PresenceEntry`]) it lists and
//! `JOIN`/`LEAVE` carry.
//!
//! An entry's `info` is kept as raw MessagePack (any value), a slice of the
//! received frame: the protocol does not interpret it.

use bytes::Bytes;

use crate::msgpack::{self, MsgpackError, Reader};

/// Most entries a `PRESENCE_INFO` answer is decoded with; the broker never
/// lists more than its `max_presence_per_topic`.
pub const MAX_PRESENCE_ENTRIES: usize = 1 << 20;

/// One presence entry (a client instance present on a topic), or, in a
/// user-level `JOIN`/`LEAVE`, one user (then `client` is `None`).
///
/// Wire form: a map with `client` (str), `user` (str, absent for anonymous
/// clients) and `info` (any value, absent when the token gave none).
/// Unknown keys are skipped when decoding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceEntry<'a> {
    /// `client`: the client id; `None` in user-level events.
    pub client: Option<&'a str>,
    /// `user`: the token's `sub`; `None` for anonymous clients.
    pub user: Option<&'a str>,
    /// `info`: the client info from the token, raw MessagePack.
    pub info: Option<Bytes>,
}

impl PresenceEntry<'_> {
    /// Appends the entry map to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let len = usize::from(self.client.is_some())
            + usize::from(self.user.is_some())
            + usize::from(self.info.is_some());
        msgpack::write_map_len(out, len);
        if let Some(client) = self.client {
            msgpack::write_str(out, "client");
            msgpack::write_str(out, client);
        }
        if let Some(user) = self.user {
            msgpack::write_str(out, "user");
            msgpack::write_str(out, user);
        }
        if let Some(info) = &self.info {
            msgpack::write_str(out, "info");
            out.extend_from_slice(info);
        }
    }

    /// The encoded size of the entry map, to size buffers exactly.
    pub fn encoded_len(&self) -> usize {
        let str_len = |s: &str| msgpack::str_header_len(s.len()) + s.len();
        1 + self.client.map_or(0, |c| str_len("client") + str_len(c))
            + self.user.map_or(0, |u| str_len("user") + str_len(u))
            + self.info.as_ref().map_or(0, |i| str_len("info") + i.len())
    }
}

impl<'a> PresenceEntry<'a> {
    /// Reads an entry map from `r`, which reads `frame`.
    pub(crate) fn decode(r: &mut Reader<'a>, frame: &'a Bytes) -> Result<Self, MsgpackError> {
        let mut entry = PresenceEntry::default();
        for _ in 0..r.read_map_len()? {
            match r.read_str()? {
                "client" => entry.client = Some(r.read_str()?),
                "user" => entry.user = Some(r.read_str()?),
                "info" => entry.info = Some(frame.slice(r.read_value_range()?)),
                _ => r.skip_value()?,
            }
        }
        Ok(entry)
    }
}

/// The `info` map of a `PRESENCE_INFO` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceInfo<'a> {
    /// `clients`: how many entries the topic has.
    pub clients: u64,
    /// `users`: how many distinct users those entries belong to (anonymous
    /// entries count no user).
    pub users: u64,
    /// `entries`: every entry; `None` when the request asked for counts
    /// only.
    pub entries: Option<Vec<PresenceEntry<'a>>>,
}

impl<'a> PresenceInfo<'a> {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        msgpack::write_map_len(out, 2 + usize::from(self.entries.is_some()));
        msgpack::write_str(out, "clients");
        msgpack::write_u64(out, self.clients);
        msgpack::write_str(out, "users");
        msgpack::write_u64(out, self.users);
        if let Some(entries) = &self.entries {
            msgpack::write_str(out, "entries");
            msgpack::write_array_len(out, entries.len());
            for entry in entries {
                entry.encode(out);
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader<'a>, frame: &'a Bytes) -> Result<Self, MsgpackError> {
        let mut info = PresenceInfo::default();
        for _ in 0..r.read_map_len()? {
            match r.read_str()? {
                "clients" => info.clients = r.read_u64()?,
                "users" => info.users = r.read_u64()?,
                "entries" => {
                    let len = r.read_array_len()?;
                    if len > MAX_PRESENCE_ENTRIES {
                        return Err(MsgpackError::IntegerOutOfRange);
                    }
                    let mut entries = Vec::with_capacity(len.min(1024));
                    for _ in 0..len {
                        entries.push(PresenceEntry::decode(r, frame)?);
                    }
                    info.entries = Some(entries);
                }
                _ => r.skip_value()?,
            }
        }
        Ok(info)
    }
}
