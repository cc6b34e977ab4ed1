//! The behaviour every [`StateStore`] must show.

use crate::{Lease, Records, Saved, StateStore, StateWrite};
use std::time::Duration;

/// The behaviour every [`StateStore`] must show. `store` is unfenced, `fenced`
/// the same records fenced by `lease` (free when this is called); nothing is
/// stored under their name yet. Takes about a second: it waits for the lease
/// to expire once.
pub async fn state_store(store: &dyn StateStore, fenced: &dyn StateStore, lease: &dyn Lease) {
    let records = |pairs: &[(&str, &[u8])]| -> Records {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect()
    };
    let write = |pairs: &[(&str, &[u8])], replace: bool| StateWrite {
        records: records(pairs),
        replace,
    };
    let load = async |s: &dyn StateStore| s.load(None).await.expect("load");
    let save = async |s: &dyn StateStore, w: &StateWrite, fence: Option<&str>| {
        s.save(w, fence).await.expect("save")
    };
    assert_eq!(load(store).await, None, "{} is not empty", store.describe());
    assert_eq!(store.set_aside(1).await.expect("set aside"), None);

    // Saves write the records named and keep the others; a replacing save drops them.
    let saved = save(
        store,
        &write(&[("meta", b"m1"), ("0a.1", b"s1")], false),
        None,
    )
    .await;
    assert_eq!(saved, Saved::Written);
    save(
        store,
        &write(&[("0a.2", b"s2"), ("meta", b"m2")], false),
        None,
    )
    .await;
    assert_eq!(
        load(store).await,
        Some(records(&[
            ("meta", b"m2"),
            ("0a.1", b"s1"),
            ("0a.2", b"s2")
        ]))
    );
    assert_eq!(
        load(fenced).await,
        load(store).await,
        "one store, two handles"
    );
    save(
        store,
        &write(&[("meta", b"m3"), ("0b.1", b"t1")], true),
        None,
    )
    .await;
    let now = Some(records(&[("meta", b"m3"), ("0b.1", b"t1")]));
    assert_eq!(load(store).await, now);

    // A copy set aside leaves the records as they are and is not loaded with them.
    let copy = store
        .set_aside(1_234)
        .await
        .expect("set aside")
        .expect("a copy");
    assert!(copy.contains("unreadable"), "{copy}");
    assert_eq!(load(store).await, now);

    // Many records, some large: all of them load.
    let large = vec![b'x'; 200_000];
    let mut many: Vec<(String, Vec<u8>)> = (0..300)
        .map(|i| {
            (
                format!("{i:016x}.{}", i % 256),
                vec![b'a' + (i % 26) as u8; 3_000],
            )
        })
        .collect();
    many.push(("meta".to_owned(), large.clone()));
    let big = StateWrite {
        records: many.iter().cloned().collect(),
        replace: true,
    };
    save(store, &big, None).await;
    assert_eq!(load(store).await, Some(big.records.clone()));

    // Fenced: a save lands only while its holder holds the lease.
    let ttl = Duration::from_millis(600);
    assert!(lease.try_acquire("one", ttl).await.expect("acquire"));
    fenced.load(Some("one")).await.expect("the holder loads");
    let saved = save(fenced, &write(&[("meta", b"one")], false), Some("one")).await;
    assert_eq!(saved, Saved::Written);
    assert_eq!(
        save(fenced, &write(&[("meta", b"two")], false), Some("two")).await,
        Saved::Fenced,
        "a save of a holder that does not hold the lease lands"
    );
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(lease.try_acquire("two", ttl).await.expect("acquire"));
    fenced
        .load(Some("two"))
        .await
        .expect("the new holder loads");
    assert_eq!(
        save(fenced, &write(&[("meta", b"late")], false), Some("one")).await,
        Saved::Fenced,
        "the old holder's save lands after another holder took the lease"
    );
    assert_eq!(
        save(fenced, &write(&[("meta", b"two")], false), Some("two")).await,
        Saved::Written
    );
    let stored = load(store).await.expect("records");
    assert_eq!(stored.get("meta").map(Vec::as_slice), Some(&b"two"[..]));
    // Unfenced saves (no holder) are not fenced.
    assert_eq!(
        save(fenced, &write(&[("meta", b"free")], false), None).await,
        Saved::Written
    );
    lease.release("two").await.expect("release");
}
