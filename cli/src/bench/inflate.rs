//! Inflating the compressed (permessage-deflate) messages a subscriber
//! receives with `--compression`.
//!
//! The broker compresses every message on its own
//! (`server_no_context_takeover`), so no connection needs its own inflater:
//! each load thread keeps one ([`tickwire_protocol::deflate::Inflater`]),
//! shared by all the connections that thread runs, and a message inflates
//! to at most [`super::walker::MAX_FRAME`] bytes.

use std::cell::RefCell;

use tickwire_protocol::deflate::{InflateError, Inflater};

use super::walker::MAX_FRAME;

thread_local! {
    /// This thread's inflater, made by the first compressed message.
    static INFLATER: RefCell<Option<Inflater>> = const { RefCell::new(None) };
}

/// Inflates one compressed message body (without the sync-flush tail) with
/// this thread's inflater. After an error the inflater is dropped, so the
/// next message starts from a fresh one.
pub fn inflate(compressed: &[u8]) -> Result<Vec<u8>, InflateError> {
    INFLATER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let result = cell
            .get_or_insert_with(Inflater::new)
            .inflate(compressed, MAX_FRAME);
        if result.is_err() {
            *cell = None;
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_protocol::deflate::compress;

    #[test]
    fn inflates_messages_one_after_another_on_one_thread() {
        for text in ["first message ".repeat(40), "second ".repeat(100)] {
            let packed = compress(text.as_bytes(), 1);
            assert!(packed.len() < text.len());
            assert_eq!(inflate(&packed).unwrap(), text.as_bytes());
        }
    }

    #[test]
    fn corrupt_input_is_an_error_and_the_next_message_still_inflates() {
        assert_eq!(inflate(&[0xff; 16]), Err(InflateError::Corrupt));
        let packed = compress(b"after the error", 1);
        assert_eq!(inflate(&packed).unwrap(), b"after the error");
    }
}
