//! Producer backpressure for HTTP publishes.
//!
//! A WebSocket publisher is slowed down by no longer reading its socket
//! while a subscriber queue it published to is backed up
//! ([`crate::handler::MessageHandler::backlog`]). An HTTP request cannot
//! be paused that way between publishes, so before each publish the
//! request waits, at most `publish_backpressure_wait`, for the queue that
//! the topic's last fan-out found backed up
//! ([`crate::registry::TopicRegistry::backlog`]) to drain. If it is still
//! backed up then, the publish is refused with `overloaded` (503 with
//! `Retry-After`) and nothing is published: the broker, not the
//! subscriber, is behind, and the publisher is asked to slow down instead
//! of the subscriber being cut as a slow consumer.

use hyper::header::{HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use tickwire_protocol::topic::Topic;
use tokio::time::Instant;

use crate::server_api::reply::{Body, json_error};
use crate::state::BrokerState;

/// The error code of a publish refused because the topic's fan-out is
/// backed up (HTTP only; docs/http-api.md).
pub const OVERLOADED: &str = "overloaded";

/// What an `overloaded` refusal says.
pub const OVERLOADED_MESSAGE: &str = "the broker is behind delivering this topic's messages; nothing was published; retry after the Retry-After delay";

/// The `Retry-After` value (seconds) of an `overloaded` answer.
const RETRY_AFTER_SECONDS: &str = "1";

/// The deadline of the backpressure waits of a request that starts now.
pub fn deadline(state: &BrokerState) -> Instant {
    Instant::now() + state.config.publish_backpressure_wait
}

/// Whether `topic` may be published to: at once when its last fan-out
/// found no subscriber queue backed up, else once those queues drained (or
/// stopped draining: a stalled subscriber is left to its topic's
/// slow-consumer policy), waiting until `deadline` at most. Counts a
/// refusal in `tickwire_publish_overloaded_total`.
pub async fn clear(state: &BrokerState, topic: Topic<'_>, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        let Some(queue) = state.registry.backlog(topic) else {
            return true;
        };
        if tokio::time::timeout_at(deadline, queue.drained())
            .await
            .is_err()
        {
            break;
        }
    }
    let clear = state.registry.backlog(topic).is_none();
    if !clear {
        state.metrics.publish_overloaded.inc();
    }
    clear
}

/// Adds `Retry-After` to an answer that refused a publish as `overloaded`.
pub fn retry_after(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    response
}

/// The 503 `overloaded` answer to a single publish, with `Retry-After`.
pub fn overloaded() -> Response<Body> {
    retry_after(json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        OVERLOADED,
        OVERLOADED_MESSAGE,
    ))
}
