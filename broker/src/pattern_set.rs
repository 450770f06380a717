//! The set of patterns one session is subscribed to ([`PatternSet`]).
//!
//! Most connections hold a few subscriptions, often one, and an idle
//! connection's memory is what a broker is sized by: a hash set's first
//! insert allocates a table of four buckets plus control bytes (~120 bytes)
//! and hashes every lookup. Up to [`INLINE_MAX`] patterns are kept in a
//! plain vector instead (one pattern: 24 bytes) and found by comparison;
//! past that the set moves into a hash set, so a connection near
//! `max_subscriptions` still subscribes in constant time.

use std::collections::HashSet;

use tickwire_protocol::topic::Pattern;

/// Patterns kept in the vector before the set becomes a hash set.
pub const INLINE_MAX: usize = 8;

/// A set of patterns: a vector while small, a hash set past [`INLINE_MAX`].
#[derive(Debug)]
pub enum PatternSet {
    /// At most [`INLINE_MAX`] patterns, none twice.
    Few(Vec<Pattern>),
    /// More than that.
    Many(HashSet<Pattern>),
}

impl Default for PatternSet {
    fn default() -> Self {
        PatternSet::Few(Vec::new())
    }
}

impl PatternSet {
    /// Whether `pattern` is in the set.
    pub fn contains(&self, pattern: &Pattern) -> bool {
        match self {
            PatternSet::Few(few) => few.contains(pattern),
            PatternSet::Many(many) => many.contains(pattern),
        }
    }

    /// How many patterns the set holds.
    pub fn len(&self) -> usize {
        match self {
            PatternSet::Few(few) => few.len(),
            PatternSet::Many(many) => many.len(),
        }
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `pattern`; false if it was there already.
    pub fn insert(&mut self, pattern: Pattern) -> bool {
        match self {
            PatternSet::Few(few) if few.contains(&pattern) => false,
            PatternSet::Few(few) if few.len() < INLINE_MAX => {
                // One slot at a time: a first push would otherwise reserve
                // four, and most sets never grow past one.
                few.reserve_exact(1);
                few.push(pattern);
                true
            }
            PatternSet::Few(few) => {
                let mut many: HashSet<Pattern> = few.drain(..).collect();
                many.insert(pattern);
                *self = PatternSet::Many(many);
                true
            }
            PatternSet::Many(many) => many.insert(pattern),
        }
    }

    /// Removes `pattern`; false if it was not there.
    pub fn remove(&mut self, pattern: &Pattern) -> bool {
        match self {
            PatternSet::Few(few) => match few.iter().position(|p| p == pattern) {
                Some(at) => {
                    few.swap_remove(at);
                    true
                }
                None => false,
            },
            PatternSet::Many(many) => many.remove(pattern),
        }
    }

    /// Every pattern, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Pattern> {
        let (few, many) = match self {
            PatternSet::Few(few) => (Some(few.iter()), None),
            PatternSet::Many(many) => (None, Some(many.iter())),
        };
        few.into_iter().flatten().chain(many.into_iter().flatten())
    }

    /// Empties the set, returning what it held.
    pub fn take(&mut self) -> Vec<Pattern> {
        match std::mem::take(self) {
            PatternSet::Few(few) => few,
            PatternSet::Many(many) => many.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Pattern {
        Pattern::new(format!("t.{n}")).expect("valid pattern")
    }

    #[test]
    fn it_is_a_set_below_and_above_the_inline_limit() {
        let mut set = PatternSet::default();
        assert!(set.is_empty());
        for n in 0..INLINE_MAX {
            assert!(set.insert(pattern(n)));
            assert!(!set.insert(pattern(n)), "no pattern twice");
        }
        assert!(matches!(set, PatternSet::Few(_)));
        assert!(set.insert(pattern(INLINE_MAX)));
        assert!(matches!(set, PatternSet::Many(_)), "past the limit: hashed");
        assert!(!set.insert(pattern(0)));
        assert_eq!(set.len(), INLINE_MAX + 1);
        assert!((0..=INLINE_MAX).all(|n| set.contains(&pattern(n))));
        assert_eq!(set.iter().count(), INLINE_MAX + 1);
        assert!(set.remove(&pattern(3)));
        assert!(!set.remove(&pattern(3)));
        assert!(!set.contains(&pattern(3)));
        let mut taken = set.take();
        taken.sort();
        assert_eq!(taken.len(), INLINE_MAX);
        assert!(set.is_empty());
    }

    #[test]
    fn a_small_set_removes_and_iterates() {
        let mut set = PatternSet::default();
        for n in 0..3 {
            set.insert(pattern(n));
        }
        assert!(set.remove(&pattern(0)));
        assert!(!set.remove(&pattern(7)));
        let mut left: Vec<&Pattern> = set.iter().collect();
        left.sort();
        assert_eq!(left, [&pattern(1), &pattern(2)]);
        assert_eq!(set.take().len(), 2);
        assert!(matches!(set, PatternSet::Few(ref few) if few.is_empty()));
    }
}
