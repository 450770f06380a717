//! Authentication: verifying JWT bearer tokens and turning them into
//! [`Access`].
//!
//! Any configured key (`--jwt-hmac-secret-file`, `--jwt-public-key-file`,
//! `--jwks-file`) turns authentication on. A token is then checked for:
//!
//! * its signature, with an algorithm that follows the key type (HMAC
//!   secrets: HS256/384/512; RSA: RS*/PS*; EC: ES256/ES384; Ed25519: EdDSA).
//!   `alg: none` does not parse, and a token whose algorithm does not belong
//!   to a key's family is never checked against that key, so an HS256 token
//!   "signed" with a public key is refused. A token whose `kid` names a key
//!   of a JWK Set is checked against that key only;
//! * `exp` (required), `nbf` and `iat` (not in the future), each with the
//!   configured leeway;
//! * `aud` and `iss`, when `--jwt-audience` / `--jwt-issuer` are set;
//! * its grants claim (`--jwt-grants-claim`, default `tw`):
//!   `{"sub": [patterns], "pub": [patterns], "admin": bool}`; absent means
//!   no grants. `admin: true` lets the holder read the operational JSON
//!   endpoints (`/v1/stats`, `/v1/topics`); it grants no topic. `info`
//!   (any JSON value) is the client info of the connection's presence
//!   entries, converted to MessagePack here and refused over
//!   `max_presence_info_bytes`; the token's `sub` is their user.
//!
//! Refusals are one [`AuthError`] whose reason is for debug logs only; what
//! the client sees never says which check failed. Tokens are never logged.
//!
//! A verified TLS client certificate named in `--tls-client-grants-file`
//! ([`crate::cert_grants`]) stands in for a token: a connection that
//! presents such a certificate and no token gets the certificate's grants,
//! which do not expire. A token (or API key), when presented, decides
//! alone, whatever the certificate.
//!
//! [`Authenticator::reload_keys`] reads the key files (and the client
//! grants file) again and swaps the
//! keys in without touching open connections (for a SIGHUP handler).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::RwLock;
use serde::Deserialize;
use thiserror::Error;
use tickwire_protocol::topic::Pattern;

use crate::api_keys::ApiKeys;
use crate::cert_grants::{CertGrants, CertGrantsError};
use crate::config::BrokerConfig;
use crate::grants::{Access, Grants};
use crate::presence::info::info_to_msgpack;
use crate::tls::PeerIdentity;

/// Longest token accepted, in bytes; longer ones are refused unread.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Why the configured keys could not be loaded.
#[derive(Debug, Error)]
pub enum KeyError {
    /// A key file could not be read.
    #[error("cannot read key file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file does not hold a usable key.
    #[error("key file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The client certificate grants file could not be loaded.
    #[error(transparent)]
    ClientGrants(#[from] CertGrantsError),
}

/// Why a request was not authenticated. The reason is for debug logs; the
/// client only ever gets a generic 401.
#[derive(Debug, Error)]
pub enum AuthError {
    /// No token, and anonymous clients get nothing.
    #[error("no token, and anonymous access is not configured")]
    Missing,
    /// The token is longer than [`MAX_TOKEN_LEN`].
    #[error("token longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// The `Authorization` header is not one `Bearer` token.
    #[error("Authorization header is not `Bearer <token>`")]
    BadHeader,
    /// No configured key can check a token with this header.
    #[error("no key for algorithm {0:?} / this kid")]
    NoKey(Algorithm),
    /// Signature, format or standard claims check failed.
    #[error("{0}")]
    Invalid(#[from] jsonwebtoken::errors::Error),
    /// `iat` lies in the future beyond the leeway.
    #[error("iat is in the future")]
    IssuedInFuture,
    /// The grants claim is not of the documented shape.
    #[error("grants claim: {0}")]
    Grants(String),
    /// The client info (`info` of the grants claim) is too large.
    #[error("client info is {0} bytes, more than max_presence_info_bytes ({1})")]
    InfoTooLarge(usize, usize),
    /// The client info nests deeper than the broker reads back.
    #[error(
        "client info nests deeper than {} levels",
        tickwire_protocol::msgpack::MAX_SKIP_DEPTH
    )]
    InfoTooDeep,
    /// The `sub` claim is not a string.
    #[error("the sub claim is not a string")]
    BadSubject,
}

/// One verification key and the algorithms it may check.
struct VerifyKey {
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

impl VerifyKey {
    fn new(key: DecodingKey) -> Self {
        let algorithms = key.family().algorithms().to_vec();
        VerifyKey { key, algorithms }
    }
}

/// A verified token: what it grants and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The token's grants.
    pub grants: Grants,
    /// Its `exp`, as a time.
    pub expires: SystemTime,
    /// Its `sub` claim: the user of the connection's presence entries.
    pub user: Option<Arc<str>>,
    /// The `info` of its grants claim as MessagePack: the client info of
    /// the connection's presence entries.
    pub info: Option<Bytes>,
}

/// The outcome of authenticating a client: what it may do, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    /// What the client may do.
    pub access: Access,
    /// When its token expires, leeway included: a WebSocket connection is
    /// closed with 4003 then. `None`: no token, nothing expires.
    pub valid_until: Option<SystemTime>,
    /// The token's `sub`; `None` without a token (anonymous, API key,
    /// certificate).
    pub user: Option<Arc<str>>,
    /// The token's client info (MessagePack), for presence.
    pub info: Option<Bytes>,
}

impl Authorized {
    /// Everything allowed, for ever: authentication is off.
    pub fn open() -> Self {
        Authorized::granted(Access::Open, None)
    }

    /// `access` until `valid_until`, without a user or client info.
    pub fn granted(access: Access, valid_until: Option<SystemTime>) -> Self {
        Authorized {
            access,
            valid_until,
            user: None,
            info: None,
        }
    }
}

/// The grants claim as tokens carry it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsClaim {
    #[serde(default)]
    sub: Vec<String>,
    #[serde(default, rename = "pub")]
    publish: Vec<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    info: Option<serde_json::Value>,
}

/// The time claims checked here rather than by the JWT library.
#[derive(Debug, Deserialize)]
struct TimeClaims {
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
}

/// The key files named in the configuration.
#[derive(Debug, Clone)]
struct KeyFiles {
    hmac_secrets: Vec<PathBuf>,
    public_keys: Vec<PathBuf>,
    jwks: Vec<PathBuf>,
    api_keys: Vec<PathBuf>,
    client_grants: Option<PathBuf>,
}

/// The keys loaded from [`KeyFiles`].
struct KeySet {
    keys: Vec<VerifyKey>,
    jwks: HashMap<String, VerifyKey>,
    api_keys: ApiKeys,
    client_grants: CertGrants,
}

impl KeySet {
    /// Reads every key file.
    fn load(files: &KeyFiles) -> Result<KeySet, KeyError> {
        let mut keys = Vec::new();
        for path in &files.hmac_secrets {
            let secret = read_hmac_secret(path)?;
            keys.push(VerifyKey::new(DecodingKey::from_secret(&secret)));
        }
        for path in &files.public_keys {
            keys.push(VerifyKey::new(pem_key(path)?));
        }
        let mut jwks = HashMap::new();
        for path in &files.jwks {
            jwks_keys(path, &mut jwks)?;
        }
        let mut api_keys = ApiKeys::default();
        for path in &files.api_keys {
            let text =
                String::from_utf8(read(path)?).map_err(|_| invalid(path, "not UTF-8 text"))?;
            api_keys.parse(&text).map_err(|e| invalid(path, e))?;
        }
        let client_grants = match &files.client_grants {
            Some(path) => CertGrants::load(path)?,
            None => CertGrants::default(),
        };
        Ok(KeySet {
            keys,
            jwks,
            api_keys,
            client_grants,
        })
    }
}

/// Checks tokens against the configured keys.
pub struct Authenticator {
    files: KeyFiles,
    keys: RwLock<Arc<KeySet>>,
    validation: Validation,
    leeway: Duration,
    grants_claim: String,
    anonymous: Option<Grants>,
    /// With `--auth-message`: how long a tokenless connection may take to
    /// send `AUTH`.
    auth_message_within: Option<Duration>,
    /// `max_presence_info_bytes`: the largest client info accepted.
    max_info_bytes: usize,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of debug output.
        f.debug_struct("Authenticator")
            .field("files", &self.files)
            .field("grants_claim", &self.grants_claim)
            .field("anonymous", &self.anonymous)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })
}

fn invalid(path: &Path, message: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// Shortest HMAC secret accepted, in bytes (RFC 7518 section 3.2 asks for
/// at least the hash size; 32 bytes suit HS256).
pub const MIN_HMAC_SECRET_LEN: usize = 32;

/// Reads an HMAC secret file: its whole content, one trailing newline (`\n`
/// or `\r\n`) removed; at least [`MIN_HMAC_SECRET_LEN`] bytes.
pub fn read_hmac_secret(path: &Path) -> Result<Vec<u8>, KeyError> {
    let mut secret = read(path)?;
    if secret.ends_with(b"\n") {
        secret.pop();
        if secret.ends_with(b"\r") {
            secret.pop();
        }
    }
    if secret.len() < MIN_HMAC_SECRET_LEN {
        return Err(invalid(
            path,
            format!("an HMAC secret must be at least {MIN_HMAC_SECRET_LEN} bytes"),
        ));
    }
    Ok(secret)
}

/// Reads a PEM public key of whichever type it holds.
fn pem_key(path: &Path) -> Result<DecodingKey, KeyError> {
    let pem = read(path)?;
    DecodingKey::from_rsa_pem(&pem)
        .or_else(|_| DecodingKey::from_ec_pem(&pem))
        .or_else(|_| DecodingKey::from_ed_pem(&pem))
        .map_err(|_| invalid(path, "not a PEM RSA, EC or Ed25519 public key"))
}

/// Reads a JWK Set; every key needs a `kid`.
fn jwks_keys(path: &Path, out: &mut HashMap<String, VerifyKey>) -> Result<(), KeyError> {
    let text = read(path)?;
    let set: JwkSet =
        serde_json::from_slice(&text).map_err(|e| invalid(path, format!("not a JWK Set: {e}")))?;
    for jwk in &set.keys {
        let kid = jwk
            .common
            .key_id
            .clone()
            .ok_or_else(|| invalid(path, "every key of a JWK Set needs a kid"))?;
        let key =
            DecodingKey::from_jwk(jwk).map_err(|e| invalid(path, format!("key {kid:?}: {e}")))?;
        let mut verify = VerifyKey::new(key);
        if let Some(alg) = jwk.common.key_algorithm {
            let alg = Algorithm::from_str(&alg.to_string())
                .map_err(|_| invalid(path, format!("key {kid:?}: unsupported alg {alg}")))?;
            verify.algorithms.retain(|a| *a == alg);
            if verify.algorithms.is_empty() {
                return Err(invalid(
                    path,
                    format!("key {kid:?}: alg does not fit the key type"),
                ));
            }
        }
        if out.insert(kid.clone(), verify).is_some() {
            return Err(invalid(path, format!("kid {kid:?} appears twice")));
        }
    }
    Ok(())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn parse_patterns(list: Vec<String>) -> Result<Vec<Pattern>, AuthError> {
    list.into_iter()
        .map(|p| Pattern::new(p).map_err(|e| AuthError::Grants(e.to_string())))
        .collect()
}

impl Authenticator {
    /// Loads the keys named in `config`; `Ok(None)` when none is configured
    /// (authentication off).
    pub fn from_config(config: &BrokerConfig) -> Result<Option<Authenticator>, KeyError> {
        if !config.auth_enabled() {
            return Ok(None);
        }
        let files = KeyFiles {
            hmac_secrets: config.jwt_hmac_secret_file.clone(),
            public_keys: config.jwt_public_key_file.clone(),
            jwks: config.jwks_file.clone(),
            api_keys: config.api_key_file.clone(),
            client_grants: config.tls_client_grants_file.clone(),
        };
        let keys = KeySet::load(&files)?;

        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = config.jwt_leeway.as_secs();
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = !config.jwt_audience.is_empty();
        let mut required = vec!["exp"];
        if !config.jwt_audience.is_empty() {
            validation.set_audience(&config.jwt_audience);
            required.push("aud");
        }
        if !config.jwt_issuer.is_empty() {
            validation.set_issuer(&config.jwt_issuer);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);

        let both = config.allow_anonymous.iter().cloned();
        let anonymous = Grants {
            subscribe: both
                .clone()
                .chain(config.allow_anonymous_sub.iter().cloned())
                .collect(),
            publish: both
                .chain(config.allow_anonymous_pub.iter().cloned())
                .collect(),
            admin: false,
        };
        Ok(Some(Authenticator {
            files,
            keys: RwLock::new(Arc::new(keys)),
            validation,
            leeway: config.jwt_leeway,
            grants_claim: config.jwt_grants_claim.clone(),
            anonymous: (!anonymous.is_empty()).then_some(anonymous),
            auth_message_within: config.auth_message.then_some(config.handshake_timeout),
            max_info_bytes: config.max_presence_info_bytes,
        }))
    }

    /// Reads the key files (and the client grants file) again and, if every
    /// one loads, replaces the keys:
    /// tokens are checked against the new keys from then on, and open
    /// connections keep going. On error the old keys stay in use.
    pub fn reload_keys(&self) -> Result<(), KeyError> {
        let keys = KeySet::load(&self.files)?;
        *self.keys.write() = Arc::new(keys);
        Ok(())
    }

    /// What a client presenting `token` (or none) may do.
    pub fn authorize(&self, token: Option<&str>) -> Result<Authorized, AuthError> {
        match token {
            None => self
                .anonymous
                .clone()
                .map(|grants| Authorized::granted(Access::Granted(grants), None))
                .ok_or(AuthError::Missing),
            Some(token) => self.verify(token).map(|c| Authorized {
                access: Access::Granted(c.grants),
                valid_until: Some(c.expires + self.leeway),
                user: c.user,
                info: c.info,
            }),
        }
    }

    /// What a tokenless client presenting the verified certificate
    /// `identity` may do, if the client grants file names it: its grants,
    /// for ever.
    fn certificate(
        &self,
        token: Option<&str>,
        identity: Option<&PeerIdentity>,
    ) -> Option<Authorized> {
        if token.is_some() {
            return None;
        }
        let grants = self
            .keys
            .read()
            .client_grants
            .grants_for(identity?)?
            .clone();
        Some(Authorized::granted(Access::Granted(grants), None))
    }

    /// What a WebSocket upgrade presenting `token` (or none) and the client
    /// certificate `identity` (or none) may do: without a token, the
    /// certificate's grants if it has an entry; else as
    /// [`Authenticator::authorize`], except that with `--auth-message` a
    /// tokenless upgrade that anonymous grants do not cover is let in to
    /// send `AUTH` before the handshake timeout.
    pub fn authorize_upgrade(
        &self,
        token: Option<&str>,
        identity: Option<&PeerIdentity>,
    ) -> Result<Authorized, AuthError> {
        if let Some(authorized) = self.certificate(token, identity) {
            return Ok(authorized);
        }
        match (token, &self.anonymous, self.auth_message_within) {
            (None, None, Some(within)) => Ok(Authorized::granted(
                Access::AwaitingAuth,
                Some(SystemTime::now() + within),
            )),
            _ => self.authorize(token),
        }
    }

    /// What an HTTP publish presenting `token` (or none) and the client
    /// certificate `identity` (or none) may do: without a token, the
    /// certificate's grants if it has an entry; an API key grants its
    /// patterns; anything else is authorized as by
    /// [`Authenticator::authorize`].
    pub fn authorize_http(
        &self,
        token: Option<&str>,
        identity: Option<&PeerIdentity>,
    ) -> Result<Authorized, AuthError> {
        if let Some(authorized) = self.certificate(token, identity) {
            return Ok(authorized);
        }
        let api_key = {
            let keys = self.keys.read();
            token.and_then(|t| keys.api_keys.grants_for(t))
        };
        match api_key {
            Some(grants) => Ok(Authorized::granted(Access::Granted(grants), None)),
            None => self.authorize(token),
        }
    }

    /// Verifies `token`: signature, time claims, audience, issuer, grants.
    pub fn verify(&self, token: &str) -> Result<Credentials, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLong);
        }
        let header = jsonwebtoken::decode_header(token)?;
        let alg = header.alg;
        let keys = Arc::clone(&self.keys.read());
        let by_kid = header.kid.as_deref().and_then(|kid| keys.jwks.get(kid));
        let candidates: Vec<&VerifyKey> = match by_kid {
            Some(key) => vec![key],
            None => keys.keys.iter().collect(),
        };
        let mut validation = self.validation.clone();
        validation.algorithms = vec![alg];
        let mut last_error = AuthError::NoKey(alg);
        let mut claims = None;
        for key in candidates
            .into_iter()
            .filter(|k| k.algorithms.contains(&alg))
        {
            match jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                Err(e) => last_error = AuthError::Invalid(e),
            }
        }
        let claims = claims.ok_or(last_error)?;
        let times = TimeClaims::deserialize(&claims)
            .map_err(|e| AuthError::Grants(format!("time claims: {e}")))?;
        if times
            .iat
            .is_some_and(|iat| iat > now_secs().saturating_add(self.leeway.as_secs()))
        {
            return Err(AuthError::IssuedInFuture);
        }
        let grants = match self.grants_value(&claims) {
            None => GrantsClaim::default(),
            Some(value) => {
                GrantsClaim::deserialize(value).map_err(|e| AuthError::Grants(e.to_string()))?
            }
        };
        let user = match claims.get("sub") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(sub)) => Some(Arc::from(sub.as_str())),
            Some(_) => return Err(AuthError::BadSubject),
        };
        let info = match &grants.info {
            None => None,
            Some(value) => {
                let out = info_to_msgpack(value).ok_or(AuthError::InfoTooDeep)?;
                if out.len() > self.max_info_bytes {
                    return Err(AuthError::InfoTooLarge(out.len(), self.max_info_bytes));
                }
                Some(Bytes::from(out))
            }
        };
        Ok(Credentials {
            grants: Grants {
                subscribe: parse_patterns(grants.sub)?,
                publish: parse_patterns(grants.publish)?,
                admin: grants.admin,
            },
            expires: UNIX_EPOCH + Duration::from_secs(times.exp),
            user,
            info,
        })
    }

    /// The grants claim: a top-level claim, or a JSON Pointer.
    fn grants_value<'a>(&self, claims: &'a serde_json::Value) -> Option<&'a serde_json::Value> {
        if self.grants_claim.starts_with('/') {
            claims.pointer(&self.grants_claim)
        } else {
            claims.get(&self.grants_claim)
        }
    }
}
