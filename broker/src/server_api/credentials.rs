//! Who sent an HTTP request: its bearer token or API key (the
//! `Authorization` header, or `?token=` where a browser cannot set
//! headers), or its verified client certificate, checked by
//! [`crate::auth`]; and the admin grant the server API needs.

use hyper::Request;
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;

use crate::auth::{AuthError, Authorized};
use crate::grants::Access;
use crate::server_api::reply::{Body, forbidden_because, unauthorized};
use crate::state::BrokerState;
use crate::tls::PeerIdentity;

/// The text of the 403 answer to a request without the admin grant.
pub const ADMIN_NEEDED: &str = "this endpoint needs the admin grant (\"admin\": true in the token's grants, or an admin API key)";

/// The token of the request's `Authorization: Bearer` header, if it has
/// one; more than one header, or another scheme, is refused.
pub fn header_token<B>(req: &Request<B>) -> Result<Option<&str>, AuthError> {
    let mut values = req.headers().get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthError::BadHeader);
    }
    let value = value.to_str().map_err(|_| AuthError::BadHeader)?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => match token.trim() {
            "" => Err(AuthError::BadHeader),
            token => Ok(Some(token)),
        },
        _ => Err(AuthError::BadHeader),
    }
}

/// Where a request presents its credentials.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// A WebSocket upgrade or a fallback request: a JWT in the header or
    /// the `token` query parameter.
    Upgrade(Option<&'a str>),
    /// An HTTP request (publish, the admin and server API endpoints): a JWT
    /// or an API key in the header.
    Http,
}

/// What the client of `req` may do: everything with authentication off,
/// else what its token or API key (for `credential`), its verified client
/// certificate `identity` (when it presents no token) or the anonymous
/// configuration grants.
pub fn authenticate(
    state: &BrokerState,
    req: &Request<Incoming>,
    credential: Credential<'_>,
    identity: Option<&PeerIdentity>,
) -> Result<Authorized, AuthError> {
    let Some(auth) = &state.auth else {
        return Ok(Authorized::open());
    };
    let header = header_token(req)?;
    match credential {
        Credential::Upgrade(query) => match (header, query) {
            (Some(_), Some(_)) => Err(AuthError::BadHeader),
            (token, None) | (None, token) => auth.authorize_upgrade(token, identity),
        },
        Credential::Http => auth.authorize_http(header, identity),
    }
}

/// The access of an HTTP request (token or API key in the header, or the
/// client certificate), or the refusal: 401 without valid credentials.
pub fn http_access(
    state: &BrokerState,
    req: &Request<Incoming>,
    identity: Option<&PeerIdentity>,
) -> Result<Access, Box<hyper::Response<Body>>> {
    authenticate(state, req, Credential::Http, identity)
        .map(|authorized| authorized.access)
        .map_err(|reason| Box::new(unauthorized(state, &reason)))
}

/// Checks that `req` carries the admin grant, as `/v1/stats` does: 401
/// without valid credentials, 403 without the grant.
pub fn require_admin(
    state: &BrokerState,
    req: &Request<Incoming>,
    identity: Option<&PeerIdentity>,
) -> Result<(), Box<hyper::Response<Body>>> {
    if http_access(state, req, identity)?.is_admin() {
        Ok(())
    } else {
        Err(Box::new(forbidden_because(state, ADMIN_NEEDED)))
    }
}
