//! MemoryBus: the conformance suite and its own promises (slow subscribers,
//! unsubscribe on drop, request/reply, close).

use keyman_transport::testing::conformance;
use keyman_transport::{Bus, BusError, BusEvent, MemoryBus, Message, Subscription};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

async fn next_event(subscription: &mut Subscription) -> BusEvent {
    tokio::time::timeout(WAIT, subscription.next())
        .await
        .expect("an event within the deadline")
        .expect("the subscription is open")
}

fn message(channel: &str, payload: &[u8]) -> BusEvent {
    BusEvent::Message(Message {
        channel: channel.to_owned(),
        payload: payload.to_vec(),
        reply_to: None,
    })
}

#[tokio::test]
async fn passes_the_conformance_suite() {
    let bus = MemoryBus::new();
    conformance::run_all(|| {
        let bus = bus.clone();
        async move { bus }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite_on_a_multi_threaded_runtime() {
    let bus = MemoryBus::new();
    conformance::run_all(|| {
        let bus = bus.clone();
        async move { bus }
    })
    .await;
}

#[tokio::test]
async fn dropping_a_subscription_frees_it() {
    let bus = MemoryBus::new();
    let channels = vec!["a".to_owned(), "b".to_owned(), "a".to_owned()];
    let subscription = bus.subscribe(&channels).await.expect("subscribe");
    let other = bus.subscribe(&channels[..1]).await.expect("subscribe");
    assert_eq!(bus.subscriber_count("a"), 2);
    assert_eq!(bus.subscriber_count("b"), 1);
    drop(subscription);
    assert_eq!(bus.subscriber_count("a"), 1);
    assert_eq!(bus.subscriber_count("b"), 0);
    drop(other);
    assert_eq!(bus.subscriber_count("a"), 0);
}

#[tokio::test]
async fn a_channel_listed_twice_is_delivered_once() {
    let bus = MemoryBus::new();
    let mut subscription = bus
        .subscribe(&["x".to_owned(), "x".to_owned()])
        .await
        .expect("subscribe");
    bus.publish("x", b"1").await.expect("publish");
    bus.publish("x", b"2").await.expect("publish");
    assert_eq!(next_event(&mut subscription).await, message("x", b"1"));
    assert_eq!(next_event(&mut subscription).await, message("x", b"2"));
}

#[tokio::test]
async fn a_slow_subscriber_makes_publish_wait_and_loses_nothing() {
    let bus = MemoryBus::with_queue_capacity(8);
    let mut slow = bus.subscribe(&["c".to_owned()]).await.expect("subscribe");
    let mut fast = bus.subscribe(&["c".to_owned()]).await.expect("subscribe");
    for index in 0..8u8 {
        bus.publish("c", &[index]).await.expect("publish");
        assert_eq!(next_event(&mut fast).await, message("c", &[index]));
    }
    // The slow queue is full: the next publish waits for it.
    let publisher = tokio::spawn({
        let bus = bus.clone();
        async move {
            for index in 8..20u8 {
                bus.publish("c", &[index]).await.expect("publish");
            }
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(
        !publisher.is_finished(),
        "publish waits for the slow subscriber"
    );
    for index in 0..8u8 {
        assert_eq!(next_event(&mut slow).await, message("c", &[index]));
    }
    for index in 8..20u8 {
        assert_eq!(next_event(&mut slow).await, message("c", &[index]));
        assert_eq!(next_event(&mut fast).await, message("c", &[index]));
    }
    publisher.await.expect("publisher");
}

#[test]
fn a_publish_outside_a_runtime_queues_while_there_is_room() {
    let bus = MemoryBus::with_queue_capacity(8);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut subscription = runtime
        .block_on(bus.subscribe(&["c".to_owned()]))
        .expect("subscribe");
    for index in 0..8u8 {
        poll_once(bus.publish("c", &[index])).expect("publish");
    }
    let events = runtime.block_on(async {
        let mut events = Vec::new();
        for _ in 0..8 {
            events.push(next_event(&mut subscription).await);
        }
        events
    });
    let expected: Vec<BusEvent> = (0..8u8).map(|index| message("c", &[index])).collect();
    assert_eq!(events, expected);
}

/// Polls a future that never waits, outside of any runtime.
fn poll_once<F: std::future::Future>(future: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("MemoryBus::publish must not wait while there is room"),
    }
}

#[tokio::test]
async fn request_without_a_subscriber_fails_at_once() {
    let bus = MemoryBus::new();
    let started = Instant::now();
    let result = bus.request("nobody", b"?", WAIT).await;
    assert_eq!(result, Err(BusError::NoResponders("nobody".to_owned())));
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn request_times_out_when_the_subscriber_does_not_answer() {
    let bus = MemoryBus::new();
    let mut silent = bus.subscribe(&["q".to_owned()]).await.expect("subscribe");
    let result = bus.request("q", b"?", Duration::from_millis(50)).await;
    assert_eq!(result, Err(BusError::Timeout(Duration::from_millis(50))));
    match next_event(&mut silent).await {
        BusEvent::Message(request) => {
            let reply_to = request.reply_to.expect("a reply address");
            // Its inbox is gone once the request gave up.
            assert_eq!(bus.subscriber_count(&reply_to), 0);
        }
        other => panic!("expected the request, got {other:?}"),
    }
}

#[tokio::test]
async fn close_ends_subscriptions_and_refuses_further_use() {
    let bus = MemoryBus::new();
    let mut subscription = bus.subscribe(&["c".to_owned()]).await.expect("subscribe");
    bus.clone().close();
    assert_eq!(
        tokio::time::timeout(WAIT, subscription.next())
            .await
            .expect("ends"),
        None
    );
    assert_eq!(bus.publish("c", b"x").await, Err(BusError::Closed));
    assert!(matches!(
        bus.subscribe(&["c".to_owned()]).await,
        Err(BusError::Closed)
    ));
    assert_eq!(bus.request("c", b"x", WAIT).await, Err(BusError::Closed));
}
