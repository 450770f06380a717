//! The close state machine of one connection.
//!
//! A connection is *open* until something starts closing it, and it starts
//! closing exactly once: either normally (`Closing`: the close frame goes
//! out behind the data already queued) or because its outbound queue
//! overflowed (`Overflowed`: queued data is discarded and only the close
//! frame is written). The first transition wins; every later attempt is
//! ignored. Starting to close also cancels the connection's `closing` token,
//! which stops its reader.
//!
//! [`crate::outbound::OutboundQueue`] owns one [`CloseState`] and is the only
//! code that drives it.

use std::sync::atomic::{AtomicU8, Ordering};

use tokio_util::sync::CancellationToken;

const OPEN: u8 = 0;
const CLOSING: u8 = 1;
const OVERFLOWED: u8 = 2;

/// How a connection starts closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseKind {
    /// Close after the data already queued.
    Graceful,
    /// The queue overflowed: discard queued data, write only the close frame.
    Overflow,
}

/// Open, closing or overflowed, plus the token that tells the reader.
#[derive(Debug, Default)]
pub struct CloseState {
    state: AtomicU8,
    closing: CancellationToken,
}

impl CloseState {
    /// An open connection's state.
    pub fn new() -> Self {
        CloseState::default()
    }

    /// Whether nothing has started closing the connection yet.
    pub fn is_open(&self) -> bool {
        self.state.load(Ordering::Relaxed) == OPEN
    }

    /// Whether the connection is closing because its queue overflowed.
    pub fn overflowed(&self) -> bool {
        self.state.load(Ordering::Relaxed) == OVERFLOWED
    }

    /// Cancelled once the connection starts closing, for any reason.
    pub fn token(&self) -> &CancellationToken {
        &self.closing
    }

    /// Moves from open to closing (of this kind); returns whether this call
    /// made the transition. Does not cancel the token: the caller queues its
    /// close frame first, then calls [`CloseState::cancel`].
    pub fn begin(&self, kind: CloseKind) -> bool {
        let to = match kind {
            CloseKind::Graceful => CLOSING,
            CloseKind::Overflow => OVERFLOWED,
        };
        self.state
            .compare_exchange(OPEN, to, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Tells the reader to stop.
    pub fn cancel(&self) {
        self.closing.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_transition_wins() {
        let state = CloseState::new();
        assert!(state.is_open());
        assert!(state.begin(CloseKind::Overflow));
        assert!(!state.begin(CloseKind::Graceful));
        assert!(state.overflowed());
        assert!(!state.is_open());
        assert!(!state.token().is_cancelled());
        state.cancel();
        assert!(state.token().is_cancelled());
    }

    #[test]
    fn a_graceful_close_is_not_an_overflow() {
        let state = CloseState::new();
        assert!(state.begin(CloseKind::Graceful));
        assert!(!state.begin(CloseKind::Overflow));
        assert!(!state.overflowed());
    }
}
