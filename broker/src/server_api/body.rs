//! Reading a request body within the broker's bounds: at most
//! `max_http_body` bytes (a larger `Content-Length` is refused before
//! anything is read) and within `http_body_timeout`.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_LENGTH, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tickwire_protocol::ErrorCode;

use crate::server_api::reply::{Body, counted_error, json_error};
use crate::state::BrokerState;

/// Whether the request announces a body larger than `max_http_body`.
pub fn declared_too_large<B>(state: &BrokerState, req: &Request<B>) -> bool {
    req.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > state.config.max_http_body as u64)
}

/// The 413 answer to a body over `max_http_body`.
pub fn too_large(state: &BrokerState) -> Response<Body> {
    let limit = state.config.max_http_body;
    counted_error(
        state,
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        &format!("body larger than the {limit}-byte limit (--max-http-body)"),
    )
}

/// The whole body of `req`, or the answer: 413 over the limit, 408 when it
/// does not arrive in time (the connection is then closed: the rest of the
/// body is not read), 400 `malformed` when it cannot be read.
pub async fn read(state: &BrokerState, req: Request<Incoming>) -> Result<Bytes, Response<Body>> {
    if declared_too_large(state, &req) {
        return Err(too_large(state));
    }
    let timeout = state.config.http_body_timeout;
    let collected = Limited::new(req.into_body(), state.config.max_http_body).collect();
    let Ok(collected) = tokio::time::timeout(timeout, collected).await else {
        state.metrics.http_body_timeouts.inc();
        let mut response = json_error(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            &format!(
                "the body did not arrive within {} (--http-body-timeout); send it in one go",
                humantime::format_duration(timeout)
            ),
        );
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        return Err(response);
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large(state)),
        Err(e) => Err(counted_error(
            state,
            StatusCode::BAD_REQUEST,
            ErrorCode::Malformed,
            &format!("cannot read body: {e}"),
        )),
    }
}
