//! The quota extension on the wire (REPORT, NEW with a lease, PUBLISH with an
//! account), and quota state kept across a restart.

use super::*;

#[test]
fn report_lease_and_account_on_the_wire() {
    let mut e = engine_with(floored(10));
    e.handle(
        t(0),
        ANN,
        br#"{"type":"PUBLISH","key_str":"ghp_1","key_platform":"github_rest","account":"alice","limit":5000}"#,
    );
    assert_eq!(
        e.quotas().account_of(P, "ghp_1"),
        Account::Named("alice".into())
    );
    e.handle(
        t(0),
        REQ,
        br#"{"type":"NEW","key_platform":"github_rest","requester_id":4,"lease":100}"#,
    );
    let out = drain(&mut e);
    assert_eq!(out[0].channel, "worker-oath-request-4");
    let (id, until) = match reply_of(&out[0]).reply {
        Reply::Lease {
            key,
            calls,
            lease_id,
            lease_until,
        } => {
            assert_eq!((key.as_str(), calls), ("ghp_1", 100));
            (lease_id, lease_until)
        }
        other => panic!("{other:?}"),
    };
    assert_eq!(until, DEFAULT_LEASE_TTL.as_secs());
    // Augur's KeyClient reads only `key`.
    let v: serde_json::Value = serde_json::from_slice(&out[0].payload).unwrap();
    assert_eq!(v["key"], "ghp_1");
    // A REPORT without request_id gets no answer; with one, {"ok": true}.
    let report = format!(
        r#"{{"type":"REPORT","key_str":"ghp_1","key_platform":"github_rest","remaining":4000,"limit":5000,"reset":3600,"resource":"core","server_date":1,"lease_id":{id},"used":90,"done":true}}"#
    );
    e.handle(t(1), REQ, report.as_bytes());
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.quotas().remaining_now(t(1), P, "ghp_1"), Some(4000));
    assert!(e.quotas().lease(id).is_none());
    e.handle(
        t(2),
        REQ,
        br#"{"type":"REPORT","key_str":"ghp_1","key_platform":"github_rest","remaining":3990,"requester_id":4,"request_id":"r1"}"#,
    );
    let out = drain(&mut e);
    assert_eq!(out.len(), 1);
    let m = reply_of(&out[0]);
    assert_eq!((m.reply, m.request_id), (Reply::Ok, Some("r1".into())));
    // STATUS shows the forecast.
    e.handle(t(3), ANN, br#"{"type":"STATUS","requester_id":"adm"}"#);
    match reply_of(&drain(&mut e)[0]).reply {
        Reply::Status(ps) => {
            assert_eq!(ps[0].remaining, Some(3990));
            assert!(ps[0].burn_per_hour.is_some());
            assert!(ps[0].dry_at.is_some());
        }
        other => panic!("{other:?}"),
    }
    // A report of a key not published leaves no state.
    e.handle(
        t(4),
        REQ,
        br#"{"type":"REPORT","key_str":"nope","key_platform":"github_rest","remaining":1}"#,
    );
    assert_eq!(e.quotas().remaining_now(t(4), P, "nope"), None);
    assert!(
        e.quotas()
            .account(P, &Account::Key("nope".into()))
            .is_none()
    );
    // A bad lease is refused with an answer.
    e.handle(
        t(4),
        REQ,
        br#"{"type":"NEW","key_platform":"github_rest","requester_id":4,"lease":0}"#,
    );
    assert!(matches!(
        reply_of(&drain(&mut e)[0]).reply,
        Reply::Error { .. }
    ));
}

#[test]
fn quota_messages_round_trip_and_plain_ones_decode_as_before() {
    let msgs = [
        Request::Lease {
            platform: P.into(),
            reply: crate::ReplyTo::new(1u64),
            hold_ms: Some(5),
            lease: 10,
        },
        Request::Report {
            key: "k".into(),
            platform: P.into(),
            observation: Observation {
                remaining: Some(1),
                limit: Some(2),
                reset: Some(t(3)),
                resource: Some("core".into()),
                server_date: Some(t(4)),
            },
            lease: Some(LeaseReturn {
                lease_id: 5,
                used: Some(6),
                done: true,
            }),
            reply: None,
        },
    ];
    for m in msgs {
        assert_eq!(decode_request(&m.encode(), DEFAULT_MAX_PAYLOAD).unwrap(), m);
    }
    let a = Announce::PublishWithQuota {
        key: "k".into(),
        platform: P.into(),
        account: Some("alice".into()),
        limit: None,
    };
    assert_eq!(
        decode_announce(&a.encode(), DEFAULT_MAX_PAYLOAD).unwrap(),
        a
    );
    let plain = br#"{"type": "NEW", "key_platform": "github_rest", "requester_id": 4711}"#;
    assert!(matches!(
        decode_request(plain, DEFAULT_MAX_PAYLOAD).unwrap(),
        Request::New { .. }
    ));
    for r in [
        Reply::Lease {
            key: "k".into(),
            calls: 3,
            lease_id: 4,
            lease_until: 5,
        },
        Reply::Ok,
    ] {
        let rid = crate::Id::from("x");
        assert_eq!(
            Reply::decode(&r.encode(Some(&rid)), 1 << 16).unwrap().reply,
            r
        );
    }
}

#[test]
fn a_snapshot_restores_views_accounts_and_leases() {
    let mut q = Quotas::new();
    q.set_account(t(0), P, "a", Some("alice"), None);
    q.report(t(0), P, "a", &dated(100, 3600, 0), None);
    q.report(t(0), P, "k", &obs(50, 3600), None);
    let g = q.grant(t(1), P, "k", 20, 0, 10, DEFAULT_LEASE_TTL).unwrap();
    let snap = q.snapshot();
    let json = serde_json::to_string(&snap).unwrap();
    let back: QuotaSnapshot = serde_json::from_str(&json).unwrap();
    let mut r = Quotas::from_snapshot(&back);
    assert_eq!(r.snapshot(), snap);
    r.check_consistency().unwrap();
    assert_eq!(r.account_of(P, "a"), Account::Named("alice".into()));
    assert_eq!(r.available(t(1), P, "k", 0), Some(30));
    assert_eq!(r.next_lease_end(), Some(g.until));
    let next = r.grant(t(1), P, "k", 1, 0, 10, DEFAULT_LEASE_TTL).unwrap();
    assert!(next.id > g.id);
}

#[test]
fn a_restarted_engine_keeps_views_accounts_and_leases_from_its_records() {
    let mut e = engine_with(floored(10));
    e.publish_account(t(0), P, "a", None, None);
    e.publish_account(t(0), P, "b1", Some("bob"), None);
    e.publish_account(t(0), P, "b2", Some("bob"), None);
    e.report(t(1), P, "a", &obs(300, 3600), None);
    e.report(t(1), P, "b1", &obs(1000, 3600), None);
    let lease = match e.lease(t(2), P, 10_000) {
        Leased::Granted { lease, .. } => lease,
        other => panic!("{other:?}"),
    };
    let before = e.status(t(3));
    let records = e.encode_all_records();

    let decoded = crate::pool::decode_records(&records).unwrap();
    let mut r = engine_with(floored(10));
    r.restore_state(&decoded);
    assert_eq!(r.status(t(3)), before);
    assert_eq!(r.quotas().account_of(P, "b2"), Account::Named("bob".into()));
    // Only what was not lent before the restart can be lent after it.
    let mut lent = 0;
    while let Leased::Granted { lease: l, .. } = r.lease(t(4), P, 10_000) {
        assert!(l.id > lease.id, "lease ids are not given twice");
        lent += l.calls;
    }
    assert_eq!(lent + lease.calls, (300 - 10) + (1000 - 10));
    // The lease from before the restart ends at its deadline, fully used.
    assert_eq!(r.poll_timeout(), Some(lease.until));
    r.handle_timeout(lease.until);
    assert_eq!(r.quotas().lease(lease.id), None);
    r.quotas().check_consistency().unwrap();
}

#[test]
fn the_report_that_returns_a_lease_counts_from_a_platform_whose_clock_lags() {
    // The platform's clock is 30 s behind ours and nothing is known of it yet:
    // the report that returns a lease carries the response to the lease's
    // last call, which is not older than the lease it returns.
    let mut q = Quotas::new();
    q.set_account(t(1000), P, "k", None, Some(10));
    let lease = q
        .grant(t(1000), P, "k", 4, 0, 100, Duration::from_secs(600))
        .expect("a lease");
    let ret = LeaseReturn {
        lease_id: lease.id,
        used: Some(4),
        done: true,
    };
    assert_eq!(
        q.report(t(1001), P, "k", &dated(6, 4000, 971), Some(ret)),
        Reported::Updated
    );
    assert_eq!(q.remaining_now(t(1001), P, "k"), Some(6));
    let skew = q.account(P, &Account::Key("k".into())).map(|a| a.skew);
    assert_eq!(skew.map(|s| s.offset_ms), Some(-29_500));
    // The next lease is bounded by what the platform said, not by a guess.
    let next = q
        .grant(t(1001), P, "k", 10, 0, 100, Duration::from_secs(600))
        .expect("another lease");
    assert_eq!(next.calls, 6);
}
