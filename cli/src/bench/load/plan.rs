//! What a load run does: its topics, subscribers per topic and publishers,
//! and which connection serves which topic.

/// What to run.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// `fanout` or `topics`, for messages and the report.
    pub bench: &'static str,
    /// Topic names.
    pub topics: Vec<String>,
    /// Subscriber connections per topic.
    pub subscribers_per_topic: usize,
    /// Publisher connections.
    pub publishers: usize,
}

impl LoadPlan {
    /// Subscriber connections in total.
    pub(super) fn subscriber_count(&self) -> usize {
        self.topics.len() * self.subscribers_per_topic
    }

    /// The topic subscriber `sub` subscribes to.
    pub(super) fn topic_of(&self, sub: usize) -> usize {
        sub / self.subscribers_per_topic
    }

    /// The topics publisher `p` publishes to: every M-th topic, or (with
    /// more publishers than topics) one shared topic.
    pub(super) fn publisher_topics(&self, p: usize) -> Vec<usize> {
        let t = self.topics.len();
        let m = self.publishers;
        let mine: Vec<usize> = (p..t).step_by(m).collect();
        if mine.is_empty() { vec![p % t] } else { mine }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(topics: usize, k: usize, publishers: usize) -> LoadPlan {
        LoadPlan {
            bench: "topics",
            topics: (0..topics).map(|t| format!("t{t}")).collect(),
            subscribers_per_topic: k,
            publishers,
        }
    }

    #[test]
    fn subscribers_are_grouped_by_topic() {
        let p = plan(3, 2, 1);
        assert_eq!(p.subscriber_count(), 6);
        let topics: Vec<usize> = (0..6).map(|s| p.topic_of(s)).collect();
        assert_eq!(topics, [0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn publishers_take_every_mth_topic_or_share_one() {
        let p = plan(5, 1, 2);
        assert_eq!(p.publisher_topics(0), [0, 2, 4]);
        assert_eq!(p.publisher_topics(1), [1, 3]);
        let p = plan(2, 1, 3);
        assert_eq!(p.publisher_topics(2), [0]);
    }
}
