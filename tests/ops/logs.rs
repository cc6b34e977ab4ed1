//! Logs fit for files and collectors, and secrets kept out of `--help`,
//! logs and argv.

use super::*;

#[test]
fn logs_to_a_file_have_no_escape_codes_and_user_text_cannot_forge_a_line() {
    let broker = Broker::redis();
    let url = broker.url();
    let serve = Serve::start_with(&broker, &["--no-state"]);
    ok(keyman(&url, &["ping"]));
    // A platform name with a newline and an escape sequence in it.
    publish_raw(
        &broker,
        &format!(
            r#"{{"type": "PUBLISH", "key_str": "{KEY_A}", "key_platform": "evil\n2026-12-01T00:00:00Z  INFO forged\u001b[31m"}}"#
        ),
    );
    wait_for_log(&serve, "key published");
    let log = serve.log();
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a log file:\n{log:?}"
    );
    let published: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("key published"))
        .collect();
    assert_eq!(published.len(), 1, "{log}");
    assert!(published[0].contains(r"evil\n2026"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-01T00:00:00Z")),
        "a forged line:\n{log}"
    );
    // The key is masked.
    assert!(!log.contains(KEY_A), "{log}");
}

#[test]
fn log_format_json_writes_one_object_per_line() {
    let broker = Broker::redis();
    let url = broker.url();
    let serve = Serve::start_with(&broker, &["--no-state", "--log-format", "json"]);
    ok(keyman(&url, &["ping"]));
    publish_raw(
        &broker,
        &format!(r#"{{"type": "PUBLISH", "key_str": "{KEY_B}", "key_platform": "two\nlines"}}"#),
    );
    publish_raw(&broker, "not json at all\n\u{1b}[2m");
    wait_for_log(&serve, "dropped a message");
    let log = serve.log();
    assert!(!log.contains('\u{1b}'), "{log:?}");
    let mut levels = 0;
    for line in log.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line:?}\n{log}"));
        assert!(v["message"].is_string(), "{line}");
        levels += usize::from(v["level"].is_string());
    }
    assert!(levels >= 3, "{log}");
    let published = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "key published")
        .expect("a key published line");
    assert_eq!(published["platform"], r"two\nlines");
    assert!(!log.contains(KEY_B), "{log}");
}

#[test]
fn help_and_logs_show_no_secret_taken_from_the_environment() {
    for args in [
        &["serve", "--help"][..],
        &["publish", "--help"],
        &["request", "--help"],
        &["status", "--help"],
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_keyman"))
            .args(args)
            .env(
                "REDIS_CONN_STRING",
                "redis://admin:s3cr3t-redis@10.0.0.1:6379",
            )
            .env("KEYMAN_NATS_URL", "nats://t0ken-nats@10.0.0.1:4222")
            .output()
            .expect("run keyman");
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{help}");
        assert!(help.contains("REDIS_CONN_STRING"), "{help}");
        assert!(!help.contains("s3cr3t-redis"), "{args:?}:\n{help}");
        assert!(!help.contains("t0ken-nats"), "{args:?}:\n{help}");
    }

    // A broker that cannot be reached: serve logs the URL, without the password.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let o = Command::new(env!("CARGO_BIN_EXE_keyman"))
        .args(["serve", "--no-state", "--connect-timeout", "0.5"])
        .env(
            "REDIS_CONN_STRING",
            format!("redis://admin:s3cr3t-redis@127.0.0.1:{port}"),
        )
        .env_remove("KEYMAN_NATS_URL")
        .output()
        .expect("run keyman");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(6), "{stderr}");
    assert!(stderr.contains("redis://admin:***@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("s3cr3t"), "{stderr}");
}

/// The command line of process `pid`, as `ps` shows it.
fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

#[test]
fn keys_read_from_stdin_or_a_file_are_in_no_argv() {
    let broker = Broker::redis();
    let url = broker.url();
    let serve = Serve::start_with(&broker, &["--no-state"]);
    ok(keyman(&url, &["ping"]));

    let mut child = keyman_cmd(
        &url,
        &["publish", "--platform", "github_rest", "--keys-from", "-"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("start keyman publish");
    let until = Instant::now() + Duration::from_secs(5);
    let mut argv = cmdline(child.id());
    while !argv.contains("--keys-from") {
        assert!(Instant::now() < until, "no command line: {argv:?}");
        std::thread::sleep(Duration::from_millis(10));
        argv = cmdline(child.id());
    }
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, "{KEY_A}\n\n  {KEY_B}  ").expect("write keys");
    drop(stdin);
    let out = ok(child.wait_with_output().expect("publish exits"));
    assert!(out.contains("published 2 key(s) on github_rest"), "{out}");
    assert!(!argv.contains(KEY_A) && !argv.contains(KEY_B), "{argv}");
    let mut keys: Vec<String> = serde_json::from_str(&ok(keyman(
        &url,
        &["keys", "--platform", "github_rest", "--json", "--show-keys"],
    )))
    .expect("a list");
    keys.sort();
    assert_eq!(keys, [KEY_A, KEY_B]);

    // From a file: invalidate one key, then unpublish both.
    let dir = tempfile::tempdir().expect("temp dir");
    let one = dir.path().join("one");
    std::fs::write(&one, format!("{KEY_A}\n")).expect("write");
    let both = dir.path().join("both");
    std::fs::write(&both, format!("{KEY_A}\n{KEY_B}\n")).expect("write");
    let next = ok(keyman(
        &url,
        &[
            "invalidate",
            "--platform",
            "github_rest",
            "--show-keys",
            "--keys-from",
            one.to_str().expect("utf-8 path"),
        ],
    ));
    assert_eq!(next.trim(), KEY_B);
    let out = ok(keyman(
        &url,
        &[
            "unpublish",
            "--platform",
            "github_rest",
            "--keys-from",
            both.to_str().expect("utf-8 path"),
        ],
    ));
    assert!(out.contains("unpublished 2 key(s)"), "{out}");
    // An empty source is a usage error; so is no key at all.
    let o = keyman_cmd(&url, &["publish", "--platform", "p", "--keys-from", "-"])
        .stdin(Stdio::null())
        .output()
        .expect("run keyman");
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = keyman(&url, &["publish", "--platform", "p"]);
    assert_eq!(o.status.code(), Some(2));
    drop(serve);
}

// ---------------------------------------------------------------- metrics

/// Seconds since the Unix epoch, by this host's clock.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[test]
fn a_platform_clock_behind_ours_is_logged_and_its_refused_key_withheld() {
    let broker = Broker::redis();
    let url = broker.url();
    let serve = Serve::start_with(&broker, &["--no-state"]);
    // Serving before anything is published (a PUBLISH before it would be lost).
    ok(keyman(&url, &["ping"]));
    ok(keyman(
        &url,
        &["publish", "--platform", "github_rest", KEY_A, KEY_B],
    ));
    // An Augur worker got a 403 for KEY_A with a reset 3 s in our past: the
    // platform has not reset the key, its clock is behind ours.
    let expire = format!(
        r#"{{"type": "EXPIRE", "key_str": "{KEY_A}", "key_platform": "github_rest", "refresh_time": {}, "requester_id": 4711}}"#,
        unix_now() - 3
    );
    publish_raw_on(&broker, "worker-oath-request", &expire);
    wait_for_log(&serve, "its clock is behind ours");
    let log = serve.log();
    let line = log
        .lines()
        .find(|l| l.contains("its clock is behind ours"))
        .unwrap_or_default();
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("github_rest"), "{line}");
    // At least twice the 3 s (the second's fraction adds to it).
    let lag_ms: u64 = line
        .split("lag_ms=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no lag_ms in {line}"));
    assert!((6_000..=8_000).contains(&lag_ms), "{line}");
    // STATUS says the same.
    let status: serde_json::Value =
        serde_json::from_str(&ok(keyman(&url, &["status", "--json"]))).expect("status JSON");
    assert_eq!(status[0]["platform"], "github_rest", "{status}");
    assert_eq!(status[0]["clock_lag_ms"], lag_ms, "{status}");
    // The refused key is not handed out again at once (Augur's orchestrator would).
    for _ in 0..5 {
        let key = ok(keyman(
            &url,
            &["request", "--platform", "github_rest", "--show-keys"],
        ));
        assert_eq!(key.trim(), KEY_B);
    }
    assert!(!log.contains(KEY_A), "{log}");
}
