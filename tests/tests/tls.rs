//! TLS on the broker's port, with a private CA made in each test: the SDK
//! over wss://, HTTP publish and health over https, plain HTTP refused
//! clearly, client certificates, and reloading the certificate.

use std::time::Duration;

use tickwire_client::{Client, ReconnectPolicy, TlsRoots};
use tickwire_e2e::pki::{CertFiles, TempDir, TestCa, https, tls_connect};
use tickwire_e2e::{TestBroker, WAIT, http};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A broker serving TLS with `server`, and requiring client certificates
/// signed by `client_ca` if given.
async fn tls_broker(server: &CertFiles, client_ca: Option<&TestCa>) -> TestBroker {
    TestBroker::start(|config| {
        config.tls_cert_file = Some(server.cert.clone());
        config.tls_key_file = Some(server.key.clone());
        config.tls_client_ca_file = client_ca.map(|ca| ca.ca_file().to_owned());
    })
    .await
}

fn wss_url(broker: &TestBroker) -> String {
    format!("wss://localhost:{}/ws", broker.addr.port())
}

/// A client of `broker` trusting `ca`, presenting `identity` if given, that
/// does not reconnect.
async fn connect(
    broker: &TestBroker,
    ca: &TestCa,
    identity: Option<&CertFiles>,
) -> tickwire_client::Result<Client> {
    let mut builder = Client::builder(wss_url(broker))
        .tls_roots(TlsRoots::CaFile(ca.ca_file().to_owned()))
        .connect_timeout(WAIT)
        .reconnect(ReconnectPolicy::never());
    if let Some(files) = identity {
        builder = builder.tls_client_identity(&files.cert, &files.key);
    }
    builder.connect().await
}

/// Publishes on `publisher` and expects the message on `subscription`.
async fn round_trip(
    publisher: &Client,
    subscription: &mut tickwire_client::Subscription,
    payload: &str,
) {
    publisher
        .publish_acked("secure.prices", payload)
        .await
        .expect("publish over TLS");
    let message = tokio::time::timeout(WAIT, subscription.recv())
        .await
        .expect("delivery in time")
        .expect("a delivery");
    assert_eq!(message.decode::<String>().expect("a string"), payload);
}

#[tokio::test]
async fn sdk_http_publish_and_health_over_tls() {
    let dir = TempDir::new("tls-sdk");
    let ca = TestCa::new(dir.path(), "ca");
    let broker = tls_broker(&ca.server_cert(dir.path(), "server"), None).await;

    let client = connect(&broker, &ca, None).await.expect("connect over wss");
    let mut subscription = client.subscribe("secure.*").await.expect("subscribe");
    round_trip(&client, &mut subscription, "189.5").await;

    let (status, body) = https(broker.addr, ca.ca_file(), "GET", "/healthz", b"").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = https(broker.addr, ca.ca_file(), "GET", "/readyz", b"").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, body) = https(
        broker.addr,
        ca.ca_file(),
        "POST",
        "/v1/publish/secure.http",
        b"over https",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let message = tokio::time::timeout(WAIT, subscription.recv())
        .await
        .expect("delivery in time")
        .expect("a delivery");
    assert_eq!(message.topic(), "secure.http");
    assert_eq!(&message.payload()[..], b"over https");
    let (status, metrics) = https(broker.addr, ca.ca_file(), "GET", "/metrics", b"").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("tickwire_websockets 1"), "{metrics}");
    broker.stop().await;
}

#[tokio::test]
async fn plain_http_and_ws_to_a_tls_port_are_refused_clearly() {
    let dir = TempDir::new("tls-plain");
    let ca = TestCa::new(dir.path(), "ca");
    let broker = tls_broker(&ca.server_cert(dir.path(), "server"), None).await;

    let (status, body) = http(broker.addr, "GET", "/healthz", b"").await;
    assert_eq!(status, 400);
    assert!(body.contains("this port speaks TLS"), "{body}");

    let err = Client::builder(format!("ws://127.0.0.1:{}/ws", broker.addr.port()))
        .connect_timeout(WAIT)
        .reconnect(ReconnectPolicy::never())
        .connect()
        .await
        .expect_err("ws:// to a TLS port fails");
    assert!(err.to_string().contains("400"), "{err}");

    // A client that trusts another CA fails its handshake; the broker carries on.
    let other = TestCa::new(dir.path(), "other");
    let err = connect(&broker, &other, None)
        .await
        .expect_err("untrusted certificate");
    assert!(matches!(err, tickwire_client::Error::Tls { .. }), "{err}");
    connect(&broker, &ca, None).await.expect("still serving");
    broker.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    let dir = TempDir::new("tls-silent");
    let ca = TestCa::new(dir.path(), "ca");
    let server = ca.server_cert(dir.path(), "server");
    let broker = TestBroker::start(|config| {
        config.tls_cert_file = Some(server.cert.clone());
        config.tls_key_file = Some(server.key.clone());
        config.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let mut silent = tokio::net::TcpStream::connect(broker.addr)
        .await
        .expect("connect");
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(WAIT, silent.read(&mut buf))
        .await
        .expect("the broker closes a silent connection in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // Its place is given back: only the scrape's own connection is counted.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, metrics) = https(broker.addr, ca.ca_file(), "GET", "/metrics", b"").await;
        if metrics.lines().any(|line| line == "tickwire_connections 1") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
    }
    broker.stop().await;
}

#[tokio::test]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    let dir = TempDir::new("tls-mtls");
    let ca = TestCa::new(dir.path(), "ca");
    let client_ca = TestCa::new(dir.path(), "clients");
    let broker = tls_broker(&ca.server_cert(dir.path(), "server"), Some(&client_ca)).await;

    // Without a certificate: refused (in TLS 1.3 the client learns it at its
    // first read).
    assert!(connect(&broker, &ca, None).await.is_err());
    let refused = async {
        let mut stream = tls_connect(broker.addr, ca.ca_file(), None).await?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await.map(|_| buf)
    };
    match tokio::time::timeout(WAIT, refused).await.expect("in time") {
        Ok(answer) => assert!(answer.is_empty(), "answered without a client certificate"),
        Err(e) => assert!(e.to_string().contains("CertificateRequired"), "{e}"),
    }

    // With a certificate of another CA: refused.
    let stranger = TestCa::new(dir.path(), "stranger").issue(dir.path(), "eve", "eve", &[]);
    assert!(connect(&broker, &ca, Some(&stranger)).await.is_err());

    // With a certificate of the client CA: accepted.
    let alice = client_ca.issue(dir.path(), "alice", "alice", &["alice.clients.example"]);
    let client = connect(&broker, &ca, Some(&alice))
        .await
        .expect("connect with a client certificate");
    let mut subscription = client.subscribe("secure.*").await.expect("subscribe");
    round_trip(&client, &mut subscription, "mutual").await;
    broker.stop().await;
}

#[tokio::test]
async fn reload_swaps_the_certificate_for_new_connections_only() {
    let dir = TempDir::new("tls-reload");
    let old_ca = TestCa::new(dir.path(), "old");
    let new_ca = TestCa::new(dir.path(), "new");
    let server = old_ca.server_cert(dir.path(), "server");
    let broker = tls_broker(&server, None).await;

    let old_client = connect(&broker, &old_ca, None).await.expect("connect");
    let mut subscription = old_client.subscribe("secure.*").await.expect("subscribe");

    // A broken new file: the reload fails and the old certificate stays.
    std::fs::write(&server.cert, "not a certificate").expect("write");
    let err = broker.reload().expect_err("a bad certificate is refused");
    assert!(err.to_string().contains("--tls-cert-file"), "{err}");
    connect(&broker, &old_ca, None)
        .await
        .expect("the old certificate is still served");

    // The new CA's certificate, written over the same files.
    let renewed = new_ca.server_cert(dir.path(), "renewed");
    std::fs::copy(&renewed.cert, &server.cert).expect("copy certificate");
    std::fs::copy(&renewed.key, &server.key).expect("copy key");
    assert!(broker.reload().expect("reload").tls);

    let new_client = connect(&broker, &new_ca, None)
        .await
        .expect("new connections get the new certificate");
    assert!(
        connect(&broker, &old_ca, None).await.is_err(),
        "the old certificate is no longer served"
    );
    // The connection made before the reload carries on.
    round_trip(&new_client, &mut subscription, "after reload").await;
    round_trip(&old_client, &mut subscription, "old connection").await;
    broker.stop().await;
}

mod binary {
    //! The same through the real `tickwire` binary: `serve` with TLS flags,
    //! `pub`/`sub` with `--ca-file` and a client certificate, SIGHUP.

    use tickwire_e2e::pki::{CertFiles, TempDir, TestCa};
    use tickwire_e2e::{WAIT, read_banner, signal, tickwire_command};
    use tokio::io::{AsyncBufReadExt, BufReader, Lines};
    use tokio::process::ChildStderr;

    fn path(p: &std::path::Path) -> &str {
        p.to_str().expect("UTF-8 path")
    }

    /// Reads lines of `lines` until one contains `needle`; returns it.
    async fn wait_for_line(lines: &mut Lines<BufReader<ChildStderr>>, needle: &str) -> String {
        tokio::time::timeout(WAIT, async {
            loop {
                match lines.next_line().await.expect("read stderr") {
                    Some(line) if line.contains(needle) => return line,
                    Some(_) => {}
                    None => panic!("stderr ended before a line with {needle:?}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no line with {needle:?} in time"))
    }

    /// The client flags for `url`, trusting `ca`, with `identity`.
    fn client_args<'a>(url: &'a str, ca: &'a TestCa, identity: &'a CertFiles) -> Vec<&'a str> {
        vec![
            "--url",
            url,
            "--ca-file",
            path(ca.ca_file()),
            "--cert-file",
            path(&identity.cert),
            "--key-file",
            path(&identity.key),
        ]
    }

    #[tokio::test]
    async fn serve_pub_sub_over_tls_with_client_certificates_and_sighup() {
        let dir = TempDir::new("tls-cli");
        let ca = TestCa::new(dir.path(), "ca");
        let client_ca = TestCa::new(dir.path(), "clients");
        let server = ca.server_cert(dir.path(), "server");
        let alice = client_ca.issue(dir.path(), "alice", "alice", &[]);
        let mut broker = tickwire_command(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert-file",
            path(&server.cert),
            "--tls-key-file",
            path(&server.key),
            "--tls-client-ca-file",
            path(client_ca.ca_file()),
            "--log-level",
            "info,tickwire_broker::connection=debug",
        ])
        .spawn()
        .expect("start tickwire serve");
        let stdout = broker.stdout.take().expect("stdout");
        let (addr, banner) = read_banner(&mut BufReader::new(stdout).lines()).await;
        assert!(banner.contains("(WebSocket wss://"), "{banner}");
        let mut log = BufReader::new(broker.stderr.take().expect("stderr")).lines();
        let url = format!("wss://localhost:{}/ws", addr.port());

        let mut sub_args = vec!["sub", "secure.t", "--count", "1", "--format", "raw"];
        sub_args.extend(client_args(&url, &ca, &alice));
        let mut sub = tickwire_command(&sub_args)
            .spawn()
            .expect("start tickwire sub");
        let mut sub_log = BufReader::new(sub.stderr.take().expect("stderr")).lines();
        wait_for_line(&mut sub_log, "subscribed to secure.t").await;
        // The broker saw who the subscriber is.
        let started = wait_for_line(&mut log, "websocket session started").await;
        assert!(started.contains("CN=alice"), "{started}");

        let mut pub_args = vec!["pub", "secure.t", "hello over tls"];
        pub_args.extend(client_args(&url, &ca, &alice));
        let published = tickwire_command(&pub_args).output().await.expect("run pub");
        assert_eq!(published.status.code(), Some(0), "{published:?}");
        let received = tokio::time::timeout(WAIT, sub.wait_with_output())
            .await
            .expect("sub exits in time")
            .expect("sub output");
        assert_eq!(received.status.code(), Some(0), "{received:?}");
        assert_eq!(
            String::from_utf8_lossy(&received.stdout),
            "hello over tls\n"
        );

        // Without a client certificate: cannot connect (exit 3).
        let refused = tickwire_command(&["pub", "secure.t", "x", "--url", &url, "--ca-file"])
            .arg(ca.ca_file())
            .output()
            .await
            .expect("run pub");
        assert_eq!(refused.status.code(), Some(3), "{refused:?}");

        // SIGHUP after the files change: new connections get the new
        // certificate.
        let new_ca = TestCa::new(dir.path(), "new");
        let renewed = new_ca.server_cert(dir.path(), "renewed");
        std::fs::copy(&renewed.cert, &server.cert).expect("copy certificate");
        std::fs::copy(&renewed.key, &server.key).expect("copy key");
        signal(&broker, "-HUP");
        wait_for_line(&mut log, "reload done").await;
        let mut pub_args = vec!["pub", "secure.t", "renewed"];
        pub_args.extend(client_args(&url, &new_ca, &alice));
        let published = tickwire_command(&pub_args).output().await.expect("run pub");
        assert_eq!(published.status.code(), Some(0), "{published:?}");

        signal(&broker, "-TERM");
        let status = tokio::time::timeout(WAIT, broker.wait())
            .await
            .expect("broker exits in time")
            .expect("broker status");
        assert_eq!(status.code(), Some(0));
    }

    #[tokio::test]
    async fn serve_refuses_incomplete_or_unreadable_tls_settings() {
        let dir = TempDir::new("tls-cli-config");
        let ca = TestCa::new(dir.path(), "ca");
        let server = ca.server_cert(dir.path(), "server");
        let missing = dir.path().join("missing.pem");
        let cases: [(Vec<&str>, &str); 4] = [
            (
                vec!["--tls-cert-file", path(&server.cert)],
                "--tls-cert-file and --tls-key-file go together",
            ),
            (
                vec!["--tls-client-ca-file", path(ca.ca_file())],
                "--tls-client-ca-file needs TLS",
            ),
            (
                vec![
                    "--tls-cert-file",
                    path(&missing),
                    "--tls-key-file",
                    path(&server.key),
                ],
                "cannot read --tls-cert-file",
            ),
            (
                vec![
                    "--tls-cert-file",
                    path(&server.cert),
                    "--tls-key-file",
                    path(ca.ca_file()),
                ],
                "invalid --tls-key-file",
            ),
        ];
        for (flags, expected) in cases {
            let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
            args.extend(flags);
            let output = tickwire_command(&args).output().await.expect("run serve");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(expected), "{args:?}: {stderr}");
        }
    }
}
