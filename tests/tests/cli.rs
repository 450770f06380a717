//! `tickwire pub` and `tickwire sub` through the real binary against an
//! in-process broker: round trips, formats, retained values, resume, exit
//! codes.
//!
//! Every child process is killed when its handle is dropped and every wait
//! is bounded by [`WAIT`]. A subscriber is known to be ready once the broker
//! counts its subscription, never after a sleep.

use std::collections::BTreeSet;
use std::process::{Output, Stdio};

use tickwire_broker::config::TopicPolicy;
use tickwire_broker::outbound::SlowConsumerPolicy;
use tickwire_e2e::{RawClient, TestBroker, WAIT, signal, tickwire_binary};
use tickwire_protocol::topic::Pattern;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// `tickwire ARGS`, with piped output, no standard input, and no
/// `TICKWIRE_*` settings inherited from the environment.
fn tickwire(args: &[&str]) -> Command {
    let mut command = Command::new(tickwire_binary());
    command
        .args(args)
        .env_remove("TICKWIRE_URL")
        .env_remove("TICKWIRE_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

fn spawn(args: &[&str]) -> Child {
    tickwire(args).spawn().expect("start tickwire")
}

/// Waits for a child to exit (killing it after [`WAIT`]) and collects its
/// output.
async fn finish(child: Child) -> Output {
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("tickwire exits in time")
        .expect("collect tickwire output")
}

/// Runs `tickwire ARGS` to completion.
async fn run(args: &[&str]) -> Output {
    finish(spawn(args)).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the exit code, showing everything the process printed if it is
/// wrong.
#[track_caller]
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

/// Parses one JSON object per line.
fn json_lines(output: &Output) -> Vec<serde_json::Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

#[tokio::test]
async fn pub_and_sub_round_trip_through_the_binary() {
    let broker = TestBroker::start_default().await;
    let url = broker.ws_url();
    let sub = spawn(&[
        "sub", "--url", &url, "cli.*", "--count", "3", "--format", "json",
    ]);
    broker.wait_metric("tickwire_subscriptions", 1.0).await;

    let published = run(&[
        "pub", "cli.a", "hello", "--count", "3", "--ack", "--url", &url,
    ])
    .await;
    assert_exit(&published, 0);
    assert_eq!(stdout(&published), "1\n2\n3\n");
    assert!(
        stderr(&published).contains("published 3 messages to cli.a in"),
        "{}",
        stderr(&published)
    );

    let received = finish(sub).await;
    assert_exit(&received, 0);
    let lines = json_lines(&received);
    assert_eq!(lines.len(), 3, "{}", stdout(&received));
    for (line, seq) in lines.iter().zip(1u64..) {
        assert_eq!(line["topic"], "cli.a");
        assert_eq!(line["seq"], seq);
        assert_eq!(line["payload"], "hello");
        let time = line["time"].as_str().expect("time is a string");
        assert!(time.ends_with('Z') && time.contains('T'), "{time}");
    }
    assert!(stderr(&received).contains("subscribed to cli.*"));
    assert!(stderr(&received).contains("received 3 messages"));
}

#[tokio::test]
async fn pub_json_is_printed_back_by_sub_msgpack_json() {
    let broker = TestBroker::start_default().await;
    let url = broker.ws_url();
    let sub = spawn(&[
        "sub",
        "--url",
        &url,
        "json.t",
        "--count",
        "2",
        "--format",
        "msgpack-json",
    ]);
    broker.wait_metric("tickwire_subscriptions", 1.0).await;

    let document = r#"{"symbol":"AAPL","price":189.5,"tags":["a",null,true],"n":-3}"#;
    let published = run(&["pub", "json.t", document, "--json", "--url", &url]).await;
    assert_exit(&published, 0);
    // Not MessagePack: reported on standard error, the stream goes on.
    let published = run(&["pub", "json.t", "plain text", "--url", &url]).await;
    assert_exit(&published, 0);

    let received = finish(sub).await;
    assert_exit(&received, 0);
    let lines = json_lines(&received);
    let expected: serde_json::Value = serde_json::from_str(document).expect("valid JSON");
    assert_eq!(lines, vec![expected]);
    assert!(
        stderr(&received).contains("tickwire: json.t #2: the payload is not"),
        "{}",
        stderr(&received)
    );
}

#[tokio::test]
async fn sub_shows_a_pub_json_payload_as_json_by_default() {
    let broker = TestBroker::start_default().await;
    let url = broker.ws_url();
    let text = spawn(&["sub", "--url", &url, "stocks.*", "--count", "2"]);
    let json = spawn(&[
        "sub", "--url", &url, "stocks.*", "--count", "2", "--format", "json",
    ]);
    broker.wait_metric("tickwire_subscriptions", 2.0).await;

    let published = run(&[
        "pub",
        "stocks.AAPL",
        r#"{"price":189.5}"#,
        "--json",
        "--url",
        &url,
    ])
    .await;
    assert_exit(&published, 0);
    let published = run(&["pub", "stocks.AAPL", "plain", "--url", &url]).await;
    assert_exit(&published, 0);

    let received = finish(text).await;
    assert_exit(&received, 0);
    let lines: Vec<String> = stdout(&received).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{}", stdout(&received));
    assert!(
        lines[0].starts_with("[stocks.AAPL #1 ") && lines[0].ends_with("] {\"price\":189.5}"),
        "{}",
        lines[0]
    );
    assert!(lines[1].ends_with("] plain"), "{}", lines[1]);

    let received = finish(json).await;
    assert_exit(&received, 0);
    let lines = json_lines(&received);
    assert_eq!(lines.len(), 2, "{}", stdout(&received));
    assert_eq!(lines[0]["payload"], serde_json::json!({"price": 189.5}));
    assert_eq!(lines[0]["payload_encoding"], "msgpack");
    assert_eq!(lines[1]["payload"], "plain");
    assert_eq!(lines[1]["payload_encoding"], "utf8");
    let epoch = lines[0]["epoch"].as_u64().expect("epoch is a number");
    assert!(epoch > 0);
    assert_eq!(lines[1]["epoch"].as_u64(), Some(epoch));
    assert_eq!(
        (lines[0]["seq"].as_u64(), lines[1]["seq"].as_u64()),
        (Some(1), Some(2))
    );
}

#[tokio::test]
async fn sub_payload_decodings_on_request() {
    let broker = TestBroker::start_default().await;
    let url = broker.ws_url();
    let sub = spawn(&[
        "sub",
        "--url",
        &url,
        "p.t",
        "--count",
        "1",
        "--payload",
        "hex",
    ]);
    broker.wait_metric("tickwire_subscriptions", 1.0).await;
    let published = run(&["pub", "p.t", "5", "--json", "--url", &url]).await;
    assert_exit(&published, 0);
    let received = finish(sub).await;
    assert_exit(&received, 0);
    assert!(
        stdout(&received).ends_with("] hex:05\n"),
        "{}",
        stdout(&received)
    );

    // --payload does not apply to the formats that print only the payload.
    let refused = run(&[
        "sub",
        "--url",
        &url,
        "p.t",
        "--format",
        "raw",
        "--payload",
        "utf8",
    ])
    .await;
    assert_exit(&refused, 2);
    assert!(
        stderr(&refused).contains("--payload"),
        "{}",
        stderr(&refused)
    );
}

#[tokio::test]
async fn pub_reads_standard_input_line_by_line() {
    let broker = TestBroker::start_default().await;
    let url = broker.ws_url();
    let sub = spawn(&[
        "sub", "--url", &url, "lines.x", "--count", "3", "--format", "raw",
    ]);
    broker.wait_metric("tickwire_subscriptions", 1.0).await;

    let mut publisher = tickwire(&["pub", "lines.x", "--ack", "--url", &url])
        .stdin(Stdio::piped())
        .spawn()
        .expect("start tickwire pub");
    let mut stdin = publisher.stdin.take().expect("piped stdin");
    stdin
        .write_all(b"first\nsecond\r\nthird")
        .await
        .expect("write stdin");
    drop(stdin);
    let published = finish(publisher).await;
    assert_exit(&published, 0);
    assert_eq!(stdout(&published), "1\n2\n3\n");

    let received = finish(sub).await;
    assert_exit(&received, 0);
    assert_eq!(stdout(&received), "first\nsecond\nthird\n");
}

#[tokio::test]
async fn sub_last_prints_the_values_retained_by_pub_retain() {
    let broker = TestBroker::start_default().await;
    let url = broker.ws_url();
    for (topic, price) in [("stocks.AAPL", "189.5"), ("stocks.MSFT", "411.0")] {
        let published = run(&["pub", topic, price, "--retain", "--url", &url]).await;
        assert_exit(&published, 0);
    }
    // A later value that is not retained does not replace the snapshot.
    let published = run(&["pub", "stocks.AAPL", "190.0", "--url", &url]).await;
    assert_exit(&published, 0);

    let received = run(&[
        "sub", "--url", &url, "stocks.*", "--last", "--count", "2", "--wait", "10s", "--format",
        "json",
    ])
    .await;
    assert_exit(&received, 0);
    let snapshot: BTreeSet<(String, u64, String)> = json_lines(&received)
        .iter()
        .map(|line| {
            (
                line["topic"].as_str().expect("topic").to_owned(),
                line["seq"].as_u64().expect("seq"),
                line["payload"].as_str().expect("payload").to_owned(),
            )
        })
        .collect();
    let expected = BTreeSet::from([
        ("stocks.AAPL".to_owned(), 1, "189.5".to_owned()),
        ("stocks.MSFT".to_owned(), 1, "411.0".to_owned()),
    ]);
    assert_eq!(snapshot, expected);
}

#[tokio::test]
async fn sub_since_resumes_after_the_given_position() {
    let broker = TestBroker::start(|c| {
        c.topic_policies = vec![TopicPolicy {
            pattern: Pattern::new("hist.>").expect("valid pattern"),
            history_messages: 100,
            history_bytes: 1 << 20,
            history_age: None,
            retain: false,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            client_retain: None,
            presence: false,
        }]
    })
    .await;
    let url = broker.ws_url();
    let published = run(&["pub", "hist.a", "m", "--count", "5", "--ack", "--url", &url]).await;
    assert_exit(&published, 0);
    let epoch = RawClient::connect(broker.addr)
        .await
        .subscribe("hist.a")
        .await
        .epoch
        .expect("an exact subscription reports the epoch");

    let since = format!("hist.a={epoch}:2");
    let received = run(&[
        "sub", "--url", &url, "hist.a", "--since", &since, "--count", "3", "--wait", "10s",
        "--format", "json",
    ])
    .await;
    assert_exit(&received, 0);
    let seqs: Vec<u64> = json_lines(&received)
        .iter()
        .map(|line| line["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    let log = stderr(&received);
    assert!(
        log.contains(&format!("subscribed to hist.a (epoch {epoch}, seq 5)")),
        "{log}"
    );
    assert!(log.contains("resumed without a gap"), "{log}");
    assert!(
        log.contains(&format!("resume with --since hist.a={epoch}:5")),
        "{log}"
    );
}

#[tokio::test]
async fn refused_requests_exit_1_with_one_clear_line() {
    let broker = TestBroker::start(|c| c.max_topics = 1).await;
    let url = broker.ws_url();

    let invalid = run(&["pub", "bad..topic", "x", "--url", &url]).await;
    assert_exit(&invalid, 1);
    assert_eq!(
        stderr(&invalid),
        "tickwire: invalid topic \"bad..topic\": topic has an empty token (leading, trailing or double '.')\n"
    );
    let invalid = run(&["sub", "bad.>.pattern", "--url", &url]).await;
    assert_exit(&invalid, 1);
    assert!(stderr(&invalid).starts_with("tickwire: invalid pattern"));

    // An ERROR reply from the broker: the topic table is full.
    assert_exit(
        &run(&["pub", "one.topic", "x", "--ack", "--url", &url]).await,
        0,
    );
    let refused = run(&["pub", "two.topic", "x", "--ack", "--url", &url]).await;
    assert_exit(&refused, 1);
    let message = stderr(&refused);
    assert!(
        message.starts_with("tickwire: broker error too_many_topics"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
}

#[tokio::test]
async fn pub_without_ack_fails_when_the_broker_drops_the_connection() {
    let broker = TestBroker::start(|c| c.max_message_size = 1024).await;
    let too_big = "x".repeat(4096);
    let output = run(&["pub", "big.t", &too_big, "--url", &broker.ws_url()]).await;
    assert_exit(&output, 1);
    // The cause is the broker's 1009 close, or a failed write if the client
    // was still sending when the broker closed.
    let message = stderr(&output);
    assert!(
        message.starts_with("tickwire: disconnected from the broker (")
            || message.starts_with(
                "tickwire: connection to the broker was lost before the reply arrived ("
            ),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
}

#[tokio::test]
async fn sub_no_reconnect_exits_1_when_the_broker_goes_away() {
    let broker = TestBroker::start_default().await;
    let sub = spawn(&["sub", "--url", &broker.ws_url(), "gone.t", "--no-reconnect"]);
    broker.wait_metric("tickwire_subscriptions", 1.0).await;
    broker.stop().await;
    let output = finish(sub).await;
    assert_exit(&output, 1);
    let log = stderr(&output);
    assert!(
        log.contains(
            "tickwire: subscription to gone.t ended: disconnected from the broker \
             (broker closed the connection with code 1001"
        ),
        "{log}"
    );
}

#[tokio::test]
async fn usage_errors_exit_2() {
    // Checked before connecting: no broker is needed.
    let bad_json = run(&["pub", "a.b", "{oops", "--json"]).await;
    assert_exit(&bad_json, 2);
    assert!(stderr(&bad_json).starts_with("tickwire: not valid JSON"));
    assert_exit(&run(&["sub", "a.b", "--format", "yaml"]).await, 2);
    assert_exit(&run(&["sub", "a.b", "--since", "a.b=oops"]).await, 2);
    assert_exit(&run(&["pub", "a.b", "x", "--count", "0"]).await, 2);
    assert_exit(
        &run(&["pub", "a.b", "x", "--url", "http://127.0.0.1:1"]).await,
        2,
    );
}

#[tokio::test]
async fn no_broker_exits_3_with_connection_refused() {
    // A port nothing listens on: bound, then released.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    let url = format!("ws://{addr}/ws");
    for args in [
        &["pub", "a.b", "x", "--url", &url][..],
        &["sub", "a.b", "--url", &url, "--count", "1"],
    ] {
        let output = run(args).await;
        assert_exit(&output, 3);
        assert!(
            stderr(&output).contains(&format!(
                "tickwire: connection refused: is a broker listening on {addr}?"
            )),
            "{}",
            stderr(&output)
        );
    }
}

#[tokio::test]
async fn sub_count_not_reached_within_wait_exits_4() {
    let broker = TestBroker::start_default().await;
    let output = run(&[
        "sub",
        "--url",
        &broker.ws_url(),
        "quiet.t",
        "--count",
        "2",
        "--wait",
        "200ms",
    ])
    .await;
    assert_exit(&output, 4);
    assert!(
        stderr(&output).contains("tickwire: received 0 of 2 messages within 200ms"),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn sub_interrupted_exits_0_with_a_summary() {
    let broker = TestBroker::start_default().await;
    let url = broker.ws_url();
    let mut sub = spawn(&["sub", "--url", &url, "ctrl.c"]);
    broker.wait_metric("tickwire_subscriptions", 1.0).await;
    assert_exit(
        &run(&["pub", "ctrl.c", "one", "--ack", "--url", &url]).await,
        0,
    );
    // Interrupt only once the message has been printed.
    let mut lines = BufReader::new(sub.stdout.take().expect("piped stdout")).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("a line in time")
        .expect("read stdout")
        .expect("one line");
    assert!(
        line.starts_with("[ctrl.c #1 ") && line.ends_with("] one"),
        "{line}"
    );

    signal(&sub, "-INT");
    let output = finish(sub).await;
    assert_exit(&output, 0);
    assert!(
        stderr(&output).contains("received 1 message; resume with --since ctrl.c="),
        "{}",
        stderr(&output)
    );
}

#[tokio::test]
async fn sub_join_leave_prints_joins_and_leaves_in_order_with_the_messages() {
    let broker = TestBroker::start(|c| {
        c.topic_policies = vec![TopicPolicy {
            pattern: Pattern::new("room.>").expect("valid pattern"),
            presence: true,
            ..TopicPolicy::fallback()
        }];
    })
    .await;
    let url = broker.ws_url();
    let sub = spawn(&[
        "sub",
        "--url",
        &url,
        "room.cli",
        "--count",
        "2",
        "--format",
        "json",
        "--join-leave",
    ]);
    broker.wait_metric("tickwire_subscriptions", 1.0).await;
    let guest = tickwire_client::Client::builder(url.as_str())
        .client_id("guest")
        .connect()
        .await
        .expect("connect");
    let seat = guest.subscribe("room.cli").await.expect("subscribe");
    guest
        .publish_acked("room.cli", &"a")
        .await
        .expect("publish");
    drop(seat);
    guest
        .publish_acked("room.cli", &"b")
        .await
        .expect("publish");

    let received = finish(sub).await;
    assert_exit(&received, 0);
    // The subscriber's own join (its generated client id) may come first.
    let seen: Vec<String> = json_lines(&received)
        .iter()
        .filter(|line| line["event"].is_null() || line["client"] == "guest")
        .map(|line| match line["event"].as_str() {
            Some(event) => format!("{event} {}", line["client"]),
            None => format!("message {}", line["payload"]),
        })
        .collect();
    assert_eq!(
        seen,
        [
            "join \"guest\"",
            "message \"a\"",
            "leave \"guest\"",
            "message \"b\""
        ],
        "{}",
        stdout(&received)
    );
    guest.close().await.expect("close");
}
