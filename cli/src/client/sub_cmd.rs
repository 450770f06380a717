//! `tickwire sub`: print the messages of topics and patterns.

use crate::console::stderrln;
use std::collections::HashMap;
use std::future::poll_fn;
use std::io::{self, BufWriter, Stdout, Write};
use std::process::ExitCode;
use std::task::Poll;
use std::time::Duration;

use tickwire_client::{
    Client, ConnectionState, Delivery, Error, JoinLeave, Message, Position, PresenceChange,
    SubscribeOptions, Subscription, SubscriptionEvent,
};
use tickwire_protocol::topic::{Pattern, validate_topic};
use tokio::time::{Instant, MissedTickBehavior};

use super::output::{Format, PayloadMode, render};
use super::presence_line::render_change;
use super::{ConnectArgs, EXIT_CODES_HELP, Exit, Failure, execute, interrupted, plural};

/// Examples and notes at the end of `tickwire sub --help`.
const AFTER_HELP: &str = "\
Examples:
  tickwire sub 'stocks.*'                          # one token: stocks.AAPL, stocks.MSFT
  tickwire sub 'stocks.>' 'fx.>'                   # several patterns
  tickwire sub 'stocks.*' --last                   # latest retained values first
  tickwire sub sensors.t1 --since sensors.t1=9182:4711   # resume after seq 4711
  tickwire sub 'feed.*' --max-rate 4               # at most 4 messages/s per topic
  tickwire sub orders.new --count 1 --wait 30s --format raw
  tickwire sub 'stocks.*' --format json | jq .
  tickwire sub 'bin.*' --payload hex               # bytes in hex, never decoded
  tickwire sub chat.room1 --join-leave             # who joins and leaves, with the messages
  tickwire sub 'chat.*' --join-leave users         # one line per user instead of per client

Standard output carries only the messages, one line each. The text and json
formats show a payload that is printable text as text, else one MessagePack
value (what `tickwire pub --json` sends) as JSON, else its bytes; text marks
a payload that is both text and MessagePack with `utf8:` or `msgpack:`, json
names the decoding in `payload_encoding`. Subscription
events (the epoch and seq of an exact topic, resumed, recovery incomplete,
gaps, reconnects) and the final `received N messages` go to standard error.
For exact topics the summary says how to resume with --since. Ctrl-C exits 0.
A message that matches several of the patterns is printed once. Unless
--no-reconnect is given, a lost connection is re-established and each topic
resumed where it left off (gaplessly for topics with history).";

/// Arguments of `tickwire sub`.
#[derive(Debug, clap::Args)]
#[command(after_help = format!("{AFTER_HELP}\n\n{EXIT_CODES_HELP}"))]
pub struct SubArgs {
    /// Topics or wildcard patterns: `*` matches one token, `>` the rest
    /// (stocks.AAPL, stocks.*, stocks.>).
    #[arg(required = true, value_name = "PATTERN")]
    patterns: Vec<String>,

    /// How each message is printed.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,

    /// How the text and json formats show the payload: auto (printable
    /// UTF-8 as text, else one MessagePack value as JSON, else hex in text
    /// and base64 in json), msgpack, utf8, hex or base64.
    #[arg(long, value_enum, value_name = "DECODING")]
    payload: Option<PayloadMode>,

    /// Exit after N messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// With --count: give up with exit code 4 if N messages have not arrived
    /// within DURATION.
    #[arg(long, requires = "count", value_name = "DURATION",
          value_parser = super::parse_timeout)]
    wait: Option<Duration>,

    /// First deliver the latest retained message of every matching topic
    /// (a snapshot), then live messages.
    #[arg(long)]
    last: bool,

    /// Resume TOPIC after the message at EPOCH:SEQ: the broker replays what
    /// its history still holds, then live messages. Repeatable.
    #[arg(long, value_name = "TOPIC=EPOCH:SEQ", value_parser = parse_since)]
    since: Vec<Since>,

    /// At most N messages per second per topic, always the newest.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_rate: Option<u32>,

    /// Also print who joins and leaves the topics (with presence), in order
    /// with the messages: `clients` (the default) one line per client
    /// instance, `users` one per user. In the text and json formats on
    /// standard output, else on standard error; they do not count for
    /// --count. Put the patterns before this flag.
    #[arg(long, value_enum, value_name = "KIND", num_args = 0..=1,
          default_missing_value = "clients")]
    join_leave: Option<JoinLeaveArg>,

    /// Exit with code 1 when the connection is lost, instead of reconnecting
    /// and resubscribing.
    #[arg(long)]
    no_reconnect: bool,

    #[command(flatten)]
    connect: ConnectArgs,
}

/// The value of `--join-leave`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum JoinLeaveArg {
    /// One line per client instance.
    Clients,
    /// One line per user: its first client joins, its last leaves.
    Users,
}

impl From<JoinLeaveArg> for JoinLeave {
    fn from(arg: JoinLeaveArg) -> Self {
        match arg {
            JoinLeaveArg::Clients => JoinLeave::Clients,
            JoinLeaveArg::Users => JoinLeave::Users,
        }
    }
}

/// One `--since TOPIC=EPOCH:SEQ`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Since {
    topic: String,
    position: Position,
}

fn parse_since(s: &str) -> Result<Since, String> {
    let usage = || format!("`{s}` is not TOPIC=EPOCH:SEQ, e.g. sensors.t1=9182:4711");
    let (topic, position) = s.split_once('=').ok_or_else(usage)?;
    let (epoch, seq) = position.split_once(':').ok_or_else(usage)?;
    validate_topic(topic).map_err(|e| format!("`{topic}` is not a topic: {e}"))?;
    let number = |n: &str| n.trim().parse::<u64>().map_err(|_| usage());
    Ok(Since {
        topic: topic.to_owned(),
        position: Position {
            epoch: number(epoch)?,
            seq: number(seq)?,
        },
    })
}

/// Runs `tickwire sub`.
pub fn run(args: SubArgs) -> ExitCode {
    execute(subscribe(args))
}

async fn subscribe(args: SubArgs) -> Result<(), Failure> {
    let mut patterns: Vec<Pattern> = Vec::with_capacity(args.patterns.len());
    for pattern in &args.patterns {
        let parsed = Pattern::new(pattern.as_str()).map_err(|source| {
            Failure::from(Error::InvalidPattern {
                pattern: pattern.clone(),
                source,
            })
        })?;
        if !patterns.contains(&parsed) {
            patterns.push(parsed);
        }
    }
    if args.payload.is_some() && !args.format.decodes_payload() {
        return Err(Failure::new(
            Exit::Usage,
            "--payload applies to --format text and json only; the other formats print the payload as their name says".to_owned(),
        ));
    }
    if let Some(since) = args
        .since
        .iter()
        .find(|s| !patterns.iter().any(|p| p.matches(&s.topic)))
    {
        return Err(Failure::new(
            Exit::Usage,
            format!(
                "--since names {}, which none of the patterns matches",
                since.topic
            ),
        ));
    }

    let mut builder = args.connect.builder();
    if args.no_reconnect {
        builder = builder.no_reconnect();
    }
    let client = builder.connect().await?;
    let mut subs = Vec::with_capacity(patterns.len());
    for pattern in &patterns {
        let mut options = SubscribeOptions::new().last(args.last);
        let since: Vec<(String, Position)> = args
            .since
            .iter()
            .filter(|s| pattern.matches(&s.topic))
            .map(|s| (s.topic.clone(), s.position))
            .collect();
        // An empty `since` would ask for all history: only send positions.
        if !since.is_empty() {
            options = options.since(since);
        }
        if let Some(rate) = args.max_rate {
            options = options.max_rate(rate);
        }
        if let Some(kind) = args.join_leave {
            options = options.join_leave(kind.into());
        }
        match client.subscribe_with(pattern.as_str(), options).await {
            Ok(sub) => subs.push(sub),
            Err(e) => return Err(Failure::request(&client, e).await),
        }
    }

    let mut printer = Printer::new(&args, patterns);
    let result = printer.run(&client, &mut subs).await;
    drop(subs);
    let _ = client.close().await;
    printer.summary(&result);
    result
}

/// Prints deliveries and events and keeps the counts.
struct Printer {
    format: Format,
    payload: PayloadMode,
    count: Option<u64>,
    wait: Option<Duration>,
    patterns: Vec<Pattern>,
    out: BufWriter<Stdout>,
    /// Scratch buffer for one rendered line.
    line: Vec<u8>,
    received: u64,
    /// Where each exact topic subscribed to stands, for the resume hint.
    positions: HashMap<String, Position>,
    /// Whether each subscription has been confirmed once (later
    /// confirmations are renewals after a reconnect).
    confirmed: Vec<bool>,
    /// Subscription to poll first, for fairness.
    next_poll: usize,
}

/// How often queued subscription events are looked at when no message
/// arrives (the SDK queues them; they precede the next message).
const EVENT_POLL: Duration = Duration::from_millis(250);

/// Most messages printed between two flushes of standard output.
const BATCH: usize = 1024;

impl Printer {
    fn new(args: &SubArgs, patterns: Vec<Pattern>) -> Self {
        // Exact topics start from their --since position, if given.
        let positions = args
            .since
            .iter()
            .filter(|s| patterns.iter().any(|p| p.as_str() == s.topic))
            .map(|s| (s.topic.clone(), s.position))
            .collect();
        Printer {
            format: args.format,
            payload: args.payload.unwrap_or_default(),
            count: args.count,
            wait: args.wait,
            confirmed: vec![false; patterns.len()],
            patterns,
            out: BufWriter::new(io::stdout()),
            line: Vec::new(),
            received: 0,
            positions,
            next_poll: 0,
        }
    }

    fn done(&self) -> bool {
        self.count.is_some_and(|n| self.received >= n)
    }

    async fn run(&mut self, client: &Client, subs: &mut [Subscription]) -> Result<(), Failure> {
        self.report_events(subs);
        // `--wait` needs `--count`.
        let deadline = self
            .wait
            .zip(self.count)
            .map(|(wait, count)| (Instant::now() + wait, wait, count));
        let mut state = client.state();
        let mut state_open = true;
        let mut event_poll = tokio::time::interval(EVENT_POLL);
        event_poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let interrupt = interrupted();
        tokio::pin!(interrupt);
        loop {
            // Print what is already buffered (a bounded batch, so that
            // Ctrl-C is noticed under any load), then flush once.
            for _ in 0..BATCH {
                let Some((index, item)) = self.try_next(subs) else {
                    break;
                };
                if self.deliver(subs, index, item)? {
                    return Ok(());
                }
            }
            if self.flush()? || self.done() {
                return Ok(());
            }
            tokio::select! {
                biased;
                () = &mut interrupt => return Ok(()),
                (wait, count) = expire(deadline) => {
                    return Err(Failure::new(
                        Exit::Timeout,
                        format!("received {} of {} within {}",
                            self.received,
                            plural(count, "message"),
                            humantime::format_duration(wait)),
                    ));
                }
                changed = state.changed(), if state_open => {
                    match changed {
                        Ok(()) => report_state(&state.borrow_and_update()),
                        Err(_) => state_open = false,
                    }
                    self.report_events(subs);
                }
                (index, item) = poll_fn(|cx| self.poll_next(subs, cx)) => {
                    match item {
                        Some(item) => {
                            if self.deliver(subs, index, item)? {
                                return Ok(());
                            }
                        }
                        None => return Err(ended(client, &subs[index]).await),
                    }
                }
                _ = event_poll.tick() => self.report_events(subs),
            }
        }
    }

    /// The next buffered delivery (message, join or leave) of any
    /// subscription, without waiting.
    fn try_next(&mut self, subs: &mut [Subscription]) -> Option<(usize, Delivery)> {
        let n = subs.len();
        (0..n).find_map(|k| {
            let index = (self.next_poll + k) % n;
            let item = subs[index].try_recv_delivery()?;
            self.next_poll = (index + 1) % n;
            Some((index, item))
        })
    }

    /// Polls every subscription, starting with a different one each time;
    /// `None` means that subscription's stream ended.
    fn poll_next(
        &mut self,
        subs: &mut [Subscription],
        cx: &mut std::task::Context<'_>,
    ) -> Poll<(usize, Option<Delivery>)> {
        let n = subs.len();
        for k in 0..n {
            let index = (self.next_poll + k) % n;
            if let Poll::Ready(item) = subs[index].poll_recv_delivery(cx) {
                self.next_poll = (index + 1) % n;
                return Poll::Ready((index, item));
            }
        }
        Poll::Pending
    }

    /// Prints one delivery of `subs[index]` (after the events that precede
    /// it): a join or leave, or a message. Returns whether to stop:
    /// `--count` is reached or standard output was closed.
    fn deliver(
        &mut self,
        subs: &mut [Subscription],
        index: usize,
        item: Delivery,
    ) -> Result<bool, Failure> {
        self.report_events(subs);
        match item {
            Delivery::Message(msg) => self.print_message(index, msg),
            Delivery::Join(change) => {
                self.print_change(index, true, &change);
                Ok(false)
            }
            Delivery::Leave(change) => {
                self.print_change(index, false, &change);
                Ok(false)
            }
            other => {
                tracing::debug!(
                    ?other,
                    "ignoring a kind of delivery this command does not print"
                );
                Ok(false)
            }
        }
    }

    /// Prints one message of subscription `index`, unless another pattern
    /// prints it. Returns whether to stop (as [`Printer::deliver`]).
    fn print_message(&mut self, index: usize, msg: Message) -> Result<bool, Failure> {
        // Every local subscription whose pattern matches receives the
        // message: print it for the first one only.
        let first = self.patterns.iter().position(|p| p.matches(msg.topic()));
        if first != Some(index) {
            return Ok(false);
        }
        if msg.skipped() > 0 {
            stderrln!(
                "{}: {} dropped because output could not keep up",
                self.patterns[index],
                plural(msg.skipped(), "message")
            );
        }
        self.received += 1;
        if let Some(position) = self.positions.get_mut(msg.topic()) {
            *position = msg.position();
        }
        self.line.clear();
        match render(self.format, self.payload, &msg, &mut self.line) {
            Ok(()) => {
                if let Err(e) = self.out.write_all(&self.line) {
                    return write_failed(e);
                }
            }
            Err(reason) => stderrln!("tickwire: {} #{}: {reason}", msg.topic(), msg.seq()),
        }
        if self.done() {
            self.flush()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Flushes standard output; returns whether it was closed.
    fn flush(&mut self) -> Result<bool, Failure> {
        match self.out.flush() {
            Ok(()) => Ok(false),
            Err(e) => write_failed(e),
        }
    }

    /// Prints every queued subscription event on standard error.
    fn report_events(&mut self, subs: &mut [Subscription]) {
        for (index, sub) in subs.iter_mut().enumerate() {
            while let Some(event) = sub.next_event() {
                self.report_event(index, event);
            }
        }
    }

    fn report_event(&mut self, index: usize, event: SubscriptionEvent) {
        let pattern = self.patterns[index].as_str();
        match event {
            SubscriptionEvent::Subscribed { epoch, seq } => {
                let verb = if self.confirmed[index] {
                    "resubscribed"
                } else {
                    "subscribed"
                };
                self.confirmed[index] = true;
                match (epoch, seq) {
                    (Some(epoch), Some(seq)) => {
                        stderrln!("{verb} to {pattern} (epoch {epoch}, seq {seq})");
                        let fresh = Position { epoch, seq };
                        self.positions
                            .entry(pattern.to_owned())
                            .and_modify(|p| {
                                if p.epoch != epoch {
                                    *p = fresh;
                                }
                            })
                            .or_insert(fresh);
                    }
                    _ => stderrln!("{verb} to {pattern}"),
                }
            }
            SubscriptionEvent::Resumed => stderrln!("{pattern}: resumed without a gap"),
            SubscriptionEvent::RecoveryIncomplete { missed } => {
                for (topic, position) in missed {
                    if position.epoch == 0 {
                        stderrln!(
                            "{pattern}: could not resume {topic}: the broker no longer tracks it"
                        );
                    } else {
                        stderrln!(
                            "{pattern}: could not resume {topic} (history lost or not kept \
                             that far back); continuing from {}:{}",
                            position.epoch,
                            position.seq
                        );
                    }
                    if let Some(p) = self.positions.get_mut(&topic) {
                        *p = position;
                    }
                }
            }
            SubscriptionEvent::Gap {
                topic,
                expected,
                got,
            } => stderrln!(
                "{topic}: gap: {} not delivered (#{expected} to #{})",
                plural(got.saturating_sub(expected), "message"),
                got.saturating_sub(1)
            ),
        }
    }

    /// Prints a join or leave of one subscription, unless an earlier
    /// pattern that also matches its topic prints it: on standard output in
    /// the text and json formats (a write error shows at the next flush),
    /// else on standard error.
    fn print_change(&mut self, index: usize, join: bool, change: &PresenceChange) {
        let first = self.patterns.iter().position(|p| p.matches(&change.topic));
        if first != Some(index) {
            return;
        }
        let mut line = Vec::new();
        render_change(self.format, join, change, &mut line);
        if self.format.decodes_payload() {
            let _ = self.out.write_all(&line);
        } else {
            stderrln!("{}", String::from_utf8_lossy(&line).trim_end());
        }
    }

    /// `received N messages` on standard error, with how to resume the exact
    /// topics; after a failure only if something was received and the
    /// failure does not say it already.
    fn summary(&self, result: &Result<(), Failure>) {
        if let Err(failure) = result
            && (self.received == 0 || failure.exit == Exit::Timeout)
        {
            return;
        }
        let mut line = format!("received {}", plural(self.received, "message"));
        let mut resume: Vec<_> = self
            .positions
            .iter()
            .filter(|(_, p)| p.epoch != 0)
            .collect();
        resume.sort_by_key(|(topic, _)| topic.as_str());
        for (i, (topic, p)) in resume.iter().enumerate() {
            let sep = if i == 0 { "; resume with" } else { "" };
            line.push_str(&format!("{sep} --since {topic}={}:{}", p.epoch, p.seq));
        }
        stderrln!("{line}");
    }
}

/// The failure for a subscription whose stream ended.
async fn ended(client: &Client, sub: &Subscription) -> Failure {
    let err = sub.error().unwrap_or(Error::Closed);
    let failure = Failure::request(client, err).await;
    Failure::new(
        failure.exit,
        format!("subscription to {} ended: {failure}", sub.pattern()),
    )
}

/// A write to standard output failed: a closed pipe ends the command
/// quietly (`tickwire sub ... | head -1`; returns `true`), anything else is
/// an error.
fn write_failed(e: io::Error) -> Result<bool, Failure> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(true)
    } else {
        Err(Failure::new(
            Exit::Failed,
            format!("cannot write to standard output: {e}"),
        ))
    }
}

/// Reports a change of the connection state on standard error.
fn report_state(state: &ConnectionState) {
    match state {
        ConnectionState::Reconnecting { attempt: 1, cause } => {
            stderrln!("connection lost ({cause}); reconnecting");
        }
        ConnectionState::Reconnecting { attempt, cause } => {
            stderrln!(
                "reconnect attempt {} failed ({cause}); retrying",
                attempt - 1
            );
        }
        ConnectionState::Connected => stderrln!("reconnected"),
        // Closed: the subscriptions end and say why.
        _ => {}
    }
}

/// Sleeps until the `--wait` deadline, or forever without one; returns
/// `--wait` and `--count`.
async fn expire(deadline: Option<(Instant, Duration, u64)>) -> (Duration, u64) {
    match deadline {
        Some((at, wait, count)) => {
            tokio::time::sleep_until(at).await;
            (wait, count)
        }
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_reads_topic_epoch_and_seq() {
        assert_eq!(
            parse_since("sensors.t1=9182:4711"),
            Ok(Since {
                topic: "sensors.t1".into(),
                position: Position {
                    epoch: 9182,
                    seq: 4711
                },
            })
        );
        // `:` is allowed in topics; the position is after `=`.
        assert_eq!(
            parse_since("a:b=1:2").map(|s| s.topic),
            Ok("a:b".to_owned())
        );
        assert!(parse_since("sensors.t1").is_err());
        assert!(parse_since("sensors.t1=9182").is_err());
        assert!(parse_since("sensors.*=1:2").is_err());
        assert!(parse_since("s=x:2").is_err());
    }
}
