//! Who a connection is for presence: its client id, its user and its
//! client info ([`Identity`]), built once at connect.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use thiserror::Error;

use super::event::PresenceEntry;

/// Longest client id a connection may ask for (`client=` query parameter).
pub const MAX_CLIENT_ID_LEN: usize = 64;

/// Why a requested client id was refused (HTTP 400 `invalid_option`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("client id must be 1-{MAX_CLIENT_ID_LEN} characters of A-Z, a-z, 0-9, `_` and `-`")]
pub struct ClientIdError;

/// Checks a client id asked for with `client=ID`: 1-64 characters of
/// `[A-Za-z0-9_-]`.
pub fn parse_client_id(id: &str) -> Result<Arc<str>, ClientIdError> {
    let valid = (1..=MAX_CLIENT_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if valid {
        Ok(Arc::from(id))
    } else {
        Err(ClientIdError)
    }
}

/// A fresh client id: 128 random bits as 22 characters of base64url.
pub fn random_client_id() -> Arc<str> {
    let bits: [u8; 16] = rand::random();
    Arc::from(URL_SAFE_NO_PAD.encode(bits))
}

/// A connection's presence identity: the key of its presence entries
/// (`user`, `client`) and what they show (`info`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The client id: asked for with `client=`, else random.
    pub client: Arc<str>,
    /// The token's `sub`; `None` for anonymous connections, API keys and
    /// certificates without a token.
    pub user: Option<Arc<str>>,
    /// The client info from the token's grants claim (`info`), as
    /// MessagePack; bounded by `max_presence_info_bytes` at verification.
    pub info: Option<Bytes>,
}

impl Identity {
    /// The identity of a connection that asked for `client` (or none: a
    /// random id) and authenticated as `user` with `info`.
    pub fn new(client: Option<Arc<str>>, user: Option<Arc<str>>, info: Option<Bytes>) -> Self {
        Identity {
            client: client.unwrap_or_else(random_client_id),
            user,
            info,
        }
    }

    /// The presence entry this identity makes on a topic.
    pub fn entry(&self) -> PresenceEntry {
        PresenceEntry {
            client: Arc::clone(&self.client),
            user: self.user.clone(),
            info: self.info.clone(),
        }
    }

    /// The key of its presence entries: several connections with the same
    /// key are one entry.
    pub fn key(&self) -> PresenceKey {
        PresenceKey {
            user: self.user.clone(),
            client: Arc::clone(&self.client),
        }
    }
}

/// The key of a presence entry: `(user, client)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PresenceKey {
    /// The user (`None`: anonymous).
    pub user: Option<Arc<str>>,
    /// The client id.
    pub client: Arc<str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_checked() {
        for ok in ["a", "A-z_09", &"x".repeat(64)] {
            assert_eq!(parse_client_id(ok).as_deref(), Ok(ok));
        }
        for bad in ["", "a b", "a.b", "é", &"x".repeat(65), "a/b", "a%20"] {
            assert_eq!(parse_client_id(bad), Err(ClientIdError), "{bad:?}");
        }
    }

    #[test]
    fn random_ids_are_22_url_safe_characters_and_differ() {
        let a = random_client_id();
        let b = random_client_id();
        assert_eq!(a.len(), 22);
        assert!(parse_client_id(&a).is_ok());
        assert_ne!(a, b);
    }
}
