//! `tickwire serve --cluster` processes for the cluster tests: started on
//! 127.0.0.1:0 with warnings logged, their log lines readable by the test
//! ([`ClusterNode::wait_log`]), killed when dropped.
//!
//! A node keeps the port it got for its whole life: it can be killed
//! ([`ClusterNode::kill`], SIGKILL) or drained ([`ClusterNode::terminate`],
//! SIGTERM) and started again on the same port with the same arguments
//! ([`ClusterNode::restart`]), as a node restarted by an orchestrator
//! behind a fixed load-balancer entry.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{WAIT, banner_addr, http, poll_within, signal, tickwire_command};

/// One `tickwire serve --cluster URL` process, and its restarts.
pub struct ClusterNode {
    /// The address it listens on (the same across restarts).
    pub addr: SocketAddr,
    /// The Redis URL and further flags it is started with.
    url: String,
    args: Vec<String>,
    /// The running process, if any, and its standard output.
    process: Option<(Child, Lines<BufReader<ChildStdout>>)>,
    /// Log lines of every process of this node, in order.
    log_lines: mpsc::UnboundedSender<String>,
    log: mpsc::UnboundedReceiver<String>,
}

impl ClusterNode {
    /// Starts a node on Redis at `url` with the further flags `args`;
    /// returns once it listens (ready or not).
    pub async fn spawn(url: &str, args: &[&str]) -> ClusterNode {
        let (log_lines, log) = mpsc::unbounded_channel();
        let mut node = ClusterNode {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            url: url.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            process: None,
            log_lines,
            log,
        };
        node.launch().await;
        node
    }

    /// Starts a node on Redis at `url` with the flags `args` and waits
    /// until it is ready.
    pub async fn ready(url: &str, args: &[&str]) -> ClusterNode {
        let node = Self::spawn(url, args).await;
        node.wait_ready(true).await;
        node
    }

    /// Starts the process on [`ClusterNode::addr`]; returns once it
    /// listens. Port 0 the first time; then the same port again, retried
    /// within [`WAIT`] while the old process still holds it.
    async fn launch(&mut self) {
        let deadline = Instant::now() + WAIT;
        loop {
            let listen = self.addr.to_string();
            let mut all = vec![
                "serve",
                "--listen",
                &listen,
                "--log-level",
                "warn",
                "--cluster",
                &self.url,
            ];
            all.extend(self.args.iter().map(String::as_str));
            let mut child = tickwire_command(&all)
                .spawn()
                .expect("start tickwire serve --cluster");
            let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
            let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
            let log_lines = self.log_lines.clone();
            tokio::spawn(async move {
                while let Ok(Some(line)) = stderr.next_line().await {
                    eprintln!("node: {line}");
                    if log_lines.send(line).is_err() {
                        return;
                    }
                }
            });
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

    /// [`ClusterNode::wait_ready`] for at most `limit`.
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

    /// The next log line containing every one of `words`, within [`WAIT`].
    pub async fn wait_log(&mut self, words: &[&str]) -> String {
        let find = async {
            while let Some(line) = self.log.recv().await {
                if words.iter().all(|word| line.contains(word)) {
                    return line;
                }
            }
            panic!("the node's log ended without a line containing {words:?}");
        };
        tokio::time::timeout(WAIT, find)
            .await
            .unwrap_or_else(|_| panic!("no log line containing {words:?} within {WAIT:?}"))
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

    /// Starts the node again on its port, after [`ClusterNode::kill`] or
    /// [`ClusterNode::terminate`], and waits until `/readyz` is 200.
    pub async fn restart(&mut self) {
        assert!(self.process.is_none(), "restart a node that is running");
        self.launch().await;
        self.wait_ready(true).await;
    }
}
