//! RedisBus against a redis-server each test starts for itself.

use keyman_redis::{RedisBus, RedisOptions};
use keyman_transport::testing::{
    QUICK_BACKOFF, QUICK_TIMEOUT, RedisServer, conformance, next_event, next_payload, signal,
    subscribe_to, unused_port,
};
use keyman_transport::{Bus, BusError, BusEvent, Lease};
use std::time::{Duration, Instant};

const WAIT: Duration = conformance::EVENT_TIMEOUT;

fn start_server() -> RedisServer {
    RedisServer::start().expect("redis-server starts")
}

fn quick_options() -> RedisOptions {
    RedisOptions {
        operation_timeout: QUICK_TIMEOUT,
        reconnect: QUICK_BACKOFF,
        ..RedisOptions::default()
    }
}

async fn connect(url: &str) -> RedisBus {
    RedisBus::connect(url, quick_options())
        .await
        .expect("connects to the test server")
}

/// Polls `condition` until it holds, or panics after [`WAIT`].
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A plain connection to the server, to look at it from outside the bus.
async fn inspector(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("inspector connects")
}

async fn subscriber_count(inspector: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(inspector)
        .await
        .expect("PUBSUB NUMSUB");
    counts.first().map_or(0, |(_, count)| *count)
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let server = start_server();
    let url = server.url();
    conformance::run_all(|| connect(&url)).await;
}

#[tokio::test]
async fn a_shared_handle_passes_the_conformance_suite() {
    let server = start_server();
    let bus = connect(&server.url()).await;
    conformance::run_all_on_one_handle(&bus).await;
}

#[tokio::test]
async fn the_lease_passes_the_conformance_suite() {
    let server = start_server();
    let first = connect(&server.url()).await;
    let second = connect(&server.url()).await;
    let key = "keyman:leader:conformance";
    conformance::lease(&first.lease(key), &second.lease(key)).await;
    assert!(first.lease(key).describe().contains(key));
}

#[tokio::test]
async fn the_state_store_passes_the_conformance_suite() {
    let server = start_server();
    let first = connect(&server.url()).await;
    let second = connect(&server.url()).await;
    let lease = second.lease("keyman:leader:store-conformance");
    conformance::state_store(
        &first.state_store("keyman:state:store-conformance"),
        &second
            .state_store("keyman:state:store-conformance")
            .fenced_by(&lease),
        &lease,
    )
    .await;
}

#[tokio::test]
async fn subscriptions_recover_from_a_server_restart() {
    let mut server = start_server();
    let publisher = connect(&server.url()).await;
    let subscriber = connect(&server.url()).await;
    conformance::reconnect_after_restart(&publisher, &subscriber, || async {
        server.restart().expect("redis-server restarts");
    })
    .await;
}

#[tokio::test]
async fn publish_while_the_server_is_down_fails_fast_and_works_once_it_is_back() {
    let mut server = start_server();
    let bus = connect(&server.url()).await;
    let channel = conformance::unique_channel("down");
    let mut subscription = subscribe_to(&bus, &channel).await;

    server.stop().expect("stop");
    let timeout = bus.options().operation_timeout;
    for _ in 0..3 {
        let started = Instant::now();
        let result = bus.publish(&channel, b"lost").await;
        assert!(
            matches!(
                result,
                Err(BusError::Disconnected(_)) | Err(BusError::Timeout(_))
            ),
            "publish while down: {result:?}"
        );
        assert!(
            started.elapsed() < timeout + Duration::from_millis(500),
            "publish while down took {:?}",
            started.elapsed()
        );
    }
    assert!(matches!(
        next_event(&mut subscription).await,
        BusEvent::Disconnected { .. }
    ));
    let result = bus.subscribe(std::slice::from_ref(&channel)).await;
    assert!(
        matches!(result, Err(BusError::Disconnected(_))),
        "subscribe while down: {result:?}"
    );

    server.restart().expect("restart");
    assert_eq!(next_event(&mut subscription).await, BusEvent::Reconnected);
    bus.publish(&channel, b"back")
        .await
        .expect("publish after restart");
    assert_eq!(next_payload(&mut subscription).await, b"back");
}

#[tokio::test]
async fn a_subscription_reconnects_when_the_server_drops_its_connection() {
    let server = start_server();
    let bus = connect(&server.url()).await;
    let channel = conformance::unique_channel("client-kill");
    let mut subscription = subscribe_to(&bus, &channel).await;
    let mut inspector = inspector(&server.url()).await;
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut inspector)
        .await
        .expect("CLIENT KILL");
    assert_eq!(killed, 1);
    assert!(matches!(
        next_event(&mut subscription).await,
        BusEvent::Disconnected { .. }
    ));
    assert_eq!(next_event(&mut subscription).await, BusEvent::Reconnected);
    bus.publish(&channel, b"again").await.expect("publish");
    assert_eq!(next_payload(&mut subscription).await, b"again");
}

#[tokio::test]
async fn dropping_a_subscription_closes_its_connection() {
    let server = start_server();
    let bus = connect(&server.url()).await;
    let mut inspector = inspector(&server.url()).await;
    let channel = conformance::unique_channel("drop");
    let subscription = subscribe_to(&bus, &channel).await;
    assert_eq!(subscriber_count(&mut inspector, &channel).await, 1);
    drop(subscription);
    wait_until("the server forgets the subscription", || {
        let channel = channel.clone();
        let mut inspector = inspector.clone();
        async move { subscriber_count(&mut inspector, &channel).await == 0 }
    })
    .await;
}

#[tokio::test]
async fn a_bad_url_is_a_configuration_error() {
    for url in [
        "",
        "http://127.0.0.1:6379",
        "127.0.0.1:6379",
        "redis://127.0.0.1:notaport",
        "redis://127.0.0.1:6379/notadb",
    ] {
        let result = RedisBus::connect(url, RedisOptions::default()).await;
        assert!(
            matches!(result, Err(BusError::Config(_))),
            "{url:?} gave {result:?}"
        );
    }
}

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn a_tls_url_without_the_tls_feature_is_a_configuration_error() {
    let result = RedisBus::connect("rediss://127.0.0.1:6379", RedisOptions::default()).await;
    match result {
        Err(BusError::Config(message)) => assert!(message.contains("`tls` feature"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test]
async fn connecting_to_a_port_nobody_listens_on_fails_fast() {
    let port = unused_port();
    let started = Instant::now();
    let result = RedisBus::connect(
        &format!("redis://127.0.0.1:{port}"),
        RedisOptions::default(),
    )
    .await;
    assert!(
        matches!(result, Err(BusError::Disconnected(_))),
        "got {result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn connects_with_user_password_and_database_and_never_shows_the_password() {
    let server = RedisServer::start_with_args(&[
        "--user",
        "default",
        "off",
        "--user",
        "alice",
        "on",
        ">s3cr3t-pw",
        "~*",
        "&*",
        "+@all",
    ])
    .expect("redis-server with an ACL user starts");
    let port = server.port();

    let bus = connect(&format!("redis://alice:s3cr3t-pw@127.0.0.1:{port}/3")).await;
    let debug = format!("{bus:?}");
    assert!(!debug.contains("s3cr3t-pw"), "{debug}");
    let channel = conformance::unique_channel("auth");
    let mut subscription = subscribe_to(&bus, &channel).await;
    bus.publish(&channel, b"hi").await.expect("publish");
    assert_eq!(next_payload(&mut subscription).await, b"hi");

    // Pub/sub ignores the database number: db 0 and db 3 share channels.
    let other_db = connect(&format!("redis://alice:s3cr3t-pw@127.0.0.1:{port}/0")).await;
    other_db
        .publish(&channel, b"from db 0")
        .await
        .expect("publish");
    assert_eq!(next_payload(&mut subscription).await, b"from db 0");

    for url in [
        format!("redis://alice:wrong-pw@127.0.0.1:{port}"),
        format!("redis://127.0.0.1:{port}"),
    ] {
        let result = RedisBus::connect(&url, quick_options()).await;
        match result {
            Err(BusError::Config(message)) => {
                assert!(!message.contains("wrong-pw"), "{message}");
                assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
            }
            other => panic!("refused credentials should be a configuration error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_subscription_notices_a_server_that_stops_answering() {
    let server = start_server();
    let pid = server.pid().expect("running");
    let options = RedisOptions {
        operation_timeout: Duration::from_millis(300),
        health_check_interval: Some(Duration::from_millis(100)),
        ..quick_options()
    };
    let bus = RedisBus::connect(&server.url(), options)
        .await
        .expect("connects");
    let channel = conformance::unique_channel("frozen");
    let mut subscription = subscribe_to(&bus, &channel).await;

    // A stopped process keeps its sockets open but answers nothing.
    signal(pid, "STOP");
    let event = next_event(&mut subscription).await;
    signal(pid, "CONT");
    match event {
        BusEvent::Disconnected { reason } => assert!(reason.contains("PING"), "{reason}"),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert_eq!(next_event(&mut subscription).await, BusEvent::Reconnected);
    bus.publish(&channel, b"thawed").await.expect("publish");
    assert_eq!(next_payload(&mut subscription).await, b"thawed");
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn a_tls_url_against_a_plain_server_fails_cleanly() {
    let server = start_server();
    let url = format!("rediss://127.0.0.1:{}", server.port());
    let started = Instant::now();
    let result = RedisBus::connect(&url, quick_options()).await;
    assert!(
        matches!(
            result,
            Err(BusError::Disconnected(_)) | Err(BusError::Timeout(_))
        ),
        "TLS handshake with a plain server: {result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}
