//! The wire side of the quota extension: the order of the answers a REPORT
//! causes.

use super::*;

#[test]
fn a_report_is_answered_before_the_held_requests_it_releases() {
    let mut config = EngineConfig::default();
    config.quota.max_leases = 1;
    let mut e = Engine::new(config, SplitMix64::new(5));
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"ghp_k","key_platform":"p"}"#,
    );
    e.handle(
        t(0),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":1,"lease":5}"#,
    );
    let first = drain(&mut e);
    let Reply::Lease { lease_id, .. } = reply_of(&first[0]).reply else {
        panic!("no lease: {first:?}");
    };
    // The account has its one lease: the next lease request is held.
    e.handle(
        t(1),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":2,"lease":5,"hold_ms":30000}"#,
    );
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.held(), 1);
    // The first lease ends: the REPORT's own answer comes first, then the
    // held request's lease.
    let report = format!(
        r#"{{"type":"REPORT","key_str":"ghp_k","key_platform":"p","remaining":100,"lease_id":{lease_id},"done":true,"requester_id":3,"request_id":9}}"#
    );
    e.handle(t(2), REQ, report.as_bytes());
    let out = drain(&mut e);
    let channels: Vec<&str> = out.iter().map(|tx| tx.channel.as_str()).collect();
    assert_eq!(
        channels,
        ["worker-oath-request-3", "worker-oath-request-2"],
        "{out:?}"
    );
    assert_eq!(reply_of(&out[0]).reply, Reply::Ok);
    assert!(matches!(reply_of(&out[1]).reply, Reply::Lease { .. }));
}

#[test]
fn a_key_back_at_a_reset_with_no_calls_above_its_floor_is_withheld_not_no_keys() {
    let mut config = EngineConfig::default();
    config.quota.floors.insert("p".into(), 14);
    let mut e = Engine::new(config, SplitMix64::new(5));
    // 13 calls an hour, under the floor of 14: withheld for the window.
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"ghp_k","key_platform":"p","limit":13}"#,
    );
    let reset = e
        .poll_timeout()
        .expect("the key is withheld until its reset");
    // At the reset the window is 13 calls again: still under the floor, so
    // the key is withheld for the next window; a NEW and a lease are told
    // to wait, not that the platform has no keys.
    for new in [
        &br#"{"type":"NEW","key_platform":"p","requester_id":1}"#[..],
        br#"{"type":"NEW","key_platform":"p","requester_id":1,"lease":5}"#,
    ] {
        e.handle_timeout(reset);
        e.handle(reset, REQ, new);
        let out = drain(&mut e);
        assert_eq!(out.len(), 1, "{out:?}");
        assert!(
            matches!(reply_of(&out[0]).reply, Reply::Wait(n) if n > 0),
            "{:?}",
            reply_of(&out[0]).reply
        );
    }
}

#[test]
fn a_key_published_into_an_account_at_its_floor_is_not_handed_to_a_held_request() {
    let mut config = EngineConfig::default();
    config.quota.floors.insert("p".into(), 170);
    let mut e = Engine::new(config, SplitMix64::new(5));
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"ghp_a","key_platform":"p"}"#,
    );
    e.handle(
        t(0),
        REQ,
        br#"{"type":"EXPIRE","key_str":"ghp_a","key_platform":"p","refresh_time":100}"#,
    );
    e.handle(
        t(0),
        REQ,
        br#"{"type":"NEW","key_platform":"p","requester_id":1,"hold_ms":30000}"#,
    );
    assert_eq!(e.held(), 1);
    // A key of 1 call an hour, under the floor: withheld at once, the held
    // request goes on waiting for it.
    e.handle(
        t(1),
        ANN,
        br#"{"type":"PUBLISH","key_str":"ghp_b","key_platform":"p","account":"bob","limit":1}"#,
    );
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.held(), 1);
    assert_ne!(
        e.pool().state("p", "ghp_b", t(1)),
        Some(crate::pool::KeyState::Fresh)
    );
}
