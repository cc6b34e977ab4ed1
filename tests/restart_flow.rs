//! Augur's restart flow with the state kept, over Redis with
//! a real `keyman serve`.
//!
//! Augur restarts by starting the orchestrator and publishing every key of its
//! database again (`augur/application/cli/backend.py`:
//! `keypub.wait(republish=True)`, then `publish(key, platform)` for each key,
//! GitHub keys to `github_rest`, `github_graphql` and `github_search`, GitLab
//! keys to `gitlab_rest`). With the state kept, what that does:
//!
//! - an **expired** key stays expired until its refresh time (a publish does not
//!   cut a rate limit short), and is fresh after it;
//! - an **invalidated** key that is published again is fresh again
//!   (PROTOCOL.md: only an explicit PUBLISH brings an invalid key back, and
//!   Augur's restart is one);
//! - a key **removed from Augur's database** is never published again and
//!   stays in the kept state, handed out as before, until an operator drops it
//!   for good with `keyman forget KEY`.
//!
//! Every message is sent with the bytes Augur's Python code sends
//! (`json.dumps` of its dicts: `", "` and `": "` separators, the process id as
//! a number) and every reply read as text.

#![cfg(all(feature = "redis", feature = "cli"))]

mod support;

use serde_json::Value;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::faults::{ANN, REQ, Raw, RawSub, saved_state_contains, signal};
use support::{Broker, Serve};

const WAIT: Duration = Duration::from_secs(30);
/// Augur's worker and admin process id.
const PID: u64 = 4711;
const GITHUB: [&str; 3] = ["github_rest", "github_graphql", "github_search"];
const GITLAB: &str = "gitlab_rest";

/// Rate limited on github_rest for an hour, and on github_search for a few
/// seconds.
const EXPIRED: &str = "ghp_expired_0123456789abcdefghijklmnopqrst";
/// Revoked (HTTP 401): invalidated on every GitHub platform.
const INVALIDATED: &str = "ghp_revoked_0123456789abcdefghijklmnopqrst";
/// Deleted from Augur's database between the two runs.
const REMOVED: &str = "ghp_removed_0123456789abcdefghijklmnopqrst";
/// A GitLab key nothing happens to.
const GITLAB_KEY: &str = "glpat-steady0123456789abcd";

/// How long the short rate limit on github_search lasts from its EXPIRE:
/// longer than a restart takes, short enough to wait for.
const SHORT_LIMIT: u64 = 20;

fn publish_bytes(key: &str, platform: &str) -> String {
    format!(r#"{{"type": "PUBLISH", "key_str": "{key}", "key_platform": "{platform}"}}"#)
}

/// What Augur's backend publishes at start: every key of its database.
fn augur_publishes(keys: &[&str]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for key in keys {
        let platforms: &[&str] = if key.starts_with("glpat") {
            &[GITLAB]
        } else {
            &GITHUB
        };
        for platform in platforms {
            out.push((ANN.to_owned(), publish_bytes(key, platform).into_bytes()));
        }
    }
    out
}

/// Augur's admin side: its reply channel, read as text.
struct Augur {
    raw: Raw,
    admin_in: RawSub,
    worker_in: RawSub,
}

impl Augur {
    fn connect(broker: &Broker) -> Augur {
        Augur {
            raw: Raw::connect(broker),
            admin_in: RawSub::channels(broker, &[format!("{ANN}-{PID}")]),
            worker_in: RawSub::channels(broker, &[format!("{REQ}-{PID}")]),
        }
    }

    /// `KeyPublisher.wait(republish=True)`: an ACK every 0.1 s until one is
    /// answered (with the empty string); then the answers to the other ACKs
    /// still on their way are drained.
    fn wait(&mut self, serve: &Serve) {
        let ack = format!(r#"{{"type": "ACK", "requester_id": {PID}}}"#);
        let start = Instant::now();
        loop {
            self.raw.publish(ANN, ack.as_bytes());
            if let Some((_, payload, _)) = self.admin_in.next(Duration::from_millis(100)) {
                assert_eq!(payload, b"", "the ACK is an empty payload");
                break;
            }
            assert!(
                start.elapsed() < WAIT,
                "no ACK from serve:\n{}",
                serve.log()
            );
        }
        while self
            .admin_in
            .next(Duration::from_millis(300))
            .is_some_and(|(_, p, _)| p.is_empty())
        {}
    }

    /// `publish(key, platform)` for every key of the database, one PUBLISH each.
    fn publish_database(&mut self, keys: &[&str]) {
        for (channel, payload) in augur_publishes(keys) {
            self.raw.publish(&channel, &payload);
        }
    }

    /// An admin request; its reply as JSON (late answers to `wait`'s ACKs,
    /// empty payloads, are skipped).
    fn admin(&mut self, body: String) -> Value {
        self.raw.publish(ANN, body.as_bytes());
        loop {
            let (_, payload, _) = self
                .admin_in
                .next(WAIT)
                .expect("an answer on the admin reply channel");
            if !payload.is_empty() {
                return serde_json::from_slice(&payload).expect("a JSON answer");
            }
        }
    }

    fn list_keys(&mut self, platform: &str) -> Vec<String> {
        self.list("LIST_KEYS", platform)
    }

    fn list_invalid(&mut self, platform: &str) -> Vec<String> {
        self.list("LIST_INVALID_KEYS", platform)
    }

    fn list(&mut self, kind: &str, platform: &str) -> Vec<String> {
        let body =
            format!(r#"{{"type": "{kind}", "requester_id": {PID}, "key_platform": "{platform}"}}"#);
        let v = self.admin(body);
        serde_json::from_value(v.clone()).unwrap_or_else(|_| panic!("{kind} answered {v}"))
    }

    fn platforms(&mut self) -> Vec<String> {
        let v = self.admin(format!(
            r#"{{"type": "LIST_PLATFORMS", "requester_id": {PID}}}"#
        ));
        serde_json::from_value(v.clone()).unwrap_or_else(|_| panic!("LIST_PLATFORMS answered {v}"))
    }

    /// `KeyClient.request()` once: the NEW and its reply.
    fn new_key(&mut self, platform: &str) -> Value {
        let new =
            format!(r#"{{"key_platform": "{platform}", "type": "NEW", "requester_id": {PID}}}"#);
        self.raw.publish(REQ, new.as_bytes());
        let (_, payload, _) = self
            .worker_in
            .next(WAIT)
            .expect("an answer on the worker reply channel");
        serde_json::from_slice(&payload).expect("a JSON answer")
    }

    /// The keys 60 NEWs for `platform` are given (each fresh key is drawn with
    /// probability 1 / fresh, so every fresh one shows up).
    fn keys_handed_out(&mut self, platform: &str) -> std::collections::BTreeSet<String> {
        (0..60)
            .filter_map(|_| {
                self.new_key(platform)
                    .get("key")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect()
    }

    fn expire(&mut self, key: &str, platform: &str, refresh_time: u64) {
        let m = format!(
            r#"{{"type": "EXPIRE", "key_str": "{key}", "key_platform": "{platform}", "refresh_time": {refresh_time}, "requester_id": {PID}}}"#
        );
        self.raw.publish(REQ, m.as_bytes());
    }

    fn invalidate(&mut self, key: &str, platform: &str) {
        let m = format!(
            r#"{{"type": "INVALIDATE", "key_str": "{key}", "key_platform": "{platform}", "requester_id": {PID}}}"#
        );
        self.raw.publish(REQ, m.as_bytes());
    }
}

fn now_secs() -> u64 {
    keyman::service::wall_clock().as_secs()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn owned(keys: &[&str]) -> Vec<String> {
    sorted(keys.iter().map(|k| (*k).to_owned()).collect())
}

/// Stops `serve` the way docker and systemd do (SIGTERM): it saves and exits.
fn stop(mut serve: Serve) {
    signal(serve.pid(), "TERM");
    let status = serve.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "serve did not stop cleanly on SIGTERM ({status:?}):\n{}",
        serve.log()
    );
}

/// Waits until the saved state does (or does not) contain `needle`.
fn wait_state(broker: &Broker, needle: &str, present: bool) -> bool {
    let until = Instant::now() + WAIT;
    while Instant::now() < until {
        if saved_state_contains(broker, needle) == present {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `keyman forget` with `args` as a separate process; its stdout, stderr
/// and success.
fn forget(broker: &Broker, args: &[&str], stdin: Option<&str>) -> (String, String, bool) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyman"))
        .arg("forget")
        .arg("--redis-url")
        .arg(broker.url())
        .args(args)
        .env_remove("REDIS_CONN_STRING")
        .env_remove("KEYMAN_NATS_URL")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keyman forget");
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("keyman forget ends");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

#[test]
fn augur_restart_with_kept_state_over_redis() {
    let broker = Broker::redis();
    let mut augur = Augur::connect(&broker);

    // First run: Augur starts serve and publishes its database.
    let serve = Serve::start(&broker);
    augur.wait(&serve);
    let database = [EXPIRED, INVALIDATED, REMOVED, GITLAB_KEY];
    augur.publish_database(&database);
    // Workers: one key rate limited (for an hour on github_rest, briefly on
    // github_search), one revoked on every GitHub platform.
    let long_refresh = now_secs() + 3600;
    let short_refresh = now_secs() + SHORT_LIMIT;
    augur.expire(EXPIRED, "github_rest", long_refresh);
    augur.expire(EXPIRED, "github_search", short_refresh);
    for platform in GITHUB {
        augur.invalidate(INVALIDATED, platform);
    }
    assert_eq!(augur.list_invalid("github_rest"), owned(&[INVALIDATED]));
    assert!(
        wait_state(&broker, INVALIDATED, true),
        "the state was never saved"
    );

    // Restart: serve stops, starts again on the kept state; Augur waits for it
    // and publishes its database again, without the key it deleted.
    stop(serve);
    let serve = Serve::start(&broker);
    augur.wait(&serve);
    augur.publish_database(&[EXPIRED, INVALIDATED, GITLAB_KEY]);
    assert_eq!(
        sorted(augur.platforms()),
        owned(&[
            "github_graphql",
            "github_rest",
            "github_search",
            "gitlab_rest"
        ])
    );

    // 1. The expired key stays expired until its refresh time: listed, never
    //    handed out on github_rest, and fresh on github_graphql where it was
    //    never rate limited.
    let status = augur.admin(format!(r#"{{"type": "STATUS", "requester_id": {PID}}}"#));
    let rest = status["platforms"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["platform"] == "github_rest"))
        .cloned()
        .unwrap_or_else(|| panic!("STATUS without github_rest: {status}"));
    assert_eq!(rest["expired"], 1, "{rest}");
    assert_eq!(rest["next_refresh"], long_refresh, "{rest}");
    assert!(augur.list_keys("github_rest").contains(&EXPIRED.to_owned()));
    let handed = augur.keys_handed_out("github_rest");
    assert!(
        !handed.contains(EXPIRED),
        "the expired key was handed out after the restart: {handed:?}"
    );
    assert!(augur.keys_handed_out("github_graphql").contains(EXPIRED));

    // 2. The invalidated key, published again, is fresh again on every GitHub
    //    platform, and no longer listed as invalid.
    for platform in GITHUB {
        assert_eq!(
            augur.list_invalid(platform),
            Vec::<String>::new(),
            "{platform}"
        );
    }
    assert!(handed.contains(INVALIDATED), "{handed:?}");

    // 3. The key removed from Augur's database is still in the kept state, and
    //    handed out: nothing on the wire says it is gone.
    for platform in GITHUB {
        assert!(
            augur.list_keys(platform).contains(&REMOVED.to_owned()),
            "{platform}"
        );
    }
    assert!(handed.contains(REMOVED), "{handed:?}");

    // The short rate limit on github_search is still on after the restart,
    // and over at its refresh time.
    assert!(
        now_secs() < short_refresh,
        "the restart took longer than {SHORT_LIMIT} s"
    );
    assert!(!augur.keys_handed_out("github_search").contains(EXPIRED));
    while now_secs() <= short_refresh {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(augur.keys_handed_out("github_search").contains(EXPIRED));

    // Dropping the removed key for good: one command, every platform, the key
    // never printed whole.
    let (stdout, stderr, ok) = forget(&broker, &[REMOVED], None);
    assert!(ok, "keyman forget failed: {stderr}");
    assert!(
        !stdout.contains(REMOVED) && !stderr.contains(REMOVED),
        "keyman forget printed the key: {stdout}{stderr}"
    );
    assert!(
        stdout.contains("forgot 1 key(s) on all 4 platform(s)"),
        "{stdout}"
    );
    for platform in GITHUB {
        assert!(
            !augur.list_keys(platform).contains(&REMOVED.to_owned()),
            "{platform}"
        );
    }
    assert!(
        wait_state(&broker, REMOVED, false),
        "the forgotten key is still in the saved state"
    );
    // Keys from standard input, as `-`: an invalid one goes too.
    augur.invalidate(GITLAB_KEY, GITLAB);
    assert_eq!(augur.list_invalid(GITLAB), owned(&[GITLAB_KEY]));
    let (stdout, stderr, ok) = forget(&broker, &["-"], Some(&format!("{GITLAB_KEY}\n")));
    assert!(ok, "keyman forget - failed: {stderr}");
    assert!(!stdout.contains(GITLAB_KEY), "{stdout}");
    assert_eq!(augur.list_invalid(GITLAB), Vec::<String>::new());

    // After another restart and republish, the forgotten key stays gone and
    // the rest is as it was.
    stop(serve);
    let serve = Serve::start(&broker);
    augur.wait(&serve);
    augur.publish_database(&[EXPIRED, INVALIDATED]);
    for platform in GITHUB {
        assert!(
            !augur.list_keys(platform).contains(&REMOVED.to_owned()),
            "{platform} after the second restart"
        );
    }
    assert_eq!(
        sorted(augur.list_keys("github_rest")),
        owned(&[EXPIRED, INVALIDATED])
    );
    assert!(
        !serve.log().contains(REMOVED) && !serve.log().contains(EXPIRED),
        "serve logged a whole key"
    );
}
