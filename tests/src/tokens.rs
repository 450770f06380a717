//! HS256 access tokens for tests of a broker with authentication on: the
//! secret file the broker is started with (`jwt_hmac_secret_file`) and
//! tokens signed with it.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::pki::TempDir;

/// The HMAC secret of [`Secret`] (at least 32 bytes, as the broker asks).
pub const SECRET: &[u8] = b"an HMAC secret of at least 32 bytes, for tests";

/// The secret's file, removed when dropped.
pub struct Secret {
    dir: TempDir,
}

impl Secret {
    /// Writes [`SECRET`] (and a newline) to a fresh file.
    pub fn new() -> Secret {
        let dir = TempDir::new("secret");
        std::fs::write(dir.path().join("secret"), [SECRET, b"\n"].concat())
            .expect("write the secret file");
        Secret { dir }
    }

    /// Where the file is: for `jwt_hmac_secret_file`.
    pub fn file(&self) -> PathBuf {
        self.dir.path().join("secret")
    }
}

impl Default for Secret {
    fn default() -> Self {
        Secret::new()
    }
}

/// A token valid for an hour with `grants` in the `tw` claim and, when
/// given, `user` as its `sub`.
pub fn token_for(user: Option<&str>, grants: Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs();
    let mut claims = json!({"exp": now + 3600, "iat": now, "tw": grants});
    if let Some(user) = user {
        claims["sub"] = Value::from(user);
    }
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET),
    )
    .expect("sign token")
}

/// A token valid for an hour with `grants` in the `tw` claim.
pub fn token(grants: Value) -> String {
    token_for(None, grants)
}
