//! The busiest topics, for `GET /v1/stats` and the dashboard: a sampler
//! task, run only with `--dashboard`, that once a second reads every
//! topic's latest sequence number and keeps the [`TOP`] topics whose
//! numbers grew the most since the previous sample.
//!
//! The work per tick is bounded: at most [`MAX_SAMPLED`] topics are read
//! (each with a `try_lock`, never waiting on a publish), and the previous
//! sample is one `u64 -> u64` map of at most as many entries. A topic is
//! known by its id, so a topic that was forgotten and created again starts
//! over rather than showing a bogus rate.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::registry::TopicRegistry;

/// How many busiest topics are kept.
pub const TOP: usize = 10;

/// Most topics read per sample; with more topics, the busiest list covers
/// the first this many of the registry's map.
pub const MAX_SAMPLED: usize = 100_000;

/// Time between two samples.
pub const PERIOD: Duration = Duration::from_secs(1);

/// One of the busiest topics.
#[derive(Debug, Clone, PartialEq)]
pub struct BusyTopic {
    /// The topic.
    pub topic: String,
    /// Messages per second over the last sample period.
    pub rate: f64,
}

/// The latest busiest-topics list; `None` until the sampler has compared
/// two samples (and always without `--dashboard`).
#[derive(Debug, Default)]
pub struct Busiest {
    latest: Mutex<Option<Vec<BusyTopic>>>,
}

impl Busiest {
    /// The latest list, busiest first.
    pub fn latest(&self) -> Option<Vec<BusyTopic>> {
        self.latest.lock().clone()
    }

    /// Samples `registry` every [`PERIOD`] into this list until `shutdown`
    /// is cancelled.
    pub async fn run(&self, registry: &TopicRegistry, shutdown: &CancellationToken) {
        let mut interval = tokio::time::interval(PERIOD);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut previous: Option<(Instant, Sample)> = None;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                () = shutdown.cancelled() => return,
            }
            let now = Instant::now();
            let current = match previous.take() {
                None => sample(registry, &Sample::new(), Duration::ZERO).0,
                Some((at, before)) => {
                    let (current, busiest) = sample(registry, &before, now.duration_since(at));
                    *self.latest.lock() = Some(busiest);
                    current
                }
            };
            previous = Some((now, current));
        }
    }
}

/// Sequence numbers of one sample, by topic id.
type Sample = HashMap<u64, u64>;

/// Reads one sample from `registry` and returns it with the [`TOP`]
/// topics that grew the most since `previous`, `elapsed` ago.
fn sample(
    registry: &TopicRegistry,
    previous: &Sample,
    elapsed: Duration,
) -> (Sample, Vec<BusyTopic>) {
    let mut current = Sample::with_capacity(previous.len());
    // (growth, topic), at most TOP, largest first.
    let mut top: Vec<(u64, String)> = Vec::with_capacity(TOP + 1);
    registry.for_each_position(MAX_SAMPLED, |name, id, seq| {
        current.insert(id, seq);
        let Some(before) = previous.get(&id) else {
            return;
        };
        let grown = seq.saturating_sub(*before);
        if grown == 0 || (top.len() == TOP && top.last().is_some_and(|(g, _)| *g >= grown)) {
            return;
        }
        let at = top.partition_point(|(g, _)| *g >= grown);
        top.insert(at, (grown, name.to_owned()));
        top.truncate(TOP);
    });
    let seconds = elapsed.as_secs_f64().max(f64::EPSILON);
    let busiest = top
        .into_iter()
        .map(|(grown, topic)| BusyTopic {
            topic,
            rate: grown as f64 / seconds,
        })
        .collect();
    (current, busiest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::registry::RegistryLimits;
    use tickwire_protocol::topic::Topic;

    #[test]
    fn the_topics_that_grew_most_come_first_and_new_topics_wait_a_sample() {
        let registry = TopicRegistry::new(
            RegistryLimits {
                max_topics: 100,
                topic_idle_ttl: Duration::from_secs(60),
                max_retained_bytes: 1 << 20,
            },
            Vec::new(),
            Metrics::new(),
        );
        let publish = |name: &str, times: usize| {
            for _ in 0..times {
                registry
                    .publish(Topic::new(name).unwrap(), b"x", false)
                    .unwrap();
            }
        };
        for i in 0..(TOP + 3) {
            publish(&format!("t.{i}"), 1);
        }
        let (first, busiest) = sample(&registry, &Sample::new(), Duration::from_secs(1));
        assert!(busiest.is_empty(), "no previous sample: no rate yet");
        for i in 0..(TOP + 3) {
            publish(&format!("t.{i}"), i);
        }
        publish("new", 100);
        let (_, busiest) = sample(&registry, &first, Duration::from_millis(500));
        assert_eq!(busiest.len(), TOP);
        assert_eq!(busiest[0].topic, format!("t.{}", TOP + 2));
        assert_eq!(busiest[0].rate, ((TOP + 2) * 2) as f64);
        assert!(busiest.windows(2).all(|w| w[0].rate >= w[1].rate));
        assert!(busiest.iter().all(|b| b.topic != "new" && b.topic != "t.0"));
    }
}
