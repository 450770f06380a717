//! The accept loop and the broker's lifecycle: bind, serve, drain, stop.
//!
//! [`Broker::bind`] opens the port; [`Broker::run`] accepts connections
//! until shutdown is requested (through [`ShutdownHandle`] or, in the
//! binary, SIGTERM/SIGINT), then drains: readiness turns false at once; after
//! `shutdown_delay` (time for load balancers to notice) the listener closes,
//! every WebSocket is closed with 1001 after its queued data, and `run`
//! returns once every connection is gone or the grace period is over.
//!
//! When `accept()` fails (typically the file descriptor limit), a loop
//! pauses with a back-off ([`crate::accept`]) while open connections go on.
//!
//! With `metrics_listen`, a second, small listener serves only metrics,
//! health and readiness ([`http::route_operational`]) until `run` returns,
//! so probes and scrapes keep working during the drain.
//!
//! With `echo_listen`, another listener serves the WebSocket echo service
//! ([`crate::echo`], a conformance-testing aid) until shutdown; its
//! connections drain like the main port's.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::accept::AcceptErrors;
use crate::auth::Authenticator;
use crate::cluster;
use crate::config::BrokerConfig;
use crate::fallback::poll::PollSessions;
use crate::http;
use crate::limits::{IpLimits, PublishLimits};
use crate::metrics::Metrics;
use crate::reload::ReloadHandle;
use crate::slot::{ConnectionSlot, PROBE_CONNECTIONS};
use crate::state::BrokerState;
use crate::stream::Transport;

/// Time a refused connection gets to read its 503 answer.
const REFUSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Request bytes read and discarded from a refused connection, at most.
const REFUSE_READ_LIMIT: usize = 16 * 1024;
/// Refused connections being answered at once, at most; beyond it a refused
/// connection is closed without an answer, so a flood of connections cannot
/// pile up sockets and tasks.
const MAX_REFUSING: usize = 1024;

/// The first byte of a TLS handshake record; anything else on a TLS port is
/// taken for plain HTTP.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

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

/// A side listener (`metrics_listen`, `echo_listen`) could not be opened;
/// the error inside [`Broker::bind`]'s `io::Error`.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({flag}): {source}")]
pub struct ListenError {
    /// The flag of the setting, e.g. `--metrics-listen`.
    pub flag: &'static str,
    /// The address asked for.
    pub addr: SocketAddr,
    /// Why binding failed.
    pub source: io::Error,
}

/// Binds the side listener of `flag` at `addr`, if set.
async fn bind_side(
    flag: &'static str,
    addr: Option<SocketAddr>,
) -> io::Result<Option<TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| io::Error::new(source.kind(), ListenError { flag, addr, source }))
}

/// A bound, not yet running broker.
#[derive(Debug)]
pub struct Broker {
    state: Arc<BrokerState>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    echo_listener: Option<TcpListener>,
}

impl Broker {
    /// Validates the configuration, loads the token keys and the TLS files
    /// if any, and binds the listening socket. An invalid configuration,
    /// key or TLS file is an [`io::ErrorKind::InvalidInput`] error whose
    /// text says what to fix.
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
            if !(config.allow_anonymous.is_empty()
                && config.allow_anonymous_sub.is_empty()
                && config.allow_anonymous_pub.is_empty())
            {
                tracing::warn!(
                    "--allow-anonymous, --allow-anonymous-sub and --allow-anonymous-pub are ignored: no token key is configured"
                );
            }
        }
        let state = BrokerState::new(config, auth)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let config = &state.config;
        let socket = match config.listen {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket.bind(config.listen)?;
        // The kernel caps the backlog at net.core.somaxconn.
        let listener = socket.listen(config.listen_backlog)?;
        let metrics_listener = bind_side("--metrics-listen", config.metrics_listen).await?;
        let echo_listener = bind_side("--echo-listen", config.echo_listen).await?;
        if let Some(echo) = &echo_listener {
            tracing::warn!(
                addr = %echo.local_addr()?,
                "the echo service is on: a conformance-testing aid without authentication; never expose it"
            );
        }
        Ok(Broker {
            state: Arc::new(state),
            listener,
            metrics_listener,
            echo_listener,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The address of the metrics listener, if `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.metrics_listener.as_ref().map(TcpListener::local_addr)
    }

    /// The address of the echo service, if `echo_listen` is set.
    pub fn echo_addr(&self) -> Option<io::Result<SocketAddr>> {
        self.echo_listener.as_ref().map(TcpListener::local_addr)
    }

    /// A handle that triggers graceful shutdown.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.state.clone())
    }

    /// A handle that reloads the reloadable parts (the TLS certificate) for
    /// new connections; see [`crate::reload`].
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle::new(self.state.clone())
    }

    /// Whether the port speaks TLS.
    pub fn is_tls(&self) -> bool {
        self.state.tls.is_some()
    }

    /// The broker's metrics.
    pub fn metrics(&self) -> Metrics {
        self.state.metrics.clone()
    }

    /// The broker's shared state (registry, presence, directory), for
    /// embedders and tests that act on the broker from inside, as the
    /// server API does.
    pub fn state(&self) -> Arc<BrokerState> {
        Arc::clone(&self.state)
    }

    /// Accepts connections until shutdown, then drains them.
    pub async fn run(self) {
        let Broker {
            state,
            listener,
            metrics_listener,
            echo_listener,
        } = self;
        if state.config.allowed_origins.is_empty() {
            tracing::warn!(
                "allowed_origins is not set: web pages from any site may open WebSocket connections to this broker; set --allowed-origins to the origins of your web apps"
            );
        }
        let slots = Arc::new(Semaphore::new(state.config.max_connections));
        // With a metrics listener, probes go there: no reserve places here.
        let probe_places = match metrics_listener {
            Some(_) => 0,
            None => PROBE_CONNECTIONS,
        };
        let probe_slots = Arc::new(Semaphore::new(probe_places));
        let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
        let addresses = Arc::new(IpLimits::new(
            &state.config,
            state.config.max_connections + PROBE_CONNECTIONS,
        ));
        let stop_metrics = CancellationToken::new();
        if let Some(metrics_listener) = metrics_listener {
            tokio::spawn(serve_metrics(
                state.clone(),
                metrics_listener,
                stop_metrics.clone(),
                refusing.clone(),
            ));
        }
        if let Some(echo_listener) = echo_listener {
            tokio::spawn(serve_echo(state.clone(), echo_listener, refusing.clone()));
        }
        start_backplane(&state);
        let sweeper = tokio::spawn(sweep_idle(state.clone(), addresses.clone()));
        if state.config.dashboard {
            let state = state.clone();
            tokio::spawn(async move { state.busiest.run(&state.registry, &state.shutdown).await });
        }
        let polls = Arc::new(PollSessions::new());
        tokio::spawn(close_after_drain_delay(state.clone()));
        let mut accept_errors = AcceptErrors::new("main", &state.metrics);
        while let Some((socket, peer)) = accept_errors.next(&listener, &state.shutdown).await {
            let address = match addresses.admit(peer.ip(), std::time::Instant::now()) {
                Ok(hold) => hold,
                Err(refusal) => {
                    state
                        .metrics
                        .connections_rejected_per_ip
                        .with_label_values(&[refusal.reason()])
                        .inc();
                    spawn_refusal(
                        &state.metrics,
                        &refusing,
                        socket,
                        "429 Too Many Requests",
                        format!("{refusal}\n"),
                    );
                    continue;
                }
            };
            let (permit, probe_only) = match slots.clone().try_acquire_owned() {
                Ok(permit) => (permit, false),
                Err(_) => match probe_slots.clone().try_acquire_owned() {
                    Ok(permit) => (permit, true),
                    Err(_) => {
                        state.metrics.connections_rejected.inc();
                        spawn_refusal(
                            &state.metrics,
                            &refusing,
                            socket,
                            "503 Service Unavailable",
                            FULL_BODY.to_owned(),
                        );
                        continue;
                    }
                },
            };
            state.metrics.connections_accepted.inc();
            state.metrics.connections.inc();
            let slot = Arc::new(ConnectionSlot::new(
                permit,
                address,
                probe_only,
                PublishLimits::from_config(&state.config),
                state.metrics.clone(),
            ));
            let _ = socket.set_nodelay(true);
            let task = serve_connection(state.clone(), socket, peer, slot, polls.clone());
            state.tasks.spawn(state.metrics.count_task(task));
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
        if let Some(backplane) = &state.backplane {
            cluster::presence::lease::retire_node(backplane.presence()).await;
        }
        stop_metrics.cancel();
        tracing::info!("broker stopped");
    }
}

/// Serves one accepted connection: the TLS handshake first if the port
/// speaks TLS (bounded by `handshake_timeout`, in this connection's task so
/// the accept loop never waits for it), then HTTP.
async fn serve_connection(
    state: Arc<BrokerState>,
    socket: TcpStream,
    peer: SocketAddr,
    slot: Arc<ConnectionSlot>,
    polls: Arc<PollSessions>,
) {
    let Some(acceptor) = state.tls.as_ref().map(|tls| tls.acceptor()) else {
        return serve_clients(state, socket, peer, slot, polls).await;
    };
    let handshake = async {
        let mut first = [0u8; 1];
        match socket.peek(&mut first).await {
            Ok(0) => return Ok(None),
            Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => {
                // Most likely ws:// or http:// to a TLS port: say so in
                // plain HTTP rather than a TLS alert the client cannot read.
                refuse(socket, "400 Bad Request", PLAINTEXT_BODY.to_owned(), None).await;
                return Ok(None);
            }
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        acceptor.accept(socket).await.map(Some)
    };
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(state.config.handshake_timeout, handshake) => outcome,
        _ = state.shutdown.cancelled() => return,
    };
    match outcome {
        Ok(Ok(Some(tls))) => serve_clients(state, tls, peer, slot, polls).await,
        Ok(Ok(None)) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
    }
}

/// Serves the main port's HTTP ([`http::route`]) on one client connection.
async fn serve_clients<S: Transport>(
    state: Arc<BrokerState>,
    socket: S,
    peer: SocketAddr,
    slot: Arc<ConnectionSlot>,
    polls: Arc<PollSessions>,
) {
    let identity = socket.peer_identity().map(Arc::new);
    let route_state = state.clone();
    let abort_slot = slot.clone();
    let route = move |req| {
        let (state, slot, polls) = (route_state.clone(), slot.clone(), polls.clone());
        http::route::<S>(state, slot, polls, identity.clone(), req)
    };
    serve_http(state, socket, peer, route, abort_slot.aborted()).await
}

/// Serves HTTP/1.1 on one connection, answering each request with `route`,
/// until the connection ends or shutdown; a WebSocket upgrade hands the
/// socket over to [`crate::connection::serve`]. When `abort` resolves the
/// connection is dropped at once (an SSE stream whose client stopped
/// reading).
async fn serve_http<S, R, F>(
    state: Arc<BrokerState>,
    socket: S,
    peer: SocketAddr,
    route: R,
    abort: impl Future<Output = ()>,
) where
    S: Transport,
    R: Fn(Request<hyper::body::Incoming>) -> F + Send + 'static,
    F: Future<Output = Response<http::Body>> + Send + 'static,
{
    let service = service_fn(move |req| {
        let response = route(req);
        async move { Ok::<_, std::convert::Infallible>(response.await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.handshake_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::pin!(abort);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = &mut abort => return,
        _ = state.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                result = connection => result,
                _ = abort => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "http connection ended with an error");
    }
}

/// The body of the 503 answer to a connection over `max_connections`.
const FULL_BODY: &str = "broker is at max_connections; retry later or connect to another node\n";

/// The body of the 400 answer to plain HTTP on a TLS port.
const PLAINTEXT_BODY: &str = "this port speaks TLS; connect with wss:// or https://\n";

/// The body of the 503 answer to a connection over the metrics listener's
/// limit.
const METRICS_FULL_BODY: &str = "too many connections to the metrics listener; retry later\n";

/// Serves the metrics listener until `stop`: at most [`PROBE_CONNECTIONS`]
/// connections at once (more get 503), outside `max_connections`, plain
/// HTTP/1.1 with the same header deadline as the main port. Refusals take
/// one of the `refusing` places, shared with the main port.
async fn serve_metrics(
    state: Arc<BrokerState>,
    listener: TcpListener,
    stop: CancellationToken,
    refusing: Arc<Semaphore>,
) {
    let side = SideListener {
        accept_errors: AcceptErrors::new("metrics", &state.metrics),
        metrics: state.metrics.clone(),
        places: PROBE_CONNECTIONS,
        full_body: METRICS_FULL_BODY,
        stop: stop.clone(),
        refusing,
    };
    side.accept(listener, |socket, _, place| {
        let metrics = state.metrics.clone();
        let state = state.clone();
        let stop = stop.clone();
        tokio::spawn(metrics.count_task(async move {
            let service = service_fn(|req| {
                let response = http::route_operational(&state, &req);
                async move { Ok::<_, std::convert::Infallible>(response) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(state.config.handshake_timeout)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(socket), service);
            tokio::select! {
                _ = connection => {}
                _ = stop.cancelled() => {}
            }
            drop(place);
        }));
    })
    .await
}

/// How a side listener (metrics, echo) accepts: a limit of its own, 503 for
/// connections over it, until `stop`.
struct SideListener {
    /// Its accept failures (back-off, metric, log), under its name.
    accept_errors: AcceptErrors,
    /// Where refusal tasks are counted.
    metrics: Metrics,
    /// Connections served at once, at most.
    places: usize,
    /// The body of the 503 answer over `places`.
    full_body: &'static str,
    /// Ends the accept loop.
    stop: CancellationToken,
    /// Places for refusals, shared with the main port.
    refusing: Arc<Semaphore>,
}

impl SideListener {
    /// Accepts until `stop`, handing each connection within the limit to
    /// `serve` with its place, which it holds while the connection lasts.
    /// Refusals take one of the `refusing` places, else the connection is
    /// closed without an answer.
    async fn accept(
        mut self,
        listener: TcpListener,
        mut serve: impl FnMut(TcpStream, SocketAddr, OwnedSemaphorePermit),
    ) {
        let places = Arc::new(Semaphore::new(self.places));
        while let Some((socket, peer)) = self.accept_errors.next(&listener, &self.stop).await {
            match places.clone().try_acquire_owned() {
                Ok(place) => serve(socket, peer, place),
                Err(_) => spawn_refusal(
                    &self.metrics,
                    &self.refusing,
                    socket,
                    "503 Service Unavailable",
                    self.full_body.to_owned(),
                ),
            }
        }
    }
}

/// Answers a refused connection with `status` and `body` in a task of its
/// own (counted in `tickwire_connection_tasks`) if one of the [`MAX_REFUSING`]
/// `refusing` places is free; otherwise drops it unanswered.
/// Cluster mode: starts the backplane's publisher, subscriber and presence
/// lease tasks (they stop at shutdown).
fn start_backplane(state: &Arc<BrokerState>) {
    let Some(backplane) = &state.backplane else {
        return;
    };
    if let Some(task) = backplane.take_publisher_task() {
        tokio::spawn(task.run(
            Arc::clone(backplane.target()),
            Arc::clone(&backplane.health),
            state.metrics.clone(),
            state.shutdown.clone(),
        ));
    }
    tokio::spawn(cluster::subscriber::run(Arc::clone(state)));
    // It runs through the drain; the node retires once drained.
    tokio::spawn(cluster::presence::lease::run(Arc::clone(
        backplane.presence(),
    )));
}

fn spawn_refusal(
    metrics: &Metrics,
    refusing: &Arc<Semaphore>,
    socket: TcpStream,
    status: &'static str,
    body: String,
) {
    if let Ok(permit) = refusing.clone().try_acquire_owned() {
        tokio::spawn(metrics.count_task(refuse(socket, status, body, Some(permit))));
    }
}

/// The body of the 503 answer to a connection over the echo listener's
/// limit.
const ECHO_FULL_BODY: &str = "the echo service is at max_connections; retry later\n";

/// Serves the echo service (`echo_listen`) until shutdown: plain HTTP/1.1
/// whose only answer is the WebSocket upgrade ([`http::upgrade_echo`]), at
/// most `max_connections` connections at once (more get 503; refusals take
/// one of the `refusing` places, shared with the main port). Connections run
/// in the broker's task set, so the drain closes them with 1001.
async fn serve_echo(state: Arc<BrokerState>, listener: TcpListener, refusing: Arc<Semaphore>) {
    let side = SideListener {
        accept_errors: AcceptErrors::new("echo", &state.metrics),
        metrics: state.metrics.clone(),
        places: state.config.max_connections,
        full_body: ECHO_FULL_BODY,
        stop: state.shutdown.clone(),
        refusing,
    };
    side.accept(listener, |socket, peer, place| {
        let _ = socket.set_nodelay(true);
        let place = Arc::new(place);
        let echo_state = state.clone();
        let route = move |req| {
            let response = http::upgrade_echo::<TcpStream>(echo_state.clone(), place.clone(), req);
            std::future::ready(response)
        };
        state.tasks.spawn(state.metrics.count_task(serve_http(
            state.clone(),
            socket,
            peer,
            route,
            std::future::pending(),
        )));
    })
    .await
}

/// Answers a connection with `status` (e.g. `503 Service Unavailable`) and
/// `body`, and closes it. The request is read and discarded (briefly,
/// boundedly) so that closing does not reset the connection before the
/// client has read the answer. `_permit`, when the refusal is spawned from
/// an accept loop, is one of the [`MAX_REFUSING`] places, held until then.
async fn refuse(
    mut socket: TcpStream,
    status: &str,
    body: String,
    _permit: Option<OwnedSemaphorePermit>,
) {
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
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

/// Forgets idle topics and idle source addresses, periodically.
async fn sweep_idle(state: Arc<BrokerState>, addresses: Arc<IpLimits>) {
    let period =
        (state.config.topic_idle_ttl / 2).clamp(Duration::from_millis(100), MAX_SWEEP_INTERVAL);
    let mut interval = tokio::time::interval(period);
    loop {
        interval.tick().await;
        let now = std::time::Instant::now();
        addresses.prune(now);
        let removed = state.registry.sweep_idle(now);
        if removed > 0 {
            tracing::debug!(removed, "forgot idle topics");
        }
    }
}
