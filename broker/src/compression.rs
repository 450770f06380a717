//! permessage-deflate on the delivery path: each published message is
//! compressed at most once, and the compressed frame is shared.
//!
//! The broker answers every permessage-deflate offer with
//! `server_no_context_takeover` ([`tickwire_protocol::deflate`]), so a
//! compressed message does not depend on what was sent before on its
//! connection: one compressed frame serves every subscriber that negotiated
//! the extension. Fan-out wraps the delivery frame in a [`SharedFrame`];
//! the first subscriber with [`crate::pattern_trie::Subscriber::deflate`]
//! set makes it compress the frame's payload and build the RSV1 frame, and
//! every later one gets a clone of the same [`Bytes`]. A message with no
//! such subscriber is never compressed; a frame under `compression_min_size`,
//! or one compression does not shrink, goes out plain to everyone.
//!
//! Compression state is per thread ([`tickwire_protocol::deflate::compress`]),
//! never per connection, so idle connections cost nothing for it.

use std::cell::OnceCell;

use bytes::Bytes;
use tickwire_protocol::deflate;
use tickwire_protocol::ws::{self, FrameHeader, OpCode, Role};

use crate::config::BrokerConfig;
use crate::metrics::Metrics;

/// How delivery frames are compressed (`compression_min_size`,
/// `compression_level`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionSettings {
    /// Frames smaller than this are sent plain.
    pub min_size: usize,
    /// The DEFLATE level, 0 to 9.
    pub level: u32,
}

impl CompressionSettings {
    /// The settings of `config`.
    pub fn from_config(config: &BrokerConfig) -> Self {
        CompressionSettings {
            min_size: config.compression_min_size,
            level: config.compression_level,
        }
    }
}

impl Default for CompressionSettings {
    fn default() -> Self {
        CompressionSettings {
            min_size: 256,
            level: 1,
        }
    }
}

/// One delivery frame on its way to a message's subscribers: the plain
/// frame, and the frame for permessage-deflate subscribers, made on first
/// need.
#[derive(Debug)]
pub struct SharedFrame<'a> {
    plain: &'a Bytes,
    settings: CompressionSettings,
    metrics: &'a Metrics,
    deflated: OnceCell<Bytes>,
}

impl<'a> SharedFrame<'a> {
    /// Wraps `plain`, an unmasked single-frame binary message (the
    /// broker's delivery frame); nothing is compressed yet.
    pub fn new(plain: &'a Bytes, settings: CompressionSettings, metrics: &'a Metrics) -> Self {
        SharedFrame {
            plain,
            settings,
            metrics,
            deflated: OnceCell::new(),
        }
    }

    /// The frame for a subscriber: the plain one, or with `deflate` (it
    /// negotiated permessage-deflate) the shared compressed one.
    pub fn for_subscriber(&self, deflate: bool) -> Bytes {
        if deflate {
            self.deflated.get_or_init(|| self.compress()).clone()
        } else {
            self.plain.clone()
        }
    }

    /// Whether the compressed frame was made (for tests).
    pub fn compressed(&self) -> bool {
        self.deflated.get().is_some_and(|d| d != self.plain)
    }

    /// The RSV1 frame of the plain frame's payload, or the plain frame when
    /// it is under the minimum size or compression does not shrink it.
    fn compress(&self) -> Bytes {
        let plain = self.plain;
        if plain.len() < self.settings.min_size {
            return plain.clone();
        }
        let Ok(Some(header)) = FrameHeader::parse(plain, Role::Client) else {
            return plain.clone();
        };
        let payload = plain.get(header.header_len..).unwrap_or_default();
        let compressed = deflate::compress(payload, self.settings.level);
        let frame = if ws::server_header_len(compressed.len()) + compressed.len() < plain.len() {
            ws::compressed_server_frame(OpCode::Binary, &compressed)
        } else {
            plain.clone()
        };
        self.metrics.compression_messages.inc();
        self.metrics.compression_bytes_in.inc_by(plain.len() as u64);
        self.metrics
            .compression_bytes_out
            .inc_by(frame.len() as u64);
        frame
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use tickwire_protocol::ws::{FrameDecoder, Incoming, MessageKind};

    use super::*;

    fn settings(min_size: usize) -> CompressionSettings {
        CompressionSettings { min_size, level: 1 }
    }

    fn inflate(frame: &Bytes) -> Bytes {
        let mut decoder = FrameDecoder::new(Role::Client, 1 << 20).with_inflate(true);
        let mut buf = BytesMut::from(&frame[..]);
        match decoder.decode(&mut buf) {
            Ok(Some(Incoming::Message(MessageKind::Binary, body))) => body,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn compressed_once_and_shared() {
        let payload = br#"{"symbol":"ABC","price":101.25,"volume":1200}"#.repeat(20);
        let plain = ws::binary_frame(&payload);
        let metrics = Metrics::new();
        let shared = SharedFrame::new(&plain, settings(64), &metrics);
        assert_eq!(shared.for_subscriber(false), plain);
        assert!(!shared.compressed(), "no deflate subscriber yet");
        let a = shared.for_subscriber(true);
        let b = shared.for_subscriber(true);
        assert!(shared.compressed());
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same bytes for everyone");
        assert!(a.len() < plain.len() / 4);
        assert_eq!(a[0], 0xc2);
        assert_eq!(inflate(&a), Bytes::from(payload));
        assert_eq!(metrics.compression_messages.get(), 1);
        assert_eq!(metrics.compression_bytes_in.get(), plain.len() as u64);
        assert_eq!(metrics.compression_bytes_out.get(), a.len() as u64);
    }

    #[test]
    fn small_or_incompressible_frames_go_plain() {
        let metrics = Metrics::new();
        let small = ws::binary_frame(&[b'a'; 100]);
        let shared = SharedFrame::new(&small, settings(256), &metrics);
        assert_eq!(shared.for_subscriber(true), small);
        assert_eq!(metrics.compression_messages.get(), 0);

        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        let noise: Vec<u8> = (0..1000)
            .map(|_| {
                // xorshift64: bytes DEFLATE cannot shrink.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let noisy = ws::binary_frame(&noise);
        let shared = SharedFrame::new(&noisy, settings(0), &metrics);
        assert_eq!(shared.for_subscriber(true), noisy);
        assert!(!shared.compressed());
        assert_eq!(metrics.compression_messages.get(), 1);
    }
}
