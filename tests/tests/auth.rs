//! Authentication and grants end to end: a real broker on port 0 with token
//! keys configured, tokens minted here with `jsonwebtoken`, raw clients, the
//! SDK and HTTP publish.
//!
//! Key pairs for the public-key algorithms are test fixtures in
//! tests/fixtures/auth; HMAC secrets are written to temporary files. Tests
//! that leave connections open end without a graceful broker shutdown,
//! which would wait out the close timeout for each of them.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use sha2::Digest;
use tickwire_broker::config::{BrokerConfig, TopicPolicy};
use tickwire_e2e::{
    RawClient, Received, TestBroker, WAIT, http_with, read_banner, signal, try_handshake,
    try_handshake_at,
};
use tickwire_protocol::message::Position;
use tickwire_protocol::topic::Pattern;
use tickwire_protocol::{ClientMessage, CloseCode, ErrorCode, SubscribeOptions};

const SECRET: &[u8] = b"an HMAC secret of at least 32 bytes, for tests";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/auth")
        .join(name)
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).expect("read fixture")
}

/// Writes `contents` to a fresh temporary file and returns its path. Every
/// call gets its own file: tests run in parallel and must not see each
/// other's half-written files.
fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tickwire-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(format!("{n}-{name}"));
    std::fs::write(&path, contents).expect("write temp file");
    path
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims valid for an hour granting `sub` and `publ`.
fn claims(sub: &[&str], publ: &[&str]) -> Value {
    json!({"exp": now() + 3600, "iat": now(), "tw": {"sub": sub, "pub": publ}})
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    encode(&Header::new(alg), claims, key).expect("sign token")
}

fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET), claims)
}

/// A broker that checks tokens against `SECRET` and the RSA fixture, with
/// `configure` applied on top.
async fn broker(configure: impl FnOnce(&mut BrokerConfig)) -> TestBroker {
    let secret = temp_file("secret", &[SECRET, b"\n"].concat());
    TestBroker::start(|config| {
        config.jwt_hmac_secret_file = vec![secret];
        config.jwt_public_key_file = vec![fixture("rsa-public.pem")];
        configure(config);
    })
    .await
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}\r\n")
}

/// Connects with `token` in the Authorization header.
async fn connect(broker: &TestBroker, token: &str) -> RawClient {
    let value = format!("Bearer {token}");
    RawClient::connect_with(broker.addr, "/ws", &[("Authorization", &value)]).await
}

fn assert_unauthorized(what: &str, status: u16, text: &str) {
    assert_eq!(status, 401, "{what}: {text}");
    let lower = text.to_ascii_lowercase();
    assert!(
        lower.contains("www-authenticate: bearer realm=\"tickwire\", error=\"invalid_token\""),
        "{what}: no challenge in {text}"
    );
}

/// The body of a response text (after the head).
fn body(text: &str) -> &str {
    text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

#[tokio::test]
async fn missing_invalid_and_forged_tokens_get_401_with_a_challenge() {
    let broker = broker(|config| {
        config.jwt_audience = vec!["tickwire".to_owned()];
        config.jwt_issuer = vec!["issuer-1".to_owned()];
        config.jwt_leeway = Duration::from_secs(5);
    })
    .await;
    let good = |extra: Value| {
        let mut c = claims(&[">"], &[">"]);
        c["aud"] = json!("tickwire");
        c["iss"] = json!("issuer-1");
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    // The well-formed token connects.
    let (status, text) = try_handshake(broker.addr, &bearer(&hs256(&good(json!({}))))).await;
    assert_eq!(status, 101, "{text}");

    let rsa_public = read_fixture("rsa-public.pem");
    let none_token = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        URL_SAFE_NO_PAD.encode(good(json!({})).to_string())
    );
    let forged = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another secret of at least 32 bytes!!"),
        &good(json!({})),
    );
    // Alg confusion: HS256 "signed" with the broker's RSA public key.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(&rsa_public),
        &good(json!({})),
    );
    let cases = [
        ("no token", String::new()),
        ("garbage", bearer("not.a.token")),
        ("bad signature", bearer(&forged)),
        ("alg none", bearer(&none_token)),
        ("HS256 with the RSA public key", bearer(&confused)),
        (
            "expired",
            bearer(&hs256(&good(json!({"exp": now() - 3600})))),
        ),
        (
            "not yet valid",
            bearer(&hs256(&good(json!({"nbf": now() + 3600})))),
        ),
        (
            "issued in the future",
            bearer(&hs256(&good(json!({"iat": now() + 3600})))),
        ),
        (
            "wrong audience",
            bearer(&hs256(&good(json!({"aud": "other"})))),
        ),
        (
            "wrong issuer",
            bearer(&hs256(&good(json!({"iss": "issuer-2"})))),
        ),
        ("no exp", {
            let mut c = good(json!({}));
            c.as_object_mut().unwrap().remove("exp");
            bearer(&hs256(&c))
        }),
        (
            "not bearer",
            "Authorization: Basic dXNlcjpwYXNz\r\n".to_owned(),
        ),
        ("too long", bearer(&"a".repeat(9 * 1024))),
    ];
    let mut bodies = Vec::new();
    for (what, header) in &cases {
        let (status, text) = try_handshake(broker.addr, header).await;
        assert_unauthorized(what, status, &text);
        bodies.push(body(&text).to_owned());
    }
    // The body never tells which check failed.
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "{bodies:?}");
    broker.stop().await;
}

#[tokio::test]
async fn every_key_type_verifies_its_own_algorithms() {
    let jwks = json!({"keys": [{"kty": "oct", "kid": "k1", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(b"the JWKS secret, also 32 bytes or more")}]});
    let jwks = temp_file("jwks.json", jwks.to_string().as_bytes());
    let broker = broker(|config| {
        config
            .jwt_public_key_file
            .extend([fixture("ec-public.pem"), fixture("ed25519-public.pem")]);
        config.jwks_file = vec![jwks];
    })
    .await;
    let c = claims(&[">"], &[]);
    let rsa = EncodingKey::from_rsa_pem(&read_fixture("rsa-private.pem")).unwrap();
    let ec = EncodingKey::from_ec_pem(&read_fixture("ec-private.pem")).unwrap();
    let ed = EncodingKey::from_ed_pem(&read_fixture("ed25519-private.pem")).unwrap();
    let mut kid_header = Header::new(Algorithm::HS256);
    kid_header.kid = Some("k1".to_owned());
    let jwks_token = encode(
        &kid_header,
        &c,
        &EncodingKey::from_secret(b"the JWKS secret, also 32 bytes or more"),
    )
    .unwrap();
    for (what, token) in [
        ("HS256", hs256(&c)),
        ("RS256", sign(Algorithm::RS256, &rsa, &c)),
        ("PS256", sign(Algorithm::PS256, &rsa, &c)),
        ("ES256", sign(Algorithm::ES256, &ec, &c)),
        ("EdDSA", sign(Algorithm::EdDSA, &ed, &c)),
        ("JWKS kid", jwks_token),
    ] {
        let (status, text) = try_handshake(broker.addr, &bearer(&token)).await;
        assert_eq!(status, 101, "{what}: {text}");
    }
    // The JWKS key checks only the token that names it: the same secret
    // without the kid matches no configured key.
    let unnamed = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"the JWKS secret, also 32 bytes or more"),
        &c,
    );
    let (status, text) = try_handshake(broker.addr, &bearer(&unnamed)).await;
    assert_unauthorized("JWKS key without kid", status, &text);
}

#[tokio::test]
async fn the_token_may_come_in_the_query_string() {
    let broker = broker(|_| {}).await;
    let token = hs256(&claims(&["a.>"], &[]));
    let mut client = RawClient::connect_with(broker.addr, &format!("/ws?token={token}"), &[]).await;
    client.subscribe("a.b").await;

    let (status, text) = try_handshake_at(broker.addr, "/ws?token=nope", "").await;
    assert_unauthorized("bad query token", status, &text);
    let (status, text) = try_handshake_at(broker.addr, &format!("/ws?token={token}&x=1"), "").await;
    assert_eq!(status, 400, "{text}");
    // Both ways at once is refused.
    let (status, text) =
        try_handshake_at(broker.addr, &format!("/ws?token={token}"), &bearer(&token)).await;
    assert_unauthorized("token twice", status, &text);
}

async fn still_open(client: &mut RawClient) {
    let id = client.next_id();
    client.send(&ClientMessage::Ping { id }).await;
    assert_eq!(client.recv().await, Received::Pong(id));
}

#[tokio::test]
async fn grants_bound_subscribe_and_publish() {
    let broker = broker(|_| {}).await;
    let mut admin = connect(&broker, &hs256(&claims(&[">"], &[">"]))).await;
    admin.publish_acked("news.existing", b"x").await;

    let mut client = connect(&broker, &hs256(&claims(&["stocks.>"], &["iot.site1.>"]))).await;
    client.subscribe("stocks.AAPL").await;
    client.subscribe("stocks.*").await;
    let existing = client.subscribe_forbidden("news.existing").await;
    let missing = client.subscribe_forbidden("news.never-published").await;
    assert_eq!(
        existing, missing,
        "a refusal must not reveal whether a topic exists"
    );
    // Wildcards wider than the grant.
    client.subscribe_forbidden(">").await;
    client.subscribe_forbidden("*.AAPL").await;
    client.subscribe_forbidden("stocks").await;

    assert_eq!(client.publish_acked("iot.site1.t1", b"21.5").await, 1);
    let existing = client.publish_forbidden("news.existing", true).await;
    let missing = client.publish_forbidden("news.other", true).await;
    assert_eq!(existing, missing);
    client.publish_forbidden("iot.site2.t1", false).await;
    still_open(&mut client).await;

    // Allowed traffic flows.
    admin.publish_acked("stocks.AAPL", b"190").await;
    match client.recv().await {
        Received::Message { topic, payload, .. } => {
            assert_eq!((topic.as_str(), &payload[..]), ("stocks.AAPL", &b"190"[..]));
        }
        other => panic!("expected the stocks message, got {other:?}"),
    }
}

#[tokio::test]
async fn since_replay_never_leaks_an_ungranted_topic() {
    let broker = broker(|config| {
        let mut policy = TopicPolicy::fallback();
        policy.pattern = Pattern::new(">").unwrap();
        policy.history_messages = 100;
        policy.history_bytes = 1 << 20;
        policy.retain = true;
        config.topic_policies = vec![policy];
    })
    .await;
    let mut admin = connect(&broker, &hs256(&claims(&[">"], &[">"]))).await;
    for _ in 0..3 {
        admin.publish_acked("secret.a", b"classified").await;
        admin.publish_acked("public.a", b"news").await;
    }
    let mut reader = connect(&broker, &hs256(&claims(&["public.>"], &[]))).await;
    let since = vec![
        ("secret.a".to_owned(), Position { epoch: 0, seq: 0 }),
        ("public.a".to_owned(), Position { epoch: 0, seq: 0 }),
    ];
    for pattern in ["public.>", "public.a"] {
        let mut options = SubscribeOptions::default();
        options.since = Some(since.clone());
        options.last = true;
        let info = reader.subscribe_with(pattern, options).await;
        assert!(
            info.missed
                .iter()
                .all(|(topic, _)| topic.starts_with("public.")),
            "{pattern}: {info:?}"
        );
        // Everything before the PONG is what the subscribe delivered.
        let id = reader.next_id();
        reader.send(&ClientMessage::Ping { id }).await;
        let mut replayed = 0;
        loop {
            match reader.recv().await {
                Received::Pong(got) if got == id => break,
                Received::Message { topic, .. } => {
                    assert!(topic.starts_with("public."), "{pattern} leaked {topic}");
                    replayed += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(replayed > 0, "{pattern}: the granted topic was replayed");
    }
    // The ungranted topic itself is refused, `since` or not.
    reader.subscribe_forbidden("secret.a").await;
}

#[tokio::test]
async fn http_publish_needs_a_token_with_a_pub_grant() {
    let broker = broker(|_| {}).await;
    let publish = |headers: String| async move {
        http_with(
            broker.addr,
            "POST",
            "/v1/publish/iot.site1.t1",
            &headers,
            b"21",
        )
        .await
    };
    let (status, head, _) = publish(String::new()).await;
    assert_unauthorized("no token", status, &head);
    let (status, head, _) = publish(bearer("not.a.token")).await;
    assert_unauthorized("bad token", status, &head);
    let (status, _, body) = publish(bearer(&hs256(&claims(&[">"], &["stocks.>"])))).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("\"forbidden\""), "{body}");
    let (status, _, body) = publish(bearer(&hs256(&claims(&[], &["iot.>"])))).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"seq\":1"), "{body}");
    broker.stop().await;
}

#[tokio::test]
async fn anonymous_clients_get_exactly_the_anonymous_grants() {
    let broker = broker(|config| {
        config.allow_anonymous_sub = vec![Pattern::new("public.>").unwrap()];
    })
    .await;
    let mut anonymous = RawClient::connect(broker.addr).await;
    anonymous.subscribe("public.news").await;
    anonymous.subscribe_forbidden("private.x").await;
    anonymous.publish_forbidden("public.news", true).await;
    let (status, _, body) =
        http_with(broker.addr, "POST", "/v1/publish/public.news", "", b"x").await;
    assert_eq!(status, 403, "{body}");
    // A bad token is refused even though no token would be let in.
    let (status, text) = try_handshake(broker.addr, &bearer("bad")).await;
    assert_unauthorized("bad token with anonymous access", status, &text);
}

#[tokio::test]
async fn allow_anonymous_grants_both_directions_on_its_patterns() {
    let broker = broker(|config| {
        config.allow_anonymous = vec![Pattern::new("lobby.*").unwrap()];
        config.allow_anonymous_sub = vec![Pattern::new("news.>").unwrap()];
    })
    .await;
    let mut anonymous = RawClient::connect(broker.addr).await;
    anonymous.subscribe("lobby.*").await;
    anonymous.subscribe("news.eu").await;
    anonymous.subscribe_forbidden("lobby.>").await;
    anonymous.subscribe_forbidden("private.x").await;
    let mut publisher = RawClient::connect(broker.addr).await;
    assert_eq!(publisher.publish_acked("lobby.chat", b"hi").await, 1);
    publisher.publish_forbidden("news.eu", true).await;
    match anonymous.recv().await {
        Received::Message { topic, .. } => assert_eq!(topic, "lobby.chat"),
        other => panic!("expected the lobby message, got {other:?}"),
    }
}

#[tokio::test]
async fn without_keys_everything_is_open() {
    let broker = TestBroker::start(|config| {
        // Ignored without keys.
        config.allow_anonymous_sub = vec![Pattern::new("public.>").unwrap()];
    })
    .await;
    let mut subscriber = RawClient::connect(broker.addr).await;
    subscriber.subscribe(">").await;
    let mut publisher = RawClient::connect(broker.addr).await;
    publisher.publish_acked("private.x", b"x").await;
    let (status, _, body) = http_with(broker.addr, "POST", "/v1/publish/private.x", "", b"x").await;
    assert_eq!(status, 200, "{body}");
}

/// Sends `REFRESH` with `token` and returns the reply.
async fn refresh(client: &mut RawClient, token: &str) -> (u64, Received) {
    let id = client.next_id();
    client.send(&ClientMessage::Refresh { id, token }).await;
    (id, client.recv().await)
}

#[tokio::test]
async fn a_connection_closes_with_4003_when_its_token_expires_unless_refreshed() {
    let broker = broker(|config| config.jwt_leeway = Duration::ZERO).await;
    let mut c = claims(&[">"], &[]);
    c["exp"] = json!(now() + 2);
    let short = hs256(&c);
    let mut expiring = connect(&broker, &short).await;
    expiring.subscribe("a").await;
    let mut refreshed = connect(&broker, &short).await;
    refreshed.subscribe("a").await;
    let later = now() + 3600;
    let mut longer = claims(&[">"], &[]);
    longer["exp"] = json!(later);
    let (id, reply) = refresh(&mut refreshed, &hs256(&longer)).await;
    assert_eq!(
        reply,
        Received::Refreshed {
            id,
            expires: Some(later)
        }
    );

    match expiring.recv_close().await {
        Received::Close { code, reason } => {
            assert_eq!(code, Some(CloseCode::TokenExpired.as_u16()));
            assert_eq!(reason, CloseCode::TokenExpired.reason());
        }
        other => panic!("expected close 4003, got {other:?}"),
    }
    // Its twin, refreshed, lives on past the first token's expiry.
    still_open(&mut refreshed).await;
}

#[tokio::test]
async fn a_refused_refresh_keeps_the_current_token() {
    let broker = broker(|_| {}).await;
    let mut client = connect(&broker, &hs256(&claims(&["stocks.>"], &["stocks.>"]))).await;
    client.subscribe("stocks.AAPL").await;

    let (id, reply) = refresh(&mut client, "not.a.token").await;
    assert!(
        matches!(reply, Received::Error { id: Some(got), code: ErrorCode::Unauthorized, .. } if got == id),
        "{reply:?}"
    );
    // Grants that do not cover a current subscription are refused.
    let (id, reply) = refresh(&mut client, &hs256(&claims(&["news.>"], &[]))).await;
    assert!(
        matches!(reply, Received::Error { id: Some(got), code: ErrorCode::Forbidden, .. } if got == id),
        "{reply:?}"
    );
    // The old grants still apply.
    client.publish_acked("stocks.MSFT", b"1").await;

    // Narrower grants that cover the subscriptions replace the old ones.
    let (id, reply) = refresh(&mut client, &hs256(&claims(&["stocks.AAPL"], &[]))).await;
    assert!(matches!(reply, Received::Refreshed { id: got, expires: Some(_) } if got == id));
    client.subscribe_forbidden("stocks.MSFT").await;
    client.publish_forbidden("stocks.AAPL", true).await;
    still_open(&mut client).await;
}

#[tokio::test]
async fn the_sdk_sends_its_token_on_every_connect() {
    let broker = broker(|_| {}).await;
    let token = hs256(&claims(&["stocks.>"], &["stocks.>"]));
    let client = tickwire_client::Client::builder(broker.ws_url())
        .token(token)
        .connect()
        .await
        .expect("connect with a token");
    let mut sub = client.subscribe("stocks.*").await.expect("granted");
    client
        .publish_bytes_acked("stocks.AAPL", &b"190"[..])
        .await
        .expect("granted publish");
    let message = tickwire_e2e::sdk::recv(&mut sub).await;
    assert_eq!(message.topic(), "stocks.AAPL");
    let refused = client.subscribe("news.>").await.expect_err("not granted");
    assert_eq!(refused.broker_code(), Some(ErrorCode::Forbidden));

    let refused = tickwire_client::Client::builder(broker.ws_url())
        .no_reconnect()
        .connect()
        .await
        .expect_err("no token");
    assert!(refused.to_string().contains("401"), "{refused}");
    broker.stop().await;
}

/// `tickwire ARGS` with piped output and no `TICKWIRE_*` settings inherited.
fn tickwire(args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(tickwire_e2e::tickwire_binary());
    command
        .args(args)
        .env_remove("TICKWIRE_URL")
        .env_remove("TICKWIRE_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn finish(child: tokio::process::Child) -> std::process::Output {
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("tickwire exits in time")
        .expect("collect tickwire output")
}

async fn run(args: &[&str]) -> std::process::Output {
    finish(tickwire(args).spawn().expect("start tickwire")).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn cli_token_mints_what_the_broker_accepts_for_pub_and_sub() {
    let broker = broker(|config| config.jwt_audience = vec!["tickwire".to_owned()]).await;
    let secret = temp_file("cli-secret", SECRET);
    let secret = secret.to_str().unwrap();
    let minted = run(&[
        "token",
        "--hmac-secret-file",
        secret,
        "--sub",
        "stocks.>",
        "--pub",
        "stocks.AAPL",
        "--ttl",
        "1h",
        "--aud",
        "tickwire",
        "--subject",
        "cli-test",
    ])
    .await;
    assert!(minted.status.success(), "{}", text(&minted.stderr));
    let token = text(&minted.stdout).trim().to_owned();

    // It verifies with the secret and carries the grants.
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.set_audience(&["tickwire"]);
    let data = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(SECRET),
        &validation,
    )
    .expect("the minted token verifies");
    assert_eq!(
        data.claims["tw"],
        json!({"sub": ["stocks.>"], "pub": ["stocks.AAPL"]})
    );
    assert_eq!(data.claims["sub"], "cli-test");

    let url = broker.ws_url();
    let sub = tickwire(&[
        "sub", "--url", &url, "stocks.*", "--count", "1", "--token", &token,
    ])
    .spawn()
    .expect("start tickwire sub");
    broker.wait_metric("tickwire_subscriptions", 1.0).await;
    let published = run(&[
        "pub",
        "stocks.AAPL",
        "190",
        "--ack",
        "--url",
        &url,
        "--token",
        &token,
    ])
    .await;
    assert!(published.status.success(), "{}", text(&published.stderr));
    let received = finish(sub).await;
    assert!(received.status.success(), "{}", text(&received.stderr));
    assert!(
        text(&received.stdout).contains("190"),
        "{}",
        text(&received.stdout)
    );

    // Outside the grant, and without a token: refused, with the reason.
    let refused = run(&[
        "pub",
        "stocks.MSFT",
        "1",
        "--ack",
        "--url",
        &url,
        "--token",
        &token,
    ])
    .await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("forbidden"),
        "{}",
        text(&refused.stderr)
    );
    let refused = run(&["sub", "--url", &url, "stocks.*", "--count", "1"]).await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("401"),
        "{}",
        text(&refused.stderr)
    );
}

#[tokio::test]
async fn reloaded_keys_apply_to_new_tokens_and_keep_connections() {
    let old_secret = b"the old secret, at least thirty-two bytes";
    let new_secret = b"the new secret, at least thirty-two bytes";
    let file = temp_file("rotating-secret", old_secret);
    let broker = TestBroker::start(|config| config.jwt_hmac_secret_file = vec![file.clone()]).await;
    let c = claims(&[">"], &[">"]);
    let old_token = sign(Algorithm::HS256, &EncodingKey::from_secret(old_secret), &c);
    let new_token = sign(Algorithm::HS256, &EncodingKey::from_secret(new_secret), &c);
    let mut connected = connect(&broker, &old_token).await;
    let (status, _) = try_handshake(broker.addr, &bearer(&new_token)).await;
    assert_eq!(status, 401);

    std::fs::write(&file, new_secret).unwrap();
    assert!(broker.reload().expect("keys reload").keys);
    let (status, text) = try_handshake(broker.addr, &bearer(&new_token)).await;
    assert_eq!(status, 101, "{text}");
    let (status, _) = try_handshake(broker.addr, &bearer(&old_token)).await;
    assert_eq!(status, 401);
    still_open(&mut connected).await;

    // A file that no longer loads leaves the keys as they were.
    std::fs::write(&file, b"short").unwrap();
    let err = broker.reload().unwrap_err().to_string();
    assert!(err.contains("32 bytes"), "{err}");
    let (status, _) = try_handshake(broker.addr, &bearer(&new_token)).await;
    assert_eq!(status, 101);
    let open = TestBroker::start(|_| {}).await;
    assert!(
        !open.reload().expect("nothing fails").keys,
        "nothing to reload without keys"
    );
}

#[tokio::test]
async fn the_sdk_token_provider_supplies_a_fresh_token_after_expiry() {
    let broker = broker(|config| config.jwt_leeway = Duration::ZERO).await;
    let (calls_tx, mut calls) = tokio::sync::mpsc::unbounded_channel();
    let calls_made = std::sync::atomic::AtomicU64::new(0);
    let client = tickwire_client::Client::builder(broker.ws_url())
        .reconnect(
            tickwire_client::ReconnectPolicy::default()
                .with_initial(Duration::from_millis(20))
                .with_max(Duration::from_millis(200)),
        )
        .token_provider(move || {
            // Call 0: connect; call 1: the refresh, which fails; call 2: the
            // reconnect after the broker closed the connection with 4003.
            let _ = calls_tx.send(());
            let n = calls_made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if n == 1 {
                    return Err("identity provider briefly down".to_owned());
                }
                let mut c = claims(&["stocks.>"], &[]);
                c["exp"] = json!(now() + 2);
                Ok(hs256(&c))
            }
        })
        .connect()
        .await
        .expect("connect with the provider's token");
    calls.recv().await.expect("first token");
    let mut sub = client.subscribe("stocks.*").await.expect("granted");
    broker.wait_metric("tickwire_subscriptions", 1.0).await;

    // The refresh fails, the token expires (close 4003), and the reconnect
    // asks for a new one.
    for what in ["the refresh", "the reconnect"] {
        tokio::time::timeout(WAIT, calls.recv())
            .await
            .unwrap_or_else(|_| panic!("{what} asks for a token in time"))
            .expect("provider still alive");
    }
    tickwire_e2e::sdk::wait_state(&client, "connected again", |s| {
        matches!(s, tickwire_client::ConnectionState::Connected)
    })
    .await;
    broker.wait_metric("tickwire_subscriptions", 1.0).await;
    let closed_4003 =
        tickwire_e2e::metric_with_label(broker.addr, "tickwire_closes_total", "code", "4003").await;
    assert_eq!(closed_4003, 1.0);
    let mut admin = connect(&broker, &hs256(&claims(&[], &[">"]))).await;
    admin.publish_acked("stocks.AAPL", b"after").await;
    let message = tickwire_e2e::sdk::recv(&mut sub).await;
    assert_eq!(&message.payload()[..], b"after");

    // A failing provider fails the connection attempt with its reason.
    let refused = tickwire_client::Client::builder(broker.ws_url())
        .no_reconnect()
        .token_provider(|| async { Err("identity provider unreachable".to_owned()) })
        .connect()
        .await
        .expect_err("no token");
    assert!(
        refused
            .to_string()
            .contains("identity provider unreachable"),
        "{refused}"
    );
}

#[tokio::test]
async fn api_keys_publish_over_http_only() {
    // The file holds the key's SHA-256, as `printf %s KEY | sha256sum` prints it.
    let hash: String = sha2::Sha256::digest(b"svc-key-0123456789")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let file = temp_file(
        "api-keys",
        format!("# ingest service\n{hash} iot.site1.>\n").as_bytes(),
    );
    let broker = TestBroker::start(|config| config.api_key_file = vec![file]).await;
    let publish = |topic: &'static str, headers: String| async move {
        http_with(
            broker.addr,
            "POST",
            &format!("/v1/publish/{topic}"),
            &headers,
            b"x",
        )
        .await
    };
    let (status, _, body) = publish("iot.site1.t1", bearer("svc-key-0123456789")).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = publish("iot.site2.t1", bearer("svc-key-0123456789")).await;
    assert_eq!(status, 403, "{body}");
    let (status, head, _) = publish("iot.site1.t1", bearer("svc-key-wrong")).await;
    assert_unauthorized("wrong API key", status, &head);
    let (status, head, _) = publish("iot.site1.t1", String::new()).await;
    assert_unauthorized("no API key", status, &head);
    // An API key opens no WebSocket session.
    let (status, text) = try_handshake(broker.addr, &bearer("svc-key-0123456789")).await;
    assert_unauthorized("API key on the upgrade", status, &text);
}

#[tokio::test]
async fn with_auth_message_a_tokenless_connection_must_send_auth_first() {
    let broker = broker(|config| {
        config.auth_message = true;
        config.handshake_timeout = Duration::from_secs(1);
    })
    .await;
    let mut client = RawClient::connect(broker.addr).await;
    // Nothing but AUTH before authentication.
    let id = client.next_id();
    client
        .send(&ClientMessage::Subscribe {
            id,
            pattern: "stocks.AAPL",
            options: SubscribeOptions::default(),
        })
        .await;
    assert!(
        matches!(client.recv().await, Received::Error { id: Some(got), code: ErrorCode::Unauthorized, .. } if got == id)
    );
    let id = client.next_id();
    client.send(&ClientMessage::Ping { id }).await;
    assert!(
        matches!(client.recv().await, Received::Error { id: Some(got), code: ErrorCode::Unauthorized, .. } if got == id)
    );
    // A bad AUTH is refused; a good one authenticates.
    let id = client.next_id();
    client.send(&ClientMessage::Auth { id, token: "bad" }).await;
    assert!(
        matches!(client.recv().await, Received::Error { id: Some(got), code: ErrorCode::Unauthorized, .. } if got == id)
    );
    let id = client.next_id();
    let token = hs256(&claims(&["stocks.>"], &[]));
    client
        .send(&ClientMessage::Auth { id, token: &token })
        .await;
    assert!(
        matches!(client.recv().await, Received::Refreshed { id: got, expires: Some(_) } if got == id)
    );
    client.subscribe("stocks.AAPL").await;
    client.subscribe_forbidden("news.x").await;

    // Without AUTH in time: 4004.
    let mut silent = RawClient::connect(broker.addr).await;
    match silent.recv_close().await {
        Received::Close { code, .. } => {
            assert_eq!(code, Some(CloseCode::AuthenticationRequired.as_u16()))
        }
        other => panic!("expected close 4004, got {other:?}"),
    }
    // HTTP publish still needs its credentials in the request.
    let (status, head, _) = http_with(broker.addr, "POST", "/v1/publish/a", "", b"x").await;
    assert_unauthorized("tokenless HTTP publish", status, &head);
    still_open(&mut client).await;
}

#[tokio::test]
async fn the_sdk_refreshes_its_token_before_it_expires() {
    let broker = broker(|config| config.jwt_leeway = Duration::ZERO).await;
    let (calls_tx, mut calls) = tokio::sync::mpsc::unbounded_channel();
    let client = tickwire_client::Client::builder(broker.ws_url())
        .token_provider(move || {
            let _ = calls_tx.send(());
            async move {
                let mut c = claims(&["stocks.>"], &[]);
                c["exp"] = json!(now() + 4);
                Ok(hs256(&c))
            }
        })
        .connect()
        .await
        .expect("connect with the provider's token");
    let mut sub = client.subscribe("stocks.*").await.expect("granted");
    // The connect's token, then two refreshes: by the second one the first
    // token (4 s) has expired, and the connection must still be the same.
    for _ in 0..3 {
        tokio::time::timeout(WAIT, calls.recv())
            .await
            .expect("a token in time")
            .expect("provider alive");
    }
    let closed_4003 =
        tickwire_e2e::metric_with_label(broker.addr, "tickwire_closes_total", "code", "4003").await;
    assert_eq!(closed_4003, 0.0, "a refresh kept the connection open");
    assert!(matches!(
        *client.state().borrow(),
        tickwire_client::ConnectionState::Connected
    ));
    let mut admin = connect(&broker, &hs256(&claims(&[], &[">"]))).await;
    admin.publish_acked("stocks.AAPL", b"still").await;
    assert_eq!(
        &tickwire_e2e::sdk::recv(&mut sub).await.payload()[..],
        b"still"
    );
}

/// Reads lines of `log` until one contains `needle`; returns it.
async fn wait_for_line(
    log: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    needle: &str,
) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            match log.next_line().await.expect("read stderr") {
                Some(line) if line.contains(needle) => return line,
                Some(_) => {}
                None => panic!("stderr ended before a line with {needle:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no line with {needle:?} in time"))
}

#[tokio::test]
async fn sighup_reloads_the_keys_of_the_real_binary_and_keeps_connections() {
    use tokio::io::AsyncBufReadExt;

    let old_secret = b"the old secret of the binary, at least 32 bytes";
    let new_secret = b"the new secret of the binary, at least 32 bytes";
    let file = temp_file("sighup-secret", old_secret);
    let file_arg = file.to_str().expect("UTF-8 path");
    let mut serve = tickwire(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--jwt-hmac-secret-file",
        file_arg,
        "--log-level",
        "info",
    ])
    .spawn()
    .expect("start tickwire serve");
    let stdout = serve.stdout.take().expect("stdout");
    let (addr, _) = read_banner(&mut tokio::io::BufReader::new(stdout).lines()).await;
    let mut log = tokio::io::BufReader::new(serve.stderr.take().expect("stderr")).lines();

    let c = claims(&[">"], &[">"]);
    let old_token = sign(Algorithm::HS256, &EncodingKey::from_secret(old_secret), &c);
    let new_token = sign(Algorithm::HS256, &EncodingKey::from_secret(new_secret), &c);
    let value = format!("Bearer {old_token}");
    let mut connected = RawClient::connect_with(addr, "/ws", &[("Authorization", &value)]).await;
    let (status, _) = try_handshake(addr, &bearer(&new_token)).await;
    assert_eq!(status, 401, "the new secret is not in use yet");

    std::fs::write(&file, new_secret).expect("rewrite the secret");
    signal(&serve, "-HUP");
    let done = wait_for_line(&mut log, "reload done").await;
    assert!(done.contains("keys=true"), "{done}");

    let (status, text) = try_handshake(addr, &bearer(&new_token)).await;
    assert_eq!(status, 101, "{text}");
    let (status, _) = try_handshake(addr, &bearer(&old_token)).await;
    assert_eq!(status, 401);
    still_open(&mut connected).await;
    connected.subscribe("after.reload").await;
}
