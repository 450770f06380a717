//! The live dashboard page (`--dashboard`): static assets embedded in the
//! binary from `broker/assets/dashboard/`, served at `/dashboard`.
//!
//! | path | asset |
//! |---|---|
//! | `/dashboard`, `/dashboard/` | `index.html` |
//! | `/dashboard/app.js` | the page's code (plain ES module) |
//! | `/dashboard/style.css` | its styles |
//! | `/dashboard/tickwire-client.js` | the JS client bundle (`client-sdk/js`) |
//!
//! The assets need no credentials (they hold none); the data the page
//! reads (`/ws`, `/v1/stats`, `/v1/topics`) obeys authentication as
//! usual. Every answer carries an `ETag` (a hash of the content, so a
//! conditional request gets 304), `Cache-Control: no-cache` (revalidate, so
//! a new binary's page is picked up at once), a `Content-Security-Policy`
//! that allows only this origin (no inline script, no other host) and
//! `X-Content-Type-Options: nosniff`.

use std::sync::OnceLock;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, HeaderMap, HeaderValue,
    IF_NONE_MATCH, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
};
use hyper::{Response, StatusCode};
use sha2::{Digest, Sha256};

/// The path prefix of the dashboard.
pub const PATH: &str = "/dashboard";

/// The policy of every dashboard answer: scripts, styles, images and
/// connections (`fetch`, WebSocket, EventSource) from this origin only.
pub const CONTENT_SECURITY_POLICY_VALUE: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    etag: OnceLock<HeaderValue>,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, body: &'static [u8]) -> Self {
        Asset {
            name,
            content_type,
            body,
            etag: OnceLock::new(),
        }
    }

    /// `"<first 16 bytes of the SHA-256, hex>"`, computed once.
    fn etag(&self) -> &HeaderValue {
        self.etag.get_or_init(|| {
            let hash = Sha256::digest(self.body);
            let hex: String = hash[..16].iter().map(|b| format!("{b:02x}")).collect();
            HeaderValue::from_str(&format!("\"{hex}\"")).unwrap_or(HeaderValue::from_static("\"\""))
        })
    }
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: [Asset; 4] = [
    Asset::new(
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../assets/dashboard/index.html"),
    ),
    Asset::new("app.js", JS, include_bytes!("../assets/dashboard/app.js")),
    Asset::new(
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/dashboard/style.css"),
    ),
    Asset::new(
        "tickwire-client.js",
        JS,
        include_bytes!("../assets/dashboard/tickwire-client.js"),
    ),
];

/// The asset at `path`, if `path` is the dashboard's.
fn asset(path: &str) -> Option<&'static Asset> {
    let rest = path.strip_prefix(PATH)?;
    let name = match rest {
        "" | "/" => "index.html",
        _ => rest.strip_prefix('/')?,
    };
    ASSETS.iter().find(|a| a.name == name)
}

/// Whether `If-None-Match` names `etag` (or is `*`).
fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    headers.get_all(IF_NONE_MATCH).iter().any(|value| {
        value.to_str().is_ok_and(|list| {
            list.split(',')
                .map(|tag| tag.trim().trim_start_matches("W/"))
                .any(|tag| tag == "*" || tag.as_bytes() == etag.as_bytes())
        })
    })
}

/// Answers a `GET` of `path` with request headers `headers`: the asset
/// (200, or 304 when `If-None-Match` names its ETag), or `None` when `path`
/// is not one of the dashboard's (the caller answers 404).
pub fn serve(path: &str, headers: &HeaderMap) -> Option<Response<Full<Bytes>>> {
    let asset = asset(path)?;
    let etag = asset.etag();
    let (status, body) = match not_modified(headers, etag) {
        true => (StatusCode::NOT_MODIFIED, Bytes::new()),
        false => (StatusCode::OK, Bytes::from_static(asset.body)),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(ETAG, etag.clone());
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY_VALUE),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_assets_with_headers_and_revalidation() {
        let none = HeaderMap::new();
        let index = serve("/dashboard", &none).unwrap();
        assert_eq!(index.status(), StatusCode::OK);
        assert_eq!(index.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(index.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(
            index.headers()[CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        let etag = index.headers()[ETAG].clone();
        assert_eq!(serve("/dashboard/", &none).unwrap().headers()[ETAG], etag);
        let js = serve("/dashboard/app.js", &none).unwrap();
        assert_eq!(js.headers()[CONTENT_TYPE], JS);
        assert_ne!(js.headers()[ETAG], etag);
        assert!(serve("/dashboard/tickwire-client.js", &none).is_some());
        assert!(serve("/dashboard/style.css", &none).is_some());

        let mut conditional = HeaderMap::new();
        conditional.insert(IF_NONE_MATCH, etag.clone());
        let cached = serve("/dashboard", &conditional).unwrap();
        assert_eq!(cached.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(cached.headers()[ETAG], etag);
        conditional.insert(IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        assert_eq!(
            serve("/dashboard", &conditional).unwrap().status(),
            StatusCode::OK
        );

        for path in [
            "/dashboardx",
            "/dashboard/missing.js",
            "/dashboard/../Cargo.toml",
            "/dashboard//app.js",
            "/other",
        ] {
            assert!(serve(path, &none).is_none(), "{path}");
        }
    }
}
