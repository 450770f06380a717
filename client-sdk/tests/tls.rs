//! `wss://` against a fake broker behind TLS with a private CA.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use common::{Answer, FakeBroker, answer_upgrade, within};
use tickwire_client::{Client, Error, TlsRoots};
use tickwire_protocol::ServerMessage;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

fn acceptor() -> TlsAcceptor {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(fixture("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

#[tokio::test]
async fn wss_with_a_custom_ca_file() {
    let broker = FakeBroker::bind().await;
    let url = format!("wss://localhost:{}", broker.addr.port());
    let builder = Client::builder(&url).tls_roots(TlsRoots::CaFile(fixture("ca.pem")));
    let acceptor = acceptor();
    let (client, mut conn) = within("connect over TLS", async {
        tokio::join!(builder.connect(), async {
            let tcp = broker.accept_tcp().await;
            let tls = acceptor.accept(tcp).await.expect("TLS accept");
            answer_upgrade(Box::new(tls), Answer::Upgrade).await.0
        })
    })
    .await;
    let client = client.expect("connect over wss");

    let (sub, _) = within("subscribe", async {
        tokio::join!(
            client.subscribe("secure.*"),
            conn.expect_subscribe("secure.*")
        )
    })
    .await;
    let mut sub = sub.unwrap();
    conn.deliver("secure.x", 1, b"encrypted").await;
    let msg = within("delivery", sub.recv()).await.unwrap();
    assert_eq!(&msg.payload()[..], b"encrypted");

    let (seq, ()) = within("publish_acked", async {
        tokio::join!(client.publish_acked("secure.y", &"hi"), async {
            let common::Req::Publish { id: Some(id), .. } = conn.recv().await else {
                panic!("expected PUBLISH");
            };
            conn.send(ServerMessage::Published { id, seq: 3 }).await;
        })
    })
    .await;
    assert_eq!(seq.unwrap(), 3);
}

#[tokio::test]
async fn wss_by_ip_address() {
    let broker = FakeBroker::bind().await;
    let url = format!("wss://127.0.0.1:{}", broker.addr.port());
    let builder = Client::builder(&url).tls_roots(TlsRoots::CaFile(fixture("ca.pem")));
    let acceptor = acceptor();
    let (client, _conn) = within("connect over TLS", async {
        tokio::join!(builder.connect(), async {
            let tcp = broker.accept_tcp().await;
            let tls = acceptor.accept(tcp).await.expect("TLS accept");
            answer_upgrade(Box::new(tls), Answer::Upgrade).await.0
        })
    })
    .await;
    client.expect("connect over wss to an IP address");
}

#[tokio::test]
async fn untrusted_certificate_is_a_tls_error() {
    let broker = FakeBroker::bind().await;
    let url = format!("wss://localhost:{}", broker.addr.port());
    // Default roots (webpki) do not include the test CA.
    let builder = Client::builder(&url);
    let acceptor = acceptor();
    let (client, ()) = within("connect over TLS", async {
        tokio::join!(builder.connect(), async {
            let tcp = broker.accept_tcp().await;
            assert!(acceptor.accept(tcp).await.is_err());
        })
    })
    .await;
    let err = client.unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}
