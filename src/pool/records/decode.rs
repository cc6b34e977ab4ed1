//! Reading saved records back ([`decode_records`]), of any version up to
//! [`STATE_FORMAT_VERSION`], and why they could not be ([`StateDecodeError`]).

use crate::quota::QuotaSnapshot;

use super::{
    META_RECORD, MetaRecord, PlatformSnapshot, PoolSnapshot, SHARDS, STATE_FORMAT_VERSION,
    ShardRecord, StateRecords, shard_record_name,
};

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
    /// The quota views, named accounts and outstanding leases they hold
    /// (none from records of a keyman that knew no quotas).
    pub quotas: QuotaSnapshot,
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
    let (platform_order, version, last_lease_id) = match records.get(META_RECORD) {
        None if records.is_empty() => {
            return Ok(DecodedState {
                snapshot: PoolSnapshot::default(),
                quotas: QuotaSnapshot::default(),
                version: STATE_FORMAT_VERSION,
            });
        }
        // Shards without their meta record (a first save cut short before
        // it): the shards say their platforms.
        None => (Vec::new(), STATE_FORMAT_VERSION, 0),
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
                    quotas: QuotaSnapshot::default(),
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
            (meta.platforms, version, meta.last_lease_id)
        }
    };
    let mut platforms: Vec<PlatformSnapshot> = Vec::new();
    let mut quotas = QuotaSnapshot {
        last_lease_id,
        ..QuotaSnapshot::default()
    };
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
        shard.quota.decode_into(&shard.platform, &mut quotas);
    }
    Ok(DecodedState {
        snapshot: PoolSnapshot { platforms },
        quotas,
        version,
    })
}
