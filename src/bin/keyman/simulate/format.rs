//! Text for people: durations read from and written to the command line, one-line
//! charts and the numbers of the report's table.

use std::time::Duration;

/// Why a duration text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The text is empty.
    #[error("empty duration")]
    Empty,
    /// The text is not numbers with units.
    #[error("invalid duration {0:?}: expected e.g. 24h, 90m, 3600s, 1h30m or 2d")]
    Invalid(String),
    /// The duration does not fit.
    #[error("duration {0:?} is too long")]
    TooLong(String),
}

/// Reads a duration such as `24h`, `90m`, `3600s`, `250ms`, `2d` or `1h30m`; a
/// number alone is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let invalid = || DurationError::Invalid(truncate(text, 40));
    let too_long = || DurationError::TooLong(truncate(text, 40));
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| too_long())?;
        rest = &rest[digits..];
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit_ms: u64 = match &rest[..unit_len] {
            "" | "s" => 1000,
            "ms" => 1,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(invalid()),
        };
        // A number without a unit is seconds, and only on its own.
        if unit_len == 0 && rest.len() != text.len() - digits {
            return Err(invalid());
        }
        rest = &rest[unit_len..];
        let part = number.checked_mul(unit_ms).ok_or_else(too_long)?;
        total_ms = total_ms.checked_add(part).ok_or_else(too_long)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way [`parse_duration`] reads it, in hours, minutes and
/// seconds: `24h`, `1h30m`, `90s`.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let ms = d.subsec_millis();
    if secs == 0 && ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, len) in [("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    if ms > 0 {
        out.push_str(&format!("{ms}ms"));
    }
    out
}

/// A one-line chart of `values` between 0 and `max`, at most `width` characters
/// wide (neighbouring values are averaged when there are more). Zero is a space;
/// any value above zero shows at least the lowest bar.
pub fn sparkline(values: &[u64], max: u64, width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if values.is_empty() || width == 0 {
        return String::new();
    }
    let columns = values.len().min(width);
    (0..columns)
        .map(|c| {
            let from = c * values.len() / columns;
            let to = ((c + 1) * values.len() / columns).max(from + 1);
            let bucket = &values[from..to];
            let sum: u128 = bucket.iter().map(|&v| u128::from(v)).sum();
            let mean = sum as f64 / bucket.len() as f64;
            if mean <= 0.0 || max == 0 {
                ' '
            } else {
                let level = (mean / max as f64 * BARS.len() as f64).ceil() as usize;
                BARS[level.clamp(1, BARS.len()) - 1]
            }
        })
        .collect()
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds in hours, minutes or seconds, whichever reads best: `20.8 h`.
pub fn hours(seconds: f64) -> String {
    if seconds >= 3600.0 {
        format!("{:.1} h", seconds / 3600.0)
    } else if seconds >= 60.0 {
        format!("{:.1} min", seconds / 60.0)
    } else {
        format!("{seconds:.1} s")
    }
}

/// A share as a percentage with one decimal: `86.8 %`.
pub fn percent(share: f64) -> String {
    format!("{:.1} %", share * 100.0)
}

/// Shortens a text from the command line to at most `max` characters for an
/// error message.
fn truncate(s: &str, max: usize) -> String {
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
    fn durations_are_read_and_written_with_units() {
        let h = Duration::from_secs(3600);
        assert_eq!(parse_duration("24h"), Ok(24 * h));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(90 * 60)));
        assert_eq!(parse_duration("3600s"), Ok(h));
        assert_eq!(parse_duration("3600"), Ok(h));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(48 * h));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        for bad in ["h", "12x", "1.5h", "-3s", "3 s", "10s5"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            parse_duration("99999999999999999999d"),
            Err(DurationError::TooLong(_))
        ));
        assert_eq!(format_duration(24 * h), "24h");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
    }

    #[test]
    fn sparklines_scale_to_the_maximum_and_fit_the_width() {
        assert_eq!(sparkline(&[0, 1, 4, 8], 8, 10), " ▁▄█");
        assert_eq!(sparkline(&[8; 100], 8, 10).chars().count(), 10);
        assert_eq!(sparkline(&[], 8, 10), "");
    }

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(17_280_000), "17,280,000");
    }
}
