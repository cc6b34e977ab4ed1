//! NatsBus against a nats-server each test starts for itself.

use keyman_nats::{NatsBus, NatsOptions};
use keyman_transport::testing::{
    NatsServer, QUICK_BACKOFF, QUICK_TIMEOUT, conformance, next_event, next_payload, signal,
    subscribe_to, unused_port,
};
use keyman_transport::{Bus, BusError, BusEvent, Lease};
use std::time::{Duration, Instant};

const WAIT: Duration = conformance::EVENT_TIMEOUT;

fn start_server() -> NatsServer {
    NatsServer::start().expect("nats-server starts")
}

fn quick_options() -> NatsOptions {
    NatsOptions {
        operation_timeout: QUICK_TIMEOUT,
        reconnect: QUICK_BACKOFF,
        ..NatsOptions::default()
    }
}

async fn connect(url: &str) -> NatsBus {
    NatsBus::connect(url, quick_options())
        .await
        .expect("connects to the test server")
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
    // JetStream may answer a moment after the server greets its first client.
    let warmup = first.lease("keyman", "leader.warmup");
    let until = Instant::now() + WAIT;
    while let Err(err) = warmup.try_acquire("warmup", Duration::from_millis(1)).await {
        assert!(Instant::now() < until, "JetStream never answered: {err}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    conformance::lease(
        &first.lease("keyman", "leader.conformance"),
        &second.lease("keyman", "leader.conformance"),
    )
    .await;
    assert!(
        first
            .lease("keyman", "leader.conformance")
            .describe()
            .contains("keyman/leader.conformance")
    );
}

#[tokio::test]
async fn the_state_store_passes_the_conformance_suite() {
    let server = start_server();
    let first = connect(&server.url()).await;
    let second = connect(&server.url()).await;
    let warmup = first.lease("keyman", "leader.warmup");
    let until = Instant::now() + WAIT;
    while let Err(err) = warmup.try_acquire("warmup", Duration::from_millis(1)).await {
        assert!(Instant::now() < until, "JetStream never answered: {err}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let lease = second.lease("keyman", "leader.store-conformance");
    conformance::state_store(
        &first.state_store("keyman", "state.store-conformance"),
        &second
            .state_store("keyman", "state.store-conformance")
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
        server.restart().expect("nats-server restarts");
    })
    .await;
}

#[tokio::test]
async fn publish_while_the_server_is_down_fails_within_the_timeout() {
    let mut server = start_server();
    let bus = connect(&server.url()).await;
    let channel = conformance::unique_channel("down");
    let mut subscription = subscribe_to(&bus, &channel).await;

    server.stop().expect("stop");
    assert!(matches!(
        next_event(&mut subscription).await,
        BusEvent::Disconnected { .. }
    ));
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
    let result = bus.subscribe(std::slice::from_ref(&channel)).await;
    assert!(
        matches!(
            result,
            Err(BusError::Disconnected(_)) | Err(BusError::Timeout(_))
        ),
        "subscribe while down: {result:?}"
    );
    let result = bus.request(&channel, b"?", timeout).await;
    assert!(
        matches!(
            result,
            Err(BusError::Disconnected(_)) | Err(BusError::Timeout(_))
        ),
        "request while down: {result:?}"
    );

    server.restart().expect("restart");
    assert_eq!(next_event(&mut subscription).await, BusEvent::Reconnected);
    bus.publish(&channel, b"back")
        .await
        .expect("publish after restart");
    assert_eq!(next_payload(&mut subscription).await, b"back");
}

#[tokio::test]
async fn request_without_a_responder_fails_fast_with_no_responders() {
    let server = start_server();
    let bus = connect(&server.url()).await;
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
    let server = start_server();
    let requester = connect(&server.url()).await;
    let responder = connect(&server.url()).await;
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
async fn a_bad_url_is_a_configuration_error() {
    for url in [
        "",
        "http://127.0.0.1:4222",
        "nats://127.0.0.1:notaport",
        " , ",
    ] {
        let result = NatsBus::connect(url, NatsOptions::default()).await;
        assert!(
            matches!(result, Err(BusError::Config(_))),
            "{url:?} gave {result:?}"
        );
    }
}

#[tokio::test]
async fn connecting_to_a_port_nobody_listens_on_fails_fast() {
    let port = unused_port();
    let started = Instant::now();
    let result =
        NatsBus::connect(&format!("nats://127.0.0.1:{port}"), NatsOptions::default()).await;
    assert!(
        matches!(result, Err(BusError::Disconnected(_))),
        "got {result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn connects_with_user_and_password_and_never_shows_the_password() {
    let server = NatsServer::start_with_args(&["--user", "alice", "--pass", "s3cr3t-pw"])
        .expect("nats-server with a user starts");
    let port = server.port();
    let bus = connect(&format!("nats://alice:s3cr3t-pw@127.0.0.1:{port}")).await;
    let debug = format!("{bus:?}");
    assert!(!debug.contains("s3cr3t-pw"), "{debug}");
    let channel = conformance::unique_channel("auth");
    let mut subscription = subscribe_to(&bus, &channel).await;
    bus.publish(&channel, b"hi").await.expect("publish");
    assert_eq!(next_payload(&mut subscription).await, b"hi");

    for url in [
        format!("nats://alice:wrong-pw@127.0.0.1:{port}"),
        format!("nats://127.0.0.1:{port}"),
    ] {
        match NatsBus::connect(&url, quick_options()).await {
            Err(BusError::Config(message)) => {
                assert!(!message.contains("wrong-pw"), "{message}");
                assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
            }
            other => panic!("refused credentials should be a configuration error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_invalid_subject_is_refused() {
    let server = start_server();
    let bus = connect(&server.url()).await;
    assert!(matches!(
        bus.publish("has space", b"x").await,
        Err(BusError::Config(_))
    ));
    assert!(matches!(
        bus.subscribe(&["has space".to_owned()]).await,
        Err(BusError::Config(_))
    ));
}

#[tokio::test]
async fn a_subscription_notices_a_server_that_stops_answering() {
    let server = start_server();
    let pid = server.pid().expect("running");
    let options = NatsOptions {
        operation_timeout: Duration::from_millis(500),
        health_check_interval: Duration::from_millis(100),
        ..quick_options()
    };
    let bus = NatsBus::connect(&server.url(), options)
        .await
        .expect("connects");
    let channel = conformance::unique_channel("frozen");
    let mut subscription = subscribe_to(&bus, &channel).await;

    // A stopped process keeps its sockets open but answers nothing.
    signal(pid, "STOP");
    let event = next_event(&mut subscription).await;
    signal(pid, "CONT");
    assert!(
        matches!(event, BusEvent::Disconnected { .. }),
        "expected Disconnected, got {event:?}"
    );
    assert_eq!(next_event(&mut subscription).await, BusEvent::Reconnected);
    bus.publish(&channel, b"thawed").await.expect("publish");
    assert_eq!(next_payload(&mut subscription).await, b"thawed");
}

/// A payload well above the server's 1 MiB limit, not a repetition of one byte.
fn large_payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 7 + i / 1000) % 251).unwrap_or(0))
        .collect()
}

#[tokio::test]
async fn a_5_mb_message_round_trips_in_chunks_under_the_servers_1_mib_limit() {
    let server = start_server();
    let publisher = connect(&server.url()).await;
    let subscriber = connect(&server.url()).await;
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
    let server = start_server();
    let options = NatsOptions {
        max_message: 2 * 1024 * 1024,
        ..quick_options()
    };
    let bus = NatsBus::connect(&server.url(), options)
        .await
        .expect("connects");
    let result = bus
        .publish("too.large", &large_payload(3 * 1024 * 1024))
        .await;
    assert!(matches!(result, Err(BusError::Broker(_))), "{result:?}");
}
