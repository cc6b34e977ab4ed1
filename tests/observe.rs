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

/// `secs` (Unix) as an HTTP date, as the `Date` header carries it.
fn http_date(secs: u64) -> String {
    keyman::ratelimit::format_http_date(Timestamp::from_secs(secs))
}

fn secs(t: u64) -> Timestamp {
    Timestamp::from_secs(t)
}

#[path = "observe/embedded.rs"]
mod embedded;
#[path = "observe/remote.rs"]
mod remote;
