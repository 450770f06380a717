//! Streaming UTF-8 validation, for text messages that arrive in pieces.
//!
//! A WebSocket text message may be split over several frames, and a frame
//! over several socket reads, at any byte, even inside a multi-byte
//! character. [`Utf8Validator`] takes the bytes in order, in pieces of any
//! size, and says as soon as a piece makes the text invalid, so a receiver
//! can fail fast instead of buffering the whole message first. An
//! incomplete character at the end of a piece is accepted until
//! [`Utf8Validator::is_complete`] is asked at the end of the message.

/// The state of a UTF-8 check across pieces: how many continuation bytes the
/// character in progress still needs, and the range its next byte must be
/// in (narrower than `80..=BF` right after some lead bytes, which is how
/// overlong forms, surrogates and code points over U+10FFFF are refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Utf8Validator {
    needed: u8,
    low: u8,
    high: u8,
}

/// The bytes are not UTF-8 (whatever follows them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

impl Default for Utf8Validator {
    fn default() -> Self {
        Utf8Validator {
            needed: 0,
            low: 0x80,
            high: 0xbf,
        }
    }
}

impl Utf8Validator {
    /// A validator at the start of a text.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the bytes fed so far end on a character boundary, i.e. form
    /// complete UTF-8 text.
    pub fn is_complete(&self) -> bool {
        self.needed == 0
    }

    /// Checks the next piece of the text. An error means no continuation
    /// can make the text valid.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), InvalidUtf8> {
        // Finish the character a previous piece started.
        while self.needed > 0 {
            let Some((&b, rest)) = bytes.split_first() else {
                return Ok(());
            };
            self.continuation(b)?;
            bytes = rest;
        }
        match std::str::from_utf8(bytes) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            // The piece ends inside a character whose bytes so far are
            // valid: remember what it still needs.
            Err(e) => {
                let (&lead, rest) = bytes[e.valid_up_to()..].split_first().ok_or(InvalidUtf8)?;
                self.start(lead)?;
                rest.iter().try_for_each(|&b| self.continuation(b))
            }
        }
    }

    /// Starts a multi-byte character with its lead byte.
    fn start(&mut self, lead: u8) -> Result<(), InvalidUtf8> {
        let (needed, low, high) = match lead {
            0xc2..=0xdf => (1, 0x80, 0xbf),
            0xe0 => (2, 0xa0, 0xbf),
            0xed => (2, 0x80, 0x9f),
            0xe1..=0xef => (2, 0x80, 0xbf),
            0xf0 => (3, 0x90, 0xbf),
            0xf1..=0xf3 => (3, 0x80, 0xbf),
            0xf4 => (3, 0x80, 0x8f),
            _ => return Err(InvalidUtf8),
        };
        *self = Utf8Validator { needed, low, high };
        Ok(())
    }

    /// Takes one continuation byte of the character in progress.
    fn continuation(&mut self, b: u8) -> Result<(), InvalidUtf8> {
        if b < self.low || b > self.high {
            return Err(InvalidUtf8);
        }
        *self = Utf8Validator {
            needed: self.needed - 1,
            ..Utf8Validator::default()
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` split at every pair of positions and checks the
    /// verdict always matches the standard library's.
    fn agrees_with_std_at_every_split(bytes: &[u8]) {
        let valid = std::str::from_utf8(bytes).is_ok();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let mut v = Utf8Validator::new();
                let fed = [&bytes[..i], &bytes[i..j], &bytes[j..]]
                    .iter()
                    .try_for_each(|piece| v.feed(piece));
                assert_eq!(
                    fed.is_ok() && v.is_complete(),
                    valid,
                    "{bytes:02x?} split at {i}, {j}"
                );
            }
        }
    }

    #[test]
    fn verdicts_match_std_whatever_the_split() {
        let samples: &[&[u8]] = &[
            b"",
            b"hello",
            "κόσμε €𝄞 \u{10ffff}".as_bytes(),
            &[0xed, 0x9f, 0xbf],             // U+D7FF, last before surrogates
            &[0xed, 0xa0, 0x80],             // a surrogate
            &[0xe0, 0x80, 0xaf],             // overlong '/'
            &[0xc0, 0xaf],                   // overlong '/'
            &[0xf4, 0x90, 0x80, 0x80],       // over U+10FFFF
            &[0xf0, 0x8f, 0xbf, 0xbf],       // overlong
            &[0xf8, 0x88, 0x80, 0x80, 0x80], // 5-byte form
            &[0xce, 0xba, 0xe1],             // ends inside a character
            &[0x80],                         // lone continuation
            &[0xe2, 0x82, 0x41],             // cut short by ASCII
            &[0xff],
        ];
        for sample in samples {
            agrees_with_std_at_every_split(sample);
        }
    }

    #[test]
    fn fails_at_the_first_impossible_byte() {
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xce, 0xba, 0xf4]), Ok(()));
        assert!(!v.is_complete());
        // 0x90 after 0xf4 would be above U+10FFFF: known without more input.
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
    }
}
