//! Request/reply over a pub/sub [`Bus`]: the machinery shared by
//! [`KeyClient`](super::KeyClient) and [`KeyPublisher`](super::KeyPublisher).
//!
//! Each [`Rpc`] owns one private reply channel (`{channel}-{requester_id}`) and a
//! dispatcher task that routes every reply to the call waiting for it:
//! - by the echoed `request_id` (our orchestrator), so a late reply to a call that
//!   already timed out is never taken for the answer to a new one;
//! - without an echo (Augur's orchestrator), to the oldest waiting call that
//!   expects a reply of that kind.
//!
//! Calls still waiting are sent again when the transport reports a reconnect and,
//! once the orchestrator is known to echo `request_id`s (so duplicates are
//! harmless), every `resend_interval`, until their deadline. On transports with
//! native request/reply (NATS) the reply channel is not used at all.

use super::KeyError;
use super::{Bus, BusError, BusEvent};
use crate::protocol::{Id, Reply, ReplyMessage};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// What kind of reply a call waits for; used to match replies without `request_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// `{"key"}`, `{"wait"}`, `{"error"}`.
    Key,
    /// The empty ACK.
    Ack,
    /// A list or `{"status"}`.
    List,
    /// (ext) a status report.
    Status,
    /// (ext) `{"ok": true}`: a REPORT taken in.
    Taken,
}

impl Expect {
    fn accepts(self, reply: &Reply) -> bool {
        match self {
            Expect::Key => matches!(
                reply,
                Reply::Key(_)
                    | Reply::Lease { .. }
                    | Reply::NullKey
                    | Reply::Wait(_)
                    | Reply::Error { .. }
            ),
            Expect::Ack => matches!(reply, Reply::Ack | Reply::Error { .. }),
            Expect::List => matches!(
                reply,
                Reply::List(_) | Reply::ListError(_) | Reply::Error { .. }
            ),
            Expect::Status => matches!(reply, Reply::Status(_) | Reply::Error { .. }),
            Expect::Taken => matches!(reply, Reply::Ok | Reply::Error { .. }),
        }
    }
}

struct Waiter {
    expect: Expect,
    channel: String,
    payload: Vec<u8>,
    /// When it was last sent.
    sent: Instant,
    tx: oneshot::Sender<Result<ReplyMessage, KeyError>>,
}

#[derive(Default)]
struct Pending {
    /// By request id; ids grow, so the smallest is the oldest call.
    waiters: std::collections::BTreeMap<u64, Waiter>,
}

struct Shared {
    bus: Arc<dyn Bus>,
    pending: Mutex<Pending>,
    /// Whether any reply ever echoed a `request_id`.
    echo_seen: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A poisoned lock only means a panic elsewhere; the map itself is intact.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn route(&self, msg: ReplyMessage) {
        let mut pending = self.lock();
        let id = match &msg.request_id {
            Some(rid) => {
                self.echo_seen.store(true, Ordering::Relaxed);
                match parse_id(rid) {
                    Some(id) => id,
                    None => return,
                }
            }
            None => {
                let oldest = pending
                    .waiters
                    .iter()
                    .find(|(_, w)| w.expect.accepts(&msg.reply))
                    .map(|(id, _)| *id);
                match oldest {
                    Some(id) => id,
                    None => return,
                }
            }
        };
        if let Some(w) = pending.waiters.remove(&id) {
            let _ = w.tx.send(Ok(msg));
        }
    }

    /// The calls still waiting that were last sent before `before` (all of
    /// them for `None`), marked as sent now.
    fn outstanding(&self, before: Option<Instant>) -> Vec<(String, Vec<u8>)> {
        let now = Instant::now();
        self.lock()
            .waiters
            .values_mut()
            .filter(|w| before.is_none_or(|b| w.sent <= b))
            .map(|w| {
                w.sent = now;
                (w.channel.clone(), w.payload.clone())
            })
            .collect()
    }

    fn fail_all(&self, err: KeyError) {
        let waiters = std::mem::take(&mut self.lock().waiters);
        for (_, w) in waiters {
            let _ = w.tx.send(Err(err.clone()));
        }
    }
}

fn parse_id(id: &Id) -> Option<u64> {
    match id {
        Id::Number(n) => n.as_u64(),
        Id::Text(s) => s.parse().ok(),
    }
}

/// How an [`Rpc`] behaves.
#[derive(Debug, Clone)]
pub(crate) struct RpcConfig {
    pub resend_interval: Duration,
    /// The largest reply accepted.
    pub max_reply: usize,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            resend_interval: Duration::from_secs(1),
            max_reply: super::ClientConfig::DEFAULT_MAX_REPLY,
        }
    }
}

/// One reply channel and the calls waiting on it. Cheap to share behind an `Arc`;
/// the dispatcher task stops when the `Rpc` is dropped.
pub(crate) struct Rpc {
    shared: Arc<Shared>,
    next_id: AtomicU64,
    config: RpcConfig,
    dispatcher: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Rpc {
    fn drop(&mut self) {
        if let Some(d) = &self.dispatcher {
            d.abort();
        }
    }
}

impl Rpc {
    /// Subscribes `reply_channel` (unless the bus has native request/reply) and
    /// starts the dispatcher. The subscription is live when this returns.
    pub(crate) async fn start(
        bus: Arc<dyn Bus>,
        reply_channel: String,
        config: RpcConfig,
    ) -> Result<Rpc, KeyError> {
        let shared = Arc::new(Shared {
            bus: bus.clone(),
            pending: Mutex::new(Pending::default()),
            echo_seen: AtomicBool::new(false),
        });
        let dispatcher = if bus.supports_request() {
            None
        } else {
            let mut sub = bus
                .subscribe(std::slice::from_ref(&reply_channel))
                .await
                .map_err(KeyError::from)?;
            let shared = shared.clone();
            let max = config.max_reply;
            let resend_every = config.resend_interval;
            Some(tokio::spawn(async move {
                // Each call is sent again once it has waited `resend_every`
                // since it was last sent (checked twice per interval): a call
                // sent just before a tick is not sent again at it, which made
                // the orchestrator see a request twice within a millisecond
                // and, for a lease request, lend calls to nobody.
                let mut resend =
                    tokio::time::interval((resend_every / 2).max(Duration::from_millis(1)));
                resend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        ev = sub.next() => match ev {
                            Some(BusEvent::Message(m)) => match Reply::decode(&m.payload, max) {
                                Ok(reply) => shared.route(reply),
                                Err(e) => tracing::warn!(channel = %m.channel, error = %e, "dropping an unreadable reply"),
                            },
                            Some(BusEvent::Reconnected) => {
                                tracing::info!(channel = %reply_channel, "reconnected; sending waiting requests again");
                                resend_all(&shared, None).await;
                            }
                            Some(BusEvent::Disconnected { reason }) => {
                                tracing::warn!(channel = %reply_channel, %reason, "disconnected from the broker");
                            }
                            None => {
                                shared.fail_all(KeyError::Disconnected(BusError::Closed));
                                return;
                            }
                        },
                        _ = resend.tick() => {
                            if shared.echo_seen.load(Ordering::Relaxed) {
                                let due = Instant::now().checked_sub(resend_every);
                                if let Some(before) = due {
                                    resend_all(&shared, Some(before)).await;
                                }
                            }
                        }
                    }
                }
            }))
        };
        Ok(Rpc {
            shared,
            next_id: AtomicU64::new(1),
            config,
            dispatcher,
        })
    }

    /// Whether any reply ever echoed a `request_id`: the orchestrator is
    /// keyman's (Augur's echoes none).
    pub(crate) fn echo_seen(&self) -> bool {
        self.shared.echo_seen.load(Ordering::Relaxed)
    }

    /// A fresh request id, unique for this `Rpc`.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn bus(&self) -> &Arc<dyn Bus> {
        &self.shared.bus
    }

    /// Publishes `payload` (built with request id `id`) on `channel` and waits
    /// until `deadline` for its reply.
    pub(crate) async fn call(
        &self,
        channel: &str,
        payload: Vec<u8>,
        id: u64,
        expect: Expect,
        deadline: Instant,
    ) -> Result<ReplyMessage, KeyError> {
        let bus = &self.shared.bus;
        if bus.supports_request() {
            return self.native_call(channel, &payload, deadline).await;
        }
        let (tx, rx) = oneshot::channel();
        self.shared.lock().waiters.insert(
            id,
            Waiter {
                expect,
                channel: channel.to_string(),
                payload: payload.clone(),
                sent: Instant::now(),
                tx,
            },
        );
        let guard = RemoveOnDrop {
            shared: &self.shared,
            id,
        };
        let total = deadline.saturating_duration_since(Instant::now());
        let result = tokio::time::timeout_at(deadline, async {
            bus.publish(channel, &payload)
                .await
                .map_err(KeyError::from)?;
            rx.await
                .unwrap_or(Err(KeyError::Disconnected(BusError::Closed)))
        })
        .await;
        drop(guard);
        match result {
            Ok(r) => r,
            Err(_) => Err(KeyError::Timeout(total)),
        }
    }

    async fn native_call(
        &self,
        channel: &str,
        payload: &[u8],
        deadline: Instant,
    ) -> Result<ReplyMessage, KeyError> {
        let total = deadline.saturating_duration_since(Instant::now());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(KeyError::Timeout(total));
            }
            // Sent again every resend interval to the same reply address, so
            // an answer that takes longer (a large list) still counts.
            let resend_every = self.config.resend_interval;
            match self
                .shared
                .bus
                .request_resending(channel, payload, left, resend_every)
                .await
            {
                Ok(bytes) => {
                    let msg =
                        Reply::decode(&bytes, self.config.max_reply).map_err(KeyError::Decode)?;
                    if msg.request_id.is_some() {
                        self.shared.echo_seen.store(true, Ordering::Relaxed);
                    }
                    return Ok(msg);
                }
                // Not answered within the deadline: the top of the loop says so.
                Err(BusError::Timeout(_)) => continue,
                // The connection is gone for now: ask again once it may be
                // back, unless the deadline is close (then the caller hears why).
                Err(BusError::Disconnected(_)) if left > resend_every => {
                    let pause = resend_every.min(Duration::from_millis(100));
                    tokio::time::sleep(pause).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Sends again the waiting calls last sent before `before` (all for `None`).
async fn resend_all(shared: &Shared, before: Option<Instant>) {
    for (channel, payload) in shared.outstanding(before) {
        if let Err(e) = shared.bus.publish(&channel, &payload).await {
            tracing::debug!(error = %e, "could not send a waiting request again");
            break;
        }
    }
}

struct RemoveOnDrop<'a> {
    shared: &'a Shared,
    id: u64,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        self.shared.lock().waiters.remove(&self.id);
    }
}

/// A requester id unique across processes, hosts and clients of one process:
/// `km-{pid}-{random}`.
pub(crate) fn unique_requester_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("km-{}-{:016x}", std::process::id(), h.finish())
}
