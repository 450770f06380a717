//! What the bench publishes after the 8-byte send time (`--payload-kind`).
//!
//! * `filler`: bytes counting 0, 1, … 250 and over again; cheap, and with
//!   `--compression` compressible far beyond real data (a repeat every 251
//!   bytes).
//! * `json`: market quotes as JSON text (`{"sym":"ABCD","bid":187.23,…}`)
//!   whose symbols, prices and sizes come from a fixed pseudo-random
//!   sequence: as repetitive as a real ticker's messages, so compression
//!   figures mean something.
//!
//! Each publisher builds its payload once; only the send time changes per
//! message.

use std::fmt::Write as _;

use clap::ValueEnum;
use serde::Serialize;

/// The kind of payload after the send time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadKind {
    /// Counting bytes (the default).
    #[default]
    Filler,
    /// JSON market quotes.
    Json,
}

impl PayloadKind {
    /// The flag value naming this kind.
    pub fn name(self) -> &'static str {
        match self {
            PayloadKind::Filler => "filler",
            PayloadKind::Json => "json",
        }
    }

    /// The `len`-byte payload (at least 8 bytes: the first 8 are left zero
    /// for the send time).
    pub fn payload(self, len: usize) -> Vec<u8> {
        let len = len.max(8);
        let mut payload = vec![0u8; 8];
        match self {
            PayloadKind::Filler => payload.extend((8..len).map(|i| (i % 251) as u8)),
            PayloadKind::Json => payload.extend_from_slice(&quotes(len - 8)),
        }
        payload
    }
}

/// JSON text of exactly `len` bytes: an array of quotes, padded with
/// spaces after the closing bracket (or truncated when `len` is tiny).
fn quotes(len: usize) -> Vec<u8> {
    // A 64-bit linear congruential generator (Knuth's MMIX constants):
    // deterministic, no dependency.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |bound: u64| {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) % bound
    };
    let mut text = String::with_capacity(len + 128);
    text.push('[');
    while text.len() + 1 < len {
        if text.len() > 1 {
            text.push(',');
        }
        let sym: String = (0..4).map(|_| char::from(b'A' + next(26) as u8)).collect();
        let cents = 1_000 + next(50_000);
        let spread = 1 + next(9);
        let _ = write!(
            text,
            r#"{{"sym":"{sym}","bid":{}.{:02},"ask":{}.{:02},"bsz":{},"asz":{},"venue":"XNAS"}}"#,
            cents / 100,
            cents % 100,
            (cents + spread) / 100,
            (cents + spread) % 100,
            100 * (1 + next(50)),
            100 * (1 + next(50)),
        );
    }
    let mut bytes = text.into_bytes();
    // Too long: cut back to the last whole quote that leaves room for `]`.
    if bytes.len() + 1 > len {
        let keep = bytes[..len.saturating_sub(1)]
            .iter()
            .rposition(|&b| b == b'}')
            .map_or(1, |i| i + 1);
        bytes.truncate(keep.min(len));
    }
    if bytes.len() < len {
        bytes.push(b']');
    }
    bytes.resize(len, b' ');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_asked_size_and_a_zero_stamp() {
        for kind in [PayloadKind::Filler, PayloadKind::Json] {
            for len in [0usize, 8, 9, 20, 128, 1000, 4096] {
                let p = kind.payload(len);
                assert_eq!(p.len(), len.max(8), "{kind:?} {len}");
                assert_eq!(&p[..8], &[0u8; 8]);
            }
        }
        assert_eq!(PayloadKind::Filler.payload(12)[8..], [8, 9, 10, 11]);
    }

    #[test]
    fn json_payloads_are_json_quotes() {
        let p = PayloadKind::Json.payload(1000);
        let text = std::str::from_utf8(&p[8..]).unwrap();
        let quotes: Vec<serde_json::Value> = serde_json::from_str(text.trim_end()).unwrap();
        assert!(quotes.len() > 5, "{text}");
        assert!(quotes.iter().all(|q| q["sym"].as_str().unwrap().len() == 4));
        assert_eq!(PayloadKind::Json.payload(1000), p, "deterministic");
    }
}
