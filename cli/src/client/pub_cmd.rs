//! `tickwire pub`: publish messages from the command line.

use crate::console::{stderr, stderrln};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tickwire_client::{Client, Error, OfflinePolicy};
use tickwire_protocol::topic::validate_topic;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

use super::output::json_to_msgpack;
use super::{
    ConnectArgs, EXIT_CODES_HELP, Exit, Failure, execute, format_elapsed, format_rate, interrupted,
    plural,
};

/// Examples and notes at the end of `tickwire pub --help`.
const AFTER_HELP: &str = "\
Examples:
  tickwire pub stocks.AAPL 189.5
  tickwire pub stocks.AAPL '{\"price\":189.5}' --json
  tickwire pub stocks.AAPL 189.5 --retain          # the value `sub --last` shows
  tickwire pub sensors.t1 ping --count 10000 --rate 1000
  tickwire pub sensors.t1 reading --ack            # prints the assigned seq
  tickwire pub logs.app --file message.bin
  tail -f app.log | tickwire pub logs.app          # one message per line

Without --ack or --retain each message is sent without waiting for the
broker; at the end tickwire pub makes one round trip to the broker, so it
exits 0 only once the broker has received everything. With --ack each
sequence number is printed on standard output, one per line. Progress (on a
terminal) and a final summary go to standard error.";

/// Arguments of `tickwire pub`.
#[derive(Debug, clap::Args)]
#[command(after_help = format!("{AFTER_HELP}\n\n{EXIT_CODES_HELP}"))]
pub struct PubArgs {
    /// Topic to publish to (no wildcards), e.g. stocks.AAPL.
    topic: String,

    /// The payload. Without it, or with `-`, each line read from standard
    /// input (without its line ending) is one message.
    #[arg(conflicts_with = "file")]
    data: Option<String>,

    /// Publish the contents of PATH as one message.
    #[arg(long, value_name = "PATH")]
    file: Option<PathBuf>,

    /// Parse each input as JSON and publish it as MessagePack (blank
    /// standard-input lines are skipped).
    #[arg(long)]
    json: bool,

    /// Publish each message N times.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,

    /// Publish at most R messages per second (decimals allowed, e.g. 0.5).
    #[arg(long, value_name = "R", value_parser = parse_rate)]
    rate: Option<f64>,

    /// Wait for the broker's acknowledgement of each message and print the
    /// sequence number it assigned, one per line.
    #[arg(long)]
    ack: bool,

    /// Keep each message as the topic's last value (what `sub --last`
    /// delivers first); every publish waits for its acknowledgement.
    #[arg(long)]
    retain: bool,

    #[command(flatten)]
    connect: ConnectArgs,
}

/// Parses a positive message rate.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1e9 => Ok(r),
        Ok(_) => Err("must be above 0 and at most 1000000000".to_owned()),
        Err(_) => Err(format!("`{s}` is not a number")),
    }
}

/// Runs `tickwire pub`.
pub fn run(args: PubArgs) -> ExitCode {
    execute(publish(args))
}

/// Where the payloads come from.
enum Input {
    /// One payload, from the argument or a file, already encoded.
    One(Bytes),
    /// Lines of standard input.
    Stdin,
}

async fn publish(args: PubArgs) -> Result<(), Failure> {
    validate_topic(&args.topic).map_err(|source| {
        Failure::from(Error::InvalidTopic {
            topic: args.topic.clone(),
            source,
        })
    })?;
    // Read and check the input before connecting: a typo fails fast.
    let input = match (&args.data, &args.file) {
        (Some(data), _) if data != "-" => Input::One(encode(data.as_bytes(), args.json)?),
        (_, Some(path)) => {
            let bytes = std::fs::read(path).map_err(|e| {
                Failure::new(Exit::Usage, format!("cannot read {}: {e}", path.display()))
            })?;
            let payload = encode(&bytes, args.json)
                .map_err(|f| Failure::new(f.exit, format!("{}: {f}", path.display())))?;
            Input::One(payload)
        }
        _ => Input::Stdin,
    };

    let client = args
        .connect
        .builder()
        .no_reconnect()
        .offline_policy(OfflinePolicy::Fail)
        .connect()
        .await?;
    let mut publisher = Publisher::new(&client, &args, matches!(input, Input::Stdin));
    let result = tokio::select! {
        result = publisher.run(input) => result,
        () = interrupted() => Err(Failure::new(Exit::Interrupted, "interrupted")),
    };
    // Unacknowledged publishes: one round trip proves the broker read them
    // all (it handles a connection's messages in order).
    let result = match result {
        Ok(()) if !publisher.acked() => match client.ping().await {
            Ok(_) => Ok(()),
            Err(e) => Err(Failure::request(&client, e).await),
        },
        other => other,
    };
    // Flushes anything still queued (after an interrupt) and says goodbye.
    let _ = client.close().await;
    publisher.summary(&result);
    result
}

/// Turns one input into a payload.
fn encode(input: &[u8], json: bool) -> Result<Bytes, Failure> {
    if json {
        json_to_msgpack(input)
            .map(Bytes::from)
            .map_err(|e| Failure::new(Exit::Usage, e))
    } else {
        Ok(Bytes::copy_from_slice(input))
    }
}

/// How each message is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Fire-and-forget.
    Send,
    /// Acknowledged.
    Acked,
    /// Retained as the topic's last value, and acknowledged.
    Retained,
}

/// Publishes, paces, counts and reports.
struct Publisher<'a> {
    client: &'a Client,
    topic: &'a str,
    json: bool,
    count: u64,
    mode: Mode,
    /// Print each assigned sequence number (`--ack`).
    print_seq: bool,
    pacer: Option<Interval>,
    started: Instant,
    published: u64,
    /// When progress was last shown, if progress is shown at all.
    progress: Option<Instant>,
    progress_shown: bool,
}

impl<'a> Publisher<'a> {
    fn new(client: &'a Client, args: &'a PubArgs, stdin: bool) -> Self {
        let mode = match (args.retain, args.ack) {
            (true, _) => Mode::Retained,
            (false, true) => Mode::Acked,
            (false, false) => Mode::Send,
        };
        let pacer = args.rate.map(|rate| {
            let mut pacer = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            // Keep the average rate after a stall.
            pacer.set_missed_tick_behavior(MissedTickBehavior::Burst);
            pacer
        });
        // Not while someone types the messages.
        let long_run = (stdin && !std::io::stdin().is_terminal()) || args.count > 1000;
        let now = Instant::now();
        Publisher {
            client,
            topic: &args.topic,
            json: args.json,
            count: args.count,
            mode,
            print_seq: args.ack,
            pacer,
            started: now,
            published: 0,
            progress: (long_run && std::io::stderr().is_terminal()).then_some(now),
            progress_shown: false,
        }
    }

    /// Whether every publish waited for its acknowledgement.
    fn acked(&self) -> bool {
        self.mode != Mode::Send
    }

    async fn run(&mut self, input: Input) -> Result<(), Failure> {
        match input {
            Input::One(payload) => self.send(payload).await,
            Input::Stdin => {
                let mut lines = stdin_lines();
                let mut number = 0u64;
                while let Some(line) = lines.recv().await {
                    number += 1;
                    let line = line.map_err(|e| {
                        Failure::new(Exit::Failed, format!("cannot read standard input: {e}"))
                    })?;
                    if self.json && line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let payload = encode(&line, self.json).map_err(|f| {
                        Failure::new(f.exit, format!("standard input line {number}: {f}"))
                    })?;
                    self.send(payload).await?;
                }
                Ok(())
            }
        }
    }

    /// Publishes `payload` `count` times.
    async fn send(&mut self, payload: Bytes) -> Result<(), Failure> {
        for _ in 0..self.count {
            if let Some(pacer) = &mut self.pacer {
                pacer.tick().await;
            }
            let payload = payload.clone();
            let result = match self.mode {
                Mode::Send => self
                    .client
                    .publish_bytes(self.topic, payload)
                    .await
                    .map(|()| None),
                Mode::Acked => self
                    .client
                    .publish_bytes_acked(self.topic, payload)
                    .await
                    .map(Some),
                Mode::Retained => self
                    .client
                    .publish_bytes_retained(self.topic, payload)
                    .await
                    .map(Some),
            };
            let seq = match result {
                Ok(seq) => seq,
                Err(e) => return Err(Failure::request(self.client, e).await),
            };
            if let Some(seq) = seq.filter(|_| self.print_seq) {
                let mut stdout = std::io::stdout().lock();
                writeln!(stdout, "{seq}").map_err(|e| {
                    Failure::new(
                        Exit::Failed,
                        format!("cannot write to standard output: {e}"),
                    )
                })?;
            }
            self.published += 1;
            self.show_progress();
        }
        Ok(())
    }

    /// Rewrites the progress line about once a second, on a terminal.
    fn show_progress(&mut self) {
        let Some(last) = self.progress else { return };
        if last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.progress = Some(Instant::now());
        self.progress_shown = true;
        let elapsed = self.started.elapsed();
        stderr!(
            "\r\x1b[2Kpublished {} ({})",
            plural(self.published, "message"),
            format_rate(self.published, elapsed)
        );
    }

    /// The final line on standard error. After a failure only when the
    /// count is known to be right: every publish was acknowledged, or the
    /// command was interrupted (what was sent has been flushed).
    fn summary(&self, result: &Result<(), Failure>) {
        if self.progress_shown {
            stderr!("\r\x1b[2K");
        }
        if let Err(failure) = result
            && failure.exit != Exit::Interrupted
            && (self.mode == Mode::Send || self.published == 0)
        {
            return;
        }
        let elapsed = self.started.elapsed();
        let rate = if self.published > 1 {
            format!(" ({})", format_rate(self.published, elapsed))
        } else {
            String::new()
        };
        stderrln!(
            "published {} to {} in {}{rate}",
            plural(self.published, "message"),
            self.topic,
            format_elapsed(elapsed),
        );
    }
}

/// Lines of standard input, without line endings, read on a thread of their
/// own: a blocking read of an interactive terminal cannot be cancelled, and
/// must not keep the process from exiting.
fn stdin_lines() -> mpsc::Receiver<std::io::Result<Vec<u8>>> {
    let (tx, rx) = mpsc::channel(1024);
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        stderrln!("reading messages from standard input, one per line (Ctrl-D to end)");
    }
    std::thread::spawn(move || {
        let mut reader = stdin.lock();
        loop {
            let mut line = Vec::new();
            let item = match reader.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                    }
                    Ok(line)
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_must_be_positive_and_finite() {
        assert_eq!(parse_rate("0.5"), Ok(0.5));
        assert_eq!(parse_rate("1000"), Ok(1000.0));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("inf").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn json_input_is_checked() {
        assert_eq!(encode(b"{}", true).expect("valid").as_ref(), [0x80]);
        assert_eq!(encode(b"{oops", true).unwrap_err().exit, Exit::Usage);
        assert_eq!(encode(b"{oops", false).expect("raw").as_ref(), b"{oops");
    }
}
