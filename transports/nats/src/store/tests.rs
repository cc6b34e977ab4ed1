//! The store against a real nats-server: the fence, the older layout, a newer index.

use super::*;
use keyman_transport::Lease;
use keyman_transport::testing::NatsServer;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_millis(400);

fn records(pairs: &[(&str, &str)]) -> Records {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec()))
        .collect()
}

fn write(pairs: &[(&str, &str)]) -> StateWrite {
    StateWrite {
        records: records(pairs),
        replace: false,
    }
}

/// Two orchestrators' handles on one store, each fenced by its lease.
async fn two(server: &NatsServer, name: &str) -> [(crate::NatsLease, NatsStore); 2] {
    let mut out = Vec::new();
    for _ in 0..2 {
        let bus = NatsBus::connect(&server.url(), crate::NatsOptions::default())
            .await
            .expect("connect");
        let lease = bus.lease("keyman", format!("leader.{name}"));
        let store = bus
            .state_store("keyman", format!("state.{name}"))
            .fenced_by(&lease);
        out.push((lease, store));
    }
    // JetStream may answer a moment after the server greets its first client.
    let until = Instant::now() + Duration::from_secs(10);
    while let Err(err) = out[0].1.ensure_stream().await {
        assert!(Instant::now() < until, "JetStream never answered: {err}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let [a, b]: [(crate::NatsLease, NatsStore); 2] = out.try_into().expect("two");
    [a, b]
}

/// Takes the lease for `holder` once the previous holder's has expired.
async fn take(lease: &crate::NatsLease, holder: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while !lease.try_acquire(holder, TTL).await.expect("acquire") {
        assert!(Instant::now() < until, "{holder} never got the lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gap a check-then-write fence leaves: the old holder has passed
/// every check and written its records when another holder claims and
/// saves; its save must neither land nor be read, and leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_written_before_another_claim_never_lands() {
    let server = NatsServer::start().expect("nats-server starts");
    let [(lease_a, a), (lease_b, b)] = two(&server, "gap").await;
    take(&lease_a, "one").await;
    a.load(Some("one")).await.expect("one loads");
    let first = write(&[("meta", "m1"), ("r1", "a1"), ("r2", "a2")]);
    assert_eq!(a.save(&first, Some("one")).await, Ok(Saved::Written));

    // One's next save has written its entries: then it is paused.
    let stale = write(&[("meta", "stale"), ("r1", "stale"), ("r3", "stale")]);
    let mut paused = a.session.lock().await.take().expect("one's session");
    let staged = a.stage(&mut paused, &stale).await.expect("staged");

    take(&lease_b, "two").await;
    let loaded = b.load(Some("two")).await.expect("two loads");
    assert_eq!(
        loaded,
        Some(first.records.clone()),
        "two read a save that never committed"
    );
    assert_eq!(
        b.save(&write(&[("meta", "m2")]), Some("two")).await,
        Ok(Saved::Written)
    );

    // One wakes up and commits.
    assert_eq!(
        a.commit(&mut paused, staged, &stale.records).await,
        Ok(false),
        "the paused save landed"
    );
    let expected = records(&[("meta", "m2"), ("r1", "a1"), ("r2", "a2")]);
    assert_eq!(a.load(None).await, Ok(Some(expected.clone())));
    // Its next save is refused too, and what it wrote is gone.
    assert_eq!(a.save(&stale, Some("one")).await, Ok(Saved::Fenced));
    assert_eq!(b.load(None).await, Ok(Some(expected)));
    let saved = a.names(Some(layout::SAVED)).await.expect("names");
    assert_eq!(saved.len(), 3, "entries left behind: {saved:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_of_the_layout_before_the_index_are_read_and_moved() {
    let server = NatsServer::start().expect("nats-server starts");
    let [(lease, store), _] = two(&server, "old").await;
    // As keyman wrote them before the index: `meta` in the entry itself.
    for (entry, value) in [
        ("state.old", "meta-v1"),
        ("state.old.00ab.1", "shard-1"),
        ("state.old.00ab.2", "shard-2"),
        ("fence.state.old", r#"{"holder": "gone"}"#),
    ] {
        store
            .put(entry, value.as_bytes(), None)
            .await
            .expect("write");
    }
    let old = records(&[
        ("meta", "meta-v1"),
        ("00ab.1", "shard-1"),
        ("00ab.2", "shard-2"),
    ]);
    assert_eq!(
        store.load(None).await,
        Ok(Some(old.clone())),
        "read as it is"
    );

    take(&lease, "one").await;
    assert_eq!(store.load(Some("one")).await, Ok(Some(old.clone())));
    let mut names = store.names(None).await.expect("names");
    names.sort();
    assert_eq!(
        names,
        ["index", "s.0.0.00ab.1", "s.0.0.00ab.2", "s.0.0.meta"],
        "the old entries stay beside the new ones"
    );
    assert_eq!(store.get("state.old").await, Ok(None));
    assert_eq!(store.get("fence.state.old").await, Ok(None));
    assert_eq!(
        store
            .save(&write(&[("00ab.2", "shard-2b")]), Some("one"))
            .await,
        Ok(Saved::Written)
    );
    let mut now = old;
    now.insert("00ab.2".to_owned(), b"shard-2b".to_vec());
    assert_eq!(store.load(None).await, Ok(Some(now)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_of_a_newer_layout_is_refused_and_kept() {
    let server = NatsServer::start().expect("nats-server starts");
    let [(lease, store), _] = two(&server, "newer").await;
    let newer = br#"{"layout": 3, "epochs": []}"#;
    store
        .put("state.newer.index", newer, None)
        .await
        .expect("write");
    take(&lease, "one").await;
    let err = store.load(Some("one")).await.expect_err("refused");
    assert!(err.to_string().contains("layout 3"), "{err}");
    assert_eq!(
        store.save(&write(&[("meta", "m")]), Some("one")).await,
        Err(err)
    );
    assert_eq!(
        store
            .get("state.newer.index")
            .await
            .map(|v| v.map(|(_, v)| v)),
        Ok(Some(newer.to_vec()))
    );
}
