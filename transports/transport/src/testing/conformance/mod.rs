//! The behaviour every [`Bus`] must show, as async checks that panic with a
//! clear message when a transport falls short.
//!
//! Each check takes a `publisher` and a `subscriber`: two handles on the same
//! broker, preferably on separate connections (for an in-process bus, two clones).
//! Passing the same handle twice is allowed. Every check uses channels of its
//! own, so the checks may share one broker and run one after another.
//!
//! The checks of a [`Lease`](crate::Lease) and of a
//! [`StateStore`](crate::StateStore) are [`lease`] and [`state_store`].

use crate::{Bus, BusError, BusEvent, Message, Subscription};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a check waits for an event it expects.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`reconnect_after_restart`] waits for the transport to notice the
/// restart and to recover from it.
pub const RECONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs every check below except [`reconnect_after_restart`], one after another.
///
/// `make_bus` is called twice, for the publishing and the subscribing handle;
/// each call should return a new handle on the same broker.
pub async fn run_all<F, Fut, B>(mut make_bus: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = B>,
    B: Bus,
{
    let publisher = make_bus().await;
    let subscriber = make_bus().await;
    let (publisher, subscriber): (&dyn Bus, &dyn Bus) = (&publisher, &subscriber);
    round_trip(publisher, subscriber).await;
    subscribe_is_live_on_return(publisher, subscriber).await;
    ordering_per_channel(publisher, subscriber).await;
    slow_subscriber_loses_nothing(publisher, subscriber).await;
    many_subscribers(publisher, subscriber).await;
    channels_are_isolated(publisher, subscriber).await;
    large_payload(publisher, subscriber).await;
    unsubscribe_on_drop(publisher, subscriber).await;
    publish_without_subscriber(publisher).await;
    subscribe_to_no_channel_is_refused(subscriber).await;
    request_reply(publisher, subscriber).await;
    slow_answer_to_a_resent_request(publisher, subscriber).await;
    prefix_subscription(publisher, subscriber).await;
}

/// [`run_all`] with clones of one handle as publisher and subscriber: for a
/// bus whose clones share one connection.
pub async fn run_all_on_one_handle<B: Bus + Clone>(bus: &B) {
    run_all(|| {
        let bus = bus.clone();
        async move { bus }
    })
    .await;
}

/// A published message arrives with its channel, its exact bytes (any bytes, also
/// none) and no `reply_to`.
pub async fn round_trip(publisher: &dyn Bus, subscriber: &dyn Bus) {
    let channel = unique_channel("round-trip");
    let mut subscription = subscribe(subscriber, std::slice::from_ref(&channel)).await;
    let every_byte: Vec<u8> = (0..=255u8).collect();
    for payload in [b"hello".to_vec(), every_byte, Vec::new()] {
        publish(publisher, &channel, &payload).await;
        let message = next_message(&mut subscription, "round trip").await;
        assert_eq!(message.channel, channel, "the message names its channel");
        assert_eq!(message.payload, payload, "the payload arrives unchanged");
        assert_eq!(
            message.reply_to, None,
            "a plain publish carries no reply address"
        );
    }
}

/// A subscription receives a message published right after `subscribe` returned,
/// even from another connection.
pub async fn subscribe_is_live_on_return(publisher: &dyn Bus, subscriber: &dyn Bus) {
    for round in 0..20 {
        let channel = unique_channel("live-on-return");
        let mut subscription = subscribe(subscriber, std::slice::from_ref(&channel)).await;
        let payload = format!("round {round}");
        publish(publisher, &channel, payload.as_bytes()).await;
        let message = next_message(&mut subscription, "a message right after subscribe").await;
        assert_eq!(message.payload, payload.as_bytes());
    }
}

/// One publisher's messages on a channel arrive in the order they were published:
/// 1000 on one channel, then 2 × 200 interleaved on two channels of one subscription.
pub async fn ordering_per_channel(publisher: &dyn Bus, subscriber: &dyn Bus) {
    const COUNT: usize = 1000;
    let channel = unique_channel("ordering");
    let mut subscription = subscribe(subscriber, std::slice::from_ref(&channel)).await;
    let publishing = async {
        for index in 0..COUNT {
            publish(publisher, &channel, index.to_string().as_bytes()).await;
        }
    };
    let receiving = async {
        let mut received = Vec::with_capacity(COUNT);
        for _ in 0..COUNT {
            let message = next_message(&mut subscription, "ordered messages").await;
            received.push(String::from_utf8_lossy(&message.payload).into_owned());
        }
        received
    };
    let ((), received) = tokio::join!(publishing, receiving);
    let expected: Vec<String> = (0..COUNT).map(|index| index.to_string()).collect();
    assert!(
        received == expected,
        "messages arrived out of order; first difference at index {:?}",
        received.iter().zip(&expected).position(|(a, b)| a != b)
    );

    const PER_CHANNEL: usize = 200;
    let first = unique_channel("ordering-first");
    let second = unique_channel("ordering-second");
    let mut subscription = subscribe(subscriber, &[first.clone(), second.clone()]).await;
    for index in 0..PER_CHANNEL {
        publish(publisher, &first, index.to_string().as_bytes()).await;
        publish(publisher, &second, index.to_string().as_bytes()).await;
    }
    let mut next_index = [0usize; 2];
    for _ in 0..2 * PER_CHANNEL {
        let message = next_message(&mut subscription, "interleaved messages").await;
        let slot = if message.channel == first {
            0
        } else if message.channel == second {
            1
        } else {
            panic!("message on channel {:?}, not subscribed", message.channel);
        };
        assert_eq!(
            message.payload,
            next_index[slot].to_string().as_bytes(),
            "messages on {} arrived out of order",
            message.channel
        );
        next_index[slot] += 1;
    }
}

/// A subscriber that reads nothing for a while, then everything, loses nothing:
/// 20 000 messages (five times the default queue) published meanwhile all
/// arrive, in order, with no gap reported. The transport waits for room (and
/// the broker buffers); it never drops.
pub async fn slow_subscriber_loses_nothing(publisher: &dyn Bus, subscriber: &dyn Bus) {
    const COUNT: usize = 20_000;
    let channel = unique_channel("slow-subscriber");
    let mut subscription = subscribe(subscriber, std::slice::from_ref(&channel)).await;
    let publishing = async {
        for index in 0..COUNT {
            publish(publisher, &channel, index.to_string().as_bytes()).await;
        }
    };
    let receiving = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut received = Vec::with_capacity(COUNT);
        for _ in 0..COUNT {
            let message = next_message(&mut subscription, "every message of a burst").await;
            received.push(String::from_utf8_lossy(&message.payload).into_owned());
        }
        received
    };
    let ((), received) = tokio::join!(publishing, receiving);
    let expected: Vec<String> = (0..COUNT).map(|index| index.to_string()).collect();
    assert!(
        received == expected,
        "a slow subscriber lost or reordered messages; first difference at index {:?}",
        received.iter().zip(&expected).position(|(a, b)| a != b)
    );
}

/// Every subscription of a channel, on either handle, receives every message, in order.
pub async fn many_subscribers(publisher: &dyn Bus, subscriber: &dyn Bus) {
    const COUNT: usize = 100;
    let channel = unique_channel("many-subscribers");
    let mut subscriptions = Vec::new();
    for _ in 0..8 {
        subscriptions.push(subscribe(subscriber, std::slice::from_ref(&channel)).await);
    }
    for _ in 0..2 {
        subscriptions.push(subscribe(publisher, std::slice::from_ref(&channel)).await);
    }
    for index in 0..COUNT {
        publish(publisher, &channel, index.to_string().as_bytes()).await;
    }
    for (number, subscription) in subscriptions.iter_mut().enumerate() {
        for index in 0..COUNT {
            let message = next_message(subscription, "a message for every subscriber").await;
            assert_eq!(
                message.payload,
                index.to_string().as_bytes(),
                "subscriber {number} got a wrong message"
            );
        }
    }
}

/// A subscription receives only the channels it subscribed to, also when other
/// channel names start with its own.
pub async fn channels_are_isolated(publisher: &dyn Bus, subscriber: &dyn Bus) {
    let base = unique_channel("isolated");
    let channels = [base.clone(), format!("{base}-more"), format!("{base}.sub")];
    let mut subscriptions = Vec::new();
    for channel in &channels {
        subscriptions.push(subscribe(subscriber, std::slice::from_ref(channel)).await);
    }
    // Published in reverse, so a message leaking into another subscription
    // arrives there before that subscription's own message.
    for channel in channels.iter().rev() {
        publish(publisher, channel, channel.as_bytes()).await;
    }
    for channel in &channels {
        publish(publisher, channel, b"end").await;
    }
    for (channel, subscription) in channels.iter().zip(&mut subscriptions) {
        for expected in [channel.as_bytes(), b"end"] {
            let message = next_message(subscription, "a message on its own channel").await;
            assert_eq!(
                (&message.channel, message.payload.as_slice()),
                (channel, expected),
                "the subscription of {channel} received a message of another channel"
            );
        }
    }
}

/// A 1 MiB payload arrives intact.
pub async fn large_payload(publisher: &dyn Bus, subscriber: &dyn Bus) {
    let channel = unique_channel("large-payload");
    let mut subscription = subscribe(subscriber, std::slice::from_ref(&channel)).await;
    let mut state: u32 = 0x9e37_79b9;
    let payload: Vec<u8> = (0..1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state.to_le_bytes()[0]
        })
        .collect();
    publish(publisher, &channel, &payload).await;
    let message = next_message(&mut subscription, "a 1 MiB message").await;
    assert_eq!(
        message.payload.len(),
        payload.len(),
        "payload length changed"
    );
    assert!(message.payload == payload, "payload bytes changed");
}

/// Dropping a subscription stops its delivery and leaves the others of the same
/// channel working; a new subscription of that channel gets each message once.
pub async fn unsubscribe_on_drop(publisher: &dyn Bus, subscriber: &dyn Bus) {
    let channel = unique_channel("unsubscribe");
    let dropped = subscribe(subscriber, std::slice::from_ref(&channel)).await;
    let mut kept = subscribe(subscriber, std::slice::from_ref(&channel)).await;
    publish(publisher, &channel, b"first").await;
    assert_eq!(next_message(&mut kept, "first").await.payload, b"first");
    drop(dropped);
    publish(publisher, &channel, b"second").await;
    assert_eq!(next_message(&mut kept, "second").await.payload, b"second");
    let mut renewed = subscribe(subscriber, std::slice::from_ref(&channel)).await;
    publish(publisher, &channel, b"third").await;
    publish(publisher, &channel, b"fourth").await;
    for subscription in [&mut kept, &mut renewed] {
        assert_eq!(next_message(subscription, "third").await.payload, b"third");
        assert_eq!(
            next_message(subscription, "fourth").await.payload,
            b"fourth",
            "each subscription gets each message once"
        );
    }
}

/// Publishing on a channel nobody subscribed to succeeds.
pub async fn publish_without_subscriber(bus: &dyn Bus) {
    let channel = unique_channel("nobody-listens");
    for _ in 0..10 {
        publish(bus, &channel, b"into the void").await;
    }
}

/// Subscribing to an empty list of channels fails with [`BusError::Config`],
/// and a channel listed twice is delivered once.
pub async fn subscribe_to_no_channel_is_refused(bus: &dyn Bus) {
    let result = bus.subscribe(&[]).await;
    assert!(
        matches!(result, Err(BusError::Config(_))),
        "subscribe to no channel: {result:?}"
    );
    let channel = unique_channel("listed-twice");
    let mut subscription = subscribe(bus, &[channel.clone(), channel.clone()]).await;
    publish(bus, &channel, b"once").await;
    publish(bus, &channel, b"twice").await;
    assert_eq!(
        next_message(&mut subscription, "once").await.payload,
        b"once"
    );
    assert_eq!(
        next_message(&mut subscription, "twice").await.payload,
        b"twice",
        "a channel listed twice is delivered once"
    );
}

/// Native request/reply: on a transport with it, a request nobody subscribed to
/// fails fast with [`BusError::NoResponders`], and a subscriber that publishes on
/// `reply_to` answers it. On a transport without it, `request` returns
/// [`BusError::Unsupported`].
pub async fn request_reply(requester: &dyn Bus, responder: &dyn Bus) {
    let channel = unique_channel("request");
    if !requester.supports_request() {
        let result = requester
            .request(&channel, b"question", Duration::from_secs(1))
            .await;
        assert!(
            matches!(result, Err(BusError::Unsupported(_))),
            "request on a transport without native request/reply: {result:?}"
        );
        return;
    }

    let started = Instant::now();
    let result = requester
        .request(&channel, b"question", EVENT_TIMEOUT)
        .await;
    assert!(
        matches!(result, Err(BusError::NoResponders(_))),
        "request without a responder: {result:?}"
    );
    assert!(
        started.elapsed() < EVENT_TIMEOUT / 2,
        "no responders took {:?}, as long as a timeout",
        started.elapsed()
    );

    let mut subscription = subscribe(responder, std::slice::from_ref(&channel)).await;
    let answering = async {
        let request = next_message(&mut subscription, "a request").await;
        let reply_to = request
            .reply_to
            .unwrap_or_else(|| panic!("a request must carry a reply address"));
        let mut answer = b"re: ".to_vec();
        answer.extend_from_slice(&request.payload);
        publish(responder, &reply_to, &answer).await;
    };
    let asking = requester.request(&channel, b"question", EVENT_TIMEOUT);
    let ((), answer) = tokio::join!(answering, asking);
    assert_eq!(answer.as_deref(), Ok(&b"re: question"[..]));
}

/// A request sent again while its answer is on the way keeps waiting for
/// that answer: the responder answers only the first send, after several
/// re-sends, and the requester takes it (every send carried the same reply
/// address). A transport without native request/reply is not asked.
pub async fn slow_answer_to_a_resent_request(requester: &dyn Bus, responder: &dyn Bus) {
    if !requester.supports_request() {
        return;
    }
    let channel = unique_channel("slow-answer");
    let resend_every = Duration::from_millis(100);
    let mut subscription = subscribe(responder, std::slice::from_ref(&channel)).await;
    let answering = async {
        let first = next_message(&mut subscription, "the first send").await;
        let reply_to = first
            .reply_to
            .unwrap_or_else(|| panic!("a request must carry a reply address"));
        // Wait for three re-sends before answering the first send.
        for n in 1..=3 {
            let again = next_message(&mut subscription, &format!("re-send {n}")).await;
            assert_eq!(
                again.payload, first.payload,
                "re-send {n} carries the request"
            );
            assert_eq!(
                again.reply_to.as_deref(),
                Some(reply_to.as_str()),
                "re-send {n} asks for the answer at the same address"
            );
        }
        publish(responder, &reply_to, b"late answer").await;
    };
    let asking = requester.request_resending(&channel, b"question", EVENT_TIMEOUT, resend_every);
    let ((), answer) = tokio::join!(answering, asking);
    assert_eq!(
        answer.as_deref(),
        Ok(&b"late answer"[..]),
        "the answer to the first send, after re-sends"
    );
}

/// After the broker restarts, a subscription reports `Disconnected` and then
/// `Reconnected`, and a message published after that is delivered to it.
///
/// `restart` must stop the broker and start it again at the same address (for
/// example `|| async { server.restart().expect("restart") }`). Publishing is
/// retried while the publisher's own connection recovers.
pub async fn reconnect_after_restart<R, Fut>(publisher: &dyn Bus, subscriber: &dyn Bus, restart: R)
where
    R: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let channel = unique_channel("reconnect");
    let mut subscription = subscribe(subscriber, std::slice::from_ref(&channel)).await;
    publish(publisher, &channel, b"before").await;
    assert_eq!(
        next_message(&mut subscription, "before the restart")
            .await
            .payload,
        b"before"
    );

    restart().await;

    let event = next_event(&mut subscription, RECONNECT_TIMEOUT, "Disconnected").await;
    assert!(
        matches!(event, BusEvent::Disconnected { .. }),
        "expected Disconnected after the restart, got {event:?}"
    );
    let event = next_event(&mut subscription, RECONNECT_TIMEOUT, "Reconnected").await;
    assert_eq!(
        event,
        BusEvent::Reconnected,
        "expected Reconnected after Disconnected"
    );

    let deadline = Instant::now() + RECONNECT_TIMEOUT;
    loop {
        match publisher.publish(&channel, b"after").await {
            Ok(()) => break,
            // The publisher's own connection may still be coming back.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(err) => {
                panic!("publish still fails {RECONNECT_TIMEOUT:?} after the restart: {err}")
            }
        }
    }
    let message = next_message(&mut subscription, "after the restart").await;
    assert_eq!(message.payload, b"after");
}

/// [`Bus::subscribe_with_prefixes`]: a subscription to a channel and to the
/// channels that start with `{channel}-` receives exactly those, in the order
/// they were published, and a request always before the reply to it (the
/// replier answers from another subscription). Lists that could deliver a
/// message twice, and empty prefixes, are refused.
pub async fn prefix_subscription(publisher: &dyn Bus, subscriber: &dyn Bus) {
    let channel = unique_channel("prefixes");
    let prefix = format!("{channel}-");
    let other = unique_channel("prefixes-other");
    let channels = std::slice::from_ref(&channel);
    let mut watch = match subscriber
        .subscribe_with_prefixes(channels, std::slice::from_ref(&prefix))
        .await
    {
        Ok(watch) => watch,
        Err(err) => panic!("subscribe_with_prefixes failed: {err}"),
    };
    let sent = [
        (channel.clone(), "request 1"),
        (format!("{prefix}4711"), "reply 1"),
        (format!("{channel}x"), "not matched: no dash"),
        (other.clone(), "not matched: another channel"),
        (format!("{other}-4711"), "not matched: another prefix"),
        (channel.clone(), "request 2"),
        (format!("{prefix}a.b"), "reply 2"),
        (prefix.clone(), "reply 3: the prefix itself"),
        (channel.clone(), "last"),
    ];
    for (to, payload) in &sent {
        publish(publisher, to, payload.as_bytes()).await;
    }
    for (to, payload) in sent.iter().filter(|(_, p)| !p.starts_with("not matched")) {
        let message = next_message(&mut watch, "a message of a prefix subscription").await;
        assert_eq!(
            (message.channel.as_str(), message.payload.as_slice()),
            (to.as_str(), payload.as_bytes()),
            "a prefix subscription delivers exactly the listed and matched channels, in order"
        );
    }

    // A replier that answers each request on `{channel}-{n}` as it receives it.
    let mut replier = subscribe(publisher, channels).await;
    for round in 0..50 {
        publish(subscriber, &channel, format!("ask {round}").as_bytes()).await;
        let asked = next_message(&mut replier, "a request").await;
        assert_eq!(asked.payload, format!("ask {round}").as_bytes());
        publish(publisher, &format!("{prefix}{round}"), b"answer").await;
        let first = next_message(&mut watch, "a request before its reply").await;
        let second = next_message(&mut watch, "a reply after its request").await;
        assert_eq!(
            (first.channel.as_str(), second.channel),
            (channel.as_str(), format!("{prefix}{round}")),
            "round {round}: the request arrives before its reply"
        );
    }
    drop(watch);

    for (channels, prefixes, why) in [
        (
            vec![channel.clone()],
            vec![String::new()],
            "an empty prefix",
        ),
        (
            vec![format!("{prefix}x")],
            vec![prefix.clone()],
            "a channel that starts with a prefix",
        ),
        (Vec::new(), vec![prefix.clone()], "no channel"),
    ] {
        assert!(
            matches!(
                subscriber
                    .subscribe_with_prefixes(&channels, &prefixes)
                    .await,
                Err(BusError::Config(_))
            ),
            "{why} is refused"
        );
    }
}

/// A channel name no other check or test run uses.
pub fn unique_channel(check: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    format!(
        "keyman-conformance.{check}.{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

async fn subscribe(bus: &dyn Bus, channels: &[String]) -> Subscription {
    bus.subscribe(channels)
        .await
        .unwrap_or_else(|err| panic!("subscribe to {channels:?} failed: {err}"))
}

async fn publish(bus: &dyn Bus, channel: &str, payload: &[u8]) {
    bus.publish(channel, payload)
        .await
        .unwrap_or_else(|err| panic!("publish on {channel} failed: {err}"));
}

async fn next_event(subscription: &mut Subscription, within: Duration, what: &str) -> BusEvent {
    match tokio::time::timeout(within, subscription.next()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the subscription ended while waiting for {what}"),
        Err(_) => panic!("no event within {within:?} while waiting for {what}"),
    }
}

/// The next event, which must be a message.
async fn next_message(subscription: &mut Subscription, what: &str) -> Message {
    match next_event(subscription, EVENT_TIMEOUT, what).await {
        BusEvent::Message(message) => message,
        other => panic!("expected a message ({what}), got {other:?}"),
    }
}

mod lease;
mod store;

pub use lease::lease;
pub use store::state_store;
