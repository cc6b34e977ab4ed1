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
    publish_raw_on(broker, ANN, payload);
}

/// Publishes a raw payload on `channel`.
fn publish_raw_on(broker: &Broker, channel: &str, payload: &str) {
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

#[path = "ops/acl.rs"]
mod acl;
#[path = "ops/logs.rs"]
mod logs;
#[path = "ops/metrics.rs"]
mod metrics;
