//! Probes end to end over Redis: an orchestrator serving a `redis-server` this
//! test starts, probing a fake GitHub API on loopback with the HTTP prober,
//! and Augur-style clients sending Augur's exact bytes. What an Augur worker
//! notices: it never gets a revoked, drained or floored key.

#![cfg(all(feature = "redis", feature = "probe"))]

mod support;

use keyman::probe::ProbeConfig;
use keyman::quota::QuotaConfig;
use keyman::service::probe::{HttpProber, HttpProberConfig};
use keyman::service::{Bus, Orchestrator, Subscription};
use keyman::{EngineConfig, Reply};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use support::Broker;
use support::fake_api::{FakeApi, Token, unix_now, until};
use support::faults::{new_bytes, publish_bytes};
use support::next_text;

const ANN: &str = "augur-oauth-announce";
const REQ: &str = "worker-oath-request";
const WAIT: Duration = Duration::from_secs(20);
const REVOKED: &str = "ghp_e2eRevoked000000000000000000000000000";
const GOOD_A: &str = "ghp_e2eGoodA0000000000000000000000000000";
const GOOD_B: &str = "ghp_e2eGoodB0000000000000000000000000000";

/// An orchestrator probing `api`, serving `broker` until dropped.
struct Probing {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    bus: Arc<dyn Bus>,
}

impl Drop for Probing {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

async fn serve(broker: &Broker, api: &FakeApi, probe: ProbeConfig, quota: QuotaConfig) -> Probing {
    let bus = broker.bus().await;
    let prober = HttpProber::new(&HttpProberConfig {
        github_api: api.url(),
        gitlab_api: api.url(),
        ..HttpProberConfig::default()
    })
    .expect("a prober");
    let config = EngineConfig {
        probe: Some(probe),
        quota,
        ..EngineConfig::default()
    };
    let orchestrator = Orchestrator::new(bus.clone(), config).with_prober(Arc::new(prober));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = orchestrator
            .run_until(async {
                let _ = stopped.await;
            })
            .await;
    });
    let probing = Probing {
        stop: Some(stop),
        task,
        bus,
    };
    // Wait until it answers (as Augur's KeyPublisher.wait does, with ACKs).
    let mut acks = probing
        .bus
        .subscribe(&[format!("{ANN}-1")])
        .await
        .expect("subscribe");
    loop {
        probing
            .bus
            .publish(ANN, br#"{"type": "ACK", "requester_id": 1}"#)
            .await
            .expect("publish");
        if next_text(&mut acks, Duration::from_millis(200))
            .await
            .is_some()
        {
            break;
        }
    }
    probing
}

/// A worker that speaks as Augur's `KeyClient` does.
struct AugurWorker {
    bus: Arc<dyn Bus>,
    pid: u64,
    replies: Subscription,
}

impl AugurWorker {
    async fn new(bus: Arc<dyn Bus>, pid: u64) -> Self {
        let replies = bus
            .subscribe(&[format!("{REQ}-{pid}")])
            .await
            .expect("subscribe");
        Self { bus, pid, replies }
    }

    /// One NEW and its answer.
    async fn ask(&mut self, platform: &str) -> Reply {
        self.bus
            .publish(REQ, &new_bytes(platform, &self.pid.to_string()))
            .await
            .expect("publish");
        let text = next_text(&mut self.replies, WAIT).await.expect("an answer");
        Reply::decode(text.as_bytes(), usize::MAX)
            .expect("a reply")
            .reply
    }

    /// The key a NEW gets, asking again (quickly, not after `wait` seconds
    /// as Augur does) while the answer is a wait; `None` after `limit`.
    async fn key_within(&mut self, platform: &str, limit: Duration) -> Option<String> {
        let end = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < end {
            match self.ask(platform).await {
                Reply::Key(k) => return Some(k),
                Reply::Wait(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                other => panic!("{other:?}"),
            }
        }
        None
    }

    async fn invalidate(&self, platform: &str, key: &str) {
        let msg = format!(
            r#"{{"type": "INVALIDATE", "key_str": "{key}", "key_platform": "{platform}", "requester_id": {}}}"#,
            self.pid
        );
        self.bus
            .publish(REQ, msg.as_bytes())
            .await
            .expect("publish");
    }
}

async fn publish(bus: &Arc<dyn Bus>, platform: &str, key: &str) {
    bus.publish(ANN, &publish_bytes(platform, key))
        .await
        .expect("publish");
}

/// LIST_INVALID_KEYS, as Augur's `KeyPublisher.list_invalid_keys` sends it.
async fn invalid_keys(bus: &Arc<dyn Bus>, platform: &str) -> Vec<String> {
    let mut sub = bus
        .subscribe(&[format!("{ANN}-77")])
        .await
        .expect("subscribe");
    let msg = format!(
        r#"{{"type": "LIST_INVALID_KEYS", "key_platform": "{platform}", "requester_id": 77}}"#
    );
    bus.publish(ANN, msg.as_bytes()).await.expect("publish");
    let text = next_text(&mut sub, WAIT).await.expect("a list");
    serde_json::from_str(&text).expect("a JSON list")
}

fn quick() -> ProbeConfig {
    ProbeConfig {
        min_interval: Duration::from_millis(200),
        in_use_interval: Duration::from_millis(500),
        ..ProbeConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_published_with_two_good_ones_is_never_handed_to_augur_workers() {
    let broker = Broker::redis();
    let api = FakeApi::start().await;
    let now = api.api_now();
    let mut revoked = Token::good(now);
    revoked.revoked = true;
    api.add(REVOKED, revoked);
    api.add(GOOD_A, Token::good(now));
    api.add(GOOD_B, Token::good(now));
    let orchestrator = serve(
        &broker,
        &api,
        ProbeConfig::default(),
        QuotaConfig::default(),
    )
    .await;
    for key in [REVOKED, GOOD_A, GOOD_B] {
        publish(&orchestrator.bus, "github_rest", key).await;
    }
    let mut worker = AugurWorker::new(orchestrator.bus.clone(), 4711).await;
    let mut seen = BTreeSet::new();
    for _ in 0..200 {
        let key = worker.key_within("github_rest", WAIT).await.expect("a key");
        assert_ne!(key, REVOKED, "a revoked token was handed out");
        seen.insert(key);
    }
    assert_eq!(
        seen,
        BTreeSet::from([GOOD_A.to_string(), GOOD_B.to_string()])
    );
    assert_eq!(
        invalid_keys(&orchestrator.bus, "github_rest").await,
        [REVOKED]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidate_of_a_good_token_is_undone_and_of_a_revoked_one_stands() {
    let broker = Broker::redis();
    let api = FakeApi::start().await;
    api.add(GOOD_A, Token::good(api.api_now()));
    let orchestrator = serve(&broker, &api, quick(), QuotaConfig::default()).await;
    publish(&orchestrator.bus, "github_rest", GOOD_A).await;
    let mut worker = AugurWorker::new(orchestrator.bus.clone(), 4712).await;
    assert_eq!(
        worker.key_within("github_rest", WAIT).await.as_deref(),
        Some(GOOD_A)
    );
    // A worker says it is invalid; the platform says it is not: it comes back.
    worker.invalidate("github_rest", GOOD_A).await;
    let probes = api.probes_of(GOOD_A, "/rate_limit");
    assert!(
        until(WAIT, || api.probes_of(GOOD_A, "/rate_limit") > probes).await,
        "the INVALIDATE is confirmed with the platform"
    );
    assert_eq!(
        worker.key_within("github_rest", WAIT).await.as_deref(),
        Some(GOOD_A)
    );
    assert!(
        invalid_keys(&orchestrator.bus, "github_rest")
            .await
            .is_empty()
    );

    // Revoked since: the INVALIDATE stands.
    api.with_token(GOOD_A, |t| t.revoked = true);
    worker.invalidate("github_rest", GOOD_A).await;
    let mut listed = Vec::new();
    for _ in 0..100 {
        listed = invalid_keys(&orchestrator.bus, "github_rest").await;
        if !listed.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(listed, [GOOD_A]);
    assert!(matches!(
        worker.ask("github_rest").await,
        Reply::Error { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_drained_outside_keyman_is_withheld_after_its_next_probe_until_its_reset() {
    let broker = Broker::redis();
    let api = FakeApi::start().await;
    let now = api.api_now();
    // A's window resets in 8 s (a short window, for the test's sake).
    let reset = now + 8;
    let mut a = Token::good(now);
    a.set_quota(5000, reset);
    api.add(GOOD_A, a);
    api.add(GOOD_B, Token::good(now));
    let orchestrator = serve(&broker, &api, quick(), QuotaConfig::default()).await;
    publish(&orchestrator.bus, "github_rest", GOOD_A).await;
    publish(&orchestrator.bus, "github_rest", GOOD_B).await;
    let mut worker = AugurWorker::new(orchestrator.bus.clone(), 4713).await;
    let mut seen = BTreeSet::new();
    while seen.len() < 2 {
        seen.insert(worker.key_within("github_rest", WAIT).await.expect("a key"));
    }
    // The donor drains A with their own calls.
    api.with_token(GOOD_A, |t| t.set_quota(0, reset));
    let probes = api.probes_of(GOOD_A, "/rate_limit");
    assert!(until(WAIT, || api.probes_of(GOOD_A, "/rate_limit") > probes).await);
    // Once that answer is in, NEW no longer hands A out…
    let mut batches = 0;
    loop {
        let mut got = BTreeSet::new();
        for _ in 0..20 {
            got.insert(worker.key_within("github_rest", WAIT).await.expect("a key"));
        }
        if !got.contains(GOOD_A) {
            break;
        }
        batches += 1;
        assert!(batches < 50, "the drained token is still handed out");
    }
    for _ in 0..50 {
        assert_eq!(
            worker.key_within("github_rest", WAIT).await.as_deref(),
            Some(GOOD_B)
        );
    }
    assert!(unix_now() < reset, "checked before the reset");
    // …until the reset the platform gave.
    api.with_token(GOOD_A, |t| t.set_quota(5000, reset + 3600));
    let mut back_at = None;
    for _ in 0..2000 {
        if worker.key_within("github_rest", WAIT).await.as_deref() == Some(GOOD_A) {
            back_at = Some(unix_now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let at = back_at.expect("A is handed out again");
    assert!(at + 1 >= reset, "back at {at}, the reset is {reset}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_at_its_floor_is_not_handed_to_augur_workers() {
    let broker = Broker::redis();
    let api = FakeApi::start().await;
    let now = api.api_now();
    let mut low = Token::good(now);
    low.set_quota(40, now + 3600);
    api.add(GOOD_A, low);
    api.add(GOOD_B, Token::good(now));
    let quota = QuotaConfig {
        floors: [("github_rest".to_string(), 50)].into(),
        ..QuotaConfig::default()
    };
    let orchestrator = serve(&broker, &api, quick(), quota).await;
    publish(&orchestrator.bus, "github_rest", GOOD_A).await;
    publish(&orchestrator.bus, "github_rest", GOOD_B).await;
    let mut worker = AugurWorker::new(orchestrator.bus.clone(), 4714).await;
    for _ in 0..100 {
        assert_eq!(
            worker.key_within("github_rest", WAIT).await.as_deref(),
            Some(GOOD_B)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_skewed_api_clock_a_drained_token_refreshes_at_the_api_s_reset() {
    let broker = Broker::redis();
    let api = FakeApi::start().await;
    // The API's clock is 30 s behind ours.
    api.state.lock().unwrap().skew_secs = -30;
    // The window resets 8 s from now on the API's clock. Read as our time,
    // that reset header is 22 s in the past.
    let reset_header = api.api_now() + 8;
    let reset_local = reset_header + 30;
    let mut a = Token::good(api.api_now());
    a.set_quota(5000, reset_header);
    api.add(GOOD_A, a);
    let orchestrator = serve(&broker, &api, quick(), QuotaConfig::default()).await;
    publish(&orchestrator.bus, "github_rest", GOOD_A).await;
    let mut worker = AugurWorker::new(orchestrator.bus.clone(), 4715).await;
    assert_eq!(
        worker.key_within("github_rest", WAIT).await.as_deref(),
        Some(GOOD_A)
    );
    // Drained.
    api.with_token(GOOD_A, |t| t.set_quota(0, reset_header));
    let probes = api.probes_of(GOOD_A, "/rate_limit");
    assert!(until(WAIT, || api.probes_of(GOOD_A, "/rate_limit") > probes).await);
    let mut wait = None;
    for _ in 0..200 {
        match worker.ask("github_rest").await {
            Reply::Wait(n) => {
                wait = Some(n);
                break;
            }
            Reply::Key(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("{other:?}"),
        }
    }
    // The wait is until the API's reset on our clock.
    let wait = wait.expect("the drained token is withheld");
    let left = reset_local.saturating_sub(unix_now());
    assert!(
        wait.abs_diff(left) <= 1,
        "wait {wait}, {left} s to the reset"
    );
    api.with_token(GOOD_A, |t| t.set_quota(5000, reset_header + 3600));
    let got = worker
        .key_within("github_rest", Duration::from_secs(15))
        .await;
    assert_eq!(got.as_deref(), Some(GOOD_A));
    let at = unix_now();
    assert!(
        at + 1 >= reset_local,
        "back at {at}, the API's reset is {reset_local} on our clock"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_tokens_are_probed_within_the_rate_cap() {
    let broker = Broker::redis();
    let api = FakeApi::start().await;
    let now = api.api_now();
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("ghp_e2eRate{i:04}{}", "r".repeat(26)))
        .collect();
    for k in &keys {
        api.add(k, Token::good(now));
    }
    let cap = 200;
    let probe = ProbeConfig {
        max_per_second: cap,
        max_in_flight: 400,
        ..ProbeConfig::default()
    };
    let orchestrator = serve(&broker, &api, probe, QuotaConfig::default()).await;
    for k in &keys {
        publish(&orchestrator.bus, "github_rest", k).await;
    }
    assert!(
        until(Duration::from_secs(60), || api
            .requests("/rate_limit")
            .len()
            >= 1000)
        .await,
        "every token is probed"
    );
    let seen = api.requests("/rate_limit");
    let times: Vec<_> = seen.iter().map(|s| s.at).collect();
    // The engine counts probes per second of its clock; the arrivals here
    // may lag by loopback jitter, allowed 50 ms.
    let window = Duration::from_millis(950);
    let busiest = (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) < window)
                .count()
        })
        .max()
        .unwrap_or(0);
    let took = times[times.len() - 1].duration_since(times[0]);
    println!("1000 tokens probed in {took:?}, at most {busiest} in any 950 ms (cap {cap}/s)");
    assert!(busiest <= cap as usize, "{busiest} probes within 950 ms");
    assert!(took >= Duration::from_millis(4_000), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyman_serve_with_probe_never_hands_out_a_revoked_token_and_logs_no_key() {
    let broker = Broker::redis();
    let api = FakeApi::start().await;
    let now = api.api_now();
    let mut revoked = Token::good(now);
    revoked.revoked = true;
    api.add(REVOKED, revoked);
    let mut expiring = Token::good(now);
    expiring.expiration = Some("2000-01-01 00:00:00 UTC".into());
    api.add(GOOD_A, expiring);
    let url = api.url();
    let serve = support::Serve::start_with(
        &broker,
        &[
            "--no-state",
            "--probe",
            "--github-api-url",
            &url,
            "--probe-rate",
            "50",
        ],
    );
    let bus = broker.bus().await;
    let admin = support::ready_admin(bus.clone()).await;
    drop(admin);
    for key in [REVOKED, GOOD_A] {
        publish(&bus, "github_rest", key).await;
    }
    let mut worker = AugurWorker::new(bus.clone(), 4716).await;
    for _ in 0..50 {
        let key = worker.key_within("github_rest", WAIT).await.expect("a key");
        assert_eq!(key, GOOD_A, "{}", serve.log());
    }
    assert_eq!(invalid_keys(&bus, "github_rest").await, [REVOKED]);
    let agent = api.requests("/rate_limit")[0]
        .user_agent
        .clone()
        .unwrap_or_default();
    assert!(agent.starts_with("keyman/"), "{agent}");
    let log = serve.log();
    assert!(log.contains("token expires soon"), "{log}");
    assert!(log.contains("401"), "{log}");
    for key in [REVOKED, GOOD_A] {
        assert!(!log.contains(key), "a whole key in the log: {log}");
    }
}

#[test]
fn keyman_serve_refuses_to_send_tokens_over_plain_http_to_another_host() {
    let broker = Broker::redis();
    let mut serve = support::Serve::start_with(
        &broker,
        &["--probe", "--github-api-url", "http://api.github.com"],
    );
    let status = serve.wait_exit(Duration::from_secs(20)).expect("it exits");
    assert_eq!(status.code(), Some(2), "{}", serve.log());
}
