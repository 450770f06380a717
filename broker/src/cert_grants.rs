//! Grants for client certificates (`--tls-client-grants-file`): a TOML file
//! mapping the names of verified client certificates to the patterns they
//! may subscribe to and publish on.
//!
//! ```toml
//! [[client]]
//! name = "alice"        # the certificate's CN, or one of its SAN names
//! sub = ["stocks.>"]
//! pub = ["iot.site1.>"]
//! admin = true          # optional: may read /v1/stats and /v1/topics
//! ```
//!
//! A certificate matches the entry named by its common name, else the first
//! entry named by one of its subject alternative names (in certificate
//! order). The file is read with the token keys
//! ([`crate::auth::Authenticator`]), at start and on reload.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;
use tickwire_protocol::topic::Pattern;

use crate::grants::Grants;
use crate::tls::PeerIdentity;

/// Largest grants file read, in bytes.
pub const MAX_FILE_LEN: u64 = 1 << 20;

/// Most `[[client]]` entries a grants file may hold.
pub const MAX_ENTRIES: usize = 10_000;

/// Why a client grants file could not be loaded.
#[derive(Debug, Error)]
pub enum CertGrantsError {
    /// The file could not be read.
    #[error("cannot read --tls-client-grants-file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file's content is not a valid grants table.
    #[error("invalid --tls-client-grants-file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the entry.
        message: String,
    },
}

/// The file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantsFile {
    #[serde(default)]
    client: Vec<Entry>,
}

/// One `[[client]]` entry as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    #[serde(default)]
    sub: Vec<String>,
    #[serde(default, rename = "pub")]
    publish: Vec<String>,
    #[serde(default)]
    admin: bool,
}

/// The grants of each certificate name.
#[derive(Debug, Clone, Default)]
pub struct CertGrants {
    by_name: HashMap<String, Grants>,
}

impl CertGrants {
    /// Reads and validates the grants file at `path`: at most
    /// [`MAX_FILE_LEN`] bytes and [`MAX_ENTRIES`] entries, every pattern
    /// valid, every name non-empty and given once.
    pub fn load(path: &Path) -> Result<CertGrants, CertGrantsError> {
        let invalid = |message: String| CertGrantsError::Invalid {
            path: path.to_owned(),
            message,
        };
        let mut bytes = Vec::new();
        File::open(path)
            .and_then(|f| f.take(MAX_FILE_LEN + 1).read_to_end(&mut bytes))
            .map_err(|source| CertGrantsError::Read {
                path: path.to_owned(),
                source,
            })?;
        if bytes.len() as u64 > MAX_FILE_LEN {
            return Err(invalid(format!("larger than {MAX_FILE_LEN} bytes")));
        }
        let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8 text".to_owned()))?;
        Self::parse(&text).map_err(invalid)
    }

    /// Parses the text of a grants file; the error names the entry.
    fn parse(text: &str) -> Result<CertGrants, String> {
        let file: GrantsFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.client.len() > MAX_ENTRIES {
            return Err(format!(
                "{} [[client]] entries; at most {MAX_ENTRIES} are allowed",
                file.client.len()
            ));
        }
        let mut by_name = HashMap::with_capacity(file.client.len());
        for (index, entry) in file.client.into_iter().enumerate() {
            let at =
                |message: String| format!("[[client]] #{} {:?}: {message}", index + 1, entry.name);
            if entry.name.is_empty() {
                return Err(at("name must not be empty".to_owned()));
            }
            let patterns = |list: &[String]| {
                list.iter()
                    .map(|p| {
                        Pattern::new(p.as_str()).map_err(|e| at(format!("pattern `{p}`: {e}")))
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let grants = Grants {
                subscribe: patterns(&entry.sub)?,
                publish: patterns(&entry.publish)?,
                admin: entry.admin,
            };
            if by_name.contains_key(&entry.name) {
                return Err(at("this name has an earlier entry".to_owned()));
            }
            by_name.insert(entry.name, grants);
        }
        Ok(CertGrants { by_name })
    }

    /// The grants of the certificate `identity`: the entry of its common
    /// name, else of its first alternative name that has one.
    pub fn grants_for(&self, identity: &PeerIdentity) -> Option<&Grants> {
        identity
            .common_name
            .iter()
            .chain(&identity.alt_names)
            .find_map(|name| self.by_name.get(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_protocol::topic::Topic;

    fn identity(cn: Option<&str>, sans: &[&str]) -> PeerIdentity {
        PeerIdentity {
            common_name: cn.map(str::to_owned),
            alt_names: sans.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn names_map_to_grants_by_cn_then_san() {
        let grants = CertGrants::parse(
            r#"
            [[client]]
            name = "alice"
            sub = ["stocks.>"]
            pub = ["iot.site1.>"]

            [[client]]
            name = "svc.example"
            pub = ["svc.>"]

            [[client]]
            name = "ops"
            admin = true
            "#,
        )
        .unwrap();
        let alice = grants.grants_for(&identity(Some("alice"), &[])).unwrap();
        assert!(alice.may_publish(Topic::new("iot.site1.t").unwrap()));
        assert!(!alice.may_publish(Topic::new("svc.x").unwrap()));
        assert_eq!(alice.subscribe.len(), 1);
        let svc = grants
            .grants_for(&identity(Some("bob"), &["other.example", "svc.example"]))
            .unwrap();
        assert!(svc.may_publish(Topic::new("svc.x").unwrap()));
        assert!(svc.subscribe.is_empty());
        assert!(!svc.admin && !alice.admin);
        assert!(
            grants
                .grants_for(&identity(Some("ops"), &[]))
                .unwrap()
                .admin
        );
        // The CN's entry wins over a SAN's.
        let both = grants
            .grants_for(&identity(Some("alice"), &["svc.example"]))
            .unwrap();
        assert_eq!(both, alice);
        assert!(grants.grants_for(&identity(Some("eve"), &[])).is_none());
        assert!(grants.grants_for(&identity(None, &[])).is_none());
    }

    #[test]
    fn bad_files_are_refused_naming_the_entry() {
        let err = CertGrants::parse("[[client]]\nname = \"a\"\nsub = [\"x..y\"]\n").unwrap_err();
        assert!(err.contains("#1 \"a\"") && err.contains("x..y"), "{err}");
        let err =
            CertGrants::parse("[[client]]\nname = \"a\"\n[[client]]\nname = \"a\"\n").unwrap_err();
        assert!(err.contains("#2 \"a\""), "{err}");
        assert!(CertGrants::parse("[[client]]\nname = \"\"\n").is_err());
        assert!(CertGrants::parse("[[client]]\nname = \"a\"\nroot = true\n").is_err());
        assert!(CertGrants::parse("[[clients]]\nname = \"a\"\n").is_err());
        let many = "[[client]]\nname = \"n\"\n".repeat(MAX_ENTRIES + 1);
        assert!(CertGrants::parse(&many).unwrap_err().contains("at most"));

        let err = CertGrants::load(Path::new("/nonexistent/grants.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--tls-client-grants-file /nonexistent"),
            "{err}"
        );
    }
}
