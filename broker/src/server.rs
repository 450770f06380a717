//! The accept loop and the broker's lifecycle: bind, serve, drain, stop.
//!
//! [`Broker::bind`] opens the port; [`Broker::run`] accepts connections
//! until shutdown is requested (through [`ShutdownHandle`] or, in the
//! binary, SIGTERM/SIGINT), then drains: readiness turns false at once; after
//! `shutdown_delay` (time for load balancers to notice) the listener closes,
//! every WebSocket is closed with 1001 after its queued data, and `run`
//! returns once every connection is gone or the grace period is over.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;

use crate::auth::{Authenticator, KeyError};
use crate::config::BrokerConfig;
use crate::http;
use crate::metrics::Metrics;
use crate::slot::{ConnectionSlot, PROBE_CONNECTIONS};
use crate::state::BrokerState;

/// Time a refused connection gets to read its 503 answer.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Request bytes read and discarded from a refused connection, at most.
const REFUSE_READ_LIMIT: usize = 16 * 1024;

/// How often idle topics are swept, at most.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// Requests shutdown of a running broker.
#[derive(Debug, Clone)]
pub struct ShutdownHandle(Arc<BrokerState>);

impl ShutdownHandle {
    /// Starts the graceful shutdown; [`Broker::run`] returns once it is done.
    pub fn shutdown(&self) {
        self.0.begin_shutdown();
    }
}

/// Reloads the token keys of a running broker; for the binary's SIGHUP
/// handler.
#[derive(Debug, Clone)]
pub struct KeyReloadHandle(Arc<BrokerState>);

impl KeyReloadHandle {
    /// Reads the configured key files again and swaps the keys in; open
    /// connections are not touched. `Ok(false)`: authentication is off,
    /// nothing to reload. On error the old keys stay in use.
    pub fn reload_keys(&self) -> Result<bool, KeyError> {
        match &self.0.auth {
            Some(auth) => auth.reload_keys().map(|()| true),
            None => Ok(false),
        }
    }
}

/// A bound, not yet running broker.
#[derive(Debug)]
pub struct Broker {
    state: Arc<BrokerState>,
    listener: TcpListener,
}

impl Broker {
    /// Validates the configuration, loads the token keys and binds the
    /// listening socket. A configuration or key error is
    /// [`io::ErrorKind::InvalidInput`].
    pub async fn bind(config: BrokerConfig) -> io::Result<Broker> {
        config
            .validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let auth = Authenticator::from_config(&config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        if auth.is_none() {
            tracing::warn!(
                "authentication is off: anyone who reaches the port may publish and subscribe to everything"
            );
            if !(config.allow_anonymous_sub.is_empty() && config.allow_anonymous_pub.is_empty()) {
                tracing::warn!(
                    "--allow-anonymous-sub/--allow-anonymous-pub are ignored: no token key is configured"
                );
            }
        }
        let socket = match config.listen {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(config.listen)?;
        // The kernel caps the backlog at net.core.somaxconn.
        let listener = socket.listen(config.listen_backlog)?;
        Ok(Broker {
            state: Arc::new(BrokerState::new(config, auth)),
            listener,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle that reloads the token keys.
    pub fn key_reload_handle(&self) -> KeyReloadHandle {
        KeyReloadHandle(Arc::clone(&self.state))
    }

    /// A handle that triggers graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.state.clone())
    }

    /// The broker's metrics.
    pub fn metrics(&self) -> Metrics {
        self.state.metrics.clone()
    }

    /// Accepts connections until shutdown, then drains them.
    pub async fn run(self) {
        let Broker { state, listener } = self;
        let slots = Arc::new(Semaphore::new(state.config.max_connections));
        let probe_slots = Arc::new(Semaphore::new(PROBE_CONNECTIONS));
        let sweeper = tokio::spawn(sweep_idle_topics(state.clone()));
        tokio::spawn(close_after_drain_delay(state.clone()));
        loop {
            let accepted = tokio::select! {
                _ = state.shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (socket, peer) = match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Typically EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (permit, probe_only) = match slots.clone().try_acquire_owned() {
                Ok(permit) => (permit, false),
                Err(_) => match probe_slots.clone().try_acquire_owned() {
                    Ok(permit) => (permit, true),
                    Err(_) => {
                        state.metrics.connections_rejected.inc();
                        tokio::spawn(refuse_full(socket));
                        continue;
                    }
                },
            };
            state.metrics.connections_accepted.inc();
            state.metrics.connections.inc();
            let slot = Arc::new(ConnectionSlot::new(
                permit,
                probe_only,
                state.metrics.clone(),
            ));
            let _ = socket.set_nodelay(true);
            state
                .tasks
                .spawn(serve_http(state.clone(), socket, peer, slot));
        }
        drop(listener);
        sweeper.abort();
        tracing::info!("draining connections");
        state.tasks.close();
        if tokio::time::timeout(state.config.shutdown_grace, state.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = state.tasks.len(),
                "shutdown grace period over; dropping remaining connections"
            );
        }
        tracing::info!("broker stopped");
    }
}

/// Serves HTTP/1.1 on one connection; a WebSocket upgrade hands the socket
/// over to [`crate::connection::serve`].
async fn serve_http(
    state: Arc<BrokerState>,
    socket: TcpStream,
    peer: SocketAddr,
    slot: Arc<ConnectionSlot>,
) {
    let service = {
        let state = state.clone();
        service_fn(move |req| {
            let state = state.clone();
            let slot = slot.clone();
            async move { Ok::<_, std::convert::Infallible>(http::route(state, slot, req).await) }
        })
    };
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.handshake_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = state.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "http connection ended with an error");
    }
}

/// Answers a connection over the limit with 503 and closes it. The request
/// is read and discarded (briefly, boundedly) so that closing does not reset
/// the connection before the client has read the answer.
async fn refuse_full(mut socket: TcpStream) {
    let body = "broker is at max_connections; retry later or connect to another node\n";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSE_TIMEOUT, async {
        socket.write_all(response.as_bytes()).await?;
        socket.shutdown().await?;
        let mut discard = [0u8; 1024];
        let mut left = REFUSE_READ_LIMIT;
        while left > 0 {
            match socket.read(&mut discard).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        Ok::<_, io::Error>(())
    })
    .await;
}

/// Once shutdown is requested, waits `shutdown_delay` (readiness already
/// false, still serving) and then tells every connection to close.
async fn close_after_drain_delay(state: Arc<BrokerState>) {
    state.draining.cancelled().await;
    tracing::info!(delay = ?state.config.shutdown_delay, "shutdown requested; readiness is now false");
    tokio::time::sleep(state.config.shutdown_delay).await;
    state.shutdown.cancel();
}

async fn sweep_idle_topics(state: Arc<BrokerState>) {
    let period =
        (state.config.topic_idle_ttl / 2).clamp(Duration::from_millis(100), MAX_SWEEP_INTERVAL);
    let mut interval = tokio::time::interval(period);
    loop {
        interval.tick().await;
        let removed = state.registry.sweep_idle(std::time::Instant::now());
        if removed > 0 {
            tracing::debug!(removed, "forgot idle topics");
        }
    }
}
