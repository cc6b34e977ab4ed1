//! `serve` starts and stops whatever is down.

use crate::support::faults::{ANN, Raw, publish_bytes, signal, tail, wait_ack};
use crate::support::{Broker, Serve};
use std::time::{Duration, Instant};
use tokio::task::block_in_place;

const WAIT: Duration = Duration::from_secs(15);
/// How long `serve` may take to end after SIGTERM, whatever is down.
const STOP_LIMIT: Duration = Duration::from_secs(5);

fn sigterm_with_broker_down_exits_within_5s(mut broker: Broker) {
    let mut serve = Serve::start(&broker);
    assert!(
        wait_ack(&broker, WAIT),
        "serve does not answer:\n{}",
        serve.log()
    );
    let mut raw = Raw::connect(&broker);
    raw.publish(
        ANN,
        &publish_bytes("github_rest", "ghp_down_0123456789abcdefghijklmnopqr"),
    );
    assert!(wait_ack(&broker, WAIT));
    // A change not saved yet, then the broker goes away.
    raw.publish(
        ANN,
        &publish_bytes("github_rest", "ghp_down_second_0123456789abcdefghij"),
    );
    drop(raw);
    broker.stop();
    let asked = Instant::now();
    signal(serve.pid(), "TERM");
    let exited = serve.wait_exit(STOP_LIMIT);
    let took = asked.elapsed();
    println!(
        "SIGTERM with {} down: {} after {took:?}",
        broker.url(),
        match exited {
            Some(s) => format!("exited with {s}"),
            None => "still running".to_owned(),
        }
    );
    assert!(
        exited.is_some(),
        "serve still runs {STOP_LIMIT:?} after SIGTERM with the broker down; it logged:\n{}",
        tail(&serve.log(), 10)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_broker_down_exits_within_5s_over_redis() {
    let broker = Broker::redis();
    block_in_place(|| sigterm_with_broker_down_exits_within_5s(broker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_broker_down_exits_within_5s_over_nats() {
    let broker = Broker::nats();
    block_in_place(|| sigterm_with_broker_down_exits_within_5s(broker));
}

fn broker_absent_at_start_then_serves(mut broker: Broker) {
    // The port stays the broker's: it is started again on it below.
    broker.stop();
    let mut serve = Serve::start(&broker);
    let started = Instant::now();
    // The broker comes up 3 s after `serve` (as in a compose file where
    // keyman starts first); this wait is the scenario itself.
    let early_exit = serve.wait_exit(Duration::from_secs(3));
    broker.restart();
    let answered = early_exit.is_none() && wait_ack(&broker, Duration::from_secs(20));
    println!(
        "broker absent at start on {}: {}",
        broker.url(),
        match (early_exit, answered) {
            (Some(s), _) => format!("serve exited with {s} after {:?}", started.elapsed()),
            (None, true) => format!("serve answered {:?} after it started", started.elapsed()),
            (None, false) => "serve runs but does not answer".to_owned(),
        }
    );
    assert!(
        early_exit.is_none(),
        "serve exited with {early_exit:?} while the broker was down; it logged:\n{}",
        tail(&serve.log(), 10)
    );
    assert!(
        answered,
        "serve does not answer once the broker is up; it logged:\n{}",
        tail(&serve.log(), 10)
    );
    let log = serve.log();
    assert!(serve.is_running(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_absent_at_start_then_serves_over_redis() {
    let broker = Broker::redis();
    block_in_place(|| broker_absent_at_start_then_serves(broker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_absent_at_start_then_serves_over_nats() {
    let broker = Broker::nats();
    block_in_place(|| broker_absent_at_start_then_serves(broker));
}
