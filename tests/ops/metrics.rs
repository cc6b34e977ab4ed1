//! Prometheus metrics, health endpoints, the saved state file and `status
//! --watch`.

use super::*;

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
    publish_raw_on(
        &broker,
        REQ,
        &format!(
            r#"{{"type": "EXPIRE", "key_str": "{KEY_C}", "key_platform": "{p}", "refresh_time": {reset}}}"#
        ),
    );
    publish_raw_on(
        &broker,
        REQ,
        &format!(r#"{{"type": "NEW", "key_platform": "{p}", "requester_id": 4711}}"#),
    );
    // Two messages dropped.
    publish_raw_on(&broker, ANN, "not json");
    publish_raw_on(&broker, ANN, r#"{"type": "BOGUS"}"#);

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
