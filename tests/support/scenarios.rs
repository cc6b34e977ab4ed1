//! End-to-end scenarios against `keyman serve`, one body for every transport.

use super::{Broker, Serve, client_config, next_text, ready_admin};
use keyman::KeyError;
use keyman::service::{KeyAdmin, KeyClient, KeyPublisher, KeySource};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

mod restart;
#[allow(unused_imports)] // Each file that declares `mod support;` uses only part of it.
pub use restart::*;

const ANN: &str = "augur-oauth-announce";
const REQ: &str = "worker-oath-request";
const WAIT: Duration = Duration::from_secs(10);

/// Python's `json.dumps` style: `", "` and `": "` separators.
fn dumps(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let items: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), dumps(v)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(a) => {
            let items: Vec<String> = a.iter().map(dumps).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// Every row of the protocol, with the exact bytes Augur's Python code sends,
/// replies read as text the way Augur's clients read them.
pub async fn augur_protocol_rows(broker: Broker) {
    let bus = broker.bus().await;
    let pid = 4711;
    let mut worker_in = bus
        .subscribe(&[format!("{REQ}-{pid}")])
        .await
        .expect("subscribe worker replies");
    let mut admin_in = bus
        .subscribe(&[format!("{ANN}-{pid}")])
        .await
        .expect("subscribe admin replies");
    let send = |channel: &'static str, v: Value| {
        let bus = bus.clone();
        async move {
            bus.publish(channel, dumps(&v).as_bytes())
                .await
                .expect("publish")
        }
    };

    // KeyPublisher.wait(republish=True): ACK every 0.1 s until the orchestrator is up.
    let ack = json!({"type": "ACK", "requester_id": pid});
    send(ANN, ack.clone()).await;
    let mut serve = Serve::start(&broker);
    let started = Instant::now();
    let acked = loop {
        if let Some(text) = next_text(&mut admin_in, Duration::from_millis(100)).await {
            break text;
        }
        assert!(started.elapsed() < WAIT, "no ACK: {}", serve.log());
        send(ANN, ack.clone()).await;
    };
    assert_eq!(acked, "", "the ACK is an empty payload");
    // Drain the answers to the other ACKs still on their way.
    send(ANN, json!({"type": "LIST_PLATFORMS", "requester_id": pid})).await;
    loop {
        let t = next_text(&mut admin_in, WAIT).await.expect("list reply");
        if !t.is_empty() {
            assert_eq!(t, "[]");
            break;
        }
    }

    let key = "ghp_0123456789abcdefghijklmnopqrstuvwxyz";
    let publish = json!({"type": "PUBLISH", "key_str": key, "key_platform": "github_rest"});
    send(ANN, publish.clone()).await;
    send(ANN, publish.clone()).await; // duplicate: idempotent

    let new =
        |platform: &str| json!({"key_platform": platform, "type": "NEW", "requester_id": pid});
    let mut ask = async |v: Value| -> Value {
        send(REQ, v).await;
        let text = next_text(&mut worker_in, WAIT)
            .await
            .expect("a reply to NEW");
        serde_json::from_str(&text).expect("the reply is JSON")
    };
    assert_eq!(ask(new("github_rest")).await, json!({"key": key}));

    // Unknown platform: an error (ext) instead of silence.
    let r = ask(new("gitlab_rest")).await;
    assert_eq!(r["code"], "unknown_platform", "{r}");
    assert!(
        r["error"]
            .as_str()
            .is_some_and(|e| e.contains("gitlab_rest"))
    );

    // EXPIRE (no reply), then NEW answers an accurate wait.
    let now = keyman::service::wall_clock().as_secs();
    send(
        REQ,
        json!({"type": "EXPIRE", "key_str": key, "key_platform": "github_rest", "refresh_time": now + 60, "requester_id": pid}),
    )
    .await;
    let r = ask(new("github_rest")).await;
    let wait = r["wait"].as_u64().unwrap_or_else(|| panic!("a wait: {r}"));
    assert!((55..=61).contains(&wait), "wait {wait}");

    // Bad input of every kind: dropped, logged, nothing sent, the service goes on.
    let bad: Vec<(&str, Vec<u8>)> = vec![
        (REQ, b"42".to_vec()),
        (ANN, b"42".to_vec()),
        (REQ, b"{not json".to_vec()),
        (REQ, dumps(&json!({"type": "NEW", "key_platform": "github_rest"})).into_bytes()),
        (REQ, dumps(&json!({"type": "BOGUS", "requester_id": pid})).into_bytes()),
        (REQ, dumps(&json!({"type": "EXPIRE", "key_str": key, "key_platform": "github_rest", "refresh_time": "soon", "requester_id": pid})).into_bytes()),
        (ANN, dumps(&json!({"type": "ACK"})).into_bytes()),
        (ANN, dumps(&json!({"type": "PUBLISH", "key_str": 7, "key_platform": "github_rest"})).into_bytes()),
        (ANN, vec![b'x'; 1 << 20]),
        (REQ, vec![b'['; 1 << 20]),
    ];
    for (channel, payload) in &bad {
        bus.publish(channel, payload)
            .await
            .expect("publish bad input");
    }

    // A second key; the first is still rate limited, so NEW hands out the second.
    let key2 = "ghp_zyxwvutsrqponmlkjihgfedcba9876543210";
    send(
        ANN,
        json!({"type": "PUBLISH", "key_str": key2, "key_platform": "github_rest"}),
    )
    .await;
    assert_eq!(ask(new("github_rest")).await, json!({"key": key2}));

    // LIST_* (the duplicate publish is listed once; the expired key is listed).
    let mut list = async |v: Value| -> Value {
        send(ANN, v).await;
        let text = next_text(&mut admin_in, WAIT).await.expect("a list reply");
        serde_json::from_str(&text).expect("JSON")
    };
    assert_eq!(
        list(json!({"type": "LIST_PLATFORMS", "requester_id": pid})).await,
        json!(["github_rest"])
    );
    let keys =
        list(json!({"type": "LIST_KEYS", "requester_id": pid, "key_platform": "github_rest"}))
            .await;
    let mut keys: Vec<String> = serde_json::from_value(keys).expect("a list of keys");
    keys.sort();
    let mut expected = vec![key.to_string(), key2.to_string()];
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(
        list(json!({"type": "LIST_KEYS", "requester_id": pid, "key_platform": "nope"})).await,
        json!({"status": "unknown platform: nope"})
    );
    assert_eq!(
        list(json!({"type": "LIST_INVALID_KEYS", "requester_id": pid, "key_platform": "nope"}))
            .await,
        json!({"status": "unknown platform: nope"})
    );

    // INVALIDATE both: never handed out again; NEW says there are no keys.
    for k in [key, key2] {
        send(
            REQ,
            json!({"type": "INVALIDATE", "key_str": k, "key_platform": "github_rest", "requester_id": pid}),
        )
        .await;
    }
    let r = ask(new("github_rest")).await;
    assert_eq!(r["code"], "no_keys", "{r}");
    let invalid = list(
        json!({"type": "LIST_INVALID_KEYS", "requester_id": pid, "key_platform": "github_rest"}),
    )
    .await;
    assert_eq!(invalid.as_array().map(Vec::len), Some(2));

    // PUBLISH of an invalid key brings it back and takes it off the invalid list.
    send(ANN, publish.clone()).await;
    assert_eq!(ask(new("github_rest")).await, json!({"key": key}));
    assert_eq!(
        list(
            json!({"type": "LIST_INVALID_KEYS", "requester_id": pid, "key_platform": "github_rest"})
        )
        .await,
        json!([key2])
    );

    // UNPUBLISH: gone from rotation and listing.
    send(
        ANN,
        json!({"type": "UNPUBLISH", "key_str": key, "key_platform": "github_rest"}),
    )
    .await;
    let keys =
        list(json!({"type": "LIST_KEYS", "requester_id": pid, "key_platform": "github_rest"}))
            .await;
    assert_eq!(keys, json!([]));

    // No stray reply was sent for any bad input: the channels are empty now.
    assert_eq!(
        next_text(&mut worker_in, Duration::from_millis(200)).await,
        None
    );

    // SHUTDOWN: the orchestrator exits cleanly.
    send(ANN, json!({"type": "SHUTDOWN"})).await;
    let status = serve
        .wait_exit(WAIT)
        .expect("keyman serve exits after SHUTDOWN");
    assert!(status.success(), "exit status {status}: {}", serve.log());
    let log = serve.log();
    assert!(
        !log.contains(key) && !log.contains(key2),
        "a whole key in the log:\n{log}"
    );
    assert!(
        log.contains("dropped a message"),
        "bad input is logged:\n{log}"
    );
}

/// The broker is killed while 32 clients loop on request/expire, and restarted
/// on the same port: the orchestrator keeps running, every client gets keys
/// again within 5 s of the restart, and no call outlives its deadline.
pub async fn broker_restart_while_clients_loop(mut broker: Broker) {
    let mut serve = Serve::start(&broker);
    let admin = ready_admin(broker.bus().await).await;
    for i in 0..8 {
        admin
            .publish("p", &format!("key-{i:02}-abcdefghijklmnop"))
            .await
            .expect("publish");
    }
    admin.ping().await.expect("ping");

    let deadline = Duration::from_secs(2);
    let slack = Duration::from_millis(500);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let last_ok: Arc<Vec<AtomicU64>> = Arc::new((0..32).map(|_| AtomicU64::new(0)).collect());
    let epoch = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let client = KeyClient::connect(broker.bus().await, client_config(deadline))
            .await
            .expect("connect client");
        let stop = stop.clone();
        let last_ok = last_ok.clone();
        tasks.push(tokio::spawn(async move {
            let mut longest = Duration::ZERO;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let result = if n % 4 == 3 {
                    let reset = keyman::Timestamp::from_millis(
                        keyman::service::wall_clock().as_millis() + 300,
                    );
                    client.expire("p", "key-00-abcdefghijklmnop", reset).await
                } else {
                    client.request("p").await
                };
                longest = longest.max(started.elapsed());
                match result {
                    Ok(_) => {
                        last_ok[i].store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed)
                    }
                    Err(KeyError::Timeout(_))
                    | Err(KeyError::Disconnected(_))
                    | Err(KeyError::NoOrchestrator(_)) => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(other) => panic!("client {i}: unexpected error {other}"),
                }
                n += 1;
            }
            longest
        }));
    }
    // Let every client succeed once, then kill the broker.
    let until = Instant::now() + WAIT;
    while last_ok.iter().any(|t| t.load(Ordering::Relaxed) == 0) {
        assert!(
            Instant::now() < until,
            "not every client got a key before the fault"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        serve.is_running(),
        "keyman serve exited while the broker was down"
    );
    broker.restart();
    let restarted = epoch.elapsed().as_millis() as u64;

    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let behind = last_ok
            .iter()
            .filter(|t| t.load(Ordering::Relaxed) <= restarted)
            .count();
        if behind == 0 {
            break;
        }
        assert!(
            Instant::now() < until,
            "{behind} of 32 clients got no key within 5 s of the restart\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let longest = t.await.expect("client task");
        assert!(
            longest <= deadline + slack,
            "a call took {longest:?}, past its deadline of {deadline:?}"
        );
    }
    assert!(serve.is_running(), "keyman serve exited");
}

/// A flood of bad input on both channels while clients are served: every
/// client call still succeeds and the orchestrator's memory stays bounded.
pub async fn flood_of_bad_input(broker: Broker) {
    let serve = Serve::start(&broker);
    let bus = broker.bus().await;
    let admin = ready_admin(bus.clone()).await;
    admin
        .publish("p", "key-flood-abcdefghijkl")
        .await
        .expect("publish");
    admin.ping().await.expect("ping");
    let rss_before = serve.rss_kib();

    let flood = {
        let bus = broker.bus().await;
        tokio::spawn(async move {
            let big = vec![b'{'; 1 << 20];
            let bad: Vec<Vec<u8>> = vec![
                b"not json".to_vec(),
                b"42".to_vec(),
                br#"{"type": "NEW"}"#.to_vec(),
                br#"{"type": 5, "requester_id": 1}"#.to_vec(),
                br#"{"type": "BOGUS", "requester_id": 1}"#.to_vec(),
                br#"{"type": "EXPIRE", "key_str": "k", "key_platform": "p", "refresh_time": "x"}"#
                    .to_vec(),
                br#"{"type": "ACK"}"#.to_vec(),
                br#"{"type": "LIST_KEYS"}"#.to_vec(),
                br#"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]"#
                    .to_vec(),
            ];
            for round in 0..60 {
                for channel in [ANN, REQ] {
                    for b in &bad {
                        let _ = bus.publish(channel, b).await;
                    }
                    if round % 3 == 0 {
                        let _ = bus.publish(channel, &big).await;
                    }
                }
            }
        })
    };
    let mut clients = Vec::new();
    for _ in 0..8 {
        let c = KeyClient::connect(bus.clone(), client_config(Duration::from_secs(10)))
            .await
            .expect("client");
        clients.push(tokio::spawn(async move {
            for _ in 0..25 {
                c.request("p")
                    .await
                    .expect("every call succeeds during the flood");
            }
        }));
    }
    for c in clients {
        c.await.expect("client task");
    }
    flood.await.expect("flood");
    admin.ping().await.expect("the orchestrator still answers");
    let rss_after = serve.rss_kib();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "memory grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(serve.log().contains("dropped a message"));
}

/// SHUTDOWN while clients wait for a key: the orchestrator exits 0 and the
/// waiting clients get a timeout (or disconnect) error, not a hang.
pub async fn shutdown_while_clients_wait(broker: Broker) {
    let mut serve = Serve::start(&broker);
    let bus = broker.bus().await;
    let admin = ready_admin(bus.clone()).await;
    admin
        .publish("p", "key-only-abcdefghijkl")
        .await
        .expect("publish");
    let worker = KeyClient::connect(bus.clone(), client_config(Duration::from_secs(3)))
        .await
        .expect("client");
    let key = worker.request("p").await.expect("a key");
    // Rate limit the only key for a minute: the next requests must wait.
    let reset = keyman::Timestamp::from_secs(keyman::service::wall_clock().as_secs() + 60);
    let mut waiting = Vec::new();
    let first = {
        let w = worker.clone();
        let key = key.clone();
        tokio::spawn(async move { w.expire("p", &key, reset).await })
    };
    waiting.push(first);
    // Ask only once the key is known to be rate limited, so the requests wait.
    let until = Instant::now() + WAIT;
    while admin.status().await.expect("status")[0].expired == 0 {
        assert!(Instant::now() < until, "the key was never rate limited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for _ in 0..4 {
        let w = worker.clone();
        waiting.push(tokio::spawn(async move { w.request("p").await }));
    }
    // Nothing observable says the requests are held yet; give them a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin.shutdown().await.expect("send SHUTDOWN");
    let status = serve
        .wait_exit(WAIT)
        .expect("keyman serve exits after SHUTDOWN");
    assert!(status.success(), "exit status {status}");
    let started = Instant::now();
    for w in waiting {
        match w.await.expect("task") {
            Err(KeyError::Timeout(_))
            | Err(KeyError::Disconnected(_))
            | Err(KeyError::NoOrchestrator(_)) => {}
            other => panic!("a waiting client got {other:?}"),
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5), "clients hung");
}
