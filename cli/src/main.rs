//! The `tickwire` command: the broker (`serve`), its command-line clients
//! (`pub`, `sub`), the load tool (`bench`), a token minter (`token`) and
//! the server API readers (`history`, `topics`, `presence`), on top of the
//! `tickwire-broker` library and the `tickwire-client` SDK.

// A failed `println!`/`eprintln!` panics: print through `console` instead.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod admin;
mod bench;
mod client;
mod console;
mod http1;
mod log_writer;
mod serve;
mod token;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// tickwire: a real-time pub/sub message broker.
#[derive(Debug, Parser)]
#[command(name = "tickwire", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker.
    ///
    /// Example: tickwire serve --listen 127.0.0.1:8080 --max-message-size 64KiB
    Serve(serve::ServeArgs),
    /// Publish messages to a topic.
    ///
    /// Example: tickwire pub stocks.AAPL 189.5 --url ws://127.0.0.1:8080/ws
    Pub(client::PubArgs),
    /// Subscribe to topics or patterns and print their messages.
    ///
    /// Example: tickwire sub 'stocks.*' --format json
    Sub(client::SubArgs),
    /// Measure a running broker: fan-out, many topics, idle connections.
    ///
    /// Exit codes: 0 ok; 1 messages lost or a slow-consumer close (4001);
    /// 2 usage; 3 connection failure.
    ///
    /// Example: taskset -c 1 tickwire bench fanout --subscribers 1000 --payload 128
    /// (against a broker started with taskset -c 0 tickwire serve)
    Bench(bench::BenchArgs),
    /// Print a signed HS256 access token granting topic patterns.
    ///
    /// Example: tickwire token --hmac-secret-file secret --sub 'stocks.>' --pub 'iot.site1.>' --ttl 1h
    Token(token::TokenArgs),
    /// Show the messages a topic keeps (GET /v1/history/{topic}; admin).
    ///
    /// Example: tickwire history chat.room --since 8123456789:40 --limit 20
    History(admin::HistoryArgs),
    /// List the topics the broker tracks, with subscribers and positions
    /// (GET /v1/topics; admin).
    ///
    /// Example: tickwire topics 'stocks.*' --limit 50
    Topics(admin::TopicsArgs),
    /// Show who is present on a topic with presence (GET
    /// /v1/presence/{topic}; admin).
    ///
    /// Example: tickwire presence chat.room --stats
    Presence(admin::PresenceArgs),
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve::run(args),
        Command::Pub(args) => client::run_pub(args),
        Command::Sub(args) => client::run_sub(args),
        Command::Bench(args) => bench::run(args),
        Command::Token(args) => token::run(args),
        Command::History(args) => admin::run_history(args),
        Command::Topics(args) => admin::run_topics(args),
        Command::Presence(args) => admin::run_presence(args),
    }
}
