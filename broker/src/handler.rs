//! What a WebSocket connection does with the messages it receives.
//!
//! The connection layer ([`crate::connection`]) is the same for every
//! WebSocket the broker serves: framing, UTF-8 checks, size limits,
//! ping/pong, keepalive, the message timeout and the close handshake. What
//! differs is the [`MessageHandler`] it hands each whole message to: a
//! [`crate::session::Session`] on `/ws` (tickwire's protocol), an
//! [`crate::echo::Echo`] on the echo listener (conformance testing).

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use tickwire_protocol::CloseCode;
use tickwire_protocol::ws::MessageKind;

use crate::outbound::OutboundQueue;
use crate::state::BrokerState;
use crate::tls::PeerIdentity;

/// Handles the messages of one WebSocket connection. Replies go through the
/// connection's outbound queue, which the handler is given when it is
/// created; to end the connection it closes that queue with a code.
pub trait MessageHandler: Send {
    /// Handles one whole message (reassembled if it was fragmented; a text
    /// message's payload is valid UTF-8).
    fn on_message(&mut self, state: &Arc<BrokerState>, kind: MessageKind, payload: Bytes);

    /// When the connection's authorization ends, and the code it is then
    /// closed with; `None`: never. Asked again after every message, since
    /// one may move it.
    fn expiry(&self) -> Option<(SystemTime, CloseCode)> {
        None
    }

    /// Who the client is according to its verified TLS client certificate
    /// (`tls_client_ca_file`), for the logs; `None` without one.
    fn peer_identity(&self) -> Option<&PeerIdentity> {
        None
    }

    /// A subscriber queue that the messages just handled backed up (its
    /// fan-out outran its draining socket), asked after each read's
    /// messages. While one is returned the connection stops reading until
    /// [`OutboundQueue::drained`] resolves: producer backpressure. `None`
    /// (the default): keep reading.
    fn backlog(&mut self) -> Option<Arc<OutboundQueue>> {
        None
    }

    /// Gives back what the handler holds in the broker (subscriptions,
    /// presence), once the connection stops reading.
    fn release(&mut self, _state: &Arc<BrokerState>) {}
}
