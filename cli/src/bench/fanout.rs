//! `tickwire bench fanout`: one publisher, S subscribers on one topic.

use clap::Args;
use tickwire_protocol::topic::validate_topic;

use super::load::{self, LoadPlan};
use super::{CommonArgs, LoadArgs, resolve_nodes, usage};

/// Arguments of `tickwire bench fanout`.
#[derive(Debug, Args)]
pub struct FanoutArgs {
    /// Subscriber connections, all on the one topic.
    #[arg(long, default_value = "100", value_parser = tickwire_broker::config::parse_count, value_name = "S")]
    pub subscribers: usize,
    /// The topic to publish on.
    #[arg(long, default_value = "bench.fanout", value_name = "TOPIC")]
    pub topic: String,
    /// Publish/subscribe load options.
    #[command(flatten)]
    pub load: LoadArgs,
    /// Options shared by every benchmark.
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Runs the fan-out benchmark; returns the exit code.
pub fn run(args: FanoutArgs) -> u8 {
    if let Err(e) = validate_topic(&args.topic) {
        return usage(&format!("--topic `{}`: {e}", args.topic));
    }
    if let Err(e) = super::check_load_args(&args.load, &args.common) {
        return usage(&e);
    }
    if args.subscribers > super::MAX_CONNECTIONS {
        return usage(&format!("--subscribers is over {}", super::MAX_CONNECTIONS));
    }
    let nodes = match resolve_nodes(&args.load, &args.common) {
        Ok(nodes) => nodes,
        Err(code) => return code,
    };
    let plan = LoadPlan {
        bench: "fanout",
        topics: vec![args.topic],
        subscribers_per_topic: args.subscribers,
        publishers: 1,
    };
    load::run(plan, args.common, args.load, nodes)
}
