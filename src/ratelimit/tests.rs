use super::*;

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(secs)
}

fn read(headers: &[(&str, &str)]) -> RateLimit {
    RateLimit::from_headers(headers.iter().map(|(n, v)| (*n, v.as_bytes())))
}

/// 2026-01-01T00:00:00Z.
const RESET: u64 = 1_767_225_600;

#[test]
fn reads_githubs_headers_in_any_case() {
    let seen = read(&[
        ("X-RateLimit-Limit", "5000"),
        ("x-ratelimit-remaining", "4999"),
        ("X-RATELIMIT-USED", "1"),
        ("x-ratelimit-reset", "1767225600"),
        ("x-ratelimit-resource", "graphql"),
        ("Date", "Wed, 31 Dec 2025 23:00:00 GMT"),
    ]);
    assert_eq!(
        seen,
        RateLimit {
            limit: Some(5000),
            remaining: Some(4999),
            used: Some(1),
            reset: Some(t(RESET)),
            resource: Some("graphql".into()),
            retry_after: None,
            retry_at: None,
            server_date: Some(t(RESET - 3600)),
        }
    );
    assert!(seen.is_known());
}

#[test]
fn reads_gitlabs_headers_and_retry_after_in_both_forms() {
    let seen = read(&[
        ("RateLimit-Limit", "600"),
        ("RateLimit-Remaining", "0"),
        ("RateLimit-ResetTime", "Thu, 01 Jan 2026 00:00:00 GMT"),
        ("Retry-After", "30"),
    ]);
    assert_eq!(seen.limit, Some(600));
    assert_eq!(seen.remaining, Some(0));
    assert_eq!(seen.reset, Some(t(RESET)));
    assert_eq!(seen.retry_after, Some(Duration::from_secs(30)));
    let dated = read(&[("retry-after", "Thu, 01 Jan 2026 00:00:00 GMT")]);
    assert_eq!(dated.retry_at, Some(t(RESET)));
    assert_eq!(dated.retry_after, None);
}

#[test]
fn unreadable_values_are_ignored() {
    let seen = RateLimit::from_headers([
        ("x-ratelimit-remaining", &b"lots"[..]),
        ("x-ratelimit-reset", &b"-5"[..]),
        ("x-ratelimit-limit", &[0xff, 0xfe][..]),
        ("date", &b"yesterday"[..]),
        ("content-type", &b"application/json"[..]),
    ]);
    assert_eq!(seen, RateLimit::default());
    assert!(!seen.is_known());
    assert_eq!(seen.verdict(200, t(RESET)), Verdict::Continue);
}

#[test]
fn a_401_invalidates_whatever_the_headers() {
    assert_eq!(RateLimit::default().verdict(401, t(0)), Verdict::Invalidate);
}

#[test]
fn a_spent_quota_expires_the_key_until_the_reset() {
    let seen = read(&[
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1767225600"),
    ]);
    let now = t(RESET - 100);
    let until_reset = Verdict::Expire {
        refresh_at: t(RESET),
        secondary: false,
    };
    assert_eq!(seen.verdict(403, now), until_reset);
    assert_eq!(seen.verdict(429, now), until_reset);
    // A 200 that spent the last call: expire before the next call is refused.
    assert_eq!(seen.verdict(200, now), until_reset);
    // Once the reset has passed, a 200 says nothing.
    assert_eq!(seen.verdict(200, t(RESET + 1)), Verdict::Continue);
}

#[test]
fn a_secondary_limit_waits_for_retry_after_or_a_minute() {
    let now = t(RESET - 1000);
    let told = read(&[("x-ratelimit-remaining", "4000"), ("retry-after", "42")]);
    assert_eq!(
        told.verdict(403, now),
        Verdict::Expire {
            refresh_at: t(RESET - 958),
            secondary: true
        }
    );
    let untold = read(&[("x-ratelimit-remaining", "4000")]);
    assert_eq!(
        untold.verdict(429, now),
        Verdict::Expire {
            refresh_at: now.saturating_add(DEFAULT_BACKOFF),
            secondary: true
        }
    );
    // A 403 with calls left and no Retry-After is a forbidden resource, not a limit.
    assert_eq!(untold.verdict(403, now), Verdict::Continue);
    // Spent and told to retry earlier than the reset: the reset wins.
    let both = read(&[
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1767225600"),
        ("retry-after", "5"),
    ]);
    assert_eq!(
        both.verdict(403, now),
        Verdict::Expire {
            refresh_at: t(RESET),
            secondary: false
        }
    );
}

#[test]
fn a_local_clock_ahead_of_the_platforms_moves_the_refresh_time_later() {
    // Our clock is 30 s ahead: the platform says 23:50:00 when we read 23:50:30.
    let seen = read(&[
        ("x-ratelimit-remaining", "0"),
        ("x-ratelimit-reset", "1767225600"),
        ("date", "Wed, 31 Dec 2025 23:50:00 GMT"),
    ]);
    let now = t(RESET - 600 + 30);
    assert_eq!(
        seen.verdict(403, now),
        Verdict::Expire {
            refresh_at: t(RESET + 30),
            secondary: false
        }
    );
    // Behind by 30 s: earlier on our clock.
    let now = t(RESET - 600 - 30);
    assert_eq!(seen.to_local(t(RESET), now), t(RESET - 30));
    // A Date header further off than MAX_SKEW is not believed.
    let now = t(RESET - 600 + MAX_SKEW.as_secs() + 1);
    assert_eq!(seen.to_local(t(RESET), now), t(RESET));
}

#[test]
fn a_refresh_time_already_past_still_rests_the_key_a_second() {
    let seen = read(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "100")]);
    assert_eq!(
        seen.verdict(403, t(200)),
        Verdict::Expire {
            refresh_at: t(201),
            secondary: false
        }
    );
}

#[cfg(feature = "http")]
#[test]
fn reads_an_http_header_map() {
    let mut map = http::HeaderMap::new();
    map.insert("x-ratelimit-remaining", http::HeaderValue::from_static("7"));
    map.insert(
        "x-ratelimit-reset",
        http::HeaderValue::from_static("1767225600"),
    );
    let seen = RateLimit::from_header_map(&map);
    assert_eq!((seen.remaining, seen.reset), (Some(7), Some(t(RESET))));
}
