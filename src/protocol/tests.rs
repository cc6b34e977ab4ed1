use super::*;
use crate::time::Timestamp;

const MAX: usize = DEFAULT_MAX_PAYLOAD;

#[test]
fn decodes_augur_python_bytes() {
    // json.dumps style: ", " and ": " separators, requester_id as a number.
    let new = br#"{"key_platform": "github_rest", "type": "NEW", "requester_id": 4711}"#;
    assert_eq!(
        decode_request(new, MAX).unwrap(),
        Request::New {
            platform: "github_rest".into(),
            reply: ReplyTo::new(4711u64),
            hold_ms: None,
        }
    );
    let exp = br#"{"type": "EXPIRE", "key_str": "k", "key_platform": "p", "refresh_time": 1700000000, "requester_id": 1}"#;
    match decode_request(exp, MAX).unwrap() {
        Request::Expire { refresh_time, .. } => {
            assert_eq!(refresh_time, Timestamp::from_secs(1_700_000_000))
        }
        other => panic!("{other:?}"),
    }
    let pubm = br#"{"type": "PUBLISH", "key_str": "k", "key_platform": "p"}"#;
    assert_eq!(
        decode_announce(pubm, MAX).unwrap(),
        Announce::Publish {
            key: "k".into(),
            platform: "p".into()
        }
    );
    assert_eq!(
        decode_announce(br#"{"type": "SHUTDOWN"}"#, MAX).unwrap(),
        Announce::Shutdown
    );
}

#[test]
fn reply_channels_are_formatted_as_written() {
    let c = Channels::default();
    assert_eq!(
        c.request_reply(&Id::from(4711u64)),
        "worker-oath-request-4711"
    );
    assert_eq!(
        c.announce_reply(&Id::from("abc-1")),
        "augur-oauth-announce-abc-1"
    );
}

#[test]
fn float_refresh_times_are_accepted_and_bad_ones_rejected() {
    let f = br#"{"type":"EXPIRE","key_str":"k","key_platform":"p","refresh_time":10.5}"#;
    match decode_request(f, MAX).unwrap() {
        Request::Expire { refresh_time, .. } => {
            assert_eq!(refresh_time, Timestamp::from_millis(10_500))
        }
        other => panic!("{other:?}"),
    }
    for bad in [
        &br#"{"type":"EXPIRE","key_str":"k","key_platform":"p","refresh_time":"soon"}"#[..],
        br#"{"type":"EXPIRE","key_str":"k","key_platform":"p","refresh_time":-1}"#,
        br#"{"type":"EXPIRE","key_str":"k","key_platform":"p"}"#,
    ] {
        assert!(decode_request(bad, MAX).is_err());
    }
}

#[test]
fn errors_are_typed_and_carry_the_reply_address_when_readable() {
    assert_eq!(
        decode_request(b"42", MAX).unwrap_err().error,
        DecodeError::NotAnObject("a number")
    );
    assert!(matches!(
        decode_request(b"{nope", MAX).unwrap_err().error,
        DecodeError::Json(_)
    ));
    assert_eq!(
        decode_request(br#"{"type":"NEW","key_platform":"p"}"#, MAX)
            .unwrap_err()
            .error,
        DecodeError::MissingField("requester_id")
    );
    let r = decode_request(br#"{"type":"NEW","requester_id":"x"}"#, MAX).unwrap_err();
    assert_eq!(r.error, DecodeError::MissingField("key_platform"));
    assert_eq!(r.reply, Some(ReplyTo::new("x")));
    assert!(matches!(
        decode_request(br#"{"type":"PUBLISH","requester_id":1}"#, MAX)
            .unwrap_err()
            .error,
        DecodeError::UnknownType(_)
    ));
    assert_eq!(
        decode_announce(br#"{"type":"ACK"}"#, MAX)
            .unwrap_err()
            .error,
        DecodeError::MissingField("requester_id")
    );
    assert!(matches!(
        decode_announce(&vec![b' '; MAX + 1], MAX)
            .unwrap_err()
            .error,
        DecodeError::TooLarge { .. }
    ));
    assert_eq!(
        decode_announce(
            br#"{"type":"PUBLISH","key_str":"","key_platform":"p"}"#,
            MAX
        )
        .unwrap_err()
        .error,
        DecodeError::Invalid {
            field: "key_str",
            reason: "must not be empty"
        }
    );
}

#[test]
fn messages_round_trip_through_encode_and_decode() {
    let reply = ReplyTo::new("c-1").with_request_id(7u64);
    let announces = vec![
        Announce::Publish {
            key: "k".into(),
            platform: "p".into(),
        },
        Announce::Unpublish {
            key: "k".into(),
            platform: "p".into(),
        },
        Announce::Ack {
            reply: reply.clone(),
        },
        Announce::ListPlatforms {
            reply: reply.clone(),
        },
        Announce::ListKeys {
            platform: "p".into(),
            reply: reply.clone(),
        },
        Announce::ListInvalidKeys {
            platform: "p".into(),
            reply: reply.clone(),
        },
        Announce::Status {
            reply: reply.clone(),
        },
        Announce::Shutdown,
    ];
    for a in announces {
        assert_eq!(decode_announce(&a.encode(), MAX).unwrap(), a);
    }
    let requests = vec![
        Request::New {
            platform: "p".into(),
            reply: reply.clone(),
            hold_ms: None,
        },
        Request::New {
            platform: "p".into(),
            reply: reply.clone(),
            hold_ms: Some(1500),
        },
        Request::Expire {
            key: "k".into(),
            platform: "p".into(),
            refresh_time: Timestamp::from_secs(99),
            requester_id: Some(Id::from("c-1")),
        },
        Request::Invalidate {
            key: "k".into(),
            platform: "p".into(),
            requester_id: None,
        },
    ];
    for r in requests {
        assert_eq!(decode_request(&r.encode(), MAX).unwrap(), r);
    }
}

#[test]
fn replies_have_augur_shapes_without_request_id() {
    assert_eq!(Reply::Key("k".into()).encode(None), br#"{"key":"k"}"#);
    assert_eq!(Reply::Wait(3).encode(None), br#"{"wait":3}"#);
    assert_eq!(Reply::Ack.encode(None), b"");
    assert_eq!(
        Reply::List(vec!["a".into(), "b".into()]).encode(None),
        br#"["a","b"]"#
    );
    assert_eq!(
        Reply::ListError("unknown platform: x".into()).encode(None),
        br#"{"status":"unknown platform: x"}"#
    );
}

#[test]
fn replies_round_trip_with_request_id() {
    let rid = Id::from(12u64);
    for r in [
        Reply::Key("k".into()),
        Reply::NullKey,
        Reply::Wait(4),
        Reply::Error {
            code: ErrorCode::NoKeys,
            message: "none".into(),
        },
        Reply::Ack,
        Reply::List(vec!["x".into()]),
        Reply::ListError("bad".into()),
        Reply::Status(vec![PlatformStatus {
            platform: "p".into(),
            fresh: 1,
            expired: 2,
            invalid: 3,
            next_refresh: Some(10),
            clock_lag_ms: Some(32_000),
            ..PlatformStatus::default()
        }]),
    ] {
        let m = Reply::decode(&r.encode(Some(&rid)), MAX).unwrap();
        assert_eq!(m.reply, r);
        assert_eq!(m.request_id, Some(rid.clone()));
    }
    assert_eq!(Reply::decode(b"", MAX).unwrap().reply, Reply::Ack);
    assert_eq!(Reply::decode(br#""""#, MAX).unwrap().reply, Reply::Ack);
    assert_eq!(
        Reply::decode(br#"{"key": null}"#, MAX).unwrap().reply,
        Reply::NullKey
    );
    assert!(Reply::decode(br#"{"what": 1}"#, MAX).is_err());
    assert!(Reply::decode(b"7", MAX).is_err());
}

#[test]
fn fields_longer_than_their_limits_are_refused_with_the_address_where_known() {
    let long = |n: usize| "x".repeat(n);
    // requester_id: no address.
    let new = format!(
        r#"{{"type": "NEW", "key_platform": "p", "requester_id": "{}"}}"#,
        long(MAX_ID_LEN + 1)
    );
    let rej = decode_request(new.as_bytes(), MAX).unwrap_err();
    assert_eq!(rej.reply, None);
    assert!(rej.error.is_too_large());
    // request_id: the address without it.
    let new = format!(
        r#"{{"type": "NEW", "key_platform": "p", "requester_id": 4711, "request_id": "{}"}}"#,
        long(MAX_ID_LEN + 1)
    );
    let rej = decode_request(new.as_bytes(), MAX).unwrap_err();
    assert_eq!(rej.reply, Some(ReplyTo::new(4711u64)));
    // key_platform of a NEW: the whole address.
    let new = format!(
        r#"{{"type": "NEW", "key_platform": "{}", "requester_id": 4711, "request_id": "r"}}"#,
        long(MAX_PLATFORM_LEN + 1)
    );
    let rej = decode_request(new.as_bytes(), MAX).unwrap_err();
    assert_eq!(
        rej.error,
        DecodeError::TooLong {
            field: "key_platform",
            len: MAX_PLATFORM_LEN + 1,
            max: MAX_PLATFORM_LEN
        }
    );
    assert_eq!(rej.reply, Some(ReplyTo::new(4711u64).with_request_id("r")));
    // key_str of a PUBLISH: nobody to tell.
    let publish = format!(
        r#"{{"type": "PUBLISH", "key_str": "{}", "key_platform": "p"}}"#,
        long(MAX_KEY_LEN + 1)
    );
    let rej = decode_announce(publish.as_bytes(), MAX).unwrap_err();
    assert_eq!(rej.reply, None);
    // At the limits, all is well; an EXPIRE's unused requester_id is ignored.
    let publish = format!(
        r#"{{"type": "PUBLISH", "key_str": "{}", "key_platform": "{}"}}"#,
        long(MAX_KEY_LEN),
        long(MAX_PLATFORM_LEN)
    );
    assert!(decode_announce(publish.as_bytes(), MAX).is_ok());
    let expire = format!(
        r#"{{"type": "EXPIRE", "key_str": "k", "key_platform": "p", "refresh_time": 5, "requester_id": "{}"}}"#,
        long(MAX_ID_LEN + 1)
    );
    match decode_request(expire.as_bytes(), MAX) {
        Ok(Request::Expire { requester_id, .. }) => assert_eq!(requester_id, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn too_large_is_a_typed_error_code() {
    let reply = Reply::Error {
        code: ErrorCode::TooLarge,
        message: "field `request_id` of 300 bytes exceeds the limit of 256 bytes".into(),
    };
    let bytes = reply.encode(None);
    assert!(String::from_utf8_lossy(&bytes).contains(r#""code":"too_large""#));
    assert_eq!(Reply::decode(&bytes, MAX).unwrap().reply, reply);
}

#[test]
fn a_requester_id_that_is_not_a_whole_number_is_refused() {
    // Found by fuzzing: 2444…0 (beyond 64 bits) came back as 2.444e48, so the
    // reply channel would not be the one its sender listens on.
    for payload in [
        &br#"{"requester_id":2444444444444444444444444444444444444444444444440,"type":"NEW","key_platform":"N"}"#[..],
        br#"{"requester_id":1.5,"type":"NEW","key_platform":"N"}"#,
    ] {
        let rejected = decode_request(payload, DEFAULT_MAX_PAYLOAD).expect_err("refused");
        assert!(
            rejected.error.to_string().contains("whole number"),
            "{}",
            rejected.error
        );
    }
    assert!(
        decode_request(
            br#"{"requester_id":-7,"type":"NEW","key_platform":"N"}"#,
            DEFAULT_MAX_PAYLOAD
        )
        .is_ok()
    );
}
