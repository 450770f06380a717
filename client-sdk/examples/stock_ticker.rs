//! A producer: publishes typed stock quotes on `stocks.<SYMBOL>`.
//!
//! ```text
//! tickwire serve &                                   # a broker on :8080
//! cargo run -p tickwire-client --example stock_ticker -- ws://127.0.0.1:8080
//! ```
//!
//! Quotes are fire-and-forget publishes (`Client::publish`): while the
//! client reconnects they are buffered (the default offline policy) and sent
//! once the connection is back. Stop with Ctrl-C.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tickwire_client::{Client, ConnectionState, Error};

/// One quote, serialized as MessagePack with field names.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Quote {
    symbol: String,
    bid: f64,
    ask: f64,
    /// Milliseconds since the Unix epoch, publisher clock.
    ts_ms: u64,
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:8080".into());
    let client = Client::connect(&url).await?;
    eprintln!("connected to {url}; publishing quotes (Ctrl-C to stop)");

    // Report connection changes without blocking the publishing loop.
    let mut state = client.state();
    tokio::spawn(async move {
        while state.changed().await.is_ok() {
            let now = state.borrow_and_update().clone();
            eprintln!("connection: {now}");
            if matches!(now, ConnectionState::Closed { .. }) {
                break;
            }
        }
    });

    let mut prices = [
        ("AAPL", 189.0),
        ("MSFT", 420.0),
        ("GOOG", 170.0),
        ("AMZN", 185.0),
    ];
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut published = 0u64;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => {}
        }
        for (symbol, price) in &mut prices {
            // A small random walk.
            *price *= 1.0 + rand::random_range(-0.001..0.001);
            let quote = Quote {
                symbol: symbol.to_string(),
                bid: *price - 0.01,
                ask: *price + 0.01,
                ts_ms: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
            };
            match client.publish(&format!("stocks.{symbol}"), &quote).await {
                Ok(()) => published += 1,
                // Disconnected for long enough that the offline buffer is
                // full: drop this tick's quote, newer ones will follow.
                Err(Error::OfflineBufferFull { .. }) => {}
                Err(e) => return Err(e),
            }
        }
    }
    eprintln!("published {published} quotes; closing");
    client.close().await
}
