//! `keyman` as an operator runs it in production, with real processes: logs
//! fit for files and collectors, secrets kept out of `--help`, logs and argv,
//! Prometheus metrics and health endpoints, and a Redis ACL that keeps
//! workers away from admin actions.

#![cfg(all(feature = "cli", feature = "redis"))]

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::{Broker, Serve};

const KEY_A: &str = "ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const KEY_B: &str = "ghp_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const ANN: &str = "augur-oauth-announce";

fn keyman_cmd(url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyman"));
    cmd.args(args)
        .arg("--redis-url")
        .arg(url)
        .args(["--timeout", "10"])
        .env_remove("REDIS_CONN_STRING")
        .env_remove("KEYMAN_NATS_URL");
    cmd
}

fn keyman(url: &str, args: &[&str]) -> Output {
    keyman_cmd(url, args).output().expect("run keyman")
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "keyman failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Waits until `serve`'s log contains `what`.
fn wait_for_log(serve: &Serve, what: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    while !serve.log().contains(what) {
        assert!(
            Instant::now() < until,
            "{what:?} not logged:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Publishes a raw payload on the admin channel, as any client of the broker can.
fn publish_raw(broker: &Broker, payload: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let bus = broker.bus().await;
        bus.publish(ANN, payload.as_bytes()).await.expect("publish");
    });
}

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

/// A free loopback port.
fn free_port() -> u16 {
    keyman_transport::testing::unused_port()
}

/// `GET path` on 127.0.0.1:`port`: the status code and the body.
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Waits until `GET path` answers `status`.
fn wait_for_status(port: u16, path: &str, status: u16, serve: &Serve) {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let got = http_get(port, path).map(|(s, _)| s).unwrap_or(0);
        if got == status {
            return;
        }
        assert!(
            Instant::now() < until,
            "{path} answers {got}, not {status}:\n{}",
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The value of the sample `series` (name and labels as exposed) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Publishes a raw payload on `channel`.
fn publish_on(broker: &Broker, channel: &str, payload: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let bus = broker.bus().await;
        bus.publish(channel, payload.as_bytes())
            .await
            .expect("publish");
    });
}

const REQ: &str = "worker-oath-request";

#[test]
fn metrics_count_what_a_scripted_workload_did() {
    const KEY_C: &str = "ghp_cccccccccccccccccccccccccccccccccccc";
    let broker = Broker::redis();
    let url = broker.url();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let serve = Serve::start_with(&broker, &["--no-state", "--metrics-addr", &addr]);
    wait_for_status(port, "/healthz", 200, &serve);
    wait_for_status(port, "/readyz", 200, &serve);
    ok(keyman(&url, &["ping"]));

    let p = "github_rest";
    ok(keyman(
        &url,
        &["publish", "--platform", p, KEY_A, KEY_B, KEY_C],
    ));
    for _ in 0..3 {
        ok(keyman(&url, &["request", "--platform", p]));
    }
    let o = keyman(&url, &["request", "--platform", "gitlab_rest"]);
    assert_eq!(o.status.code(), Some(3));
    // INVALIDATE B (and a NEW for another key), UNPUBLISH B.
    ok(keyman(&url, &["invalidate", "--platform", p, KEY_B]));
    ok(keyman(&url, &["unpublish", "--platform", p, KEY_B]));
    // EXPIRE A (and a NEW: C is the only fresh key left).
    let reset = (keyman::service::wall_clock().as_secs() + 600).to_string();
    let next = ok(keyman(
        &url,
        &[
            "expire",
            "--platform",
            p,
            KEY_A,
            "--reset",
            &reset,
            "--show-keys",
        ],
    ));
    assert_eq!(next.trim(), KEY_C);
    // EXPIRE C as Augur's workers send it, then a NEW that can only wait.
    publish_on(
        &broker,
        REQ,
        &format!(
            r#"{{"type": "EXPIRE", "key_str": "{KEY_C}", "key_platform": "{p}", "refresh_time": {reset}}}"#
        ),
    );
    publish_on(
        &broker,
        REQ,
        &format!(r#"{{"type": "NEW", "key_platform": "{p}", "requester_id": 4711}}"#),
    );
    // Two messages dropped.
    publish_on(&broker, ANN, "not json");
    publish_on(&broker, ANN, r#"{"type": "BOGUS"}"#);

    let expected = [
        (
            r#"keyman_messages_total{platform="github_rest",type="PUBLISH"}"#,
            3.0,
        ),
        (
            r#"keyman_messages_total{platform="github_rest",type="NEW"}"#,
            6.0,
        ),
        (
            r#"keyman_messages_total{platform="github_rest",type="INVALIDATE"}"#,
            1.0,
        ),
        (
            r#"keyman_messages_total{platform="github_rest",type="UNPUBLISH"}"#,
            1.0,
        ),
        (
            r#"keyman_messages_total{platform="github_rest",type="EXPIRE"}"#,
            2.0,
        ),
        (
            r#"keyman_messages_total{platform="(unknown)",type="NEW"}"#,
            1.0,
        ),
        (
            r#"keyman_new_answered_total{platform="github_rest",answer="key"}"#,
            5.0,
        ),
        (
            r#"keyman_new_answered_total{platform="github_rest",answer="wait"}"#,
            1.0,
        ),
        (
            r#"keyman_new_answered_total{platform="(unknown)",answer="unknown_platform"}"#,
            1.0,
        ),
        (r#"keyman_rejected_messages_total{reason="not_json"}"#, 1.0),
        (
            r#"keyman_rejected_messages_total{reason="unknown_type"}"#,
            1.0,
        ),
        (r#"keyman_keys{platform="github_rest",state="fresh"}"#, 0.0),
        (
            r#"keyman_keys{platform="github_rest",state="expired"}"#,
            2.0,
        ),
        (
            r#"keyman_keys{platform="github_rest",state="invalid"}"#,
            0.0,
        ),
        ("keyman_held_requests", 0.0),
        ("keyman_leader", 1.0),
        ("keyman_ready", 1.0),
        ("keyman_broker_connected", 1.0),
        ("keyman_reply_seconds_count", 7.0),
    ];
    // The key counts are taken every second.
    let until = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let (status, text) = http_get(port, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200, "{text}");
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(series, value)| sample(&text, series) != Some(*value))
            .map(|(series, value)| format!("{series} = {:?}, not {value}", sample(&text, series)))
            .collect();
        if wrong.is_empty() {
            break text;
        }
        assert!(
            Instant::now() < until,
            "{}\n\n{text}\n{}",
            wrong.join("\n"),
            serve.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // No key is a label value.
    for key in [KEY_A, KEY_B, KEY_C] {
        assert!(!text.contains(&key[..12]), "{text}");
    }
    assert!(
        text.contains("# TYPE keyman_reply_seconds histogram"),
        "{text}"
    );
    assert!(sample(&text, "keyman_admin_messages_total{type=\"ACK\"}").is_some_and(|n| n >= 1.0));

    // The exposition passes promtool, where it is installed.
    match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Err(_) => println!("promtool is not installed: the exposition is not checked by it"),
        Ok(mut child) => {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())
                .expect("write to promtool");
            let o = child.wait_with_output().expect("promtool");
            assert!(
                o.status.success(),
                "promtool check metrics: {}{}\n{text}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
    }
    let (status, _) = http_get(port, "/nothing").expect("GET");
    assert_eq!(status, 404);
}

#[test]
fn readyz_is_503_for_a_standby_and_200_once_it_serves() {
    let broker = Broker::redis();
    let url = broker.url();
    let (port_a, port_b) = (free_port(), free_port());
    let standby = [
        "--standby",
        "--lease-ttl",
        "1",
        "--no-state",
        "--metrics-addr",
    ];
    let addr_a = format!("127.0.0.1:{port_a}");
    let first = Serve::start_with(&broker, &[&standby[..], &[addr_a.as_str()]].concat());
    wait_for_status(port_a, "/readyz", 200, &first);
    ok(keyman(&url, &["ping"]));

    let addr_b = format!("127.0.0.1:{port_b}");
    let second = Serve::start_with(&broker, &[&standby[..], &[addr_b.as_str()]].concat());
    wait_for_log(&second, "standing by");
    wait_for_status(port_b, "/healthz", 200, &second);
    let (status, body) = http_get(port_b, "/readyz").expect("GET /readyz");
    assert_eq!(status, 503, "{body}");
    let (_, text) = http_get(port_b, "/metrics").expect("GET /metrics");
    assert_eq!(sample(&text, "keyman_leader"), Some(0.0), "{text}");

    // The serving one dies: the standby takes over and is ready.
    drop(first);
    wait_for_status(port_b, "/readyz", 200, &second);
    let (_, text) = http_get(port_b, "/metrics").expect("GET /metrics");
    assert_eq!(sample(&text, "keyman_leader"), Some(1.0), "{text}");
    ok(keyman(&url, &["ping"]));
}

#[test]
fn a_state_file_is_owner_only_and_its_save_is_measured() {
    let broker = Broker::redis();
    let url = broker.url();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("state.json");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let serve = Serve::start_with(
        &broker,
        &[
            "--state-file",
            file.to_str().expect("utf-8 path"),
            "--metrics-addr",
            &addr,
        ],
    );
    wait_for_status(port, "/readyz", 200, &serve);
    ok(keyman(&url, &["publish", "--platform", "p", KEY_A]));
    let until = Instant::now() + Duration::from_secs(10);
    while !file.exists() {
        assert!(Instant::now() < until, "no state file:\n{}", serve.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the state holds keys: owner only");
    }
    let (_, text) = http_get(port, "/metrics").expect("GET /metrics");
    let age = sample(&text, "keyman_seconds_since_last_save").expect("a save age");
    assert!((0.0..10.0).contains(&age), "{text}");
}

#[test]
fn status_watch_redraws_every_second_and_ends_on_ctrl_c() {
    let broker = Broker::redis();
    let url = broker.url();
    let _serve = Serve::start_with(&broker, &["--no-state"]);
    ok(keyman(&url, &["ping"]));
    ok(keyman(
        &url,
        &["publish", "--platform", "github_rest", KEY_A, KEY_B],
    ));
    let mut child = keyman_cmd(&url, &["status", "--watch"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start keyman status --watch");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut text);
        text
    });
    std::thread::sleep(Duration::from_millis(2600));
    keyman_transport::testing::signal(child.id(), "INT");
    let until = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < until, "status --watch ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let text = reader.join().expect("reader");
    let frames = text.matches("\x1b[H\x1b[2J").count();
    assert!(frames >= 2, "{frames} frames:\n{text}");
    let last = text.rsplit("\x1b[2J").next().unwrap_or_default();
    assert!(last.contains("platform"), "{last}");
    assert!(
        last.lines()
            .any(|l| l.starts_with("github_rest") && l.split_whitespace().nth(1) == Some("2")),
        "{last}"
    );
}

// ---------------------------------------------------------------- Redis ACL

/// The ACL recipe of the README: the orchestrator, an admin and a worker, each
/// with only what it needs. The worker publishes only on the request channel
/// and subscribes only to reply channels of the request channel.
const ACL: &str = "\
user default off
user keyman on >orchestrator-secret resetchannels &augur-oauth-announce &worker-oath-request &augur-oauth-announce-* &worker-oath-request-* resetkeys ~keyman:* -@all +ping +hello +select +subscribe +unsubscribe +publish +get +set +eval +pexpire +del
user keyman-admin on >admin-secret resetchannels &augur-oauth-announce &augur-oauth-announce-* resetkeys -@all +ping +hello +select +subscribe +unsubscribe +publish
user worker on >worker-secret resetchannels &worker-oath-request-* resetkeys -@all +ping +hello +select +subscribe +unsubscribe (resetchannels &worker-oath-request -@all +publish)
";

/// Sends one command as `user` over a raw connection: the server's first
/// reply line to it.
fn raw_redis(port: u16, user: &str, password: &str, command: &[&str]) -> String {
    use std::io::{BufRead, BufReader};
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut send = |args: &[&str]| {
        let mut bytes = format!("*{}\r\n", args.len());
        for a in args {
            bytes.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        writer.write_all(bytes.as_bytes()).expect("send");
    };
    send(&["AUTH", user, password]);
    let mut line = String::new();
    reader.read_line(&mut line).expect("AUTH reply");
    assert_eq!(line.trim(), "+OK", "AUTH {user}");
    send(command);
    line.clear();
    reader.read_line(&mut line).expect("reply");
    line.trim().to_string()
}

#[test]
fn a_redis_acl_keeps_workers_away_from_admin_actions() {
    use keyman_transport::testing::RedisServer;
    let dir = tempfile::tempdir().expect("temp dir");
    let acl = dir.path().join("users.acl");
    std::fs::write(&acl, ACL).expect("write the ACL file");
    let server = RedisServer::start_with_args(&["--aclfile", acl.to_str().expect("utf-8 path")])
        .expect("start redis-server with the ACL file");
    let port = server.port();
    let as_user =
        |user: &str, password: &str| format!("redis://{user}:{password}@127.0.0.1:{port}");
    let orchestrator = as_user("keyman", "orchestrator-secret");
    let admin = as_user("keyman-admin", "admin-secret");
    let worker = as_user("worker", "worker-secret");

    // The orchestrator keeps its state and its lease in Redis, as the ACL allows.
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("serve.log");
    let mut serve = Command::new(env!("CARGO_BIN_EXE_keyman"))
        .args([
            "serve",
            "--standby",
            "--lease-ttl",
            "1",
            "--redis-url",
            &orchestrator,
        ])
        .env("RUST_LOG", "info")
        .env_remove("REDIS_CONN_STRING")
        .env_remove("KEYMAN_NATS_URL")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start keyman serve");
    let serve_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // The admin publishes and lists; the worker gets keys and reports them.
    let pinged = keyman(&admin, &["ping"]);
    assert!(
        pinged.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&pinged.stderr),
        serve_log()
    );
    ok(keyman(
        &admin,
        &["publish", "--platform", "github_rest", KEY_A, KEY_B],
    ));
    let listed = ok(keyman(
        &admin,
        &["keys", "--platform", "github_rest", "--json"],
    ));
    assert!(listed.contains("ghp_"), "{listed}");
    let key = ok(keyman(
        &worker,
        &["request", "--platform", "github_rest", "--show-keys"],
    ));
    assert!(key.trim() == KEY_A || key.trim() == KEY_B, "{key}");
    ok(keyman(
        &worker,
        &["invalidate", "--platform", "github_rest", key.trim()],
    ));

    // The worker can do none of the admin's actions, and is told so.
    for args in [
        &["unpublish", "--platform", "github_rest", KEY_A][..],
        &["keys", "--platform", "github_rest"],
        &["shutdown"],
    ] {
        let o = keyman(&worker, args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("permission denied"), "{args:?}: {stderr}");
        assert!(!stderr.contains("worker-secret"), "{args:?}: {stderr}");
        println!("worker {args:?}: {}", stderr.trim());
    }
    // Not even with raw commands: no admin channel, no forged replies, no state.
    for command in [
        &["PUBLISH", ANN, r#"{"type": "SHUTDOWN"}"#][..],
        &[
            "PUBLISH",
            "worker-oath-request-4711",
            r#"{"key": "forged"}"#,
        ],
        &["SUBSCRIBE", ANN],
        &["GET", "keyman:state:augur-oauth-announce"],
        &["FLUSHALL"],
    ] {
        let reply = raw_redis(port, "worker", "worker-secret", command);
        assert!(reply.starts_with("-NOPERM"), "{command:?}: {reply}");
    }
    // Nor can the admin touch the state.
    let reply = raw_redis(
        port,
        "keyman-admin",
        "admin-secret",
        &["GET", "keyman:state:augur-oauth-announce"],
    );
    assert!(reply.starts_with("-NOPERM"), "{reply}");

    // The orchestrator still serves; the admin stops it.
    ok(keyman(&admin, &["ping"]));
    ok(keyman(&admin, &["shutdown"]));
    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = serve.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < until,
            "serve did not stop:\n{}",
            serve_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}\n{}", serve_log());
    let log = serve_log();
    assert!(!log.contains("orchestrator-secret"), "{log}");
    assert!(
        !log.contains("could not") && !log.contains("NOPERM"),
        "{log}"
    );
}
