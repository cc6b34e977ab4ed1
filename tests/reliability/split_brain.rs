//! Split brain with real `keyman serve --standby` processes: a leader paused
//! past its lease neither answers nor writes.

use crate::support::faults::{
    ANN, REQ, Raw, RawSub, SERVING, grep, list, list_keys, new_bytes, publish_bytes, signal,
    wait_ack, wait_log, wait_saved,
};
use crate::support::{Broker, Serve};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

const STANDBY: [&str; 3] = ["--standby", "--lease-ttl", "1"];
const WAIT: Duration = Duration::from_secs(15);
const PLATFORM: &str = "github_rest";

fn valid_key(i: usize) -> String {
    format!("ghp_takeover_valid_{i}_0123456789abcdefghijkl")
}

fn invalidate_bytes(key: &str) -> Vec<u8> {
    format!(
        r#"{{"type": "INVALIDATE", "key_str": "{key}", "key_platform": "{PLATFORM}", "requester_id": 1}}"#
    )
    .into_bytes()
}

fn expire_bytes(key: &str, refresh: u64) -> Vec<u8> {
    format!(
        r#"{{"type": "EXPIRE", "key_str": "{key}", "key_platform": "{PLATFORM}", "refresh_time": {refresh}, "requester_id": 1}}"#
    )
    .into_bytes()
}

/// The index of the serving process: the one whose log says it took the
/// lease, while every other one stands by.
fn leader(serves: &[Serve], limit: Duration) -> Option<usize> {
    let until = Instant::now() + limit;
    loop {
        let serving: Vec<usize> = (0..serves.len())
            .filter(|&i| serves[i].log().contains(SERVING))
            .collect();
        if let [one] = serving[..] {
            return Some(one);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The state as a fresh `keyman serve` reads it from the broker: the keys
/// and the invalid keys of the platform.
fn saved_view(broker: &Broker) -> (Option<Vec<String>>, Option<Vec<String>>) {
    let mut serve = Serve::start(broker);
    assert!(wait_ack(broker, WAIT), "no fresh serve:\n{}", serve.log());
    let mut keys = list_keys(broker, PLATFORM, WAIT);
    let mut invalid = list(broker, "LIST_INVALID_KEYS", Some(PLATFORM), WAIT);
    for l in [&mut keys, &mut invalid].into_iter().flatten() {
        l.sort();
    }
    signal(serve.pid(), "KILL");
    serve.wait_exit(WAIT);
    (keys, invalid)
}

fn split_brain_old_leader_neither_answers_nor_writes(broker: &Broker) {
    let mut serves = vec![
        Serve::start_with(broker, &STANDBY),
        Serve::start_with(broker, &STANDBY),
    ];
    assert!(wait_ack(broker, WAIT), "no orchestrator answers");
    let old = leader(&serves, WAIT).expect("one leader");
    let new = 1 - old;
    let (a, b, ghost) = (valid_key(0), valid_key(1), valid_key(2));
    let mut raw = Raw::connect(broker);
    raw.publish(ANN, &publish_bytes(PLATFORM, &a));
    assert!(wait_ack(broker, WAIT));
    assert!(wait_saved(broker, &a, WAIT), "the key was never saved");

    // A pool of some size (so a save takes a while), then changes streaming
    // in while the leader is paused: it stops with a save queued or under way.
    let preload: Vec<(String, Vec<u8>)> = (0..20_000)
        .map(|i| {
            (
                ANN.to_owned(),
                publish_bytes(
                    PLATFORM,
                    &format!("ghp_split_pre_{i:05}_0123456789abcdefghij"),
                ),
            )
        })
        .collect();
    for batch in preload.chunks(2_000) {
        raw.publish_all(batch);
        assert!(wait_ack(broker, WAIT));
    }
    let churning = AtomicBool::new(true);
    let churned = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut raw = Raw::connect(broker);
            let mut i = 0;
            while churning.load(Ordering::SeqCst) && i < 100_000 {
                raw.publish(
                    ANN,
                    &publish_bytes(
                        PLATFORM,
                        &format!("ghp_split_churn_{i:06}_0123456789abcdefghi"),
                    ),
                );
                churned.store(i, Ordering::SeqCst);
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let until = Instant::now() + WAIT;
        while churned.load(Ordering::SeqCst) < 300 && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The leader pauses past its lease.
        signal(serves[old].pid(), "STOP");
        churning.store(false, Ordering::SeqCst);
    });
    let paused = Instant::now();
    // Sent while nobody serves: the paused leader reads it when it wakes up.
    raw.publish(ANN, &publish_bytes(PLATFORM, &ghost));
    assert!(
        wait_log(&serves[new], SERVING, 1, WAIT),
        "the standby never took over:\n{}",
        serves[new].log()
    );
    let took = paused.elapsed();
    assert!(wait_ack(broker, WAIT), "the new leader does not answer");
    // The new leader changes the state: a new key, and `a` rate limited.
    let refresh = keyman::service::wall_clock().as_secs() + 3600;
    raw.publish(ANN, &publish_bytes(PLATFORM, &b));
    raw.publish(REQ, &expire_bytes(&a, refresh));
    raw.publish(REQ, &invalidate_bytes(&ghost));
    assert!(wait_ack(broker, WAIT));
    // NEWs while the old leader is still paused: answered by the new one.
    let ids: Vec<String> = (0..20).map(|i| (5_000_000 + i).to_string()).collect();
    let replies = RawSub::prefixed(broker, &format!("{REQ}-"), &ids);
    for id in &ids[..10] {
        raw.publish(REQ, &new_bytes(PLATFORM, id));
    }
    let mut new_view = (
        list_keys(broker, PLATFORM, WAIT),
        list(broker, "LIST_INVALID_KEYS", Some(PLATFORM), WAIT),
    );
    for l in [&mut new_view.0, &mut new_view.1].into_iter().flatten() {
        l.sort();
    }
    assert!(
        wait_saved(broker, &b, WAIT),
        "the new leader never saved its state"
    );

    // The old leader wakes up.
    signal(serves[old].pid(), "CONT");
    let woke_log_start = serves[old].log().len();
    for id in &ids[10..] {
        raw.publish(REQ, &new_bytes(PLATFORM, id));
    }
    // Every NEW gets exactly one reply, the new leader's; the old one answers
    // nothing. Read until every NEW has its reply (at most 15 s, for a loaded
    // machine), then one second more for any second or late reply.
    let mut answers: HashMap<String, Vec<String>> = HashMap::new();
    let mut until = Instant::now() + Duration::from_secs(15);
    let mut all_in = false;
    while Instant::now() < until {
        if !all_in && ids.iter().all(|id| answers.contains_key(id)) {
            all_in = true;
            until = Instant::now() + Duration::from_secs(1);
        }
        if let Some((channel, payload, _)) = replies.next(Duration::from_millis(100)) {
            let id = channel
                .strip_prefix(&format!("{REQ}-"))
                .unwrap_or("")
                .to_owned();
            answers
                .entry(id)
                .or_default()
                .push(String::from_utf8_lossy(&payload).into_owned());
        }
    }
    let old_log = serves[old].log();
    let woke_log = old_log.get(woke_log_start..).unwrap_or("").to_owned();
    // Both stop at once, without a final save, and a fresh process reads what was saved.
    for s in &mut serves {
        signal(s.pid(), "KILL");
        s.wait_exit(WAIT);
    }
    drop(serves);
    let saved = saved_view(broker);

    // A fresh key of the new leader: listed by it, neither `a` (rate
    // limited) nor the ghost (invalidated).
    let fresh: BTreeSet<String> = new_view
        .0
        .iter()
        .flatten()
        .filter(|k| **k != a && **k != ghost)
        .cloned()
        .collect();
    let unanswered: Vec<&String> = ids.iter().filter(|id| !answers.contains_key(*id)).collect();
    let twice: Vec<(&String, &Vec<String>)> = answers.iter().filter(|(_, r)| r.len() > 1).collect();
    let stale: Vec<&String> = answers
        .values()
        .flatten()
        .filter(|r| {
            let key = serde_json::from_str::<serde_json::Value>(r)
                .ok()
                .and_then(|v| v.get("key").and_then(|k| k.as_str()).map(str::to_owned));
            !key.is_some_and(|k| fresh.contains(&k))
        })
        .collect();
    let differences =
        |x: &Option<Vec<String>>, y: &Option<Vec<String>>| -> (usize, Vec<String>, Vec<String>) {
            let x: BTreeSet<String> = x.iter().flatten().cloned().collect();
            let y: BTreeSet<String> = y.iter().flatten().cloned().collect();
            (
                x.len(),
                x.difference(&y).take(3).cloned().collect(),
                y.difference(&x).take(3).cloned().collect(),
            )
        };
    let keys_diff = differences(&new_view.0, &saved.0);
    let invalid_diff = differences(&new_view.1, &saved.1);
    println!(
        "split brain on {}: standby took over {took:?} after SIGSTOP; after SIGCONT: {} NEWs unanswered, {} answered twice, {} stale replies; new leader's keys vs saved keys (count, only new leader's, only saved): {keys_diff:?}, invalid keys: {invalid_diff:?}",
        broker.url(),
        unanswered.len(),
        twice.len(),
        stale.len()
    );
    assert!(
        unanswered.is_empty() && twice.is_empty() && stale.is_empty(),
        "unanswered {unanswered:?}, answered twice {twice:?}, stale replies {stale:?}; the old leader logged after SIGCONT:\n{}",
        grep(&woke_log, &["lease", "serving", "stand", "ready", "save"])
    );
    assert!(
        saved == new_view,
        "the saved state is not the new leader's: keys {keys_diff:?}, invalid keys {invalid_diff:?}; the old leader logged after SIGCONT:\n{}",
        grep(&woke_log, &["lease", "serving", "stand", "ready", "save"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_old_leader_neither_answers_nor_writes_over_redis() {
    let _alone = crate::ALONE.lock().await;
    let broker = Broker::redis();
    block_in_place(|| split_brain_old_leader_neither_answers_nor_writes(&broker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_old_leader_neither_answers_nor_writes_over_nats() {
    let _alone = crate::ALONE.lock().await;
    let broker = Broker::nats();
    block_in_place(|| split_brain_old_leader_neither_answers_nor_writes(&broker));
}
