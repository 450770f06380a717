//! Async Rust client for tickwire.
