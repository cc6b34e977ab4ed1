//! The pool's state as plain data, to store and restore it.

use super::{KeyPool, Selection};
use crate::time::Timestamp;
use std::collections::BTreeSet;

/// The state of a [`KeyPool`] as plain data, to store and restore it (the
/// orchestrator keeps it across restarts). It contains the keys: store it where
/// the keys themselves may be kept.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PoolSnapshot {
    /// The platforms, in the order they were first published.
    pub platforms: Vec<PlatformSnapshot>,
}

/// One platform of a [`PoolSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PlatformSnapshot {
    /// The platform's name.
    pub name: String,
    /// Its fresh keys.
    #[serde(default)]
    pub fresh: Vec<String>,
    /// Its expired keys with their refresh times.
    #[serde(default)]
    pub expired: Vec<(String, Timestamp)>,
    /// Its invalid keys.
    #[serde(default)]
    pub invalid: Vec<String>,
}

impl KeyPool {
    /// The pool's state as plain data. `O(n)` over all platforms.
    pub fn snapshot(&self) -> PoolSnapshot {
        PoolSnapshot {
            platforms: self
                .platforms
                .iter()
                .map(|(name, pool)| PlatformSnapshot {
                    name: name.clone(),
                    fresh: pool.fresh.iter().map(|k| k.to_string()).collect(),
                    expired: pool
                        .expired
                        .iter()
                        .map(|(t, k)| (k.to_string(), *t))
                        .collect(),
                    invalid: pool.invalid.iter().map(|k| k.to_string()).collect(),
                })
                .collect(),
        }
    }

    /// A pool in the state `snapshot` describes. A key listed twice in one
    /// platform keeps the last state it is listed with (invalid over expired over
    /// fresh); empty names are skipped. `O(n log n)`.
    pub fn from_snapshot(snapshot: &PoolSnapshot, selection: Selection) -> KeyPool {
        let mut pool = KeyPool::with_selection(selection);
        for p in &snapshot.platforms {
            if p.name.is_empty() {
                continue;
            }
            pool.ensure_platform(&p.name);
            for k in p.fresh.iter().filter(|k| !k.is_empty()) {
                pool.publish(&p.name, k);
            }
            for (k, until) in p.expired.iter().filter(|(k, _)| !k.is_empty()) {
                pool.publish(&p.name, k);
                // Expire as of the epoch, so that refresh times already past are
                // kept and refreshed on the next touch like any other.
                pool.expire(&p.name, k, *until, Timestamp::EPOCH);
            }
            for k in p.invalid.iter().filter(|k| !k.is_empty()) {
                pool.publish(&p.name, k);
                pool.invalidate(&p.name, k, Timestamp::EPOCH);
            }
        }
        pool
    }
}

// ------------------------------------------------------------ saved records

/// The format version of the records [`KeyPool::encode_records`] writes.
///
/// - Version 0 (keyman before records were versioned): one JSON
///   [`PoolSnapshot`] without a `version` field, in the record [`META_RECORD`].
/// - Version 1: a meta record `{"version": 1, "shards": 256, "platforms": [..]}`
///   in [`META_RECORD`], and per platform up to [`SHARDS`] shard records, named
///   by [`shard_record_name`], each `{"version": 1, "platform": .., "shard": ..,
///   "fresh": [..], "expired": [[key, refresh_ms], ..], "invalid": [..]}`. A key
///   lives in shard [`shard_of`] of its platform.
pub const STATE_FORMAT_VERSION: u64 = 1;

/// How many shard records each platform is split into (version 1): with
/// 100 000 keys on a platform a shard holds about 400 keys (some 20 KB).
pub const SHARDS: u16 = 256;

/// The name of the record that says the format version and the platforms.
pub const META_RECORD: &str = "meta";

/// Saved records by name: what a state store keeps.
pub type StateRecords = std::collections::BTreeMap<String, Vec<u8>>;

/// The shard of `key` (stable across versions and processes: FNV-1a, 64 bits).
pub fn shard_of(key: &str) -> u16 {
    (fnv1a(key.as_bytes()) % u64::from(SHARDS)) as u16
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The name of the record of shard `shard` of `platform`: the platform's
/// FNV-1a hash in hex and the shard number (letters and digits only, so that
/// every store can use it as a key).
pub fn shard_record_name(platform: &str, shard: u16) -> String {
    format!("{:016x}.{shard}", fnv1a(platform.as_bytes()))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct MetaRecord {
    version: u64,
    shards: u16,
    platforms: Vec<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ShardRecord {
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

/// Why saved records could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateDecodeError {
    /// A record is not in any format this version knows (truncated, or not
    /// keyman's). Its content is not repeated: it contains keys.
    #[error("record {record:?} is unreadable: {reason}")]
    Unreadable {
        /// The record.
        record: String,
        /// Why (without the record's content).
        reason: String,
    },
    /// The records were written by a newer keyman.
    #[error(
        "record {record:?} has format version {version}, newer than this keyman's {}",
        STATE_FORMAT_VERSION
    )]
    Newer {
        /// The record.
        record: String,
        /// Its version.
        version: u64,
    },
}

/// Saved records, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedState {
    /// The state they describe.
    pub snapshot: PoolSnapshot,
    /// The format version they were written in (0: an older keyman's; the
    /// next save writes the current format).
    pub version: u64,
}

/// Why JSON could not be read, without quoting it (it may contain keys).
fn json_reason(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Data => "its fields are not the expected ones".to_owned(),
        serde_json::error::Category::Eof => {
            format!("it ends early (line {}, column {})", e.line(), e.column())
        }
        serde_json::error::Category::Syntax | serde_json::error::Category::Io => {
            format!("a syntax error at line {}, column {}", e.line(), e.column())
        }
    }
}

fn unreadable(record: &str, reason: impl std::fmt::Display) -> StateDecodeError {
    StateDecodeError::Unreadable {
        record: record.to_owned(),
        reason: reason.to_string(),
    }
}

/// The version a JSON record says it has; `Ok(None)` for an object without a
/// `version` field (version 0).
fn record_version(
    name: &str,
    bytes: &[u8],
) -> Result<(serde_json::Value, Option<u64>), StateDecodeError> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| unreadable(name, format!("not JSON: {}", json_reason(&e))))?;
    let serde_json::Value::Object(map) = &value else {
        return Err(unreadable(name, "not a JSON object"));
    };
    let version = match map.get("version") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| unreadable(name, "its version is not a number"))?,
        ),
    };
    if let Some(v) = version
        && v > STATE_FORMAT_VERSION
    {
        return Err(StateDecodeError::Newer {
            record: name.to_owned(),
            version: v,
        });
    }
    Ok((value, version))
}

/// Decodes saved records (any version up to [`STATE_FORMAT_VERSION`]). Never
/// panics; a record that is not keyman's, or of a newer version, is an error.
pub fn decode_records(records: &StateRecords) -> Result<DecodedState, StateDecodeError> {
    let (platform_order, version) = match records.get(META_RECORD) {
        None if records.is_empty() => {
            return Ok(DecodedState {
                snapshot: PoolSnapshot::default(),
                version: STATE_FORMAT_VERSION,
            });
        }
        // Shards without their meta record (a first save cut short before
        // it): the shards say their platforms.
        None => (Vec::new(), STATE_FORMAT_VERSION),
        Some(meta) => {
            let (value, version) = record_version(META_RECORD, meta)?;
            let Some(version) = version else {
                // Version 0: one PoolSnapshot. Shards beside it are what a
                // migration cut short had written: the old record is whole,
                // so it is read, and migrated again.
                let snapshot: PoolSnapshot = serde_json::from_value(value).map_err(|e| {
                    unreadable(
                        META_RECORD,
                        format!("not a version 0 state: {}", json_reason(&e)),
                    )
                })?;
                return Ok(DecodedState {
                    snapshot,
                    version: 0,
                });
            };
            if version == 0 {
                return Err(unreadable(META_RECORD, "version 0 has no version field"));
            }
            let meta: MetaRecord = serde_json::from_value(value).map_err(|e| {
                unreadable(
                    META_RECORD,
                    format!("not a meta record: {}", json_reason(&e)),
                )
            })?;
            if meta.shards != SHARDS {
                return Err(unreadable(
                    META_RECORD,
                    format!("{} shards per platform, not {SHARDS}", meta.shards),
                ));
            }
            (meta.platforms, version)
        }
    };
    let mut platforms: Vec<PlatformSnapshot> = Vec::new();
    let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for name in platform_order {
        if !index.contains_key(&name) {
            index.insert(name.clone(), platforms.len());
            platforms.push(PlatformSnapshot {
                name,
                ..PlatformSnapshot::default()
            });
        }
    }
    for (name, bytes) in records.iter().filter(|(n, _)| *n != META_RECORD) {
        let (value, version) = record_version(name, bytes)?;
        if version != Some(STATE_FORMAT_VERSION) {
            return Err(unreadable(name, "a shard record without version 1"));
        }
        let shard: ShardRecord = serde_json::from_value(value)
            .map_err(|e| unreadable(name, format!("not a shard record: {}", json_reason(&e))))?;
        if *name != shard_record_name(&shard.platform, shard.shard) || shard.shard >= SHARDS {
            return Err(unreadable(name, "a shard record under another name"));
        }
        // A shard of a platform the meta record does not list yet (a save cut
        // short between the two): kept, after the listed ones.
        let i = *index.entry(shard.platform.clone()).or_insert_with(|| {
            platforms.push(PlatformSnapshot {
                name: shard.platform.clone(),
                ..PlatformSnapshot::default()
            });
            platforms.len() - 1
        });
        let p = &mut platforms[i];
        p.fresh.extend(shard.fresh);
        p.expired.extend(shard.expired);
        p.invalid.extend(shard.invalid);
    }
    Ok(DecodedState {
        snapshot: PoolSnapshot { platforms },
        version,
    })
}

/// Which records changed since a generation of the pool's change log: what
/// a save must write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangedRecords {
    /// Whether the list of platforms changed (the meta record).
    pub platforms: bool,
    /// The shards that changed: (platform index, shard).
    pub shards: BTreeSet<(usize, u16)>,
}

impl ChangedRecords {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        !self.platforms && self.shards.is_empty()
    }
}

/// The pool's change log: per platform and shard the generation of its last
/// change, so that a save writes only what changed. `O(1)` per change.
#[derive(Debug, Default, Clone)]
pub(super) struct ChangeLog {
    generation: u64,
    platforms_at: u64,
    /// Per platform (by index), per shard: the generation of its last change.
    shards: Vec<Vec<u64>>,
}

impl KeyPool {
    /// Notes that `key` of `platform` changed state (called by the pool's
    /// operations that change it). `O(1)`.
    pub(super) fn touched(&mut self, platform: &str, key: &str) {
        let Some(&i) = self.index.get(platform) else {
            return;
        };
        let log = &mut self.changes;
        log.generation += 1;
        while log.shards.len() <= i {
            log.shards.push(vec![0; usize::from(SHARDS)]);
            log.platforms_at = log.generation;
        }
        log.shards[i][usize::from(shard_of(key))] = log.generation;
    }

    /// Notes that a platform was added.
    pub(super) fn touched_platforms(&mut self) {
        let log = &mut self.changes;
        log.generation += 1;
        log.platforms_at = log.generation;
    }

    /// The change log's generation now: pass it to [`changed_since`](Self::changed_since)
    /// after a save to learn what changed since.
    pub fn change_generation(&self) -> u64 {
        self.changes.generation
    }

    /// The records that changed after generation `generation`. `O(P * SHARDS)`.
    pub fn changed_since(&self, generation: u64) -> ChangedRecords {
        let log = &self.changes;
        ChangedRecords {
            platforms: log.platforms_at > generation,
            shards: log
                .shards
                .iter()
                .enumerate()
                .flat_map(|(p, shards)| {
                    shards
                        .iter()
                        .enumerate()
                        .filter(move |(_, g)| **g > generation)
                        .map(move |(s, _)| (p, s as u16))
                })
                .collect(),
        }
    }

    /// Every record of the pool, in the current format: what a save writes
    /// when it replaces everything. `O(n)`.
    pub fn encode_all_records(&self) -> StateRecords {
        let all = ChangedRecords {
            platforms: true,
            shards: (0..self.platforms.len())
                .flat_map(|p| (0..SHARDS).map(move |s| (p, s)))
                .collect(),
        };
        // Empty shards need not be stored when everything is replaced.
        self.encode(&all, true)
    }

    /// The records `changed` names, in the current format (an empty shard is
    /// written as such: it replaces what was saved). `O(k)` for the keys of
    /// the platforms with changed shards.
    pub fn encode_records(&self, changed: &ChangedRecords) -> StateRecords {
        self.encode(changed, false)
    }

    fn encode(&self, changed: &ChangedRecords, skip_empty: bool) -> StateRecords {
        let mut records = StateRecords::new();
        if changed.platforms {
            let meta = MetaRecord {
                version: STATE_FORMAT_VERSION,
                shards: SHARDS,
                platforms: self.platforms.iter().map(|(n, _)| n.clone()).collect(),
            };
            records.insert(
                META_RECORD.to_owned(),
                serde_json::to_vec(&meta).unwrap_or_default(),
            );
        }
        for (p, (name, pool)) in self.platforms.iter().enumerate() {
            let wanted: BTreeSet<u16> = changed
                .shards
                .range((p, 0)..=(p, u16::MAX))
                .map(|(_, s)| *s)
                .collect();
            if !wanted.is_empty() {
                let mut shards: std::collections::BTreeMap<u16, ShardRecord> = wanted
                    .iter()
                    .map(|s| {
                        (
                            *s,
                            ShardRecord {
                                version: STATE_FORMAT_VERSION,
                                platform: name.clone(),
                                shard: *s,
                                fresh: Vec::new(),
                                expired: Vec::new(),
                                invalid: Vec::new(),
                            },
                        )
                    })
                    .collect();
                for k in &pool.fresh {
                    if let Some(r) = shards.get_mut(&shard_of(k)) {
                        r.fresh.push(k.to_string());
                    }
                }
                for (t, k) in &pool.expired {
                    if let Some(r) = shards.get_mut(&shard_of(k)) {
                        r.expired.push((k.to_string(), *t));
                    }
                }
                for k in &pool.invalid {
                    if let Some(r) = shards.get_mut(&shard_of(k)) {
                        r.invalid.push(k.to_string());
                    }
                }
                for (s, record) in shards {
                    if skip_empty
                        && record.fresh.is_empty()
                        && record.expired.is_empty()
                        && record.invalid.is_empty()
                    {
                        continue;
                    }
                    records.insert(
                        shard_record_name(name, s),
                        serde_json::to_vec(&record).unwrap_or_default(),
                    );
                }
            }
        }
        records
    }
}

/// A snapshot in a canonical form: platforms in order, each list sorted and
/// every key in the one state [`KeyPool::from_snapshot`] gives it. Two
/// snapshots that restore the same pool have the same canonical form.
pub fn canonical_snapshot(snapshot: &PoolSnapshot) -> PoolSnapshot {
    let mut s = KeyPool::from_snapshot(snapshot, Selection::default()).snapshot();
    for p in &mut s.platforms {
        p.fresh.sort();
        p.expired.sort();
        p.invalid.sort();
    }
    s
}

/// The check the state fuzz target and its in-suite corpus run on arbitrary
/// bytes: they are read as saved records (the first byte says how: even, one
/// meta record; odd, `name \0 value \0 ...`), decoding never panics, and
/// whatever decodes re-encodes to records that decode to the same state.
pub fn check_state_decoding(data: &[u8]) {
    let mut records = StateRecords::new();
    match data.split_first() {
        None => {}
        Some((first, rest)) if first % 2 == 0 => {
            records.insert(META_RECORD.to_owned(), rest.to_vec());
        }
        Some((_, rest)) => {
            let mut parts = rest.split(|b| *b == 0);
            while let (Some(name), Some(value)) = (parts.next(), parts.next()) {
                records.insert(String::from_utf8_lossy(name).into_owned(), value.to_vec());
            }
        }
    }
    let Ok(decoded) = decode_records(&records) else {
        return;
    };
    let pool = KeyPool::from_snapshot(&decoded.snapshot, Selection::default());
    let encoded = pool.encode_all_records();
    let again = match decode_records(&encoded) {
        Ok(again) => again,
        Err(e) => panic!("re-encoded records do not decode: {e}"),
    };
    assert_eq!(again.version, STATE_FORMAT_VERSION);
    assert_eq!(
        canonical_snapshot(&again.snapshot),
        canonical_snapshot(&decoded.snapshot),
        "re-encoded records decode to another state"
    );
}

#[cfg(test)]
mod record_tests {
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
        let mut records =
            KeyPool::from_snapshot(&sample(), Selection::default()).encode_all_records();
        let shard = records.keys().find(|n| *n != META_RECORD).unwrap().clone();
        records.insert(shard.clone(), br#"{"version": 2}"#.to_vec());
        assert!(matches!(
            decode_records(&records),
            Err(StateDecodeError::Newer { .. })
        ));
        // A shard under a name that is not its own.
        let mut records =
            KeyPool::from_snapshot(&sample(), Selection::default()).encode_all_records();
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
}
