//! Quota views saved with the state: a restart (`kill -9`, then `serve`
//! again) and a standby's takeover keep the remaining calls, the accounts
//! and the outstanding leases, so that no account is lent more after it than
//! was left before; and a REPORT costs one record to save.

use crate::support::faults::{
    ANN, Raw, SERVING, admin_call, signal, tail, unique, wait_ack, wait_saved,
};
use crate::support::{Broker, Serve};
use keyman::engine::StateGeneration;
use keyman::quota::Observation;
use keyman::service::{Saved, StateWrite};
use keyman::{Engine, EngineConfig, SplitMix64, Timestamp};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

const WAIT: Duration = Duration::from_secs(15);
const PLATFORM: &str = "github_rest";
const OWN: &str = "ghp_quota_own_0123456789abcdefghijklmnopqr";
const ALICE_1: &str = "ghp_quota_alice1_0123456789abcdefghijklmn";
const ALICE_2: &str = "ghp_quota_alice2_0123456789abcdefghijklmn";

/// A request of a keyman-aware worker (REPORT, NEW with `lease`), raw.
fn worker_call(broker: &Broker, body: Value) -> Option<Value> {
    crate::support::faults::worker_call(broker, body, WAIT)
}

/// What STATUS says of the platform.
fn status(broker: &Broker) -> Value {
    let reply = admin_call(broker, json!({ "type": "STATUS" }), WAIT).expect("STATUS answered");
    let reply: Value = serde_json::from_slice(&reply).expect("STATUS is JSON");
    reply["platforms"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["platform"] == PLATFORM))
        .cloned()
        .unwrap_or_else(|| panic!("no {PLATFORM} in {reply}"))
}

/// A REPORT of `key`'s rate-limit headers, answered `{"ok": true}`.
fn report(broker: &Broker, key: &str, remaining: u64, reset: u64) {
    let answer = worker_call(
        broker,
        json!({
            "type": "REPORT", "key_str": key, "key_platform": PLATFORM,
            "remaining": remaining, "limit": 5000, "reset": reset, "request_id": unique(),
        }),
    );
    assert_eq!(
        answer.as_ref().map(|a| &a["ok"]),
        Some(&Value::Bool(true)),
        "REPORT answered {answer:?}"
    );
}

/// NEW with `lease`: `(calls, lease_id)` when lent, `None` when told to wait.
fn lease(broker: &Broker, want: u64) -> Option<(u64, u64)> {
    let answer = worker_call(
        broker,
        json!({ "type": "NEW", "key_platform": PLATFORM, "lease": want }),
    )
    .expect("NEW with lease answered");
    if answer.get("wait").is_some() {
        return None;
    }
    match (answer["calls"].as_u64(), answer["lease_id"].as_u64()) {
        (Some(calls), Some(id)) => Some((calls, id)),
        _ => panic!("NEW with lease answered {answer}"),
    }
}

/// The one serving process of `serves`.
fn leader(serves: &[Serve]) -> usize {
    let until = Instant::now() + WAIT;
    loop {
        let serving: Vec<usize> = (0..serves.len())
            .filter(|&i| serves[i].log().contains(SERVING))
            .collect();
        if let [one] = serving[..] {
            return one;
        }
        assert!(Instant::now() < until, "no single leader: {serving:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Quota views, accounts and a lease are set up on a serving `keyman serve`,
/// saved, and the process killed (`kill -9`); then `serve` starts again (or,
/// with `takeover`, a standby takes over). STATUS says the same remaining and
/// leased calls, and what can be lent after it is exactly what was not lent
/// before.
fn quota_views_survive(broker: &Broker, takeover: bool) {
    const STANDBY: [&str; 3] = ["--standby", "--lease-ttl", "1"];
    let args: &[&str] = if takeover { &STANDBY } else { &[] };
    let mut serves = vec![Serve::start_with(broker, args)];
    if takeover {
        serves.push(Serve::start_with(broker, args));
    }
    assert!(wait_ack(broker, WAIT), "serve does not answer");
    let reset = keyman::service::wall_clock().as_secs() + 3_600;
    let mut raw = Raw::connect(broker);
    raw.publish(
        ANN,
        json!({"type": "PUBLISH", "key_str": OWN, "key_platform": PLATFORM})
            .to_string()
            .as_bytes(),
    );
    for key in [ALICE_1, ALICE_2] {
        let publish = json!({
            "type": "PUBLISH", "key_str": key, "key_platform": PLATFORM,
            "account": "alice", "limit": 5000,
        });
        raw.publish(ANN, publish.to_string().as_bytes());
    }
    report(broker, OWN, 300, reset);
    report(broker, ALICE_2, 1_000, reset);
    let (lent, lease_id) = lease(broker, 10_000).expect("a lease");
    let before = status(broker);
    assert_eq!(before["remaining"], 1_300 - lent, "{before}");
    assert_eq!(before["leased"], lent, "{before}");
    // Saved within the save interval; then the serving process dies.
    assert!(
        wait_saved(broker, &format!(r#""leases":[{{"id":{lease_id},"#), WAIT),
        "the lease was never saved"
    );
    let serving = if takeover { leader(&serves) } else { 0 };
    signal(serves[serving].pid(), "KILL");
    let _ = serves[serving].wait_exit(WAIT);
    if !takeover {
        serves.push(Serve::start(broker));
    }
    assert!(
        wait_ack(broker, WAIT),
        "nobody serves after the kill:\n{}",
        tail(&serves[serves.len() - 1].log(), 10)
    );
    let after = status(broker);
    let restored = serves
        .iter()
        .map(|s| crate::support::faults::grep(&s.log(), &["state restored"]))
        .collect::<Vec<_>>()
        .join("\n");
    println!(
        "quota views on {} ({}): before {before}; after {after}; {restored}",
        broker.url(),
        if takeover { "takeover" } else { "restart" }
    );
    assert_eq!(after["remaining"], before["remaining"], "{after}");
    assert_eq!(after["leased"], before["leased"], "{after}");
    // What is left above the calls lent before can be lent, and no more.
    let mut more = 0;
    while let Some((calls, id)) = lease(broker, 10_000) {
        assert!(id > lease_id, "lease id {id} given again");
        more += calls;
    }
    assert_eq!(more + lent, 1_300, "lent {lent} before, {more} after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_quota_views_over_redis() {
    let broker = Broker::redis();
    block_in_place(|| quota_views_survive(&broker, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_quota_views_over_nats() {
    let broker = Broker::nats();
    block_in_place(|| quota_views_survive(&broker, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_keeps_quota_views_over_redis() {
    let broker = Broker::redis();
    block_in_place(|| quota_views_survive(&broker, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_keeps_quota_views_over_nats() {
    let broker = Broker::nats();
    block_in_place(|| quota_views_survive(&broker, true));
}

/// The keys of the save-cost figure.
const KEYS: usize = 100_000;

fn key(i: usize) -> String {
    format!("ghp_burst{i:07}_abcdefghijklmnopqrstuvwxyz")
}

/// What one save costs with 100 000 keys on a platform, each with a quota
/// view, when one REPORT changed one view: the records and bytes written and
/// the time, through the store `serve` uses (encoding included), against a
/// save of everything.
async fn save_cost_of_one_report(broker: Broker) {
    let (_bus, store) = keyman::service::connect_url_with_store(&broker.url(), "report-cost")
        .await
        .expect("store");
    let mut engine = Engine::new(EngineConfig::default(), SplitMix64::new(1));
    let now = Timestamp::from_secs(1_700_000_000);
    let seen = |remaining: u64| Observation {
        remaining: Some(remaining),
        limit: Some(5_000),
        reset: Some(Timestamp::from_secs(1_700_003_600)),
        ..Observation::default()
    };
    for i in 0..KEYS {
        engine.publish(now, PLATFORM, &key(i));
        engine.report(now, PLATFORM, &key(i), &seen(5_000), None);
    }
    let started = Instant::now();
    let all = StateWrite {
        records: engine.encode_all_records(),
        replace: true,
    };
    let all_bytes: usize = all.records.values().map(Vec::len).sum();
    assert_eq!(store.save(&all, None).await.expect("save"), Saved::Written);
    let all_took = started.elapsed();

    let generation: StateGeneration = engine.state_generation();
    engine.report(now, PLATFORM, &key(4_242), &seen(4_321), None);
    let started = Instant::now();
    let one = StateWrite {
        records: engine.encode_records(&engine.changed_since(generation)),
        replace: false,
    };
    assert_eq!(store.save(&one, None).await.expect("save"), Saved::Written);
    let one_took = started.elapsed();
    let one_bytes: usize = one.records.values().map(Vec::len).sum();

    let loaded = store.load(None).await.expect("load").expect("records");
    let decoded = keyman::pool::decode_records(&loaded).expect("decode");
    let views = decoded.quotas.accounts.len();
    let reported = decoded
        .quotas
        .accounts
        .iter()
        .find(|a| a.account == keyman::quota::Account::Key(key(4_242)))
        .and_then(|a| a.view.as_ref())
        .map(|v| v.remaining);
    println!(
        "save cost on {} with {KEYS} keys and views on one platform: everything {} records, {all_bytes} bytes in {all_took:?}; one REPORT: {} record(s), {one_bytes} bytes in {one_took:?}",
        broker.url(),
        all.records.len(),
        one.records.len()
    );
    assert_eq!(one.records.len(), 1);
    assert!(
        one_bytes * 100 < all_bytes,
        "{one_bytes} of {all_bytes} bytes"
    );
    assert_eq!((views, reported), (KEYS, Some(4_321)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_costs_what_changed_with_quota_views_over_redis() {
    save_cost_of_one_report(Broker::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_save_costs_what_changed_with_quota_views_over_nats() {
    save_cost_of_one_report(Broker::nats()).await;
}
