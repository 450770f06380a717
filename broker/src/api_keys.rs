//! API keys for HTTP publish (`--api-key-file`): long-lived secrets for
//! services that publish over HTTP without minting JWTs.
//!
//! A key file holds one key per line, `sha256-hex pattern[,pattern...]
//! [admin]`: the SHA-256 of the key (64 hex digits), the topic patterns it
//! may publish on (`-` for none, allowed only for an admin key), and,
//! optionally, the word `admin` as a last whitespace-separated field (not
//! following a comma, so `a, admin` still names the topic `admin`): the key
//! may then read the operational JSON endpoints (`/v1/stats`,
//! `/v1/topics`). Blank lines and lines starting with `#` are ignored. Only
//! the hashes are stored; a presented key is hashed and compared with every
//! stored hash in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tickwire_protocol::topic::Pattern;

use crate::grants::Grants;

/// One API key: its hash and what it may publish on.
#[derive(Debug, Clone)]
struct ApiKey {
    hash: [u8; 32],
    publish: Vec<Pattern>,
    admin: bool,
}

/// The flag that marks an admin key, the last field of its line.
const ADMIN_FLAG: &str = "admin";

/// Splits the text after a key's hash into its pattern list and whether it
/// ends with the [`ADMIN_FLAG`] field (a last word not after a comma).
fn split_admin(rest: &str) -> (&str, bool) {
    let rest = rest.trim();
    match rest.rsplit_once(char::is_whitespace) {
        Some((patterns, ADMIN_FLAG)) if !patterns.trim_end().ends_with(',') => {
            (patterns.trim_end(), true)
        }
        _ => (rest, false),
    }
}

/// Every configured API key.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys {
    keys: Vec<ApiKey>,
}

/// Decodes 64 hex digits.
fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let digit = |b: u8| char::from(b).to_digit(16);
    let mut hash = [0u8; 32];
    for (out, pair) in hash.iter_mut().zip(bytes.chunks_exact(2)) {
        let value = digit(pair[0])? * 16 + digit(pair[1])?;
        *out = u8::try_from(value).ok()?;
    }
    Some(hash)
}

impl ApiKeys {
    /// Adds the keys of one file's `text`; the error names the line.
    pub fn parse(&mut self, text: &str) -> Result<(), String> {
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |message: &str| format!("line {}: {message}", number + 1);
            let (hash, rest) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| at("write `sha256-hex pattern[,pattern] [admin]`"))?;
            let hash = parse_hash(hash).ok_or_else(|| at("the hash must be 64 hex digits"))?;
            let (patterns, admin) = split_admin(rest);
            let publish = match patterns {
                "-" if admin => Vec::new(),
                _ => patterns
                    .split(',')
                    .map(str::trim)
                    .filter(|p| !p.is_empty())
                    .map(|p| Pattern::new(p).map_err(|e| at(&format!("pattern `{p}`: {e}"))))
                    .collect::<Result<Vec<_>, _>>()?,
            };
            if publish.is_empty() && !admin {
                return Err(at("name at least one pattern"));
            }
            self.keys.push(ApiKey {
                hash,
                publish,
                admin,
            });
        }
        Ok(())
    }

    /// The grants of the key `presented`, if it is one: publishing on its
    /// patterns, and the admin grant for an admin key; nothing else. Every stored hash is compared, in constant
    /// time.
    pub fn grants_for(&self, presented: &str) -> Option<Grants> {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.hash.ct_eq(&hash)) && found.is_none() {
                found = Some(key);
            }
        }
        found.map(|key| Grants {
            subscribe: Vec::new(),
            publish: key.publish.clone(),
            admin: key.admin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tickwire_protocol::topic::Topic;

    #[test]
    fn keys_are_matched_by_hash_and_grant_publish_only() {
        let hex = |key: &[u8]| -> String {
            let hash: [u8; 32] = Sha256::digest(key).into();
            hash.iter().map(|b| format!("{b:02X}")).collect()
        };
        let real_hex = hex(b"k1");
        let mut keys = ApiKeys::default();
        keys.parse(&format!(
            "# services\n\n{real_hex} iot.site1.>, iot.site2.*\n{} other\n",
            hex(b"k3")
        ))
        .unwrap();
        let grants = keys.grants_for("k1").unwrap();
        assert!(grants.may_publish(Topic::new("iot.site1.t1").unwrap()));
        assert!(!grants.may_publish(Topic::new("stocks.AAPL").unwrap()));
        assert!(grants.subscribe.is_empty());
        assert!(keys.grants_for("k2").is_none());
        assert!(
            keys.grants_for("k3")
                .unwrap()
                .may_publish(Topic::new("other").unwrap())
        );

        let mut bad = ApiKeys::default();
        assert!(bad.parse("abc a.b").unwrap_err().contains("line 1"));
        assert!(bad.parse(&real_hex).is_err());
        assert!(
            bad.parse(&format!("{real_hex} a..b"))
                .unwrap_err()
                .contains("a..b")
        );
        assert!(bad.parse(&format!("{real_hex} ,")).is_err());
        assert!(bad.parse(&format!("{real_hex} a.b root")).is_err());
        assert_eq!(parse_hash(&"g".repeat(64)), None);
    }

    #[test]
    fn a_last_admin_field_marks_an_admin_key_and_old_lines_keep_their_meaning() {
        let hex = |key: &[u8]| -> String {
            let hash: [u8; 32] = Sha256::digest(key).into();
            hash.iter().map(|b| format!("{b:02x}")).collect()
        };
        let mut keys = ApiKeys::default();
        keys.parse(&format!(
            "{} iot.>, x admin\n{} - admin\n{} admin\n{} a, admin\n{} -\n",
            hex(b"pub-admin"),
            hex(b"admin-only"),
            hex(b"topic-admin"),
            hex(b"two-topics"),
            hex(b"dash"),
        ))
        .unwrap();
        // Without `admin`, `-` is the topic `-`, as before.
        let dash = keys.grants_for("dash").unwrap();
        assert!(!dash.admin && dash.may_publish(Topic::new("-").unwrap()));
        let publisher = keys.grants_for("pub-admin").unwrap();
        assert!(publisher.admin);
        assert!(publisher.may_publish(Topic::new("x").unwrap()));
        let admin_only = keys.grants_for("admin-only").unwrap();
        assert!(admin_only.admin && admin_only.publish.is_empty());
        // A lone `admin` is a pattern, as before: the topic `admin`.
        let topic = keys.grants_for("topic-admin").unwrap();
        assert!(!topic.admin);
        assert!(topic.may_publish(Topic::new("admin").unwrap()));
        // After a comma, `admin` is a pattern too.
        let two = keys.grants_for("two-topics").unwrap();
        assert!(!two.admin);
        assert!(two.may_publish(Topic::new("admin").unwrap()));
        assert!(two.may_publish(Topic::new("a").unwrap()));
    }
}
