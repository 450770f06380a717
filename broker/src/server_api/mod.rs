//! The server API: the JSON endpoints a backend (or an operator) calls,
//! documented endpoint by endpoint in docs/http-api.md.
//!
//! | route | module | credentials |
//! |---|---|---|
//! | `GET /v1/stats`, `GET /v1/topics` | [`crate::admin_api`] | admin grant |
//! | `GET /v1/history/{topic}` | [`history`] | admin grant |
//! | `GET /v1/presence/{topic}[/stats]` | [`presence`] | admin grant |
//! | `POST /v1/disconnect` | [`disconnect`] | admin grant |
//! | `POST /v1/publish` (a batch) | [`batch_publish`] | publish grant per message |
//! | `POST /v1/publish/{topic}` | [`publish`] (routed by [`crate::http`], for CORS) | publish grant |
//!
//! [`route`] takes the requests for these paths (except the single
//! publish) and gives every other request back. The admin grant is the one
//! `/v1/stats` needs: a token with `"admin": true`, an admin API key, or an
//! admin client certificate; with authentication off anyone may call them.
//! What every endpoint shares lives in [`reply`] (JSON answers and errors),
//! [`credentials`] (who is asking) and [`body`] (reading a bounded body).

pub mod backpressure;
pub mod batch_publish;
pub mod body;
pub mod credentials;
pub mod disconnect;
pub mod history;
pub mod json_payload;
pub mod presence;
pub mod publish;
pub mod reply;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use crate::admin_api;
use crate::server_api::credentials::require_admin;
use crate::server_api::reply::{Body, counted_error, json_response, method_not_allowed, no_store};
use crate::slot::ConnectionSlot;
use crate::state::BrokerState;
use crate::tls::PeerIdentity;

/// `GET /v1/stats`.
pub const STATS_PATH: &str = "/v1/stats";
/// `GET /v1/topics`.
pub const TOPICS_PATH: &str = "/v1/topics";
/// `GET /v1/history/{topic}`.
pub const HISTORY_PREFIX: &str = "/v1/history/";
/// `POST /v1/publish` (without a topic: a batch).
pub const BATCH_PUBLISH_PATH: &str = "/v1/publish";
/// `GET /v1/presence/{topic}` and `GET /v1/presence/{topic}/stats`.
pub const PRESENCE_PREFIX: &str = "/v1/presence/";
/// `POST /v1/disconnect`.
pub const DISCONNECT_PATH: &str = "/v1/disconnect";

/// Which server API endpoint a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint<'a> {
    /// One that needs the admin grant.
    Admin(Admin<'a>),
    /// `POST /v1/publish`: publish grants per message.
    BatchPublish,
}

/// The endpoints that need the admin grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admin<'a> {
    Stats,
    Topics,
    History(&'a str),
    /// What follows the prefix: the topic, maybe `/stats`.
    Presence(&'a str),
    Disconnect,
}

impl<'a> Endpoint<'a> {
    fn of(path: &'a str) -> Option<Self> {
        let admin = match path {
            BATCH_PUBLISH_PATH => return Some(Endpoint::BatchPublish),
            STATS_PATH => Admin::Stats,
            TOPICS_PATH => Admin::Topics,
            DISCONNECT_PATH => Admin::Disconnect,
            _ => match path.strip_prefix(PRESENCE_PREFIX) {
                Some(rest) => Admin::Presence(rest),
                None => Admin::History(path.strip_prefix(HISTORY_PREFIX)?),
            },
        };
        Some(Endpoint::Admin(admin))
    }

    /// The method the endpoint answers.
    fn method(self) -> &'static str {
        match self {
            Endpoint::BatchPublish | Endpoint::Admin(Admin::Disconnect) => "POST",
            Endpoint::Admin(_) => "GET",
        }
    }
}

/// Answers a request to a server API path (`Ok`), or gives `req` back
/// (`Err`) for any other path. `slot` is the connection's place (its
/// publish rate), `identity` its verified client certificate.
pub async fn route(
    state: &BrokerState,
    slot: &ConnectionSlot,
    identity: Option<&PeerIdentity>,
    path: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, Request<Incoming>> {
    let Some(endpoint) = Endpoint::of(path) else {
        return Err(req);
    };
    if req.method().as_str() != endpoint.method() {
        return Ok(method_not_allowed(endpoint.method()));
    }
    let admin = match endpoint {
        Endpoint::BatchPublish => {
            return Ok(batch_publish::answer(state, slot, identity, req).await);
        }
        Endpoint::Admin(admin) => admin,
    };
    if let Err(refusal) = require_admin(state, &req, identity) {
        return Ok(*refusal);
    }
    let query = req.uri().query();
    let response = match admin {
        Admin::Stats => json_response(StatusCode::OK, admin_api::stats(state)),
        Admin::Topics => match admin_api::topics(state, query) {
            Ok(body) => json_response(StatusCode::OK, body),
            Err(e) => counted_error(state, StatusCode::BAD_REQUEST, e.code, &e.message),
        },
        Admin::History(topic) => history::answer(state, topic, query).await,
        Admin::Presence(rest) => presence::answer(state, rest).await,
        Admin::Disconnect => disconnect::answer(state, req).await,
    };
    Ok(no_store(response))
}
