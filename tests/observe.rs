//! `KeySource::observe`: what a worker's key source does with a response's
//! status and rate-limit headers. On the embedded pool (with an injected clock),
//! over a remote `KeyClient` talking to an orchestrator on the memory bus, and
//! against an Augur-style responder that knows nothing but EXPIRE, INVALIDATE
//! and NEW and echoes no `request_id`.

#![cfg(feature = "tokio")]

use async_trait::async_trait;
use keyman::protocol::{Request, decode_request};
use keyman::ratelimit::RateLimit;
use keyman::service::embedded::EmbeddedPool;
use keyman::service::{
    Bus, BusError, BusEvent, ClientConfig, KeyAdmin, KeyClient, KeyPublisher, KeySource, Next,
    Orchestrator, Subscription, wall_clock,
};
use keyman::{EngineConfig, KeyError, ManualClock, Timestamp};
use keyman_transport::MemoryBus;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// 2025-12-31T23:50:00Z: the embedded pool's clock at the start of each test.
const T0: u64 = 1_767_225_000;
const P: &str = "github_rest";

/// `secs` (Unix) as an HTTP date, as the `Date` header carries it.
fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {day:02} {} {year} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Reads a response's headers, as a worker does.
fn headers(pairs: &[(&str, String)]) -> RateLimit {
    RateLimit::from_headers(pairs.iter().map(|(n, v)| (*n, v.as_bytes())))
}

/// GitHub's headers with `remaining` calls left and the window resetting at
/// `reset` (Unix seconds), and optionally the platform's `Date`.
fn github(remaining: u64, reset: u64, date: Option<u64>) -> RateLimit {
    let mut h = vec![
        ("x-ratelimit-limit", "5000".to_string()),
        ("x-ratelimit-remaining", remaining.to_string()),
        ("x-ratelimit-used", (5000 - remaining).to_string()),
        ("x-ratelimit-reset", reset.to_string()),
        ("x-ratelimit-resource", "core".to_string()),
    ];
    if let Some(d) = date {
        h.push(("date", http_date(d)));
    }
    headers(&h)
}

fn secs(t: u64) -> Timestamp {
    Timestamp::from_secs(t)
}

#[test]
fn http_dates_are_formatted_as_the_parser_reads_them() {
    assert_eq!(http_date(T0), "Wed, 31 Dec 2025 23:50:00 GMT");
    assert_eq!(
        keyman::ratelimit::parse_http_date(&http_date(T0)),
        Some(secs(T0))
    );
}

#[path = "observe/embedded.rs"]
mod embedded;
#[path = "observe/remote.rs"]
mod remote;
