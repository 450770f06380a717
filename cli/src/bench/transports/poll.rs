//! The long-poll subscriber: a loop of `GET /v1/poll` on one keep-alive
//! connection, each request naming the previous answer's `session` and
//! `cursor` and sent as soon as the previous answer is read (as a browser
//! client does), each answer's deliveries read from its JSON.

use std::net::SocketAddr;
use std::time::Duration;

use tickwire_protocol::handshake::ResponseHead;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::super::raw_client::{ConnectError, connect_tcp};
use super::json::PollAnswer;
use super::payload::now_ns;
use super::tally::{RunShared, Tally, report_progress};
use super::{Setup, refused, with_deadline};
use crate::http1::{self as http, Framing};

/// Largest poll answer body accepted.
const MAX_BODY: usize = 64 << 20;

/// How much longer than the poll `timeout` an answer may take before the
/// request counts as failed.
const ANSWER_GRACE: Duration = Duration::from_secs(10);

/// One poll session's connection and position.
#[derive(Debug)]
pub struct Poller {
    stream: TcpStream,
    addr: SocketAddr,
    host: String,
    topic: String,
    token: Option<String>,
    /// The `timeout` parameter, seconds.
    timeout: u32,
    session: Option<String>,
    cursor: Option<String>,
    /// Bytes read after the last answer (none, unless the broker pipelines).
    raw: Vec<u8>,
}

impl Poller {
    /// The next request: `sub`, `timeout`, and after the first answer its
    /// `session` and `cursor`.
    fn request(&self) -> Vec<u8> {
        let timeout = self.timeout.to_string();
        let mut query = vec![("sub", self.topic.as_str()), ("timeout", timeout.as_str())];
        if let Some(session) = &self.session {
            query.push(("session", session));
        }
        if let Some(cursor) = &self.cursor {
            query.push(("cursor", cursor));
        }
        let path = http::with_query("/v1/poll", &query);
        http::get_request(&self.host, &path, "application/json", self.token.as_deref())
    }

    /// Sends the next request and reads its answer.
    async fn exchange(&mut self) -> Result<PollAnswer, String> {
        let request = self.request();
        self.stream
            .write_all(&request)
            .await
            .map_err(|e| format!("write to {} failed: {e}", self.addr))?;
        let head = loop {
            if let Some(head) = http::parse_head(&self.raw)? {
                break head;
            }
            self.read_more().await?;
        };
        self.raw.drain(..head.len());
        let body = self.read_body(&head).await?;
        if head.status != 200 {
            return Err(refused("poll", &head, &body).to_string());
        }
        let answer: PollAnswer = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "bad poll answer: {e}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )
        })?;
        self.session = Some(answer.session.clone());
        self.cursor = Some(answer.cursor.clone());
        Ok(answer)
    }

    /// Reads the body `head` announces (a length or chunks).
    async fn read_body(&mut self, head: &ResponseHead) -> Result<Vec<u8>, String> {
        match Framing::of(head) {
            Framing::Length(n) => {
                if n > MAX_BODY {
                    return Err(format!("poll answer of {n} bytes"));
                }
                while self.raw.len() < n {
                    self.read_more().await?;
                }
                Ok(self.raw.drain(..n).collect())
            }
            Framing::Chunked(mut chunked) => {
                let mut body = Vec::new();
                loop {
                    let used = chunked.decode(&self.raw, &mut body)?;
                    self.raw.drain(..used);
                    if chunked.done() {
                        return Ok(body);
                    }
                    if body.len() > MAX_BODY {
                        return Err(format!("poll answer over {MAX_BODY} bytes"));
                    }
                    self.read_more().await?;
                }
            }
            Framing::UntilClose => Err(
                "poll answer without Content-Length or chunks on a keep-alive connection".into(),
            ),
        }
    }

    async fn read_more(&mut self) -> Result<(), String> {
        self.raw.reserve(16 * 1024);
        match self.stream.read_buf(&mut self.raw).await {
            Ok(0) => Err("EOF".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read failed: {e}")),
        }
    }
}

/// Connects and sends the first poll (no session): its answer reports the
/// subscription.
pub async fn open(setup: &Setup<'_>, timeout: u32) -> Result<Poller, ConnectError> {
    with_deadline(setup, async {
        let addr = setup.target.addr;
        let stream = connect_tcp(addr, setup.source).await?;
        let mut poller = Poller {
            stream,
            addr,
            host: setup.target.host.clone(),
            topic: setup.topic.to_owned(),
            token: setup.token.map(str::to_owned),
            timeout,
            session: None,
            cursor: None,
            raw: Vec::new(),
        };
        // Until the session reports the subscription (the first answer
        // should), poll again.
        loop {
            let answer = poller.exchange().await.map_err(ConnectError::Subscribe)?;
            if let Some(e) = answer
                .events
                .iter()
                .find(|e| matches!(e.kind.as_deref(), Some("error" | "close")))
            {
                return Err(ConnectError::Subscribe(format!(
                    "poll event: {}",
                    e.describe()
                )));
            }
            if answer
                .events
                .iter()
                .any(|e| e.kind.as_deref() == Some("subscribed"))
            {
                return Ok(poller);
            }
        }
    })
    .await
}

/// Polls until the run ends or the session closes; returns the socket.
pub async fn receive(mut poller: Poller, shared: &RunShared, tally: &mut Tally) -> TcpStream {
    let limit = Duration::from_secs(u64::from(poller.timeout)) + ANSWER_GRACE;
    let mut reported = 0;
    loop {
        let answer = tokio::select! {
            biased;
            _ = shared.finish.cancelled() => return poller.stream,
            answer = tokio::time::timeout(limit, poller.exchange()) => answer,
        };
        let answer = match answer {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => {
                tally.close(e);
                return poller.stream;
            }
            Err(_) => {
                tally.close(format!("no poll answer within {limit:?}"));
                return poller.stream;
            }
        };
        let now = now_ns();
        for d in &answer.messages {
            tally.record(d.seq, d.sent_ns(), now);
        }
        report_progress(shared, tally, &mut reported);
        for event in &answer.events {
            match event.kind.as_deref() {
                Some("close") => {
                    tally.close(format!("close {}", event.describe()));
                    return poller.stream;
                }
                Some("error") => tally.errors += 1,
                _ => {}
            }
        }
    }
}
