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
//! The client needs a Tokio runtime. docs/client.md in the repository
//! describes every option, the reconnect and offline behaviour and the
//! errors in detail.
//!
//! [tickwire]: https://github.com/tickwire/tickwire

#![warn(missing_docs)]

mod client;
mod config;
mod driver;
mod error;
mod handshake;
mod message;
mod state;
mod subscription;
mod transport;
mod url;

pub use client::Client;
pub use config::{
    ClientBuilder, DEFAULT_COMMAND_CAPACITY, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_REQUEST_TIMEOUT, DEFAULT_SUBSCRIPTION_CAPACITY, DEFAULT_WRITE_BUFFER_LIMIT, Keepalive,
    OfflinePolicy, ReconnectPolicy, TlsRoots,
};
pub use error::{Error, HandshakeError, Result};
pub use message::Message;
pub use state::{ConnectionState, Disconnect};
pub use subscription::{SubscribeOptions, Subscription};

/// Error codes of broker `ERROR` replies and WebSocket close codes, from the
/// protocol crate.
pub use tickwire_protocol::{CloseCode, ErrorCode, TopicError};

/// The rustls version this crate uses, for [`ClientBuilder::tls_config`].
pub use rustls;
