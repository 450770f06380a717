//! What one client may make the broker keep or do, beyond the shape of its
//! requests: whether a publish may ask for `retain`.

use thiserror::Error;
use tickwire_protocol::topic::Topic;

use crate::config::BrokerConfig;

/// A publish asked for `retain` on a topic where clients may not.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "retain is not allowed on topic `{topic}`; an operator allows it with --client-retain-patterns (e.g. `{topic}` or `>`) or client_retain = true in a [[topic]] policy"
)]
pub struct RetainNotAllowed {
    /// The topic of the refused publish.
    pub topic: String,
}

/// Decides whether a publish may ask the broker to retain its message on
/// `topic` (WebSocket `PUBLISH` option `retain`, HTTP `?retain=true`).
///
/// This is the one place where that is decided; the WebSocket session and
/// HTTP publish both ask it before publishing. Today the configuration
/// decides ([`BrokerConfig::client_retain_allowed`]: the topic's
/// `[[topic]]` policy, else `client_retain_patterns`); a grant carried by
/// the client's credentials would be added here.
pub fn may_retain(config: &BrokerConfig, topic: Topic<'_>) -> Result<(), RetainNotAllowed> {
    if config.client_retain_allowed(topic.as_str()) {
        Ok(())
    } else {
        Err(RetainNotAllowed {
            topic: topic.as_str().to_owned(),
        })
    }
}
