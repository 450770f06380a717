//! The `--cluster` URL.

use redis::Client;
use thiserror::Error;

/// The `--cluster` URL cannot be used.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct ClusterUrlError(String);

/// Checks a `--cluster` URL: `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`.
/// Other schemes (`rediss://`, Sentinel, Redis Cluster) are refused: this
/// version does not support them yet.
pub fn client(url: &str) -> Result<Client, ClusterUrlError> {
    if !url.starts_with("redis://") {
        return Err(ClusterUrlError(format!(
            "`{}` is not supported; write redis://HOST:PORT[/DB] (rediss://, Sentinel and Redis Cluster are not supported yet)",
            url.split_once("://").map_or(url, |(scheme, _)| scheme)
        )));
    }
    Client::open(url).map_err(|e| ClusterUrlError(format!("not a Redis URL: {e}")))
}
