//! Certificates for the TLS tests: a private CA made in the test, the
//! certificates it issues written as PEM files, and a raw TLS client.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A fresh directory for one test's files, under the system's temporary
/// directory; removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `tickwire-<label>-<pid>-<n>`.
    pub fn new(label: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("tickwire-{label}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temporary directory");
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    ca_file: PathBuf,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate (PEM).
    pub cert: PathBuf,
    /// The private key (PEM, PKCS#8).
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its certificate written to `dir/<name>.pem`.
    pub fn new(dir: &Path, name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let ca_file = dir.join(format!("{name}.pem"));
        std::fs::write(&ca_file, issuer.pem()).expect("write CA file");
        TestCa { issuer, ca_file }
    }

    /// The PEM file of the CA's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// Issues a certificate with common name `cn` and subject alternative
    /// names `sans` (DNS names or IP addresses), written to
    /// `dir/<file>.pem` and `dir/<file>.key`.
    pub fn issue(&self, dir: &Path, file: &str, cn: &str, sans: &[&str]) -> CertFiles {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("certificate params");
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let files = CertFiles {
            cert: dir.join(format!("{file}.pem")),
            key: dir.join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write key");
        files
    }

    /// A server certificate for `localhost` and `127.0.0.1`.
    pub fn server_cert(&self, dir: &Path, file: &str) -> CertFiles {
        self.issue(dir, file, "localhost", &["localhost", "127.0.0.1"])
    }
}

/// Connects to `addr` over TLS, trusting only `ca_file`, presenting
/// `client` if given; `Err` is the handshake's error.
pub async fn tls_connect(
    addr: SocketAddr,
    ca_file: &Path,
    client: Option<&CertFiles>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca_file).expect("read CA file") {
        roots.add(cert.expect("CA certificate")).expect("add root");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(files) => {
            let chain = rustls_pki_types::CertificateDer::pem_file_iter(&files.cert)
                .expect("read client certificate")
                .collect::<Result<Vec<_>, _>>()
                .expect("client certificate");
            let key =
                rustls_pki_types::PrivateKeyDer::from_pem_file(&files.key).expect("client key");
            builder
                .with_client_auth_cert(chain, key)
                .expect("client identity")
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("server name");
    TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

/// Sends one HTTP/1.1 request over TLS (trusting `ca_file`) and returns
/// (status, body).
pub async fn https(
    addr: SocketAddr,
    ca_file: &Path,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let stream = tls_connect(addr, ca_file, None)
        .await
        .expect("TLS handshake");
    crate::http_on(stream, addr, method, path, body).await
}
