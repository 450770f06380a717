//! `tickwire serve --cluster` processes for tests that run several nodes
//! on one [`RedisServer`](crate::redis::RedisServer): started on
//! 127.0.0.1:0, their address read from the banner, killed when dropped.

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

use crate::{http, poll_until, read_banner, tickwire_command};

/// One `tickwire serve --cluster` process.
pub struct ClusterNode {
    /// Where it listens.
    pub addr: SocketAddr,
    _child: Child,
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl ClusterNode {
    /// Starts a node on the Redis at `redis_url` with `extra` flags and
    /// waits until `/readyz` says it is ready (both Redis connections up).
    pub async fn start(redis_url: &str, extra: &[&str]) -> ClusterNode {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "error",
            "--cluster",
            redis_url,
        ];
        args.extend_from_slice(extra);
        let mut child = tickwire_command(&args)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tickwire serve --cluster");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (addr, _) = read_banner(&mut stdout).await;
        poll_until(async || match http(addr, "GET", "/readyz", b"").await {
            (200, _) => Ok(()),
            (status, body) => Err(format!("/readyz of {addr}: {status} {body:?}")),
        })
        .await;
        ClusterNode {
            addr,
            _child: child,
            _stdout: stdout,
        }
    }

    /// `ws://ADDR/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}
