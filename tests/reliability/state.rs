//! Saved state: unreadable records are kept and refused,
//! and large pools survive a restart.

use crate::support::faults::{
    ANN, REDIS_STATE_KEY, Raw, Resp, grep, list, list_keys, nats_kv_entries, nats_kv_get, noise,
    publish_bytes, redis_keys, signal, tail, wait_ack,
};
use crate::support::{Broker, Serve, client_config, ready_admin};
use keyman::service::{KeyAdmin, KeyPublisher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

const WAIT: Duration = Duration::from_secs(15);
/// The exit code of `serve` that refuses unreadable state.
const EXIT_UNREADABLE: i32 = 7;
const DISCARD: &str = "--discard-unreadable-state";

// The helpers of the large-pool test (as in the burst tests).

/// The keys published before a restart (each to the four platforms).
const KEYS_ON_RESTART: usize = 100_000;
/// The four platforms Augur publishes every key to.
const PLATFORMS: [&str; 4] = [
    "github_rest",
    "github_graphql",
    "github_search",
    "gitlab_rest",
];

/// A token-like key, the same length as a GitHub token.
fn key(i: usize) -> String {
    format!("ghp_burst{i:07}_abcdefghijklmnopqrstuvwxyz")
}

/// Every key on every platform, in the order Augur's restart flow publishes
/// them (each key to the four platforms in turn).
fn publishes(keys: std::ops::Range<usize>) -> Vec<(String, Vec<u8>)> {
    keys.flat_map(|i| {
        let k = key(i);
        PLATFORMS.map(|p| (ANN.to_owned(), publish_bytes(p, &k)))
    })
    .collect()
}

/// The keys `KeyPublisher::keys` lists per platform: the count, or the
/// error (the platforms after the first error are not asked).
async fn listed(broker: &Broker) -> Vec<(String, Result<usize, String>)> {
    let lister = KeyPublisher::connect(broker.bus().await, client_config(Duration::from_secs(30)))
        .await
        .expect("connect publisher");
    let mut out = Vec::new();
    for p in PLATFORMS {
        let r = lister
            .keys(p)
            .await
            .map(|k| k.len())
            .map_err(|e| e.to_string());
        let failed = r.is_err();
        out.push((p.to_owned(), r));
        if failed {
            break;
        }
    }
    out
}

/// The keys a raw LIST_KEYS names per platform (no payload limit on the
/// test's side): what was applied, whatever the library's list calls can read.
/// (The platforms after the first that cannot be listed are not asked.)
fn listed_raw(broker: &Broker) -> Vec<(String, Option<usize>)> {
    let mut out = Vec::new();
    for p in PLATFORMS {
        let n = list_keys(broker, p, Duration::from_secs(15)).map(|k| k.len());
        out.push((p.to_owned(), n));
        if n.is_none() {
            break;
        }
    }
    out
}

/// The keys per platform in the state saved on `broker` (under the default
/// name), as `serve` reads it.
async fn saved_counts(broker: &Broker) -> Vec<(String, usize)> {
    let (_bus, store) = keyman::service::connect_url_with_store(&broker.url(), ANN)
        .await
        .expect("store");
    let records = store.load(None).await.expect("load").unwrap_or_default();
    let decoded = keyman::pool::decode_records(&records).expect("the saved state decodes");
    decoded
        .snapshot
        .platforms
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.fresh.len() + p.expired.len() + p.invalid.len(),
            )
        })
        .collect()
}

/// Where the saved state is kept.
enum Store {
    /// In the broker, under the default name.
    Broker,
    /// In a file (`--state-file`).
    File(PathBuf),
}

impl Store {
    fn args(&self) -> Vec<String> {
        match self {
            Store::Broker => vec![],
            Store::File(p) => vec!["--state-file".into(), p.display().to_string()],
        }
    }

    fn read(&self, broker: &Broker) -> Option<Vec<u8>> {
        match (self, broker) {
            (Store::File(p), _) => std::fs::read(p).ok(),
            (Store::Broker, Broker::Redis(_)) => {
                match Raw::connect(broker).redis(&[b"GET", REDIS_STATE_KEY.as_bytes()]) {
                    Resp::Bulk(b) => b,
                    other => Some(format!("{other:?}").into_bytes()),
                }
            }
            (Store::Broker, Broker::Nats(_)) => nats_state(broker, |store| async move {
                let records = store.load(None).await.expect("load the saved state");
                records.and_then(|mut r| r.remove("meta"))
            }),
        }
    }

    fn write(&self, broker: &Broker, value: &[u8]) {
        match (self, broker) {
            (Store::File(p), _) => std::fs::write(p, value).expect("write the state file"),
            (Store::Broker, Broker::Redis(_)) => {
                let r = Raw::connect(broker).redis(&[b"SET", REDIS_STATE_KEY.as_bytes(), value]);
                assert_eq!(r, Resp::Simple("OK".into()));
            }
            (Store::Broker, Broker::Nats(_)) => {
                let meta = keyman::service::StateWrite {
                    records: [("meta".to_owned(), value.to_vec())].into_iter().collect(),
                    replace: false,
                };
                let saved =
                    nats_state(broker, |store| async move { store.save(&meta, None).await });
                assert_eq!(saved, Ok(keyman::service::Saved::Written));
            }
        }
    }

    /// The copies set aside: their names and contents.
    fn copies(&self, broker: &Broker) -> Vec<(String, Vec<u8>)> {
        match (self, broker) {
            (Store::File(p), _) => {
                let dir = p.parent().unwrap_or(Path::new("."));
                let prefix = format!(
                    "{}.unreadable.",
                    p.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                );
                std::fs::read_dir(dir)
                    .map(|d| {
                        d.flatten()
                            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                            .map(|e| {
                                (
                                    e.path().display().to_string(),
                                    std::fs::read(e.path()).unwrap_or_default(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            }
            (Store::Broker, Broker::Redis(_)) => {
                let mut raw = Raw::connect(broker);
                redis_keys(&mut raw, &format!("{REDIS_STATE_KEY}:unreadable:*"))
                    .into_iter()
                    .map(|k| {
                        let v = raw
                            .redis(&[b"GET", k.as_bytes()])
                            .bytes()
                            .unwrap_or_default()
                            .to_vec();
                        (k, v)
                    })
                    .collect()
            }
            (Store::Broker, Broker::Nats(_)) => {
                let mut raw = Raw::connect(broker);
                nats_kv_entries(&mut raw)
                    .into_iter()
                    .filter(|e| e.contains("unreadable"))
                    .map(|e| {
                        let v = nats_kv_get(&mut raw, &e).unwrap_or_default();
                        (e, v)
                    })
                    .collect()
            }
        }
    }
}

/// Runs `f` on the store `serve` keeps its state in on NATS (records are
/// entries of a layout that only the store reads), from a thread in
/// `block_in_place`.
fn nats_state<T, F, Fut>(broker: &Broker, f: F) -> T
where
    F: FnOnce(std::sync::Arc<dyn keyman::service::StateStore>) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    tokio::runtime::Handle::current().block_on(async {
        let (_bus, store) =
            keyman::service::connect_url_with_store(&broker.url(), "augur-oauth-announce")
                .await
                .expect("connect to the store");
        f(store).await
    })
}

/// Starts `serve` and waits until it either exits (its code) or answers
/// (`None`), at most [`WAIT`].
fn start_and_see(broker: &Broker, args: &[String]) -> (Serve, Result<Option<i32>, String>) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut serve = Serve::start_with(broker, &args);
    let until = Instant::now() + WAIT;
    loop {
        if let Some(status) = serve.wait_exit(Duration::from_millis(20)) {
            return (serve, Ok(status.code()));
        }
        if wait_ack(broker, Duration::from_millis(200)) {
            return (serve, Ok(None));
        }
        if Instant::now() >= until {
            let log = serve.log();
            return (
                serve,
                Err(format!("neither exited nor answered:\n{}", tail(&log, 10))),
            );
        }
    }
}

/// Ends `serve` whether or not it still runs (dropping it kills it).
fn stop(serve: Serve) {
    drop(serve);
}

fn unreadable_state_is_kept_and_serve_refuses(broker: &Broker, store: &Store) {
    // A first run saves a real record (and, on NATS, creates the bucket).
    let args = store.args();
    let (seed, up) = start_and_see(broker, &args);
    assert_eq!(up, Ok(None), "serve does not start:\n{}", seed.log());
    Raw::connect(broker).publish(
        ANN,
        &publish_bytes("github_rest", "ghp_seed_0123456789abcdefghijklmnopq"),
    );
    assert!(wait_ack(broker, WAIT));
    let mut seed = seed;
    signal(seed.pid(), "TERM");
    assert!(
        seed.wait_exit(WAIT).is_some(),
        "serve does not stop on SIGTERM"
    );
    assert!(store.read(broker).is_some(), "nothing was saved");

    let mut truncated =
        br#"{"platforms": [{"name": "github_rest", "fresh": ["ghp_seed_0123456789abcdefghij"#
            .to_vec();
    truncated.truncate(60);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated JSON", truncated),
        (
            "a future version",
            br#"{"version": 999, "platforms": [{"name": "github_rest", "fresh": ["ghp_future_0123456789abcdefghijklm"], "expired": [], "invalid": []}], "records": {"format": "from the future"}}"#.to_vec(),
        ),
        ("random bytes", noise(512)),
    ];
    let mut failures = Vec::new();
    for (name, bytes) in &cases {
        store.write(broker, bytes);
        let (serve, seen) = start_and_see(broker, &args);
        match seen {
            Ok(Some(code)) => {
                let log = serve.log();
                let mut problems = Vec::new();
                if code != EXIT_UNREADABLE {
                    problems.push(format!("exit code {code}, not {EXIT_UNREADABLE}"));
                }
                if store.read(broker).as_deref() != Some(bytes.as_slice()) {
                    problems.push("the record was changed".to_owned());
                }
                let copies = store.copies(broker);
                let copy = copies.iter().find(|(_, v)| v == bytes);
                match copy {
                    None => problems.push(format!(
                        "no copy set aside (copies: {:?})",
                        copies.iter().map(|(n, _)| n).collect::<Vec<_>>()
                    )),
                    Some((copy_name, _)) => {
                        if !log.contains(copy_name.rsplit('/').next().unwrap_or(copy_name)) {
                            problems.push(format!("the error does not name the copy {copy_name}"));
                        }
                    }
                }
                if !problems.is_empty() {
                    failures.push(format!(
                        "{name}: exited, but {}; log:\n{}",
                        problems.join("; "),
                        tail(&log, 5)
                    ));
                }
            }
            Ok(None) => {
                // It serves: does the first PUBLISH overwrite the record?
                Raw::connect(broker).publish(
                    ANN,
                    &publish_bytes("github_rest", "ghp_after_0123456789abcdefghijklmnop"),
                );
                let until = Instant::now() + Duration::from_secs(3);
                let overwritten = loop {
                    if store.read(broker).as_deref() != Some(bytes.as_slice()) {
                        break true;
                    }
                    if Instant::now() >= until {
                        break false;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                };
                failures.push(format!(
                    "{name}: serve started and served{}; it logged: {}",
                    if overwritten {
                        " and the first PUBLISH overwrote the record"
                    } else {
                        " (the record was not overwritten within 3 s)"
                    },
                    grep(&serve.log(), &["state"])
                ));
                stop(serve);
                store.write(broker, bytes);
            }
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                stop(serve);
            }
        }

        // With the discard flag it starts empty and serves.
        let mut with_discard = args.clone();
        with_discard.push(DISCARD.to_owned());
        let (serve, seen) = start_and_see(broker, &with_discard);
        match seen {
            Ok(None) => {
                let platforms = list(broker, "LIST_PLATFORMS", None, WAIT);
                if platforms != Some(vec![]) {
                    failures.push(format!(
                        "{name}: with {DISCARD} it lists platforms {platforms:?}, not none"
                    ));
                }
            }
            other => failures.push(format!(
                "{name}: with {DISCARD} it does not serve ({other:?}): {}",
                tail(&serve.log(), 3)
            )),
        }
        stop(serve);
    }
    println!(
        "unreadable state in {}: {failures:#?}",
        match store {
            Store::Broker => broker.url(),
            Store::File(p) => p.display().to_string(),
        }
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_state_is_kept_and_serve_refuses_in_redis() {
    let broker = Broker::redis();
    block_in_place(|| unreadable_state_is_kept_and_serve_refuses(&broker, &Store::Broker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_state_is_kept_and_serve_refuses_in_nats() {
    let broker = Broker::nats();
    block_in_place(|| unreadable_state_is_kept_and_serve_refuses(&broker, &Store::Broker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_state_is_kept_and_serve_refuses_in_a_file() {
    let broker = Broker::redis();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Store::File(dir.path().join("keyman-state.json"));
    block_in_place(|| unreadable_state_is_kept_and_serve_refuses(&broker, &store));
}

/// 100 000 keys on the four platforms, published at a pace that loses
/// nothing on today's code (2 000 messages, half its subscription queue,
/// then a round trip through `serve`), listed,
/// `serve` restarted (SIGTERM), listed again.
async fn hundred_thousand_keys_survive_a_restart(broker: Broker) {
    let _alone = crate::ALONE.lock().await;
    let mut serve = Serve::start(&broker);
    let bus = broker.bus().await;
    ready_admin(bus.clone()).await;
    let admin = KeyPublisher::connect(bus, client_config(Duration::from_secs(60)))
        .await
        .expect("connect publisher");
    let start = Instant::now();
    let all = publishes(0..KEYS_ON_RESTART);
    for batch in all.chunks(2_000) {
        block_in_place(|| Raw::connect(&broker).publish_all(batch));
        admin.ping().await.expect("the orchestrator answers");
    }
    let published_in = start.elapsed();
    let before_raw = block_in_place(|| listed_raw(&broker));
    let before = listed(&broker).await;
    let listed_in = start.elapsed() - published_in;
    let stopping = Instant::now();
    signal(serve.pid(), "TERM");
    let exited = block_in_place(|| serve.wait_exit(Duration::from_secs(30)));
    let stopped_in = stopping.elapsed();
    let log = serve.log();
    drop(serve);
    let saved = saved_counts(&broker).await;
    let restarting = Instant::now();
    let serve = Serve::start(&broker);
    ready_admin(broker.bus().await).await;
    let restarted_in = restarting.elapsed();
    let after_raw = block_in_place(|| listed_raw(&broker));
    let after = listed(&broker).await;
    let restored = grep(&serve.log(), &["state restored"]);
    println!(
        "{KEYS_ON_RESTART} keys x {} platforms on {}: published in {published_in:?}, listed in {listed_in:?}: {before:?}; SIGTERM -> exit {exited:?} in {stopped_in:?}; saved: {saved:?}; restarted in {restarted_in:?}: {restored}; listed again: {after:?}; raw LIST_KEYS counts (no payload limit on the test's side) before {before_raw:?}, after {after_raw:?}",
        PLATFORMS.len(),
        broker.url()
    );
    let expected: Vec<(String, Result<usize, String>)> = PLATFORMS
        .iter()
        .map(|p| ((*p).to_owned(), Ok(KEYS_ON_RESTART)))
        .collect();
    let expected_raw: Vec<(String, Option<usize>)> = PLATFORMS
        .iter()
        .map(|p| ((*p).to_owned(), Some(KEYS_ON_RESTART)))
        .collect();
    let expected_saved: Vec<(String, usize)> = PLATFORMS
        .iter()
        .map(|p| ((*p).to_owned(), KEYS_ON_RESTART))
        .collect();
    assert!(
        exited.is_some(),
        "serve did not exit within 30 s of SIGTERM:\n{}",
        tail(&log, 10)
    );
    // What was saved is every key, and the restarted serve restored it all.
    assert_eq!(saved, expected_saved, "the saved state");
    let total = KEYS_ON_RESTART * PLATFORMS.len();
    assert!(
        restored.contains(&format!("keys={total}")),
        "the restarted serve did not restore {total} keys: {restored}\n{}",
        tail(&serve.log(), 10)
    );
    // Listed by the library where it can list that many; else by a raw
    // LIST_KEYS where the broker
    // carries the reply (Redis; a NATS reply is capped at 1 MiB).
    for (when, listed, raw) in [
        ("before", &before, &before_raw),
        ("after", &after, &after_raw),
    ] {
        let by_library = *listed == expected;
        let by_raw = *raw == expected_raw;
        let nats_cap = matches!(broker, Broker::Nats(_)) && raw.iter().all(|(_, n)| n.is_none());
        assert!(
            by_library || by_raw || nats_cap,
            "{when} the restart: listed {listed:?}, raw {raw:?}; the first serve logged:\n{}\nthe second:\n{}",
            tail(&log, 10),
            tail(&serve.log(), 10)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_keys_survive_a_restart_over_redis() {
    hundred_thousand_keys_survive_a_restart(Broker::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_keys_survive_a_restart_over_nats() {
    hundred_thousand_keys_survive_a_restart(Broker::nats()).await;
}

/// What one save costs with 100 000 keys on each of the four platforms when
/// one key changed: the bytes written and the time, through the store
/// `serve` uses (encoding included), against a save of everything.
async fn save_cost_with_one_key_changed(broker: Broker) {
    use keyman::pool::PoolSnapshot;
    use keyman::service::{Saved, StateWrite};
    use keyman::{KeyPool, Selection, Timestamp};
    let (_bus, store) = keyman::service::connect_url_with_store(&broker.url(), "save-cost")
        .await
        .expect("store");
    let mut pool = KeyPool::from_snapshot(&PoolSnapshot::default(), Selection::default());
    for i in 0..KEYS_ON_RESTART {
        for p in PLATFORMS {
            pool.publish(p, &key(i));
        }
    }
    let started = Instant::now();
    let all = StateWrite {
        records: pool.encode_all_records(),
        replace: true,
    };
    let all_bytes: usize = all.records.values().map(Vec::len).sum();
    assert_eq!(store.save(&all, None).await.expect("save"), Saved::Written);
    let all_took = started.elapsed();

    let generation = pool.change_generation();
    let now = Timestamp::from_millis(1_000);
    pool.expire(
        "github_rest",
        &key(4_242),
        Timestamp::from_millis(9_000_000),
        now,
    );
    let started = Instant::now();
    let one = StateWrite {
        records: pool.encode_records(&pool.changed_since(generation)),
        replace: false,
    };
    assert_eq!(store.save(&one, None).await.expect("save"), Saved::Written);
    let one_took = started.elapsed();
    let one_bytes: usize = one.records.values().map(Vec::len).sum();

    let loaded = store.load(None).await.expect("load").expect("records");
    let restored = keyman::pool::decode_records(&loaded)
        .expect("decode")
        .snapshot;
    let keys: usize = restored
        .platforms
        .iter()
        .map(|p| p.fresh.len() + p.expired.len() + p.invalid.len())
        .sum();
    println!(
        "save cost on {} with {KEYS_ON_RESTART} keys x {} platforms: everything {} records, {all_bytes} bytes in {all_took:?}; one key changed: {} record(s), {one_bytes} bytes in {one_took:?}",
        broker.url(),
        PLATFORMS.len(),
        all.records.len(),
        one.records.len()
    );
    assert_eq!(keys, KEYS_ON_RESTART * PLATFORMS.len());
    assert_eq!(one.records.len(), 1);
    assert!(
        one_bytes * 1_000 < all_bytes,
        "{one_bytes} of {all_bytes} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_costs_what_changed_over_redis() {
    save_cost_with_one_key_changed(Broker::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_costs_what_changed_over_nats() {
    save_cost_with_one_key_changed(Broker::nats()).await;
}
