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
//!
//! [`RedisServer::start_tls`] starts one that speaks only TLS
//! (`rediss://`), with certificates from [`crate::pki`];
//! [`RedisServer::start_replica_of`] a replica;
//! [`RedisServer::start_sentinel`] a Redis Sentinel watching one master.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use crate::pki::CertFiles;
use crate::{WAIT, poll_until};

/// Attempts at finding a free port before giving up.
const PORT_ATTEMPTS: usize = 10;

/// TLS for a test server.
#[derive(Debug, Clone)]
pub struct RedisTls {
    /// The server's certificate and key.
    pub server: CertFiles,
    /// The CA the helper's own connections trust, and that client
    /// certificates must chain to.
    pub ca: PathBuf,
    /// `Some`: the server requires a client certificate
    /// (`tls-auth-clients yes`), and the helper presents this one.
    pub client: Option<CertFiles>,
}

/// What a server is, beyond a plain Redis: the arguments before and after
/// the common ones.
#[derive(Debug, Clone, Default)]
struct Kind {
    /// First arguments: a Sentinel's configuration file and `--sentinel`.
    leading: Vec<String>,
    /// Last arguments: `--replicaof HOST PORT`.
    trailing: Vec<String>,
}

/// One `redis-server` process on 127.0.0.1.
pub struct RedisServer {
    /// Its port.
    pub port: u16,
    child: Option<Child>,
    tls: Option<RedisTls>,
    kind: Kind,
}

/// A port free on 127.0.0.1 at the time of the call.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `redis-server` on `port` (TLS only with `tls`): loopback only, no
/// persistence, logs discarded.
fn spawn(port: u16, tls: Option<&RedisTls>, kind: &Kind) -> Child {
    let port = port.to_string();
    let mut args = vec!["--port", &port];
    if let Some(tls) = tls {
        args = vec![
            "--port",
            "0",
            "--tls-port",
            &port,
            "--tls-cert-file",
            path(&tls.server.cert),
            "--tls-key-file",
            path(&tls.server.key),
            "--tls-ca-cert-file",
            path(&tls.ca),
            "--tls-auth-clients",
            if tls.client.is_some() { "yes" } else { "no" },
        ];
    }
    Command::new("redis-server")
        .args(&kind.leading)
        .args(args)
        .args([
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
            // A replica's full sync writes an RDB file even without
            // `save`: in the temporary directory, one name per port.
            "--dir",
            path(&std::env::temp_dir()),
            "--dbfilename",
            &rdb_file_name(&port),
        ])
        .args(&kind.trailing)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start redis-server (scripts/test.sh installs it: apt-get install -y redis-server)")
}

/// The name of the RDB file of the server on `port` (in the temporary
/// directory).
fn rdb_file_name(port: &str) -> String {
    format!("tickwire-test-redis-{port}.rdb")
}

/// A test path as an argument.
fn path(path: &std::path::Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}

/// `redis://127.0.0.1:PORT`, or `rediss://` with `tls`.
fn url_of(port: u16, tls: Option<&RedisTls>) -> String {
    let scheme = if tls.is_some() { "rediss" } else { "redis" };
    format!("{scheme}://127.0.0.1:{port}")
}

/// A client of the server on `port`, trusting and presenting `tls`' files.
fn client_of(port: u16, tls: Option<&RedisTls>) -> ::redis::Client {
    let url = url_of(port, tls);
    match tls {
        None => ::redis::Client::open(url),
        Some(tls) => {
            let read = |path: &std::path::Path| std::fs::read(path).expect("read a test PEM file");
            ::redis::Client::build_with_tls(
                url,
                ::redis::TlsCertificates {
                    client_tls: tls.client.as_ref().map(|c| ::redis::ClientTlsConfig {
                        client_cert: read(&c.cert),
                        client_key: read(&c.key),
                    }),
                    root_cert: Some(read(&tls.ca)),
                },
            )
        }
    }
    .expect("a Redis URL")
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> RedisServer {
        Self::start_with(None, Kind::default()).await
    }

    /// Starts a server that speaks only TLS, with `tls`' files.
    pub async fn start_tls(tls: RedisTls) -> RedisServer {
        Self::start_with(Some(tls), Kind::default()).await
    }

    /// Starts a replica of `master`.
    pub async fn start_replica_of(master: &RedisServer) -> RedisServer {
        let trailing = vec![
            "--replicaof".to_owned(),
            "127.0.0.1".to_owned(),
            master.port.to_string(),
        ];
        Self::start_with(
            None,
            Kind {
                trailing,
                ..Kind::default()
            },
        )
        .await
    }

    /// Starts a Redis Sentinel (quorum 1, down after 1 s) watching
    /// `master` under the name `name`, its configuration file in `dir`;
    /// for a TLS `master`, a Sentinel speaking only TLS, to its clients and
    /// to the master, with the master's files.
    pub async fn start_sentinel(
        dir: &std::path::Path,
        name: &str,
        master: &RedisServer,
    ) -> RedisServer {
        let file = dir.join(format!("sentinel-{name}-{}.conf", master.port));
        let config = format!(
            "sentinel monitor {name} 127.0.0.1 {port} 1\n\
             sentinel down-after-milliseconds {name} 1000\n\
             sentinel failover-timeout {name} 5000\n\
             tls-replication {tls}\n",
            port = master.port,
            tls = if master.tls.is_some() { "yes" } else { "no" },
        );
        std::fs::write(&file, config).expect("write the Sentinel configuration");
        let leading = vec![path(&file).to_owned(), "--sentinel".to_owned()];
        Self::start_with(
            master.tls.clone(),
            Kind {
                leading,
                ..Kind::default()
            },
        )
        .await
    }

    async fn start_with(tls: Option<RedisTls>, kind: Kind) -> RedisServer {
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            if let Some(child) = start_on(port, tls.as_ref(), &kind).await {
                return RedisServer {
                    port,
                    child: Some(child),
                    tls,
                    kind,
                };
            }
        }
        panic!("redis-server did not start on any of {PORT_ATTEMPTS} free ports");
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` with TLS).
    pub fn url(&self) -> String {
        url_of(self.port, self.tls.as_ref())
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
            if let Some(child) = start_on(self.port, self.tls.as_ref(), &self.kind).await {
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
        client_of(self.port, self.tls.as_ref())
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

    /// Topic channels with at least one subscriber (`PUBSUB CHANNELS
    /// tickwire:{*}:msg`: not the control channel every node subscribes
    /// to).
    pub async fn channels(&self) -> Vec<String> {
        self.pubsub("CHANNELS", &["tickwire:{*}:msg"]).await
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
async fn start_on(port: u16, tls: Option<&RedisTls>, kind: &Kind) -> Option<Child> {
    let mut child = spawn(port, tls, kind);
    let deadline = Instant::now() + WAIT;
    let client = client_of(port, tls);
    loop {
        if child.try_wait().ok().flatten().is_some() {
            return None;
        }
        if let Some(pid) = process_id(&client).await {
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

/// The `process_id` in `INFO server` of the Redis `client` reaches, if
/// one answers.
async fn process_id(client: &::redis::Client) -> Option<u32> {
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
        let rdb = std::env::temp_dir().join(rdb_file_name(&self.port.to_string()));
        let _ = std::fs::remove_file(rdb);
    }
}
