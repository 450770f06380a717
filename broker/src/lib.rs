//! # tickwire-broker
//!
//! The tickwire pub/sub broker: one port serving WebSocket sessions
//! (`GET /ws`), HTTP publish, Prometheus metrics and health checks.
//!
//! Where each thing happens:
//!
//! * [`server`]: accept loop, connection limit, graceful shutdown;
//!   [`accept`]: what an accept loop does when `accept()` fails;
//!   [`slot`]: a connection's hold on one of the connection places.
//! * [`http`]: routing, the WebSocket upgrade, HTTP publish, health, metrics;
//!   [`admin_api`]: the operational JSON (`/v1/stats`, `/v1/topics`);
//!   [`dashboard`]: the embedded dashboard page (`--dashboard`) and
//!   [`busiest`]: its busiest-topics sampler.
//!   [`fallback`]: the Server-Sent Events and long-poll transports
//!   (`/v1/sse`, `/v1/poll`), subscribe-only sessions rendered as JSON.
//! * [`connection`]: one WebSocket connection's reader, keepalive and close
//!   handshake; [`writer`]: its batched writer; [`handler`]: what it does
//!   with each message ([`session::Session`] on `/ws`, [`echo::Echo`] on
//!   the echo listener, `echo_listen`, a conformance-testing aid).
//! * [`session`]: what a client may do (subscribe, publish, …);
//!   [`auth`]: token verification at the upgrade and HTTP publish;
//!   [`api_keys`]: API keys for HTTP publish;
//!   [`cert_grants`]: grants of client certificates;
//!   [`grants`]: the patterns a client may subscribe to and publish on.
//! * [`registry`]: topics, subscriptions and the encode-once fan-out;
//!   [`pattern_trie`]: the wildcard index; [`history`]: what a topic keeps
//!   (history ring, retained value); [`replay`]: what a new subscription
//!   gets before live messages, and the wildcard replay's seam with live
//!   publishes.
//!   [`compression`]: permessage-deflate deliveries, compressed once per
//!   message and shared.
//! * [`presence`]: who is subscribed to topics with presence, `JOIN`/`LEAVE`
//!   events, grace periods; [`presence_session`]: a session's side of it
//!   (holds on subscribe, `PRESENCE` answers, release at the end);
//!   [`directory`]: live connections by client id and user, for server
//!   disconnects.
//! * [`outbound`]: each connection's bounded outbound queue (replies, pings,
//!   deliveries); [`closing`]: its close state machine; [`progress`]: its
//!   write-progress clock (slow consumers, producer backpressure).
//! * [`limits`]: what one client may make the broker keep (retain).
//! * [`cluster`]: several nodes acting as one through Redis
//!   (`--cluster`); without it, none of it runs.
//! * [`config`], [`metrics`], [`state`]: configuration, metrics, shared state.
//! * [`tls`]: TLS on the port (certificate, key, client CA, the client
//!   certificate's [`tls::PeerIdentity`]); [`stream`]: plain TCP or TLS
//!   streams, chosen per connection; [`reload`]: reloading what can change
//!   while running (SIGHUP in the binary).
//!
//! The `tickwire` binary that runs the broker lives in the `tickwire-cli`
//! crate.
//!
//! The library writes nothing to standard output or standard error itself:
//! it logs through `tracing`, and the subscriber (the binary's) decides
//! where lines go and that a failed write is harmless.

// `println!`/`eprintln!` panic when the stream is closed or full.
#![cfg_attr(not(test), deny(clippy::print_stdout, clippy::print_stderr))]

pub mod accept;
pub mod admin_api;
pub mod api_keys;
pub mod auth;
pub mod busiest;
pub mod cert_grants;
pub mod closing;
pub mod cluster;
pub mod compression;
pub mod config;
pub mod connection;
pub mod dashboard;
pub mod directory;
pub mod echo;
pub mod fallback;
pub mod grants;
pub mod handler;
pub mod history;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod pattern_set;
pub mod pattern_trie;
pub mod presence;
pub mod presence_session;
pub mod progress;
pub mod registry;
pub mod reload;
pub mod replay;
pub mod server;
pub mod server_api;
pub mod session;
pub mod slot;
pub mod state;
pub mod stream;
pub mod tls;
pub mod writer;

pub use config::BrokerConfig;
pub use outbound::SlowConsumerPolicy;
pub use reload::{ReloadError, ReloadHandle};
pub use server::{Broker, ListenError, ShutdownHandle};
