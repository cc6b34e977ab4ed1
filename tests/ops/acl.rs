//! A Redis ACL that keeps workers away from admin actions.

use super::*;

/// The ACL recipe of the README: the orchestrator, an admin and a worker, each
/// with only what it needs. The worker publishes only on the request channel
/// and subscribes only to reply channels of the request channel.
const ACL: &str = "\
user default off
user keyman on >orchestrator-secret allchannels resetkeys ~keyman:* -@all +@connection +@pubsub +@read +@write +@scripting
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
    let mut serve = Serve::spawn(&[
        "--standby",
        "--lease-ttl",
        "1",
        "--redis-url",
        &orchestrator,
    ]);
    let serve_log = || serve.log();

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
    let status = serve.wait_exit(Duration::from_secs(10));
    let log = serve.log();
    let status = status.unwrap_or_else(|| panic!("serve did not stop:\n{log}"));
    assert!(status.success(), "{status}\n{log}");
    assert!(!log.contains("orchestrator-secret"), "{log}");
    assert!(
        !log.contains("could not") && !log.contains("NOPERM"),
        "{log}"
    );
}
