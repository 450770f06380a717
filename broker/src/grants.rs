//! What one client may do: the topic patterns it may subscribe to and
//! publish on.
//!
//! A connection (or an HTTP publish) gets an [`Access`] when it is
//! authenticated ([`crate::auth`]); the session checks it at each subscribe
//! and publish request. A check is a pattern comparison against the few
//! patterns of a grant: nothing is cached and nothing grows.

use tickwire_protocol::topic::{Pattern, Topic, pattern_covers};

/// The patterns a token (or the anonymous configuration) grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Patterns the holder may subscribe to: a subscription is allowed when
    /// one of them covers every topic its pattern can match.
    pub subscribe: Vec<Pattern>,
    /// Patterns the holder may publish on: a publish is allowed when its
    /// topic matches one of them.
    pub publish: Vec<Pattern>,
    /// Whether the holder may read the broker's operational JSON
    /// (`GET /v1/stats`, `GET /v1/topics`): the `admin` grant.
    pub admin: bool,
}

impl Grants {
    /// Whether these grants allow subscribing to `pattern`.
    pub fn may_subscribe(&self, pattern: &Pattern) -> bool {
        self.subscribe
            .iter()
            .any(|granted| pattern_covers(granted.as_str(), pattern.as_str()))
    }

    /// Whether these grants allow publishing on `topic`.
    pub fn may_publish(&self, topic: Topic<'_>) -> bool {
        self.publish
            .iter()
            .any(|granted| granted.matches(topic.as_str()))
    }

    /// Whether these grants allow nothing at all.
    pub fn is_empty(&self) -> bool {
        self.subscribe.is_empty() && self.publish.is_empty() && !self.admin
    }
}

/// What a client may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// Authentication is off: everything is allowed.
    Open,
    /// Authentication is on: what the client's token (or the anonymous
    /// configuration) grants.
    Granted(Grants),
    /// A WebSocket connection opened without a token, waiting for its
    /// `AUTH` message: nothing else is allowed.
    AwaitingAuth,
}

impl Access {
    /// Whether the client may subscribe to `pattern`.
    pub fn may_subscribe(&self, pattern: &Pattern) -> bool {
        match self {
            Access::Open => true,
            Access::Granted(grants) => grants.may_subscribe(pattern),
            Access::AwaitingAuth => false,
        }
    }

    /// Whether the client may publish on `topic`.
    pub fn may_publish(&self, topic: Topic<'_>) -> bool {
        match self {
            Access::Open => true,
            Access::Granted(grants) => grants.may_publish(topic),
            Access::AwaitingAuth => false,
        }
    }

    /// Whether the client may read the admin endpoints (`/v1/stats`,
    /// `/v1/topics`): always with authentication off, else with the
    /// `admin` grant.
    pub fn is_admin(&self) -> bool {
        match self {
            Access::Open => true,
            Access::Granted(grants) => grants.admin,
            Access::AwaitingAuth => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> Vec<Pattern> {
        list.iter().map(|p| Pattern::new(*p).unwrap()).collect()
    }

    #[test]
    fn grants_check_subscribe_cover_and_publish_match() {
        let grants = Grants {
            subscribe: patterns(&["stocks.>", "news.*"]),
            publish: patterns(&["iot.site1.>"]),
            admin: false,
        };
        assert!(!Access::Granted(grants.clone()).is_admin());
        let access = Access::Granted(grants);
        let sub = |p: &str| access.may_subscribe(&Pattern::new(p).unwrap());
        let publ = |t: &str| access.may_publish(Topic::new(t).unwrap());
        assert!(sub("stocks.AAPL"));
        assert!(sub("stocks.*"));
        assert!(sub("news.eu"));
        assert!(!sub("news.>"));
        assert!(!sub(">"));
        assert!(!sub("iot.site1.t1"));
        assert!(publ("iot.site1.t1"));
        assert!(!publ("iot.site2.t1"));
        assert!(!publ("stocks.AAPL"));
        assert!(Access::Open.may_subscribe(&Pattern::everything()));
        assert!(Access::Open.may_publish(Topic::new("any").unwrap()));
        assert!(Grants::default().is_empty());
        assert!(Access::Open.is_admin());
        assert!(!Access::AwaitingAuth.is_admin());
        let admin_only = Grants {
            admin: true,
            ..Grants::default()
        };
        assert!(!admin_only.is_empty());
        assert!(Access::Granted(admin_only).is_admin());
    }
}
