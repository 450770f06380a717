//! `tickwire token`: mint an HS256 access token for a broker that checks
//! tokens with an HMAC secret (`--jwt-hmac-secret-file`).
//!
//! The token carries `exp` (now + `--ttl`), `iat`, optional `sub`, `aud`
//! and `iss`, and the grants claim `{"sub": [patterns], "pub": [patterns]}`
//! (plus `"admin": true` with `--admin`, and `"info": VALUE` with
//! `--info JSON`, the client info presence entries show).

use crate::console::{stderrln, stdoutln};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::Args;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};
use tickwire_broker::auth::read_hmac_secret;
use tickwire_protocol::topic::Pattern;

/// Exit code for a token that cannot be made (bad secret file, pattern or
/// option).
const EXIT_USAGE: u8 = 2;
/// Exit code when the token could not be written to standard output (a
/// closed pipe, a full disk): the token is lost, so this is no success.
const EXIT_OUTPUT: u8 = 1;

/// Arguments of `tickwire token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// File holding the HMAC secret (the broker's --jwt-hmac-secret-file):
    /// the whole file, one trailing newline removed, at least 32 bytes.
    #[arg(long, value_name = "FILE")]
    hmac_secret_file: PathBuf,
    /// Pattern the token holder may subscribe to; repeat the flag or
    /// separate patterns with commas.
    #[arg(long = "sub", value_name = "PATTERN", value_delimiter = ',')]
    subscribe: Vec<String>,
    /// Pattern the token holder may publish on; repeat the flag or separate
    /// patterns with commas.
    #[arg(long = "pub", value_name = "PATTERN", value_delimiter = ',')]
    publish: Vec<String>,
    /// How long the token is valid, e.g. 15m, 1h, 7d.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Audience (`aud`), for a broker started with --jwt-audience.
    #[arg(long, value_name = "AUDIENCE")]
    aud: Option<String>,
    /// Issuer (`iss`), for a broker started with --jwt-issuer.
    #[arg(long, value_name = "ISSUER")]
    iss: Option<String>,
    /// Who the token is for (`sub`), for logs and audits.
    #[arg(long, value_name = "NAME")]
    subject: Option<String>,
    /// Key id (`kid` header), when the broker finds the secret in a JWK Set.
    #[arg(long, value_name = "KID")]
    kid: Option<String>,
    /// Grant admin: the holder may read the broker's operational JSON
    /// endpoints (/v1/stats, /v1/topics) that the dashboard shows.
    #[arg(long)]
    admin: bool,
    /// Client info shown in the holder's presence entries and join/leave
    /// events: any JSON value, e.g. '{"name":"Alice"}' (the broker refuses
    /// more than max_presence_info_bytes of it as MessagePack).
    #[arg(long, value_name = "JSON", value_parser = parse_info)]
    info: Option<Value>,
    /// Name of the claim holding the grants (the broker's
    /// --jwt-grants-claim, a top-level name).
    #[arg(long, value_name = "NAME", default_value = "tw")]
    grants_claim: String,
}

/// Parses `--info`: one JSON value.
fn parse_info(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))
}

/// Prints the token, or explains why it cannot be made.
pub fn run(args: TokenArgs) -> ExitCode {
    match mint(&args, SystemTime::now()) {
        Ok(token) => match stdoutln!("{token}") {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                stderrln!("tickwire token: cannot write to standard output: {e}");
                ExitCode::from(EXIT_OUTPUT)
            }
        },
        Err(e) => {
            stderrln!("tickwire token: {e:#}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Checks every pattern, so the broker never sees a token it would refuse.
fn patterns(list: &[String], flag: &str) -> anyhow::Result<Vec<String>> {
    list.iter()
        .map(|p| {
            Pattern::new(p.as_str())
                .map(|p| p.as_str().to_owned())
                .with_context(|| format!("{flag} {p:?}"))
        })
        .collect()
}

/// Builds and signs the token as of `now`.
fn mint(args: &TokenArgs, now: SystemTime) -> anyhow::Result<String> {
    if args.grants_claim.is_empty() || args.grants_claim.starts_with('/') {
        anyhow::bail!("--grants-claim takes a top-level claim name, e.g. tw");
    }
    let secret = read_hmac_secret(&args.hmac_secret_file)?;
    let now = now.duration_since(UNIX_EPOCH)?.as_secs();
    let mut claims = Map::new();
    claims.insert("iat".to_owned(), json!(now));
    claims.insert(
        "exp".to_owned(),
        json!(now.saturating_add(args.ttl.as_secs())),
    );
    let optional = [
        ("sub", &args.subject),
        ("aud", &args.aud),
        ("iss", &args.iss),
    ];
    for (claim, value) in optional {
        if let Some(value) = value {
            claims.insert(claim.to_owned(), json!(value));
        }
    }
    let mut grants = json!({
        "sub": patterns(&args.subscribe, "--sub")?,
        "pub": patterns(&args.publish, "--pub")?,
    });
    // Only when asked: a broker older than the admin grant refuses the key.
    if args.admin {
        grants["admin"] = json!(true);
    }
    if let Some(info) = &args.info {
        grants["info"] = info.clone();
    }
    claims.insert(args.grants_claim.clone(), grants);
    let mut header = Header::new(Algorithm::HS256);
    header.kid = args.kid.clone();
    jsonwebtoken::encode(
        &header,
        &Value::Object(claims),
        &EncodingKey::from_secret(&secret),
    )
    .context("cannot sign the token")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        token: TokenArgs,
    }

    /// The claims of `token`, checked with the tests' secret.
    fn decode(token: &str) -> jsonwebtoken::TokenData<Value> {
        jsonwebtoken::decode::<Value>(
            token,
            &jsonwebtoken::DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
            &jsonwebtoken::Validation::new(Algorithm::HS256),
        )
        .unwrap()
    }

    #[test]
    fn mints_a_token_the_secret_verifies() {
        let dir = std::env::temp_dir().join(format!("tickwire-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
        let path = secret.to_str().unwrap();
        let cli = Cli::parse_from([
            "t",
            "--hmac-secret-file",
            path,
            "--sub",
            "stocks.>,news.*",
            "--pub",
            "iot.>",
            "--ttl",
            "1h",
            "--aud",
            "tickwire",
            "--subject",
            "alice",
        ]);
        let token = mint(&cli.token, UNIX_EPOCH + Duration::from_secs(1000)).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.set_audience(&["tickwire"]);
        let data = jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["exp"], json!(4600));
        assert_eq!(data.claims["sub"], json!("alice"));
        assert_eq!(data.claims["tw"]["sub"], json!(["stocks.>", "news.*"]));
        assert_eq!(data.claims["tw"]["pub"], json!(["iot.>"]));
        assert_eq!(data.claims["tw"].get("admin"), None);
        let admin = Cli::parse_from(["t", "--hmac-secret-file", path, "--ttl", "1h", "--admin"]);
        let token = mint(&admin.token, SystemTime::now()).unwrap();
        let data = decode(&token);
        assert_eq!(data.claims["tw"]["admin"], json!(true));
        assert_eq!(data.claims["tw"].get("info"), None);
        let with_info = |info: &str| {
            Cli::try_parse_from([
                "t",
                "--hmac-secret-file",
                path,
                "--ttl",
                "1h",
                "--info",
                info,
            ])
        };
        let info = with_info(r#"{"name":"Alice","n":[1]}"#).unwrap();
        let token = mint(&info.token, SystemTime::now()).unwrap();
        let data = decode(&token);
        assert_eq!(
            data.claims["tw"]["info"],
            json!({"name": "Alice", "n": [1]})
        );
        assert!(with_info("{").is_err());

        let bad = Cli::parse_from([
            "t",
            "--hmac-secret-file",
            path,
            "--sub",
            "a..b",
            "--ttl",
            "1h",
        ]);
        let err = mint(&bad.token, SystemTime::now()).unwrap_err();
        assert!(format!("{err:#}").contains("a..b"), "{err:#}");
        std::fs::write(&secret, "short").unwrap();
        let err = mint(&cli.token, SystemTime::now()).unwrap_err();
        assert!(format!("{err:#}").contains("32 bytes"), "{err:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
