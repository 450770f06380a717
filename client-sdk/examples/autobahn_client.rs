//! The Autobahn client-side suite's echo client, on the SDK's own WebSocket
//! layer ([`tickwire_client::websocket`]).
//!
//! Start the fuzzing server (`kosoku -m fuzzingserver 127.0.0.1:9001 -o
//! reports`), then:
//!
//! ```text
//! cargo run -p tickwire-client --example autobahn_client -- ws://127.0.0.1:9001
//! ```
//!
//! It asks the server how many cases there are (`/getCaseCount`), runs each
//! one (`/runCase?case=N&agent=AGENT`) by echoing every message back with
//! its opcode until the server closes, then asks the server to write its
//! reports (`/updateReports?agent=AGENT`). Whether a case passed is the
//! server's verdict, in its report; this program fails only when a case
//! could not be run to its end (no connection, a deadline passed).
//! `scripts/autobahn_client.py` runs the whole thing and checks the report.

use std::process::ExitCode;
use std::time::Duration;

use tickwire_client::websocket::{Data, WebSocket};
use tickwire_client::{Client, ClientBuilder, Error};

/// The agent name the reports are filed under.
const AGENT: &str = "tickwire-client";
/// The largest message of the suite is 16 MiB (cases 9.1.6 and 9.2.6).
const MAX_MESSAGE: usize = 16 * 1024 * 1024 + 1024;
/// Deadline of each read or write step; the suite's slowest cases pause for
/// a second or two between frames.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

fn builder(url: String) -> ClientBuilder {
    Client::builder(url)
        .max_message_size(MAX_MESSAGE)
        .max_outgoing_message_size(MAX_MESSAGE)
        .request_timeout(STEP_TIMEOUT)
}

/// Echoes every message back until the server closes.
async fn echo(url: String) -> Result<usize, Error> {
    let mut ws = WebSocket::connect(builder(url)).await?;
    let mut echoed = 0;
    while let Some(message) = ws.recv().await? {
        ws.send(&message).await?;
        echoed += 1;
    }
    Ok(echoed)
}

/// The number of cases the server offers: its first text message.
async fn case_count(base: &str) -> Result<usize, String> {
    let mut ws = WebSocket::connect(builder(format!("{base}/getCaseCount")))
        .await
        .map_err(|e| e.to_string())?;
    let first = ws.recv().await.map_err(|e| e.to_string())?;
    let count = first
        .as_ref()
        .and_then(Data::as_text)
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| format!("expected the case count as a text message, got {first:?}"))?;
    // Let the server close.
    while ws.recv().await.map_err(|e| e.to_string())?.is_some() {}
    Ok(count)
}

async fn run(base: &str) -> Result<(), String> {
    let count = case_count(base).await?;
    eprintln!("{count} cases");
    let mut broken = 0;
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={AGENT}");
        match echo(url).await {
            Ok(echoed) => eprintln!("case {case}/{count}: echoed {echoed} messages"),
            // A case that makes the client fail the connection ends here.
            Err(Error::Disconnected(why)) => eprintln!("case {case}/{count}: {why}"),
            // Not connecting, or a deadline passing, is this side's fault.
            Err(e) => {
                eprintln!("case {case}/{count}: ERROR {e}");
                broken += 1;
            }
        }
    }
    // The server may drop this connection without a close frame.
    match echo(format!("{base}/updateReports?agent={AGENT}")).await {
        Ok(_) | Err(Error::Disconnected(_)) => {}
        Err(e) => return Err(format!("updating the reports: {e}")),
    }
    match broken {
        0 => Ok(()),
        n => Err(format!("{n} cases could not be run to their end")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let Some(base) = std::env::args().nth(1) else {
        eprintln!("usage: autobahn_client ws://HOST:PORT");
        return ExitCode::from(2);
    };
    match run(base.trim_end_matches('/')).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autobahn_client: {e}");
            ExitCode::FAILURE
        }
    }
}
