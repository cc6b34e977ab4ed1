//! The `keyman` program as scripts and operators use it: subcommands, output
//! for people and `--json`, masked keys, exit codes, REDIS_CONN_STRING and
//! signals.

#![cfg(all(feature = "cli", feature = "redis"))]

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};
use support::{Broker, Serve};

const KEY_A: &str = "ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const KEY_B: &str = "ghp_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn keyman(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyman"))
        .args(args)
        .arg("--redis-url")
        .arg(url)
        .args(["--timeout", "10"])
        .env_remove("REDIS_CONN_STRING")
        .env_remove("KEYMAN_NATS_URL")
        .output()
        .expect("run keyman")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "keyman failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    stdout(&o)
}

fn json(o: Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).expect("--json prints JSON")
}

#[test]
fn admin_and_worker_subcommands_work_against_keyman_serve() {
    let broker = Broker::redis();
    let url = broker.url();
    let mut serve = Serve::start(&broker);
    let pinged = ok(keyman(&url, &["ping"]));
    assert!(pinged.contains("orchestrator answered"), "{pinged}");

    let out = ok(keyman(
        &url,
        &["publish", "--platform", "github_rest", KEY_A, KEY_B],
    ));
    assert!(out.contains("published 2 key(s) on github_rest"), "{out}");
    assert_eq!(
        json(keyman(&url, &["platforms", "--json"])),
        serde_json::json!(["github_rest"])
    );

    // Keys are masked unless --show-keys.
    let listed = ok(keyman(&url, &["keys", "--platform", "github_rest"]));
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert!(
        !listed.contains(KEY_A) && !listed.contains(KEY_B),
        "{listed}"
    );
    let mut shown: Vec<String> = serde_json::from_value(json(keyman(
        &url,
        &["keys", "--platform", "github_rest", "--json", "--show-keys"],
    )))
    .expect("a list");
    shown.sort();
    assert_eq!(shown, vec![KEY_A.to_string(), KEY_B.to_string()]);

    let got = json(keyman(
        &url,
        &[
            "request",
            "--platform",
            "github_rest",
            "--json",
            "--show-keys",
        ],
    ));
    let key = got["key"].as_str().expect("a key").to_string();
    assert!(key == KEY_A || key == KEY_B);
    let masked = ok(keyman(&url, &["request", "--platform", "github_rest"]));
    assert!(masked.starts_with("ghp_…(40 chars)"), "{masked}");

    // Invalidate one: the other comes back, and the invalid list shows it.
    let other = if key == KEY_A { KEY_B } else { KEY_A };
    let next = ok(keyman(
        &url,
        &[
            "invalidate",
            "--platform",
            "github_rest",
            &key,
            "--show-keys",
        ],
    ));
    assert_eq!(next.trim(), other);
    let invalid = json(keyman(
        &url,
        &[
            "invalid",
            "--platform",
            "github_rest",
            "--json",
            "--show-keys",
        ],
    ));
    assert_eq!(invalid, serde_json::json!([key]));

    // Expire the other until a minute from now: a request now times out (exit 5).
    let reset = (keyman::service::wall_clock().as_secs() + 60).to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_keyman"))
        .args([
            "expire",
            "--platform",
            "github_rest",
            other,
            "--reset",
            &reset,
        ])
        .args(["--redis-url", &url, "--timeout", "1"])
        .output()
        .expect("run keyman");
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let status = json(keyman(&url, &["status", "--json"]));
    assert_eq!(status[0]["fresh"], 0);
    assert_eq!(status[0]["expired"], 1);
    assert_eq!(status[0]["invalid"], 1);

    // Typed failures have their own exit codes and messages.
    let o = keyman(&url, &["request", "--platform", "gitlab_rest"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown platform: gitlab_rest"));
    let o = keyman(&url, &["keys", "--platform", "gitlab_rest"]);
    assert_eq!(o.status.code(), Some(3));

    let out = ok(keyman(
        &url,
        &["unpublish", "--platform", "github_rest", KEY_A, KEY_B],
    ));
    assert!(out.contains("unpublished 2 key(s)"), "{out}");
    let o = keyman(&url, &["request", "--platform", "github_rest"]);
    assert_eq!(o.status.code(), Some(4), "no usable keys");

    ok(keyman(&url, &["shutdown"]));
    let status = serve
        .wait_exit(Duration::from_secs(10))
        .expect("serve exits");
    assert!(status.success());
}

#[test]
fn serve_reads_redis_conn_string_and_stops_cleanly_on_sigterm() {
    let broker = Broker::redis();
    let url = broker.url();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyman"))
        .arg("serve")
        .env("REDIS_CONN_STRING", format!("{url}/2"))
        .env_remove("KEYMAN_NATS_URL")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start keyman serve");
    // Pub/sub ignores the database number: the orchestrator answers on db 0's channels.
    ok(keyman(&url, &["ping"]));
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(Instant::now() < until, "keyman serve ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "exit status {status}");
}

#[test]
fn unreachable_broker_and_absent_orchestrator_fail_fast_with_their_exit_codes() {
    // Nothing listens on this port once the server is stopped.
    let mut broker = Broker::redis();
    let url = broker.url();
    broker.stop();
    let started = Instant::now();
    let o = keyman(&url, &["ping"]);
    assert_eq!(
        o.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A broker but no orchestrator: the deadline holds.
    let broker = Broker::redis();
    let started = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_keyman"))
        .args([
            "request",
            "--platform",
            "p",
            "--redis-url",
            &broker.url(),
            "--timeout",
            "0.5",
        ])
        .output()
        .expect("run keyman");
    assert_eq!(o.status.code(), Some(5));
    assert!(started.elapsed() < Duration::from_secs(3));

    // A URL of an unknown scheme is a usage error.
    let o = keyman("http://127.0.0.1:1", &["ping"]);
    assert_eq!(o.status.code(), Some(2));
}

/// The stderr of `o`, which must have failed with a usage error (2) that does
/// not call itself a lost connection.
fn usage_error(o: &Output) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("disconnected"), "{stderr}");
    stderr
}

#[test]
fn bad_broker_urls_are_usage_errors_not_disconnected() {
    // An unknown scheme, for a client and for the orchestrator.
    let stderr = usage_error(&keyman("http://127.0.0.1:1", &["ping"]));
    assert!(stderr.contains("unsupported broker URL scheme"), "{stderr}");
    let stderr = usage_error(&keyman("ftp://127.0.0.1:1", &["serve", "--no-state"]));
    assert!(stderr.contains("unsupported broker URL scheme"), "{stderr}");
    // No scheme at all.
    usage_error(&keyman("127.0.0.1:6379", &["request", "--platform", "p"]));
    // A Redis URL that cannot be parsed.
    let stderr = usage_error(&keyman("redis://127.0.0.1:notaport", &["ping"]));
    assert!(stderr.contains("bad Redis URL"), "{stderr}");
    let stderr = usage_error(&keyman(
        "redis://127.0.0.1:notaport",
        &["serve", "--no-state"],
    ));
    assert!(stderr.contains("bad Redis URL"), "{stderr}");
}

#[cfg(feature = "nats")]
#[test]
fn a_bad_nats_url_is_a_usage_error_not_disconnected() {
    let stderr = usage_error(&keyman(
        "redis://127.0.0.1:1",
        &["ping", "--nats-url", "nats://127.0.0.1:notaport"],
    ));
    assert!(stderr.contains("bad NATS URL"), "{stderr}");
}

#[test]
fn the_exit_codes_are_in_the_help() {
    let o = Command::new(env!("CARGO_BIN_EXE_keyman"))
        .arg("--help")
        .output()
        .expect("run keyman");
    let help = stdout(&o);
    for line in [
        "Exit codes:",
        "2  usage",
        "3  unknown platform",
        "4  no usable keys",
        "5  timed out",
        "6  disconnected",
    ] {
        assert!(help.contains(line), "{line:?} not in:\n{help}");
    }
}

#[test]
fn serve_keeps_its_state_in_a_file_when_told() {
    let broker = Broker::redis();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("keyman-state.json");
    let file_arg = file.to_str().expect("utf-8 path");
    let mut serve = Serve::start_with(&broker, &["--state-file", file_arg]);
    ok(keyman(&url, &["ping"]));
    ok(keyman(
        &url,
        &["publish", "--platform", "gitlab_rest", KEY_A],
    ));
    ok(keyman(&url, &["shutdown"]));
    assert!(
        serve
            .wait_exit(Duration::from_secs(10))
            .expect("exits")
            .success()
    );
    let saved = std::fs::read_to_string(&file).expect("the state file exists");
    assert!(saved.contains("gitlab_rest"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the state holds keys: owner only");
    }

    let _serve = Serve::start_with(&broker, &["--state-file", file_arg]);
    ok(keyman(&url, &["ping"]));
    let keys = json(keyman(
        &url,
        &["keys", "--platform", "gitlab_rest", "--json", "--show-keys"],
    ));
    assert_eq!(keys, serde_json::json!([KEY_A]));
}

#[test]
fn serve_standby_checks_its_options_and_warns_about_state_it_cannot_share() {
    let broker = Broker::redis();
    let url = broker.url();
    let o = keyman(&url, &["serve", "--standby", "--lease-ttl", "0"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = keyman(&url, &["serve", "--lease-ttl", "2"]);
    assert_eq!(o.status.code(), Some(2), "--lease-ttl needs --standby");

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("keyman-state.json");
    let file_arg = file.to_str().expect("utf-8 path");
    let mut first = Serve::start_with(
        &broker,
        &["--standby", "--lease-ttl", "1", "--state-file", file_arg],
    );
    ok(keyman(&url, &["ping"]));
    assert!(
        first.log().contains("--standby with --state-file"),
        "{}",
        first.log()
    );
    let second = Serve::start_with(&broker, &["--standby", "--lease-ttl", "1", "--no-state"]);
    let until = Instant::now() + Duration::from_secs(10);
    while !(second.log().contains("standing by")
        && second.log().contains("--standby with --no-state"))
    {
        assert!(Instant::now() < until, "no standby:\n{}", second.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    ok(keyman(&url, &["shutdown"]));
    assert!(
        first
            .wait_exit(Duration::from_secs(10))
            .expect("exits")
            .success()
    );
    // The standby takes over, without state.
    ok(keyman(&url, &["ping"]));
    assert_eq!(ok(keyman(&url, &["platforms", "--json"])).trim(), "[]");
}

#[test]
fn serve_gives_up_on_an_unreachable_broker_after_its_connect_timeout() {
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let started = Instant::now();
    let o = keyman(&url, &["serve", "--no-state", "--connect-timeout", "1"]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&o.stderr);
    println!(
        "serve --connect-timeout 1 on a closed port: {} after {took:?}",
        o.status
    );
    assert_eq!(o.status.code(), Some(6), "{stderr}");
    assert!(took < Duration::from_secs(4), "took {took:?}:\n{stderr}");
    // It tried more than once, saying so each time, before giving up.
    assert!(
        stderr
            .matches("cannot reach the broker; trying again")
            .count()
            >= 2,
        "{stderr}"
    );
    assert!(stderr.contains("giving up"), "{stderr}");

    // Its help says how to give up.
    let help = Command::new(env!("CARGO_BIN_EXE_keyman"))
        .args(["serve", "--help"])
        .output()
        .expect("run keyman");
    assert!(
        stdout(&help).contains("--connect-timeout"),
        "{}",
        stdout(&help)
    );
}

#[test]
fn sigterm_ends_serve_at_once_while_it_waits_for_its_broker() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyman"))
        .args(["serve", "--no-state", "--redis-url"])
        .arg(format!("redis://127.0.0.1:{port}"))
        .env_remove("REDIS_CONN_STRING")
        .env_remove("KEYMAN_NATS_URL")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start keyman serve");
    // It keeps trying (no --connect-timeout): still running after a while.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "serve gave up waiting"
    );
    let asked = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let until = asked + Duration::from_secs(5);
    let exited = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if Instant::now() >= until {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = asked.elapsed();
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut err, &mut stderr);
    }
    let _ = child.wait();
    println!("SIGTERM while waiting for the broker: {exited:?} after {took:?}");
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}:\n{stderr}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        stderr.contains("cannot reach the broker; trying again"),
        "{stderr}"
    );
}

#[test]
fn keys_published_to_one_account_are_rate_limited_together() {
    let broker = Broker::redis();
    let url = broker.url();
    let _serve = Serve::start(&broker);
    ok(keyman(&url, &["ping"]));
    let out = ok(keyman(
        &url,
        &[
            "publish",
            "--platform",
            "github_rest",
            "--account",
            "octocat",
            "--limit",
            "5000",
            KEY_A,
            KEY_B,
        ],
    ));
    assert!(out.contains("published 2 key(s) on github_rest"), "{out}");
    let o = keyman(
        &url,
        &[
            "publish",
            "--platform",
            "github_rest",
            "--limit",
            "x",
            KEY_A,
        ],
    );
    assert_eq!(o.status.code(), Some(2), "a limit that is not a number");

    // One key of the account is rate limited: so is the other.
    let reset = (keyman::service::wall_clock().as_secs() + 600).to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_keyman"))
        .args([
            "expire",
            "--platform",
            "github_rest",
            KEY_A,
            "--reset",
            &reset,
        ])
        .args(["--redis-url", &url, "--timeout", "1"])
        .output()
        .expect("run keyman");
    assert_eq!(
        o.status.code(),
        Some(5),
        "no key of the account is left: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let status = json(keyman(&url, &["status", "--json"]));
    assert_eq!(status[0]["fresh"], 0, "{status}");
    assert_eq!(status[0]["expired"], 2, "{status}");
}
