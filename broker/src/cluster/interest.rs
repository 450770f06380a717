//! Which Redis channels and patterns this node needs: one count per
//! [`Subscription`], kept by the registry as local subscriptions come and
//! go. The subscriber task is woken when a count goes from 0 to 1 or from
//! 1 to 0 and makes Redis match ([`Interest::wanted`]).
//!
//! Every such change makes a new *generation* of the wanted set. When Redis
//! has confirmed the subscriptions of a generation, the subscriber task
//! reports it ([`Interest::confirm`]); a new subscription waits for the
//! generation its own count belongs to ([`Interest::confirmed`]) before it
//! reads the topic's position in Redis, so every message numbered after
//! that read reaches this node.

use std::collections::HashMap;

use parking_lot::Mutex;
use tickwire_protocol::topic::Pattern;
use tokio::sync::{Notify, watch};

use crate::cluster::wire::{Subscription, subscription_name};

/// Local subscriptions counted per Redis subscription.
#[derive(Debug)]
pub struct Interest {
    counts: Mutex<Counts>,
    changed: Notify,
    confirmed: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Counts {
    by_name: HashMap<Subscription, usize>,
    generation: u64,
}

impl Default for Interest {
    fn default() -> Self {
        Interest {
            counts: Mutex::default(),
            changed: Notify::new(),
            confirmed: watch::Sender::new(0),
        }
    }
}

impl Interest {
    /// Counts one more local subscription to `pattern`; returns the
    /// generation of the wanted set that includes it.
    pub fn add(&self, pattern: &Pattern) -> u64 {
        let mut counts = self.counts.lock();
        let count = counts
            .by_name
            .entry(subscription_name(pattern))
            .or_insert(0);
        *count += 1;
        if *count == 1 {
            counts.generation += 1;
            self.changed.notify_one();
        }
        counts.generation
    }

    /// Counts one local subscription to `pattern` less.
    pub fn remove(&self, pattern: &Pattern) {
        let name = subscription_name(pattern);
        let mut counts = self.counts.lock();
        let Some(count) = counts.by_name.get_mut(&name) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            counts.by_name.remove(&name);
            counts.generation += 1;
            self.changed.notify_one();
        }
    }

    /// The generation of the wanted set now.
    pub fn generation(&self) -> u64 {
        self.counts.lock().generation
    }

    /// The Redis subscriptions wanted now, and their generation.
    pub fn wanted(&self) -> (u64, Vec<Subscription>) {
        let counts = self.counts.lock();
        (counts.generation, counts.by_name.keys().cloned().collect())
    }

    /// Resolves once the wanted set changed since the last call returned
    /// (at once if it changed meanwhile). One waiter: the subscriber task.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Redis now has every subscription of `generation`.
    pub fn confirm(&self, generation: u64) {
        self.confirmed.send_replace(generation);
    }

    /// The subscriber connection was lost: Redis has none of them.
    pub fn unconfirm(&self) {
        self.confirmed.send_replace(0);
    }

    /// Resolves once Redis has every subscription of `generation` (or a
    /// later one).
    pub async fn confirmed(&self, generation: u64) {
        let mut confirmed = self.confirmed.subscribe();
        // The sender lives as long as `self`: this cannot fail.
        let _ = confirmed.wait_for(|g| *g >= generation).await;
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
        assert_eq!(interest.add(&pattern("a.b")), 1);
        assert_eq!(interest.add(&pattern("a.b")), 1, "same channel");
        assert_eq!(interest.add(&pattern("a.*")), 2);
        // `a.>` needs the same glob as `a.*`.
        assert_eq!(interest.add(&pattern("a.>")), 2);
        let (generation, mut wanted) = interest.wanted();
        assert_eq!(generation, 2);
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
        assert_eq!(interest.wanted().1.len(), 2);
        interest.remove(&pattern("a.b"));
        interest.remove(&pattern("a.>"));
        interest.remove(&pattern("x.y"));
        assert!(interest.wanted().1.is_empty());
        assert_eq!(interest.wanted().0, 4);
        tokio::time::timeout(Duration::from_secs(5), interest.changed())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_subscription_waits_for_its_generation_to_be_confirmed() {
        let interest = std::sync::Arc::new(Interest::default());
        let generation = interest.add(&pattern("a.b"));
        let waiter = {
            let interest = std::sync::Arc::clone(&interest);
            tokio::spawn(async move { interest.confirmed(generation).await })
        };
        interest.confirm(generation - 1);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        interest.confirm(generation + 1);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        interest.unconfirm();
        assert!(
            futures::FutureExt::now_or_never(interest.confirmed(generation)).is_none(),
            "a lost connection confirms nothing"
        );
    }
}
