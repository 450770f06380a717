//! Fuzz target `config_file`: the broker's configuration file parser
//! (`tickwire_broker::BrokerConfig::from_file_text`, what `tickwire serve
//! --config FILE` runs on the file's text).
//!
//! Never a panic, whatever the text; and an accepted configuration keeps
//! every bound docs/configuration.md documents: counts and rates at least
//! 1, sizes at least 1 byte, the timeouts that must not be zero not zero,
//! `publish_bytes_burst` at least the largest message,
//! `outbound_queue_bytes` at least twice the largest frame, TLS files in
//! pairs, the metrics and echo listeners on ports of their own, origins in lower case and
//! of the form `scheme://host`, lists without empty or untrimmed items,
//! patterns valid, and `[[topic]]` policies with history keeping bytes.
#![no_main]

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tickwire_broker::BrokerConfig;
use tickwire_broker::config::ENVELOPE_ALLOWANCE;
use tickwire_protocol::topic::validate_pattern;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = BrokerConfig::from_file_text(Path::new("fuzz.toml"), text) {
        check_bounds(&config);
    }
});

fn check_bounds(c: &BrokerConfig) {
    let counts = [
        c.max_connections,
        c.max_subscriptions,
        c.max_topics,
        c.max_connections_per_ip,
    ];
    assert!(counts.iter().all(|n| *n >= 1), "a count is 0: {counts:?}");
    let rates = [
        c.listen_backlog,
        c.publish_rate,
        c.publish_burst,
        c.publish_flood_refusals,
        c.connection_rate_per_ip,
        c.connection_burst_per_ip,
    ];
    assert!(rates.iter().all(|n| *n >= 1), "a rate is 0: {rates:?}");
    let sizes = [
        c.max_message_size,
        c.outbound_queue_bytes,
        c.write_batch_bytes,
        c.max_http_body,
        c.max_retained_bytes,
        c.publish_bytes_rate,
        c.publish_bytes_burst,
    ];
    assert!(sizes.iter().all(|n| *n >= 1), "a size is 0: {sizes:?}");
    let timeouts = [
        c.topic_idle_ttl,
        c.handshake_timeout,
        c.keepalive_interval,
        c.keepalive_timeout,
        c.http_body_timeout,
        c.message_timeout,
    ];
    assert!(
        timeouts.iter().all(|d| *d > Duration::ZERO),
        "a timeout is 0: {timeouts:?}"
    );

    let largest = c.max_message_size.max(c.max_http_body);
    assert!(c.publish_bytes_burst >= largest);
    let frame = largest.checked_add(ENVELOPE_ALLOWANCE);
    let twice = frame.and_then(|f| f.checked_mul(2));
    assert!(
        twice.is_some_and(|t| c.outbound_queue_bytes >= t),
        "outbound_queue_bytes {} below twice the largest frame {frame:?}",
        c.outbound_queue_bytes
    );

    assert_eq!(c.tls_cert_file.is_some(), c.tls_key_file.is_some());
    assert!(c.tls_client_ca_file.is_none() || c.tls_cert_file.is_some());
    assert!(c.tls_client_grants_file.is_none() || c.tls_client_ca_file.is_some());
    assert!(c.metrics_listen != Some(c.listen) || c.listen.port() == 0);
    if let Some(echo) = c.echo_listen.filter(|a| a.port() != 0) {
        assert!(echo != c.listen && Some(echo) != c.metrics_listen);
    }

    for origin in &c.allowed_origins {
        assert_eq!(*origin, origin.to_ascii_lowercase());
        let host = origin.split_once("://").map(|(_, host)| host);
        assert!(
            host.is_some_and(|h| !h.is_empty() && !h.contains('/')),
            "{origin}"
        );
    }
    let items = c
        .allowed_origins
        .iter()
        .chain(&c.jwt_audience)
        .chain(&c.jwt_issuer)
        .map(String::as_str);
    let paths = c
        .jwt_hmac_secret_file
        .iter()
        .chain(&c.jwt_public_key_file)
        .chain(&c.jwks_file)
        .chain(&c.api_key_file)
        .filter_map(|p| p.to_str());
    for item in items.chain(paths) {
        assert!(
            !item.is_empty() && item.trim() == item && !item.contains(','),
            "{item:?}"
        );
    }
    assert!(!c.jwt_grants_claim.trim().is_empty());

    let patterns = c
        .client_retain_patterns
        .iter()
        .chain(&c.allow_anonymous)
        .chain(&c.allow_anonymous_sub)
        .chain(&c.allow_anonymous_pub)
        .chain(c.topic_policies.iter().map(|p| &p.pattern));
    for p in patterns {
        assert_eq!(validate_pattern(p.as_str()), Ok(()));
    }
    for policy in &c.topic_policies {
        assert!(policy.history_messages == 0 || policy.history_bytes > 0);
    }
    assert!(
        c.validate().is_ok(),
        "an accepted configuration fails validate"
    );
}
