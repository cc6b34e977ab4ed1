//! The integration tests every networked transport runs against a server of
//! its own: written once here, generic over [`TransportUnderTest`], and
//! expanded into `#[tokio::test]` items by [`transport_suite!`](crate::transport_suite).
//!
//! A transport's test file implements [`TransportUnderTest`] for a marker type,
//! calls `keyman_transport::transport_suite!(Marker);`, and keeps only the
//! tests that are its own.

use super::conformance;
use super::servers::{Broker, TestServer};
use super::support::{
    QUICK_BACKOFF, QUICK_TIMEOUT, next_event, next_payload, signal, subscribe_to, unused_port,
};
use crate::{Backoff, Bus, BusError, BusEvent, Lease, StateStore};
use std::fmt::Debug;
use std::time::{Duration, Instant};

/// The user name of the credentials test.
pub const TEST_USER: &str = "alice";
/// The password of the credentials test; it must never show in a `Debug` or an error.
pub const TEST_PASSWORD: &str = "s3cr3t-pw";

/// How a transport behaves while its server is down, where transports differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhileDown {
    /// A publish right after the stop already fails fast (the subscription
    /// reports the disconnection after it), and a subscribe fails with
    /// [`BusError::Disconnected`].
    FailsAtOnce,
    /// The subscription reports the disconnection first; then a publish and a
    /// subscribe fail with [`BusError::Disconnected`] or [`BusError::Timeout`].
    NoticedFirst,
}

/// What the shared suite needs to know of one transport: its bus, its server,
/// how to connect, its lease, and where it reports differently from others.
pub trait TransportUnderTest {
    /// The transport's bus.
    type Bus: Bus + Clone + Debug;
    /// The server it runs against.
    type Broker: Broker;
    /// The settings `connect` takes.
    type Options: Default;

    /// URLs that [`connect_with_defaults`](Self::connect_with_defaults) must
    /// refuse with [`BusError::Config`].
    const BAD_URLS: &'static [&'static str];
    /// Where a lease obtained by [`conformance_lease`](Self::conformance_lease)
    /// lives, as its `describe()` must show it.
    const LEASE_NAME: &'static str;
    /// How it behaves while its server is down.
    const WHILE_DOWN: WhileDown;
    /// What follows `host:port` in the URL the credentials test connects with
    /// (such as `/3`, a database number), or nothing.
    const CREDENTIALS_PATH: &'static str;
    /// A word the `Disconnected` reason must hold when the server stops
    /// answering (such as `PING`); `None` checks only the event.
    const FROZEN_REASON: Option<&'static str>;

    /// Connects to `url` with `options`.
    fn connect_with(
        url: &str,
        options: Self::Options,
    ) -> impl Future<Output = Result<Self::Bus, BusError>>;
    /// `options` with `operation_timeout` and `reconnect` set.
    fn with_link(
        options: Self::Options,
        operation_timeout: Duration,
        reconnect: Backoff,
    ) -> Self::Options;
    /// The quick options, a short operation timeout and a health check every
    /// 100 ms, so that a server that stops answering is noticed soon.
    fn health_watching_options() -> Self::Options;

    /// The default options with [`QUICK_TIMEOUT`] and [`QUICK_BACKOFF`].
    fn quick_options() -> Self::Options {
        Self::with_link(Self::Options::default(), QUICK_TIMEOUT, QUICK_BACKOFF)
    }
    /// Connects with the [quick options](Self::quick_options).
    fn connect_quick(url: &str) -> impl Future<Output = Result<Self::Bus, BusError>> {
        Self::connect_with(url, Self::quick_options())
    }
    /// Connects with the transport's default options.
    fn connect_with_defaults(url: &str) -> impl Future<Output = Result<Self::Bus, BusError>> {
        Self::connect_with(url, Self::Options::default())
    }
    /// The operation timeout `bus` was connected with.
    fn operation_timeout(bus: &Self::Bus) -> Duration;
    /// The lease the lease conformance test uses, at [`LEASE_NAME`](Self::LEASE_NAME).
    fn conformance_lease(bus: &Self::Bus) -> Box<dyn Lease>;
    /// The state stores and lease the store conformance test uses: a plain
    /// store on `first`, and the same records on `second` fenced by the lease
    /// it returns.
    fn conformance_stores(
        first: &Self::Bus,
        second: &Self::Bus,
    ) -> (Box<dyn StateStore>, Box<dyn StateStore>, Box<dyn Lease>);
    /// Waits until leases on `bus` can be used; by default at once.
    fn leases_ready(bus: &Self::Bus) -> impl Future<Output = ()> {
        let _ = bus;
        async {}
    }
    /// Starts a server that accepts only [`TEST_USER`] with [`TEST_PASSWORD`].
    fn start_with_test_user() -> TestServer<Self::Broker>;
}

/// Starts the transport's server; panics if it does not start.
pub fn start_server<T: TransportUnderTest>() -> TestServer<T::Broker> {
    TestServer::start().unwrap_or_else(|err| panic!("{} starts: {err}", T::Broker::NAME))
}

/// Connects with the quick test options; panics if that fails.
pub async fn connect<T: TransportUnderTest>(url: &str) -> T::Bus {
    T::connect_quick(url)
        .await
        .expect("connects to the test server")
}

/// The conformance suite on fresh handles.
pub async fn passes_the_conformance_suite<T: TransportUnderTest>() {
    let server = start_server::<T>();
    let url = server.url();
    conformance::run_all(|| connect::<T>(&url)).await;
}

/// The conformance suite on clones of one handle.
pub async fn a_shared_handle_passes_the_conformance_suite<T: TransportUnderTest>() {
    let server = start_server::<T>();
    let bus = connect::<T>(&server.url()).await;
    conformance::run_all_on_one_handle(&bus).await;
}

/// The lease conformance suite over two connections, and `describe()` names the lease.
pub async fn the_lease_passes_the_conformance_suite<T: TransportUnderTest>() {
    let server = start_server::<T>();
    let first = connect::<T>(&server.url()).await;
    let second = connect::<T>(&server.url()).await;
    T::leases_ready(&first).await;
    conformance::lease(
        T::conformance_lease(&first).as_ref(),
        T::conformance_lease(&second).as_ref(),
    )
    .await;
    assert!(
        T::conformance_lease(&first)
            .describe()
            .contains(T::LEASE_NAME)
    );
}

/// The state store conformance suite: a plain store and a fenced one on two
/// connections.
pub async fn the_state_store_passes_the_conformance_suite<T: TransportUnderTest>() {
    let server = start_server::<T>();
    let first = connect::<T>(&server.url()).await;
    let second = connect::<T>(&server.url()).await;
    T::leases_ready(&first).await;
    let (store, fenced, lease) = T::conformance_stores(&first, &second);
    conformance::state_store(store.as_ref(), fenced.as_ref(), lease.as_ref()).await;
}

/// Subscriptions recover from a restart of the server.
pub async fn subscriptions_recover_from_a_server_restart<T: TransportUnderTest>() {
    let mut server = start_server::<T>();
    let publisher = connect::<T>(&server.url()).await;
    let subscriber = connect::<T>(&server.url()).await;
    conformance::reconnect_after_restart(&publisher, &subscriber, || async {
        server
            .restart()
            .unwrap_or_else(|err| panic!("{} restarts: {err}", T::Broker::NAME));
    })
    .await;
}

/// Whether `result` failed as an operation on a stopped server may.
fn down<V>(result: &Result<V, BusError>) -> bool {
    matches!(
        result,
        Err(BusError::Disconnected(_)) | Err(BusError::Timeout(_))
    )
}

/// Publish, subscribe (and request, where supported) fail within the operation
/// timeout while the server is down, and work again once it is back.
pub async fn publish_while_the_server_is_down_fails_within_the_timeout<T: TransportUnderTest>() {
    let mut server = start_server::<T>();
    let bus = connect::<T>(&server.url()).await;
    let channel = conformance::unique_channel("down");
    let mut subscription = subscribe_to(&bus, &channel).await;

    server.stop().expect("stop");
    let expect_disconnected = async |subscription: &mut crate::Subscription| {
        assert!(matches!(
            next_event(subscription).await,
            BusEvent::Disconnected { .. }
        ));
    };
    if T::WHILE_DOWN == WhileDown::NoticedFirst {
        expect_disconnected(&mut subscription).await;
    }
    let timeout = T::operation_timeout(&bus);
    for _ in 0..3 {
        let started = Instant::now();
        let result = bus.publish(&channel, b"lost").await;
        assert!(down(&result), "publish while down: {result:?}");
        assert!(
            started.elapsed() < timeout + Duration::from_millis(500),
            "publish while down took {:?}",
            started.elapsed()
        );
    }
    if T::WHILE_DOWN == WhileDown::FailsAtOnce {
        expect_disconnected(&mut subscription).await;
    }
    let result = bus.subscribe(std::slice::from_ref(&channel)).await;
    if T::WHILE_DOWN == WhileDown::NoticedFirst {
        assert!(down(&result), "subscribe while down: {result:?}");
    } else {
        assert!(
            matches!(result, Err(BusError::Disconnected(_))),
            "subscribe while down: {result:?}"
        );
    }
    if bus.supports_request() {
        let result = bus.request(&channel, b"?", timeout).await;
        assert!(down(&result), "request while down: {result:?}");
    }

    server.restart().expect("restart");
    assert_eq!(next_event(&mut subscription).await, BusEvent::Reconnected);
    bus.publish(&channel, b"back")
        .await
        .expect("publish after restart");
    assert_eq!(next_payload(&mut subscription).await, b"back");
}

/// Every URL of [`TransportUnderTest::BAD_URLS`] is a configuration error.
pub async fn a_bad_url_is_a_configuration_error<T: TransportUnderTest>() {
    for url in T::BAD_URLS {
        let result = T::connect_with_defaults(url).await;
        assert!(
            matches!(result, Err(BusError::Config(_))),
            "{url:?} gave {result:?}"
        );
    }
}

/// Connecting to a port nobody listens on fails with `Disconnected` within a second.
pub async fn connecting_to_a_port_nobody_listens_on_fails_fast<T: TransportUnderTest>() {
    let port = unused_port();
    let started = Instant::now();
    let result =
        T::connect_with_defaults(&format!("{}://127.0.0.1:{port}", T::Broker::SCHEME)).await;
    assert!(
        matches!(result, Err(BusError::Disconnected(_))),
        "got {result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// A server with a user: the bus connects with the credentials, its `Debug`
/// never shows the password, and a wrong or missing password is a
/// configuration error that names the server but not the password.
pub async fn connects_with_user_and_password_and_never_shows_the_password<T: TransportUnderTest>() {
    let server = T::start_with_test_user();
    let port = server.port();
    let scheme = T::Broker::SCHEME;
    let bus = connect::<T>(&format!(
        "{scheme}://{TEST_USER}:{TEST_PASSWORD}@127.0.0.1:{port}{}",
        T::CREDENTIALS_PATH
    ))
    .await;
    let debug = format!("{bus:?}");
    assert!(!debug.contains(TEST_PASSWORD), "{debug}");
    let channel = conformance::unique_channel("auth");
    let mut subscription = subscribe_to(&bus, &channel).await;
    bus.publish(&channel, b"hi").await.expect("publish");
    assert_eq!(next_payload(&mut subscription).await, b"hi");

    for url in [
        format!("{scheme}://{TEST_USER}:wrong-pw@127.0.0.1:{port}"),
        format!("{scheme}://127.0.0.1:{port}"),
    ] {
        match T::connect_quick(&url).await {
            Err(BusError::Config(message)) => {
                assert!(!message.contains("wrong-pw"), "{message}");
                assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
            }
            other => panic!("refused credentials should be a configuration error, got {other:?}"),
        }
    }
}

/// A server frozen with `SIGSTOP` (sockets open, no answers) is reported as
/// `Disconnected`, and the subscription recovers once it is thawed.
pub async fn a_subscription_notices_a_server_that_stops_answering<T: TransportUnderTest>() {
    let server = start_server::<T>();
    let pid = server.pid().expect("running");
    let bus = T::connect_with(&server.url(), T::health_watching_options())
        .await
        .expect("connects");
    let channel = conformance::unique_channel("frozen");
    let mut subscription = subscribe_to(&bus, &channel).await;

    // A stopped process keeps its sockets open but answers nothing.
    signal(pid, "STOP");
    let event = next_event(&mut subscription).await;
    signal(pid, "CONT");
    match event {
        BusEvent::Disconnected { reason } => {
            if let Some(word) = T::FROZEN_REASON {
                assert!(reason.contains(word), "{reason}");
            }
        }
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert_eq!(next_event(&mut subscription).await, BusEvent::Reconnected);
    bus.publish(&channel, b"thawed").await.expect("publish");
    assert_eq!(next_payload(&mut subscription).await, b"thawed");
}

/// Expands to one `#[tokio::test]` for each test of
/// [`testing::suite`](crate::testing::suite), run with the
/// [`TransportUnderTest`](crate::testing::TransportUnderTest) given.
///
/// ```ignore
/// keyman_transport::transport_suite!(Redis);
/// ```
#[macro_export]
macro_rules! transport_suite {
    ($transport:ty) => {
        $crate::transport_suite!(@tests $transport;
            passes_the_conformance_suite,
            a_shared_handle_passes_the_conformance_suite,
            the_lease_passes_the_conformance_suite,
            the_state_store_passes_the_conformance_suite,
            subscriptions_recover_from_a_server_restart,
            publish_while_the_server_is_down_fails_within_the_timeout,
            a_bad_url_is_a_configuration_error,
            connecting_to_a_port_nobody_listens_on_fails_fast,
            connects_with_user_and_password_and_never_shows_the_password,
            a_subscription_notices_a_server_that_stops_answering,
        );
    };
    (@tests $transport:ty; $($test:ident,)*) => {
        $(
            #[::tokio::test]
            async fn $test() {
                $crate::testing::suite::$test::<$transport>().await;
            }
        )*
    };
}
