//! `tickwire serve --cluster` processes for the cluster tests: started on
//! 127.0.0.1:0 with warnings logged, their log lines readable by the test
//! ([`ClusterNode::wait_log`]), killed when dropped.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};
use tokio::sync::mpsc;

use crate::{WAIT, http, poll_until, read_banner, tickwire_command};

/// One `tickwire serve --cluster URL` process.
pub struct ClusterNode {
    /// The address it listens on.
    pub addr: SocketAddr,
    _child: Child,
    _stdout: Lines<BufReader<ChildStdout>>,
    log: mpsc::UnboundedReceiver<String>,
}

impl ClusterNode {
    /// Starts a node on Redis at `url` with the further flags `args`;
    /// returns once it listens (ready or not).
    pub async fn spawn(url: &str, args: &[&str]) -> ClusterNode {
        let mut all = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
            "--cluster",
            url,
        ];
        all.extend_from_slice(args);
        let mut child = tickwire_command(&all)
            .spawn()
            .expect("start tickwire serve --cluster");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (tx, log) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                eprintln!("node: {line}");
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let (addr, _) = read_banner(&mut stdout).await;
        ClusterNode {
            addr,
            _child: child,
            _stdout: stdout,
            log,
        }
    }

    /// Starts a node on Redis at `url` with the flags `args` and waits
    /// until it is ready.
    pub async fn ready(url: &str, args: &[&str]) -> ClusterNode {
        let node = Self::spawn(url, args).await;
        node.wait_ready(true).await;
        node
    }

    /// Waits until `/readyz` answers 200 (`ready`) or 503 (not ready);
    /// returns its body.
    pub async fn wait_ready(&self, ready: bool) -> String {
        let want = if ready { 200 } else { 503 };
        let addr = self.addr;
        poll_until(async || match http(addr, "GET", "/readyz", b"").await {
            (status, body) if status == want => Ok(body),
            (status, body) => Err(format!("/readyz of {addr}: {status} {body:?}, want {want}")),
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
}
