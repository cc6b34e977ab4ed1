//! What a sender can make the engine hold is bounded: ids, names, platforms
//! and keys are capped, a re-sent held request is found by index, and holds
//! run on the monotonic clock.

use super::*;

fn new_from(requester: &str, request: Option<&str>, platform: &str, hold_ms: u64) -> Vec<u8> {
    let mut v = serde_json::json!({
        "type": "NEW", "key_platform": platform, "requester_id": requester, "hold_ms": hold_ms,
    });
    if let Some(r) = request {
        v["request_id"] = r.into();
    }
    v.to_string().into_bytes()
}

fn publish_of(platform: &str, key: &str) -> Vec<u8> {
    serde_json::json!({"type": "PUBLISH", "key_str": key, "key_platform": platform})
        .to_string()
        .into_bytes()
}

fn last_rejection(e: &mut Engine<SplitMix64>) -> Option<DecodeError> {
    std::iter::from_fn(|| e.poll_event())
        .filter_map(|ev| match ev {
            Event::Rejected { error, .. } => Some(error),
            _ => None,
        })
        .last()
}

/// One key of `p`, rate limited until 80 000 s: every NEW finds none fresh.
fn engine_with_an_expired_key() -> Engine<SplitMix64> {
    expired_key_with(EngineConfig::default())
}

fn expired_key_with(config: EngineConfig) -> Engine<SplitMix64> {
    let mut e = Engine::new(config, SplitMix64::new(42));
    e.publish(t(0), "p", "ghp_k");
    e.expire(t(0), "p", "ghp_k", t(80_000));
    e
}

#[test]
fn ids_longer_than_the_limit_are_refused_and_answered_where_they_can_be() {
    use crate::protocol::MAX_ID_LEN;
    let mut e = engine_with_an_expired_key();
    let _ = last_rejection(&mut e);
    // A requester_id at the limit is served (held).
    let at_limit = "r".repeat(MAX_ID_LEN);
    e.handle(t(1), REQ, &new_from(&at_limit, None, "p", 60_000));
    assert_eq!(e.held(), 1);
    // One byte more: no channel to answer on, nothing held, logged.
    let over = "r".repeat(MAX_ID_LEN + 1);
    e.handle(t(1), REQ, &new_from(&over, Some("1"), "p", 60_000));
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.held(), 1);
    assert_eq!(
        last_rejection(&mut e),
        Some(DecodeError::TooLong {
            field: "requester_id",
            len: MAX_ID_LEN + 1,
            max: MAX_ID_LEN
        })
    );
    // The same for ACK and the lists.
    let ack = serde_json::json!({"type": "ACK", "requester_id": over}).to_string();
    e.handle(t(1), ANN, ack.as_bytes());
    assert!(drain(&mut e).is_empty());
    // A request_id too long: told so on its channel, without the id.
    let long_rid = "q".repeat(MAX_ID_LEN + 1);
    e.handle(t(1), REQ, &new_from("w", Some(&long_rid), "p", 60_000));
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].channel, "worker-oath-request-w");
    let m = reply_of(&out[0]);
    assert!(matches!(
        m.reply,
        Reply::Error {
            code: ErrorCode::TooLarge,
            ..
        }
    ));
    assert_eq!(m.request_id, None);
    assert_eq!(e.held(), 1);
    // The error reply names the field and the limit, not the id.
    let text = String::from_utf8(out[0].payload.clone()).unwrap();
    assert!(text.contains("request_id") && text.contains("256") && !text.contains("qqqq"));
}

#[test]
fn key_and_platform_names_longer_than_the_limit_are_refused() {
    use crate::protocol::{MAX_KEY_LEN, MAX_PLATFORM_LEN};
    let mut e = engine();
    let long_key = "k".repeat(MAX_KEY_LEN + 1);
    let long_platform = "p".repeat(MAX_PLATFORM_LEN + 1);
    // Over the wire: PUBLISH has no reply, so it is logged and dropped.
    e.handle(t(0), ANN, &publish_of("p", &long_key));
    assert!(matches!(
        last_rejection(&mut e),
        Some(DecodeError::TooLong {
            field: "key_str",
            ..
        })
    ));
    e.handle(t(0), ANN, &publish_of(&long_platform, "k"));
    assert!(matches!(
        last_rejection(&mut e),
        Some(DecodeError::TooLong {
            field: "key_platform",
            ..
        })
    ));
    assert!(drain(&mut e).is_empty());
    assert!(e.platforms().is_empty());
    // Through the typed operation: the same policy.
    assert_eq!(e.publish(t(0), "p", &long_key), Published::Refused);
    assert_eq!(e.publish(t(0), &long_platform, "k"), Published::Refused);
    assert!(e.platforms().is_empty());
    // At the limits both are fine.
    let key = "k".repeat(MAX_KEY_LEN);
    let platform = "p".repeat(MAX_PLATFORM_LEN);
    e.handle(t(0), ANN, &publish_of(&platform, &key));
    assert_eq!(e.keys(t(0), &platform), Some(vec![key]));
    // A NEW for a platform name too long is answered `too_large`.
    let new = serde_json::json!({"type": "NEW", "key_platform": long_platform, "requester_id": 7});
    e.handle(t(0), REQ, new.to_string().as_bytes());
    let out = drain(&mut e);
    assert_eq!(out[0].channel, "worker-oath-request-7");
    assert!(matches!(
        reply_of(&out[0]).reply,
        Reply::Error {
            code: ErrorCode::TooLarge,
            ..
        }
    ));
    // EXPIRE and INVALIDATE of a key too long change nothing and get no reply.
    let inv = serde_json::json!({"type": "INVALIDATE", "key_str": long_key, "key_platform": platform, "requester_id": 7});
    e.handle(t(0), REQ, inv.to_string().as_bytes());
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.invalid_keys(&platform), Some(vec![]));
}

#[test]
fn platforms_beyond_the_cap_are_refused_and_known_ones_still_grow() {
    let config = EngineConfig {
        max_platforms: 2,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(config, SplitMix64::new(1));
    e.handle(t(0), ANN, &publish_of("a", "ka"));
    e.handle(t(0), ANN, &publish_of("b", "kb"));
    e.handle(t(0), ANN, &publish_of("c", "kc"));
    assert_eq!(
        last_rejection(&mut e),
        Some(DecodeError::LimitReached {
            limit: "platforms",
            max: 2
        })
    );
    assert_eq!(e.platforms(), vec!["a", "b"]);
    assert_eq!(e.stats().rejected, 1);
    assert_eq!(e.publish(t(0), "d", "kd"), Published::Refused);
    // Known platforms take more keys; an unpublished platform stays known.
    assert_eq!(e.publish(t(0), "a", "ka2"), Published::Added);
    assert!(e.unpublish(t(0), "b", "kb"));
    assert_eq!(e.publish(t(0), "b", "kb"), Published::Added);
    // A NEW for the refused platform is told it is unknown.
    e.handle(
        t(0),
        REQ,
        br#"{"type":"NEW","key_platform":"c","requester_id":1}"#,
    );
    assert!(matches!(
        reply_of(&drain(&mut e)[0]).reply,
        Reply::Error {
            code: ErrorCode::UnknownPlatform,
            ..
        }
    ));
}

#[test]
fn keys_beyond_the_cap_of_a_platform_are_refused_and_known_ones_still_change() {
    let config = EngineConfig {
        max_keys_per_platform: 2,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(config, SplitMix64::new(1));
    assert_eq!(e.publish(t(0), "p", "k1"), Published::Added);
    assert_eq!(e.publish(t(0), "p", "k2"), Published::Added);
    e.handle(t(0), ANN, &publish_of("p", "k3"));
    assert_eq!(
        last_rejection(&mut e),
        Some(DecodeError::LimitReached {
            limit: "keys per platform",
            max: 2
        })
    );
    assert_eq!(e.counts(t(0), "p").map(|c| c.total()), Some(2));
    // Keys in the pool, in any state, may be published again: invalid ones
    // are revived, since they count already.
    assert_eq!(e.invalidate(t(0), "p", "k1"), Invalidated::Invalidated);
    assert_eq!(e.publish(t(0), "p", "k1"), Published::Revived);
    assert_eq!(e.publish(t(0), "p", "k2"), Published::Unchanged);
    // Room made by an unpublish is room again; other platforms have their own.
    assert!(e.unpublish(t(0), "p", "k2"));
    assert_eq!(e.publish(t(0), "p", "k3"), Published::Added);
    assert_eq!(e.publish(t(0), "q", "k4"), Published::Added);
}

#[test]
fn a_resent_held_request_is_found_without_a_scan_and_held_once() {
    let mut e = engine_with_an_expired_key();
    let n = 2_000;
    for i in 0..n {
        e.handle(
            t(1),
            REQ,
            &new_from(&format!("w{i}"), Some("r1"), "p", 60_000),
        );
    }
    assert_eq!(e.held(), n);
    // Every request sent again (to a new reply subject): still held once
    // each, and answered where it was last sent from.
    for i in 0..n {
        let msg = new_from(&format!("w{i}"), Some("r1"), "p", 60_000);
        e.handle_with_reply(t(2), REQ, &msg, Some(&format!("inbox.{i}")));
    }
    assert_eq!(e.held(), n);
    assert_eq!(e.stats().holds_total, n as u64);
    assert!(drain(&mut e).is_empty());
    // Same ids for another platform are another request.
    e.publish(t(2), "q", "ghp_q");
    e.expire(t(2), "q", "ghp_q", t(80_000));
    e.handle(t(3), REQ, &new_from("w0", Some("r1"), "q", 60_000));
    assert_eq!(e.held(), n + 1);
    // The first to be answered is the oldest, at its latest address. The new
    // key takes its share, half of them (p's other key refreshes later).
    e.publish(t(4), "p", "ghp_new");
    let out = drain(&mut e);
    assert_eq!(out.len(), n / 2, "the new key's share of the held requests");
    assert_eq!(out[0].channel, "inbox.0");
    assert_eq!(out[n / 2 - 1].channel, format!("inbox.{}", n / 2 - 1));
    assert_eq!(e.held(), n / 2 + 1);
}

#[test]
fn a_clock_stepped_back_does_not_extend_a_hold() {
    let mut e = engine_with_an_expired_key();
    // Held at 1 000 s for 30 s.
    e.handle(t(1_000), REQ, &new_from("w", Some("1"), "p", 30_000));
    assert_eq!(e.held(), 1);
    assert_eq!(e.poll_timeout(), Some(t(1_030)));
    // The wall clock is stepped back by 600 s, 10 s later: the hold has 20 s
    // left, so it ends at 420 s on the new clock, not at 1 030 s.
    e.handle_timeout(t(1_010));
    e.handle_timeout(t(410));
    assert_eq!(e.held(), 1);
    assert_eq!(e.poll_timeout(), Some(t(430)));
    e.handle_timeout(t(429));
    assert_eq!(e.held(), 1);
    e.handle_timeout(t(430));
    assert_eq!(e.held(), 0);
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].channel, "worker-oath-request-w");
    // The wait hint still counts to the key's refresh time on the wall clock.
    assert_eq!(reply_of(&out[0]).reply, Reply::Wait(80_000 - 430));
    // Holds that come after the step are timed from it as usual.
    e.handle(t(440), REQ, &new_from("v", None, "p", 5_000));
    assert_eq!(e.poll_timeout(), Some(t(445)));
    // A step back between two messages counts none of the step either: held
    // at 445 for 10 s, back to 100 at once, ends at 110.
    e.handle(t(445), REQ, &new_from("u", None, "p", 10_000));
    e.handle(t(100), ANN, br#"{"type":"ACK","requester_id":1}"#);
    assert_eq!(e.poll_timeout(), Some(t(100)), "v's hold ended at 445");
    e.handle_timeout(t(100));
    assert_eq!(drain(&mut e).len(), 2, "v's wait and the ACK");
    assert_eq!(e.poll_timeout(), Some(t(110)));
}

#[test]
fn a_resent_held_request_is_found_when_no_more_can_be_held() {
    let mut e = expired_key_with(EngineConfig {
        max_held: 1,
        ..EngineConfig::default()
    });
    e.handle(t(1), REQ, &new_from("w", Some("1"), "p", 60_000));
    // Full: a new request gets its wait at once, a re-sent one stays held.
    e.handle(t(1), REQ, &new_from("v", Some("1"), "p", 60_000));
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].channel, "worker-oath-request-v");
    e.handle(t(2), REQ, &new_from("w", Some("1"), "p", 60_000));
    assert!(drain(&mut e).is_empty());
    assert_eq!((e.held(), e.stats().holds_total), (1, 1));
}

#[test]
fn a_resent_held_request_answered_at_once_is_answered_once() {
    let mut e = engine();
    e.publish(t(0), "p", "ghp_only");
    e.expire(t(0), "p", "ghp_only", t(30));
    e.handle(t(1), REQ, &new_from("w0", Some("r1"), "p", 60_000));
    assert_eq!(e.held(), 1);
    assert!(drain(&mut e).is_empty());
    // Sent again after the key refreshed, before any timer served the held
    // one: the key is handed out at once, and the held one is dropped.
    e.handle(t(31), REQ, &new_from("w0", Some("r1"), "p", 60_000));
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(reply_of(&out[0]).reply, Reply::Key("ghp_only".into()));
    assert_eq!(e.held(), 0);
    e.handle_timeout(t(31));
    e.handle_timeout(t(100));
    assert!(drain(&mut e).is_empty(), "a second answer to one request");
}
