//! Publishes waiting for a connection: those made while disconnected under
//! [`OfflinePolicy::Buffer`](crate::OfflinePolicy::Buffer), and those a lost
//! connection never finished writing.

use std::collections::VecDeque;

use bytes::Bytes;
use tokio::sync::oneshot;

use crate::error::Result;

/// One encoded `PUBLISH` frame not yet written whole to a connection.
pub(crate) struct Buffered {
    /// The complete, masked WebSocket frame.
    pub frame: Bytes,
    /// The request id inside the frame, for acknowledged publishes.
    pub id: Option<u64>,
    /// Who waits for the broker's acknowledgement, if anyone.
    pub ack: Option<oneshot::Sender<Result<u64>>>,
}

impl Buffered {
    /// An acknowledged publish whose caller gave up (timed out or was
    /// cancelled): never sent.
    pub fn abandoned(&self) -> bool {
        self.ack.as_ref().is_some_and(|ack| ack.is_closed())
    }
}

/// The offline buffer, in publish order.
#[derive(Default)]
pub(crate) struct Offline {
    queue: VecDeque<Buffered>,
    bytes: usize,
}

impl Offline {
    /// Whether one more frame of `len` bytes stays within the bounds.
    pub fn fits(&self, len: usize, max_messages: usize, max_bytes: usize) -> bool {
        self.queue.len() < max_messages && self.bytes.saturating_add(len) <= max_bytes
    }

    /// Appends a publish made while disconnected.
    pub fn push(&mut self, item: Buffered) {
        self.bytes += item.frame.len();
        self.queue.push_back(item);
    }

    /// Puts publishes a lost connection did not finish writing before
    /// everything buffered, keeping their order: they were made first.
    /// They were accepted already, so the bounds do not apply to them (new
    /// publishes are refused until the buffer is back within them).
    pub fn push_front_all(&mut self, items: impl DoubleEndedIterator<Item = Buffered>) {
        for item in items.rev() {
            self.bytes += item.frame.len();
            self.queue.push_front(item);
        }
    }

    /// Takes the oldest publish.
    pub fn pop(&mut self) -> Option<Buffered> {
        let item = self.queue.pop_front()?;
        self.bytes -= item.frame.len();
        Some(item)
    }

    /// Forgets acknowledged publishes whose caller gave up.
    pub fn drop_abandoned(&mut self) {
        self.queue.retain(|b| !b.abandoned());
        self.bytes = self.queue.iter().map(|b| b.frame.len()).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(byte: u8, len: usize) -> Buffered {
        Buffered {
            frame: Bytes::from(vec![byte; len]),
            id: None,
            ack: None,
        }
    }

    #[test]
    fn offline_buffer_bounds() {
        let mut offline = Offline::default();
        assert!(offline.fits(10, 2, 20));
        offline.push(item(0, 10));
        assert!(offline.fits(10, 2, 20));
        assert!(!offline.fits(11, 2, 20));
        let (tx, rx) = oneshot::channel();
        offline.push(Buffered {
            frame: Bytes::from_static(&[0; 10]),
            id: Some(1),
            ack: Some(tx),
        });
        assert!(!offline.fits(1, 2, 100));
        drop(rx);
        offline.drop_abandoned();
        assert_eq!(offline.queue.len(), 1);
        assert_eq!(offline.bytes, 10);
        assert!(offline.pop().is_some());
        assert_eq!(offline.bytes, 0);
    }

    #[test]
    fn unwritten_frames_go_first_in_their_order_even_beyond_the_bounds() {
        let mut offline = Offline::default();
        offline.push(item(3, 10));
        offline.push_front_all(vec![item(1, 10), item(2, 10)].into_iter());
        assert_eq!(offline.bytes, 30);
        assert!(!offline.fits(1, 2, 100));
        let order: Vec<u8> = std::iter::from_fn(|| offline.pop())
            .map(|b| b.frame[0])
            .collect();
        assert_eq!(order, [1, 2, 3]);
        assert_eq!(offline.bytes, 0);
    }
}
