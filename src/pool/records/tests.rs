use super::*;

fn platform(
    name: &str,
    fresh: &[&str],
    expired: &[(&str, u64)],
    invalid: &[&str],
) -> PlatformSnapshot {
    PlatformSnapshot {
        name: name.to_owned(),
        fresh: fresh.iter().map(|k| (*k).to_owned()).collect(),
        expired: expired
            .iter()
            .map(|(k, t)| ((*k).to_owned(), Timestamp::from_millis(*t)))
            .collect(),
        invalid: invalid.iter().map(|k| (*k).to_owned()).collect(),
    }
}

fn sample() -> PoolSnapshot {
    PoolSnapshot {
        platforms: vec![
            platform(
                "github_rest",
                &["a1", "a2", "a3"],
                &[("a4", 5_000)],
                &["a5"],
            ),
            platform("gitlab_rest", &["b1"], &[], &[]),
        ],
    }
}

#[test]
fn version_0_is_read_and_the_next_save_writes_version_1() {
    let v0 = serde_json::to_vec(&sample()).unwrap();
    let records = StateRecords::from([(META_RECORD.to_owned(), v0)]);
    let decoded = decode_records(&records).unwrap();
    assert_eq!(decoded.version, 0);
    assert_eq!(decoded.snapshot, sample());
    // What a migrated pool writes reads back as the same state, in version 1.
    let pool = KeyPool::from_snapshot(&decoded.snapshot, Selection::default());
    let v1 = pool.encode_all_records();
    assert!(v1.len() > 1, "a meta record and shards");
    let meta: serde_json::Value = serde_json::from_slice(&v1[META_RECORD]).unwrap();
    assert_eq!(meta["version"], 1);
    assert_eq!(
        meta["platforms"],
        serde_json::json!(["github_rest", "gitlab_rest"])
    );
    let again = decode_records(&v1).unwrap();
    assert_eq!(again.version, STATE_FORMAT_VERSION);
    assert_eq!(
        canonical_snapshot(&again.snapshot),
        canonical_snapshot(&sample())
    );
    // Platforms keep their order.
    let names: Vec<&str> = again
        .snapshot
        .platforms
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["github_rest", "gitlab_rest"]);
}

#[test]
fn unreadable_and_newer_records_are_refused() {
    let one = |bytes: &[u8]| StateRecords::from([(META_RECORD.to_owned(), bytes.to_vec())]);
    let truncated = br#"{"platforms": [{"name": "github_rest", "fresh": ["ghp_"#;
    assert!(matches!(
        decode_records(&one(truncated)),
        Err(StateDecodeError::Unreadable { .. })
    ));
    assert!(matches!(
        decode_records(&one(&[0xff, 0x00, 0x13, 0x37])),
        Err(StateDecodeError::Unreadable { .. })
    ));
    assert_eq!(
        decode_records(&one(br#"{"version": 999, "platforms": []}"#)),
        Err(StateDecodeError::Newer {
            record: META_RECORD.to_owned(),
            version: 999
        })
    );
    // A shard of a newer version, next to a current meta record.
    let mut records = KeyPool::from_snapshot(&sample(), Selection::default()).encode_all_records();
    let shard = records.keys().find(|n| *n != META_RECORD).unwrap().clone();
    records.insert(shard.clone(), br#"{"version": 2}"#.to_vec());
    assert!(matches!(
        decode_records(&records),
        Err(StateDecodeError::Newer { .. })
    ));
    // A shard under a name that is not its own.
    let mut records = KeyPool::from_snapshot(&sample(), Selection::default()).encode_all_records();
    let value = records.remove(&shard).unwrap();
    records.insert("0000000000000000.1".to_owned(), value);
    assert!(matches!(
        decode_records(&records),
        Err(StateDecodeError::Unreadable { .. })
    ));
    // The error never repeats the record's content.
    let err = decode_records(&one(
        br#"{"platforms": [{"name": "p", "fresh": "ghp_secret"}]}"#,
    ))
    .unwrap_err()
    .to_string();
    assert!(!err.contains("ghp_secret"), "{err}");
    // Nothing saved is an empty pool; records without a meta record must be shards.
    assert_eq!(
        decode_records(&StateRecords::new()).unwrap().snapshot,
        PoolSnapshot::default()
    );
    assert!(decode_records(&StateRecords::from([("x".to_owned(), b"{}".to_vec())])).is_err());
    let mut shards_only =
        KeyPool::from_snapshot(&sample(), Selection::default()).encode_all_records();
    shards_only.remove(META_RECORD);
    assert_eq!(
        canonical_snapshot(&decode_records(&shards_only).unwrap().snapshot),
        canonical_snapshot(&sample())
    );
    // A migration cut short: the version 0 record is read, and migrated again.
    let mut cut = shards_only.clone();
    cut.insert(
        META_RECORD.to_owned(),
        serde_json::to_vec(&sample()).unwrap(),
    );
    let decoded = decode_records(&cut).unwrap();
    assert_eq!((decoded.version, decoded.snapshot), (0, sample()));
}

#[test]
fn a_save_writes_only_the_shards_whose_keys_changed() {
    let mut pool = KeyPool::new();
    for i in 0..10_000 {
        pool.publish("github_rest", &format!("ghp_key_{i:05}"));
    }
    pool.publish("gitlab_rest", "glpat_1");
    let saved = pool.change_generation();
    assert!(pool.changed_since(saved).is_empty());

    // One key changes: one shard, no meta record.
    let now = Timestamp::from_millis(1_000);
    pool.expire(
        "github_rest",
        "ghp_key_00042",
        Timestamp::from_millis(9_000),
        now,
    );
    let changed = pool.changed_since(saved);
    assert!(!changed.platforms);
    assert_eq!(
        changed.shards.iter().copied().collect::<Vec<_>>(),
        vec![(0, shard_of("ghp_key_00042"))]
    );
    let records = pool.encode_records(&changed);
    assert_eq!(records.len(), 1);
    let name = shard_record_name("github_rest", shard_of("ghp_key_00042"));
    let bytes = &records[&name];
    let total: usize = pool.encode_all_records().values().map(Vec::len).sum();
    assert!(
        bytes.len() * 100 < total,
        "{} of {total} bytes",
        bytes.len()
    );

    // Nothing changes when nothing changed, even through a failed change.
    let saved = pool.change_generation();
    pool.expire(
        "github_rest",
        "ghp_key_00042",
        Timestamp::from_millis(8_000),
        now,
    );
    pool.invalidate("nowhere", "x", now);
    assert!(pool.changed_since(saved).is_empty());

    // A new platform changes the meta record; an unpublish changes its shard.
    pool.publish("github_graphql", "ghp_key_00001");
    pool.unpublish("github_rest", "ghp_key_00007");
    let changed = pool.changed_since(saved);
    assert!(changed.platforms);
    assert!(changed.shards.contains(&(2, shard_of("ghp_key_00001"))));
    assert!(changed.shards.contains(&(0, shard_of("ghp_key_00007"))));

    // Saved records merged over the old ones restore the pool as it is.
    let mut stored = KeyPool::from_snapshot(&PoolSnapshot::default(), Selection::default());
    stored.publish("x", "y");
    let mut all = pool.encode_all_records();
    pool.invalidate("github_rest", "ghp_key_00100", now);
    all.extend(pool.encode_records(&pool.changed_since(pool.change_generation() - 1)));
    let restored = decode_records(&all).unwrap().snapshot;
    assert_eq!(
        canonical_snapshot(&restored),
        canonical_snapshot(&pool.snapshot())
    );
}

#[test]
fn shards_are_stable_and_spread() {
    // The shard of a key is part of the format: it must never change.
    assert_eq!(shard_of(""), (0xcbf2_9ce4_8422_2325u64 % 256) as u16);
    assert_eq!(shard_record_name("p", 3), format!("{:016x}.3", fnv1a(b"p")));
    let mut counts = [0usize; SHARDS as usize];
    for i in 0..100_000 {
        counts[usize::from(shard_of(&format!(
            "ghp_burst{i:07}_abcdefghijklmnopqrstuvwxyz"
        )))] += 1;
    }
    let max = counts.iter().max().copied().unwrap_or(0);
    assert!(max < 600, "a shard holds {max} of 100 000 keys");
}

/// The state fuzz target's body on a fixed corpus.
#[test]
fn state_decoding_corpus() {
    let v1 = KeyPool::from_snapshot(&sample(), Selection::default()).encode_all_records();
    let mut framed = vec![1u8];
    for (name, value) in &v1 {
        framed.extend(name.as_bytes());
        framed.push(0);
        framed.extend(value);
        framed.push(0);
    }
    let mut corpus: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        framed,
        [&[0u8][..], &serde_json::to_vec(&sample()).unwrap()].concat(),
        [&[0u8][..], br#"{"version": 1, "shards": 256, "platforms": ["a", "a", ""]}"#].concat(),
        [&[0u8][..], br#"{"version": 0}"#].concat(),
        [&[0u8][..], br#"{"version": -1}"#].concat(),
        [&[0u8][..], br#"{"platforms": [{"name": "", "fresh": [""]}]}"#].concat(),
        [&[0u8][..], br#"{"platforms": [{"name": "p", "fresh": ["k"], "invalid": ["k"], "expired": [["k", 18446744073709551615]]}]}"#].concat(),
        [&[1u8][..], b"meta\0{\"version\": 1, \"shards\": 256, \"platforms\": []}\0junk\0[]\0"].concat(),
    ];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in [1usize, 7, 64, 513] {
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x as u8);
        }
        corpus.push(bytes);
    }
    for input in &corpus {
        check_state_decoding(input);
    }
}
