//! End to end over Redis: `keyman serve` as a drop-in for Augur's orchestrator,
//! against a `redis-server` this test starts on a free loopback port.

#![cfg(feature = "redis")]

mod support;

use support::{Broker, scenarios};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn augur_protocol_rows_over_redis() {
    scenarios::augur_protocol_rows(Broker::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_while_32_clients_loop() {
    scenarios::broker_restart_while_clients_loop(Broker::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_of_bad_input_over_redis() {
    scenarios::flood_of_bad_input(Broker::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_clients_wait_over_redis() {
    scenarios::shutdown_while_clients_wait(Broker::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_restart_over_redis() {
    scenarios::state_survives_restart(Broker::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_over_redis() {
    scenarios::standby_takes_over(Broker::redis()).await;
}
