//! The echo service (`echo_listen`): a WebSocket endpoint that sends every
//! message back, for conformance test suites (Autobahn's fuzzing client)
//! that exercise the broker's WebSocket layer.
//!
//! Its connections run on the same connection layer as `/ws`
//! ([`crate::connection`]): only the [`MessageHandler`] differs. A text
//! message comes back as text, a binary one as binary, in one frame each,
//! through the connection's outbound queue, so the queue budget, the close
//! handshake and every limit apply as on `/ws`. There is no authentication:
//! never expose the echo listener.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tickwire_protocol::ws::{self, MessageKind};

use crate::handler::MessageHandler;
use crate::outbound::OutboundQueue;
use crate::state::BrokerState;

/// Echoes every message back on its connection.
#[derive(Debug)]
pub struct Echo {
    queue: Arc<OutboundQueue>,
}

impl Echo {
    /// An echo handler replying through `queue`.
    pub fn new(queue: Arc<OutboundQueue>) -> Self {
        Echo { queue }
    }
}

impl MessageHandler for Echo {
    fn on_message(&mut self, _state: &Arc<BrokerState>, kind: MessageKind, payload: Bytes) {
        let frame = ws::server_frame(kind.opcode(), &payload);
        // An overflow (the peer does not read) closes the connection with
        // 4001, as on /ws.
        self.queue.push(frame, Instant::now());
    }
}
