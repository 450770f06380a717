//! Token refresh while connected: with a token provider, a little before
//! the connection's token expires (at 80 % of its remaining life), the
//! driver asks the provider for a new token and sends `REFRESH`, so the
//! broker does not close the connection (4003). If that fails, the
//! connection runs until the broker closes it, and the reconnect asks the
//! provider again.

use std::time::SystemTime;

use tickwire_protocol::ClientMessage;
use tokio::time::Instant;

use super::Driver;
use crate::command::encode_frame;
use crate::config::token_expiry;
use crate::error::Result;
use crate::pending::PendingKind;
use crate::session::Session;

/// When to refresh a token that expires at `expires`: after 80 % of its
/// remaining life.
pub(super) fn refresh_at(expires: SystemTime) -> Instant {
    let left = expires
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    Instant::now() + left.mul_f64(0.8)
}

/// Waits for the token being fetched, if any (pending forever otherwise).
pub(super) async fn fetched(fetch: &mut Option<super::TokenFetch>) -> Result<String> {
    match fetch {
        Some(fetch) => fetch.await,
        None => std::future::pending().await,
    }
}

impl Driver {
    /// Starts fetching a new token if the refresh time has come.
    pub(super) fn maybe_start_refresh(&mut self, now: Instant) {
        let (Some(at), Some(provider)) = (self.refresh_at, &self.shared.config.token_provider)
        else {
            return;
        };
        if now >= at && self.refreshing.is_none() {
            self.refresh_at = None;
            let provider = provider.clone();
            self.refreshing = Some(Box::pin(async move { provider.fetch().await }));
        }
    }

    /// The provider answered: send `REFRESH` with the new token.
    pub(super) fn on_token_fetched(&mut self, s: &mut Session, token: Result<String>) {
        self.refreshing = None;
        match token {
            Ok(token) => {
                let id = self.shared.next_id();
                s.queue(&encode_frame(&ClientMessage::Refresh { id, token: &token }));
                let deadline = Some(self.request_deadline());
                self.pending
                    .insert(id, PendingKind::Refresh(token_expiry(&token)), deadline);
            }
            Err(e) => tracing::warn!(
                "token refresh failed ({e}); the broker closes the connection when the token expires"
            ),
        }
    }

    /// The broker accepted the new token: plan the next refresh.
    pub(super) fn on_refreshed(&mut self, expires: Option<SystemTime>) {
        self.refresh_at = expires.map(refresh_at);
    }
}
