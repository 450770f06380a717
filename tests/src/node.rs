//! `tickwire serve --cluster` processes for the cluster fault tests: one
//! node on loopback that can be killed (SIGKILL), drained (SIGTERM) and
//! started again on the same port, with the same arguments.
//!
//! A node is started on 127.0.0.1:0 and keeps the port it got for its
//! whole life, so a restarted node is at the same address (as a node
//! restarted by an orchestrator behind a fixed load-balancer entry). Its
//! standard error goes to the test's; its standard output (the banner) is
//! read for the address. Killed when dropped.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tokio::time::Instant;

use crate::{WAIT, banner_addr, http, poll_within, signal, tickwire_command};

/// One `tickwire serve --cluster` process.
pub struct Node {
    /// Where it listens (the same across restarts).
    pub addr: SocketAddr,
    /// The Redis URL and extra arguments it was started with.
    cluster: String,
    args: Vec<String>,
    /// The running process, if any, and its standard output.
    process: Option<(Child, Lines<BufReader<ChildStdout>>)>,
}

impl Node {
    /// Starts a node on 127.0.0.1:0 through Redis at `cluster`, with
    /// `args` added to `tickwire serve`, and waits until `/readyz` is 200.
    pub async fn start(cluster: &str, args: &[&str]) -> Node {
        let mut node = Node {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            cluster: cluster.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            process: None,
        };
        node.launch().await;
        node.wait_ready(true).await;
        node
    }

    /// Starts the process on [`Node::addr`]; returns once it listens.
    /// Port 0 the first time; then the same port again, retried within
    /// [`WAIT`] while the old process still holds it.
    async fn launch(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let listen = self.addr.to_string();
            let mut args = vec![
                "serve",
                "--listen",
                &listen,
                "--log-level",
                "error",
                "--cluster",
                &self.cluster,
            ];
            args.extend(self.args.iter().map(String::as_str));
            let mut child = tickwire_command(&args)
                .stderr(Stdio::inherit())
                .spawn()
                .expect("start tickwire serve --cluster");
            let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
            let banner = tokio::time::timeout(WAIT, stdout.next_line())
                .await
                .expect("a banner or an exit in time");
            if let Ok(Some(line)) = banner {
                self.addr = banner_addr(&line);
                self.process = Some((child, stdout));
                return;
            }
            // It exited before listening: the port is not free yet.
            let status = child.wait().await.expect("wait for tickwire serve");
            assert!(
                Instant::now() < deadline,
                "tickwire serve did not start on {listen} within {WAIT:?} (last: {status})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `/readyz` answers 200 (`ready`) or 503 (not ready);
    /// returns its body.
    pub async fn wait_ready(&self, ready: bool) -> String {
        self.wait_ready_within(ready, WAIT).await
    }

    /// [`Node::wait_ready`] for at most `limit`.
    pub async fn wait_ready_within(&self, ready: bool, limit: Duration) -> String {
        let want = if ready { 200 } else { 503 };
        let addr = self.addr;
        poll_within(limit, async || {
            match http(addr, "GET", "/readyz", b"").await {
                (status, body) if status == want => Ok(body),
                (status, body) => Err(format!("/readyz of {addr}: {status} {body:?}, want {want}")),
            }
        })
        .await
    }

    /// Kills the process with SIGKILL (no drain: its connections are reset
    /// or closed by the kernel) and reaps it.
    pub async fn kill(&mut self) {
        if let Some((mut child, _)) = self.process.take() {
            child.kill().await.expect("SIGKILL a node");
        }
    }

    /// Sends SIGTERM and waits until the node has drained and exited with
    /// code 0.
    pub async fn terminate(&mut self) {
        if let Some((mut child, _)) = self.process.take() {
            signal(&child, "-TERM");
            let status = tokio::time::timeout(WAIT, child.wait())
                .await
                .expect("a node exits in time after SIGTERM")
                .expect("wait for a node");
            assert!(status.success(), "a drained node exited with {status}");
        }
    }

    /// Starts the node again on its port, after [`Node::kill`] or
    /// [`Node::terminate`], and waits until `/readyz` is 200.
    pub async fn restart(&mut self) {
        assert!(self.process.is_none(), "restart a node that is running");
        self.launch().await;
        self.wait_ready(true).await;
    }
}
