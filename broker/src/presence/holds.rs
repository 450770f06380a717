//! This node's presence holds: per (topic, key), how many live
//! subscriptions hold the entry and how many ended connections still hold
//! it for their grace period.
//!
//! Pure bookkeeping, no I/O and no clock: [`super::PresenceHub`] calls it
//! under its lock and acts on the answers (store join/leave, timers).

use std::collections::HashMap;

use super::PresenceError;
use super::event::PresenceEntry;
use super::identity::{Identity, PresenceKey};

/// The bounds on holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldLimits {
    /// `max_presence_per_topic`: most entries on one topic.
    pub per_topic: usize,
    /// `max_presence_entries`: most entries on this node, all topics.
    pub entries: usize,
}

/// A grace hold to end once the grace period is over
/// ([`super::PresenceHub::expire`]); void if the key was held again before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraceTicket {
    /// The topic.
    pub topic: String,
    /// The entry's key.
    pub key: PresenceKey,
    epoch: u64,
}

/// What the store must do after a hold ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// Nothing: other holds remain, or the entry was never announced.
    Nothing,
    /// The last hold ended: the store's leave.
    Left,
    /// Holds remain but the entry's creator ended before announcing it:
    /// the store's join, for the remaining holders.
    Announce(PresenceEntry),
}

#[derive(Debug)]
struct Hold {
    live: usize,
    graced: usize,
    /// Changes whenever the key is held again, voiding older tickets.
    epoch: u64,
    announced: bool,
    entry: PresenceEntry,
}

/// Every hold of this node.
#[derive(Debug)]
pub struct Holds {
    topics: HashMap<Box<str>, HashMap<PresenceKey, Hold>>,
    entries: usize,
    limits: HoldLimits,
}

impl Holds {
    /// No holds yet.
    pub fn new(limits: HoldLimits) -> Self {
        Holds {
            topics: HashMap::new(),
            entries: 0,
            limits,
        }
    }

    /// Entries held (keys with at least one live or grace hold).
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Adds a live hold; a key in its grace period takes its grace holds
    /// over. Returns whether the entry was created.
    pub fn hold(&mut self, topic: &str, identity: &Identity) -> Result<bool, PresenceError> {
        let key = identity.key();
        if let Some(hold) = self.topics.get_mut(topic).and_then(|t| t.get_mut(&key)) {
            hold.live += 1;
            if hold.graced > 0 {
                hold.graced = 0;
                hold.epoch += 1;
            }
            return Ok(false);
        }
        if self.entries >= self.limits.entries {
            return Err(PresenceError::NodeFull(self.limits.entries));
        }
        let keys = self.topics.entry(topic.into()).or_default();
        if keys.len() >= self.limits.per_topic {
            if keys.is_empty() {
                self.topics.remove(topic);
            }
            return Err(PresenceError::TopicFull {
                topic: topic.to_owned(),
                limit: self.limits.per_topic,
            });
        }
        keys.insert(
            key,
            Hold {
                live: 1,
                graced: 0,
                epoch: 0,
                announced: false,
                entry: identity.entry(),
            },
        );
        self.entries += 1;
        Ok(true)
    }

    /// Marks the entry announced; returns whether it was not before (the
    /// store's join is then due).
    pub fn announce(&mut self, topic: &str, key: &PresenceKey) -> bool {
        match self.topics.get_mut(topic).and_then(|t| t.get_mut(key)) {
            Some(hold) if !hold.announced => {
                hold.announced = true;
                true
            }
            _ => false,
        }
    }

    /// Ends a live hold at once.
    pub fn release(&mut self, topic: &str, key: &PresenceKey) -> Released {
        self.end(topic, key, |hold| {
            if hold.live == 0 {
                return false;
            }
            hold.live -= 1;
            true
        })
    }

    /// Turns a live hold into a grace hold; `None` when there is nothing
    /// to wait for (no such hold, or other live holds keep the entry).
    pub fn defer(&mut self, topic: &str, key: &PresenceKey) -> Option<GraceTicket> {
        let hold = self.topics.get_mut(topic)?.get_mut(key)?;
        if hold.live == 0 {
            return None;
        }
        if hold.live > 1 {
            hold.live -= 1;
            return None;
        }
        hold.live -= 1;
        hold.graced += 1;
        Some(GraceTicket {
            topic: topic.to_owned(),
            key: key.clone(),
            epoch: hold.epoch,
        })
    }

    /// Ends the grace hold of `ticket`, unless the key was held again
    /// since.
    pub fn expire(&mut self, ticket: &GraceTicket) -> Released {
        self.end(&ticket.topic, &ticket.key, |hold| {
            if hold.epoch != ticket.epoch || hold.graced == 0 {
                return false;
            }
            hold.graced -= 1;
            true
        })
    }

    /// Applies `take` (which ends one hold, or says there was none) and
    /// removes the entry when nothing holds it any more.
    fn end(
        &mut self,
        topic: &str,
        key: &PresenceKey,
        take: impl FnOnce(&mut Hold) -> bool,
    ) -> Released {
        let Some(keys) = self.topics.get_mut(topic) else {
            return Released::Nothing;
        };
        let Some(hold) = keys.get_mut(key) else {
            return Released::Nothing;
        };
        if !take(hold) {
            return Released::Nothing;
        }
        if hold.live + hold.graced > 0 {
            if hold.announced {
                return Released::Nothing;
            }
            hold.announced = true;
            return Released::Announce(hold.entry.clone());
        }
        let announced = hold.announced;
        keys.remove(key);
        if keys.is_empty() {
            self.topics.remove(topic);
        }
        self.entries -= 1;
        if announced {
            Released::Left
        } else {
            Released::Nothing
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn holds(per_topic: usize, entries: usize) -> Holds {
        Holds::new(HoldLimits { per_topic, entries })
    }

    fn id(client: &str, user: Option<&str>) -> Identity {
        Identity::new(Some(Arc::from(client)), user.map(Arc::from), None)
    }

    #[test]
    fn two_holds_of_one_key_are_one_entry() {
        let mut h = holds(10, 10);
        let a = id("c1", Some("alice"));
        assert_eq!(h.hold("t", &a), Ok(true));
        assert!(h.announce("t", &a.key()));
        assert!(!h.announce("t", &a.key()));
        assert_eq!(h.hold("t", &a), Ok(false));
        assert_eq!(h.entries(), 1);
        assert_eq!(h.release("t", &a.key()), Released::Nothing);
        assert_eq!(h.release("t", &a.key()), Released::Left);
        assert_eq!(h.entries(), 0);
        assert_eq!(h.release("t", &a.key()), Released::Nothing);
    }

    #[test]
    fn the_same_client_id_of_another_user_is_another_entry() {
        let mut h = holds(10, 10);
        assert_eq!(h.hold("t", &id("c1", Some("alice"))), Ok(true));
        assert_eq!(h.hold("t", &id("c1", Some("bob"))), Ok(true));
        assert_eq!(h.hold("t", &id("c1", None)), Ok(true));
        assert_eq!(h.entries(), 3);
    }

    #[test]
    fn bounds_refuse_new_entries_but_not_new_holds() {
        let mut h = holds(2, 3);
        assert_eq!(h.hold("t", &id("a", None)), Ok(true));
        assert_eq!(h.hold("t", &id("b", None)), Ok(true));
        assert!(matches!(
            h.hold("t", &id("c", None)),
            Err(PresenceError::TopicFull { limit: 2, .. })
        ));
        assert_eq!(h.hold("t", &id("a", None)), Ok(false));
        assert_eq!(h.hold("u", &id("a", None)), Ok(true));
        assert_eq!(h.hold("v", &id("a", None)), Err(PresenceError::NodeFull(3)));
        assert!(!h.topics.contains_key("v"));
    }

    #[test]
    fn a_grace_hold_ends_unless_the_key_is_held_again() {
        let mut h = holds(10, 10);
        let a = id("c1", None);
        h.hold("t", &a).unwrap();
        h.announce("t", &a.key());
        let ticket = h.defer("t", &a.key()).unwrap();
        assert_eq!(h.entries(), 1);
        assert_eq!(h.expire(&ticket), Released::Left);
        assert_eq!(h.entries(), 0);

        h.hold("t", &a).unwrap();
        h.announce("t", &a.key());
        let ticket = h.defer("t", &a.key()).unwrap();
        // A reconnect inside the grace period takes over.
        assert_eq!(h.hold("t", &a), Ok(false));
        assert_eq!(h.expire(&ticket), Released::Nothing);
        assert_eq!(h.entries(), 1);
        assert_eq!(h.release("t", &a.key()), Released::Left);
    }

    #[test]
    fn a_creator_that_ends_unannounced_hands_the_join_to_the_others() {
        let mut h = holds(10, 10);
        let a = id("c1", None);
        h.hold("t", &a).unwrap();
        assert_eq!(h.release("t", &a.key()), Released::Nothing);
        assert_eq!(h.entries(), 0);
        h.hold("t", &a).unwrap();
        h.hold("t", &a).unwrap();
        assert_eq!(h.release("t", &a.key()), Released::Announce(a.entry()));
        assert!(!h.announce("t", &a.key()));
        assert_eq!(h.release("t", &a.key()), Released::Left);
    }
}
