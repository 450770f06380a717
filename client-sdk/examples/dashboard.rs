//! A subscriber: prints every quote published on `stocks.*`.
//!
//! ```text
//! cargo run -p tickwire-client --example dashboard -- ws://127.0.0.1:8080
//! ```
//!
//! Run `stock_ticker` next to it to see quotes flow. The subscription
//! survives broker restarts: the client reconnects and resubscribes on its
//! own, and the dashboard only sees the connection state change.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::Deserialize;
use tickwire_client::{Client, Error};

/// The fields of `stock_ticker`'s quote that the dashboard uses; unknown
/// fields are ignored, so the producer can add more.
#[derive(Debug, Deserialize)]
struct Quote {
    symbol: String,
    bid: f64,
    ask: f64,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8080".into());
    let client = Client::connect(&url).await?;
    let mut quotes = client.subscribe("stocks.*").await?;
    eprintln!("connected to {url}; watching stocks.* (Ctrl-C to stop)");

    let mut state = client.state();
    let mut last_seq: BTreeMap<String, u64> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            changed = state.changed() => {
                if changed.is_err() {
                    break;
                }
                eprintln!("connection: {}", *state.borrow_and_update());
            }
            msg = quotes.next() => {
                let Some(msg) = msg else {
                    eprintln!("subscription ended: {:?}", quotes.error());
                    break;
                };
                if msg.skipped() > 0 {
                    eprintln!("(this dashboard fell behind: {} messages dropped)", msg.skipped());
                }
                // Sequence numbers are per topic: a jump means missed messages
                // (for example during a reconnect), a drop means the broker
                // restarted or forgot the topic.
                let previous = last_seq.insert(msg.topic().to_owned(), msg.seq());
                if let Some(prev) = previous
                    && msg.seq() != prev + 1
                {
                    eprintln!("({}: seq {prev} -> {})", msg.topic(), msg.seq());
                }
                match msg.decode::<Quote>() {
                    Ok(q) => println!(
                        "{:<6} bid {:>10.2}  ask {:>10.2}  #{}",
                        q.symbol,
                        q.bid,
                        q.ask,
                        msg.seq()
                    ),
                    Err(e) => eprintln!("{}: undecodable quote: {e}", msg.topic()),
                }
            }
        }
    }
    client.close().await
}
