//! Establishing a connection: name resolution, TCP, optional TLS and the
//! WebSocket handshake, all under one timeout.

use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{Config, TlsRoots, TokenProvider, token_expiry};
use crate::error::{Error, Result};
use crate::handshake::{self, Failure};
use crate::url::BrokerUrl;

/// A TCP stream, plain or wrapped in TLS.
#[derive(Debug)]
pub(crate) enum MaybeTlsStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An established WebSocket connection, before any frame is read.
#[derive(Debug)]
pub(crate) struct Connection {
    pub stream: MaybeTlsStream,
    /// Bytes received right after the handshake response.
    pub leftover: BytesMut,
    /// When the token from the token provider expires: the connection
    /// refreshes it before then. `None` without a provider.
    pub token_expires: Option<SystemTime>,
    /// permessage-deflate was agreed: `Some(reset)`, `reset` telling
    /// whether the broker compresses each message on its own.
    pub inflate: Option<bool>,
}

/// Everything needed to (re)connect; cheap to share with the reconnect loop.
pub(crate) struct Target {
    pub url: BrokerUrl,
    pub token: Option<String>,
    pub token_provider: Option<TokenProvider>,
    pub connect_timeout: Duration,
    pub tls: Option<TlsConnector>,
    /// Offer permessage-deflate.
    pub compression: bool,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Builds the target, loading TLS roots once for `wss://` URLs.
    pub fn new(url: BrokerUrl, config: &Config) -> Result<Self> {
        let tls = if url.tls {
            let client_config = match &config.tls_config {
                Some(c) => c.clone(),
                None => Arc::new(build_tls_config(
                    &config.tls_roots,
                    config.tls_client_identity.as_ref(),
                    &url.host,
                )?),
            };
            Some(TlsConnector::from(client_config))
        } else {
            None
        };
        Ok(Target {
            url,
            token: config.token.clone(),
            token_provider: config.token_provider.clone(),
            connect_timeout: config.connect_timeout,
            tls,
            compression: config.compression,
        })
    }

    /// One connection attempt, bounded by the connect timeout.
    pub async fn connect(&self) -> Result<Connection> {
        match tokio::time::timeout(self.connect_timeout, self.connect_inner()).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                operation: "connect",
                after: self.connect_timeout,
            }),
        }
    }

    async fn connect_inner(&self) -> Result<Connection> {
        // Ask for the token first: a slow provider holds no connection open.
        let token = match &self.token_provider {
            Some(provider) => Some(provider.fetch().await?),
            None => self.token.clone(),
        };
        let tcp = self.connect_tcp().await?;
        let mut stream = match &self.tls {
            None => MaybeTlsStream::Plain(tcp),
            Some(connector) => {
                let name =
                    ServerName::try_from(self.url.host.clone()).map_err(|e| Error::InvalidUrl {
                        url: self.url.authority(),
                        reason: format!("not a valid TLS server name: {e}"),
                    })?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|source| Error::Tls {
                        host: self.url.host.clone(),
                        source,
                    })?;
                MaybeTlsStream::Tls(Box::new(tls))
            }
        };
        let offer = self.compression;
        let (leftover, inflate) =
            handshake::handshake(&mut stream, &self.url, token.as_deref(), offer)
                .await
                .map_err(|failure| match failure {
                    Failure::Handshake(e) => Error::Handshake(e),
                    Failure::Io(source) => Error::Connect {
                        addr: self.url.authority(),
                        source,
                    },
                })?;
        Ok(Connection {
            stream,
            leftover,
            inflate,
            token_expires: token
                .as_deref()
                .filter(|_| self.token_provider.is_some())
                .and_then(token_expiry),
        })
    }

    async fn connect_tcp(&self) -> Result<TcpStream> {
        let addr = self.url.authority();
        let addrs: Vec<_> = tokio::net::lookup_host((self.url.host.as_str(), self.url.port))
            .await
            .map_err(|source| Error::Connect {
                addr: addr.clone(),
                source,
            })?
            .collect();
        let mut last_err = None;
        let mut all_refused = true;
        for sock_addr in &addrs {
            match TcpStream::connect(sock_addr).await {
                Ok(stream) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!("could not set TCP_NODELAY: {e}");
                    }
                    return Ok(stream);
                }
                Err(e) => {
                    tracing::debug!("connecting to {sock_addr} failed: {e}");
                    all_refused &= e.kind() == io::ErrorKind::ConnectionRefused;
                    last_err = Some(e);
                }
            }
        }
        match last_err {
            Some(_) if all_refused => Err(Error::ConnectionRefused { addr }),
            Some(source) => Err(Error::Connect { addr, source }),
            None => Err(Error::Connect {
                addr,
                source: io::Error::new(io::ErrorKind::NotFound, "name resolved to no address"),
            }),
        }
    }
}

/// A rustls client configuration with the requested roots, the client
/// certificate `(cert file, key file)` if any, and the `ring` crypto provider
/// (chosen explicitly so that applications enabling another provider
/// elsewhere don't make this ambiguous).
fn build_tls_config(
    roots: &TlsRoots,
    identity: Option<&(PathBuf, PathBuf)>,
    host: &str,
) -> Result<rustls::ClientConfig> {
    let tls_err = |msg: String| Error::Tls {
        host: host.to_owned(),
        source: io::Error::other(msg),
    };
    let mut store = RootCertStore::empty();
    match roots {
        TlsRoots::WebPki => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        TlsRoots::Native => {
            let loaded = rustls_native_certs::load_native_certs();
            for err in &loaded.errors {
                tracing::warn!("while loading system root certificates: {err}");
            }
            let (added, ignored) = store.add_parsable_certificates(loaded.certs);
            tracing::debug!("loaded {added} system root certificates ({ignored} ignored)");
            if added == 0 {
                return Err(tls_err("no usable system root certificates found".into()));
            }
        }
        TlsRoots::CaFile(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| tls_err(format!("cannot read CA file {}: {e}", path.display())))?
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| tls_err(format!("cannot parse CA file {}: {e}", path.display())))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(tls_err(format!(
                    "CA file {} contains no usable certificate",
                    path.display()
                )));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(store);
    let Some((cert_file, key_file)) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| {
            tls_err(format!(
                "cannot read client certificate {}: {e}",
                cert_file.display()
            ))
        })?;
    if chain.is_empty() {
        return Err(tls_err(format!(
            "client certificate file {} contains no certificate",
            cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        tls_err(format!(
            "cannot read client key {}: {e}",
            key_file.display()
        ))
    })?;
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|e| tls_err(format!("unusable client certificate: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webpki_config_builds() {
        assert!(build_tls_config(&TlsRoots::WebPki, None, "example.com").is_ok());
    }

    #[test]
    fn missing_ca_file_is_a_tls_error() {
        let err = build_tls_config(
            &TlsRoots::CaFile("/nonexistent/ca.pem".into()),
            None,
            "example.com",
        )
        .unwrap_err();
        assert!(matches!(err, Error::Tls { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/ca.pem"));
    }

    #[test]
    fn missing_client_certificate_is_a_tls_error() {
        let identity = (
            "/nonexistent/client.pem".into(),
            "/nonexistent/client.key".into(),
        );
        let err = build_tls_config(&TlsRoots::WebPki, Some(&identity), "example.com").unwrap_err();
        assert!(matches!(err, Error::Tls { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/client.pem"), "{err}");
    }
}
