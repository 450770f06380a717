//! The lease and reaper task of a node's presence: every third of
//! `presence_lease_ttl` it extends its lease in Redis, sends its holds
//! again if Redis lost them, and releases the holds of dead nodes.
//!
//! * Lease: [`LEASE_BODY`]. When it reports the lease was made
//!   anew after the first time (the lease expired, or Redis restarted
//!   empty), a warning is logged and the node sends every join again
//!   ([`ClusterPresence::resync`]), as it does after a join or leave that
//!   did not reach Redis and after a lost Redis connection.
//! * Reaper: [`REAP_BODY`], called until no dead node is left or
//!   [`REAP_CALLS`] calls were made this round; every node reaps, and the
//!   script's `SPOP`s make each LEAVE happen once.
//! * At the end of a drain ([`retire_node`]): [`RETIRE_BODY`]
//!   shortens the lease to the presence grace, so the clients of a drained
//!   node reconnecting to another node within the grace cause no events,
//!   and the others' reapers release what is left.

use std::sync::Arc;
use std::time::Duration;

use redis::Script;
use redis::aio::MultiplexedConnection;

use crate::cluster::presence::ClusterPresence;
use crate::cluster::presence::scripts::{
    LEASE_BODY, NODES_KEY, REAP_BODY, RETIRE_BODY, lease_key, source,
};
use crate::cluster::publisher::REDIS_TIMEOUT;

/// Holds one reap call releases at most (bounds the time Redis spends in
/// one script).
pub const REAP_BATCH: usize = 500;
/// Expired nodes one reap call looks at.
pub const REAP_CANDIDATES: usize = 16;
/// Reap calls per round at most (the rest waits for the next round).
pub const REAP_CALLS: usize = 64;
/// The shortest lease time to live (`presence_lease_ttl`).
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(3);

/// What one reap call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    /// The dead node.
    pub node: String,
    /// Entries it removed (one LEAVE each).
    pub entries: u64,
    /// Whether this call removed the node (its last holds were released).
    pub claimed: bool,
}

/// Runs one reap call on `connection`; `None` when no node is dead.
pub async fn reap_once(
    connection: &mut MultiplexedConnection,
) -> redis::RedisResult<Option<Reaped>> {
    let answer: Vec<redis::Value> = Script::new(&source(REAP_BODY))
        .key(NODES_KEY)
        .arg(REAP_BATCH)
        .arg(REAP_CANDIDATES)
        .invoke_async(connection)
        .await?;
    reaped(answer)
}

/// Runs the retire script for `node` on `connection`: its lease ends
/// after `grace`.
pub async fn retire(
    connection: &mut MultiplexedConnection,
    node: &str,
    grace: Duration,
) -> redis::RedisResult<()> {
    Script::new(&source(RETIRE_BODY))
        .key(lease_key(node))
        .key(NODES_KEY)
        .arg(node)
        .arg(millis(grace))
        .invoke_async::<u64>(connection)
        .await
        .map(drop)
}

/// Reads the reap script's answer.
fn reaped(answer: Vec<redis::Value>) -> redis::RedisResult<Option<Reaped>> {
    if answer.is_empty() {
        return Ok(None);
    }
    let (node, entries, claimed): (String, u64, u64) =
        redis::FromRedisValue::from_redis_value(redis::Value::Array(answer))?;
    Ok(Some(Reaped {
        node,
        entries,
        claimed: claimed == 1,
    }))
}

/// Runs the lease script for `node` with `ttl` on `connection`; whether the
/// lease still existed.
pub async fn refresh(
    connection: &mut MultiplexedConnection,
    node: &str,
    ttl: Duration,
) -> redis::RedisResult<bool> {
    let kept: u64 = Script::new(&source(LEASE_BODY))
        .key(lease_key(node))
        .key(NODES_KEY)
        .arg(node)
        .arg(millis(ttl))
        .invoke_async(connection)
        .await?;
    Ok(kept == 1)
}

/// `duration` in whole milliseconds, at least 1.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// Runs until the node retires ([`retire_node`]): through the drain too,
/// since its connections (and so its presence) live until the drain ends.
pub async fn run(presence: Arc<ClusterPresence>) {
    let interval = presence.ttl() / 3;
    let retiring = presence.retiring().clone();
    let mut registered = false;
    let mut losses = presence.connection_losses();
    loop {
        if let Some(mut connection) = presence.connection() {
            // After a lost connection Redis may miss writes (a failover to
            // a replica that had not received them): send the holds again.
            let lost = presence.connection_losses() != losses;
            losses = presence.connection_losses();
            tokio::select! {
                _ = retiring.cancelled() => return,
                r = round(&presence, &mut connection, registered, lost) => registered = r,
            }
        }
        tokio::select! {
            _ = retiring.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Retires this node at the end of its drain: stops the lease task and
/// lets the lease end after the presence grace, so the clients it closed
/// that reconnect to another node within the grace cause no events, and
/// the other nodes' reapers release the rest.
pub async fn retire_node(presence: &ClusterPresence) {
    presence.retiring().cancel();
    let Some(mut connection) = presence.connection() else {
        tracing::warn!(
            "cluster presence: no Redis connection to retire the lease; it expires by itself"
        );
        return;
    };
    let call = retire(&mut connection, presence.node(), presence.grace());
    match timed("the lease retirement", call).await {
        Ok(()) => tracing::info!("cluster presence: lease retired"),
        Err(e) => {
            tracing::warn!(error = %e, "cluster presence: the lease could not be retired; it expires by itself")
        }
    }
}

/// What a Redis call within [`REDIS_TIMEOUT`] gave, or why not (`what`
/// names it in the error).
async fn timed<T>(
    what: &str,
    call: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what} failed: {e}")),
        Err(_) => Err(format!("{what} not answered in time")),
    }
}

/// One round: lease, resync if needed (the lease was gone, a join or leave
/// failed, or the connection was `lost` since the last round), reap.
/// Returns whether the node is registered (its lease was made at least
/// once).
async fn round(
    presence: &ClusterPresence,
    connection: &mut MultiplexedConnection,
    registered: bool,
    lost: bool,
) -> bool {
    let lease = refresh(connection, presence.node(), presence.ttl());
    let kept = match timed("the lease extension", lease).await {
        Ok(kept) => kept,
        Err(e) => {
            tracing::warn!(error = %e, "cluster presence: the lease could not be extended");
            return registered;
        }
    };
    if !kept && registered {
        tracing::warn!(
            node = presence.node(),
            holds = presence.held(),
            "cluster presence: this node's lease was gone (expired, or Redis lost it); registering its presence again"
        );
    }
    if (!kept && registered) || lost || presence.is_stale() {
        presence.resync().await;
    }
    reap(presence, connection).await;
    true
}

/// Reaps dead nodes until none is left or [`REAP_CALLS`] calls were made.
async fn reap(presence: &ClusterPresence, connection: &mut MultiplexedConnection) {
    for _ in 0..REAP_CALLS {
        match timed("a reap", reap_once(connection)).await {
            Ok(Some(reaped)) => {
                if reaped.claimed {
                    tracing::warn!(
                        node = %reaped.node,
                        "cluster presence: reaped a node whose lease expired"
                    );
                }
                let metrics = presence.metrics();
                metrics
                    .presence_lease_expiries
                    .inc_by(u64::from(reaped.claimed));
                metrics.presence_expired_entries.inc_by(reaped.entries);
                metrics.presence_leaves.inc_by(reaped.entries);
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cluster presence: reaping stopped for this round");
                return;
            }
        }
    }
}
