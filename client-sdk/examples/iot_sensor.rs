//! A sensor: publishes a reading every second on
//! `sensors.<region>.<sensor id>` and waits for the broker's acknowledgement
//! (`Client::publish_acked`), so it knows which readings the broker took.
//!
//! ```text
//! cargo run -p tickwire-client --example iot_sensor -- ws://127.0.0.1:8080 eu-west t-1042
//! ```
//!
//! Readings that could not be confirmed (broker unreachable for too long,
//! connection lost before the acknowledgement) are kept and retried with the
//! next tick, oldest first. A reading whose acknowledgement was lost with the
//! connection may have been accepted already, so it can arrive twice.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tickwire_client::{Client, Error, Keepalive, OfflinePolicy, ReconnectPolicy};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reading {
    sensor: String,
    celsius: f32,
    humidity: f32,
    /// Milliseconds since the Unix epoch, sensor clock.
    taken_ms: u64,
}

/// Readings kept while the broker cannot confirm them.
const MAX_BACKLOG: usize = 600;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "ws://127.0.0.1:8080".into());
    let region = args.next().unwrap_or_else(|| "eu-west".into());
    let sensor = args.next().unwrap_or_else(|| "t-1042".into());
    let topic = format!("sensors.{region}.{sensor}");

    let client = Client::builder(&url)
        // Sensors start before the network is up: keep trying.
        .retry_initial_connect(true)
        .reconnect(ReconnectPolicy::default().with_max(Duration::from_secs(60)))
        .keepalive(Keepalive::new(
            Duration::from_secs(10),
            Duration::from_secs(30),
        ))
        .request_timeout(Duration::from_secs(5))
        // This program keeps its own backlog, so fail fast while offline.
        .offline_policy(OfflinePolicy::Fail)
        .connect()
        .await?;
    eprintln!("connected to {url}; publishing on {topic} (Ctrl-C to stop)");

    let mut backlog: VecDeque<Reading> = VecDeque::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = ticker.tick() => {}
        }
        if backlog.len() == MAX_BACKLOG {
            backlog.pop_front();
        }
        backlog.push_back(Reading {
            sensor: sensor.clone(),
            celsius: 21.0 + rand::random_range(-0.5..0.5),
            humidity: 40.0 + rand::random_range(-2.0..2.0),
            taken_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        });
        while let Some(reading) = backlog.front() {
            match client.publish_acked(&topic, reading).await {
                Ok(seq) => {
                    println!("{topic} #{seq}: {:.2} °C", reading.celsius);
                    backlog.pop_front();
                }
                // Retryable: keep the reading for the next tick.
                Err(e @ (Error::NotConnected | Error::ConnectionLost | Error::Timeout { .. })) => {
                    eprintln!("not confirmed ({e}); {} readings waiting", backlog.len());
                    break;
                }
                // The broker refused this reading (e.g. too large): skip it.
                Err(e @ Error::Broker { .. }) => {
                    eprintln!("broker refused a reading: {e}");
                    backlog.pop_front();
                }
                Err(e) => return Err(e),
            }
        }
    }
    client.close().await
}
