//! The subscriber task: one Redis pub/sub connection whose subscriptions
//! follow this node's [`crate::cluster::interest::Interest`], and whose
//! messages are fanned out to local subscribers through the registry's
//! encode-once path ([`crate::registry::TopicRegistry::deliver_remote`]).
//! Presence events on a topic's channel go to
//! [`crate::registry::TopicRegistry::deliver_presence`]; the connection is
//! also subscribed to the control channel
//! ([`crate::cluster::presence::control`]), whose disconnects close this
//! node's matching connections.
//!
//! Receiving and changing subscriptions run side by side on the
//! connection: waiting for Redis to confirm a `SUBSCRIBE` never holds up
//! the fan-out of messages already received. The fan-out is synchronous
//! (queue pushes, no `.await`, no map guard held across one). Each time
//! Redis has confirmed the wanted subscriptions, the task reports their
//! generation ([`crate::cluster::interest::Interest::confirm`]), which new
//! subscriptions wait for. The subscriber side counts as up (for
//! readiness) once the first set of subscriptions on a connection is
//! confirmed. When the connection is lost the node reports not ready,
//! reconnects every [`RECONNECT_INTERVAL`] and subscribes again to
//! everything it needs.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use redis::Msg;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::time::Instant;

use crate::cluster::backplane::Backplane;
use crate::cluster::presence::control::{CONTROL_CHANNEL, ControlTarget, parse_control};
use crate::cluster::presence::event::{is_event, parse_event};
use crate::cluster::presence::to_event;
use crate::cluster::publisher::{PING_INTERVAL, RECONNECT_INTERVAL, REDIS_TIMEOUT};
use crate::cluster::wire::{Subscription, parse_message, topic_of_channel};
use crate::directory::{DisconnectCode, DisconnectTarget};
use crate::metrics::Metrics;
use crate::outbound::OutboundQueue;
use crate::state::BrokerState;

/// Channels or patterns per `SUBSCRIBE`/`UNSUBSCRIBE` command.
const CHUNK: usize = 128;

/// Runs until shutdown; does nothing without a backplane.
pub async fn run(state: Arc<BrokerState>) {
    let Some(backplane) = state.backplane.as_ref() else {
        return;
    };
    let mut was_up = false;
    loop {
        if let Some(pubsub) = backplane.target().pubsub("cluster subscriber").await {
            tracing::info!("cluster subscriber: connected to Redis");
            if was_up {
                state.metrics.backplane_reconnects.inc();
            }
            was_up = true;
            let (sink, stream) = pubsub.split();
            let why = tokio::select! {
                _ = state.shutdown.cancelled() => return,
                () = receive(&state, stream) => "the connection closed".to_owned(),
                why = keep_subscriptions(backplane, &state.metrics, sink) => why,
            };
            backplane.health.subscriber_lost();
            backplane.interest.unconfirm();
            state.metrics.backplane_channels.set(0);
            tracing::warn!(reason = %why, "cluster subscriber: lost the Redis connection; reconnecting");
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(RECONNECT_INTERVAL) => {}
        }
    }
}

/// Fans out every message received until the connection closes.
///
/// When a fan-out finds a local subscriber queue backed up (the node is
/// behind, not the subscriber), the next message waits until that queue
/// drains, at most `publish_backpressure_wait`: Redis keeps the messages
/// meanwhile (within its pub/sub output buffer limit), instead of every
/// local subscriber's queue growing until it is cut as a slow consumer.
async fn receive(state: &BrokerState, mut stream: PubSubStream) {
    let mut last_event = LastEvent::default();
    while let Some(message) = stream.next().await {
        let backlog = deliver(state, &message, &mut last_event);
        if backlog.is_empty() {
            continue;
        }
        let deadline = Instant::now() + state.config.publish_backpressure_wait;
        for queue in backlog {
            let _ = tokio::time::timeout_at(deadline, queue.drained()).await;
        }
    }
}

/// The last presence event received, to deliver each event once.
///
/// A node subscribed to a topic's channel and to patterns covering it gets
/// one copy of each `PUBLISH` per subscription. Messages are told apart by
/// their seq (the registry drops repeats); events have none, but Redis
/// writes all copies of one `PUBLISH` to a connection one after the other,
/// and two different events of one channel are never byte for byte equal
/// when adjacent (an entry's JOIN and LEAVE alternate). So an event equal
/// to the one just before it, on the same channel, is a copy.
#[derive(Debug, Default)]
struct LastEvent {
    channel: String,
    bytes: Vec<u8>,
}

impl LastEvent {
    /// Whether `bytes` on `channel` is a copy of the last event; if not, it
    /// becomes the last event.
    fn is_copy(&mut self, channel: &str, bytes: &[u8]) -> bool {
        if self.channel == channel && self.bytes == bytes {
            return true;
        }
        channel.clone_into(&mut self.channel);
        bytes.clone_into(&mut self.bytes);
        false
    }
}

/// Delivers one message from Redis; returns the local subscriber queues
/// its fan-out found backed up.
fn deliver(
    state: &BrokerState,
    message: &Msg,
    last_event: &mut LastEvent,
) -> Vec<Arc<OutboundQueue>> {
    let name = message.get_channel_name();
    let bytes = message.get_payload_bytes();
    if name == CONTROL_CHANNEL {
        control(state, bytes);
        return Vec::new();
    }
    let Some(topic) = topic_of_channel(name) else {
        malformed(state, name);
        return Vec::new();
    };
    if is_event(bytes) {
        let Some(event) = parse_event(bytes) else {
            malformed(state, name);
            return Vec::new();
        };
        state.metrics.backplane_received.inc();
        if !last_event.is_copy(name, bytes) {
            state.registry.deliver_presence(topic, &to_event(&event));
        }
        return Vec::new();
    }
    let Some(parsed) = parse_message(bytes) else {
        malformed(state, name);
        return Vec::new();
    };
    state.metrics.backplane_received.inc();
    match state
        .registry
        .deliver_remote(topic, parsed.at, parsed.time_us, parsed.payload)
    {
        Ok((_, backlog)) => backlog,
        Err(e) => {
            tracing::warn!(topic = topic.as_str(), error = %e, "cluster subscriber: message not delivered");
            state
                .metrics
                .backplane_dropped
                .with_label_values(&["registry"])
                .inc();
            Vec::new()
        }
    }
}

/// Counts and logs a message on `channel` that tickwire did not write.
fn malformed(state: &BrokerState, channel: &str) {
    tracing::warn!(
        channel,
        "cluster subscriber: ignored a message not written by tickwire"
    );
    state
        .metrics
        .backplane_dropped
        .with_label_values(&["malformed"])
        .inc();
}

/// Applies a message of the control channel: a cluster-wide disconnect
/// closes this node's matching connections.
fn control(state: &BrokerState, bytes: &[u8]) {
    let Some(disconnect) = parse_control(bytes) else {
        return malformed(state, CONTROL_CHANNEL);
    };
    let target = match disconnect.target {
        ControlTarget::Client(client) => DisconnectTarget::Client(client.to_owned()),
        ControlTarget::User(user) => DisconnectTarget::User(user.to_owned()),
    };
    let code = DisconnectCode {
        code: disconnect.code,
        reason: Arc::from(disconnect.reason),
    };
    let closed = state.directory.close(&target, code);
    tracing::info!(
        ?target,
        closed,
        "cluster: disconnect from the control channel applied"
    );
}

/// Makes the connection's subscriptions follow the interest, confirming
/// each generation once Redis has it, and pings when idle; returns why it
/// stopped (the connection failed).
async fn keep_subscriptions(
    backplane: &Backplane,
    metrics: &Metrics,
    mut sink: PubSubSink,
) -> String {
    let mut current: HashSet<Subscription> = HashSet::new();
    let control = Subscription::Channel(CONTROL_CHANNEL.to_owned());
    loop {
        let (generation, wanted) = backplane.interest.wanted();
        let mut wanted: HashSet<Subscription> = wanted.into_iter().collect();
        wanted.insert(control.clone());
        let add: Vec<&Subscription> = wanted.difference(&current).collect();
        let drop: Vec<&Subscription> = current.difference(&wanted).collect();
        if let Err(why) = change(&mut sink, &add, true).await {
            return why;
        }
        if let Err(why) = change(&mut sink, &drop, false).await {
            return why;
        }
        current = wanted;
        // The control channel is not a topic's: not counted.
        metrics.backplane_channels.set(current.len() as i64 - 1);
        backplane.interest.confirm(generation);
        backplane.health.set_subscriber(true);
        tokio::select! {
            () = backplane.interest.changed() => {}
            _ = tokio::time::sleep(PING_INTERVAL) => {
                let started = Instant::now();
                let ping = tokio::time::timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>()).await;
                metrics
                    .backplane_redis_seconds
                    .with_label_values(&["ping"])
                    .observe(started.elapsed().as_secs_f64());
                match ping {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return format!("PING failed: {e}"),
                    Err(_) => return "PING not answered in time".to_owned(),
                }
            }
        }
    }
}

/// Subscribes to (`subscribe`) or unsubscribes from `names`, in chunks,
/// each confirmed within [`REDIS_TIMEOUT`].
async fn change(
    sink: &mut PubSubSink,
    names: &[&Subscription],
    subscribe: bool,
) -> Result<(), String> {
    for pattern in [false, true] {
        let chunk_names: Vec<&str> = names
            .iter()
            .filter_map(|s| match s {
                Subscription::Channel(n) if !pattern => Some(n.as_str()),
                Subscription::Pattern(n) if pattern => Some(n.as_str()),
                _ => None,
            })
            .collect();
        for chunk in chunk_names.chunks(CHUNK) {
            let call = async {
                match (pattern, subscribe) {
                    (false, true) => sink.subscribe(chunk).await,
                    (false, false) => sink.unsubscribe(chunk).await,
                    (true, true) => sink.psubscribe(chunk).await,
                    (true, false) => sink.punsubscribe(chunk).await,
                }
            };
            confirm(call).await?;
        }
    }
    Ok(())
}

async fn confirm(call: impl Future<Output = redis::RedisResult<()>>) -> Result<(), String> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("subscription change failed: {e}")),
        Err(_) => Err("subscription change not confirmed in time".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::LastEvent;

    #[test]
    fn an_event_equal_to_the_one_before_on_its_channel_is_a_copy() {
        let mut last = LastEvent::default();
        assert!(!last.is_copy("tickwire:{a}:msg", b"P J 0 c -\n"));
        assert!(
            last.is_copy("tickwire:{a}:msg", b"P J 0 c -\n"),
            "the pattern copy"
        );
        assert!(
            !last.is_copy("tickwire:{b}:msg", b"P J 0 c -\n"),
            "another channel"
        );
        assert!(!last.is_copy("tickwire:{b}:msg", b"P L 0 c -\n"));
        assert!(
            !last.is_copy("tickwire:{b}:msg", b"P J 0 c -\n"),
            "joined again"
        );
    }
}
