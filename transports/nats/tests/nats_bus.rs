//! NatsBus against a nats-server each test starts for itself: the shared
//! suite of `keyman_transport::testing::suite`, then the tests of NATS only.

use keyman_nats::{NatsBus, NatsOptions};
use keyman_transport::testing::suite::{TEST_PASSWORD, TEST_USER, connect, start_server};
use keyman_transport::testing::{
    NatsBroker, NatsServer, TransportUnderTest, WhileDown, conformance, next_event, next_payload,
    subscribe_to,
};
use keyman_transport::{Backoff, Bus, BusError, BusEvent, ConnectionOptions, Lease, StateStore};
use std::time::{Duration, Instant};

const WAIT: Duration = conformance::EVENT_TIMEOUT;

/// NATS as the shared suite runs it.
struct Nats;

impl TransportUnderTest for Nats {
    type Bus = NatsBus;
    type Broker = NatsBroker;
    type Options = NatsOptions;

    const BAD_URLS: &'static [&'static str] = &[
        "",
        "http://127.0.0.1:4222",
        "nats://127.0.0.1:notaport",
        " , ",
    ];
    const LEASE_NAME: &'static str = "keyman/leader.conformance";
    const WHILE_DOWN: WhileDown = WhileDown::NoticedFirst;
    const CREDENTIALS_PATH: &'static str = "";
    const FROZEN_REASON: Option<&'static str> = None;

    async fn connect_with(url: &str, options: NatsOptions) -> Result<NatsBus, BusError> {
        NatsBus::connect(url, options).await
    }

    fn with_link(
        options: NatsOptions,
        operation_timeout: Duration,
        reconnect: Backoff,
    ) -> NatsOptions {
        NatsOptions {
            connection: ConnectionOptions {
                operation_timeout,
                reconnect,
                ..options.connection
            },
            ..options
        }
    }

    fn health_watching_options() -> NatsOptions {
        let quick = Nats::quick_options();
        NatsOptions {
            connection: ConnectionOptions {
                operation_timeout: Duration::from_millis(500),
                ..quick.connection.clone()
            },
            health_check_interval: Duration::from_millis(100),
            ..quick
        }
    }

    fn operation_timeout(bus: &NatsBus) -> Duration {
        bus.options().connection.operation_timeout
    }

    fn conformance_stores(
        first: &NatsBus,
        second: &NatsBus,
    ) -> (Box<dyn StateStore>, Box<dyn StateStore>, Box<dyn Lease>) {
        let lease = second.lease("keyman", "leader.store-conformance");
        let fenced = second
            .state_store("keyman", "state.store-conformance")
            .fenced_by(&lease);
        let store = first.state_store("keyman", "state.store-conformance");
        (Box::new(store), Box::new(fenced), Box::new(lease))
    }

    fn conformance_lease(bus: &NatsBus) -> Box<dyn Lease> {
        Box::new(bus.lease("keyman", "leader.conformance"))
    }

    /// JetStream may answer a moment after the server greets its first client.
    async fn leases_ready(bus: &NatsBus) {
        let warmup = bus.lease("keyman", "leader.warmup");
        let until = Instant::now() + WAIT;
        while let Err(err) = warmup.try_acquire("warmup", Duration::from_millis(1)).await {
            assert!(Instant::now() < until, "JetStream never answered: {err}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn start_with_test_user() -> NatsServer {
        NatsServer::start_with_args(&["--user", TEST_USER, "--pass", TEST_PASSWORD])
            .expect("nats-server with a user starts")
    }
}

keyman_transport::transport_suite!(Nats);

#[tokio::test]
async fn request_without_a_responder_fails_fast_with_no_responders() {
    let server = start_server::<Nats>();
    let bus = connect::<Nats>(&server.url()).await;
    let started = Instant::now();
    let result = bus.request("nobody.listens", b"?", WAIT).await;
    assert_eq!(
        result,
        Err(BusError::NoResponders("nobody.listens".to_owned()))
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no responders took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_request_is_answered_on_its_reply_subject_and_times_out_without_answer() {
    let server = start_server::<Nats>();
    let requester = connect::<Nats>(&server.url()).await;
    let responder = connect::<Nats>(&server.url()).await;
    let channel = conformance::unique_channel("request");
    let mut requests = subscribe_to(&responder, &channel).await;
    assert!(requester.supports_request());

    let answering = async {
        let BusEvent::Message(request) = next_event(&mut requests).await else {
            panic!("expected the request");
        };
        assert_eq!(request.payload, b"how many?");
        let reply_to = request.reply_to.expect("a reply subject");
        responder
            .publish(&reply_to, b"forty-two")
            .await
            .expect("answer");
    };
    let (answer, ()) = tokio::join!(requester.request(&channel, b"how many?", WAIT), answering);
    assert_eq!(answer, Ok(b"forty-two".to_vec()));

    // A subscriber that does not answer makes the request time out.
    let started = Instant::now();
    let silence = Duration::from_millis(200);
    assert_eq!(
        requester.request(&channel, b"hello?", silence).await,
        Err(BusError::Timeout(silence))
    );
    assert!(started.elapsed() < silence + Duration::from_secs(1));
}

#[tokio::test]
async fn an_invalid_subject_is_refused() {
    let server = start_server::<Nats>();
    let bus = connect::<Nats>(&server.url()).await;
    assert!(matches!(
        bus.publish("has space", b"x").await,
        Err(BusError::Config(_))
    ));
    assert!(matches!(
        bus.subscribe(&["has space".to_owned()]).await,
        Err(BusError::Config(_))
    ));
}

/// A payload well above the server's 1 MiB limit, not a repetition of one byte.
fn large_payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 7 + i / 1000) % 251).unwrap_or(0))
        .collect()
}

#[tokio::test]
async fn a_5_mb_message_round_trips_in_chunks_under_the_servers_1_mib_limit() {
    let server = start_server::<Nats>();
    let publisher = connect::<Nats>(&server.url()).await;
    let subscriber = connect::<Nats>(&server.url()).await;
    let channel = conformance::unique_channel("large");
    let mut subscription = subscribe_to(&subscriber, &channel).await;
    let large = large_payload(5 * 1024 * 1024);

    publisher
        .publish(&channel, b"before")
        .await
        .expect("publish");
    publisher
        .publish(&channel, &large)
        .await
        .expect("publish 5 MB");
    publisher
        .publish(&channel, b"after")
        .await
        .expect("publish");
    assert_eq!(next_payload(&mut subscription).await, b"before");
    assert_eq!(next_payload(&mut subscription).await, large);
    assert_eq!(next_payload(&mut subscription).await, b"after");

    // A 5 MB reply to a request, and a request with a 5 MB payload.
    let answering = async {
        let BusEvent::Message(request) = next_event(&mut subscription).await else {
            panic!("expected the request");
        };
        assert_eq!(request.payload, large);
        let reply_to = request.reply_to.expect("a reply subject");
        subscriber
            .publish(&reply_to, &large[1..])
            .await
            .expect("answer with 5 MB");
    };
    let (answer, ()) = tokio::join!(publisher.request(&channel, &large, WAIT), answering);
    assert_eq!(answer.as_deref(), Ok(&large[1..]));
}

#[tokio::test]
async fn a_message_beyond_max_message_is_refused_by_the_publisher() {
    let server = start_server::<Nats>();
    let options = NatsOptions {
        max_message: 2 * 1024 * 1024,
        ..Nats::quick_options()
    };
    let bus = NatsBus::connect(&server.url(), options)
        .await
        .expect("connects");
    let result = bus
        .publish("too.large", &large_payload(3 * 1024 * 1024))
        .await;
    assert!(matches!(result, Err(BusError::Broker(_))), "{result:?}");
}
