//! Reloading what can change while the broker runs, in one place.
//!
//! [`ReloadHandle::reload`] is the single entry point (the `tickwire`
//! binary calls it on SIGHUP): it reloads everything reloadable, each part
//! on its own, so one bad file does not keep the others from being
//! reloaded, and a part that fails keeps what it had. Established
//! connections are never dropped by a reload; what is reloaded applies to
//! new connections.
//!
//! What is reloaded today:
//!
//! * TLS ([`crate::tls::TlsTerminator::reload`]): the certificate chain, the
//!   key and the client CA bundle are read again.
//! * Token keys and API keys ([`crate::auth::Authenticator::reload_keys`]):
//!   every configured key file, and the client certificate grants file, is
//!   read again; new tokens are checked with
//!   the new keys, connections already authenticated keep their grants
//!   until their token expires.
//!
//! To make something else reloadable, give it a `reload(&self) ->
//! Result<(), E>` method, add a variant for `E` to [`ReloadFailure`] and
//! call it from [`ReloadHandle::reload`].

use std::sync::Arc;

use thiserror::Error;

use crate::auth::KeyError;
use crate::state::BrokerState;
use crate::tls::TlsError;

/// One part that could not be reloaded; it keeps its previous state.
#[derive(Debug, Error)]
pub enum ReloadFailure {
    /// The TLS certificate, key or client CA.
    #[error("TLS not reloaded, the previous certificate stays in use: {0}")]
    Tls(#[from] TlsError),
    /// The token or API key files.
    #[error("keys not reloaded, the previous keys stay in use: {0}")]
    Keys(#[from] KeyError),
}

/// The parts that could not be reloaded (at least one).
#[derive(Debug, Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ReloadError(pub Vec<ReloadFailure>);

/// What a successful reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reloaded {
    /// The TLS files were read again and are used for new connections.
    pub tls: bool,
    /// The token key, API key and client grants files were read again and
    /// apply to new connections.
    pub keys: bool,
}

/// Reloads a running broker's reloadable parts; cheap to clone.
#[derive(Debug, Clone)]
pub struct ReloadHandle(Arc<BrokerState>);

impl ReloadHandle {
    pub(crate) fn new(state: Arc<BrokerState>) -> Self {
        ReloadHandle(state)
    }

    /// Reloads everything reloadable. Every part is tried; the error lists
    /// the ones that failed, which keep their previous state.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let mut reloaded = Reloaded::default();
        let mut failures = Vec::new();
        if let Some(tls) = &self.0.tls {
            match tls.reload() {
                Ok(()) => {
                    reloaded.tls = true;
                    tracing::info!(cert = %tls.files().cert.display(), "TLS certificate reloaded");
                }
                Err(e) => failures.push(ReloadFailure::from(e)),
            }
        }
        if let Some(auth) = &self.0.auth {
            match auth.reload_keys() {
                Ok(()) => {
                    reloaded.keys = true;
                    tracing::info!("token keys, API keys and client certificate grants reloaded");
                }
                Err(e) => failures.push(ReloadFailure::from(e)),
            }
        }
        if failures.is_empty() {
            Ok(reloaded)
        } else {
            Err(ReloadError(failures))
        }
    }
}
