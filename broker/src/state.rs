//! State shared by every connection of one broker: configuration, the topic
//! registry, metrics, and the shutdown signal.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::BrokerConfig;
use crate::metrics::Metrics;
use crate::registry::{RegistryLimits, TopicRegistry};
use crate::tls::{TlsError, TlsTerminator};

/// Everything connections share, behind one `Arc`.
#[derive(Debug)]
pub struct BrokerState {
    /// The resolved configuration.
    pub config: BrokerConfig,
    /// Token verification; `None` when authentication is off.
    pub auth: Option<Authenticator>,
    /// Topics and subscriptions.
    pub registry: TopicRegistry,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Cancelled when shutdown is requested: readiness turns false, but the
    /// broker keeps serving for `shutdown_delay`.
    pub draining: CancellationToken,
    /// Cancelled when connections are to close (after the drain delay).
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// TLS termination, when `tls_cert_file` and `tls_key_file` are set.
    pub tls: Option<TlsTerminator>,
    ready: AtomicBool,
    next_connection_id: AtomicU64,
}

impl BrokerState {
    /// Builds the shared state for `config`, checking tokens with `auth`
    /// (`None`: authentication off) and loading its TLS files if it has
    /// any.
    pub fn new(config: BrokerConfig, auth: Option<Authenticator>) -> Result<Self, TlsError> {
        let tls = config.tls_files().map(TlsTerminator::new).transpose()?;
        let metrics = Metrics::new();
        let registry = TopicRegistry::new(
            RegistryLimits {
                max_topics: config.max_topics,
                topic_idle_ttl: config.topic_idle_ttl,
                max_retained_bytes: config.max_retained_bytes,
            },
            config.topic_policies.clone(),
            metrics.clone(),
        );
        Ok(BrokerState {
            config,
            auth,
            registry,
            metrics,
            draining: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            tls,
            ready: AtomicBool::new(true),
            next_connection_id: AtomicU64::new(1),
        })
    }

    /// A connection id, unique for this broker's lifetime.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether `/readyz` reports ready (false once draining).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Requests shutdown: readiness turns false now; the server closes the
    /// listener and every connection (1001) once the drain delay is over.
    pub fn begin_shutdown(&self) {
        self.ready.store(false, Ordering::Relaxed);
        self.draining.cancel();
    }
}
