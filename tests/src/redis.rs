//! Real `redis-server` processes for the cluster tests: on a free loopback
//! port, without persistence (no RDB snapshots, no AOF: a restart loses
//! everything, as a Redis without persistence does), killed when dropped.
//!
//! `redis-server` cannot bind port 0, so [`RedisServer::start`] picks a
//! port that is free now and starts on it; if another process took it in
//! the meantime (the server exits, or another server answers), it tries
//! again with another port. A server is ready when it answers `INFO` with
//! its own process id. scripts/test.sh installs `redis-server` (Debian
//! package) when it is missing.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::{WAIT, poll_until};

/// Attempts at finding a free port before giving up.
const PORT_ATTEMPTS: usize = 10;

/// One `redis-server` process on 127.0.0.1.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    child: Option<Child>,
}

/// A port free on 127.0.0.1 at the time of the call.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `redis-server` on `port`: loopback only, no persistence, logs discarded.
fn spawn(port: u16) -> Child {
    Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
            "--logfile",
            "",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start redis-server (scripts/test.sh installs it: apt-get install -y redis-server)")
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> RedisServer {
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            if let Some(child) = start_on(port).await {
                return RedisServer {
                    port,
                    child: Some(child),
                };
            }
        }
        panic!("redis-server did not start on any of {PORT_ATTEMPTS} free ports");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits until it is gone: its clients'
    /// connections are closed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops (`true`: SIGSTOP) or continues (`false`: SIGCONT) the server:
    /// a stopped server keeps its connections open and answers nothing, as
    /// a Redis behind a silent network partition.
    pub fn freeze(&self, frozen: bool) {
        let Some(child) = &self.child else {
            panic!("redis-server is not running");
        };
        let name = if frozen { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([name, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {name}: {status}");
    }

    /// Starts a new server on the same port (empty: nothing persisted),
    /// retrying until the port is free again, within [`WAIT`].
    pub async fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(child) = start_on(self.port).await {
                self.child = Some(child);
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start again on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A new connection to the server.
    pub async fn connection(&self) -> ::redis::aio::MultiplexedConnection {
        ::redis::Client::open(self.url())
            .expect("a Redis URL")
            .get_multiplexed_async_connection()
            .await
            .expect("connect to redis-server")
    }

    /// `PUBSUB SUBCOMMAND ARGS`'s answer.
    async fn pubsub<T: ::redis::FromRedisValue>(&self, subcommand: &str, args: &[&str]) -> T {
        let mut connection = self.connection().await;
        ::redis::cmd("PUBSUB")
            .arg(subcommand)
            .arg(args)
            .query_async(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("PUBSUB {subcommand}: {e}"))
    }

    /// Subscribers of `channel` (`PUBSUB NUMSUB`).
    pub async fn numsub(&self, channel: &str) -> u64 {
        let counts: Vec<(String, u64)> = self.pubsub("NUMSUB", &[channel]).await;
        counts.first().map_or(0, |(_, n)| *n)
    }

    /// Pattern subscriptions of all clients (`PUBSUB NUMPAT`).
    pub async fn numpat(&self) -> u64 {
        self.pubsub("NUMPAT", &[]).await
    }

    /// Channels with at least one subscriber (`PUBSUB CHANNELS`).
    pub async fn channels(&self) -> Vec<String> {
        self.pubsub("CHANNELS", &[]).await
    }

    /// Waits until `PUBSUB NUMSUB channel` is `want`.
    pub async fn wait_numsub(&self, channel: &str, want: u64) {
        poll_until(async || match self.numsub(channel).await {
            got if got == want => Ok(()),
            got => Err(format!("NUMSUB {channel}: {got}, want {want}")),
        })
        .await
    }

    /// Waits until `PUBSUB NUMPAT` is `want`.
    pub async fn wait_numpat(&self, want: u64) {
        poll_until(async || match self.numpat().await {
            got if got == want => Ok(()),
            got => Err(format!("NUMPAT: {got}, want {want}")),
        })
        .await
    }
}

/// Starts `redis-server` on `port`; `Some` once it answers `INFO` with its
/// own process id, `None` if it exited (port taken) or another process
/// answers there.
async fn start_on(port: u16) -> Option<Child> {
    let mut child = spawn(port);
    let deadline = Instant::now() + WAIT;
    let url = format!("redis://127.0.0.1:{port}");
    loop {
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        if let Some(pid) = process_id(&url).await {
            if pid == child.id() {
                return Some(child);
            }
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("redis-server on port {port} did not answer within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `process_id` in `INFO server` of the Redis at `url`, if one answers.
async fn process_id(url: &str) -> Option<u32> {
    let client = ::redis::Client::open(url).ok()?;
    let mut connection = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = ::redis::cmd("INFO")
        .arg("server")
        .query_async(&mut connection)
        .await
        .ok()?;
    info.lines()
        .find_map(|line| line.strip_prefix("process_id:"))
        .and_then(|pid| pid.trim().parse().ok())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
