//! TLS on the broker's port: loading the certificate, the key and the
//! optional client CA, swapping them on reload, and the verified client
//! certificate's identity.
//!
//! When `tls_cert_file` and `tls_key_file` are set, every connection
//! accepted by [`crate::server`] goes through a TLS handshake (TLS 1.2 or
//! 1.3, ALPN `http/1.1`) in its own task, under `handshake_timeout`, before
//! HTTP. [`TlsTerminator`] holds the current rustls configuration;
//! [`TlsTerminator::reload`] reads the files again and swaps it in for new
//! connections only, so established sessions are not touched, and a bad new
//! file leaves the old configuration in place.
//!
//! With `tls_client_ca_file`, clients must present a certificate that chains
//! to one of its CAs; the certificate's names become the connection's
//! [`PeerIdentity`].

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;
use tokio_rustls::TlsAcceptor;

/// Largest PEM file read (certificate chain, key, CA bundle).
const MAX_PEM_FILE: u64 = 1 << 20;

/// The ALPN protocol the broker offers: WebSocket upgrades and HTTP publish
/// are HTTP/1.1.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why the TLS configuration could not be loaded.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read --{flag} {path}: {source}; check the path and the file's permissions")]
    Read {
        /// The flag that names the file, e.g. `tls-cert-file`.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file's content is not what the flag expects.
    #[error("invalid --{flag} {path}: {message}")]
    Invalid {
        /// The flag that names the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong and what to give instead.
        message: String,
    },
    /// rustls refused the combination (e.g. the key does not match the
    /// certificate).
    #[error("cannot use --tls-cert-file {cert} with --tls-key-file {key}: {message}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        message: String,
    },
}

/// The files TLS is loaded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first (`tls_cert_file`).
    pub cert: PathBuf,
    /// PEM private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (`tls_key_file`).
    pub key: PathBuf,
    /// PEM CA bundle that client certificates must chain to
    /// (`tls_client_ca_file`); `None`: no client certificate is asked for.
    pub client_ca: Option<PathBuf>,
}

/// Reads a PEM file of at most [`MAX_PEM_FILE`] bytes.
pub(crate) fn read_pem(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    let read_err = |source| TlsError::Read {
        flag,
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_PEM_FILE + 1).read_to_end(&mut bytes))
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(TlsError::Invalid {
            flag,
            path: path.to_owned(),
            message: format!("larger than {MAX_PEM_FILE} bytes; is this the right file?"),
        });
    }
    Ok(bytes)
}

/// Reads every `CERTIFICATE` block of a PEM file; at least one.
pub(crate) fn read_certs(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let invalid = |message: String| TlsError::Invalid {
        flag,
        path: path.to_owned(),
        message,
    };
    let bytes = read_pem(flag, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not valid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(invalid(
            "no CERTIFICATE block found; give a PEM file with -----BEGIN CERTIFICATE-----".into(),
        ));
    }
    Ok(certs)
}

impl TlsFiles {
    /// Reads the files and builds the rustls server configuration.
    pub fn load(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let certs = read_certs("tls-cert-file", &self.cert)?;
        let key_bytes = read_pem("tls-key-file", &self.key)?;
        let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::Invalid {
            flag: "tls-key-file",
            path: self.key.clone(),
            message: format!(
                "no usable private key ({e}); give a PEM PKCS#8, RSA or EC private key"
            ),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config_err = |message: String| TlsError::Config {
            cert: self.cert.clone(),
            key: self.key.clone(),
            message,
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| config_err(e.to_string()))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let flag = "tls-client-ca-file";
                let mut roots = RootCertStore::empty();
                for cert in read_certs(flag, path)? {
                    roots.add(cert).map_err(|e| TlsError::Invalid {
                        flag,
                        path: path.clone(),
                        message: format!("not a usable CA certificate: {e}"),
                    })?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .map_err(|e| TlsError::Invalid {
                            flag,
                            path: path.clone(),
                            message: e.to_string(),
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| config_err(e.to_string()))?;
        config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        Ok(Arc::new(config))
    }
}

/// The broker's TLS termination: the files and the configuration loaded
/// from them last.
#[derive(Debug)]
pub struct TlsTerminator {
    files: TlsFiles,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

impl TlsTerminator {
    /// Loads `files`.
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let config = files.load()?;
        Ok(TlsTerminator {
            files,
            current: RwLock::new(config),
        })
    }

    /// An acceptor with the current configuration, for one new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().clone())
    }

    /// Reads the files again and uses them for new connections. On error the
    /// previous configuration stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = self.files.load()?;
        *self.current.write() = config;
        Ok(())
    }

    /// The files this terminator loads.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// Who the client is, from the certificate it presented and the broker
/// verified against `tls_client_ca_file`.
///
/// It is recorded on the connection (and logged at `debug`); with
/// `tls_client_grants_file`, authorization maps it to grants
/// ([`crate::cert_grants`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The subject's common name (CN), if it has one (the first, if several).
    pub common_name: Option<String>,
    /// The DNS names and URIs of the subject alternative name extension.
    pub alt_names: Vec<String>,
}

impl PeerIdentity {
    /// Reads the identity of a verified end-entity certificate; `None` if it
    /// does not parse.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Option<PeerIdentity> {
        let parsed = webpki::EndEntityCert::try_from(cert).ok()?;
        let alt_names = parsed
            .valid_dns_names()
            .chain(parsed.valid_uri_names())
            .map(str::to_owned)
            .collect();
        Some(PeerIdentity {
            common_name: common_name(parsed.subject()),
            alt_names,
        })
    }

    /// The name to map to permissions: the common name, else the first
    /// alternative name.
    pub fn name(&self) -> Option<&str> {
        self.common_name
            .as_deref()
            .or(self.alt_names.first().map(String::as_str))
    }
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.common_name {
            Some(cn) => write!(f, "CN={cn}")?,
            None => f.write_str("(no CN)")?,
        }
        if !self.alt_names.is_empty() {
            write!(f, " SAN={}", self.alt_names.join(","))?;
        }
        Ok(())
    }
}

/// Splits one DER element off `input`: `(tag, contents, rest)`.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The first common name (OID 2.5.4.3) of a DER subject name (the contents
/// of its SEQUENCE), as text.
fn common_name(mut subject: &[u8]) -> Option<String> {
    const SET: u8 = 0x31;
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    while let Some((tag, mut rdn, rest)) = der_element(subject) {
        subject = rest;
        if tag != SET {
            return None;
        }
        while let Some((tag, attribute, rest)) = der_element(rdn) {
            rdn = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, value) = der_element(attribute)?;
            if tag == OID && oid == CN {
                // UTF8String, PrintableString, IA5String, T61String: text.
                let (_, text, _) = der_element(value)?;
                return std::str::from_utf8(text).ok().map(str::to_owned);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_is_found_among_other_attributes() {
        // SET { SEQ { OID O, "Acme" } }, SET { SEQ { OID CN, "svc-1" } }
        let subject = [
            0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x04, b'A', b'c', b'm',
            b'e', 0x31, 0x0e, 0x30, 0x0c, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x05, b's', b'v',
            b'c', b'-', b'1',
        ];
        assert_eq!(common_name(&subject).as_deref(), Some("svc-1"));
        assert_eq!(common_name(&subject[..15]), None);
        assert_eq!(common_name(&subject[..20]), None);
        assert_eq!(common_name(&[]), None);
    }

    #[test]
    fn identity_of_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["svc.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "svc-1");
        let cert = params.self_signed(&key).unwrap();
        let identity = PeerIdentity::from_certificate(cert.der()).unwrap();
        assert_eq!(identity.common_name.as_deref(), Some("svc-1"));
        assert_eq!(identity.alt_names, ["svc.example"]);
        assert_eq!(identity.name(), Some("svc-1"));
        assert_eq!(identity.to_string(), "CN=svc-1 SAN=svc.example");

        let mut params = rcgen::CertificateParams::new(vec!["only.example".to_owned()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        let identity = PeerIdentity::from_certificate(cert.der()).unwrap();
        assert_eq!(identity.name(), Some("only.example"));
    }

    #[test]
    fn missing_files_say_which_flag() {
        let files = TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
            client_ca: None,
        };
        let err = files.load().unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read --tls-cert-file /nonexistent/cert.pem"),
            "{err}"
        );
    }
}
