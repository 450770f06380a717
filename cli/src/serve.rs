//! `tickwire serve`: run the broker until SIGTERM or SIGINT.

use crate::console::{stderrln, stdoutln};
use crate::log_writer::{self, LogFlush};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Arg, ArgMatches, Command, FromArgMatches};
use tickwire_broker::config::{BrokerConfig, LogFormat, SECRET_SETTINGS, SETTINGS};
use tickwire_broker::{Broker, ListenError, ReloadHandle, ShutdownHandle};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// The id of the `--config` argument.
const CONFIG: &str = "config";

/// Arguments of `tickwire serve`: one flag and one `TICKWIRE_*` variable per
/// broker setting, generated from [`SETTINGS`], plus `--config FILE`.
#[derive(Debug, Clone, Default)]
pub struct ServeArgs {
    /// The TOML configuration file, if any.
    config: Option<PathBuf>,
    /// The settings given as flags or environment variables, as
    /// `(file key, text)`; they override the file.
    overrides: Vec<(&'static str, String)>,
}

impl clap::Args for ServeArgs {
    fn augment_args(cmd: Command) -> Command {
        let config = Arg::new(CONFIG)
            .long(CONFIG)
            .env("TICKWIRE_CONFIG")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("TOML configuration file; flags and environment variables override it.");
        SETTINGS.iter().fold(cmd.arg(config), |cmd, setting| {
            let check = move |v: &str| setting.check(v).map(|()| v.to_owned());
            let arg = Arg::new(setting.key)
                .long(setting.flag())
                .env(setting.env)
                .hide_env_values(SECRET_SETTINGS.contains(&setting.key))
                .value_name(setting.key.to_uppercase())
                .value_parser(check)
                .help(format!(
                    "{} [default: {}]",
                    setting.help,
                    match setting.default {
                        "" => "none",
                        default => default,
                    }
                ));
            // An on/off flag given alone means `true` (`--dashboard`);
            // `--dashboard false` still works.
            let arg = match setting.is_switch() {
                true => arg.num_args(0..=1).default_missing_value("true"),
                false => arg,
            };
            cmd.arg(arg)
        })
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for ServeArgs {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let overrides = SETTINGS
            .iter()
            .filter_map(|s| {
                let value = matches.get_one::<String>(s.key)?;
                Some((s.key, value.clone()))
            })
            .collect();
        Ok(ServeArgs {
            config: matches.get_one::<PathBuf>(CONFIG).cloned(),
            overrides,
        })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

/// Exit code when the configuration is invalid.
const EXIT_CONFIG: u8 = 2;
/// Exit code when the broker cannot start (e.g. the port is taken).
const EXIT_START: u8 = 3;

/// Runs the broker with `args` until SIGTERM or SIGINT.
pub fn run(args: ServeArgs) -> ExitCode {
    let overrides: Vec<(&str, String)> = args
        .overrides
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    let config = match BrokerConfig::load(args.config.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            stderrln!("tickwire: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let log = match init_logging(&config) {
        Ok(log) => log,
        Err(e) => {
            stderrln!("tickwire: {e:#}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            log.flush();
            stderrln!("tickwire: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_START);
        }
    };
    let result = runtime.block_on(serve(config));
    // The last log lines ("broker stopped") go out before the process ends.
    log.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            stderrln!("tickwire: {e:#}");
            // The broker reports an invalid configuration (such as an
            // unreadable TLS file) as InvalidInput.
            let invalid_config = e
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::InvalidInput);
            ExitCode::from(if invalid_config {
                EXIT_CONFIG
            } else {
                EXIT_START
            })
        }
    }
}

/// Installs the log subscriber, writing through [`log_writer`]; returns
/// what flushes it before exit.
fn init_logging(config: &BrokerConfig) -> anyhow::Result<LogFlush> {
    let filter = EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("invalid log level `{}`", config.log_level))?;
    let (writer, flush) = log_writer::start().context("cannot start the log thread")?;
    // The writer never fails; the subscriber's own error reports would go
    // to standard error with `eprintln!`, which panics when it is broken.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || writer.clone())
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(flush)
}

async fn serve(config: BrokerConfig) -> anyhow::Result<()> {
    let listen = config.listen;
    let broker = Broker::bind(config).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::InvalidInput {
            return anyhow::Error::new(e);
        }
        let side = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<ListenError>())
            .map(|side| side.flag);
        let flag = side.unwrap_or("--listen");
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                format!("another process is using the port; choose one with {flag}")
            }
            std::io::ErrorKind::PermissionDenied => {
                format!("ports below 1024 need privileges; choose one with {flag}")
            }
            // A configuration or key-file error: the message says it all.
            std::io::ErrorKind::InvalidInput => return anyhow::anyhow!("{e}"),
            _ => format!("check the address given to {flag}"),
        };
        if side.is_some() {
            anyhow::anyhow!("{e}; {hint}")
        } else {
            anyhow::anyhow!("cannot listen on {listen}: {e}; {hint}")
        }
    })?;
    let addr = broker.local_addr()?;
    let scheme = if broker.is_tls() { "wss" } else { "ws" };
    tracing::info!(%addr, tls = broker.is_tls(), "tickwire listening");
    if !addr.ip().is_loopback() && !broker.is_tls() {
        tracing::warn!(
            "listening on {addr} WITHOUT TLS: anyone who can reach this address can connect, \
             and messages and tokens cross the network in clear text; give --tls-cert-file and \
             --tls-key-file, or keep the default 127.0.0.1 behind a TLS-terminating proxy"
        );
    }
    // Installed before the banner: a signal sent once the address is known
    // reloads (SIGHUP) or drains (SIGTERM, SIGINT); it never meets the
    // default action (exit).
    let sighup = signal(SignalKind::hangup());
    let stop_signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    // The banner is for whoever started the broker; with standard output
    // closed or full it is lost, and the broker serves all the same.
    let _ = stdoutln!("tickwire listening on {addr} (WebSocket {scheme}://{addr}/ws)");
    if let Some(metrics_addr) = broker.metrics_addr().transpose()? {
        tracing::info!(addr = %metrics_addr, "metrics listener ready");
        let _ = stdoutln!("tickwire metrics on {metrics_addr} (http://{metrics_addr}/metrics)");
    }
    if let Some(echo_addr) = broker.echo_addr().transpose()? {
        tracing::info!(addr = %echo_addr, "echo service ready");
        let _ = stdoutln!(
            "tickwire echo on {echo_addr} (WebSocket ws://{echo_addr}/, conformance testing only)"
        );
    }
    tokio::spawn(shutdown_on_signal(stop_signals, broker.shutdown_handle()));
    tokio::spawn(reload_on_sighup(sighup, broker.reload_handle()));
    broker.run().await;
    Ok(())
}

/// Reloads what the broker can reload (the TLS certificate, token and API
/// keys, client certificate grants) on every SIGHUP received by `sighup`.
async fn reload_on_sighup(sighup: std::io::Result<Signal>, handle: ReloadHandle) {
    let mut sighup = match sighup {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGHUP handler; reloading is not available");
            return;
        }
    };
    while sighup.recv().await.is_some() {
        match handle.reload() {
            Ok(reloaded) => tracing::info!(
                tls = reloaded.tls,
                keys = reloaded.keys,
                "SIGHUP received; reload done"
            ),
            Err(e) => tracing::error!("SIGHUP received; reload failed: {e}"),
        }
    }
}

/// Starts the drain on the first SIGTERM or SIGINT received by `signals`
/// (installed before the banner).
async fn shutdown_on_signal(
    signals: (std::io::Result<Signal>, std::io::Result<Signal>),
    handle: ShutdownHandle,
) {
    let (mut sigterm, mut sigint) = match signals {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot install SIGTERM/SIGINT handlers");
            return;
        }
    };
    tokio::select! {
        _ = sigterm.recv() => tracing::info!("SIGTERM received; shutting down"),
        _ = sigint.recv() => tracing::info!("SIGINT received; shutting down"),
    }
    handle.shutdown();
}
