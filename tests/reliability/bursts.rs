//! Bursts pipelined at once, one PUBLISH per message as Augur's clients send
//! them: nothing may be dropped (issue 9, item 0; lists of any size, item 6).

use crate::support::faults::{REQ, Raw, RawSub, grep, list_keys, new_bytes, plain, publish_bytes};
use crate::support::{Broker, Serve, client_config, ready_admin};
use keyman::service::{KeyAdmin, KeyPublisher};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

const BURST_NEWS: usize = 20_000;
const KEYS: usize = 100_000;
/// The keys published before a restart (each to the four platforms).
#[allow(dead_code)] // Used by the state tests, which include this file too.
pub const KEYS_ON_RESTART: usize = 100_000;
/// The four platforms Augur publishes every key to.
pub const PLATFORMS: [&str; 4] = [
    "github_rest",
    "github_graphql",
    "github_search",
    "gitlab_rest",
];
/// How long a burst may take to be answered or applied in full.
const BURST_LIMIT: Duration = Duration::from_secs(90);
/// A gap with no reply at all after which the rest counts as lost.
const SILENCE: Duration = Duration::from_secs(10);

/// Redis's limit on what it buffers for a pub/sub subscriber, raised as the
/// README tells operators to for bursts like the 400 000 PUBLISHes: keyman
/// reads at its own pace and leaves the rest to Redis, and by default
/// (`pubsub 32mb 8mb 60`) Redis cuts off a subscriber with 32 MB waiting,
/// about 220 000 PUBLISHes of Augur's size; a burst of 400 000 pipelined at
/// once is sent faster than keyman applies it and exceeds that. The 20 000
/// NEWs (3 MB) run with the default limit.
pub const REDIS_PUBSUB_LIMIT: &str = "pubsub 256mb 128mb 60";

/// A redis-server with the raised pub/sub output buffer limit.
pub fn redis_for_bursts() -> Broker {
    Broker::Redis(
        keyman_transport::testing::RedisServer::start_with_args(&[
            "--client-output-buffer-limit",
            REDIS_PUBSUB_LIMIT,
        ])
        .expect("start redis-server"),
    )
}

/// A token-like key, the same length as a GitHub token.
pub fn key(i: usize) -> String {
    format!("ghp_burst{i:07}_abcdefghijklmnopqrstuvwxyz")
}

async fn burst_of_news_answered_once_each(broker: Broker) {
    let serve = Serve::start(&broker);
    let admin = ready_admin(broker.bus().await).await;
    let the_key = "ghp_burst_only_key_0123456789abcdefghij";
    admin.publish("p", the_key).await.expect("publish");
    admin.ping().await.expect("ping");
    let expected = serde_json::json!({ "key": the_key });

    let (answered, duplicates, wrong, sent_in, took) = block_in_place(|| {
        let ids: Vec<String> = (0..BURST_NEWS)
            .map(|i| (3_000_000 + i).to_string())
            .collect();
        let replies = RawSub::prefixed(&broker, &format!("{REQ}-"), &ids);
        let burst: Vec<(String, Vec<u8>)> = ids
            .iter()
            .map(|id| (REQ.to_owned(), new_bytes("p", id)))
            .collect();
        let mut raw = Raw::connect(&broker);
        let start = Instant::now();
        raw.publish_all(&burst);
        let sent_in = start.elapsed();
        let mut answers: HashMap<String, usize> = HashMap::new();
        let mut wrong = Vec::new();
        let mut last = start;
        while answers.len() < BURST_NEWS && start.elapsed() < BURST_LIMIT {
            let Some((channel, payload, at)) = replies.next(SILENCE) else {
                break;
            };
            last = at;
            let id = channel
                .strip_prefix(&format!("{REQ}-"))
                .unwrap_or("")
                .to_owned();
            let reply = serde_json::from_slice::<serde_json::Value>(&payload).ok();
            if reply.as_ref() != Some(&expected) && wrong.len() < 5 {
                wrong.push(String::from_utf8_lossy(&payload).into_owned());
            }
            *answers.entry(id).or_default() += 1;
        }
        let took = last - start;
        // A second reply to any of them would come right behind the first ones.
        while let Some((channel, _, _)) = replies.next(Duration::from_secs(1)) {
            let id = channel
                .strip_prefix(&format!("{REQ}-"))
                .unwrap_or("")
                .to_owned();
            *answers.entry(id).or_default() += 1;
        }
        let answered = answers.len();
        let duplicates = answers.values().filter(|n| **n > 1).count();
        (answered, duplicates, wrong, sent_in, took)
    });
    let log = serve.log();
    println!(
        "burst of {BURST_NEWS} NEWs on {}: sent in {sent_in:?}, {answered} answered, last reply after {took:?}, {duplicates} answered more than once",
        broker.url()
    );
    assert!(wrong.is_empty(), "replies other than the key: {wrong:?}");
    assert_eq!(
        (answered, duplicates),
        (BURST_NEWS, 0),
        "{answered} of {BURST_NEWS} NEWs answered ({duplicates} more than once) within {took:?}; serve logged:\n{}",
        grep(&log, &["fell behind", "dropped", "lost", "ERROR", "WARN"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_20000_news_is_answered_once_each_over_redis() {
    // Redis's default output buffer limit: the burst waits in Redis, within it.
    burst_of_news_answered_once_each(Broker::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_20000_news_is_answered_once_each_over_nats() {
    burst_of_news_answered_once_each(Broker::nats()).await;
}

/// Every key on every platform, in the order Augur's restart flow publishes
/// them (each key to the four platforms in turn).
pub fn publishes(keys: std::ops::Range<usize>) -> Vec<(String, Vec<u8>)> {
    keys.flat_map(|i| {
        let k = key(i);
        PLATFORMS.map(|p| (crate::support::faults::ANN.to_owned(), publish_bytes(p, &k)))
    })
    .collect()
}

/// The keys `KeyPublisher::keys` lists per platform: the count, or the
/// error (the platforms after the first error are not asked).
pub async fn listed(broker: &Broker) -> Vec<(String, Result<usize, String>)> {
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
pub fn listed_raw(broker: &Broker) -> Vec<(String, Option<usize>)> {
    PLATFORMS
        .iter()
        .map(|p| {
            let n = list_keys(broker, p, Duration::from_secs(15)).map(|k| k.len());
            ((*p).to_owned(), n)
        })
        .collect()
}

async fn burst_of_publishes_all_applied(broker: Broker) {
    let _alone = crate::ALONE.lock().await;
    let serve = Serve::start(&broker);
    let bus = broker.bus().await;
    ready_admin(bus.clone()).await;
    let admin = KeyPublisher::connect(bus, client_config(Duration::from_secs(60)))
        .await
        .expect("connect publisher");
    let burst = publishes(0..KEYS);
    let (sent_in, start) = block_in_place(|| {
        let mut raw = Raw::connect(&broker);
        let start = Instant::now();
        raw.publish_all(&burst);
        (start.elapsed(), start)
    });
    admin
        .ping()
        .await
        .expect("the orchestrator answers after the burst");
    let handled_in = start.elapsed();
    let raw_counts = block_in_place(|| listed_raw(&broker));
    let counts = listed(&broker).await;
    let listed_in = start.elapsed();
    println!(
        "burst of {} PUBLISHes on {}: sent in {sent_in:?}, handled (ping answered) after {handled_in:?}, listed after {listed_in:?}; raw LIST_KEYS counts {raw_counts:?}; KeyPublisher::keys {counts:?}",
        burst.len(),
        broker.url()
    );
    let log = serve.log();
    for (p, n) in &raw_counts {
        assert_eq!(
            *n,
            Some(KEYS),
            "{p}: LIST_KEYS named {n:?} of {KEYS} keys; serve logged:\n{}",
            grep(&log, &["fell behind", "dropped", "lost", "ERROR"])
        );
    }
    for (p, n) in &counts {
        assert_eq!(n, &Ok(KEYS), "{p}: KeyPublisher::keys gave {n:?}");
    }
    // And `keyman keys`, as an operator lists them.
    let started = Instant::now();
    let lines = block_in_place(|| cli_keys(&broker, PLATFORMS[0]));
    println!(
        "keyman keys --platform {} on {}: {lines:?} lines in {:?}",
        PLATFORMS[0],
        broker.url(),
        started.elapsed()
    );
    assert_eq!(lines, Ok(KEYS), "keyman keys --platform {}", PLATFORMS[0]);
}

/// How many lines `keyman keys --platform <platform>` prints, or why it failed.
fn cli_keys(broker: &Broker, platform: &str) -> Result<usize, String> {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keyman"))
        .args(["keys", "--platform", platform])
        .arg(broker.url_flag())
        .arg(broker.url())
        .env_remove("REDIS_CONN_STRING")
        .env_remove("KEYMAN_NATS_URL")
        .output()
        .map_err(|err| format!("cannot run keyman: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).lines().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_400000_publishes_on_four_platforms_is_all_applied_over_redis() {
    burst_of_publishes_all_applied(redis_for_bursts()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_400000_publishes_on_four_platforms_is_all_applied_over_nats() {
    burst_of_publishes_all_applied(Broker::nats()).await;
}

/// What serve logs when Redis cut its subscription off, and when it is back.
const CUT_OFF: &str = "Redis subscription lost its connection";
const BACK: &str = "Redis subscription back";
/// What serve logs once it is subscribed.
const READY: &str = "orchestrator ready";

/// The number after `name=` in the first line of `log` that contains `line`.
fn logged_count(log: &str, line: &str, name: &str) -> Option<usize> {
    let line = log.lines().map(plain).find(|l| l.contains(line))?;
    let (_, rest) = line.split_once(&format!("{name}="))?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_beyond_redis_limit_is_cut_off_logged_with_a_count_and_serving_goes_on() {
    // A small limit, so Redis cuts keyman off however fast it reads.
    let broker = Broker::Redis(
        keyman_transport::testing::RedisServer::start_with_args(&[
            "--client-output-buffer-limit",
            "pubsub 2mb 1mb 60",
        ])
        .expect("start redis-server"),
    );
    let serve = Serve::start(&broker);
    // Subscribed once it logs that it is ready; nothing but the burst comes
    // on its connection before the gap, so every message it counts is a PUBLISH.
    let deadline = Instant::now() + BURST_LIMIT;
    while !serve.log().contains(READY) {
        assert!(
            Instant::now() < deadline,
            "serve never got ready:\n{}",
            serve.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let burst = publishes(0..KEYS);
    block_in_place(|| Raw::connect(&broker).publish_all(&burst));

    while !serve.log().contains(BACK) {
        assert!(
            Instant::now() < deadline,
            "serve never logged that its subscription is back; it logged:\n{}",
            grep(&serve.log(), &[CUT_OFF, "WARN", "ERROR"])
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ready_admin(broker.bus().await).await;
    let log = serve.log();
    let received = logged_count(&log, CUT_OFF, "received");
    let applied: usize = block_in_place(|| listed_raw(&broker))
        .iter()
        .map(|(_, n)| n.unwrap_or(0))
        .sum();
    println!(
        "burst of {} PUBLISHes on {} with pubsub 2mb 1mb 60: serve received {received:?} before Redis cut it off, {applied} applied; it logged:\n{}",
        burst.len(),
        broker.url(),
        grep(&log, &[CUT_OFF, BACK])
    );
    let received = received.expect("the cut-off is logged with the count of messages received");
    assert!(
        grep(&log, &[CUT_OFF]).contains("client-output-buffer-limit pubsub"),
        "the log names the likely cause:\n{}",
        grep(&log, &[CUT_OFF])
    );
    assert!(received < burst.len(), "Redis cut the subscriber off");
    // Nothing keyman read was dropped: every PUBLISH received before the
    // gap is applied (and those after it).
    assert!(
        (received..burst.len()).contains(&applied),
        "{applied} PUBLISHes applied, {received} received before the gap"
    );
}
