//! Messages delivered to subscriptions.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::Position;
use crate::error::Result;

/// One message published on a topic and delivered to a
/// [`Subscription`](crate::Subscription).
///
/// Cheap to clone: the topic is shared and the payload is a
/// reference-counted slice of the WebSocket frame it arrived in (never
/// copied).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use tickwire_client::{Message, Position};
///
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Quote { symbol: String, price: f64 }
///
/// let quote = Quote { symbol: "AAPL".into(), price: 189.5 };
/// let payload = rmp_serde::to_vec_named(&quote).unwrap();
/// let at = Position { epoch: 42, seq: 7 };
/// let msg = Message::new("stocks.AAPL", at, UNIX_EPOCH + Duration::from_secs(1), payload);
///
/// assert_eq!(msg.topic(), "stocks.AAPL");
/// assert_eq!(msg.seq(), 7);
/// assert_eq!(msg.position(), at);
/// assert_eq!(msg.time_micros(), 1_000_000);
/// assert_eq!(msg.decode::<Quote>().unwrap(), quote);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub(crate) topic: Arc<str>,
    pub(crate) epoch: u64,
    pub(crate) seq: u64,
    pub(crate) time_us: u64,
    pub(crate) payload: Bytes,
    pub(crate) skipped: u64,
}

impl Message {
    /// A message with the given fields, for tests of code that consumes
    /// messages. `time` before the Unix epoch is stored as the epoch.
    pub fn new(
        topic: impl Into<Arc<str>>,
        at: Position,
        time: SystemTime,
        payload: impl Into<Bytes>,
    ) -> Self {
        let time_us = time
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Message {
            topic: topic.into(),
            epoch: at.epoch,
            seq: at.seq,
            time_us,
            payload: payload.into(),
            skipped: 0,
        }
    }

    /// The topic the message was published on (never a pattern).
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic as a shared string, for keeping it without a copy.
    pub fn topic_arc(&self) -> &Arc<str> {
        &self.topic
    }

    /// The message's sequence number on its topic: starts at 1 and grows by 1
    /// per publish on that topic, as assigned by the broker.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The topic's epoch: sequence numbers count within it, and it changes
    /// when the topic was reset (its history lost, e.g. a broker restart).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The message's position, `(epoch, seq)`: what
    /// [`SubscribeOptions::since`](crate::SubscribeOptions::since) resumes
    /// after.
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// When the broker accepted the publish (broker clock). For display
    /// only: ordering, resuming and de-duplication use [`Message::position`],
    /// never clocks.
    pub fn time(&self) -> SystemTime {
        UNIX_EPOCH
            .checked_add(Duration::from_micros(self.time_us))
            .unwrap_or(UNIX_EPOCH)
    }

    /// [`Message::time`] as microseconds since the Unix epoch, exactly as
    /// sent by the broker.
    pub fn time_micros(&self) -> u64 {
        self.time_us
    }

    /// The raw payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The raw payload, consuming the message.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// Deserializes the payload from MessagePack (as written by
    /// [`Client::publish`](crate::Client::publish)).
    ///
    /// # Errors
    ///
    /// [`Error::Decode`](crate::Error::Decode) if the payload is not
    /// MessagePack of the shape `T` expects.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        Ok(rmp_serde::from_slice(&self.payload)?)
    }

    /// How many messages this subscription dropped, because its buffer was
    /// full, immediately before this one. Zero unless the application fell
    /// behind; see [`Subscription::dropped`](crate::Subscription::dropped).
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}
