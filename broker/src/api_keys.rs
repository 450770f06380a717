//! API keys for HTTP publish (`--api-key-file`): long-lived secrets for
//! services that publish over HTTP without minting JWTs.
//!
//! A key file holds one key per line, `sha256-hex pattern[,pattern...]`:
//! the SHA-256 of the key (64 hex digits) and the topic patterns it may
//! publish on. Blank lines and lines starting with `#` are ignored. Only the
//! hashes are stored; a presented key is hashed and compared with every
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
            let (hash, patterns) = line
                .split_once(char::is_whitespace)
                .ok_or_else(|| at("write `sha256-hex pattern[,pattern]`"))?;
            let hash = parse_hash(hash).ok_or_else(|| at("the hash must be 64 hex digits"))?;
            let publish = patterns
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(|p| Pattern::new(p).map_err(|e| at(&format!("pattern `{p}`: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            if publish.is_empty() {
                return Err(at("name at least one pattern"));
            }
            self.keys.push(ApiKey { hash, publish });
        }
        Ok(())
    }

    /// The grants of the key `presented`, if it is one: publishing on its
    /// patterns, nothing else. Every stored hash is compared, in constant
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
        assert_eq!(parse_hash(&"g".repeat(64)), None);
    }
}
