//! The answers every HTTP endpoint shares: the response body type, JSON
//! bodies and the JSON error form `{"error":{"code":…,"message":…}}`
//! (docs/http-api.md), the 401 challenge and the 403 refusals.

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};
use serde_json::json;
use tickwire_protocol::ErrorCode;
use tickwire_protocol::topic::Topic;

use crate::auth::AuthError;
use crate::fallback::sse;
use crate::session::FORBIDDEN_MESSAGE;
use crate::state::BrokerState;

/// The body type of every response: whole, or streamed (SSE).
pub type Body = Either<Full<Bytes>, sse::ChunkBody>;

/// A whole response body.
pub fn full(body: impl Into<Bytes>) -> Body {
    Either::Left(Full::new(body.into()))
}

/// A `text/plain` answer.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A JSON answer.
pub fn json_response(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    let mut response = Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A JSON answer that no cache may keep (`Cache-Control: no-store`).
pub fn no_store(mut response: Response<Body>) -> Response<Body> {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A JSON error answer with any `code` (also the HTTP-only ones such as
/// `not_found`), not counted in a metric.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    json_response(
        status,
        json!({ "error": { "code": code, "message": message } }),
    )
}

/// A JSON error answer with the broker's `code` (section 10 of
/// protocol.md), counted in `tickwire_protocol_errors_total`.
pub fn counted_error(
    state: &BrokerState,
    status: StatusCode,
    code: ErrorCode,
    message: &str,
) -> Response<Body> {
    state.metrics.protocol_error(code);
    json_error(status, code.name(), message)
}

/// The `WWW-Authenticate` value of every 401: it says a bearer token is
/// needed and never which check failed.
const BEARER_CHALLENGE: &str = "Bearer realm=\"tickwire\", error=\"invalid_token\", error_description=\"a valid access token is required\"";

/// The 401 answer to a request that failed authentication; the reason goes
/// to the debug log only.
pub fn unauthorized(state: &BrokerState, reason: &AuthError) -> Response<Body> {
    tracing::debug!(%reason, "request not authenticated");
    // A valid token whose client info is too large: the issuer must know
    // why (the token checked out, so this reveals nothing to a forger).
    let message = match reason {
        AuthError::InfoTooLarge(..) | AuthError::InfoTooDeep => reason.to_string(),
        _ => "a valid bearer token is required".to_owned(),
    };
    let mut response = counted_error(
        state,
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        &message,
    );
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(BEARER_CHALLENGE));
    response
}

/// The 403 answer to a request outside the client's grants.
pub fn forbidden(state: &BrokerState) -> Response<Body> {
    forbidden_because(state, FORBIDDEN_MESSAGE)
}

/// A 403 `forbidden` answer saying `message`.
pub fn forbidden_because(state: &BrokerState, message: &str) -> Response<Body> {
    counted_error(state, StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
}

/// A 400 answer with `code`, counted in the metrics.
pub fn bad_request(state: &BrokerState, code: ErrorCode, message: &str) -> Response<Body> {
    counted_error(state, StatusCode::BAD_REQUEST, code, message)
}

/// The topic a path names (taken literally), or the 400 `invalid_topic`
/// answer saying why it is not one.
pub fn path_topic<'a>(
    state: &BrokerState,
    text: &'a str,
) -> Result<Topic<'a>, Box<Response<Body>>> {
    Topic::new(text).map_err(|e| {
        let message = format!("topic `{text}`: {e}");
        Box::new(bad_request(state, ErrorCode::InvalidTopic, &message))
    })
}

/// The 405 answer naming the method to use.
pub fn method_not_allowed(allowed: &'static str) -> Response<Body> {
    json_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("use {allowed}"),
    )
}
