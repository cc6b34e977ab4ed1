//! Takeover with real `keyman serve --standby` processes:
//! no request is lost and none is answered twice.

use crate::support::faults::{
    ANN, REQ, Raw, RawSub, SERVING, grep, median_and_worst, new_bytes, publish_bytes, signal, tail,
    wait_ack, wait_log, wait_saved,
};
use crate::support::{Broker, Serve};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

const STANDBY: [&str; 3] = ["--standby", "--lease-ttl", "1"];
const CLIENTS: usize = 32;
const ROUNDS: usize = 10;
/// How long a client waits for its one reply before it counts as lost
/// (Augur's client would wait forever).
const REPLY_LIMIT: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(15);
const PLATFORM: &str = "github_rest";

fn valid_key(i: usize) -> String {
    format!("ghp_takeover_valid_{i}_0123456789abcdefghijkl")
}

fn invalid_key(i: usize) -> String {
    format!("ghp_takeover_invalid_{i}_0123456789abcdefghij")
}

fn invalidate_bytes(key: &str) -> Vec<u8> {
    format!(
        r#"{{"type": "INVALIDATE", "key_str": "{key}", "key_platform": "{PLATFORM}", "requester_id": 1}}"#
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

/// One NEW as Augur's worker sends it, and what came of it.
#[derive(Debug, Clone)]
struct Exchange {
    client: usize,
    sent: Instant,
    answered: Option<Instant>,
    reply: Option<String>,
}

/// A reply that came with no request outstanding: a second reply to one request.
#[derive(Debug, Clone)]
struct Extra {
    client: usize,
    reply: String,
}

fn takeover_answers_every_request(broker: &Broker) {
    let mut serves = vec![
        Serve::start_with(broker, &STANDBY),
        Serve::start_with(broker, &STANDBY),
    ];
    assert!(
        wait_ack(broker, WAIT),
        "no orchestrator answers:\n{}\n---\n{}",
        serves[0].log(),
        serves[1].log()
    );
    let valid: BTreeSet<String> = (0..8).map(valid_key).collect();
    let mut raw = Raw::connect(broker);
    for k in (0..8).map(valid_key).chain((0..2).map(invalid_key)) {
        raw.publish(ANN, &publish_bytes(PLATFORM, &k));
    }
    for k in (0..2).map(invalid_key) {
        raw.publish(REQ, &invalidate_bytes(&k));
    }
    assert!(wait_ack(broker, WAIT));
    assert!(
        wait_saved(broker, &invalid_key(1), WAIT) && wait_saved(broker, &valid_key(7), WAIT),
        "the keys were never saved"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let exchanges: Arc<Mutex<Vec<Exchange>>> = Arc::default();
    let extras: Arc<Mutex<Vec<Extra>>> = Arc::default();
    let mut takeovers = Vec::new();
    // What each process logged when it took over (read before it is killed).
    let mut taking_over: Vec<String> = Vec::new();
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (stop, exchanges, extras) = (stop.clone(), exchanges.clone(), extras.clone());
            scope.spawn(move || {
                let id = (4_000_000 + client).to_string();
                let replies = RawSub::channels(broker, &[format!("{REQ}-{id}")]);
                let mut raw = Raw::connect(broker);
                let new = new_bytes(PLATFORM, &id);
                let extra = |payload: Vec<u8>| {
                    extras.lock().expect("extras").push(Extra {
                        client,
                        reply: String::from_utf8_lossy(&payload).into_owned(),
                    });
                };
                while !stop.load(Ordering::SeqCst) {
                    while let Some((_, payload, _)) = replies.try_next() {
                        extra(payload);
                    }
                    let sent = Instant::now();
                    raw.publish(REQ, &new);
                    let got = replies.next(REPLY_LIMIT);
                    exchanges.lock().expect("exchanges").push(Exchange {
                        client,
                        sent,
                        answered: got.as_ref().map(|(_, _, at)| *at),
                        reply: got.map(|(_, p, _)| String::from_utf8_lossy(&p).into_owned()),
                    });
                }
                // A second reply to the last request would come right behind it.
                while let Some((_, payload, _)) = replies.next(Duration::from_secs(1)) {
                    extra(payload);
                }
            });
        }

        let answered_since = |t: Instant| {
            exchanges
                .lock()
                .expect("exchanges")
                .iter()
                .filter(|e| e.sent > t && e.answered.is_some())
                .count()
        };
        let mut served_since = Instant::now();
        for round in 0..ROUNDS {
            // The clients that are not stuck have been answered by the new leader.
            let until = Instant::now() + WAIT;
            while answered_since(served_since) < CLIENTS && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            let Some(serving) = leader(&serves, WAIT) else {
                stop.store(true, Ordering::SeqCst);
                panic!(
                    "round {round}: not exactly one serving process:\n{}",
                    serves
                        .iter()
                        .map(|s| tail(&s.log(), 10))
                        .collect::<Vec<_>>()
                        .join("\n---\n")
                );
            };
            // A probe that sends one-shot NEWs from fresh ids every 20 ms
            // after the kill: its first reply is the new leader's first answer.
            let probe_ids: Vec<String> = (0..1000)
                .map(|i| (6_000_000 + round * 1000 + i).to_string())
                .collect();
            let probe_channels: Vec<String> =
                probe_ids.iter().map(|id| format!("{REQ}-{id}")).collect();
            let probe = RawSub::channels(broker, &probe_channels);
            let mut probe_raw = Raw::connect(broker);
            let killed = Instant::now();
            signal(serves[serving].pid(), "KILL");
            let mut dead = serves.remove(serving);
            assert!(dead.wait_exit(WAIT).is_some(), "kill -9 did not end it");
            taking_over.push(grep(&dead.log(), &["taking over"]));
            drop(dead);
            serves.push(Serve::start_with(broker, &STANDBY));
            let mut first = None;
            for id in &probe_ids {
                probe_raw.publish(REQ, &new_bytes(PLATFORM, id));
                if let Some((_, _, at)) = probe.next(Duration::from_millis(20)) {
                    first = Some(at);
                    break;
                }
                if killed.elapsed() > WAIT {
                    break;
                }
            }
            match first {
                Some(at) => {
                    takeovers.push(at - killed);
                    served_since = at;
                }
                None => {
                    stop.store(true, Ordering::SeqCst);
                    panic!(
                        "round {round}: no answer within {WAIT:?} after the kill:\n{}",
                        serves
                            .iter()
                            .map(|s| tail(&s.log(), 10))
                            .collect::<Vec<_>>()
                            .join("\n---\n")
                    );
                }
            }
            let newest = serves.len() - 1;
            assert!(
                wait_log(&serves[newest], "standing by", 1, WAIT),
                "the new standby does not stand by:\n{}",
                serves[newest].log()
            );
        }
        stop.store(true, Ordering::SeqCst);
    });

    taking_over.extend(serves.iter().map(|s| grep(&s.log(), &["taking over"])));
    let exchanges = exchanges.lock().expect("exchanges").clone();
    let extras = extras.lock().expect("extras").clone();
    let lost: Vec<&Exchange> = exchanges.iter().filter(|e| e.answered.is_none()).collect();
    let bad: Vec<String> = exchanges
        .iter()
        .filter_map(|e| e.reply.as_ref())
        .filter(|r| {
            let key = serde_json::from_str::<serde_json::Value>(r)
                .ok()
                .and_then(|v| v.get("key").and_then(|k| k.as_str()).map(str::to_owned));
            !key.is_some_and(|k| valid.contains(&k))
        })
        .cloned()
        .collect();
    let (median, worst) = median_and_worst(&takeovers);
    println!(
        "takeover on {}: {} requests, {} without a reply within {REPLY_LIMIT:?}, {} second replies, {} replies that are not a valid key; kill -> first answer by the new leader over {} takeovers: median {median:?}, worst {worst:?} (all: {takeovers:?})",
        broker.url(),
        exchanges.len(),
        lost.len(),
        extras.len(),
        bad.len(),
        takeovers.len()
    );
    let mut lost_per_client: HashMap<usize, usize> = HashMap::new();
    for e in &lost {
        *lost_per_client.entry(e.client).or_default() += 1;
    }
    assert!(
        lost.is_empty() && extras.is_empty() && bad.is_empty(),
        "{} of {} requests never answered (clients: {lost_per_client:?}), {} second replies ({:?}), invalid replies: {:?}; the takeovers logged:\n{}",
        lost.len(),
        exchanges.len(),
        extras.len(),
        extras
            .iter()
            .take(3)
            .map(|e| (e.client, &e.reply))
            .collect::<Vec<_>>(),
        bad.iter().take(3).collect::<Vec<_>>(),
        taking_over.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_answers_every_request_over_redis() {
    let _alone = crate::ALONE.lock().await;
    let broker = Broker::redis();
    block_in_place(|| takeover_answers_every_request(&broker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_answers_every_request_over_nats() {
    let _alone = crate::ALONE.lock().await;
    let broker = Broker::nats();
    block_in_place(|| takeover_answers_every_request(&broker));
}
