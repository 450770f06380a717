//! One `GET` of the server API over HTTP/1.1 ([`crate::http1`]), plain or
//! TLS (`https://`), on a fresh connection, within a deadline: the status
//! and the JSON body.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::http1::{self, Framing};

use super::{Exit, Failure};

/// Largest answer body accepted (a history page of 1000 large messages).
const MAX_BODY: usize = 256 << 20;

/// Where the broker's HTTP API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `host:port`, for the connection and the `Host` header.
    pub authority: String,
    /// The host alone (no brackets), for TLS.
    pub host: String,
    /// Whether to speak TLS (`https://`, `wss://`).
    pub tls: bool,
}

impl Origin {
    /// The origin of `url`: `http(s)://HOST[:PORT]` (any path is ignored),
    /// or the `ws(s)://` URL the other commands take (`TICKWIRE_URL`),
    /// whose HTTP API is on the same port.
    pub fn parse(url: &str) -> Result<Origin, Failure> {
        let usage = |why: &str| Failure::new(Exit::Usage, format!("invalid --url `{url}`: {why}"));
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| usage("write http://HOST:PORT"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "http" | "ws" => false,
            "https" | "wss" => true,
            _ => return Err(usage("write http://HOST:PORT or https://HOST:PORT")),
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if authority.is_empty() || authority.contains('@') {
            return Err(usage("no host, or credentials in the URL (use --token)"));
        }
        let (host, has_port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (host, true),
            _ => (authority, false),
        };
        let port = if tls { 443 } else { 80 };
        Ok(Origin {
            authority: match has_port {
                true => authority.to_owned(),
                false => format!("{authority}:{port}"),
            },
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            tls,
        })
    }
}

/// The TLS client configuration: the CA certificates of `ca_file`, or the
/// public web roots compiled in.
fn tls_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, Failure> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let unusable = |why: String| {
                Failure::new(Exit::Usage, format!("--ca-file {}: {why}", path.display()))
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| unusable(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| unusable(e.to_string()))?;
            if roots.add_parsable_certificates(certs).0 == 0 {
                return Err(unusable("no usable certificate".to_owned()));
            }
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Failure::new(Exit::Failed, format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `GET target` (path and query) with `token` as bearer, over TLS when the
/// origin asks (trusting `ca_file`, or the public roots); the status and
/// the body as JSON. Not JSON, a connection or TLS failure (exit 3) or the
/// `timeout` (exit 4) are failures.
pub async fn get_json(
    origin: &Origin,
    target: &str,
    token: Option<&str>,
    ca_file: Option<&Path>,
    timeout: Duration,
) -> Result<(u16, Value), Failure> {
    let tls = match origin.tls {
        true => Some(TlsConnector::from(tls_config(ca_file)?)),
        false => None,
    };
    let request = http1::get_request(&origin.authority, target, "application/json", token);
    let exchange = async {
        let connect = |e: String| {
            Failure::new(
                Exit::Connect,
                format!("cannot connect to {}: {e}", origin.authority),
            )
        };
        let stream = TcpStream::connect(&origin.authority)
            .await
            .map_err(|e| connect(e.to_string()))?;
        let answer = match tls {
            None => exchange_on(stream, &request).await,
            Some(connector) => {
                let name = ServerName::try_from(origin.host.clone())
                    .map_err(|e| connect(format!("bad TLS name {}: {e}", origin.host)))?;
                let stream = connector
                    .connect(name, stream)
                    .await
                    .map_err(|e| connect(format!("TLS handshake failed: {e}")))?;
                exchange_on(stream, &request).await
            }
        };
        let (status, body) =
            answer.map_err(|e| Failure::new(Exit::Failed, format!("{}: {e}", origin.authority)))?;
        let json = serde_json::from_slice(&body).map_err(|e| {
            Failure::new(
                Exit::Failed,
                format!(
                    "{}: answer {status} is not JSON ({e}): {}",
                    origin.authority,
                    String::from_utf8_lossy(&body[..body.len().min(200)])
                ),
            )
        })?;
        Ok((status, json))
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| {
        Failure::new(
            Exit::Timeout,
            format!(
                "{} did not answer within {} (--timeout)",
                origin.authority,
                humantime::format_duration(timeout)
            ),
        )
    })?
}

/// Sends `request` on `stream` and reads the answer.
async fn exchange_on(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    request: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    stream
        .write_all(request)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    read_response(&mut stream).await
}

/// Reads one response: its status and its whole body.
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> Result<(u16, Vec<u8>), String> {
    let mut raw = Vec::new();
    let head = loop {
        if let Some(head) = http1::parse_head(&raw)? {
            break head;
        }
        read_more(stream, &mut raw).await?;
    };
    raw.drain(..head.len());
    let body = match Framing::of(&head) {
        Framing::Length(n) if n > MAX_BODY => return Err(format!("answer of {n} bytes")),
        Framing::Length(n) => {
            while raw.len() < n {
                read_more(stream, &mut raw).await?;
            }
            raw.truncate(n);
            raw
        }
        Framing::Chunked(mut chunked) => {
            let mut body = Vec::new();
            loop {
                let used = chunked.decode(&raw, &mut body)?;
                raw.drain(..used);
                if chunked.done() {
                    break body;
                }
                if body.len() > MAX_BODY {
                    return Err(format!("answer over {MAX_BODY} bytes"));
                }
                read_more(stream, &mut raw).await?;
            }
        }
        Framing::UntilClose => {
            while read_more(stream, &mut raw).await.is_ok() {
                if raw.len() > MAX_BODY {
                    return Err(format!("answer over {MAX_BODY} bytes"));
                }
            }
            raw
        }
    };
    Ok((head.status, body))
}

async fn read_more(stream: &mut (impl AsyncRead + Unpin), raw: &mut Vec<u8>) -> Result<(), String> {
    raw.reserve(16 * 1024);
    match stream.read_buf(raw).await {
        Ok(0) => Err("the broker closed the connection before answering".into()),
        Ok(_) => Ok(()),
        Err(e) => Err(format!("read failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_origin() {
        let origin = |url: &str| Origin::parse(url).map(|o| (o.authority, o.host, o.tls));
        let of = |a: &str, h: &str, tls: bool| (a.to_owned(), h.to_owned(), tls);
        assert_eq!(
            origin("http://127.0.0.1:8080").unwrap(),
            of("127.0.0.1:8080", "127.0.0.1", false)
        );
        assert_eq!(
            origin("ws://127.0.0.1:9/ws").unwrap(),
            of("127.0.0.1:9", "127.0.0.1", false)
        );
        assert_eq!(
            origin("http://broker/x").unwrap(),
            of("broker:80", "broker", false)
        );
        assert_eq!(
            origin("https://broker").unwrap(),
            of("broker:443", "broker", true)
        );
        assert_eq!(origin("wss://b:8443/ws").unwrap(), of("b:8443", "b", true));
        assert_eq!(
            origin("http://[::1]:7").unwrap(),
            of("[::1]:7", "::1", false)
        );
        assert_eq!(
            origin("http://[::1]").unwrap(),
            of("[::1]:80", "::1", false)
        );
        for bad in ["ftp://a", "a:1", "http://", "http://u@a:1"] {
            assert_eq!(Origin::parse(bad).unwrap_err().exit, Exit::Usage, "{bad}");
        }
    }
}
