use super::*;
use crate::pool::Assignment;
use crate::protocol::{DEFAULT_MAX_PAYLOAD, DecodeError, ErrorCode, Id, Reply, ReplyMessage};
use crate::rng::SplitMix64;

const REQ: &str = "worker-oath-request";
const ANN: &str = "augur-oauth-announce";

fn engine() -> Engine<SplitMix64> {
    Engine::new(EngineConfig::default(), SplitMix64::new(42))
}

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(secs)
}

/// The transmits queued so far; events stay queued for the tests that read
/// them (`last_rejection`).
fn drain(e: &mut Engine<SplitMix64>) -> Vec<Transmit> {
    std::iter::from_fn(|| e.poll_transmit()).collect()
}

fn reply_of(tx: &Transmit) -> ReplyMessage {
    Reply::decode(&tx.payload, DEFAULT_MAX_PAYLOAD).unwrap()
}

#[test]
fn new_gets_a_key_on_the_requesters_channel() {
    let mut e = engine();
    e.handle(
        t(0),
        ANN,
        br#"{"type": "PUBLISH", "key_str": "ghp_1", "key_platform": "github_rest"}"#,
    );
    e.handle(
        t(0),
        REQ,
        br#"{"type": "NEW", "key_platform": "github_rest", "requester_id": 4711}"#,
    );
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].channel, "worker-oath-request-4711");
    assert_eq!(out[0].payload, br#"{"key":"ghp_1"}"#);
}

#[test]
fn wait_hint_is_accurate_rounded_up_and_never_zero() {
    let mut e = engine();
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"k","key_platform":"p"}"#,
    );
    e.handle(t(0), REQ, br#"{"type":"EXPIRE","key_str":"k","key_platform":"p","refresh_time":100,"requester_id":1}"#);
    assert!(drain(&mut e).is_empty(), "EXPIRE gets no reply");
    e.handle(
        Timestamp::from_millis(10_500),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":1}"#,
    );
    assert_eq!(reply_of(&drain(&mut e)[0]).reply, Reply::Wait(90));
    assert_eq!(wait_seconds(t(100), t(100)), 1);
    assert_eq!(wait_seconds(t(101), t(100)), 1);
    assert_eq!(e.poll_timeout(), Some(t(100)));
    e.handle_timeout(t(100));
    assert_eq!(e.poll_timeout(), None);
}

#[test]
fn unknown_platform_and_no_keys_get_typed_errors() {
    let mut e = engine();
    e.handle(
        t(0),
        REQ,
        br#"{"type":"NEW","key_platform":"nope","requester_id":"a","request_id":5}"#,
    );
    let m = reply_of(&drain(&mut e)[0]);
    assert!(matches!(
        m.reply,
        Reply::Error {
            code: ErrorCode::UnknownPlatform,
            ..
        }
    ));
    assert_eq!(m.request_id, Some(Id::from(5u64)));
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"k","key_platform":"p"}"#,
    );
    e.handle(
        t(0),
        REQ,
        br#"{"type":"INVALIDATE","key_str":"k","key_platform":"p","requester_id":1}"#,
    );
    e.handle(
        t(0),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":1}"#,
    );
    let m = reply_of(&drain(&mut e)[0]);
    assert!(matches!(
        m.reply,
        Reply::Error {
            code: ErrorCode::NoKeys,
            ..
        }
    ));
}

#[test]
fn list_replies_and_ack_match_augur() {
    let mut e = engine();
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"k1","key_platform":"p"}"#,
    );
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"k2","key_platform":"p"}"#,
    );
    e.handle(
        t(0),
        REQ,
        br#"{"type":"INVALIDATE","key_str":"k2","key_platform":"p","requester_id":1}"#,
    );
    e.handle(t(0), ANN, br#"{"type": "ACK", "requester_id": 9}"#);
    e.handle(
        t(0),
        ANN,
        br#"{"type": "LIST_PLATFORMS", "requester_id": 9}"#,
    );
    e.handle(
        t(0),
        ANN,
        br#"{"type": "LIST_KEYS", "requester_id": 9, "key_platform": "p"}"#,
    );
    e.handle(
        t(0),
        ANN,
        br#"{"type": "LIST_INVALID_KEYS", "requester_id": 9, "key_platform": "p"}"#,
    );
    e.handle(
        t(0),
        ANN,
        br#"{"type": "LIST_KEYS", "requester_id": 9, "key_platform": "q"}"#,
    );
    let out = drain(&mut e);
    assert!(out.iter().all(|tx| tx.channel == "augur-oauth-announce-9"));
    let payloads: Vec<&[u8]> = out.iter().map(|tx| tx.payload.as_slice()).collect();
    assert_eq!(
        payloads,
        vec![
            &b""[..],
            br#"["p"]"#,
            br#"["k1"]"#,
            br#"["k2"]"#,
            br#"{"status":"unknown platform: q"}"#
        ]
    );
}

#[test]
fn bad_input_changes_nothing_and_is_answered_only_when_addressable() {
    let mut e = engine();
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"k","key_platform":"p"}"#,
    );
    let bad: &[(&str, &[u8])] = &[
        (REQ, b"42"),
        (ANN, b"[1,2]"),
        (REQ, b"not json"),
        (REQ, br#"{"type":"NEW","key_platform":"p"}"#),
        (REQ, br#"{"type":"BOGUS","requester_id":1}"#),
        (REQ, br#"{"type":"EXPIRE","key_str":"k","key_platform":"p","refresh_time":"x","requester_id":1}"#),
        (ANN, br#"{"type":"ACK"}"#),
        (ANN, br#"{"type":"PUBLISH","key_str":5,"key_platform":"p"}"#),
        ("other-channel", b"{}"),
    ];
    for (ch, p) in bad {
        e.handle(t(0), ch, p);
    }
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.stats().rejected, bad.len() as u64);
    assert_eq!(
        e.pool().state("p", "k", t(0)),
        Some(crate::pool::KeyState::Fresh)
    );
    // A NEW without platform but with an address is told what is wrong.
    e.handle(t(0), REQ, br#"{"type":"NEW","requester_id":3}"#);
    let out = drain(&mut e);
    assert_eq!(out[0].channel, "worker-oath-request-3");
    assert!(matches!(
        reply_of(&out[0]).reply,
        Reply::Error {
            code: ErrorCode::BadRequest,
            ..
        }
    ));
    // Oversized payloads are rejected unread.
    let huge = vec![b'x'; DEFAULT_MAX_PAYLOAD + 1];
    e.handle(t(0), ANN, &huge);
    assert!(matches!(
        std::iter::from_fn(|| e.poll_event()).last(),
        Some(Event::Rejected {
            error: DecodeError::TooLarge { .. },
            ..
        })
    ));
}

#[test]
fn events_never_contain_a_whole_key() {
    let mut e = engine();
    let key = "ghp_supersecretsupersecret0123456789";
    let msg = format!(r#"{{"type":"PUBLISH","key_str":"{key}","key_platform":"p"}}"#);
    e.handle(t(0), ANN, msg.as_bytes());
    let msg = format!(r#"{{"type":"INVALIDATE","key_str":"{key}","key_platform":"p"}}"#);
    e.handle(t(0), REQ, msg.as_bytes());
    let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
    assert_eq!(events.len(), 2);
    for ev in events {
        assert!(!format!("{ev:?}").contains(key));
    }
}

#[test]
fn shutdown_handles_what_came_before_and_nothing_after() {
    let mut e = engine();
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"k","key_platform":"p"}"#,
    );
    e.handle(
        t(0),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":1}"#,
    );
    e.handle(t(0), ANN, br#"{"type":"SHUTDOWN"}"#);
    e.handle(
        t(0),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":2}"#,
    );
    assert!(e.is_shutdown());
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].channel, "worker-oath-request-1");
}

#[test]
fn native_reply_subject_takes_precedence() {
    let mut e = engine();
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"k","key_platform":"p"}"#,
    );
    e.handle_with_reply(
        t(0),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":1}"#,
        Some("_INBOX.x"),
    );
    assert_eq!(drain(&mut e)[0].channel, "_INBOX.x");
}

#[test]
fn held_requests_are_answered_when_a_key_is_published_or_refreshes() {
    let mut e = engine();
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"a","key_platform":"p"}"#,
    );
    e.handle(
        t(0),
        REQ,
        br#"{"type":"EXPIRE","key_str":"a","key_platform":"p","refresh_time":100}"#,
    );
    // Two held requests, and one sent twice (held once).
    e.handle(
        t(1),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":"x","request_id":1,"hold_ms":30000}"#,
    );
    e.handle(
        t(1),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":"x","request_id":1,"hold_ms":30000}"#,
    );
    e.handle(
        t(2),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":"y","request_id":2,"hold_ms":500}"#,
    );
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.held(), 2);
    assert_eq!(e.poll_timeout(), Some(Timestamp::from_millis(2500)));
    // y's hold ends: it gets an accurate wait.
    e.handle_timeout(Timestamp::from_millis(2500));
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].channel, "worker-oath-request-y");
    assert_eq!(reply_of(&out[0]).reply, Reply::Wait(98));
    // A publish answers x at once, with the new key.
    e.handle(
        t(3),
        ANN,
        br#"{"type":"PUBLISH","key_str":"b","key_platform":"p"}"#,
    );
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    let m = reply_of(&out[0]);
    assert_eq!(
        (m.reply, m.request_id),
        (Reply::Key("b".into()), Some(Id::from(1u64)))
    );
    assert_eq!(e.held(), 0);
    // A refresh answers a held request when its time comes.
    e.handle(
        t(4),
        REQ,
        br#"{"type":"INVALIDATE","key_str":"b","key_platform":"p"}"#,
    );
    e.handle(
        t(5),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":"z","hold_ms":200000}"#,
    );
    assert_eq!(e.poll_timeout(), Some(t(65)).min(Some(t(100))));
    e.handle_timeout(t(100));
    let out = drain(&mut e);
    assert_eq!(reply_of(&out[0]).reply, Reply::Key("a".into()));
}

#[test]
fn held_requests_get_no_keys_when_the_last_key_goes_and_a_wait_on_shutdown() {
    let mut e = engine();
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"a","key_platform":"p"}"#,
    );
    e.handle(
        t(0),
        REQ,
        br#"{"type":"EXPIRE","key_str":"a","key_platform":"p","refresh_time":100}"#,
    );
    e.handle(
        t(1),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":"x","hold_ms":30000}"#,
    );
    e.handle(
        t(2),
        REQ,
        br#"{"type":"INVALIDATE","key_str":"a","key_platform":"p"}"#,
    );
    let out = drain(&mut e);
    assert!(matches!(
        reply_of(&out[0]).reply,
        Reply::Error {
            code: ErrorCode::NoKeys,
            ..
        }
    ));
    e.handle(
        t(3),
        ANN,
        br#"{"type":"PUBLISH","key_str":"b","key_platform":"p"}"#,
    );
    e.handle(
        t(3),
        REQ,
        br#"{"type":"EXPIRE","key_str":"b","key_platform":"p","refresh_time":100}"#,
    );
    e.handle(
        t(4),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":"x","hold_ms":30000}"#,
    );
    e.handle(t(5), ANN, br#"{"type":"SHUTDOWN"}"#);
    let out = drain(&mut e);
    assert_eq!(reply_of(&out[0]).reply, Reply::Wait(95));
    assert_eq!(e.poll_timeout(), None);
}

#[test]
fn a_refresh_time_too_far_ahead_is_cut_to_the_longest_expiry() {
    let mut e = engine();
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"k","key_platform":"p"}"#,
    );
    e.handle(
        t(0),
        REQ,
        br#"{"type":"EXPIRE","key_str":"k","key_platform":"p","refresh_time":1e300}"#,
    );
    assert_eq!(e.pool().next_refresh(), Some(t(25 * 3600)));
    e.handle(
        t(25 * 3600),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":1}"#,
    );
    assert_eq!(reply_of(&drain(&mut e)[0]).reply, Reply::Key("k".into()));
}

#[test]
fn status_reports_counts_per_platform() {
    let mut e = engine();
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"a","key_platform":"p"}"#,
    );
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"b","key_platform":"p"}"#,
    );
    e.handle(
        t(0),
        REQ,
        br#"{"type":"EXPIRE","key_str":"a","key_platform":"p","refresh_time":50}"#,
    );
    e.handle(t(0), ANN, br#"{"type":"STATUS","requester_id":"adm"}"#);
    let m = reply_of(&drain(&mut e)[0]);
    assert_eq!(
        m.reply,
        Reply::Status(vec![crate::protocol::PlatformStatus {
            platform: "p".into(),
            fresh: 1,
            expired: 1,
            invalid: 0,
            next_refresh: Some(50),
            ..Default::default()
        }])
    );
}

#[test]
fn time_going_backwards_panics_nowhere_and_refreshes_nothing_early() {
    let mut e = engine();
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"a","key_platform":"p"}"#,
    );
    e.handle(
        t(0),
        REQ,
        br#"{"type":"EXPIRE","key_str":"a","key_platform":"p","refresh_time":100}"#,
    );
    // At 150 the key has refreshed; back at 50 it stays fresh.
    e.handle_timeout(t(150));
    assert_eq!(e.assign(t(50), "p"), Assignment::Key("a"));
    // Expired until 200 at 150, it is not handed out at 199 nor back at 120.
    e.expire(t(150), "p", "a", t(200));
    e.handle_timeout(t(120));
    assert_eq!(
        e.assign(t(199), "p"),
        Assignment::Wait { refresh_at: t(200) }
    );
    assert_eq!(
        e.assign(t(120), "p"),
        Assignment::Wait { refresh_at: t(200) }
    );
    // A held request ends once its hold has passed on the engine's clock, which
    // stands still while `now` goes back (see `a_clock_stepped_back_…` below).
    e.handle(
        t(150),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":"x","hold_ms":10000}"#,
    );
    e.handle_timeout(t(100));
    assert_eq!(e.held(), 1);
    assert!(drain(&mut e).is_empty());
    e.handle_timeout(t(160));
    assert_eq!(reply_of(&drain(&mut e)[0]).reply, Reply::Wait(40));
    // The wait hint counts from the `now` given.
    e.handle(
        t(10),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":1}"#,
    );
    assert_eq!(reply_of(&drain(&mut e)[0]).reply, Reply::Wait(190));
    assert_eq!(e.poll_timeout(), Some(t(200)));
    e.handle_timeout(t(200));
    assert_eq!(e.assign(t(0), "p"), Assignment::Key("a"));
}

mod bounds;
mod herd;
mod lag;
mod quota_wire;
