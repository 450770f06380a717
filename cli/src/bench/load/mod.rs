//! The publish/subscribe load engine behind `fanout` and `topics`.
//!
//! Layout: `--threads` OS threads, each a single-threaded tokio runtime with
//! a `LocalSet`, own a share of the subscriber and publisher connections
//! (round-robin). The main thread only orchestrates: it waits for setup,
//! starts the publishers, prints progress, stops publishing after
//! `--duration`, waits for the drain and collects the results. Threads share
//! nothing but atomic counters.
//!
//! Per message, a subscriber does only what [`Walker::walk`](super::walker::Walker::walk) does plus one
//! histogram record; per read it takes one clock reading (every message in
//! one read arrived at the same time) and stores its counters.
//!
//! Flow control at max rate: before each batch a publisher checks, per
//! topic, `published − min(received by the topic's live subscribers)`
//! against `--max-in-flight`, so the publisher cannot simply overrun the
//! broker's queue budgets; the measured rate is the rate at which the slowest
//! subscriber actually receives. With `--rate` there is no window: the
//! publisher sends what is due every millisecond and reports if it fell
//! behind.
//!
//! * `plan`: what to run: topics, connections, who publishes where.
//! * `nodes`: which broker each connection goes to (`--subscriber-url`,
//!   `--publisher-url`: several nodes of a cluster) and the deliveries per
//!   broker.
//! * `shared`: the atomic counters and flags the threads share.
//! * `run`: the orchestration on the main thread: setup, progress, stop,
//!   drain.
//! * `worker`: one load thread: opening connections and the subscriber
//!   receive loop.
//! * `publish`: the publisher loops (windowed and paced).
//! * `summary`: the result of a run, printed as a table or JSON.

mod nodes;
mod plan;
mod publish;
mod run;
mod shared;
mod summary;
mod worker;

pub use nodes::Nodes;
pub use plan::LoadPlan;
pub use run::run;
pub(crate) use shared::{SubShared, now_ns};
pub(crate) use worker::receive;
