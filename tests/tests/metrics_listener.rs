//! `metrics_listen`: metrics, health and readiness on their own listener,
//! only client routes on the main port, and probes that keep working when
//! the main port is full or draining.

use std::time::Duration;

use tickwire_e2e::{RawClient, Received, TestBroker, http};

async fn broker_with_metrics_listener(
    configure: impl FnOnce(&mut tickwire_broker::BrokerConfig),
) -> TestBroker {
    TestBroker::start(|config| {
        config.metrics_listen = Some("127.0.0.1:0".parse().expect("address"));
        configure(config);
    })
    .await
}

#[tokio::test]
async fn operational_endpoints_move_to_the_metrics_listener() {
    let broker = broker_with_metrics_listener(|_| {}).await;
    let metrics = broker.metrics_addr.expect("a metrics listener");

    for path in ["/metrics", "/healthz", "/readyz"] {
        let (status, body) = http(broker.addr, "GET", path, b"").await;
        assert_eq!(status, 404, "{path} on the main port: {body}");
        assert!(body.contains("--metrics-listen"), "{body}");
        let (status, _) = http(metrics, "GET", path, b"").await;
        assert_eq!(status, 200, "{path} on the metrics listener");
    }
    // Clients use the main port only.
    let (status, _) = http(metrics, "POST", "/v1/publish/t", b"x").await;
    assert_eq!(status, 404);
    let (status, _) = http(metrics, "POST", "/metrics", b"").await;
    assert_eq!(status, 405);

    let mut subscriber = RawClient::connect(broker.addr).await;
    subscriber.subscribe("m.t").await;
    let (status, _) = http(broker.addr, "POST", "/v1/publish/m.t", b"hello").await;
    assert_eq!(status, 200);
    assert!(matches!(subscriber.recv().await, Received::Message { .. }));
    assert_eq!(broker.metric("tickwire_websockets").await, 1.0);
    assert_eq!(
        broker.metric("tickwire_messages_published_total").await,
        1.0
    );
    // Scrapes are not client connections: only the WebSocket is counted.
    assert_eq!(broker.metric("tickwire_connections").await, 1.0);
    drop(subscriber);
    broker.stop().await;
}

#[tokio::test]
async fn probes_are_answered_while_the_main_port_is_full_or_draining() {
    let broker = broker_with_metrics_listener(|config| {
        config.max_connections = 1;
        config.shutdown_delay = Duration::from_secs(2);
    })
    .await;
    let metrics = broker.metrics_addr.expect("a metrics listener");
    let client = RawClient::connect(broker.addr).await;

    // The main port has no reserve places for probes: they are elsewhere.
    let (status, body) = http(broker.addr, "GET", "/healthz", b"").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(http(metrics, "GET", "/healthz", b"").await.0, 200);
    assert_eq!(http(metrics, "GET", "/readyz", b"").await.0, 200);

    broker.begin_shutdown();
    let (status, body) = http(metrics, "GET", "/readyz", b"").await;
    assert_eq!((status, body.as_str()), (503, "draining\n"));
    assert_eq!(http(metrics, "GET", "/healthz", b"").await.0, 200);
    drop(client);
    broker.stop().await;
}

mod binary {
    //! The real binary: the default address, the warning for a public
    //! address without TLS, and the metrics listener's banner line.

    use tickwire_e2e::{WAIT, banner_addr, http, tickwire_binary, tickwire_command};
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::process::{Child, Command};

    /// `tickwire serve ARGS` without inherited `TICKWIRE_*` variables.
    fn serve(args: &[&str]) -> Child {
        tickwire_command(&["serve"])
            .args(args)
            .spawn()
            .expect("start tickwire serve")
    }

    #[tokio::test]
    async fn the_default_address_is_loopback() {
        let output = Command::new(tickwire_binary())
            .args(["serve", "--help"])
            .output()
            .await
            .expect("run serve --help");
        let help = String::from_utf8_lossy(&output.stdout);
        // Help text is wrapped to the terminal width.
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(help.contains("[default: 127.0.0.1:8080]"), "{help}");
        assert!(help.contains("--metrics-listen"), "{help}");
    }

    #[tokio::test]
    async fn a_public_address_without_tls_is_warned_about() {
        let mut child = serve(&["--listen", "0.0.0.0:0", "--log-level", "warn"]);
        let mut log = BufReader::new(child.stderr.take().expect("stderr")).lines();
        // Other start-up warnings (authentication off, any origin) may come
        // first.
        let warning = tokio::time::timeout(WAIT, async {
            loop {
                let line = log
                    .next_line()
                    .await
                    .expect("read stderr")
                    .expect("the TLS warning before stderr ends");
                if line.contains("WITHOUT TLS") {
                    return line;
                }
            }
        })
        .await
        .expect("the TLS warning in time");
        assert!(warning.contains("--tls-cert-file"), "{warning}");
    }

    #[tokio::test]
    async fn the_metrics_listener_is_announced_and_serves_probes() {
        let mut child = serve(&[
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--log-level",
            "warn",
        ]);
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut next = async || {
            tokio::time::timeout(WAIT, lines.next_line())
                .await
                .expect("banner in time")
                .expect("read banner")
                .expect("a banner line")
        };
        let main = banner_addr(&next().await);
        let metrics_line = next().await;
        assert!(
            metrics_line.starts_with("tickwire metrics on "),
            "{metrics_line}"
        );
        let metrics = banner_addr(&metrics_line);
        assert_eq!(http(metrics, "GET", "/readyz", b"").await.0, 200);
        assert_eq!(http(main, "GET", "/readyz", b"").await.0, 404);
    }
}
