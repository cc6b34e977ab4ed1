//! The pool's state as saved records: a meta record and, per platform, up to
//! [`SHARDS`] shard records (a key's shard is [`shard_of`] it), each with its
//! format version. A save writes only the records that changed (the change
//! log, [`ChangedRecords`]); [`decode_records`] reads any version back.

use super::{KeyPool, PlatformSnapshot, PoolSnapshot, Selection};
use crate::time::Timestamp;

mod changes;
mod decode;
mod encode;
mod quota;
#[cfg(test)]
mod quota_tests;
#[cfg(test)]
mod tests;

pub(super) use changes::ChangeLog;
pub use changes::ChangedRecords;
pub use decode::{DecodedState, StateDecodeError, decode_records};
pub use quota::canonical_quotas;

/// The format version of the records [`KeyPool::encode_records`] writes.
///
/// - Version 0 (keyman before records were versioned): one JSON
///   [`PoolSnapshot`] without a `version` field, in the record [`META_RECORD`].
/// - Version 1: a meta record `{"version": 1, "shards": 256, "platforms": [..]}`
///   in [`META_RECORD`], and per platform up to [`SHARDS`] shard records, named
///   by [`shard_record_name`], each `{"version": 1, "platform": .., "shard": ..,
///   "fresh": [..], "expired": [[key, refresh_ms], ..], "invalid": [..]}`. A key
///   lives in shard [`shard_of`] of its platform.
///
///   Quota entries are optional fields of the same version: a keyman that
///   does not know them ignores them (and loses only the quota views, never
///   a key), and records without them read as no quota known. A shard
///   record may carry `"quota": {"accounts": [{"account": {"Key": k} |
///   {"Named": name}, "view": {..}, "skew": {..}}, ..], "members": [[key,
///   name], ..], "leases": [{"id", "key", "account", "calls", "until"}, ..],
///   "last_lease_id": n}`: an account's view lives in the shard of its key
///   or name ([`Account::shard`](crate::quota::Account::shard)), a key's
///   named account and its outstanding leases in the key's shard. The meta
///   record may carry `"last_lease_id"`; the largest one read is the last
///   lease id given.
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
    /// The last lease id given when it was written.
    #[serde(default, skip_serializing_if = "is_zero")]
    last_lease_id: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
    #[serde(default, skip_serializing_if = "quota::QuotaEntries::is_empty")]
    quota: quota::QuotaEntries,
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
/// whatever decodes (keys and quota entries) re-encodes to records that
/// decode to the same state.
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
    let quotas = crate::quota::Quotas::from_snapshot(&decoded.quotas);
    if let Err(e) = quotas.check_consistency() {
        panic!("restored quotas are inconsistent: {e}");
    }
    let encoded = pool.encode_all_records_with(&quotas);
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
    assert_eq!(
        canonical_quotas(&again.quotas, &again.snapshot),
        canonical_quotas(&decoded.quotas, &decoded.snapshot),
        "re-encoded records decode to other quotas"
    );
    exercise(quotas);
}

/// Uses restored quotas as the engine would (estimates, forecasts, leases
/// reaching their deadline), early and late: none of it may panic.
fn exercise(mut quotas: crate::quota::Quotas) {
    let platforms: Vec<String> = quotas.accounts().map(|(p, _, _)| p.to_owned()).collect();
    let keys: Vec<(String, String)> = quotas
        .leases()
        .map(|(_, l)| (l.platform.clone(), l.key.clone()))
        .chain(
            quotas
                .memberships()
                .map(|(p, k, _)| (p.to_owned(), k.to_owned())),
        )
        .collect();
    for now in [
        Timestamp::EPOCH,
        Timestamp::from_millis(u64::MAX / 2),
        Timestamp::MAX,
    ] {
        for (p, k) in &keys {
            let _ = quotas.available(now, p, k, 1);
        }
        for p in &platforms {
            let _ = quotas.forecast(now, p);
        }
    }
    quotas.end_due_leases(Timestamp::MAX);
    if let Err(e) = quotas.check_consistency() {
        panic!("quotas are inconsistent after their leases ended: {e}");
    }
}
