//! The quota entries of the records: they round-trip, a save writes only the
//! shards whose entries changed, and records with or without them are read
//! by keymans that do or do not know them.

use super::*;
use crate::quota::{Account, LeaseReturn, Observation, Quotas};
use std::time::Duration;

const P: &str = "github_rest";
const TTL: Duration = Duration::from_secs(600);

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(secs)
}

fn report(remaining: u64) -> Observation {
    Observation {
        remaining: Some(remaining),
        limit: Some(5000),
        reset: Some(t(3_600)),
        ..Observation::default()
    }
}

/// A pool with own-account keys, a named account of two keys, views, a skew
/// and two leases.
fn sample() -> (KeyPool, Quotas) {
    let mut pool = KeyPool::new();
    let mut q = Quotas::new();
    for k in ["ghp_own_1", "ghp_own_2", "ghp_alice_1", "ghp_alice_2"] {
        pool.publish(P, k);
    }
    pool.publish("gitlab_rest", "glpat_1");
    q.set_account(t(0), P, "ghp_alice_1", Some("alice"), Some(5000));
    q.set_account(t(0), P, "ghp_alice_2", Some("alice"), None);
    q.report(t(1), P, "ghp_own_1", &report(4_000), None);
    let dated = Observation {
        server_date: Some(t(31)),
        ..report(1_200)
    };
    q.report(t(1), P, "ghp_alice_2", &dated, None);
    q.report(t(1), "gitlab_rest", "glpat_1", &report(300), None);
    q.grant(t(2), P, "ghp_own_1", 100, 0, 10, TTL).unwrap();
    q.grant(t(2), P, "ghp_alice_1", 500, 0, 10, TTL).unwrap();
    let ended = q.grant(t(2), P, "ghp_own_2", 1, 0, 10, TTL).unwrap();
    q.end_lease(t(3), ended.id, Some(1));
    (pool, q)
}

#[test]
fn quota_views_accounts_and_leases_round_trip_in_the_shard_records() {
    let (pool, q) = sample();
    let records = pool.encode_all_records_with(&q);
    let decoded = decode_records(&records).unwrap();
    assert_eq!(decoded.version, STATE_FORMAT_VERSION);
    assert_eq!(
        canonical_snapshot(&decoded.snapshot),
        canonical_snapshot(&pool.snapshot())
    );
    let restored = Quotas::from_snapshot(&decoded.quotas);
    restored.check_consistency().unwrap();
    assert_eq!(restored.snapshot(), q.snapshot());
    assert_eq!(
        restored.last_lease_id(),
        3,
        "the ended lease's id is not given again"
    );
    assert_eq!(
        restored.account_of(P, "ghp_alice_2"),
        Account::Named("alice".into())
    );
    assert_eq!(restored.remaining_now(t(4), P, "ghp_alice_1"), Some(1_200));
    assert_eq!(
        restored.available(t(4), P, "ghp_alice_1", 0),
        Some(700),
        "the outstanding lease of 500 calls still counts"
    );
    assert_eq!(restored.next_lease_end(), q.next_lease_end());

    // Where each entry lives: the named account's view in the shard of its
    // name, a membership and a lease in the shard of their key.
    let shard_json = |shard: u16| -> serde_json::Value {
        serde_json::from_slice(&records[&shard_record_name(P, shard)]).unwrap()
    };
    let alice = shard_json(shard_of("alice"));
    assert!(
        alice["quota"]["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["account"] == serde_json::json!({"Named": "alice"})),
        "{alice}"
    );
    let member = shard_json(shard_of("ghp_alice_2"));
    assert!(
        member["quota"]["members"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["ghp_alice_2", "alice"])),
        "{member}"
    );
    let leased = shard_json(shard_of("ghp_alice_1"));
    assert_eq!(leased["version"], 1);
    assert!(
        leased["quota"]["leases"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["key"] == "ghp_alice_1" && l["calls"] == 500),
        "{leased}"
    );
    let meta: serde_json::Value = serde_json::from_slice(&records[META_RECORD]).unwrap();
    assert_eq!(meta["last_lease_id"], 3);
}

#[test]
fn a_save_writes_only_the_shards_whose_quota_entries_changed() {
    let mut pool = KeyPool::new();
    let mut q = Quotas::new();
    let key = |i: usize| format!("ghp_key_{i:06}");
    for i in 0..20_000 {
        pool.publish(P, &key(i));
        q.report(t(0), P, &key(i), &report(5_000), None);
    }
    for i in 0..10 {
        q.set_account(t(0), P, &key(i), Some("alice"), None);
    }
    q.report(t(0), P, &key(0), &report(5_000), None);
    let (saved, saved_q) = (pool.change_generation(), q.change_generation());
    let shards = |q: &Quotas, since: u64| -> Vec<(usize, u16)> {
        pool.changed_since_with(saved, q, since)
            .shards
            .into_iter()
            .collect()
    };
    assert!(pool.changed_since_with(saved, &q, saved_q).is_empty());

    // A report of an own account: the shard of its key, one record.
    q.report(t(10), P, &key(4_242), &report(4_000), None);
    assert_eq!(shards(&q, saved_q), vec![(0, shard_of(&key(4_242)))]);
    let changed = pool.changed_since_with(saved, &q, saved_q);
    let written = pool.encode_records_with(&q, &changed);
    assert_eq!(written.len(), 1);
    let one: usize = written.values().map(Vec::len).sum();
    let all: usize = pool
        .encode_all_records_with(&q)
        .values()
        .map(Vec::len)
        .sum();
    assert!(one * 100 < all, "{one} of {all} bytes");

    // A report of a key of a named account: the shard of the account's name.
    let g = q.change_generation();
    q.report(t(11), P, &key(3), &report(4_500), None);
    assert_eq!(shards(&q, g), vec![(0, shard_of("alice"))]);

    // A report that says what is known already changes nothing.
    let g = q.change_generation();
    q.report(t(12), P, &key(3), &Observation::default(), None);
    assert!(shards(&q, g).is_empty());

    // A lease: the shard of its key; its end: that and the account's.
    let g = q.change_generation();
    let lease = q.grant(t(12), P, &key(5), 10, 0, 10, TTL).unwrap();
    assert_eq!(shards(&q, g), vec![(0, shard_of(&key(5)))]);
    let g = q.change_generation();
    let ret = LeaseReturn {
        lease_id: lease.id,
        used: Some(4),
        done: true,
    };
    q.report(t(13), P, &key(5), &Observation::default(), Some(ret));
    let mut want = vec![(0, shard_of(&key(5))), (0, shard_of("alice"))];
    want.sort();
    want.dedup();
    assert_eq!(shards(&q, g), want);

    // Joining or leaving an account: the key's shard (and the account's
    // when its view goes with its last key).
    let g = q.change_generation();
    q.set_account(t(14), P, &key(77), Some("bob"), None);
    assert_eq!(shards(&q, g), vec![(0, shard_of(&key(77)))]);
    let g = q.change_generation();
    q.forget_key(P, &key(77));
    assert_eq!(shards(&q, g), vec![(0, shard_of(&key(77)))]);

    // What was saved, merged with what changed, restores the quotas as they are.
    let mut stored = pool.encode_all_records_with(&q);
    let (g, gq) = (pool.change_generation(), q.change_generation());
    q.report(t(20), P, &key(9), &report(100), None);
    q.grant(t(20), P, &key(12), 30, 0, 10, TTL).unwrap();
    q.forget_key(P, &key(4_242));
    stored.extend(pool.encode_records_with(&q, &pool.changed_since_with(g, &q, gq)));
    let restored = Quotas::from_snapshot(&decode_records(&stored).unwrap().quotas);
    assert_eq!(restored.snapshot(), q.snapshot());
}

/// The shard record as a keyman that knew no quotas declared it.
#[derive(serde::Deserialize)]
struct ShardRecordWithoutQuotas {
    version: u64,
    platform: String,
    shard: u16,
    #[serde(default)]
    fresh: Vec<String>,
    #[serde(default)]
    expired: Vec<(String, Timestamp)>,
    #[serde(default)]
    invalid: Vec<String>,
}

#[test]
fn records_with_and_without_quota_entries_are_read_both_ways() {
    let (pool, q) = sample();
    // Records of a keyman that knew no quotas: no quota known, every key.
    let old = pool.encode_all_records();
    let decoded = decode_records(&old).unwrap();
    assert_eq!(decoded.quotas, crate::quota::QuotaSnapshot::default());
    assert_eq!(
        canonical_snapshot(&decoded.snapshot),
        canonical_snapshot(&pool.snapshot())
    );
    // Records with quota entries keep version 1, and the shard record of a
    // keyman that knew no quotas reads every key of them.
    let new = pool.encode_all_records_with(&q);
    let mut keys = 0;
    for (name, bytes) in new.iter().filter(|(n, _)| *n != META_RECORD) {
        let old: ShardRecordWithoutQuotas = serde_json::from_slice(bytes).unwrap();
        assert_eq!(old.version, 1);
        assert_eq!(*name, shard_record_name(&old.platform, old.shard));
        keys += old.fresh.len() + old.expired.len() + old.invalid.len();
    }
    assert_eq!(keys, 5);
    // A meta record with the lease counter is read by an older meta reader too.
    let meta: serde_json::Value = serde_json::from_slice(&new[META_RECORD]).unwrap();
    assert_eq!(meta["version"], 1);
    assert_eq!(meta["shards"], 256);
}

#[test]
fn quota_entries_that_are_not_keymans_make_the_record_unreadable() {
    let (pool, _) = sample();
    let mut records = pool.encode_all_records();
    let name = shard_record_name(P, shard_of("ghp_own_1"));
    let mut shard: serde_json::Value = serde_json::from_slice(&records[&name]).unwrap();
    shard["quota"] = serde_json::json!({"leases": [{"id": "seven", "key": "ghp_own_1"}]});
    records.insert(name, serde_json::to_vec(&shard).unwrap());
    let err = decode_records(&records).unwrap_err();
    assert!(matches!(err, StateDecodeError::Unreadable { .. }), "{err}");
    assert!(!err.to_string().contains("ghp_own_1"), "{err}");
}

/// Framed records (`1`, then `name \0 value \0 ...`) for the state fuzz body.
fn framed(records: &StateRecords) -> Vec<u8> {
    let mut out = vec![1u8];
    for (name, value) in records {
        out.extend(name.as_bytes());
        out.push(0);
        out.extend(value);
        out.push(0);
    }
    out
}

/// The state fuzz target's body on quota entries, well and badly formed.
#[test]
fn state_decoding_corpus_with_quota_entries() {
    let (pool, q) = sample();
    let whole = pool.encode_all_records_with(&q);
    let name = shard_record_name("p", 0);
    let odd = |quota: serde_json::Value| -> Vec<u8> {
        let mut r = StateRecords::new();
        let shard = serde_json::json!({
            "version": 1, "platform": "p", "shard": 0, "fresh": ["k"], "quota": quota,
        });
        r.insert(name.clone(), serde_json::to_vec(&shard).unwrap());
        framed(&r)
    };
    let view = serde_json::json!({
        "limit": 5000, "remaining": 10, "reset": null, "reset_header": null,
        "observed_at": 0, "source": "Report", "spent": 18446744073709551615u64,
        "server_date": null, "spent_at": null, "resource": null,
    });
    let lease = |id: u64, key: &str, account: serde_json::Value| serde_json::json!({"id": id, "key": key, "account": account, "calls": 18446744073709551615u64, "until": 18446744073709551615u64});
    let corpus = vec![
        framed(&whole),
        odd(serde_json::json!({})),
        odd(serde_json::json!({"last_lease_id": 18446744073709551615u64})),
        // A lease of an id given twice, of a key not in the pool, of another account.
        odd(serde_json::json!({"leases": [
            lease(1, "k", serde_json::json!({"Key": "k"})),
            lease(1, "x", serde_json::json!({"Named": "a"})),
            lease(2, "", serde_json::json!({"Named": ""})),
        ]})),
        // A key listed in two accounts; an account of no key.
        odd(
            serde_json::json!({"members": [["k", "a"], ["k", "b"], ["", ""]],
            "accounts": [{"account": {"Named": "zed"}, "view": view.clone()}]}),
        ),
        // The same account twice, an extreme skew, a view with nothing in it.
        odd(serde_json::json!({"accounts": [
            {"account": {"Key": "k"}, "view": view, "skew": {"offset_ms": -9223372036854775808i64, "samples": 4294967295u32}},
            {"account": {"Key": "k"}},
        ]})),
        odd(serde_json::json!({"accounts": [{"account": "k"}]})),
        odd(serde_json::json!([1, 2])),
    ];
    for input in &corpus {
        check_state_decoding(input);
    }
}
