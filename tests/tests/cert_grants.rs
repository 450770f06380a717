//! Client certificates mapped to grants (`--tls-client-grants-file`): a
//! broker with TLS, a client CA and an HMAC key, raw WebSocket clients and
//! HTTP publish over TLS presenting certificates made by a test CA.
//!
//! Tests that leave connections open end without a graceful broker
//! shutdown, which would wait out the close timeout for each of them.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use tickwire_e2e::pki::{CertFiles, TempDir, TestCa, tls_connect};
use tickwire_e2e::{RawClient, TestBroker, http_on_with, try_handshake_on};

const SECRET: &[u8] = b"an HMAC secret of at least 32 bytes, for tests";

const GRANTS: &str = r#"
[[client]]
name = "alice"
sub = ["stocks.>"]
pub = ["iot.site1.>"]
"#;

/// The certificates and files of one test.
struct Pki {
    dir: TempDir,
    ca: TestCa,
    clients: TestCa,
    grants: PathBuf,
}

impl Pki {
    fn new(label: &str) -> Pki {
        let dir = TempDir::new(label);
        let ca = TestCa::new(dir.path(), "ca");
        let clients = TestCa::new(dir.path(), "clients");
        let grants = dir.path().join("grants.toml");
        std::fs::write(&grants, GRANTS).expect("write grants file");
        Pki {
            dir,
            ca,
            clients,
            grants,
        }
    }

    /// A client certificate with common name `cn`.
    fn client(&self, cn: &str) -> CertFiles {
        self.clients.issue(self.dir.path(), cn, cn, &[])
    }

    /// A broker serving TLS, requiring client certificates, with
    /// [`GRANTS`] and an HMAC key.
    async fn broker(&self) -> TestBroker {
        let server = self.ca.server_cert(self.dir.path(), "server");
        let secret = self.dir.path().join("secret");
        std::fs::write(&secret, SECRET).expect("write secret");
        TestBroker::start(|config| {
            config.tls_cert_file = Some(server.cert.clone());
            config.tls_key_file = Some(server.key.clone());
            config.tls_client_ca_file = Some(self.clients.ca_file().to_owned());
            config.tls_client_grants_file = Some(self.grants.clone());
            config.jwt_hmac_secret_file = vec![secret];
        })
        .await
    }

    /// A raw WebSocket client over TLS presenting `identity`, with extra
    /// `headers`.
    async fn connect(
        &self,
        broker: &TestBroker,
        identity: &CertFiles,
        headers: &[(&str, &str)],
    ) -> RawClient {
        let stream = self.tls(broker, identity).await;
        RawClient::connect_on(stream, broker.addr, "/ws", headers).await
    }

    /// A TLS connection to `broker` presenting `identity`.
    async fn tls(
        &self,
        broker: &TestBroker,
        identity: &CertFiles,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        tls_connect(broker.addr, self.ca.ca_file(), Some(identity))
            .await
            .expect("TLS handshake with a client certificate")
    }

    /// An HTTP publish on `topic` over TLS presenting `identity`, with
    /// extra header lines; the status and body.
    async fn publish(
        &self,
        broker: &TestBroker,
        identity: &CertFiles,
        topic: &str,
        extra_headers: &str,
    ) -> (u16, String) {
        let stream = self.tls(broker, identity).await;
        let path = format!("/v1/publish/{topic}");
        let (status, _, body) =
            http_on_with(stream, broker.addr, "POST", &path, extra_headers, b"x").await;
        (status, body)
    }
}

/// An HS256 token valid for an hour granting `sub` and `publ`.
fn token(sub: &[&str], publ: &[&str]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let claims = json!({"exp": now + 3600, "iat": now, "tw": {"sub": sub, "pub": publ}});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("sign token")
}

/// A tokenless upgrade over TLS presenting `identity`: its status.
async fn upgrade_status(pki: &Pki, broker: &TestBroker, identity: &CertFiles) -> u16 {
    let stream = pki.tls(broker, identity).await;
    try_handshake_on(stream, broker.addr, "/ws", "").await.0
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn a_named_certificate_gets_exactly_its_grants_over_websocket() {
    let pki = Pki::new("certgrants-ws");
    let broker = pki.broker().await;
    let alice = pki.client("alice");

    let mut client = pki.connect(&broker, &alice, &[]).await;
    client.subscribe("stocks.>").await;
    client.subscribe("stocks.AAPL").await;
    client.subscribe_forbidden("news.>").await;
    client.subscribe_forbidden(">").await;
    client.publish_acked("iot.site1.t1", b"21.5").await;
    client.publish_forbidden("iot.site2.t1", true).await;
    client.publish_forbidden("stocks.AAPL", true).await;

    // A certificate without an entry, and no anonymous grants: 401.
    let eve = pki.client("eve");
    assert_eq!(upgrade_status(&pki, &broker, &eve).await, 401);

    // A token works alongside a certificate, and decides alone: its grants,
    // not the certificate's.
    let news = bearer(&token(&["news.>"], &[]));
    let mut eve_client = pki
        .connect(&broker, &eve, &[("Authorization", &news)])
        .await;
    eve_client.subscribe("news.eu").await;
    let mut alice_with_token = pki
        .connect(&broker, &alice, &[("Authorization", &news)])
        .await;
    alice_with_token.subscribe("news.eu").await;
    alice_with_token.subscribe_forbidden("stocks.>").await;

    // A bad token is not saved by a named certificate.
    let stream = pki.tls(&broker, &alice).await;
    let (status, _) =
        try_handshake_on(stream, broker.addr, "/ws", "Authorization: Bearer nope\r\n").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn a_named_certificate_publishes_over_http_within_its_grants() {
    let pki = Pki::new("certgrants-http");
    let broker = pki.broker().await;
    let alice = pki.client("alice");
    let eve = pki.client("eve");

    let (status, body) = pki.publish(&broker, &alice, "iot.site1.t1", "").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = pki.publish(&broker, &alice, "iot.site2.t1", "").await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = pki.publish(&broker, &eve, "iot.site1.t1", "").await;
    assert_eq!(status, 401, "{body}");
    let header = format!("Authorization: {}\r\n", bearer(&token(&[], &["iot.>"])));
    let (status, body) = pki.publish(&broker, &eve, "iot.site2.t1", &header).await;
    assert_eq!(status, 200, "{body}");

    // The grants file is reloaded with the keys; a bad one keeps the old.
    write(
        &pki.grants,
        "[[client]]\nname = \"alice\"\npub = [\"a..b\"]\n",
    );
    let err = broker.reload().expect_err("a bad grants file").to_string();
    assert!(
        err.contains("--tls-client-grants-file") && err.contains("a..b"),
        "{err}"
    );
    let (status, _) = pki.publish(&broker, &alice, "iot.site1.t1", "").await;
    assert_eq!(status, 200);
    write(
        &pki.grants,
        "[[client]]\nname = \"eve\"\npub = [\"iot.site2.>\"]\n",
    );
    assert!(broker.reload().expect("reload").keys);
    let (status, _) = pki.publish(&broker, &eve, "iot.site2.t1", "").await;
    assert_eq!(status, 200);
    let (status, _) = pki.publish(&broker, &alice, "iot.site1.t1", "").await;
    assert_eq!(status, 401);
    broker.stop().await;
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write grants file");
}
