//! Which broker each connection of a load run goes to, and the run's
//! deliveries per broker.
//!
//! By default every connection goes to `--url`. With `--subscriber-url`
//! (repeatable) subscriber `i` goes to the `i mod n`-th of the n URLs given,
//! in the order given; `--publisher-url` does the same for publishers. A
//! URL named twice gets twice the share. This is how a run spreads its
//! subscribers over the nodes of a cluster (`serve --cluster`) and
//! publishes on another node: every count (expected deliveries, loss, seq
//! gaps, duplicates) stays per subscriber, so it means the same whichever
//! node a subscriber is on.

use serde::Serialize;

use super::super::raw_client::Target;

/// The brokers of a run, resolved.
#[derive(Debug, Clone)]
pub struct Nodes {
    /// `--url`, as given (the report's title).
    main_url: String,
    /// Where subscribers go, round-robin; never empty.
    subscribers: Vec<Target>,
    /// Where publishers go, round-robin; never empty.
    publishers: Vec<Target>,
}

/// One broker's share of a run, in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeShare {
    /// The broker's URL.
    pub url: String,
    /// Subscriber connections to it.
    pub subscribers: usize,
    /// Publisher connections to it.
    pub publishers: usize,
    /// Messages its subscribers received.
    pub deliveries: u64,
}

impl Nodes {
    /// Subscribers round-robin over `subscribers`, publishers over
    /// `publishers` (the caller puts `--url`'s target in a list that was
    /// not given). `None` if a list is empty.
    pub fn new(
        main_url: String,
        subscribers: Vec<Target>,
        publishers: Vec<Target>,
    ) -> Option<Nodes> {
        (!subscribers.is_empty() && !publishers.is_empty()).then_some(Nodes {
            main_url,
            subscribers,
            publishers,
        })
    }

    /// `--url` as given.
    pub(super) fn main_url(&self) -> &str {
        &self.main_url
    }

    /// The broker of subscriber `i`.
    pub(super) fn subscriber(&self, i: usize) -> &Target {
        &self.subscribers[i % self.subscribers.len()]
    }

    /// The broker of publisher `p`.
    pub(super) fn publisher(&self, p: usize) -> &Target {
        &self.publishers[p % self.publishers.len()]
    }

    /// The URLs subscribers go to, in round-robin order.
    pub(super) fn subscriber_urls(&self) -> Vec<String> {
        self.subscribers.iter().map(|t| t.url.clone()).collect()
    }

    /// The URLs publishers go to, in round-robin order.
    pub(super) fn publisher_urls(&self) -> Vec<String> {
        self.publishers.iter().map(|t| t.url.clone()).collect()
    }

    /// Whether every connection goes to one URL.
    pub(super) fn is_single(&self) -> bool {
        self.subscribers
            .iter()
            .chain(&self.publishers)
            .all(|t| t.url == self.subscribers[0].url)
    }

    /// Where connections go, for messages: `to URL`, or the two lists.
    pub(super) fn describe(&self) -> String {
        if self.is_single() {
            format!("to {}", self.subscribers[0].url)
        } else {
            format!(
                "(subscribers round-robin to {}; publishers to {})",
                self.subscriber_urls().join(" "),
                self.publisher_urls().join(" ")
            )
        }
    }

    /// Each distinct URL's share of `subscribers` subscribers (with the
    /// messages each received, `received(i)`) and `publishers` publishers,
    /// in the order the URLs were first named (subscribers' first).
    pub(super) fn shares(
        &self,
        subscribers: usize,
        publishers: usize,
        received: impl Fn(usize) -> u64,
    ) -> Vec<NodeShare> {
        let mut shares: Vec<NodeShare> = Vec::new();
        let mut share_of = |url: &str| -> usize {
            match shares.iter().position(|s| s.url == url) {
                Some(k) => k,
                None => {
                    shares.push(NodeShare {
                        url: url.to_owned(),
                        subscribers: 0,
                        publishers: 0,
                        deliveries: 0,
                    });
                    shares.len() - 1
                }
            }
        };
        let subs: Vec<(usize, u64)> = (0..subscribers)
            .map(|i| (share_of(&self.subscriber(i).url), received(i)))
            .collect();
        let pubs: Vec<usize> = (0..publishers)
            .map(|p| share_of(&self.publisher(p).url))
            .collect();
        for (k, got) in subs {
            shares[k].subscribers += 1;
            shares[k].deliveries += got;
        }
        for k in pubs {
            shares[k].publishers += 1;
        }
        shares
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(port: u16) -> Target {
        Target {
            url: format!("ws://127.0.0.1:{port}/ws"),
            addr: ([127, 0, 0, 1], port).into(),
            host: format!("127.0.0.1:{port}"),
            path: "/ws".into(),
        }
    }

    #[test]
    fn subscribers_and_publishers_go_round_robin_over_their_lists() {
        let nodes = Nodes::new(
            target(1).url,
            vec![target(1), target(2), target(3)],
            vec![target(4)],
        )
        .expect("two lists");
        let ports: Vec<u16> = (0..7).map(|i| nodes.subscriber(i).addr.port()).collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(nodes.publisher(0).addr.port(), 4);
        assert_eq!(nodes.publisher(5).addr.port(), 4);
        assert!(!nodes.is_single());
        let one = Nodes::new(target(1).url, vec![target(1)], vec![target(1)]);
        assert!(one.is_some_and(|n| n.is_single()));
        assert!(Nodes::new(target(1).url, vec![], vec![target(1)]).is_none());
    }

    #[test]
    fn shares_count_each_subscriber_once_on_its_node() {
        let nodes = Nodes::new(
            target(1).url,
            vec![target(1), target(2), target(1)],
            vec![target(3), target(1)],
        )
        .expect("two lists");
        // Subscriber i received 10 × i messages: node 1 has 0, 2, 3, 5
        // (0 + 20 + 30 + 50), node 2 has 1, 4 (10 + 40).
        let shares = nodes.shares(6, 3, |i| 10 * i as u64);
        let url = |port: u16| target(port).url;
        assert_eq!(
            shares,
            [
                NodeShare {
                    url: url(1),
                    subscribers: 4,
                    publishers: 1,
                    deliveries: 100,
                },
                NodeShare {
                    url: url(2),
                    subscribers: 2,
                    publishers: 0,
                    deliveries: 50,
                },
                NodeShare {
                    url: url(3),
                    subscribers: 0,
                    publishers: 2,
                    deliveries: 0,
                },
            ]
        );
        let total: u64 = shares.iter().map(|s| s.deliveries).sum();
        assert_eq!(total, (0..6).map(|i| 10 * i as u64).sum::<u64>());
    }
}
