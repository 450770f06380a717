//! Broker URL parsing: `ws://` and `wss://` with host names, IPv4 and
//! bracketed IPv6 addresses.

use std::net::{IpAddr, Ipv6Addr};

use tickwire_protocol::WEBSOCKET_PATH;

use crate::error::{Error, Result};

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BrokerUrl {
    /// `wss://`.
    pub tls: bool,
    /// Host name or IP address, without IPv6 brackets.
    pub host: String,
    /// Port, defaulted from the scheme.
    pub port: u16,
    /// Path and query sent in the request line.
    pub resource: String,
}

impl BrokerUrl {
    /// Parses `ws://host[:port][/path][?query]` or the `wss://` equivalent.
    /// An empty path means the broker's [`WEBSOCKET_PATH`] (`/ws`).
    pub fn parse(url: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = url.trim();
        let (scheme, rest) = trimmed
            .split_once("://")
            .ok_or_else(|| invalid("expected ws://host:port or wss://host:port"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "ws" => false,
            "wss" => true,
            "http" | "https" => {
                return Err(invalid(
                    "use ws:// or wss:// (the client speaks WebSocket, not plain HTTP)",
                ));
            }
            _ => return Err(invalid("scheme must be ws:// or wss://")),
        };
        if rest.contains('#') {
            return Err(invalid("WebSocket URLs cannot have a #fragment"));
        }
        if rest.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(invalid("URL contains spaces or control characters"));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, resource) = rest.split_at(split);
        if authority.contains('@') {
            return Err(invalid(
                "credentials in the URL are not supported; use ClientBuilder::token",
            ));
        }
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(after_bracket) = authority.strip_prefix('[') {
            let (v6, tail) = after_bracket
                .split_once(']')
                .ok_or_else(|| invalid("unterminated IPv6 address (missing ']')"))?;
            v6.parse::<Ipv6Addr>()
                .map_err(|_| invalid("invalid IPv6 address between [ and ]"))?;
            let port = match tail {
                "" => default_port,
                _ => {
                    let p = tail
                        .strip_prefix(':')
                        .ok_or_else(|| invalid("expected ':port' after the IPv6 address"))?;
                    parse_port(p).ok_or_else(|| invalid("invalid port"))?
                }
            };
            (v6.to_owned(), port)
        } else {
            let (host, port) = match authority.rsplit_once(':') {
                Some((host, port)) => {
                    if host.contains(':') {
                        return Err(invalid("IPv6 addresses must be written in brackets: [::1]"));
                    }
                    (
                        host,
                        parse_port(port).ok_or_else(|| invalid("invalid port"))?,
                    )
                }
                None => (authority, default_port),
            };
            if host.is_empty() {
                return Err(invalid("missing host"));
            }
            if !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
            {
                return Err(invalid(
                    "host contains characters not allowed in a host name",
                ));
            }
            (host.to_owned(), port)
        };
        let resource = if resource.is_empty() {
            WEBSOCKET_PATH.to_owned()
        } else if resource.starts_with('?') {
            format!("{WEBSOCKET_PATH}{resource}")
        } else {
            resource.to_owned()
        };
        Ok(BrokerUrl {
            tls,
            host,
            port,
            resource,
        })
    }

    /// Whether the host is an IPv6 literal.
    fn is_ipv6(&self) -> bool {
        matches!(self.host.parse::<IpAddr>(), Ok(IpAddr::V6(_)))
    }

    /// The URL with `name=value` added to its query (`value` must need no
    /// escaping, as a client id).
    pub fn with_query(mut self, name: &str, value: &str) -> Self {
        let sep = if self.resource.contains('?') {
            '&'
        } else {
            '?'
        };
        self.resource = format!("{}{sep}{name}={value}", self.resource);
        self
    }

    /// `host:port`, with brackets around IPv6 addresses.
    pub fn authority(&self) -> String {
        if self.is_ipv6() {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The `Host` header value: the port is omitted when it is the scheme's
    /// default.
    pub fn host_header(&self) -> String {
        let default_port = if self.tls { 443 } else { 80 };
        if self.port == default_port {
            if self.is_ipv6() {
                format!("[{}]", self.host)
            } else {
                self.host.clone()
            }
        } else {
            self.authority()
        }
    }
}

fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u16>().ok().filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(url: &str) -> BrokerUrl {
        BrokerUrl::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn parses_common_forms() {
        let u = ok("ws://127.0.0.1:8080");
        assert_eq!(
            u,
            BrokerUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 8080,
                resource: "/ws".into()
            }
        );
        assert_eq!(u.authority(), "127.0.0.1:8080");
        assert_eq!(u.host_header(), "127.0.0.1:8080");

        let u = ok("wss://broker.example.com/custom/ws?tenant=a");
        assert!(u.tls);
        assert_eq!(u.port, 443);
        assert_eq!(u.resource, "/custom/ws?tenant=a");
        assert_eq!(u.host_header(), "broker.example.com");
        assert_eq!(u.authority(), "broker.example.com:443");

        let u = ok("ws://[::1]:9000/");
        assert_eq!(u.host, "::1");
        assert_eq!(u.resource, "/");
        assert_eq!(u.authority(), "[::1]:9000");
        assert_eq!(u.host_header(), "[::1]:9000");

        let u = ok("WS://[2001:db8::1]");
        assert_eq!(u.port, 80);
        assert_eq!(u.host_header(), "[2001:db8::1]");

        assert_eq!(ok("ws://localhost?x=1").resource, "/ws?x=1");
        assert_eq!(
            ok("ws://localhost").with_query("client", "c1").resource,
            "/ws?client=c1"
        );
        assert_eq!(
            ok("ws://localhost/a?x=1")
                .with_query("client", "c1")
                .resource,
            "/a?x=1&client=c1"
        );
        assert_eq!(ok("ws://my_host.local:1").port, 1);
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "localhost:8080",
            "http://localhost:8080",
            "tcp://localhost",
            "ws://",
            "ws://:8080",
            "ws://host:0",
            "ws://host:65536",
            "ws://host:abc",
            "ws://host:",
            "ws://user:pw@host",
            "ws://host/ws#frag",
            "ws://::1:8080",
            "ws://[::1",
            "ws://[zz::1]:80",
            "ws://[::1]x",
            "ws://ho st",
            "ws://host\r\n/ws",
            "ws://hö.st",
        ] {
            assert!(
                matches!(BrokerUrl::parse(bad), Err(Error::InvalidUrl { .. })),
                "{bad:?} should be rejected"
            );
        }
    }
}
