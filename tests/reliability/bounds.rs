//! What a remote sender can make `serve` hold is bounded.

use crate::support::faults::{ANN, REQ, Raw, RawSub, list, publish_bytes, tail, wait_ack};
use crate::support::{Broker, Serve};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

const WAIT: Duration = Duration::from_secs(30);
const HELD: usize = 10_000;
/// Just under the 64 KiB payload limit with the rest of the NEW.
const ID_LEN: usize = 65_000;
/// The longest `requester_id` and `request_id` accepted (`keyman::protocol::MAX_ID_LEN`).
const ID_LIMIT: usize = 256;
const PLATFORMS: usize = 100_000;
/// What the floods may add to `serve`'s resident memory. With keyman's
/// bounds (ids of at most 256 bytes, a cap on platforms) 10 000 held
/// requests take a few MiB and the platform cap keeps the pool small; the
/// rest is allocator slack and the broker client's buffers. Unbounded, the
/// held ids alone are 10 000 x 65 000 bytes = 620 MiB, copied at least once.
const RSS_BOUND_KIB: u64 = 100 * 1024;

fn oversized_ids_and_too_many_platforms_are_bounded(broker: &Broker) {
    let serve = Serve::start(broker);
    assert!(
        wait_ack(broker, WAIT),
        "serve does not answer:\n{}",
        serve.log()
    );
    let mut raw = Raw::connect(broker);
    // One key, rate limited for an hour: every NEW with `hold_ms` is held.
    let key = "ghp_bounds_0123456789abcdefghijklmnopqr";
    raw.publish(ANN, &publish_bytes("p", key));
    let refresh = keyman::service::wall_clock().as_secs() + 3600;
    raw.publish(
        REQ,
        format!(r#"{{"type": "EXPIRE", "key_str": "{key}", "key_platform": "p", "refresh_time": {refresh}, "requester_id": 1}}"#)
            .as_bytes(),
    );
    assert!(wait_ack(broker, WAIT));
    let rss_before = serve.rss_kib();

    let start = Instant::now();
    let filler = "x".repeat(ID_LEN - 8);
    for batch in (0..HELD).collect::<Vec<_>>().chunks(100) {
        let news: Vec<(String, Vec<u8>)> = batch
            .iter()
            .map(|i| {
                (
                    REQ.to_owned(),
                    format!(r#"{{"type": "NEW", "key_platform": "p", "requester_id": "{i:08}{filler}", "hold_ms": 60000}}"#)
                        .into_bytes(),
                )
            })
            .collect();
        raw.publish_all(&news);
        // Paced: `serve` has read the batch before the next one is sent.
        assert!(
            wait_ack(broker, WAIT),
            "serve stopped answering during the flood:\n{}",
            tail(&serve.log(), 5)
        );
    }
    let held_in = start.elapsed();
    let rss_held = serve.rss_kib();

    let start = Instant::now();
    let all: Vec<(String, Vec<u8>)> = (0..PLATFORMS)
        .map(|i| {
            (
                ANN.to_owned(),
                publish_bytes(&format!("platform_{i:06}"), key),
            )
        })
        .collect();
    for batch in all.chunks(2_000) {
        raw.publish_all(batch);
        assert!(
            wait_ack(broker, WAIT),
            "serve stopped answering during the flood:\n{}",
            tail(&serve.log(), 5)
        );
    }
    let platforms_in = start.elapsed();
    let rss_after = serve.rss_kib();
    let platforms = list(broker, "LIST_PLATFORMS", None, WAIT).map(|p| p.len());

    // As many NEWs with ids at the limit: these are held, all of them.
    let filler = "y".repeat(ID_LIMIT - 8);
    for batch in (0..HELD).collect::<Vec<_>>().chunks(500) {
        let news: Vec<(String, Vec<u8>)> = batch
            .iter()
            .map(|i| {
                (
                    REQ.to_owned(),
                    format!(r#"{{"type": "NEW", "key_platform": "p", "requester_id": "{i:08}{filler}", "request_id": "{i:08}{filler}", "hold_ms": 60000}}"#)
                        .into_bytes(),
                )
            })
            .collect();
        raw.publish_all(&news);
        assert!(wait_ack(broker, WAIT), "serve stopped answering");
    }
    let rss_limit_held = serve.rss_kib();

    // Where the sender can be told, it is: `too_large` (ext).
    let told = RawSub::channels(broker, &[format!("{REQ}-told")]);
    let long_request_id = "r".repeat(ID_LIMIT + 1);
    let long_platform = "p".repeat(200);
    raw.publish(
        REQ,
        format!(r#"{{"type": "NEW", "key_platform": "p", "requester_id": "told", "request_id": "{long_request_id}"}}"#).as_bytes(),
    );
    raw.publish(
        REQ,
        format!(r#"{{"type": "NEW", "key_platform": "{long_platform}", "requester_id": "told"}}"#)
            .as_bytes(),
    );
    for what in ["request_id", "key_platform"] {
        let (_, payload, _) = told
            .next(WAIT)
            .unwrap_or_else(|| panic!("no answer to a NEW with a {what} too long"));
        let reply: serde_json::Value = serde_json::from_slice(&payload).expect("a JSON reply");
        assert_eq!(reply["code"], "too_large", "{reply}");
        assert!(
            reply["error"].as_str().is_some_and(|e| e.contains(what)),
            "{reply}"
        );
    }

    println!(
        "bounds on {}: RSS {rss_before} KiB before, {rss_held} KiB after {HELD} NEWs of {ID_LEN}-byte ids (refused; sent in {held_in:?}), {rss_after} KiB after {PLATFORMS} platforms (sent in {platforms_in:?}), {rss_limit_held} KiB with {HELD} NEWs of {ID_LIMIT}-byte ids held; LIST_PLATFORMS names {platforms:?}",
        broker.url()
    );
    assert!(
        rss_held < rss_before + RSS_BOUND_KIB
            && rss_after < rss_before + RSS_BOUND_KIB
            && rss_limit_held < rss_before + RSS_BOUND_KIB,
        "memory grew from {rss_before} KiB to {rss_held} KiB (NEWs of oversized ids), {rss_after} KiB (platforms) and {rss_limit_held} KiB (held NEWs); bound +{RSS_BOUND_KIB} KiB"
    );
    assert!(
        platforms.is_some_and(|n| n < PLATFORMS),
        "LIST_PLATFORMS names {platforms:?} platforms: no cap on platforms"
    );
    assert!(
        wait_ack(broker, WAIT),
        "serve does not answer after the floods"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_ids_and_too_many_platforms_are_bounded_over_redis() {
    let broker = Broker::redis();
    block_in_place(|| oversized_ids_and_too_many_platforms_are_bounded(&broker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_ids_and_too_many_platforms_are_bounded_over_nats() {
    let broker = Broker::nats();
    block_in_place(|| oversized_ids_and_too_many_platforms_are_bounded(&broker));
}
