//! # tickwire-client
//!
//! The async Rust client for the [tickwire] pub/sub broker.
//!
//! * [`Client`]: connect over `ws://` or `wss://`, publish (fire-and-forget
//!   or acknowledged), subscribe to topics and wildcard patterns.
//! * [`Subscription`]: a [`futures_core::Stream`] of [`Message`]s;
//!   dropping it unsubscribes.
//! * Automatic reconnects with exponential backoff and jitter
//!   ([`ReconnectPolicy`]); subscriptions are renewed on every new
//!   connection and publishes made while offline are buffered
//!   ([`OfflinePolicy`]). Watch [`Client::state`] to observe it.
//! * **Resume**: the client remembers the last [`Position`] delivered per
//!   topic and renews subscriptions with it, so topics that keep history
//!   continue after a reconnect without a gap or a duplicate; what could
//!   not be recovered is reported as
//!   [`SubscriptionEvent::RecoveryIncomplete`] ([`Subscription::events`]).
//!   [`SubscribeOptions`] also asks for replays from known positions
//!   (`since`), a snapshot of retained values (`last`, see
//!   [`Client::publish_retained`]) and rate limits (`max_rate`).
//! * **Presence**: [`Client::presence`] and [`Client::presence_stats`] list
//!   who is subscribed to a topic with presence, and
//!   [`SubscribeOptions::join_leave`] delivers [`Delivery::Join`] and
//!   [`Delivery::Leave`] in order with the messages
//!   ([`Subscription::recv_delivery`]). Each
//!   client has one id ([`ClientBuilder::client_id`]) on every connection,
//!   so a reconnect is the same presence entry.
//! * Payloads are MessagePack via serde: [`Client::publish`] and
//!   [`Message::decode`]; raw bytes with [`Client::publish_bytes`] and
//!   [`Message::payload`].
//!
//! ```no_run
//! use futures::StreamExt;
//! use tickwire_client::Client;
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug)]
//! struct Quote {
//!     symbol: String,
//!     price: f64,
//! }
//!
//! #[tokio::main]
//! async fn main() -> tickwire_client::Result<()> {
//!     let client = Client::connect("ws://127.0.0.1:8080").await?;
//!
//!     let mut quotes = client.subscribe("stocks.*").await?;
//!     let seq = client
//!         .publish_acked("stocks.AAPL", &Quote { symbol: "AAPL".into(), price: 189.5 })
//!         .await?;
//!     println!("published as #{seq}");
//!
//!     while let Some(msg) = quotes.next().await {
//!         let quote: Quote = msg.decode()?;
//!         println!("{} #{}: {quote:?}", msg.topic(), msg.seq());
//!     }
//!     Ok(())
//! }
//! ```
//!
//! Resuming needs nothing from the application; to react to what could not
//! be recovered, read the subscription's events:
//!
//! ```no_run
//! use tickwire_client::{Client, SubscribeOptions, SubscriptionEvent};
//!
//! # async fn demo() -> tickwire_client::Result<()> {
//! let client = Client::connect("ws://127.0.0.1:8080").await?;
//! let mut readings = client
//!     .subscribe_with("sensors.>", SubscribeOptions::new().last(true))
//!     .await?;
//! let events = readings.events();
//! loop {
//!     tokio::select! {
//!         Some(msg) = readings.recv() => println!("{} #{}", msg.topic(), msg.seq()),
//!         Some(event) = events.recv() => match event {
//!             SubscriptionEvent::RecoveryIncomplete { missed } => {
//!                 eprintln!("reload the state of {missed:?}")
//!             }
//!             SubscriptionEvent::Gap { topic, expected, got } => {
//!                 eprintln!("{topic}: messages {expected}..{got} were not delivered")
//!             }
//!             _ => {}
//!         },
//!         else => break,
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! The client needs a Tokio runtime. docs/client.md in the repository
//! describes every option, the reconnect, resume and offline behaviour, the
//! exact delivery guarantees and the errors in detail.
//!
//! Where each thing happens (source files of `src/`; dependencies point one
//! way, from the handles down to the wire):
//!
//! * `client`: the [`Client`] handle: validates calls and sends commands to
//!   the connection task; `subscription`: [`Subscription`] and
//!   [`SubscribeOptions`].
//! * `driver`: the connection task, one select loop per connection
//!   (`driver::subscriptions`: subscribe requests and replies;
//!   `driver::disconnected`: reconnects and shutdown; `driver::refresh`:
//!   token refresh with `REFRESH`). It owns: `session` (one connection's
//!   WebSocket layer: socket, buffers, decoding with ping and close
//!   handling, keepalive clocks, and which publish frames are not written
//!   whole; shared with [`websocket`]),
//!   `pending` (requests awaiting replies), `registry` (one entry per
//!   pattern, routing deliveries to local subscriptions), `resume` (per-topic
//!   positions: `since`, de-duplication, gaps) and `offline` (publishes
//!   waiting for a connection).
//! * `command`: what handles share with the task (commands, shared state,
//!   frame encoding); `event`: [`SubscriptionEvent`] and the state a
//!   subscription shares with the task; `delivery`: [`Delivery`], the
//!   ordered items of a subscription.
//! * `config`, `state`, `error`, `message`, `url`: settings, connection
//!   state, errors, received messages, broker URLs; `presence`: presence
//!   lists and join/leave changes; `transport` and
//!   `handshake`: TCP, TLS and the WebSocket upgrade.
//! * [`websocket`]: a raw WebSocket connection on the same transport and
//!   `session`, for conformance testing (the Autobahn client-side suite).
//!
//! [tickwire]: https://github.com/tickwire/tickwire

#![warn(missing_docs)]

mod client;
mod command;
mod config;
mod delivery;
mod driver;
mod error;
mod event;
mod handshake;
mod message;
mod offline;
mod pending;
mod presence;
mod registry;
mod resume;
mod session;
mod state;
mod subscription;
mod transport;
mod url;
pub mod websocket;

pub use client::Client;
pub use config::{
    ClientBuilder, DEFAULT_COMMAND_CAPACITY, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_OUTGOING_MESSAGE_SIZE, DEFAULT_REQUEST_TIMEOUT, DEFAULT_SUBSCRIPTION_CAPACITY,
    DEFAULT_WRITE_BUFFER_LIMIT, Keepalive, OfflinePolicy, ReconnectPolicy, TlsRoots, TokenFuture,
};
pub use delivery::Delivery;
pub use error::{Error, HandshakeError, Result};
pub use event::{EVENT_CAPACITY, SubscriptionEvent, SubscriptionEvents};
pub use message::Message;
pub use presence::{Member, Presence, PresenceChange, PresenceStats};
pub use state::{ConnectionState, Disconnect};
pub use subscription::{SubscribeOptions, Subscription};

/// A position in one topic's stream: its epoch and a sequence number, as
/// used by [`SubscribeOptions::since`] and reported in
/// [`SubscriptionEvent::RecoveryIncomplete`].
pub use tickwire_protocol::message::Position;

/// Which join/leave events a subscription asks for
/// ([`SubscribeOptions::join_leave`]), from the protocol crate.
pub use tickwire_protocol::message::JoinLeave;

/// Error codes of broker `ERROR` replies and WebSocket close codes, from the
/// protocol crate.
pub use tickwire_protocol::{CloseCode, ErrorCode, TopicError};

/// The rustls version this crate uses, for [`ClientBuilder::tls_config`].
pub use rustls;
