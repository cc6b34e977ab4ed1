//! Keys are secrets: this is how they appear in any text keyman produces.

use std::fmt;

/// Displays a key without revealing it: its first characters (at most 4, and at
/// most a quarter of the key) and its length, e.g. `ghp_…(40 chars)`.
#[derive(Clone, Copy)]
pub struct Masked<'a>(pub &'a str);

impl fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.0.chars().count();
        let shown: String = self.0.chars().take((len / 4).min(4)).collect();
        write!(f, "{shown}…({len} chars)")
    }
}

impl fmt::Debug for Masked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Shortens any text from outside to at most `max` characters for a log line.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_key_never_shows_the_whole_key() {
        let key = "ghp_abcdefghijklmnopqrstuvwxyz0123456789";
        let shown = Masked(key).to_string();
        assert_eq!(shown, "ghp_…(40 chars)");
        assert!(!shown.contains("abcdefgh"));
        assert_eq!(Masked("abc").to_string(), "…(3 chars)");
        assert_eq!(Masked("abcdefgh").to_string(), "ab…(8 chars)");
        assert_eq!(Masked("").to_string(), "…(0 chars)");
        assert_eq!(Masked("ééééééééé").to_string(), "éé…(9 chars)");
    }
}
