//! The operational JSON endpoints (`GET /v1/stats`, `GET /v1/topics`), the
//! admin grant that guards them, and the dashboard's static files
//! (`--dashboard`), end to end against a real broker on port 0.

use std::path::PathBuf;

use serde_json::{Value, json};
use sha2::Digest;
use tickwire_e2e::tokens::{Secret, token};
use tickwire_e2e::{RawClient, TestBroker, http_with, poll_until, read_banner, tickwire_command};
use tokio::io::{AsyncBufReadExt, BufReader};

fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tickwire-admin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, contents).expect("write temp file");
    path
}

/// GET `path` with `headers`; (status, head, body as JSON or Null).
async fn get(broker: &TestBroker, path: &str, headers: &str) -> (u16, String, Value) {
    let (status, head, body) = http_with(broker.addr, "GET", path, headers, b"").await;
    (
        status,
        head,
        serde_json::from_str(&body).unwrap_or(Value::Null),
    )
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

#[tokio::test]
async fn stats_and_topics_report_what_the_broker_does() {
    let broker = TestBroker::start(|_| {}).await;
    let mut subscriber = RawClient::connect(broker.addr).await;
    subscriber.subscribe("stocks.*").await;
    let mut publisher = RawClient::connect(broker.addr).await;
    for topic in ["stocks.B", "stocks.A", "stocks.C", "news.x", "stocks.B"] {
        publisher.publish_acked(topic, b"\x01").await;
    }

    let (status, head, stats) = get(&broker, "/v1/stats", "").await;
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json")
    );
    assert_eq!(stats["counters"]["publishes"], 5, "{stats}");
    assert_eq!(stats["counters"]["deliveries"], 4, "{stats}");
    assert_eq!(stats["topics"], 4, "{stats}");
    assert_eq!(stats["subscriptions"], 1, "{stats}");
    assert_eq!(stats["connections"]["websocket"], 2, "{stats}");
    assert_eq!(stats["ready"], true);
    assert_eq!(stats["backplane"], Value::Null);
    assert_eq!(
        stats["busiest"],
        Value::Null,
        "no sampler without --dashboard"
    );
    assert_eq!(stats["version"], env!("CARGO_PKG_VERSION"));
    assert!(stats["uptime_seconds"].as_f64().unwrap() >= 0.0);

    let (status, _, page) = get(&broker, "/v1/topics?pattern=stocks.*&limit=2", "").await;
    assert_eq!(status, 200, "{page}");
    let topics = page["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 2);
    assert_eq!(topics[0]["topic"], "stocks.A");
    assert_eq!(topics[0]["subscribers"], 1);
    assert_eq!(topics[1]["topic"], "stocks.B");
    assert_eq!(topics[1]["seq"], 2);
    assert!(topics[1]["epoch"].as_str().unwrap().parse::<u64>().is_ok());
    assert_eq!(page["next"], "stocks.B");
    let (_, _, rest) = get(&broker, "/v1/topics?pattern=stocks.%2A&after=stocks.B", "").await;
    assert_eq!(rest["topics"].as_array().unwrap().len(), 1);
    assert_eq!(rest["topics"][0]["topic"], "stocks.C");
    assert_eq!(rest["next"], Value::Null);
    let (_, _, all) = get(&broker, "/v1/topics", "").await;
    assert_eq!(all["topics"].as_array().unwrap().len(), 4);

    for (query, code) in [
        ("limit=1001", "invalid_option"),
        ("limit=0", "invalid_option"),
        ("pattern=a..b", "invalid_pattern"),
        ("unknown=1", "invalid_option"),
    ] {
        let (status, _, body) = get(&broker, &format!("/v1/topics?{query}"), "").await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], code, "{query}");
    }
    let (status, _, _) = http_with(broker.addr, "POST", "/v1/stats", "", b"").await;
    assert_eq!(status, 405);
    // Without --dashboard the page is an unknown path.
    let (status, _, _) = http_with(broker.addr, "GET", "/dashboard", "", b"").await;
    assert_eq!(status, 404);
    broker.stop().await;
}

#[tokio::test]
async fn with_keys_the_endpoints_need_the_admin_grant() {
    let secret = Secret::new();
    let hash = |key: &[u8]| -> String {
        sha2::Sha256::digest(key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let keys = temp_file(
        "api-keys",
        format!(
            "{} iot.>\n{} - admin\n",
            hash(b"publisher-key"),
            hash(b"admin-key")
        )
        .as_bytes(),
    );
    let broker = TestBroker::start(|config| {
        config.jwt_hmac_secret_file = vec![secret.file()];
        config.api_key_file = vec![keys];
        config.dashboard = true;
    })
    .await;
    let admin = token(json!({"admin": true}));
    let plain = token(json!({"sub": [">"], "pub": [">"]}));
    for path in ["/v1/stats", "/v1/topics"] {
        let (status, head, _) = get(&broker, path, "").await;
        assert_eq!(status, 401, "{path}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer")
        );
        let (status, _, _) = get(&broker, path, &bearer("not.a.token")).await;
        assert_eq!(status, 401, "{path}");
        for refused in [&plain, "publisher-key"] {
            let (status, _, body) = get(&broker, path, &bearer(refused)).await;
            assert_eq!(status, 403, "{path}: {body}");
            assert_eq!(body["error"]["code"], "forbidden");
        }
        for allowed in [&admin, "admin-key"] {
            let (status, _, body) = get(&broker, path, &bearer(allowed)).await;
            assert_eq!(status, 200, "{path}: {body}");
        }
    }
    // The page itself needs no credentials.
    let (status, head, _) = http_with(broker.addr, "GET", "/dashboard", "", b"").await;
    assert_eq!(status, 200, "{head}");
    // The admin grant is no topic grant.
    let mut client = RawClient::connect_with(
        broker.addr,
        "/ws",
        &[("Authorization", &format!("Bearer {admin}"))],
    )
    .await;
    client.subscribe_forbidden("stocks.A").await;

    // With --dashboard the sampler fills `busiest`.
    let mut publisher = RawClient::connect_with(
        broker.addr,
        "/ws",
        &[("Authorization", &format!("Bearer {plain}"))],
    )
    .await;
    for _ in 0..3 {
        publisher.publish_acked("hot.topic", b"1").await;
    }
    // The sampler compares two samples a second apart: keep publishing
    // until the topic shows up with a rate.
    poll_until(async || {
        publisher.publish_acked("hot.topic", b"1").await;
        let (_, _, stats) = get(&broker, "/v1/stats", &bearer(&admin)).await;
        let first = &stats["busiest"][0];
        match first["topic"] == "hot.topic" && first["rate"].as_f64() > Some(0.0) {
            true => Ok(()),
            false => Err(format!("busiest: {}", stats["busiest"])),
        }
    })
    .await;
    broker.stop().await;
}

#[tokio::test]
async fn dashboard_assets_are_served_with_their_headers() {
    let broker = TestBroker::start(|config| config.dashboard = true).await;
    let (status, head, body) = http_with(broker.addr, "GET", "/dashboard", "", b"").await;
    assert_eq!(status, 200);
    assert!(body.contains("app.js"), "{body}");
    let lower = head.to_ascii_lowercase();
    for header in [
        "content-type: text/html; charset=utf-8",
        "x-content-type-options: nosniff",
        "cache-control: no-cache",
        "content-security-policy: default-src 'none'; script-src 'self'",
        "etag: \"",
    ] {
        assert!(lower.contains(header), "{header} missing in {head}");
    }
    let etag = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("etag: ")
                .or_else(|| l.strip_prefix("ETag: "))
        })
        .unwrap_or_else(|| panic!("etag in {head}"))
        .trim()
        .to_owned();
    let (status, _, body) = http_with(
        broker.addr,
        "GET",
        "/dashboard/",
        &format!("If-None-Match: {etag}\r\n"),
        b"",
    )
    .await;
    assert_eq!((status, body.as_str()), (304, ""));
    for (path, content_type) in [
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/tickwire-client.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
    ] {
        let (status, head, _) = http_with(broker.addr, "GET", path, "", b"").await;
        assert_eq!(status, 200, "{path}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("content-type: {content_type}")),
            "{path}: {head}"
        );
    }
    let (status, _, _) = http_with(broker.addr, "GET", "/dashboard/nope.js", "", b"").await;
    assert_eq!(status, 404);
    let (status, _, _) = http_with(broker.addr, "POST", "/dashboard", "", b"").await;
    assert_eq!(status, 405);
    broker.stop().await;
}

/// `tickwire serve` with `args` and `env`; its address and the status of
/// `GET /dashboard` there.
async fn dashboard_status(args: &[&str], env: &[(&str, &str)]) -> u16 {
    let mut command =
        tickwire_command(&["serve", "--listen", "127.0.0.1:0", "--log-level", "warn"]);
    command.args(args).envs(env.iter().copied());
    let mut child = command.spawn().expect("start tickwire serve");
    let stdout = child.stdout.take().expect("stdout");
    let (addr, _) = read_banner(&mut BufReader::new(stdout).lines()).await;
    let (status, _, _) = http_with(addr, "GET", "/dashboard", "", b"").await;
    child.kill().await.expect("stop tickwire serve");
    status
}

#[tokio::test]
async fn the_dashboard_flag_may_be_given_alone_or_with_a_value_or_in_the_environment() {
    assert_eq!(dashboard_status(&[], &[]).await, 404);
    assert_eq!(dashboard_status(&["--dashboard"], &[]).await, 200);
    assert_eq!(dashboard_status(&["--dashboard", "true"], &[]).await, 200);
    assert_eq!(dashboard_status(&["--dashboard", "false"], &[]).await, 404);
    assert_eq!(
        dashboard_status(&[], &[("TICKWIRE_DASHBOARD", "true")]).await,
        200
    );
    // A bad value is refused at start, naming the flag.
    let output = tickwire_command(&["serve", "--dashboard", "yes"])
        .output()
        .await
        .expect("run tickwire serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--dashboard"), "{stderr}");
}
