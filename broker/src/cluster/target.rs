//! Where Redis is: one server (`redis://`, `rediss://`) or the master
//! Redis Sentinel names (`redis+sentinel://`), with the TLS files of the
//! connections.
//!
//! The publisher and the subscriber ask a [`Target`] for a new connection
//! at every (re)connection: with Sentinel, each attempt asks the
//! Sentinels for the current master, so a failover is followed as soon as
//! the old master's connections close (Sentinel closes them when it
//! demotes it) or fail.
//!
//! A failed attempt is logged at `warn` when its reason differs from the
//! previous attempt's (a missing CA, a refused password, no master), at
//! `debug` when it repeats, so an unreachable Redis does not flood the log
//! at every attempt.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::{MultiplexedConnection, PubSub};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, ConnectionAddr, RedisResult, TlsCertificates,
    TlsMode,
};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use thiserror::Error;

use crate::cluster::url::{ClusterUrl, ClusterUrlError, SentinelUrl, parse};
use crate::tls::{TlsError, read_certs, read_pem};

/// Time allowed to make a connection, and, with Sentinel, before that to
/// learn where the master is.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The TLS files of the Redis connections (`cluster_ca_file`,
/// `cluster_cert_file`, `cluster_key_file`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterTlsFiles {
    /// PEM CA bundle Redis' certificate must chain to (`None`: the
    /// system's roots).
    pub ca: Option<PathBuf>,
    /// PEM certificate chain this node presents (mutual TLS).
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
}

/// Why the backplane cannot be set up.
#[derive(Debug, Error)]
pub enum TargetError {
    /// The `--cluster` URL.
    #[error(transparent)]
    Url(#[from] ClusterUrlError),
    /// A TLS file.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The Redis client refused the combination.
    #[error("cannot use --cluster with its TLS files: {0}")]
    Client(String),
}

/// How connections are made.
enum Kind {
    /// One server.
    Direct(Client),
    /// Ask the Sentinels for the master at every connection. One lock:
    /// the client keeps its Sentinel connections between calls.
    Sentinel(tokio::sync::Mutex<SentinelClient>),
}

/// Where Redis is, and how to connect to it.
pub struct Target {
    kind: Kind,
    /// The reason of the last failed attempt, until one succeeds.
    failing: Mutex<Option<String>>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Direct(_) => "Direct",
            Kind::Sentinel(_) => "Sentinel",
        };
        f.debug_struct("Target").field("kind", &kind).finish()
    }
}

/// Reads the TLS files into what the Redis client takes; `None` when none
/// is given.
fn certificates(files: &ClusterTlsFiles) -> Result<Option<TlsCertificates>, TlsError> {
    let root_cert = match &files.ca {
        Some(path) => {
            read_certs("cluster-ca-file", path)?;
            Some(read_pem("cluster-ca-file", path)?)
        }
        None => None,
    };
    let client_tls = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => {
            read_certs("cluster-cert-file", cert)?;
            let client_key = read_pem("cluster-key-file", key)?;
            PrivateKeyDer::from_pem_slice(&client_key).map_err(|e| TlsError::Invalid {
                flag: "cluster-key-file",
                path: key.clone(),
                message: format!(
                    "no usable private key ({e}); give a PEM PKCS#8, RSA or EC private key"
                ),
            })?;
            Some(ClientTlsConfig {
                client_cert: read_pem("cluster-cert-file", cert)?,
                client_key,
            })
        }
        _ => None,
    };
    Ok(
        (root_cert.is_some() || client_tls.is_some()).then_some(TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
}

/// A Sentinel client for `url`.
fn sentinel_client(
    url: &SentinelUrl,
    certs: Option<TlsCertificates>,
) -> RedisResult<SentinelClient> {
    let sentinels = url.sentinels.iter().map(|(host, port)| match url.tls {
        true => ConnectionAddr::TcpTls {
            host: host.clone(),
            port: *port,
            insecure: false,
            tls_params: None,
        },
        false => ConnectionAddr::Tcp(host.clone(), *port),
    });
    let mut builder =
        SentinelClientBuilder::new(sentinels, &url.master, SentinelServerType::Master)?
            .set_client_to_redis_db(url.db);
    if let Some(username) = &url.username {
        builder = builder.set_client_to_redis_username(username);
    }
    if let Some(password) = &url.password {
        builder = builder.set_client_to_redis_password(password);
    }
    if url.tls {
        builder = builder
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure);
        if let Some(certs) = certs {
            builder = builder
                .set_client_to_sentinel_certificates(certs.clone())
                .set_client_to_redis_certificates(certs);
        }
    }
    builder.build()
}

impl Target {
    /// The target of the `--cluster` URL `url`, with the TLS `files`
    /// (read now: a missing or invalid file is an error at start).
    pub fn new(url: &str, files: &ClusterTlsFiles) -> Result<Target, TargetError> {
        let certs = certificates(files)?;
        let kind = match parse(url)? {
            ClusterUrl::Direct { url, .. } => Kind::Direct(
                match certs {
                    Some(certs) => Client::build_with_tls(url, certs),
                    None => Client::open(url),
                }
                .map_err(|e| TargetError::Client(e.to_string()))?,
            ),
            ClusterUrl::Sentinel(url) => Kind::Sentinel(tokio::sync::Mutex::new(
                sentinel_client(&url, certs).map_err(|e| TargetError::Client(e.to_string()))?,
            )),
        };
        Ok(Target {
            kind,
            failing: Mutex::new(None),
        })
    }

    /// A client for the server to connect to now: the server, or the
    /// master the Sentinels name, within [`CONNECT_TIMEOUT`].
    async fn client(&self) -> Result<Client, String> {
        match &self.kind {
            Kind::Direct(client) => Ok(client.clone()),
            Kind::Sentinel(sentinel) => {
                let ask = async { sentinel.lock().await.async_get_client().await };
                match tokio::time::timeout(CONNECT_TIMEOUT, ask).await {
                    Ok(Ok(client)) => Ok(client),
                    Ok(Err(e)) => Err(format!("Sentinel found no master: {e}")),
                    Err(_) => Err("Sentinel did not name a master in time".to_owned()),
                }
            }
        }
    }

    /// A multiplexed connection (the publisher's), or `None` (logged for
    /// `who`) if none could be made within [`CONNECT_TIMEOUT`].
    pub async fn multiplexed(&self, who: &str) -> Option<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(CONNECT_TIMEOUT));
        let attempt = async {
            let client = self.client().await?;
            connect(client.get_multiplexed_async_connection_with_config(&config)).await
        };
        self.outcome(who, attempt.await)
    }

    /// A pub/sub connection (the subscriber's), or `None` (logged for
    /// `who`) if none could be made within [`CONNECT_TIMEOUT`].
    pub async fn pubsub(&self, who: &str) -> Option<PubSub> {
        let attempt = async {
            let client = self.client().await?;
            connect(client.get_async_pubsub()).await
        };
        self.outcome(who, attempt.await)
    }

    /// Logs a failed attempt (at `warn` when its reason is new).
    fn outcome<T>(&self, who: &str, attempt: Result<T, String>) -> Option<T> {
        let mut failing = self.failing.lock();
        match attempt {
            Ok(connection) => {
                *failing = None;
                Some(connection)
            }
            Err(why) => {
                if failing.as_deref() == Some(why.as_str()) {
                    tracing::debug!(reason = %why, "{who}: cannot connect to Redis");
                } else {
                    tracing::warn!(reason = %why, "{who}: cannot connect to Redis; retrying");
                    *failing = Some(why);
                }
                None
            }
        }
    }
}

/// The connection `attempt` makes within [`CONNECT_TIMEOUT`], or why not.
async fn connect<T>(attempt: impl Future<Output = RedisResult<T>>) -> Result<T, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(e)) => Err(with_hint(e.to_string())),
        Err(_) => Err("connecting timed out".to_owned()),
    }
}

/// `why`, with what to do when it is a TLS setting this node lacks.
fn with_hint(why: String) -> String {
    let hint = if why.contains("UnknownIssuer") {
        "; if a private CA issued Redis' certificate, give it with --cluster-ca-file"
    } else if why.contains("CertificateRequired") {
        "; Redis asks for a client certificate: give --cluster-cert-file and --cluster-key-file"
    } else {
        ""
    };
    why + hint
}
