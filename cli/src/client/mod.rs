//! The command-line clients `tickwire pub` and `tickwire sub`, built on the
//! `tickwire-client` SDK.
//!
//! What they share lives here: the connection flags, the mapping from SDK
//! errors to exit codes, and running a command on a Tokio runtime (the
//! server API commands, [`crate::admin`], share the last two).

mod output;
mod presence_line;
mod pub_cmd;
mod sub_cmd;

use crate::console::stderrln;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tickwire_client::{Client, ClientBuilder, ConnectionState, Error, TlsRoots};

pub use pub_cmd::{PubArgs, run as run_pub};
pub use sub_cmd::{SubArgs, run as run_sub};

/// The broker URL used when neither `--url` nor `TICKWIRE_URL` is given.
const DEFAULT_URL: &str = "ws://127.0.0.1:8080/ws";

/// The exit codes of `tickwire pub` and `tickwire sub`, as shown in their
/// `--help` (docs/cli.md lists the same).
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    the broker refused a request (ERROR reply, invalid topic or pattern),
       or the connection or subscription ended with an error
  2    usage error: invalid arguments, URL or input (e.g. --json input that
       is not JSON)
  3    could not connect: connection refused, TLS or WebSocket handshake
       failed, or the connect timeout expired
  4    timeout: the broker did not answer a request within --timeout, or
       (sub) --count messages did not arrive within --wait
  130  (pub) interrupted by Ctrl-C; what was sent is flushed first";

/// Connection flags shared by every client subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// WebSocket URL of the broker (ws:// or wss://).
    #[arg(long, env = "TICKWIRE_URL", default_value = DEFAULT_URL, value_name = "URL")]
    url: String,

    /// Bearer token, sent as `Authorization: Bearer <TOKEN>` in the
    /// WebSocket handshake.
    #[arg(
        long,
        env = "TICKWIRE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,

    /// Time allowed to connect, and for the broker to answer each request
    /// (subscribe, acknowledged publish).
    #[arg(long, default_value = "10s", value_parser = parse_timeout, value_name = "DURATION")]
    timeout: Duration,

    /// PEM file of the CA certificates to trust for wss:// instead of the
    /// built-in public roots (for a broker with a private CA).
    #[arg(long, env = "TICKWIRE_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,

    /// PEM client certificate chain for wss://, for a broker that requires
    /// client certificates (tickwire serve --tls-client-ca-file); needs
    /// --key-file.
    #[arg(
        long,
        env = "TICKWIRE_CERT_FILE",
        value_name = "FILE",
        requires = "key_file"
    )]
    cert_file: Option<PathBuf>,

    /// PEM private key of --cert-file.
    #[arg(
        long,
        env = "TICKWIRE_KEY_FILE",
        value_name = "FILE",
        requires = "cert_file"
    )]
    key_file: Option<PathBuf>,

    /// Offer permessage-deflate (RFC 7692): a broker with `--compression
    /// on` then sends large messages compressed. Messages sent stay
    /// uncompressed.
    #[arg(long)]
    compression: bool,
}

impl ConnectArgs {
    /// A client builder for these flags.
    fn builder(&self) -> ClientBuilder {
        let mut builder = Client::builder(self.url.as_str())
            .connect_timeout(self.timeout)
            .request_timeout(self.timeout)
            .compression(self.compression);
        if let Some(token) = &self.token {
            builder = builder.token(token.as_str());
        }
        if let Some(ca_file) = &self.ca_file {
            builder = builder.tls_roots(TlsRoots::CaFile(ca_file.clone()));
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            builder = builder.tls_client_identity(cert, key);
        }
        builder
    }
}

/// Parses a positive duration such as `500ms`, `10s` or `1m`.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    match tickwire_broker::config::parse_duration(s)? {
        d if d.is_zero() => Err("must be longer than 0s".to_owned()),
        d => Ok(d),
    }
}

/// How a client subcommand ended, when it did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The broker refused a request or the stream ended with an error.
    Failed = 1,
    /// Invalid arguments or input.
    Usage = 2,
    /// No connection could be established.
    Connect = 3,
    /// A request or `--wait` timed out.
    Timeout = 4,
    /// `pub` was interrupted by Ctrl-C.
    Interrupted = 130,
}

/// A failed client subcommand: one line for standard error and the exit
/// code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code it ends the command with.
    pub exit: Exit,
    /// The line for standard error (without the `tickwire:` prefix).
    pub message: String,
}

impl Failure {
    /// A failure ending the command with `exit`, saying `message`.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Failure {
            exit,
            message: message.into(),
        }
    }

    /// A failure caused by a request on `client`; when the connection is
    /// gone, says why.
    async fn request(client: &Client, err: Error) -> Self {
        // `ConnectionLost` keeps its text: it says the outcome is unknown.
        let lost_reply = matches!(err, Error::ConnectionLost);
        if !lost_reply && !matches!(err, Error::Closed | Error::NotConnected) {
            return Failure::from(err);
        }
        let mut failure = Failure::from(err);
        // The connection task records why the connection ended right after
        // failing the requests and streams that depended on it.
        let mut state = client.state();
        let ended = state.wait_for(|s| !s.is_connected());
        let cause = match tokio::time::timeout(CAUSE_WAIT, ended).await {
            Ok(Ok(state)) => match &*state {
                ConnectionState::Closed { cause: Some(cause) }
                | ConnectionState::Reconnecting { cause, .. } => Some(cause.to_string()),
                _ => None,
            },
            _ => None,
        };
        failure.message = match cause {
            Some(cause) if lost_reply => format!("{failure} ({cause})"),
            Some(cause) => format!("disconnected from the broker ({cause})"),
            None => failure.message,
        };
        failure
    }
}

/// How long to wait for the reason a connection ended once a request failed
/// because of it (it is recorded immediately after).
const CAUSE_WAIT: Duration = Duration::from_secs(1);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Error> for Failure {
    fn from(err: Error) -> Self {
        let exit = match &err {
            Error::InvalidUrl { .. } | Error::Config(_) => Exit::Usage,
            Error::ConnectionRefused { .. }
            | Error::Connect { .. }
            | Error::Tls { .. }
            | Error::Handshake(_)
            | Error::Timeout {
                operation: "connect",
                ..
            } => Exit::Connect,
            Error::Timeout { .. } => Exit::Timeout,
            _ => Exit::Failed,
        };
        Failure::new(exit, err.to_string())
    }
}

/// Runs a client subcommand on a fresh runtime and turns its result into the
/// process exit code, printing a failure as one `tickwire:` line.
pub fn execute(command: impl Future<Output = Result<(), Failure>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            stderrln!("tickwire: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Failed as u8);
        }
    };
    let result = runtime.block_on(command);
    // Nothing may keep the process alive now (such as a read of an
    // interactive standard input).
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            stderrln!("tickwire: {failure}");
            ExitCode::from(failure.exit as u8)
        }
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut sigterm) => {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            // Without a SIGTERM handler the default action still ends the
            // process; Ctrl-C is what matters here.
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `n` with its noun, in the singular for 1: `1 message`, `3 messages`.
fn plural(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("{n} {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A rate for people: `850 msg/s`, `8.3k msg/s`, `1.2M msg/s`.
fn format_rate(count: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return "- msg/s".to_owned();
    }
    // Precision loss above 2^53 messages is irrelevant for a display.
    #[allow(clippy::cast_precision_loss)]
    let rate = count as f64 / secs;
    if rate >= 1e6 {
        format!("{:.1}M msg/s", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1}k msg/s", rate / 1e3)
    } else {
        format!("{rate:.0} msg/s")
    }
}

/// A duration for people: `0.4ms`, `850ms`, `1.2s`.
fn format_elapsed(elapsed: Duration) -> String {
    if elapsed < Duration::from_millis(10) {
        format!("{:.1}ms", elapsed.as_secs_f64() * 1e3)
    } else if elapsed < Duration::from_secs(1) {
        format!("{}ms", elapsed.as_millis())
    } else {
        format!("{:.1}s", elapsed.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_client::TopicError;

    #[test]
    fn sdk_errors_map_to_exit_codes() {
        let refused = Failure::from(Error::ConnectionRefused {
            addr: "127.0.0.1:1".into(),
        });
        assert_eq!(refused.exit, Exit::Connect);
        assert!(refused.message.starts_with("connection refused"));
        let connect_timeout = Error::Timeout {
            operation: "connect",
            after: Duration::from_secs(1),
        };
        assert_eq!(Failure::from(connect_timeout).exit, Exit::Connect);
        let publish_timeout = Error::Timeout {
            operation: "publish",
            after: Duration::from_secs(1),
        };
        assert_eq!(Failure::from(publish_timeout).exit, Exit::Timeout);
        let invalid = Error::InvalidTopic {
            topic: "a..b".into(),
            source: TopicError::EmptyToken,
        };
        assert_eq!(Failure::from(invalid).exit, Exit::Failed);
        let url = Error::InvalidUrl {
            url: "http://x".into(),
            reason: "scheme".into(),
        };
        assert_eq!(Failure::from(url).exit, Exit::Usage);
    }

    #[test]
    fn rates_and_durations_read_well() {
        assert_eq!(
            format_rate(10_000, Duration::from_millis(1200)),
            "8.3k msg/s"
        );
        assert_eq!(format_rate(850, Duration::from_secs(1)), "850 msg/s");
        assert_eq!(format_rate(3_000_000, Duration::from_secs(2)), "1.5M msg/s");
        assert_eq!(format_rate(1, Duration::ZERO), "- msg/s");
        assert_eq!(format_elapsed(Duration::from_millis(1234)), "1.2s");
        assert_eq!(format_elapsed(Duration::from_micros(3_040)), "3.0ms");
        assert_eq!(format_elapsed(Duration::from_millis(42)), "42ms");
        assert_eq!(plural(1, "message"), "1 message");
        assert_eq!(plural(0, "message"), "0 messages");
    }

    #[test]
    fn timeouts_must_be_positive() {
        assert_eq!(parse_timeout("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_timeout("0s").is_err());
        assert!(parse_timeout("soon").is_err());
    }
}
