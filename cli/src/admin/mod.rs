//! The server API commands: `tickwire history`, `tickwire topics` and
//! `tickwire presence` read a broker's JSON endpoints
//! (`GET /v1/history/{topic}`, `/v1/topics`, `/v1/presence/{topic}`,
//! docs/http-api.md) and print them as tables, or as the broker's JSON
//! with `--json`.
//!
//! They need the admin grant when the broker checks credentials (a token
//! with `"admin": true` or an admin API key, in `--token`).

mod fetch;
mod show;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::client::{Exit, Failure, execute};
use crate::console::stdoutln;

use fetch::{Origin, get_json};

/// The URL used when neither `--url` nor `TICKWIRE_URL` is given.
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// Most messages or topics one request may ask for (the broker's bound).
const MAX_LIMIT: usize = 1000;

/// The exit codes of these commands, as shown in their `--help`
/// (docs/cli.md lists the same).
const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    success
  1    the broker refused the request (403 forbidden, 404 presence_disabled,
       400 invalid topic or pattern, 503) or its answer could not be read
  2    usage error: invalid arguments or URL
  3    could not connect (or TLS failed), or the broker refused the
       credentials (401)
  4    timeout: no answer within --timeout";

/// The flags every server API command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// The broker's HTTP URL, http://HOST:PORT or https://HOST:PORT (a
    /// ws:// or wss:// URL, as the other commands take, names the same
    /// port).
    #[arg(long, env = "TICKWIRE_URL", default_value = DEFAULT_URL, value_name = "URL")]
    url: String,

    /// Bearer token or API key with the admin grant, sent as
    /// `Authorization: Bearer <TOKEN>`.
    #[arg(
        long,
        env = "TICKWIRE_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    token: Option<String>,

    /// PEM file of the CA certificates to trust for https:// instead of the
    /// built-in public roots (for a broker with a private CA).
    #[arg(long, env = "TICKWIRE_CA_FILE", value_name = "FILE")]
    ca_file: Option<PathBuf>,

    /// Time allowed to connect and get the answer.
    #[arg(long, default_value = "10s", value_parser = crate::client::parse_timeout, value_name = "DURATION")]
    timeout: Duration,

    /// Print the broker's JSON answer as it is, instead of a table.
    #[arg(long)]
    json: bool,
}

/// `tickwire history TOPIC`: the messages a topic keeps.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct HistoryArgs {
    /// The topic.
    topic: String,

    /// Only the messages after this position (as `SUBSCRIBED` and
    /// `tickwire sub --since` give it); the answer says whether it
    /// continues right after it (`recovered`).
    #[arg(long, value_parser = parse_since, value_name = "EPOCH:SEQ")]
    since: Option<String>,

    /// Most messages to show, 1 to 1000: the newest ones, or with --since
    /// the first ones after it.
    #[arg(long, default_value_t = 100, value_parser = parse_limit, value_name = "N")]
    limit: usize,

    #[command(flatten)]
    api: ApiArgs,
}

/// `tickwire topics [PATTERN]`: the topics the broker tracks.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct TopicsArgs {
    /// Which topics (a subscription pattern); all by default.
    pattern: Option<String>,

    /// Most topics to show, 1 to 1000.
    #[arg(long, default_value_t = 100, value_parser = parse_limit, value_name = "N")]
    limit: usize,

    /// Only topics sorting after this one (the `next` of the previous
    /// page).
    #[arg(long, value_name = "TOPIC")]
    after: Option<String>,

    #[command(flatten)]
    api: ApiArgs,
}

/// `tickwire presence TOPIC`: who is subscribed to a topic with presence.
#[derive(Debug, clap::Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct PresenceArgs {
    /// The topic.
    topic: String,

    /// Only the counts of clients and users.
    #[arg(long)]
    stats: bool,

    #[command(flatten)]
    api: ApiArgs,
}

/// Parses `--limit`: 1 to [`MAX_LIMIT`].
fn parse_limit(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| (1..=MAX_LIMIT).contains(n))
        .ok_or_else(|| format!("write a number, 1 to {MAX_LIMIT}"))
}

/// Parses `--since`: `EPOCH:SEQ`, two decimal numbers.
fn parse_since(since: &str) -> Result<String, String> {
    let number = |s: &str| !s.is_empty() && s.parse::<u64>().is_ok();
    match since.split_once(':') {
        Some((epoch, seq)) if number(epoch) && number(seq) => Ok(since.to_owned()),
        _ => Err("write EPOCH:SEQ, two decimal numbers".to_owned()),
    }
}

/// Runs `tickwire history`.
pub fn run_history(args: HistoryArgs) -> ExitCode {
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(since) = args.since {
        query.push(("since", since));
    }
    let path = format!("/v1/history/{}", args.topic);
    run(&args.api, &path, &query, show::history)
}

/// Runs `tickwire topics`.
pub fn run_topics(args: TopicsArgs) -> ExitCode {
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(pattern) = args.pattern {
        query.push(("pattern", pattern));
    }
    if let Some(after) = args.after {
        query.push(("after", after));
    }
    run(&args.api, "/v1/topics", &query, |answer| {
        let table = show::topics(answer);
        match answer["next"].as_str() {
            Some(next) => format!("{table}\n(more topics follow: --after {next})"),
            None => table,
        }
    })
}

/// Runs `tickwire presence`.
pub fn run_presence(args: PresenceArgs) -> ExitCode {
    let suffix = if args.stats { "/stats" } else { "" };
    let path = format!("/v1/presence/{}{suffix}", args.topic);
    run(&args.api, &path, &[], show::presence)
}

/// GETs `path?query` and prints the answer: `human` makes the table.
fn run(
    api: &ApiArgs,
    path: &str,
    query: &[(&str, String)],
    human: impl FnOnce(&Value) -> String,
) -> ExitCode {
    let pairs: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let target = crate::http1::with_query(path, &pairs);
    execute(async {
        let origin = Origin::parse(&api.url)?;
        let token = api.token.as_deref();
        let ca_file = api.ca_file.as_deref();
        let (status, body) = get_json(&origin, &target, token, ca_file, api.timeout).await?;
        let answer = refused(status, body)?;
        let text = if api.json {
            answer.to_string()
        } else {
            human(&answer)
        };
        match stdoutln!("{text}") {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::new(
                Exit::Failed,
                format!("cannot write to standard output: {e}"),
            )),
            _ => Ok(()),
        }
    })
}

/// The answer of a 200, or the failure an error answer stands for: 401 is
/// a connect failure (as for `pub` and `sub`), any other status a refusal.
fn refused(status: u16, body: Value) -> Result<Value, Failure> {
    if status == 200 {
        return Ok(body);
    }
    let code = body["error"]["code"].as_str().unwrap_or("unknown");
    let message = body["error"]["message"].as_str().unwrap_or("");
    let exit = match status {
        401 => Exit::Connect,
        _ => Exit::Failed,
    };
    Err(Failure::new(
        exit,
        format!("broker answered HTTP {status} {code}: {message}"),
    ))
}
