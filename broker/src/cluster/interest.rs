//! Which Redis channels and patterns this node needs: one count per
//! [`Subscription`], kept by the registry as local subscriptions come and
//! go. The subscriber task is woken when a count goes from 0 to 1 or from
//! 1 to 0 and makes Redis match ([`Interest::wanted`]).

use std::collections::HashMap;

use parking_lot::Mutex;
use tickwire_protocol::topic::Pattern;
use tokio::sync::Notify;

use crate::cluster::wire::{Subscription, subscription_name};

/// Local subscriptions counted per Redis subscription.
#[derive(Debug, Default)]
pub struct Interest {
    counts: Mutex<HashMap<Subscription, usize>>,
    changed: Notify,
}

impl Interest {
    /// Counts one more local subscription to `pattern`.
    pub fn add(&self, pattern: &Pattern) {
        let mut counts = self.counts.lock();
        let count = counts.entry(subscription_name(pattern)).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.changed.notify_one();
        }
    }

    /// Counts one local subscription to `pattern` less.
    pub fn remove(&self, pattern: &Pattern) {
        let name = subscription_name(pattern);
        let mut counts = self.counts.lock();
        let Some(count) = counts.get_mut(&name) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            counts.remove(&name);
            self.changed.notify_one();
        }
    }

    /// The Redis subscriptions wanted now.
    pub fn wanted(&self) -> Vec<Subscription> {
        self.counts.lock().keys().cloned().collect()
    }

    /// Resolves once the wanted set changed since the last call returned
    /// (at once if it changed meanwhile). One waiter: the subscriber task.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pattern(s: &str) -> Pattern {
        Pattern::new(s).unwrap()
    }

    #[tokio::test]
    async fn counts_follow_subscriptions_and_changes_wake_the_waiter() {
        let interest = Interest::default();
        interest.add(&pattern("a.b"));
        interest.add(&pattern("a.b"));
        interest.add(&pattern("a.*"));
        // `a.>` needs the same glob as `a.*`.
        interest.add(&pattern("a.>"));
        let mut wanted = interest.wanted();
        wanted.sort();
        assert_eq!(
            wanted,
            vec![
                Subscription::Channel("tickwire:{a.b}:msg".to_owned()),
                Subscription::Pattern("tickwire:{a.*}:msg".to_owned()),
            ]
        );
        // The adds above left a wake-up.
        tokio::time::timeout(Duration::from_secs(5), interest.changed())
            .await
            .unwrap();
        interest.remove(&pattern("a.b"));
        interest.remove(&pattern("a.*"));
        assert_eq!(interest.wanted().len(), 2);
        interest.remove(&pattern("a.b"));
        interest.remove(&pattern("a.>"));
        interest.remove(&pattern("x.y"));
        assert!(interest.wanted().is_empty());
        tokio::time::timeout(Duration::from_secs(5), interest.changed())
            .await
            .unwrap();
    }
}
