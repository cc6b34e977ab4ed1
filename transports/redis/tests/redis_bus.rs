//! RedisBus against a redis-server each test starts for itself: the shared
//! suite of `keyman_transport::testing::suite`, then the tests of Redis only.

use keyman_redis::{RedisBus, RedisOptions};
use keyman_transport::testing::suite::{TEST_PASSWORD, TEST_USER, connect, start_server};
use keyman_transport::testing::{
    RedisBroker, RedisServer, TransportUnderTest, WhileDown, conformance, next_event, next_payload,
    subscribe_to,
};
use keyman_transport::{Backoff, Bus, BusError, BusEvent, ConnectionOptions, Lease, StateStore};
use std::time::{Duration, Instant};

const WAIT: Duration = conformance::EVENT_TIMEOUT;

/// Redis as the shared suite runs it.
struct Redis;

/// The ACL of a server that accepts only the test user.
fn acl_args() -> [String; 10] {
    [
        "--user".to_owned(),
        "default".to_owned(),
        "off".to_owned(),
        "--user".to_owned(),
        TEST_USER.to_owned(),
        "on".to_owned(),
        format!(">{TEST_PASSWORD}"),
        "~*".to_owned(),
        "&*".to_owned(),
        "+@all".to_owned(),
    ]
}

impl TransportUnderTest for Redis {
    type Bus = RedisBus;
    type Broker = RedisBroker;
    type Options = RedisOptions;

    const BAD_URLS: &'static [&'static str] = &[
        "",
        "http://127.0.0.1:6379",
        "127.0.0.1:6379",
        "redis://127.0.0.1:notaport",
        "redis://127.0.0.1:6379/notadb",
    ];
    const LEASE_NAME: &'static str = "keyman:leader:conformance";
    const WHILE_DOWN: WhileDown = WhileDown::FailsAtOnce;
    const CREDENTIALS_PATH: &'static str = "/3";
    const FROZEN_REASON: Option<&'static str> = Some("PING");

    async fn connect_with(url: &str, options: RedisOptions) -> Result<RedisBus, BusError> {
        RedisBus::connect(url, options).await
    }

    fn with_link(
        options: RedisOptions,
        operation_timeout: Duration,
        reconnect: Backoff,
    ) -> RedisOptions {
        RedisOptions {
            connection: ConnectionOptions {
                operation_timeout,
                reconnect,
                ..options.connection
            },
            ..options
        }
    }

    fn health_watching_options() -> RedisOptions {
        let quick = Redis::quick_options();
        RedisOptions {
            connection: ConnectionOptions {
                operation_timeout: Duration::from_millis(300),
                ..quick.connection
            },
            health_check_interval: Some(Duration::from_millis(100)),
        }
    }

    fn operation_timeout(bus: &RedisBus) -> Duration {
        bus.options().connection.operation_timeout
    }

    fn conformance_stores(
        first: &RedisBus,
        second: &RedisBus,
    ) -> (Box<dyn StateStore>, Box<dyn StateStore>, Box<dyn Lease>) {
        let lease = second.lease("keyman:leader:store-conformance");
        let fenced = second
            .state_store("keyman:state:store-conformance")
            .fenced_by(&lease);
        let store = first.state_store("keyman:state:store-conformance");
        (Box::new(store), Box::new(fenced), Box::new(lease))
    }

    fn conformance_lease(bus: &RedisBus) -> Box<dyn Lease> {
        Box::new(bus.lease(Self::LEASE_NAME))
    }

    fn start_with_test_user() -> RedisServer {
        let args = acl_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        RedisServer::start_with_args(&args).expect("redis-server with an ACL user starts")
    }
}

keyman_transport::transport_suite!(Redis);

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
async fn a_subscription_reconnects_when_the_server_drops_its_connection() {
    let server = start_server::<Redis>();
    let bus = connect::<Redis>(&server.url()).await;
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
    let server = start_server::<Redis>();
    let bus = connect::<Redis>(&server.url()).await;
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

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn a_tls_url_without_the_tls_feature_is_a_configuration_error() {
    let result = RedisBus::connect("rediss://127.0.0.1:6379", RedisOptions::default()).await;
    match result {
        Err(BusError::Config(message)) => assert!(message.contains("`tls` feature"), "{message}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn a_tls_url_against_a_plain_server_fails_cleanly() {
    let server = start_server::<Redis>();
    let url = format!("rediss://127.0.0.1:{}", server.port());
    let started = Instant::now();
    let result = RedisBus::connect(&url, Redis::quick_options()).await;
    assert!(
        matches!(
            result,
            Err(BusError::Disconnected(_)) | Err(BusError::Timeout(_))
        ),
        "TLS handshake with a plain server: {result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn pub_sub_ignores_the_database_number_with_credentials() {
    let server = Redis::start_with_test_user();
    let port = server.port();
    let bus = connect::<Redis>(&format!(
        "redis://{TEST_USER}:{TEST_PASSWORD}@127.0.0.1:{port}/3"
    ))
    .await;
    let channel = conformance::unique_channel("auth");
    let mut subscription = subscribe_to(&bus, &channel).await;

    // Pub/sub ignores the database number: db 0 and db 3 share channels.
    let other_db = connect::<Redis>(&format!(
        "redis://{TEST_USER}:{TEST_PASSWORD}@127.0.0.1:{port}/0"
    ))
    .await;
    other_db
        .publish(&channel, b"from db 0")
        .await
        .expect("publish");
    assert_eq!(next_payload(&mut subscription).await, b"from db 0");
}
