//! Presence as the application sees it: who is subscribed to a topic
//! ([`Presence`], [`PresenceStats`], from [`Client::presence`](crate::Client::presence)) and who
//! joined or left ([`PresenceChange`], in
//! [`Delivery::Join`](crate::Delivery::Join) and
//! [`Delivery::Leave`](crate::Delivery::Leave)). Owned
//! copies of the protocol crate's borrowed entries.

use bytes::Bytes;
use serde::de::DeserializeOwned;

use tickwire_protocol::message::{PresenceEntry, PresenceInfo};

use crate::error::Result;

/// One presence entry: a client instance subscribed to the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its client id (see [`ClientBuilder::client_id`](crate::ClientBuilder::client_id)).
    pub client: String,
    /// The token's `sub`; `None` for anonymous clients.
    pub user: Option<String>,
    /// The client info from its token (`tw.info`), as MessagePack.
    pub info: Option<Bytes>,
}

impl Member {
    /// The client info decoded from MessagePack; `Ok(None)` without info.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`](crate::Error::Decode) when it does not decode as `T`.
    pub fn decode_info<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        decode_info(self.info.as_ref())
    }
}

/// A topic's presence, from [`Client::presence`](crate::Client::presence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// Entries (client instances) present.
    pub clients: u64,
    /// Distinct users among them (anonymous entries count no user).
    pub users: u64,
    /// Every entry.
    pub members: Vec<Member>,
}

/// A topic's presence counts, from [`Client::presence_stats`](crate::Client::presence_stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceStats {
    /// Entries (client instances) present.
    pub clients: u64,
    /// Distinct users among them.
    pub users: u64,
}

/// Who joined or left a topic, in a [`Delivery::Join`](crate::Delivery::Join) or
/// [`Delivery::Leave`](crate::Delivery::Leave).
///
/// A subscription with [`JoinLeave::Clients`](crate::JoinLeave::Clients)
/// gets one per client instance (`client` set); one with
/// [`JoinLeave::Users`](crate::JoinLeave::Users) one per user (`client`
/// `None`, `user` set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    /// The topic joined or left.
    pub topic: String,
    /// The client id; `None` in user-level events.
    pub client: Option<String>,
    /// The token's `sub`; `None` for anonymous clients.
    pub user: Option<String>,
    /// The client info from its token, as MessagePack.
    pub info: Option<Bytes>,
}

impl PresenceChange {
    /// The change of `topic` the broker sent as `entry`.
    pub(crate) fn new(topic: &str, entry: &PresenceEntry<'_>) -> Self {
        PresenceChange {
            topic: topic.to_owned(),
            client: entry.client.map(str::to_owned),
            user: entry.user.map(str::to_owned),
            info: entry.info.clone(),
        }
    }

    /// The client info decoded from MessagePack; `Ok(None)` without info.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`](crate::Error::Decode) when it does not decode as `T`.
    pub fn decode_info<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        decode_info(self.info.as_ref())
    }
}

fn decode_info<T: DeserializeOwned>(info: Option<&Bytes>) -> Result<Option<T>> {
    info.map(|bytes| rmp_serde::from_slice(bytes))
        .transpose()
        .map_err(Into::into)
}

/// A `PRESENCE_INFO` answer, owned: what the connection task hands to the
/// waiting [`Client::presence`](crate::Client::presence) call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answer {
    pub clients: u64,
    pub users: u64,
    pub members: Vec<Member>,
}

impl Answer {
    /// The owned copy of `info`; entries without a client id (which the
    /// broker never lists) are skipped.
    pub(crate) fn new(info: &PresenceInfo<'_>) -> Self {
        let members = info
            .entries
            .iter()
            .flatten()
            .filter_map(|entry| {
                Some(Member {
                    client: entry.client?.to_owned(),
                    user: entry.user.map(str::to_owned),
                    info: entry.info.clone(),
                })
            })
            .collect();
        Answer {
            clients: info.clients,
            users: info.users,
            members,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_changes_are_owned_copies() {
        let mut info_bytes = Vec::new();
        rmp_serde::encode::write_named(&mut info_bytes, &("Alice", 7)).unwrap();
        let info = Bytes::from(info_bytes);
        let entry = PresenceEntry {
            client: Some("c1"),
            user: Some("alice"),
            info: Some(info.clone()),
        };
        let answer = Answer::new(&PresenceInfo {
            clients: 2,
            users: 1,
            entries: Some(vec![
                entry.clone(),
                PresenceEntry {
                    client: Some("c2"),
                    ..PresenceEntry::default()
                },
            ]),
        });
        assert_eq!((answer.clients, answer.users), (2, 1));
        assert_eq!(answer.members[0].client, "c1");
        assert_eq!(
            answer.members[0].decode_info::<(String, u8)>().unwrap(),
            Some(("Alice".to_owned(), 7))
        );
        assert_eq!(answer.members[1].user, None);
        assert_eq!(answer.members[1].decode_info::<u8>().unwrap(), None);
        let change = PresenceChange::new(
            "room.1",
            &PresenceEntry {
                client: None,
                ..entry
            },
        );
        assert_eq!(change.topic, "room.1");
        assert_eq!(change.client, None);
        assert_eq!(change.user.as_deref(), Some("alice"));
        assert!(change.decode_info::<u64>().is_err());
    }
}
