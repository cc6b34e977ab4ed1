//! End to end over NATS: the same scenarios as over Redis, against a
//! `nats-server` this test starts on a free loopback port.

#![cfg(feature = "nats")]

mod support;

use support::{Broker, scenarios};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_rows_over_nats() {
    scenarios::augur_protocol_rows(Broker::nats()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_while_32_clients_loop() {
    scenarios::broker_restart_while_clients_loop(Broker::nats()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_bad_input_over_nats() {
    scenarios::flood_of_bad_input(Broker::nats()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_clients_wait_over_nats() {
    scenarios::shutdown_while_clients_wait(Broker::nats()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_orchestrator_is_a_fast_typed_error_over_nats() {
    use keyman::KeyError;
    use keyman::service::{KeyClient, KeySource};
    use std::time::{Duration, Instant};
    let broker = Broker::nats();
    let client = KeyClient::connect(
        broker.bus().await,
        support::client_config(Duration::from_secs(10)),
    )
    .await
    .expect("client");
    let started = Instant::now();
    let result = client.request("github_rest").await;
    assert!(
        matches!(result, Err(KeyError::NoOrchestrator(_))),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_restart_over_nats() {
    scenarios::state_survives_restart(Broker::nats()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_over_nats() {
    scenarios::standby_takes_over(Broker::nats()).await;
}
