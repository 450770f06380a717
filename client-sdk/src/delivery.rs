//! What a subscription delivers in order: messages and, with
//! [`SubscribeOptions::join_leave`](crate::SubscribeOptions::join_leave),
//! joins and leaves of the topics it covers.

use crate::message::Message;
use crate::presence::PresenceChange;

/// One item of a [`Subscription`](crate::Subscription), read with
/// [`Subscription::recv_delivery`](crate::Subscription::recv_delivery):
/// messages and join/leave changes in the order the broker sent them, so a
/// client that joins and then publishes is seen as [`Delivery::Join`]
/// before its [`Delivery::Message`], and one that publishes and then leaves
/// as the message before [`Delivery::Leave`].
///
/// Join/leave changes share the subscription's buffer with its messages:
/// when it is full they are dropped too and counted in
/// [`Subscription::dropped`](crate::Subscription::dropped) (but not in
/// [`Message::skipped`], which counts messages only).
/// [`Subscription::recv`](crate::Subscription::recv) and the
/// [`Stream`](futures_core::Stream) implementation return the messages
/// only, skipping the changes.
///
/// Marked `#[non_exhaustive]`: later versions may deliver more kinds of
/// items, so keep a catch-all arm.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Delivery {
    /// A message published on a topic the subscription covers.
    Message(Message),
    /// Someone joined a topic the subscription covers (with presence).
    Join(PresenceChange),
    /// Someone left a topic the subscription covers (with presence).
    Leave(PresenceChange),
}

impl Delivery {
    /// The message, if this is one.
    pub fn into_message(self) -> Option<Message> {
        match self {
            Delivery::Message(msg) => Some(msg),
            Delivery::Join(_) | Delivery::Leave(_) => None,
        }
    }
}
