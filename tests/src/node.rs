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
    /// The address it listens on.
    pub addr: SocketAddr,
    _child: Child,
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl ClusterNode {
    /// Starts a node on the Redis at `url` with the further flags `args` and
    /// waits until `/readyz` says it is ready (both Redis connections up).
    pub async fn start(url: &str, args: &[&str]) -> ClusterNode {
        let mut all = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "error",
            "--cluster",
            url,
        ];
        all.extend_from_slice(args);
        let mut child = tickwire_command(&all)
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
}
