//! The HTTP side of the broker's port: routing, the WebSocket upgrade, HTTP
//! publish, metrics and health endpoints.
//!
//! | route | answer |
//! |---|---|
//! | `GET /ws` (upgrade) | WebSocket session speaking `tickwire.v1` |
//! | `POST /v1/publish/{topic}` | publishes the body; JSON `{topic, seq, deliveries}` |
//! | `GET /v1/sse` | Server-Sent Events of the `sub` patterns ([`crate::fallback::sse`]) |
//! | `GET /v1/poll` | long polling of the `sub` patterns ([`crate::fallback::poll`]) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /healthz` | 200 while the process runs |
//! | `GET /readyz` | 200 when ready, 503 while draining |
//! | `GET /v1/stats`, `/v1/topics`, `/v1/history/{topic}`, `POST /v1/publish` | the server API ([`crate::server_api`]) |
//! | `GET /dashboard[/ASSET]` | with `--dashboard`: the page ([`crate::dashboard`]) |
//!
//! With `metrics_listen` set, `/metrics`, `/healthz` and `/readyz` are served by
//! [`route_operational`] on that listener only, and the main port answers
//! them with 404.
//!
//! With authentication on ([`crate::auth`]), the upgrade and HTTP publish
//! need a bearer token (`Authorization: Bearer T`; on `/ws` also
//! `?token=T`, for browsers): without a valid one they get 401 with
//! `WWW-Authenticate`, the same whatever check failed. A verified client
//! certificate named in `--tls-client-grants-file` stands in for a token
//! when none is presented. The server API takes the same credentials as
//! HTTP publish (a token or an API key); the dashboard's static files need
//! none. The fallback
//! transports (`/v1/sse`, `/v1/poll`) authenticate like the upgrade
//! (`?token=` or the header) and check the `Origin` like it; they, and
//! HTTP publish, answer CORS requests from allowed origins.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_MAX_AGE, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderName, HeaderValue,
    ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE, VARY,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tickwire_protocol::deflate::{self, ServerAgreement};
use tickwire_protocol::{ErrorCode, SUBPROTOCOL, WEBSOCKET_PATH, handshake};

use crate::auth::AuthError;
use crate::compression::CompressionSettings;
use crate::config::BrokerConfig;
use crate::connection;
use crate::dashboard;
use crate::echo::Echo;
use crate::fallback::poll::{Owner, PollError, PollSessions, Requester};
use crate::fallback::query::{self, Endpoint, QueryError};
use crate::fallback::{Feed, Kind, cursor, sse};
use crate::grants::Access;
use crate::handler::MessageHandler;
use crate::limits::PublishLimits;
use crate::metrics::GaugeHold;
use crate::outbound::OutboundQueue;
use crate::presence::parse_client_id;
use crate::server_api;
use crate::server_api::credentials::{Credential, authenticate, header_token};
use crate::server_api::publish::publish;
pub use crate::server_api::publish::{publish_retain_param, publish_topic};
pub use crate::server_api::reply::{Body, full};
use crate::server_api::reply::{counted_error, forbidden, json_error, text, unauthorized};
use crate::session::Session;
use crate::slot::ConnectionSlot;
use crate::state::BrokerState;
use crate::stream::Transport;
use crate::tls::PeerIdentity;

/// The path of the Server-Sent Events fallback.
pub const SSE_PATH: &str = "/v1/sse";

/// The path of the long-poll fallback.
pub const POLL_PATH: &str = "/v1/poll";

/// The query string of `/ws`.
#[derive(Debug, Default)]
struct WsQuery<'a> {
    /// `token`, taken literally (tokens need no percent-encoding).
    token: Option<&'a str>,
    /// `client`: the client id of the connection's presence entries.
    client: Option<&'a str>,
}

/// Reads the query string of `/ws`: only `token` and `client` are
/// accepted, each at most once.
fn ws_query(query: Option<&str>) -> Result<WsQuery<'_>, &'static str> {
    let mut q = WsQuery::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("token", value)) if q.token.is_none() => q.token = Some(value),
            Some(("client", value)) if q.client.is_none() => q.client = Some(value),
            Some(("token" | "client", _)) => {
                return Err("query parameters token and client may be given once each\n");
            }
            _ => return Err("unsupported query parameter; /ws takes only token= and client=\n"),
        }
    }
    Ok(q)
}

/// The operational endpoints: metrics, health and readiness.
const OPERATIONAL_PATHS: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// Answers `/metrics`, `/healthz` and `/readyz`; `None` for other paths.
fn operational(state: &BrokerState, method: &Method, path: &str) -> Option<Response<Body>> {
    let response = match (method, path) {
        (&Method::GET, "/metrics") => {
            state.metrics.set_ready(state.readyz_ok());
            let mut response = text(StatusCode::OK, state.metrics.render());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") if !state.is_ready() => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        (&Method::GET, "/readyz") if state.backplane_down() => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "cluster backplane unavailable (Redis)\n",
        ),
        (&Method::GET, "/readyz") => text(StatusCode::OK, "ready\n"),
        (_, p) if OPERATIONAL_PATHS.contains(&p) => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET",
        ),
        _ => return None,
    };
    Some(response)
}

/// Routes one request on the metrics listener (`metrics_listen`): only
/// `/metrics`, `/healthz` and `/readyz`.
pub fn route_operational(state: &BrokerState, req: &Request<Incoming>) -> Response<Body> {
    operational(state, req.method(), req.uri().path()).unwrap_or_else(|| {
        json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "unknown path; this listener serves GET /metrics, /healthz and /readyz; clients connect to the main port",
        )
    })
}

/// Routes one HTTP request received on a connection of stream type `S`;
/// `identity` is the connection's verified TLS client certificate, if any;
/// `polls` the broker's long-poll sessions.
pub async fn route<S: Transport>(
    state: Arc<BrokerState>,
    slot: Arc<ConnectionSlot>,
    polls: Arc<PollSessions>,
    identity: Option<Arc<PeerIdentity>>,
    req: Request<Incoming>,
) -> Response<Body> {
    let path = req.uri().path().to_owned();
    // Without a metrics listener, this port also serves the operational
    // endpoints.
    let operational_here = state.config.metrics_listen.is_none();
    let probe_route = operational_here && OPERATIONAL_PATHS.contains(&path.as_str());
    if slot.probe_only() && !probe_route {
        // Over max_connections: only probes and scrapes are served.
        state.metrics.connections_rejected.inc();
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker is at max_connections; retry later or connect to another node\n",
        );
    }
    if operational_here {
        if let Some(response) = operational(&state, req.method(), &path) {
            return response;
        }
    }
    let req = match server_api::route(&state, &slot, identity.as_deref(), &path, req).await {
        Ok(response) => return response,
        Err(req) => req,
    };
    if state.config.dashboard {
        if let Some(asset) = dashboard::serve(&path, req.headers()) {
            return match *req.method() {
                Method::GET => asset.map(Either::Left),
                _ => json_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET",
                ),
            };
        }
    }
    let cors = cors_origin(&state.config, &path, &req);
    let response = match (req.method(), path.as_str(), publish_topic(&path)) {
        (&Method::GET, WEBSOCKET_PATH, _) => upgrade::<S>(state, slot, identity, req),
        (&Method::POST, _, Some(topic)) => {
            publish(&state, &slot, identity.as_deref(), topic, req).await
        }
        (&Method::GET, SSE_PATH, _) => {
            fallback(state, slot, &polls, identity, req, Endpoint::Sse).await
        }
        (&Method::GET, POLL_PATH, _) => {
            fallback(state, slot, &polls, identity, req, Endpoint::Poll).await
        }
        (&Method::OPTIONS, SSE_PATH | POLL_PATH, _) => preflight(&state.config, &req, "GET"),
        (&Method::OPTIONS, _, Some(_)) => preflight(&state.config, &req, "POST"),
        (_, SSE_PATH | POLL_PATH, _) => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET",
        ),
        (_, WEBSOCKET_PATH, _) => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET",
        ),
        (_, _, Some(_)) => json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use POST",
        ),
        _ if operational_here => json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "unknown path; routes are GET /ws, POST /v1/publish/{topic}, GET /v1/sse, GET /v1/poll, the server API (GET /v1/stats, /v1/topics, /v1/history/{topic}, /v1/presence/{topic}, POST /v1/publish, /v1/disconnect), GET /metrics, /healthz, /readyz (and GET /dashboard with --dashboard)",
        ),
        _ => json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "unknown path; routes here are GET /ws, POST /v1/publish/{topic}, GET /v1/sse, GET /v1/poll and the server API (GET /v1/stats, /v1/topics, /v1/history/{topic}, /v1/presence/{topic}, POST /v1/publish, /v1/disconnect) (and GET /dashboard with --dashboard); metrics and health are on the metrics listener (--metrics-listen)",
        ),
    };
    with_cors(response, cors)
}

/// The `Origin` of a request to a path that answers CORS (`/v1/sse`,
/// `/v1/poll`, `/v1/publish/*`), when it is allowed (`allowed_origins`).
fn cors_origin(config: &BrokerConfig, path: &str, req: &Request<Incoming>) -> Option<HeaderValue> {
    let cors_path = path == SSE_PATH || path == POLL_PATH || publish_topic(path).is_some();
    let origin = req.headers().get(ORIGIN)?;
    (cors_path && config.origin_allowed(origin.as_bytes())).then(|| origin.clone())
}

/// Lets the page at `origin` (if any) read `response`.
fn with_cors(mut response: Response<Body>, origin: Option<HeaderValue>) -> Response<Body> {
    if let Some(origin) = origin {
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(VARY, HeaderValue::from_static("Origin"));
    }
    response
}

/// The answer to a CORS preflight (`OPTIONS`) for a path served with
/// `method`: 204 for an allowed `Origin` (the headers come from
/// [`with_cors`]), 403 for another.
fn preflight(
    config: &BrokerConfig,
    req: &Request<Incoming>,
    method: &'static str,
) -> Response<Body> {
    if req
        .headers()
        .get(ORIGIN)
        .is_some_and(|origin| !config.origin_allowed(origin.as_bytes()))
    {
        return origin_refused();
    }
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::NO_CONTENT;
    let headers = response.headers_mut();
    headers.insert(
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(method),
    );
    headers.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, last-event-id"),
    );
    headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

/// The 403 answer to a fallback request from a page whose `Origin` is not
/// in `allowed_origins`.
fn origin_refused() -> Response<Body> {
    json_error(
        StatusCode::FORBIDDEN,
        ErrorCode::Forbidden.name(),
        "this Origin may not use this broker (allowed_origins)",
    )
}

/// The `Last-Event-ID` request header (a browser's automatic SSE
/// reconnect).
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// The checked query of a fallback request (`Last-Event-ID` folded into
/// the cursor on `/v1/sse`), or the refusal: 403 for a foreign `Origin`,
/// 503 while draining, 400 for a bad parameter or pattern.
fn fallback_query(
    state: &BrokerState,
    req: &Request<Incoming>,
    endpoint: Endpoint,
) -> Result<query::Query, Box<Response<Body>>> {
    if let Some(origin) = req.headers().get(ORIGIN) {
        if !state.config.origin_allowed(origin.as_bytes()) {
            return Err(Box::new(origin_refused()));
        }
    }
    if !state.is_ready() {
        return Err(Box::new(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ShuttingDown.name(),
            "broker is shutting down; connect to another node",
        )));
    }
    let mut query = match query::parse(req.uri().query(), endpoint, state.config.max_subscriptions)
    {
        Ok(query) => query,
        Err(QueryError::Option(message)) => {
            return Err(Box::new(counted_error(
                state,
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidOption,
                &message,
            )));
        }
        Err(QueryError::Pattern(message)) => {
            return Err(Box::new(counted_error(
                state,
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidPattern,
                &message,
            )));
        }
    };
    // A browser's reconnect sends the last id it saw: it wins.
    let last = req.headers().get(LAST_EVENT_ID).filter(|v| !v.is_empty());
    if let Some(last) = last.filter(|_| endpoint == Endpoint::Sse) {
        let resumed = last
            .to_str()
            .map_err(|_| "not text".to_owned())
            .and_then(cursor::decode);
        match resumed {
            Ok(positions) => query.cursor = Some(positions),
            Err(message) => {
                return Err(Box::new(counted_error(
                    state,
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidOption,
                    &format!("header Last-Event-ID: {message}"),
                )));
            }
        }
    }
    Ok(query)
}

/// Answers `GET /v1/sse` and `GET /v1/poll` on the connection holding
/// `slot`: checks the `Origin`, the query, the credentials and the grants
/// of every `sub` (400, 401, 403 before anything is subscribed), then
/// streams or polls.
async fn fallback(
    state: Arc<BrokerState>,
    slot: Arc<ConnectionSlot>,
    polls: &Arc<PollSessions>,
    identity: Option<Arc<PeerIdentity>>,
    req: Request<Incoming>,
    endpoint: Endpoint,
) -> Response<Body> {
    let query = match fallback_query(&state, &req, endpoint) {
        Ok(query) => query,
        Err(refusal) => return *refusal,
    };
    let credential = Credential::Upgrade(query.token.as_deref());
    let authorized = match authenticate(&state, &req, credential, identity.as_deref()) {
        // No way to send AUTH here: waiting for it is no authentication.
        Ok(authorized) if authorized.access == Access::AwaitingAuth => {
            return unauthorized(&state, &AuthError::Missing);
        }
        Ok(authorized) => authorized,
        Err(reason) => return unauthorized(&state, &reason),
    };
    if !query
        .subs
        .iter()
        .all(|p| authorized.access.may_subscribe(p))
    {
        return forbidden(&state);
    }
    match endpoint {
        Endpoint::Sse => {
            let feed = Feed::open(&state, &query, authorized, identity, Kind::Sse);
            let mut response =
                Response::new(Either::Right(sse::start(state, slot, feed, query.payload)));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(
                HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            );
            response
        }
        Endpoint::Poll => {
            let owner = Owner {
                token: header_token(&req)
                    .ok()
                    .flatten()
                    .or(query.token.as_deref())
                    .map(str::to_owned),
                identity: identity.as_deref().map(ToString::to_string),
            };
            let requester = Requester {
                authorized,
                identity,
                owner,
            };
            match polls.answer(&state, &query, requester, &slot).await {
                Ok(body) => {
                    let mut response = Response::new(full(body));
                    let headers = response.headers_mut();
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    response
                }
                Err(PollError::TooManySessions(max)) => json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_sessions",
                    &format!(
                        "this node already holds {max} long-poll sessions (max_poll_sessions); retry later or connect to another node"
                    ),
                ),
                Err(PollError::Address(refusal)) => {
                    state
                        .metrics
                        .connections_rejected_per_ip
                        .with_label_values(&[refusal.reason()])
                        .inc();
                    json_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        &format!(
                            "this address holds or opens too many connections and long-poll sessions ({}); poll with the session you have, or retry later",
                            refusal.reason()
                        ),
                    )
                }
            }
        }
    }
}

/// Picks the subprotocol from the client's offer. `Ok(None)`: none offered
/// (treated as v1). `Err`: only unknown ones offered.
fn negotiate_subprotocol(req: &Request<Incoming>) -> Result<Option<&'static str>, String> {
    let mut offered = Vec::new();
    for value in req.headers().get_all(SEC_WEBSOCKET_PROTOCOL) {
        let value = value.to_str().unwrap_or("");
        offered.extend(value.split(',').map(str::trim).filter(|p| !p.is_empty()));
    }
    if offered.is_empty() {
        Ok(None)
    } else if offered.contains(&SUBPROTOCOL) {
        Ok(Some(SUBPROTOCOL))
    } else {
        Err(format!(
            "unsupported WebSocket subprotocol {offered:?}; this broker speaks {SUBPROTOCOL}\n"
        ))
    }
}

/// Checks `Origin` (one of `allowed_origins` if present and the list is
/// set, else 403), `Sec-WebSocket-Version` (13, else 426 naming it, as
/// RFC 6455 section 4.4 asks) and `Sec-WebSocket-Key` (base64 of 16 bytes,
/// else 400); the refusal with its metric reason, if any.
fn handshake_refusal(
    config: &BrokerConfig,
    req: &Request<Incoming>,
) -> Option<(&'static str, Response<Body>)> {
    if let Some(origin) = req.headers().get(ORIGIN) {
        if !config.origin_allowed(origin.as_bytes()) {
            return Some((
                "origin",
                text(
                    StatusCode::FORBIDDEN,
                    "this Origin may not open WebSocket connections to this broker (allowed_origins)\n",
                ),
            ));
        }
    }
    let version = req.headers().get(SEC_WEBSOCKET_VERSION);
    if version.is_none_or(|v| v.as_bytes().trim_ascii() != b"13") {
        let mut response = text(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported WebSocket version; this broker speaks Sec-WebSocket-Version: 13\n",
        );
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return Some(("version", response));
    }
    let key = req.headers().get(SEC_WEBSOCKET_KEY);
    (!key.is_some_and(|k| handshake::is_valid_key(k.as_bytes()))).then(|| {
        let response = text(
            StatusCode::BAD_REQUEST,
            "missing or invalid Sec-WebSocket-Key: send the base64 encoding of 16 random bytes\n",
        );
        ("key", response)
    })
}

/// The answer to a request that cannot become a WebSocket: not an upgrade
/// request, the broker draining, or a [`handshake_refusal`].
fn upgrade_refusal(state: &BrokerState, req: &Request<Incoming>) -> Option<Response<Body>> {
    if !fastwebsockets::upgrade::is_upgrade_request(req) {
        return Some(text(
            StatusCode::BAD_REQUEST,
            "this endpoint expects a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)\n",
        ));
    }
    if !state.is_ready() {
        return Some(text(
            StatusCode::SERVICE_UNAVAILABLE,
            "broker is shutting down; connect to another node\n",
        ));
    }
    let (reason, refusal) = handshake_refusal(&state.config, req)?;
    state
        .metrics
        .handshakes_refused
        .with_label_values(&[reason])
        .inc();
    Some(refusal)
}

/// The permessage-deflate agreement for `req`: `None` unless `compression`
/// is on and the client offered something the broker can honour
/// ([`deflate::negotiate_server`]).
fn negotiate_deflate(config: &BrokerConfig, req: &Request<Incoming>) -> Option<ServerAgreement> {
    if !config.compression {
        return None;
    }
    let offers = req
        .headers()
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok());
    deflate::negotiate_server(offers)
}

/// Answers the upgrade request `req` with 101 (naming `subprotocol`, if
/// any, and the permessage-deflate agreement `deflate`, if any) and serves
/// the WebSocket, once upgraded, on the connection layer with the handler
/// `new_handler` makes, in the broker's task set. `hold` (the connection's
/// place) is kept until the WebSocket ends.
fn switch_protocols<S, H>(
    state: Arc<BrokerState>,
    mut req: Request<Incoming>,
    subprotocol: Option<&'static str>,
    deflate: Option<ServerAgreement>,
    new_handler: impl FnOnce(Arc<OutboundQueue>) -> H + Send + 'static,
    hold: impl Send + 'static,
) -> Response<Body>
where
    S: Transport,
    H: MessageHandler + 'static,
{
    // The answer is built here and hyper hands the socket over once it is
    // written; fastwebsockets' upgrade future would also make a frame codec
    // with an 8 KiB buffer per connection that this broker never uses.
    let key = req
        .headers()
        .get(SEC_WEBSOCKET_KEY)
        .and_then(|key| key.to_str().ok());
    let Some(accept) = key.and_then(|key| HeaderValue::try_from(handshake::accept_key(key)).ok())
    else {
        return text(
            StatusCode::BAD_REQUEST,
            "missing or invalid Sec-WebSocket-Key: send the base64 encoding of 16 random bytes\n",
        );
    };
    let upgrade = hyper::upgrade::on(&mut req);
    // The session exists before the client can see the `101`.
    let prepared = connection::prepare(&state, new_handler);
    let tasks = state.tasks.clone();
    let metrics = state.metrics.clone();
    tasks.spawn(metrics.count_task(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade failed");
                return;
            }
        };
        match upgraded.downcast::<TokioIo<S>>() {
            Ok(parts) => {
                let io = parts.io.into_inner();
                connection::serve(state, io, parts.read_buf, prepared, deflate).await
            }
            Err(_) => tracing::error!("upgraded connection is not the accepted stream"),
        }
        drop(hold);
    }));
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(p) = subprotocol {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(p));
    }
    if let Some(agreed) = deflate {
        if let Ok(value) = HeaderValue::from_str(&agreed.response_header()) {
            headers.insert(SEC_WEBSOCKET_EXTENSIONS, value);
        }
    }
    response
}

/// Answers a request on the echo listener (`echo_listen`): any path, no
/// authentication, no subprotocol; the WebSocket is served by
/// [`crate::echo::Echo`]. `place` is the connection's place on that
/// listener, held until the WebSocket ends.
pub fn upgrade_echo<S: Transport>(
    state: Arc<BrokerState>,
    place: impl Send + 'static,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.method() != Method::GET {
        return json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET",
        );
    }
    if let Some(refusal) = upgrade_refusal(&state, &req) {
        return refusal;
    }
    let deflate = negotiate_deflate(&state.config, &req);
    let settings = CompressionSettings::from_config(&state.config);
    let new_echo = move |queue| Echo::new(queue, deflate.map(|_| settings));
    switch_protocols::<S, _>(state, req, None, deflate, new_echo, place)
}

fn upgrade<S: Transport>(
    state: Arc<BrokerState>,
    slot: Arc<ConnectionSlot>,
    identity: Option<Arc<PeerIdentity>>,
    req: Request<Incoming>,
) -> Response<Body> {
    if let Some(refusal) = upgrade_refusal(&state, &req) {
        return refusal;
    }
    let query = match ws_query(req.uri().query()) {
        Ok(query) => query,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    // Percent-decoded, as on `/v1/sse` and `/v1/poll`, so one id is
    // written the same way on every transport.
    let client = query
        .client
        .map(|raw| percent_encoding::percent_decode_str(raw).decode_utf8_lossy());
    let client = match client.as_deref().map(parse_client_id).transpose() {
        Ok(client) => client,
        Err(e) => {
            let message = format!("query parameter client: {e}");
            return counted_error(
                &state,
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidOption,
                &message,
            );
        }
    };
    let authorized = match authenticate(
        &state,
        &req,
        Credential::Upgrade(query.token),
        identity.as_deref(),
    ) {
        Ok(authorized) => authorized,
        Err(reason) => return unauthorized(&state, &reason),
    };
    let subprotocol = match negotiate_subprotocol(&req) {
        Ok(p) => p,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let limits = PublishLimits::from_config(&state.config);
    let deflate = negotiate_deflate(&state.config, &req);
    let session_state = Arc::clone(&state);
    let new_session = move |queue| {
        Session::new(&session_state, queue, authorized, limits, identity, client)
            .with_deflate(deflate.is_some())
    };
    let sessions = state.metrics.transport_sessions.with_label_values(&["ws"]);
    let hold = (slot, GaugeHold::new(&sessions));
    switch_protocols::<S, _>(state, req, subprotocol, deflate, new_session, hold)
}
