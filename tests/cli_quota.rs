//! The quota side of the `keyman` program: `serve`'s floors, strategies and
//! quota leases (bad values are usage errors; a floor given on the command
//! line withholds a key at it), and the forecast `status` shows (the table,
//! `--json` and `--watch`). Against a real `redis-server`, with raw
//! messages as keyman-aware workers send them.

#![cfg(all(feature = "cli", feature = "redis"))]

mod support;

use serde_json::{Value, json};
use std::io::BufRead;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use support::faults::{ANN, REQ, Raw, new_bytes, publish_bytes, unique, wait_ack, worker_call};
use support::{Broker, Serve};

const PLATFORM: &str = "github_rest";
const KEY_A: &str = "ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const KEY_B: &str = "ghp_bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const KEY_C: &str = "ghp_cccccccccccccccccccccccccccccccccccc";
const WAIT: Duration = Duration::from_secs(10);

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

/// A REPORT of `key`'s rate-limit headers, answered `{"ok": true}`.
fn report(broker: &Broker, key: &str, remaining: u64, reset: u64) {
    let answer = worker_call(
        broker,
        json!({
            "type": "REPORT", "key_str": key, "key_platform": PLATFORM,
            "remaining": remaining, "limit": 5000, "reset": reset, "request_id": unique(),
        }),
        WAIT,
    );
    assert_eq!(
        answer.as_ref().map(|a| &a["ok"]),
        Some(&Value::Bool(true)),
        "REPORT answered {answer:?}"
    );
}

#[test]
fn bad_quota_options_of_serve_are_usage_errors_that_say_what_is_wrong() {
    // Nothing listens there: a value that passed would make serve wait for
    // its broker, so an exit at once is the parse.
    let url = "redis://127.0.0.1:1";
    for (args, says) in [
        (&["--floor", "github_rest"][..], "is not PLATFORM=N"),
        (&["--floor", "github_rest=lots"], "whole number of calls"),
        (&["--floor", "github_rest:=5"], "names no account"),
        (&["--selection", "fastest"], "unknown strategy"),
        (
            &["--selection", "github_rest=fastest"],
            "uniform, round-robin",
        ),
        (&["--max-leases", "lots"], "--max-leases"),
        (&["--quota-lease-duration", "0"], "1 or more"),
        (
            &["--floor", "github_rest=1", "--floor", "github_rest=2"],
            "--floor github_rest is given twice",
        ),
        (
            &["--selection", "uniform", "--selection", "weighted"],
            "given twice",
        ),
    ] {
        let mut all = vec!["serve", "--no-state", "--connect-timeout", "1"];
        all.extend_from_slice(args);
        let o = keyman(url, &all);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // Each lease's help says which lease it is.
    let help = ok(Command::new(env!("CARGO_BIN_EXE_keyman"))
        .args(["serve", "--help"])
        .output()
        .expect("run keyman"));
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for text in [
        "--floor <PLATFORM[:ACCOUNT]=N>",
        "--selection <[PLATFORM=]STRATEGY>",
        "--max-leases <N>",
        "Not the standby's leadership lease (that is --lease-ttl)",
        "Not the quota leases lent to workers (that is --quota-lease-duration)",
    ] {
        assert!(flat.contains(text), "{text:?} not in:\n{help}");
    }
}

/// The key an Augur worker's NEW gets (raw), or what came instead.
fn new_key(broker: &Broker) -> Value {
    let id = unique();
    let replies = support::faults::RawSub::channels(broker, &[format!("{REQ}-{id}")]);
    Raw::connect(broker).publish(REQ, &new_bytes(PLATFORM, &id.to_string()));
    let (_, payload, _) = replies.next(WAIT).expect("NEW answered");
    serde_json::from_slice(&payload).expect("a JSON reply")
}

#[test]
fn a_floor_given_on_the_command_line_withholds_a_key_reported_at_it() {
    let broker = Broker::redis();
    let url = broker.url();
    let _serve = Serve::start_with(
        &broker,
        &[
            "--no-state",
            "--floor",
            "github_rest=100",
            "--floor",
            "github_rest:donor=500",
        ],
    );
    assert!(wait_ack(&broker, WAIT), "serve does not answer");
    let mut raw = Raw::connect(&broker);
    raw.publish(ANN, &publish_bytes(PLATFORM, KEY_A));
    raw.publish(ANN, &publish_bytes(PLATFORM, KEY_B));
    let donor = json!({
        "type": "PUBLISH", "key_str": KEY_C, "key_platform": PLATFORM, "account": "donor",
    });
    raw.publish(ANN, donor.to_string().as_bytes());
    let reset = keyman::service::wall_clock().as_secs() + 3_600;
    // A at the platform's floor, the donor's key under its own (above the
    // platform's), B above both.
    report(&broker, KEY_A, 100, reset);
    report(&broker, KEY_C, 400, reset);
    report(&broker, KEY_B, 101, reset);
    for _ in 0..20 {
        let got = new_key(&broker);
        assert_eq!(got["key"], KEY_B, "{got}");
    }
    let status: Value =
        serde_json::from_str(&ok(keyman(&url, &["status", "--json"]))).expect("--json prints JSON");
    assert_eq!(status[0]["fresh"], 1, "{status}");
    assert_eq!(status[0]["expired"], 2, "{status}");
    // B at the floor too: everything is withheld until the reset.
    report(&broker, KEY_B, 100, reset);
    let got = new_key(&broker);
    let wait = got["wait"].as_u64().unwrap_or_else(|| panic!("{got}"));
    assert!((3_000..=3_700).contains(&wait), "{got}");
}

/// A platform whose calls are known and spent: one key, reported at 5 000
/// then at 4 000 calls in its window (1 000 calls within the first minute:
/// 60 000 an hour), and a lease of 100 calls.
fn spent_platform(broker: &Broker) {
    Raw::connect(broker).publish(ANN, &publish_bytes(PLATFORM, KEY_A));
    let reset = keyman::service::wall_clock().as_secs() + 3_600;
    report(broker, KEY_A, 5_000, reset);
    report(broker, KEY_A, 4_000, reset);
    let lease = worker_call(
        broker,
        json!({ "type": "NEW", "key_platform": PLATFORM, "lease": 100 }),
        WAIT,
    )
    .expect("NEW with lease answered");
    assert_eq!(lease["calls"], 100, "{lease}");
}

#[test]
fn status_shows_the_forecast_in_its_table_in_json_and_when_watching() {
    let broker = Broker::redis();
    let url = broker.url();
    let _serve = Serve::start_with(&broker, &["--no-state"]);
    assert!(wait_ack(&broker, WAIT), "serve does not answer");
    spent_platform(&broker);

    // The table: remaining less lent, lent, burn per hour, runs dry in
    // 3 900 / 60 000 of an hour (3 min 54 s).
    let table = ok(keyman(&url, &["status"]));
    let header = table.lines().next().unwrap_or_default();
    for column in ["remaining", "leased", "burn/h", "runs dry"] {
        assert!(header.contains(column), "{table}");
    }
    let line = table
        .lines()
        .find(|l| l.starts_with(PLATFORM))
        .unwrap_or_else(|| panic!("{table}"));
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            PLATFORM, "1", "0", "0", "\u{2014}", "3900", "100", "60000", "in", "3m"
        ],
        "{table}"
    );

    // --json: the same, with the dry time in Unix seconds.
    let status: Value =
        serde_json::from_str(&ok(keyman(&url, &["status", "--json"]))).expect("--json prints JSON");
    let p = &status[0];
    assert_eq!(
        (&p["remaining"], &p["leased"], &p["burn_per_hour"]),
        (&json!(3_900), &json!(100), &json!(60_000)),
        "{status}"
    );
    let dry_in = p["dry_at"].as_u64().unwrap_or_default() as i64
        - keyman::service::wall_clock().as_secs() as i64;
    assert!((225..=234).contains(&dry_in), "{status}");

    // --watch, as JSON lines and as the table.
    for (args, wanted) in [
        (
            &["status", "--watch", "--json"][..],
            "\"burn_per_hour\":60000",
        ),
        (&["status", "--watch"], "in 3m"),
    ] {
        let mut child = keyman_cmd(&url, args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start keyman status --watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let until = Instant::now() + WAIT;
        let seen = loop {
            let left = until.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(PLATFORM) && line.contains(wanted) => break Some(line),
                Ok(_) => {}
                Err(_) => break None,
            }
        };
        keyman_transport::testing::signal(child.id(), "INT");
        let _ = child.wait();
        assert!(seen.is_some(), "{args:?} never showed {wanted:?}");
    }
}
