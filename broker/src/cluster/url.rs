//! The `--cluster` URL: where Redis is.
//!
//! Four forms (docs/cluster.md, "Setting it up"):
//!
//! * `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`: one Redis server.
//! * `rediss://…`: the same over TLS; the server's certificate is checked
//!   against the system's roots, or against `--cluster-ca-file`.
//! * `redis+sentinel://[[USER]:PASSWORD@]HOST[:PORT][,HOST[:PORT]…]/MASTER[/DB]`:
//!   the master named `MASTER` as Redis Sentinel reports it, asked again
//!   at every reconnection; the credentials and `DB` are the master's (the
//!   Sentinels are asked without authentication); the Sentinel port
//!   defaults to 26379.
//! * `rediss+sentinel://…`: the same with TLS to the Sentinels and to the
//!   master.
//!
//! Redis Cluster (sharded pub/sub) is not supported.

use std::fmt;

use percent_encoding::percent_decode_str;
use redis::Client;
use thiserror::Error;

/// The port of a Sentinel whose address names none.
pub const SENTINEL_PORT: u16 = 26379;

/// What the forms look like, for error messages.
const FORMS: &str = "write redis://HOST:PORT[/DB], rediss://HOST:PORT[/DB] (TLS) or redis+sentinel://HOST:PORT[,HOST:PORT…]/MASTER[/DB] (rediss+sentinel:// with TLS)";

/// The `--cluster` URL cannot be used.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct ClusterUrlError(String);

/// A checked `--cluster` URL.
#[derive(Clone, PartialEq, Eq)]
pub enum ClusterUrl {
    /// One Redis server (`redis://`, `rediss://`): the URL as written,
    /// which [`Client::open`] accepts.
    Direct {
        /// The URL.
        url: String,
        /// Whether it is `rediss://`.
        tls: bool,
    },
    /// A master found through Redis Sentinel.
    Sentinel(SentinelUrl),
}

/// The parts of a `redis+sentinel://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    /// The Sentinels, as (host, port), in the order to ask them.
    pub sentinels: Vec<(String, u16)>,
    /// The name of the master (the `sentinel monitor` name).
    pub master: String,
    /// The database on the master.
    pub db: i64,
    /// The master's user name, if any.
    pub username: Option<String>,
    /// The master's password, if any.
    pub password: Option<String>,
    /// Whether `rediss+sentinel://`: TLS to the Sentinels and the master.
    pub tls: bool,
}

/// Without the password.
impl fmt::Debug for ClusterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterUrl::Direct { tls, .. } => f
                .debug_struct("Direct")
                .field("tls", tls)
                .finish_non_exhaustive(),
            ClusterUrl::Sentinel(s) => f
                .debug_struct("Sentinel")
                .field("sentinels", &s.sentinels)
                .field("master", &s.master)
                .field("db", &s.db)
                .field("tls", &s.tls)
                .finish_non_exhaustive(),
        }
    }
}

impl ClusterUrl {
    /// Whether connections use TLS.
    pub fn tls(&self) -> bool {
        match self {
            ClusterUrl::Direct { tls, .. } => *tls,
            ClusterUrl::Sentinel(s) => s.tls,
        }
    }
}

/// Checks a `--cluster` URL (the forms are in the module's documentation).
pub fn parse(url: &str) -> Result<ClusterUrl, ClusterUrlError> {
    let err = |message: String| Err(ClusterUrlError(message));
    let Some((scheme, rest)) = url.split_once("://") else {
        return err(format!("`{url}` is not a URL; {FORMS}"));
    };
    match scheme {
        "redis" | "rediss" => {
            if rest.contains('#') {
                return err(format!(
                    "a fragment (`#…`) is not supported in {scheme}:// URLs; to trust a private CA, give --cluster-ca-file"
                ));
            }
            Client::open(url)
                .map(|_| ClusterUrl::Direct {
                    url: url.to_owned(),
                    tls: scheme == "rediss",
                })
                .map_err(|e| ClusterUrlError(format!("not a Redis URL: {e}; {FORMS}")))
        }
        "redis+sentinel" | "rediss+sentinel" => {
            parse_sentinel(rest, scheme == "rediss+sentinel").map(ClusterUrl::Sentinel)
        }
        "redis+cluster" | "rediss+cluster" => err(format!(
            "`{scheme}`: Redis Cluster is not supported yet; {FORMS}"
        )),
        other => err(format!("`{other}` is not supported; {FORMS}")),
    }
}

/// Parses what follows `redis+sentinel://`.
fn parse_sentinel(rest: &str, tls: bool) -> Result<SentinelUrl, ClusterUrlError> {
    let err = |message: &str| ClusterUrlError(format!("Sentinel URL: {message}; {FORMS}"));
    if rest.contains(['?', '#']) {
        return Err(err("query parameters and fragments are not supported"));
    }
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| err("the master's name is missing (…/MASTER)"))?;
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let decode = |part: &str| {
        percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| err("a percent-encoded part is not UTF-8"))
    };
    let (username, password) = match userinfo.map(|u| u.split_once(':').unwrap_or((u, ""))) {
        None => (None, None),
        Some((user, password)) => (
            Some(decode(user)?).filter(|u| !u.is_empty()),
            Some(decode(password)?).filter(|p| !p.is_empty()),
        ),
    };
    let sentinels = hosts
        .split(',')
        .map(|address| sentinel_address(address).map_err(|e| err(&e)))
        .collect::<Result<Vec<_>, _>>()?;
    let (master, db) = match path.split_once('/') {
        Some((master, db)) => (master, db),
        None => (path, ""),
    };
    let master = decode(master)?;
    if master.is_empty() {
        return Err(err("the master's name is missing (…/MASTER)"));
    }
    let db = match db.trim_end_matches('/') {
        "" => 0,
        db => db
            .parse::<i64>()
            .ok()
            .filter(|db| *db >= 0)
            .ok_or_else(|| err(&format!("`{db}` is not a database number")))?,
    };
    Ok(SentinelUrl {
        sentinels,
        master,
        db,
        username,
        password,
        tls,
    })
}

/// Parses one `HOST[:PORT]` of a Sentinel URL (`[IPv6]:PORT` too).
fn sentinel_address(address: &str) -> Result<(String, u16), String> {
    let (host, port) = match address.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{address}`: `[` without `]`"))?;
            (host, after.strip_prefix(':'))
        }
        None => match address.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (address, None),
        },
    };
    if host.is_empty() {
        return Err(format!("`{address}`: a Sentinel's host is missing"));
    }
    let port = match port {
        None => SENTINEL_PORT,
        Some(port) => port
            .parse()
            .map_err(|_| format!("`{address}`: `{port}` is not a port"))?,
    };
    Ok((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel(url: &str) -> SentinelUrl {
        match parse(url) {
            Ok(ClusterUrl::Sentinel(s)) => s,
            other => panic!("{url}: {other:?}"),
        }
    }

    fn refused(url: &str) -> String {
        parse(url).expect_err(url).to_string()
    }

    #[test]
    fn direct_urls() {
        let ok = |url: &str, tls| {
            assert_eq!(
                parse(url).unwrap(),
                ClusterUrl::Direct {
                    url: url.to_owned(),
                    tls
                }
            );
        };
        ok("redis://127.0.0.1:6379", false);
        ok("redis://:secret@127.0.0.1:6379/2", false);
        ok("rediss://redis.internal:6380", true);
        assert!(refused("rediss://h:1/#insecure").contains("--cluster-ca-file"));
        assert!(refused("redis+cluster://h:1").contains("Redis Cluster is not supported"));
        assert!(refused("http://h:1").contains("`http` is not supported"));
        assert!(refused("h:6379").contains("not a URL"));
    }

    #[test]
    fn sentinel_urls() {
        let s = sentinel("redis+sentinel://u%40x:p%3Aw@a:1,b,[::1]:3/my%20master/2");
        assert_eq!(
            s.sentinels,
            [
                ("a".to_owned(), 1),
                ("b".to_owned(), SENTINEL_PORT),
                ("::1".to_owned(), 3)
            ]
        );
        assert_eq!(s.master, "my master");
        assert_eq!(s.db, 2);
        assert_eq!(s.username.as_deref(), Some("u@x"));
        assert_eq!(s.password.as_deref(), Some("p:w"));
        assert!(!s.tls);
        let s = sentinel("rediss+sentinel://:pw@h:26379/m");
        assert_eq!(
            (s.username, s.password.as_deref(), s.db),
            (None, Some("pw"), 0)
        );
        assert!(s.tls);
        assert!(refused("redis+sentinel://h:1").contains("master's name is missing"));
        assert!(refused("redis+sentinel://h:1/").contains("master's name is missing"));
        assert!(refused("redis+sentinel://h:x/m").contains("`x` is not a port"));
        assert!(refused("redis+sentinel://h:1,/m").contains("host is missing"));
        assert!(refused("redis+sentinel://h/m/-1").contains("not a database"));
        assert!(refused("redis+sentinel://h/m?x=1").contains("not supported"));
    }

    #[test]
    fn debug_hides_the_password() {
        for url in ["redis://:hunter2@h:1", "redis+sentinel://:hunter2@h:1/m"] {
            let shown = format!("{:?}", parse(url).unwrap());
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}
