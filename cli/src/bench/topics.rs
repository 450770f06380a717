//! `tickwire bench topics`: T topics × K subscribers each, M publishers
//! spread over the topics round-robin (publisher p takes topics p, p + M,
//! p + 2M, …; with more publishers than topics, several share one).

use clap::Args;
use tickwire_broker::config::parse_count;
use tickwire_protocol::topic::validate_topic;

use super::load::{self, LoadPlan};
use super::{CommonArgs, LoadArgs, resolve_nodes, usage};

/// Arguments of `tickwire bench topics`.
#[derive(Debug, Args)]
pub struct TopicsArgs {
    /// Number of topics.
    #[arg(long, default_value = "1000", value_parser = parse_count, value_name = "T")]
    pub topics: usize,
    /// Subscriber connections per topic (each subscribes to one topic).
    #[arg(long, default_value = "2", value_parser = parse_count, value_name = "K")]
    pub subscribers_per_topic: usize,
    /// Publisher connections.
    #[arg(long, default_value = "4", value_parser = parse_count, value_name = "M")]
    pub publishers: usize,
    /// Topic names are PREFIX.0 … PREFIX.(T-1).
    #[arg(long, default_value = "bench.topics", value_name = "PREFIX")]
    pub topic_prefix: String,
    /// Publish/subscribe load options.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Options shared by every benchmark.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Runs the many-topics benchmark; returns the exit code.
pub fn run(args: TopicsArgs) -> u8 {
    if let Err(e) = validate_topic(&format!("{}.0", args.topic_prefix)) {
        return usage(&format!("--topic-prefix `{}`: {e}", args.topic_prefix));
    }
    if let Err(e) = super::check_load_args(&args.load, &args.common) {
        return usage(&e);
    }
    if args.topics.saturating_mul(args.subscribers_per_topic) > super::MAX_CONNECTIONS {
        return usage(&format!(
            "--topics × --subscribers-per-topic is over {} connections",
            super::MAX_CONNECTIONS
        ));
    }
    let nodes = match resolve_nodes(&args.load, &args.common) {
        Ok(nodes) => nodes,
        Err(code) => return code,
    };
    let plan = LoadPlan {
        bench: "topics",
        topics: (0..args.topics)
            .map(|i| format!("{}.{i}", args.topic_prefix))
            .collect(),
        subscribers_per_topic: args.subscribers_per_topic,
        publishers: args.publishers,
    };
    load::run(plan, args.common, args.load, nodes)
}
