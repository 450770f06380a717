//! A subscriber: prints every quote published on `stocks.*`.
//!
//! ```text
//! cargo run -p tickwire-client --example dashboard -- ws://127.0.0.1:8080
//! ```
//!
//! Run `stock_ticker` next to it to see quotes flow. The subscription
//! starts with the latest retained quote of every symbol (`last`) and
//! survives broker restarts: the client reconnects, resubscribes and resumes
//! on its own, and the dashboard only sees the connection state change and
//! the subscription's events (what could not be recovered, sequence gaps).

use futures::StreamExt;
use serde::Deserialize;
use tickwire_client::{Client, Error, SubscribeOptions, SubscriptionEvent};

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
    let mut quotes = client
        .subscribe_with("stocks.*", SubscribeOptions::new().last(true))
        .await?;
    let events = quotes.events();
    eprintln!("connected to {url}; watching stocks.* (Ctrl-C to stop)");

    let mut state = client.state();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            changed = state.changed() => {
                if changed.is_err() {
                    break;
                }
                eprintln!("connection: {}", *state.borrow_and_update());
            }
            Some(event) = events.recv() => match event {
                SubscriptionEvent::RecoveryIncomplete { missed } => {
                    for (topic, now) in missed {
                        eprintln!("({topic}: quotes before #{} may be missing)", now.seq);
                    }
                }
                SubscriptionEvent::Gap { topic, expected, got } => {
                    eprintln!("({topic}: quotes #{expected}..#{got} were not delivered)");
                }
                _ => {}
            },
            msg = quotes.next() => {
                let Some(msg) = msg else {
                    eprintln!("subscription ended: {:?}", quotes.error());
                    break;
                };
                if msg.skipped() > 0 {
                    eprintln!("(this dashboard fell behind: {} messages dropped)", msg.skipped());
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
