//! When what surrounds the process fails, the broker keeps serving and still
//! drains cleanly: standard output and standard error on a closed pipe (a
//! log collector that died, `tickwire serve 2>&1 | head`) or on a full disk
//! (`/dev/full`), and an exhausted file descriptor limit. Every test runs
//! the real `tickwire serve` and ends with SIGTERM: clients get close 1001
//! and the process exits 0 in time.
//!
//! The broker writes no file besides standard output and standard error, so
//! those two are the whole "full disk" case. The client commands are held to
//! what docs/cli.md promises: `tickwire sub | head` ends quietly with 0.

use std::collections::HashSet;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tickwire_e2e::pki::TempDir;
use tickwire_e2e::{
    RawClient, Received, TestBroker, WAIT, metric_in, read_banner, tickwire_binary,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// Time the broker has to exit after SIGTERM once its clients have left.
const EXIT_DEADLINE: Duration = Duration::from_secs(5);

/// The topic every test publishes on.
const TOPIC: &str = "surroundings";

/// `tickwire serve` on 127.0.0.1:0 with `extra` flags, writing to `stdout`
/// and `stderr`.
fn serve(extra: &[&str], stdout: Stdio, stderr: Stdio) -> Command {
    let mut command = Command::new(tickwire_binary());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--shutdown-grace", "5s"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true);
    command
}

/// A descriptor on `/dev/full`, where every write fails with `ENOSPC`.
fn dev_full() -> Stdio {
    let full = File::options()
        .write(true)
        .open("/dev/full")
        .expect("open /dev/full");
    Stdio::from(full)
}

/// A new pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new descriptors into the array of two it is
    // given, and touches nothing else.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just created by pipe2 and nothing else
    // owns them.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// The write end of a pipe whose read end is already closed: every write
/// fails with `EPIPE`.
fn broken_pipe() -> Stdio {
    let (read, write) = pipe();
    drop(read);
    Stdio::from(write)
}

/// A pipe of one page that nobody reads (a stalled log collector): its read
/// end, its capacity, and its write end for the child.
fn stalled_pipe() -> (OwnedFd, usize, Stdio) {
    let (read, write) = pipe();
    // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ takes an int.
    let capacity = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert!(
        capacity > 0,
        "F_SETPIPE_SZ: {}",
        std::io::Error::last_os_error()
    );
    let capacity = usize::try_from(capacity).expect("a positive capacity");
    (read, capacity, Stdio::from(write))
}

/// Bytes waiting in the pipe whose read end is `read`.
fn unread(read: &OwnedFd) -> usize {
    let mut bytes: libc::c_int = 0;
    // SAFETY: FIONREAD stores one int through the pointer, which points to
    // `bytes`.
    let rc = unsafe { libc::ioctl(read.as_raw_fd(), libc::FIONREAD, &mut bytes) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    usize::try_from(bytes).expect("a byte count")
}

/// The process id of a running child.
fn pid(child: &Child) -> u32 {
    child.id().expect("the broker is running")
}

/// The TCP addresses `pid` listens on, for a broker whose banner went
/// nowhere: the inodes of its socket descriptors, looked up among the
/// listening sockets of its network namespace.
fn listening_addrs(pid: u32) -> Vec<SocketAddr> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            let inode = target.strip_prefix("socket:[")?.strip_suffix(']')?;
            Some(inode.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when
            // retrnsmt uid timeout inode ...
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            // 0A: TCP_LISTEN.
            if *state != "0A" || !inodes.contains(*inode) {
                return None;
            }
            let (ip, port) = local.split_once(':')?;
            // The address is the kernel's 32-bit word printed in host order.
            let ip = u32::from_str_radix(ip, 16).ok()?.to_ne_bytes();
            let port = u16::from_str_radix(port, 16).ok()?;
            Some(SocketAddr::from((Ipv4Addr::from(ip), port)))
        })
        .collect()
}

/// Waits until the broker listens; returns its address. Fails at once if
/// the broker exits, and after [`WAIT`].
async fn wait_listening(child: &mut Child) -> SocketAddr {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("poll the broker") {
            panic!("the broker exited before listening: {status}");
        }
        if let [addr] = listening_addrs(pid(child))[..] {
            return addr;
        }
        assert!(Instant::now() < deadline, "broker not listening in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A subscriber to [`TOPIC`] and a publisher.
async fn pair(addr: SocketAddr) -> (RawClient, RawClient) {
    let mut subscriber = RawClient::connect(addr).await;
    subscriber.subscribe(TOPIC).await;
    (subscriber, RawClient::connect(addr).await)
}

/// `publisher` publishes `payload` on [`TOPIC`] and `subscriber` receives
/// it.
async fn round_trip(publisher: &mut RawClient, subscriber: &mut RawClient, payload: &[u8]) {
    publisher.publish_acked(TOPIC, payload).await;
    match subscriber.recv().await {
        Received::Message { payload: got, .. } => assert_eq!(&got[..], payload),
        other => panic!("expected the message {payload:?}, got {other:?}"),
    }
}

/// Sends SIGTERM; every client gets close 1001, then the broker exits 0
/// within [`EXIT_DEADLINE`].
async fn sigterm_drains(mut child: Child, clients: Vec<RawClient>) {
    let pid = libc::pid_t::try_from(pid(&child)).expect("a pid fits pid_t");
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    for mut client in clients {
        match client.recv_close().await {
            Received::Close { code, .. } => assert_eq!(code, Some(1001)),
            other => panic!("expected close 1001, got {other:?}"),
        }
    }
    let status = tokio::time::timeout(EXIT_DEADLINE, child.wait())
        .await
        .expect("the broker exits in time after SIGTERM")
        .expect("wait for the broker");
    assert!(status.success(), "exit status {status}");
}

/// Pub/sub works (with a debug log line per session, which cannot be
/// written), connections come and go, and SIGTERM drains.
async fn serves_then_drains(child: Child, addr: SocketAddr) {
    let (mut subscriber, mut publisher) = pair(addr).await;
    round_trip(&mut publisher, &mut subscriber, b"first").await;
    for _ in 0..3 {
        let mut passer_by = RawClient::connect(addr).await;
        passer_by.publish_acked(TOPIC, b"passing").await;
        assert!(matches!(subscriber.recv().await, Received::Message { .. }));
    }
    round_trip(&mut publisher, &mut subscriber, b"last").await;
    sigterm_drains(child, vec![subscriber, publisher]).await;
}

#[tokio::test]
async fn a_log_collector_that_dies_changes_nothing_and_sigterm_still_drains() {
    let mut child = serve(&["--log-level", "debug"], Stdio::piped(), Stdio::piped())
        .spawn()
        .expect("start tickwire serve");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (addr, _) = read_banner(&mut stdout).await;
    let mut log = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let first = tokio::time::timeout(WAIT, log.next_line())
        .await
        .expect("a log line in time")
        .expect("read the log");
    assert!(first.is_some(), "the log works before the collector dies");
    // The collector dies: from now on every write fails with EPIPE.
    drop(stdout);
    drop(log);
    serves_then_drains(child, addr).await;
}

/// [`serves_then_drains`] for a broker logging at `debug` to `stdout` and
/// `stderr` from the start, found through `/proc` since its banner may be
/// lost.
async fn serves_then_drains_writing_to(stdout: Stdio, stderr: Stdio) {
    let mut child = serve(&["--log-level", "debug"], stdout, stderr)
        .spawn()
        .expect("start tickwire serve");
    let addr = wait_listening(&mut child).await;
    serves_then_drains(child, addr).await;
}

#[tokio::test]
async fn output_closed_from_the_start_changes_nothing_and_sigterm_still_drains() {
    // `tickwire serve 2>&1 | head -0`: even the banner cannot be written.
    serves_then_drains_writing_to(broken_pipe(), broken_pipe()).await;
}

#[tokio::test]
async fn output_on_a_full_disk_changes_nothing_and_sigterm_still_drains() {
    serves_then_drains_writing_to(dev_full(), dev_full()).await;
}

#[tokio::test]
async fn a_log_collector_that_stops_reading_changes_nothing_and_sigterm_still_drains() {
    let (log, capacity, stderr) = stalled_pipe();
    let mut child = serve(&["--log-level", "debug"], Stdio::piped(), stderr)
        .spawn()
        .expect("start tickwire serve");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (addr, _) = read_banner(&mut stdout).await;
    // Sessions come and go (two debug lines each) until the pipe has no
    // room for another line: from then on a write to it blocks.
    let mut sessions = 0;
    while unread(&log) + 512 < capacity {
        assert!(sessions < 1000, "the log does not fill the pipe");
        let mut passer_by = RawClient::connect(addr).await;
        passer_by.publish_acked(TOPIC, b"filling").await;
        sessions += 1;
    }
    // Many more sessions, each logging into the full pipe: more than the
    // runtime has threads, so a blocking log write would stop them all.
    for _ in 0..32 {
        let mut passer_by = RawClient::connect(addr).await;
        passer_by.publish_acked(TOPIC, b"stalled").await;
    }
    serves_then_drains(child, addr).await;
    drop(log);
}

/// A keep-alive HTTP/1.1 connection to the metrics listener, opened while
/// descriptors are free: it keeps reading `/metrics` when the broker can
/// accept nothing more.
struct MetricsProbe {
    stream: TcpStream,
}

impl MetricsProbe {
    async fn connect(addr: SocketAddr) -> MetricsProbe {
        let stream = TcpStream::connect(addr).await.expect("connect to metrics");
        MetricsProbe { stream }
    }

    /// One metric's value, summed over its labels.
    async fn value(&mut self, name: &str) -> f64 {
        let request = b"GET /metrics HTTP/1.1\r\nHost: probe\r\n\r\n";
        self.stream.write_all(request).await.expect("ask metrics");
        let mut buf = Vec::new();
        let body = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    assert!(head.starts_with("http/1.1 200"), "{head}");
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .expect("a content-length");
                    let start = end + 4;
                    if buf.len() >= start + length {
                        return String::from_utf8_lossy(&buf[start..start + length]).into_owned();
                    }
                }
                let n = self.stream.read_buf(&mut buf).await.expect("read metrics");
                assert!(n > 0, "the metrics listener closed the probe");
            }
        })
        .await
        .expect("metrics in time");
        metric_in(&body, name)
    }
}

/// Seconds of CPU (user and system) `pid` has used, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // The command name, in parentheses, may hold spaces: count after it.
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 here.
    let ticks: f64 = fields[11..13]
        .iter()
        .map(|f| f.parse::<f64>().expect("clock ticks"))
        .sum();
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(per_second > 0, "clock ticks per second");
    ticks / per_second as f64
}

/// The broker's descriptor limit in the fd-exhaustion test: a few for the
/// runtime, stdio and listeners, the rest for connections.
const NOFILE: libc::rlim_t = 64;
/// Connections the test opens at most while looking for the limit.
const MAX_FILLERS: usize = 128;
/// How long the back-off is watched while the broker is saturated.
const WINDOW: Duration = Duration::from_millis(2500);

#[tokio::test]
async fn an_exhausted_descriptor_limit_backs_off_keeps_serving_and_recovers() {
    let mut command = serve(
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            // Idle filler connections must stay open for the whole test.
            "--handshake-timeout",
            "60s",
            "--log-level",
            "warn",
        ],
        Stdio::piped(),
        Stdio::inherit(),
    );
    // SAFETY: the closure runs in the forked child before exec; it only
    // calls setrlimit (async-signal-safe) and allocates nothing.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: NOFILE,
                rlim_max: NOFILE,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = command.spawn().expect("start tickwire serve");
    let pid = pid(&child);
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let (addr, _) = read_banner(&mut stdout).await;
    let (metrics_addr, _) = read_banner(&mut stdout).await;

    // Everything that must survive is connected before the limit is hit.
    let mut probe = MetricsProbe::connect(metrics_addr).await;
    let (mut subscriber, mut publisher) = pair(addr).await;
    round_trip(&mut publisher, &mut subscriber, b"before").await;

    // Open connections one at a time until one is not accepted: the broker
    // either counts it accepted or counts a failed accept.
    let accepted = "tickwire_connections_accepted_total";
    let errors = "tickwire_accept_errors_total";
    let accepted_before = probe.value(accepted).await;
    assert_eq!(probe.value(errors).await, 0.0);
    let mut fillers = Vec::new();
    let saturated_at = loop {
        assert!(fillers.len() < MAX_FILLERS, "no accept failed");
        fillers.push(TcpStream::connect(addr).await.expect("connect a filler"));
        let deadline = Instant::now() + WAIT;
        let failed = loop {
            let failed = probe.value(errors).await;
            if failed > 0.0 {
                break Some(failed);
            }
            if probe.value(accepted).await == accepted_before + fillers.len() as f64 {
                break None;
            }
            assert!(
                Instant::now() < deadline,
                "filler neither accepted nor refused"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        if let Some(failed) = failed {
            break failed;
        }
    };

    // Saturated: the listener keeps failing, but paused (at most ~8 failures
    // in the first 1.3s of a run, then one a second), not spinning.
    let (started, cpu_before) = (Instant::now(), cpu_seconds(pid));
    round_trip(&mut publisher, &mut subscriber, b"while saturated").await;
    while started.elapsed() < WINDOW {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = probe.value(errors).await;
    }
    let failed_after = probe.value(errors).await;
    let (elapsed, cpu) = (started.elapsed(), cpu_seconds(pid) - cpu_before);
    let failures = failed_after - saturated_at;
    eprintln!(
        "saturated after {} extra connections: {failures} failed accepts and {cpu:.2}s of CPU in {elapsed:?}",
        fillers.len()
    );
    assert!(failures >= 1.0, "the listener kept trying");
    let most = 10.0 + 2.0 * elapsed.as_secs_f64();
    assert!(
        failures <= most,
        "{failures} failed accepts in {elapsed:?}: no back-off (at most {most})"
    );
    assert!(
        cpu < 0.5 * elapsed.as_secs_f64(),
        "the broker used {cpu:.2}s of CPU in {elapsed:?} while saturated"
    );
    round_trip(&mut publisher, &mut subscriber, b"still saturated").await;

    // The extra clients leave: new connections are accepted again.
    drop(fillers);
    let mut newcomer = RawClient::connect(addr).await;
    newcomer.subscribe(TOPIC).await;
    publisher.publish_acked(TOPIC, b"after").await;
    for client in [&mut subscriber, &mut newcomer] {
        match client.recv().await {
            Received::Message { payload, .. } => assert_eq!(&payload[..], b"after"),
            other => panic!("expected the message after recovery, got {other:?}"),
        }
    }
    drop(probe);
    sigterm_drains(child, vec![subscriber, publisher, newcomer]).await;
}

/// `tickwire sub TOPIC` against `broker`, writing to `stdout`, with
/// standard error piped.
fn sub(broker: &TestBroker, stdout: Stdio) -> Child {
    Command::new(tickwire_binary())
        .args(["sub", TOPIC, "--url", &broker.ws_url()])
        .env_remove("TICKWIRE_TOKEN")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start tickwire sub")
}

/// Waits for `sub`'s `subscribed to ...` line; returns standard error's
/// remaining lines.
async fn subscribed(child: &mut Child) -> tokio::io::Lines<BufReader<tokio::process::ChildStderr>> {
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("sub subscribes in time")
        .expect("read stderr");
    let line = line.expect("a line on standard error");
    assert!(
        line.starts_with(&format!("subscribed to {TOPIC}")),
        "{line}"
    );
    lines
}

/// Publishes `payload` on [`TOPIC`], which the subscribed `sub` tries to
/// print; returns its exit code once it ends by itself.
async fn publish_to_sub(broker: &TestBroker, sub: &mut Child, payload: &[u8]) -> Option<i32> {
    let mut publisher = RawClient::connect(broker.addr).await;
    publisher.publish_acked(TOPIC, payload).await;
    let status = tokio::time::timeout(WAIT, sub.wait())
        .await
        .expect("sub ends in time")
        .expect("wait for sub");
    status.code()
}

#[tokio::test]
async fn sub_whose_reader_and_log_went_away_ends_quietly_with_0() {
    let broker = TestBroker::start_default().await;
    let mut child = sub(&broker, Stdio::piped());
    let stdout = child.stdout.take().expect("stdout");
    let stderr = subscribed(&mut child).await;
    // `tickwire sub t 2>&1 | head -0`: the reader is gone.
    drop((stdout, stderr));
    assert_eq!(
        publish_to_sub(&broker, &mut child, b"nobody reads this").await,
        Some(0)
    );
    broker.stop().await;
}

#[tokio::test]
async fn sub_on_a_full_disk_fails_with_1_and_says_why() {
    let broker = TestBroker::start_default().await;
    let mut child = sub(&broker, dev_full());
    let mut stderr = subscribed(&mut child).await;
    assert_eq!(
        publish_to_sub(&broker, &mut child, b"no room").await,
        Some(1)
    );
    let mut rest = Vec::new();
    while let Some(line) = stderr.next_line().await.expect("read stderr") {
        rest.push(line);
    }
    assert!(
        rest.iter()
            .any(|l| l.starts_with("tickwire: cannot write to standard output: No space left")),
        "{rest:?}"
    );
    broker.stop().await;
}

#[tokio::test]
async fn token_on_a_full_disk_fails_with_1_and_says_why() {
    let dir = TempDir::new("surroundings-token");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("write the secret");
    let secret = secret.to_str().expect("a UTF-8 path");
    let output = Command::new(tickwire_binary())
        .args(["token", "--hmac-secret-file", secret, "--sub", TOPIC])
        .args(["--ttl", "1h"])
        .stdin(Stdio::null())
        .stdout(dev_full())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tickwire token")
        .wait_with_output()
        .await
        .expect("run tickwire token");
    assert_eq!(output.status.code(), Some(1), "{:?}", output.status);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("tickwire token: cannot write to standard output: No space left"),
        "{stderr}"
    );
}
