//! State shared by every connection of one broker: configuration, the topic
//! registry, metrics, and the shutdown signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::busiest::Busiest;
use crate::cluster::backplane::Backplane;
use crate::cluster::presence::PresenceSettings;
use crate::cluster::target::TargetError;
use crate::compression::CompressionSettings;
use crate::config::BrokerConfig;
use crate::directory::Directory;
use crate::metrics::Metrics;
use crate::presence::{HoldLimits, PresenceHub, PresenceStore};
use crate::registry::{RegistryLimits, TopicRegistry};
use crate::tls::{TlsError, TlsTerminator};

/// Why the shared state could not be built.
#[derive(Debug, Error)]
pub enum StateError {
    /// The TLS files.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The `--cluster` URL or its TLS files.
    #[error(transparent)]
    Cluster(#[from] TargetError),
}

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
    /// The cluster backplane, when `cluster` is set; `None`: a single node.
    pub backplane: Option<Backplane>,
    /// When this state was built: the broker's start, for `uptime`.
    pub started: Instant,
    /// The busiest topics, sampled with `--dashboard` ([`crate::busiest`]).
    pub busiest: Busiest,
    /// Presence: this node's holds and the store of entries
    /// ([`crate::presence`]).
    pub presence: PresenceHub,
    /// Every live connection by client id and user, for server
    /// disconnects ([`crate::directory`]).
    pub directory: Directory,
    ready: AtomicBool,
    next_connection_id: AtomicU64,
}

impl BrokerState {
    /// Builds the shared state for `config`, checking tokens with `auth`
    /// (`None`: authentication off) and loading its TLS files if it has
    /// any, and the cluster backplane if `cluster` is set (its tasks start
    /// with the server).
    pub fn new(config: BrokerConfig, auth: Option<Authenticator>) -> Result<Self, StateError> {
        let tls = config.tls_files().map(TlsTerminator::new).transpose()?;
        let metrics = Metrics::new();
        let backplane = config
            .cluster
            .as_deref()
            .map(|url| {
                let presence = PresenceSettings {
                    lease_ttl: config.presence_lease_ttl,
                    grace: config.presence_grace,
                    max_per_topic: config.max_presence_per_topic,
                };
                Backplane::new(url, &config.cluster_tls_files(), &presence, &metrics)
            })
            .transpose()?;
        let mut registry = TopicRegistry::new(
            RegistryLimits {
                max_topics: config.max_topics,
                topic_idle_ttl: config.topic_idle_ttl,
                max_retained_bytes: config.max_retained_bytes,
            },
            config.topic_policies.clone(),
            metrics.clone(),
        )
        .with_compression(CompressionSettings::from_config(&config));
        if let Some(backplane) = &backplane {
            registry = registry.with_interest(Arc::clone(&backplane.interest));
        }
        let limits = HoldLimits {
            per_topic: config.max_presence_per_topic,
            entries: config.max_presence_entries,
        };
        let presence = match &backplane {
            Some(backplane) => PresenceHub::new(
                limits,
                config.presence_grace,
                PresenceStore::Cluster(Arc::clone(backplane.presence())),
                metrics.clone(),
            ),
            None => PresenceHub::local(limits, config.presence_grace, metrics.clone()),
        };
        Ok(BrokerState {
            config,
            auth,
            registry,
            metrics,
            draining: CancellationToken::new(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            tls,
            backplane,
            started: Instant::now(),
            busiest: Busiest::default(),
            presence,
            directory: Directory::default(),
            ready: AtomicBool::new(true),
            next_connection_id: AtomicU64::new(1),
        })
    }

    /// A connection id, unique for this broker's lifetime.
    pub fn next_connection_id(&self) -> u64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the cluster backplane is configured and cannot reach Redis
    /// (`/readyz` then fails; see docs/cluster.md).
    pub fn backplane_down(&self) -> bool {
        self.backplane.as_ref().is_some_and(|b| !b.health.is_up())
    }

    /// Whether the broker has not started draining (false once shutdown
    /// has begun).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// Whether `/readyz` answers 200: not draining and, in a cluster, Redis
    /// reachable.
    pub fn readyz_ok(&self) -> bool {
        self.is_ready() && !self.backplane_down()
    }

    /// Requests shutdown: readiness turns false now; the server closes the
    /// listener and every connection (1001) once the drain delay is over.
    pub fn begin_shutdown(&self) {
        self.ready.store(false, Ordering::Relaxed);
        self.draining.cancel();
    }
}
