//! How [`NatsStore`](crate::NatsStore) lays saved state out in a JetStream
//! key-value bucket (layout 2), and the pure decisions about it: which entry
//! holds the current value of each record, what a save commits, what is
//! garbage.
//!
//! For a store under entry name `K`:
//!
//! - `K.index` is the **index**: `{"layout": 2, "base": [e, c] | null,
//!   "epochs": [[e, c], ..]}`.
//! - `K.s.<e>.<c>.<record>` holds record `record` as the save of
//!   **generation** `(e, c)` wrote it. Such an entry is written once and never
//!   overwritten: every save writes new entries.
//!
//! An orchestrator that claims the store rewrites the index, expecting the
//! sequence it read, and the sequence JetStream gives that write is its
//! **epoch** `e`: unique, and larger than every earlier holder's. Its saves are
//! generations `(e, 1)`, `(e, 2)`, ..; each writes its records' entries, then
//! commits by rewriting the index (raising `epochs[e]` to its counter)
//! **expecting the sequence of its own last index write**. Once another
//! orchestrator has claimed the store that expectation fails: the save is
//! refused, and the entries it wrote are never read, since a generation is
//! committed only if the index says so. One compare-and-set on one entry is
//! the whole fence, so no pause anywhere in a save can make a stale save land
//! (NATS 2.9 has no atomic write of several entries, and no conditional write
//! on another entry's sequence).
//!
//! A record's current value is in its entry of the highest committed
//! generation: `(e, c)` with `c <= epochs[e]` and `(e, c) >= base`. A save of
//! the whole state (`replace`) sets `base` to its generation, which drops every
//! record it did not write. Entries of superseded or uncommitted generations
//! are garbage; the writer removes what its save superseded, and each claim
//! removes the rest.
//!
//! Records stored by keyman before layout 2 (the record `meta` in `K` itself,
//! every other record `r` in `K.r`) are copied into entries of generation
//! [`MIGRATED`] by the first claim, which then removes them.

use std::collections::{BTreeMap, BTreeSet};

/// A save's generation: the epoch of the holder that wrote it and its counter.
pub(crate) type Generation = (u64, u64);

/// The layout this keyman writes.
pub(crate) const LAYOUT: u64 = 2;

/// The index entry's name under the store's entry name.
pub(crate) const INDEX: &str = "index";

/// The first name part of every saved entry under the store's entry name.
pub(crate) const SAVED: &str = "s";

/// The name part of the copies set aside.
pub(crate) const UNREADABLE: &str = "unreadable";

/// The generation of records migrated from the layout before the index.
pub(crate) const MIGRATED: Generation = (0, 0);

/// What the index says: which generations are committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Index {
    /// Entries of generations before it are dropped (set by a save of the
    /// whole state).
    pub(crate) base: Option<Generation>,
    /// Per epoch, the last committed counter.
    pub(crate) epochs: BTreeMap<u64, u64>,
}

impl Index {
    /// Reads an index; the error says why it cannot.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let layout = value
            .get("layout")
            .and_then(serde_json::Value::as_u64)
            .ok_or("no layout number")?;
        if layout != LAYOUT {
            return Err(format!(
                "layout {layout}, and this keyman reads layout {LAYOUT}"
            ));
        }
        let pair = |v: &serde_json::Value| -> Option<Generation> {
            match v.as_array()?.as_slice() {
                [e, c] => Some((e.as_u64()?, c.as_u64()?)),
                _ => None,
            }
        };
        let base = match value.get("base") {
            None | Some(serde_json::Value::Null) => None,
            Some(b) => Some(pair(b).ok_or("a base that is not [epoch, counter]")?),
        };
        let epochs = value
            .get("epochs")
            .and_then(serde_json::Value::as_array)
            .ok_or("no epochs")?
            .iter()
            .map(|v| pair(v).ok_or("an epoch that is not [epoch, counter]"))
            .collect::<Result<BTreeMap<u64, u64>, _>>()?;
        Ok(Self { base, epochs })
    }

    /// The index as stored.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let epochs: Vec<[u64; 2]> = self.epochs.iter().map(|(e, c)| [*e, *c]).collect();
        let value = serde_json::json!({
            "layout": LAYOUT,
            "base": self.base.map(|(e, c)| [e, c]),
            "epochs": epochs,
        });
        serde_json::to_vec(&value).unwrap_or_default()
    }

    /// Whether the save of generation `g` is committed and not dropped.
    pub(crate) fn committed(&self, g: Generation) -> bool {
        self.base.is_none_or(|b| g >= b) && self.epochs.get(&g.0).is_some_and(|&c| g.1 <= c)
    }

    /// The index once the save of `generation` has committed, where `current`
    /// is each record's generation after that save: only the epochs that
    /// still hold a current record stay, and the saver's.
    pub(crate) fn after(
        &self,
        generation: Generation,
        replace: bool,
        current: &BTreeMap<String, Generation>,
    ) -> Self {
        let live: BTreeSet<u64> = current.values().map(|g| g.0).collect();
        let mut epochs: BTreeMap<u64, u64> = self
            .epochs
            .iter()
            .filter(|(e, _)| live.contains(e))
            .map(|(e, c)| (*e, *c))
            .collect();
        epochs.insert(generation.0, generation.1);
        Self {
            base: if replace { Some(generation) } else { self.base },
            epochs,
        }
    }
}

/// The name of the entry of `record` written by the save of generation `g`,
/// under the store's entry name.
pub(crate) fn saved_name(g: Generation, record: &str) -> String {
    format!("{SAVED}.{}.{}.{record}", g.0, g.1)
}

/// The generation and record of a saved entry's name (under the store's
/// entry name), if it is one.
pub(crate) fn parse_saved(name: &str) -> Option<(Generation, &str)> {
    let rest = name.strip_prefix(SAVED)?.strip_prefix('.')?;
    let (epoch, rest) = rest.split_once('.')?;
    let (counter, record) = rest.split_once('.')?;
    let g = (epoch.parse().ok()?, counter.parse().ok()?);
    (!record.is_empty()).then_some((g, record))
}

/// Whether an entry name under the store's entry name is a record of the
/// layout before the index (not the index, a saved entry or a copy).
pub(crate) fn is_legacy_record(name: &str) -> bool {
    let first = name.split('.').next().unwrap_or(name);
    name != INDEX && first != SAVED && first != UNREADABLE
}

/// Of the saved entries `names`: each record's current generation (the
/// highest committed one), and the names of the others (garbage).
pub(crate) fn current<'a>(
    index: &Index,
    names: impl IntoIterator<Item = &'a str>,
) -> (BTreeMap<String, Generation>, Vec<String>) {
    let mut current: BTreeMap<String, Generation> = BTreeMap::new();
    let mut garbage = Vec::new();
    for name in names {
        match parse_saved(name) {
            Some((g, record)) if index.committed(g) => match current.insert(record.to_owned(), g) {
                Some(older) if older > g => {
                    current.insert(record.to_owned(), older);
                    garbage.push(saved_name(g, record));
                }
                Some(older) => garbage.push(saved_name(older, record)),
                None => {}
            },
            _ => garbage.push(name.to_owned()),
        }
    }
    (current, garbage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(base: Option<Generation>, epochs: &[(u64, u64)]) -> Index {
        Index {
            base,
            epochs: epochs.iter().copied().collect(),
        }
    }

    #[test]
    fn an_index_reads_back_what_it_wrote() {
        for i in [
            Index::default(),
            index(None, &[(0, 0)]),
            index(Some((7, 3)), &[(7, 9), (12, 1)]),
        ] {
            assert_eq!(Index::decode(&i.encode()), Ok(i));
        }
    }

    #[test]
    fn an_index_of_another_layout_or_shape_is_refused_with_the_reason() {
        let cases: [(&[u8], &str); 5] = [
            (b"{\"layout\": 3, \"epochs\": []}", "layout 3"),
            (b"{\"epochs\": []}", "no layout"),
            (b"{\"layout\": 2}", "no epochs"),
            (b"{\"layout\": 2, \"epochs\": [[1]]}", "epoch"),
            (b"{\"layout\": 2, \"e", "not JSON"),
        ];
        for (bytes, why) in cases {
            let err = Index::decode(bytes).expect_err("refused");
            assert!(err.contains(why), "{err:?} does not say {why:?}");
        }
    }

    #[test]
    fn saved_names_parse_back_and_other_names_do_not() {
        let name = saved_name((17, 4), "00ab.12");
        assert_eq!(name, "s.17.4.00ab.12");
        assert_eq!(parse_saved(&name), Some(((17, 4), "00ab.12")));
        assert_eq!(parse_saved("s.17.4.meta"), Some(((17, 4), "meta")));
        for other in ["s.17.4", "s.x.4.meta", "index", "00ab.12", "s.1.2."] {
            assert_eq!(parse_saved(other), None, "{other}");
        }
        assert!(is_legacy_record("00ab.12"));
        for not in [
            "index",
            "s.1.2.meta",
            "unreadable.99",
            "unreadable.99.00ab.1",
        ] {
            assert!(!is_legacy_record(not), "{not}");
        }
    }

    #[test]
    fn the_current_entry_is_the_highest_committed_generation() {
        let i = index(None, &[(0, 0), (10, 3), (20, 1)]);
        let names = [
            "s.0.0.meta",
            "s.10.2.meta",
            "s.20.1.meta",
            "s.10.3.a",
            // An old holder's save that never committed: (10, 4).
            "s.10.4.a",
            "s.10.4.b",
            "s.0.0.c",
            // An epoch the index does not name.
            "s.15.1.c",
            "junk",
        ];
        let (current, mut garbage) = current(&i, names);
        assert_eq!(
            current,
            [("meta", (20, 1)), ("a", (10, 3)), ("c", (0, 0))]
                .map(|(r, g)| (r.to_owned(), g))
                .into_iter()
                .collect()
        );
        garbage.sort();
        assert_eq!(
            garbage,
            [
                "junk",
                "s.0.0.meta",
                "s.10.2.meta",
                "s.10.4.a",
                "s.10.4.b",
                "s.15.1.c"
            ]
        );
    }

    #[test]
    fn a_base_drops_what_the_whole_save_did_not_write() {
        let i = index(Some((10, 2)), &[(0, 0), (10, 3)]);
        let (current, garbage) = current(&i, ["s.0.0.old", "s.10.1.a", "s.10.2.a", "s.10.3.b"]);
        assert_eq!(current.len(), 2);
        assert_eq!(current.get("a"), Some(&(10, 2)));
        assert_eq!(current.get("b"), Some(&(10, 3)));
        assert_eq!(garbage, ["s.0.0.old", "s.10.1.a"]);
    }

    #[test]
    fn a_commit_keeps_only_the_epochs_that_hold_current_records() {
        let i = index(None, &[(0, 0), (10, 3)]);
        let current: BTreeMap<String, Generation> = [("a", (10, 3)), ("b", (20, 1))]
            .map(|(r, g)| (r.to_owned(), g))
            .into_iter()
            .collect();
        assert_eq!(
            i.after((20, 1), false, &current),
            index(None, &[(10, 3), (20, 1)])
        );
        let only_mine: BTreeMap<String, Generation> =
            [("a".to_owned(), (20, 2))].into_iter().collect();
        assert_eq!(
            i.after((20, 2), true, &only_mine),
            index(Some((20, 2)), &[(20, 2)])
        );
        // A save that is not committed is not in the index, and an index
        // without the saver's epoch commits nothing of it.
        assert!(!i.committed((20, 1)));
        assert!(!i.committed((10, 4)));
        assert!(i.committed((10, 3)));
    }
}
