//! `POST /v1/disconnect`: closes every connection of a client id
//! (`{"client": ID}`) or of a user (`{"user": ID}`, the token's `sub`),
//! with a close code (`"code"`: 4007, the default, or 4100-4999) and a
//! reason (`"reason"`, at most 123 bytes).
//!
//! This node's connections are closed through its
//! [`crate::directory::Directory`]: a WebSocket gets a close frame with the
//! code and reason, an SSE stream a `close` event, a long poll a `close`
//! answer, and their presence entries leave at once. In a cluster the
//! disconnect is also published on the cluster's control channel
//! ([`crate::cluster::backplane::Backplane::broadcast_disconnect`]): every node (this one too, where
//! it finds the connections already closing) applies it to its own
//! directory; the answer then says how many nodes received it.

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tickwire_protocol::ErrorCode;

use crate::directory::{DisconnectCode, DisconnectTarget};
use crate::presence::parse_client_id;
use crate::server_api::body;
use crate::server_api::reply::{Body, counted_error, json_response};
use crate::state::BrokerState;

/// Longest user id accepted, in bytes.
pub const MAX_USER_BYTES: usize = 1024;

/// The keys a disconnect body may have.
const KEYS: [&str; 4] = ["client", "user", "code", "reason"];

/// A checked disconnect request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectRequest {
    /// Whose connections.
    pub target: DisconnectTarget,
    /// With which close code and reason.
    pub code: DisconnectCode,
}

impl DisconnectRequest {
    /// Parses a disconnect body; the error says what is wrong (an
    /// `invalid_option`, or `malformed` when it is not a JSON object).
    pub fn parse(body: &[u8]) -> Result<DisconnectRequest, (ErrorCode, String)> {
        let option = |message: String| (ErrorCode::InvalidOption, message);
        let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body) else {
            return Err((
                ErrorCode::Malformed,
                "the body must be a JSON object {\"client\": ID} or {\"user\": ID}".to_owned(),
            ));
        };
        if let Some(key) = fields.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(option(format!(
                "unknown key {key}; a disconnect has client or user, code, reason"
            )));
        }
        let text = |key: &str| match fields.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(option(format!("{key} must be a string"))),
        };
        let target = match (text("client")?, text("user")?) {
            (Some(client), None) => {
                parse_client_id(client).map_err(|e| option(format!("client: {e}")))?;
                DisconnectTarget::Client(client.to_owned())
            }
            (None, Some(user)) if !user.is_empty() && user.len() <= MAX_USER_BYTES => {
                DisconnectTarget::User(user.to_owned())
            }
            (None, Some(_)) => {
                return Err(option(format!("user must be 1 to {MAX_USER_BYTES} bytes")));
            }
            _ => return Err(option("give exactly one of client and user".to_owned())),
        };
        let code = match fields.get("code") {
            None => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .and_then(|c| u16::try_from(c).ok())
                    .ok_or_else(|| option("code must be 4007 or 4100 to 4999".to_owned()))?,
            ),
        };
        let code = DisconnectCode::new(code, text("reason")?).map_err(|e| option(e.to_string()))?;
        Ok(DisconnectRequest { target, code })
    }
}

/// Answers `POST /v1/disconnect` (the caller checked the admin grant):
/// 400 for a body that is not a disconnect, 503 `internal` when a cluster
/// node cannot publish it to the others (this node's connections are
/// closed all the same), else 200 `{"disconnected": N}` (this node's
/// connections) plus `"nodes_notified"` in a cluster.
pub async fn answer(state: &BrokerState, req: Request<Incoming>) -> Response<Body> {
    let body = match body::read(state, req).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let request = match DisconnectRequest::parse(&body) {
        Ok(request) => request,
        Err((code, message)) => {
            return counted_error(state, StatusCode::BAD_REQUEST, code, &message);
        }
    };
    let disconnected = state.directory.close(&request.target, request.code.clone());
    tracing::info!(target = ?request.target, code = request.code.code, disconnected, "server API disconnect");
    let Some(backplane) = &state.backplane else {
        return json_response(StatusCode::OK, json!({ "disconnected": disconnected }));
    };
    match backplane
        .broadcast_disconnect(&request.target, &request.code)
        .await
    {
        Ok(nodes) => json_response(
            StatusCode::OK,
            json!({ "disconnected": disconnected, "nodes_notified": nodes }),
        ),
        Err(e) => {
            let message = format!(
                "closed {disconnected} connections on this node, but could not tell the other nodes: {e}"
            );
            counted_error(
                state,
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Internal,
                &message,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_name_one_target_and_a_valid_code() {
        let parse = |body: &str| DisconnectRequest::parse(body.as_bytes());
        let request = parse(r#"{"client":"c-1"}"#).unwrap();
        assert_eq!(request.target, DisconnectTarget::Client("c-1".into()));
        assert_eq!(request.code, DisconnectCode::standard());
        let request = parse(r#"{"user":"ann","code":4100,"reason":"bye"}"#).unwrap();
        assert_eq!(request.target, DisconnectTarget::User("ann".into()));
        assert_eq!((request.code.code, &*request.code.reason), (4100, "bye"));
        let long = format!(r#"{{"user":"a","reason":"{}"}}"#, "x".repeat(124));
        for bad in [
            r#"{}"#,
            r#"{"client":"a","user":"b"}"#,
            r#"{"client":"a b"}"#,
            r#"{"user":""}"#,
            r#"{"user":1}"#,
            r#"{"user":"a","code":1000}"#,
            r#"{"user":"a","code":4099}"#,
            r#"{"user":"a","code":5000}"#,
            r#"{"user":"a","code":"4100"}"#,
            r#"{"user":"a","other":1}"#,
            long.as_str(),
        ] {
            assert_eq!(parse(bad).unwrap_err().0, ErrorCode::InvalidOption, "{bad}");
        }
        assert_eq!(parse("[]").unwrap_err().0, ErrorCode::Malformed);
    }
}
