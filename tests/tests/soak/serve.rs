//! The broker under soak: the real `tickwire serve` in a child process, its
//! gauges read from `/metrics` and its memory from `/proc`.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use tickwire_e2e::{WAIT, http, read_banner, tickwire_binary};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::Instant;

/// Raises this process's open-file limit from its soft to its hard value
/// (the broker, a child, inherits it) and returns the limit now in force.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit and setrlimit only read and write the struct on this
    // stack frame.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        limit.rlim_cur
    }
}

/// A running `tickwire serve`.
pub struct Serve {
    child: Child,
    /// Its process id, for `/proc` and signals.
    pub pid: u32,
    /// The main port: WebSocket and HTTP publish.
    pub addr: SocketAddr,
    /// The metrics listener: scrapes here are not counted in
    /// `tickwire_connections`.
    pub metrics_addr: SocketAddr,
    /// Standard output, held open so the broker never writes to a closed
    /// pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl Serve {
    /// Starts `tickwire serve` on 127.0.0.1 port 0 with a metrics listener
    /// and `args`, and reads the two banner lines.
    pub async fn start(args: &[&str]) -> Serve {
        let mut child = Command::new(tickwire_binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--log-level",
                "warn",
            ])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start tickwire serve");
        let pid = child.id().expect("the broker's pid");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (addr, _) = read_banner(&mut lines).await;
        let (metrics_addr, line) = read_banner(&mut lines).await;
        assert!(line.starts_with("tickwire metrics on "), "{line}");
        Serve {
            child,
            pid,
            addr,
            metrics_addr,
            _stdout: lines,
        }
    }

    /// One scrape of `/metrics`: the value of each of `names` (summed over
    /// label sets), in order.
    pub async fn metrics<const N: usize>(&self, names: [&str; N]) -> [f64; N] {
        let (status, body) = http(self.metrics_addr, "GET", "/metrics", b"").await;
        assert_eq!(status, 200, "{body}");
        let mut values = [0.0; N];
        for line in body.lines().filter(|line| !line.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let name = series.split('{').next().unwrap_or(series);
            if let Some(i) = names.iter().position(|n| *n == name) {
                values[i] += value.parse::<f64>().unwrap_or(f64::NAN);
            }
        }
        values
    }

    /// Re-reads `names` until they equal `want`, at most until `within`
    /// has passed; returns how long that took, or fails with the last
    /// values read.
    pub async fn wait_metrics<const N: usize>(
        &self,
        names: [&str; N],
        want: [f64; N],
        within: Duration,
    ) -> Duration {
        let start = Instant::now();
        loop {
            let got = self.metrics(names).await;
            if got == want {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "after {within:?}: {names:?} are {got:?}, expected {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The broker's resident set size in KiB (`VmRSS` of
    /// `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .expect("read the broker's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmRSS in {status}"))
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub async fn stop(mut self) {
        let pid = libc::pid_t::try_from(self.pid).expect("a pid fits pid_t");
        // SAFETY: kill has no memory-safety preconditions; the pid is our
        // own child's, which has not been waited for yet.
        let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
        assert_eq!(sent, 0, "SIGTERM to the broker");
        let exit = tokio::time::timeout(WAIT + WAIT, self.child.wait())
            .await
            .expect("the broker exits after SIGTERM")
            .expect("wait for the broker");
        assert!(exit.success(), "the broker exited with {exit:?}");
    }
}
