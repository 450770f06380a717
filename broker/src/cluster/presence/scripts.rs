//! The presence scripts Redis runs, and the names of the keys they use.
//!
//! Topic `T` keeps its presence in three hashes (hash tag `{T}`, like its
//! position and channel): `tickwire:{T}:pres` (entry key -> the entry's
//! client info, MessagePack, empty when none), `tickwire:{T}:presn` (entry
//! key -> how many nodes hold it) and `tickwire:{T}:presu` (user -> how
//! many of the topic's entries are that user's). An *entry key* is the
//! client id, or the client id, a space and the user id for an entry with
//! a user (a client id has no spaces, so the first space splits them).
//!
//! Node `N` has its lease `tickwire:node:N` (a key with a time to live,
//! `presence_lease_ttl`), a member of the sorted set `tickwire:nodes`
//! (score: the lease's deadline, ms since the Unix epoch by Redis' clock)
//! and the set `tickwire:node:N:pres` of what it holds: members `T`, a
//! space, then the entry key (a topic has no spaces).
//!
//! Every script is atomic. The join and leave scripts are idempotent per
//! node (the node's set says whether it holds the entry already), so a node
//! may send them again after a failure without double counting; the reap
//! script takes each member of a dead node's set with `SPOP`, so however
//! many nodes reap at once, each entry is released once and each LEAVE is
//! published once. Keys of other topics than those named in `KEYS` are
//! derived inside the scripts: they need one Redis (or a Sentinel-managed
//! master), not Redis Cluster.

/// The sorted set of node leases (score: deadline in ms).
pub const NODES_KEY: &str = "tickwire:nodes";

/// The lease key of node `node`.
pub fn lease_key(node: &str) -> String {
    format!("tickwire:node:{node}")
}

/// The set of what node `node` holds (members: see [`hold_member`]).
pub fn holds_key(node: &str) -> String {
    format!("tickwire:node:{node}:pres")
}

/// The hash of topic `topic`'s entries (entry key -> client info).
pub fn entries_key(topic: &str) -> String {
    format!("tickwire:{{{topic}}}:pres")
}

/// The hash of how many nodes hold each of topic `topic`'s entries.
pub fn holders_key(topic: &str) -> String {
    format!("tickwire:{{{topic}}}:presn")
}

/// The hash of how many entries each user has on topic `topic`.
pub fn users_key(topic: &str) -> String {
    format!("tickwire:{{{topic}}}:presu")
}

/// The entry key of `client` (and `user`): the client id, then a space and
/// the user id when there is one.
pub fn entry_key(client: &str, user: Option<&str>) -> String {
    match user {
        Some(user) => format!("{client} {user}"),
        None => client.to_owned(),
    }
}

/// The client id and user of entry key `key`.
pub fn split_entry_key(key: &str) -> (&str, Option<&str>) {
    match key.split_once(' ') {
        Some((client, user)) => (client, Some(user)),
        None => (key, None),
    }
}

/// The member of a node's hold set for entry key `key` of topic `topic`.
pub fn hold_member(topic: &str, key: &str) -> String {
    format!("{topic} {key}")
}

/// Lua functions the join, leave and reap scripts share: the topic's key
/// names, splitting an entry key, building an event (see
/// [`crate::cluster::presence::event`]) and releasing one node's hold of
/// an entry (removing the entry, and publishing its LEAVE, when it was the
/// last holder).
const LIBRARY: &str = r#"
local function names(topic)
  local p = 'tickwire:{' .. topic .. '}:'
  return p .. 'pres', p .. 'presn', p .. 'presu', p .. 'msg'
end
local function split_key(key)
  local space = string.find(key, ' ', 1, true)
  if space then
    return string.sub(key, 1, space - 1), string.sub(key, space + 1)
  end
  return key, nil
end
local function event(kind, users, client, user, info)
  local header = 'P ' .. kind .. ' ' .. users .. ' ' .. client .. ' '
  if user then
    return header .. #user .. '\n' .. user .. info
  end
  return header .. '-\n' .. info
end
local function release(topic, key)
  local pres, presn, presu, channel = names(topic)
  if redis.call('HINCRBY', presn, key, -1) > 0 then
    return 0
  end
  redis.call('HDEL', presn, key)
  local info = redis.call('HGET', pres, key) or ''
  redis.call('HDEL', pres, key)
  local client, user = split_key(key)
  local users = 0
  if user and redis.call('HINCRBY', presu, user, -1) <= 0 then
    redis.call('HDEL', presu, user)
    users = 1
  end
  redis.call('PUBLISH', channel, event('L', users, client, user, info))
  return 1
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"#;

/// The join script: node holds an entry. `KEYS`: the node's hold set,
/// its lease, [`NODES_KEY`]; `ARGV`: the topic, the entry key, the client
/// info (MessagePack, empty when none), the node id, the lease's time to
/// live (ms).
///
/// First, if the node has no lease (it joins before its lease task's first
/// round, or after it lost its lease), the lease is made: holds are never
/// written without a lease that a reaper would find. Nothing more happens
/// if the node holds the entry already. Otherwise the entry's holder count
/// goes up; if no other node held it, the entry is stored, the user's
/// entry count goes up, and the JOIN is published on the topic's channel.
/// Returns 1 if it published the JOIN, plus 2 if it made the lease.
pub const JOIN_BODY: &str = r#"
local made = 0
if redis.call('SET', KEYS[2], '1', 'PX', ARGV[5], 'NX') then
  made = 2
  redis.call('ZADD', KEYS[3], string.format('%d', now_ms() + tonumber(ARGV[5])), ARGV[4])
end
if redis.call('SADD', KEYS[1], ARGV[1] .. ' ' .. ARGV[2]) == 0 then
  return made
end
local pres, presn, presu, channel = names(ARGV[1])
if redis.call('HINCRBY', presn, ARGV[2], 1) > 1 then
  return made
end
redis.call('HSET', pres, ARGV[2], ARGV[3])
local client, user = split_key(ARGV[2])
local users = 0
if user and redis.call('HINCRBY', presu, user, 1) == 1 then
  users = 1
end
redis.call('PUBLISH', channel, event('J', users, client, user, ARGV[3]))
return 1 + made
"#;

/// The bit of the join script's answer saying it published a JOIN.
pub const JOIN_PUBLISHED: u64 = 1;
/// The bit of the join script's answer saying it made the node's lease.
pub const JOIN_MADE_LEASE: u64 = 2;

/// The leave script: node no longer holds an entry. `KEYS`: the node's
/// hold set; `ARGV`: the topic, the entry key.
///
/// Nothing happens if the node did not hold it (returns 0; a reaper took
/// it, or it was released already). Otherwise the holder count goes down;
/// at zero the entry is removed and its LEAVE published (returns 1).
pub const LEAVE_BODY: &str = r#"
if redis.call('SREM', KEYS[1], ARGV[1] .. ' ' .. ARGV[2]) == 0 then
  return 0
end
return release(ARGV[1], ARGV[2])
"#;

/// The lease script: node is alive. `KEYS`: the node's lease and
/// [`NODES_KEY`]; `ARGV`: the node id, the lease's time to live (ms).
///
/// Extends the lease (or makes it again) and its deadline in the sorted
/// set. Returns 1 if the lease still existed, 0 if it was made anew (first
/// start, or the node lost it: it expired, or Redis restarted empty): the
/// node then sends its joins again, since a reaper may have released them.
pub const LEASE_BODY: &str = r#"
local kept = redis.call('PEXPIRE', KEYS[1], ARGV[2])
if kept == 0 then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
end
redis.call('ZADD', KEYS[2], string.format('%d', now_ms() + tonumber(ARGV[2])), ARGV[1])
return kept
"#;

/// The retire script: a node shutting down keeps its lease only for the
/// presence grace. `KEYS`: the node's lease and [`NODES_KEY`]; `ARGV`: the
/// node id, the grace (ms, at least 1). Its holds are then released by the
/// reap script, like those of a dead node: the entries its clients hold
/// again elsewhere within the grace make no events.
pub const RETIRE_BODY: &str = r#"
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], string.format('%d', now_ms() + tonumber(ARGV[2])), ARGV[1])
return 1
"#;

/// The reap script: releases holds of one dead node. `KEYS`:
/// [`NODES_KEY`]; `ARGV`: the most holds to release in this call, the most
/// expired nodes to look at.
///
/// A node is dead when its deadline in the sorted set is past and its
/// lease key is gone. For the first such node it pops up to the given
/// count of its holds and releases each (publishing the LEAVE of every
/// entry no other node holds); once its set is empty it removes the node
/// from the sorted set. Returns `{node, entries removed, 1 if this call
/// removed the node}`, or an empty array when no node is dead.
pub const REAP_BODY: &str = r#"
local now = string.format('%d', now_ms())
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, ARGV[2])
for _, node in ipairs(dead) do
  if redis.call('EXISTS', 'tickwire:node:' .. node) == 0 then
    local set = 'tickwire:node:' .. node .. ':pres'
    local removed = 0
    for _, member in ipairs(redis.call('SPOP', set, ARGV[1])) do
      local space = string.find(member, ' ', 1, true)
      if space then
        removed = removed + release(string.sub(member, 1, space - 1), string.sub(member, space + 1))
      end
    end
    local claimed = 0
    if redis.call('EXISTS', set) == 0 then
      claimed = redis.call('ZREM', KEYS[1], node)
    end
    return {node, removed, claimed}
  end
end
return {}
"#;

/// A script's full source: the shared functions, then `body`.
pub fn source(body: &str) -> String {
    format!("{LIBRARY}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_entry_keys() {
        assert_eq!(entries_key("a.b"), "tickwire:{a.b}:pres");
        assert_eq!(holders_key("a.b"), "tickwire:{a.b}:presn");
        assert_eq!(users_key("a.b"), "tickwire:{a.b}:presu");
        assert_eq!(lease_key("n1"), "tickwire:node:n1");
        assert_eq!(holds_key("n1"), "tickwire:node:n1:pres");
        let key = entry_key("c-1", Some("alice smith"));
        assert_eq!(key, "c-1 alice smith");
        assert_eq!(split_entry_key(&key), ("c-1", Some("alice smith")));
        assert_eq!(split_entry_key("c-1"), ("c-1", None));
        assert_eq!(split_entry_key(&entry_key("c", Some(""))), ("c", Some("")));
        assert_eq!(hold_member("a.b", &key), "a.b c-1 alice smith");
    }
}
