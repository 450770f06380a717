//! The echo service (`echo_listen`): a WebSocket endpoint that sends every
//! message back, for conformance test suites (Autobahn's fuzzing client)
//! that exercise the broker's WebSocket layer.
//!
//! Its connections run on the same connection layer as `/ws`
//! ([`crate::connection`]): only the [`MessageHandler`] differs. A text
//! message comes back as text, a binary one as binary, in one frame each,
//! through the connection's outbound queue, so the queue budget, the close
//! handshake and every limit apply as on `/ws`. With permessage-deflate
//! negotiated (`compression` on), a reply is compressed as a delivery is
//! (at `compression_level`, from `compression_min_size`, plain when that
//! does not shrink it). There is no authentication: never expose the echo
//! listener.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tickwire_protocol::deflate;
use tickwire_protocol::ws::{self, MessageKind};

use crate::compression::CompressionSettings;
use crate::handler::MessageHandler;
use crate::outbound::OutboundQueue;
use crate::state::BrokerState;

/// Echoes every message back on its connection.
#[derive(Debug)]
pub struct Echo {
    queue: Arc<OutboundQueue>,
    deflate: Option<CompressionSettings>,
}

impl Echo {
    /// An echo handler replying through `queue`, compressing replies with
    /// `deflate` (permessage-deflate was negotiated).
    pub fn new(queue: Arc<OutboundQueue>, deflate: Option<CompressionSettings>) -> Self {
        Echo { queue, deflate }
    }

    /// The reply frame for `payload`.
    fn frame(&self, kind: MessageKind, payload: &[u8]) -> Bytes {
        if let Some(settings) = self.deflate.filter(|s| payload.len() >= s.min_size) {
            let compressed = deflate::compress(payload, settings.level);
            if compressed.len() < payload.len() {
                return ws::compressed_server_frame(kind.opcode(), &compressed);
            }
        }
        ws::server_frame(kind.opcode(), payload)
    }
}

impl MessageHandler for Echo {
    fn on_message(&mut self, _state: &Arc<BrokerState>, kind: MessageKind, payload: Bytes) {
        let frame = self.frame(kind, &payload);
        // An overflow (the peer does not read) closes the connection with
        // 4001, as on /ws.
        self.queue.push(frame, Instant::now());
    }
}
