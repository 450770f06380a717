//! The SSE and long-poll clients against a scripted loopback server that
//! answers as the contract in docs/protocol.md describes: the requests they
//! send, the answers they parse, and what they count.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::super::raw_client::Target;
use super::tally::{RunShared, Tally};
use super::{Setup, poll, sse};

/// Longest wait for an expected event.
const WAIT: Duration = Duration::from_secs(10);

/// A listener on 127.0.0.1:0 and the target pointing at it.
async fn server() -> (TcpListener, Target) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let target = Target::resolve(&format!("ws://{addr}/ws")).await.unwrap();
    (listener, target)
}

fn setup(target: &Target) -> Setup<'_> {
    Setup {
        target,
        source: None,
        token: Some("T"),
        topic: "b.t",
        timeout: Duration::from_secs(10),
    }
}

/// Reads one request head.
async fn read_request(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    while !buf.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "request ended");
        buf.push(byte[0]);
    }
    String::from_utf8(buf).unwrap()
}

fn delivery(seq: u64, t: u64) -> String {
    format!(
        r#"{{"topic":"b.t","epoch":"9961694294009780550","seq":{seq},"time":1700000000000000,"data":{{"t":{t},"p":"abc"}}}}"#
    )
}

/// One HTTP chunk holding `text`.
fn chunk(text: &str) -> String {
    format!("{:x}\r\n{text}\r\n", text.len())
}

/// Waits until the subscriber counted `n` deliveries (failing after 10 s).
async fn wait_received(shared: &RunShared, n: u64) {
    let counted = async {
        while shared.received.load(Relaxed) < n {
            tokio::task::yield_now().await;
        }
    };
    let waited = tokio::time::timeout(WAIT, counted).await;
    shared.finish.cancel();
    assert!(
        waited.is_ok(),
        "{} deliveries counted, not {n}",
        shared.received.load(Relaxed)
    );
}

#[tokio::test]
async fn sse_subscriber_reads_a_chunked_event_stream() {
    let (listener, target) = server().await;
    let broker = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let request = read_request(&mut stream).await;
        stream
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
            )
            .await
            .unwrap();
        let mut body = chunk("retry: 1000\n\n");
        body += &chunk("event: subscribed\ndata: {\"sub\":\"b.t\"}\n\n");
        stream.write_all(body.as_bytes()).await.unwrap();
        // Deliveries 1 and 2, then 4 (3 missing), split across chunks.
        let events: String = [(1, 10), (2, 20), (4, 40)]
            .iter()
            .map(|&(seq, t)| format!("id: c{seq}\nevent: message\ndata: {}\n\n", delivery(seq, t)))
            .collect();
        let (a, b) = events.split_at(events.len() / 2);
        let body = chunk(": keepalive\n\n") + &chunk(a) + &chunk(b);
        stream.write_all(body.as_bytes()).await.unwrap();
        (request, stream)
    });
    let target_ref = &target;
    let opened = sse::open(&setup(target_ref)).await.unwrap();
    let shared = RunShared::default();
    let mut tally = Tally::default();
    let (stream, ()) = tokio::join!(sse::receive(opened, &shared, &mut tally), async {
        wait_received(&shared, 3).await;
    });
    tally.count_socket(&stream);
    let (request, _server_side) = broker.await.unwrap();
    assert!(
        request.starts_with("GET /v1/sse?sub=b.t HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(request.contains("Authorization: Bearer T\r\n"), "{request}");
    assert_eq!((tally.received, tally.seq_gaps), (3, 1));
    assert_eq!(tally.histogram.len(), 3);
    assert!(tally.closed.is_none());
    assert_eq!(tally.bytes_out, request.len() as u64);
    assert!(tally.bytes_in > 3 * delivery(1, 1).len() as u64);
}

#[tokio::test]
async fn sse_close_event_and_refusal() {
    let (listener, target) = server().await;
    let broker = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        read_request(&mut stream).await;
        let body = "event: subscribed\ndata: {}\n\nevent: close\ndata: {\"code\":4001,\"reason\":\"slow consumer\"}\n\n";
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body.as_bytes()).await.unwrap();
        let (mut stream, _) = listener.accept().await.unwrap();
        read_request(&mut stream).await;
        let body = r#"{"error":{"code":"forbidden","message":"no"}}"#;
        let answer = format!(
            "HTTP/1.1 403 Forbidden\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(answer.as_bytes()).await.unwrap();
    });
    let opened = sse::open(&setup(&target)).await.unwrap();
    let shared = RunShared::default();
    let mut tally = Tally::default();
    tokio::time::timeout(WAIT, sse::receive(opened, &shared, &mut tally))
        .await
        .expect("the close event ends the subscriber");
    assert_eq!(tally.closed.as_deref(), Some("close 4001 slow consumer"));
    let refused = sse::open(&setup(&target)).await.unwrap_err().to_string();
    assert!(
        refused.contains("HTTP 403") && refused.contains("forbidden"),
        "{refused}"
    );
    broker.await.unwrap();
}

#[tokio::test]
async fn poll_subscriber_repolls_with_session_and_cursor_on_one_connection() {
    let (listener, target) = server().await;
    let broker = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let answers = [
            r#"{"session":"s1","cursor":"gA","messages":[],"events":[{"type":"subscribed","sub":"b.t"}]}"#.to_owned(),
            format!(
                r#"{{"session":"s1","cursor":"c+2/","messages":[{},{}],"events":[]}}"#,
                delivery(1, 5),
                delivery(2, 6)
            ),
            format!(
                r#"{{"session":"s1","cursor":"c3","messages":[{}],"events":[]}}"#,
                delivery(3, 7)
            ),
        ];
        let mut requests = Vec::new();
        for (i, answer) in answers.iter().enumerate() {
            requests.push(read_request(&mut stream).await);
            // The second answer is chunked, the others have a length.
            let http = if i == 1 {
                format!(
                    "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{}0\r\n\r\n",
                    chunk(answer)
                )
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}",
                    answer.len()
                )
            };
            stream.write_all(http.as_bytes()).await.unwrap();
        }
        // The fourth poll is held: the run ends first.
        requests.push(read_request(&mut stream).await);
        (requests, stream)
    });
    let poller = poll::open(&setup(&target), 25).await.unwrap();
    let shared = RunShared::default();
    let mut tally = Tally::default();
    let (stream, ()) = tokio::join!(poll::receive(poller, &shared, &mut tally), async {
        wait_received(&shared, 3).await;
    });
    tally.count_socket(&stream);
    let (requests, _server_side) = broker.await.unwrap();
    assert!(
        requests[0].starts_with("GET /v1/poll?sub=b.t&timeout=25 HTTP/1.1\r\n"),
        "{}",
        requests[0]
    );
    assert!(
        requests[1]
            .starts_with("GET /v1/poll?sub=b.t&timeout=25&session=s1&cursor=gA HTTP/1.1\r\n"),
        "{}",
        requests[1]
    );
    assert!(
        requests[2]
            .starts_with("GET /v1/poll?sub=b.t&timeout=25&session=s1&cursor=c%2B2%2F HTTP/1.1\r\n"),
        "{}",
        requests[2]
    );
    assert_eq!(
        (tally.received, tally.seq_gaps, tally.seq_regressions),
        (3, 0, 0)
    );
    assert!(tally.closed.is_none());
    let sent: usize = requests.iter().map(String::len).sum();
    assert_eq!(tally.bytes_out, sent as u64);
}

#[tokio::test]
async fn poll_close_event_ends_the_subscriber() {
    let (listener, target) = server().await;
    let broker = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        for answer in [
            r#"{"session":"s","cursor":"gA","events":[{"type":"subscribed","sub":"b.t"}]}"#,
            r#"{"session":"s","cursor":"gA","messages":[],"events":[{"type":"close","code":4001,"reason":"slow consumer"}]}"#,
        ] {
            read_request(&mut stream).await;
            let http = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{answer}",
                answer.len()
            );
            stream.write_all(http.as_bytes()).await.unwrap();
        }
        stream
    });
    let poller = poll::open(&setup(&target), 0).await.unwrap();
    let shared = RunShared::default();
    let mut tally = Tally::default();
    tokio::time::timeout(WAIT, poll::receive(poller, &shared, &mut tally))
        .await
        .expect("the close event ends the subscriber");
    assert_eq!(tally.closed.as_deref(), Some("close 4001 slow consumer"));
    drop(broker.await.unwrap());
}
