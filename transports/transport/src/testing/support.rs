//! Small helpers for a transport's own integration tests (beyond the
//! [`conformance`](super::conformance) suite): waiting for events, freezing a
//! server, a port nobody listens on. They panic with a clear message, as test
//! code does.

use crate::{Backoff, Bus, BusEvent, Subscription};
use std::time::Duration;

/// A reconnection backoff for tests: 20 ms doubling up to 200 ms.
pub const QUICK_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(20),
    max: Duration::from_millis(200),
};

/// An operation timeout for tests: 1 s.
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(1);

/// The next event of `subscription`; panics if none comes within
/// [`EVENT_TIMEOUT`](super::conformance::EVENT_TIMEOUT) or the subscription ends.
pub async fn next_event(subscription: &mut Subscription) -> BusEvent {
    tokio::time::timeout(super::conformance::EVENT_TIMEOUT, subscription.next())
        .await
        .expect("an event within the deadline")
        .expect("the subscription is open")
}

/// The payload of the next event, which must be a message.
pub async fn next_payload(subscription: &mut Subscription) -> Vec<u8> {
    match next_event(subscription).await {
        BusEvent::Message(message) => message.payload,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// Subscribes `bus` to the one channel `channel`; panics if that fails.
pub async fn subscribe_to(bus: &dyn Bus, channel: &str) -> Subscription {
    bus.subscribe(&[channel.to_owned()])
        .await
        .unwrap_or_else(|err| panic!("subscribe to {channel} failed: {err}"))
}

/// Sends a signal to a process, as `kill -<name> <pid>` does (`STOP` freezes
/// a server: it keeps its sockets open but answers nothing; `CONT` thaws it).
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A loopback port that nothing listened on a moment ago.
pub fn unused_port() -> u16 {
    super::servers::free_port().expect("a free loopback port")
}
