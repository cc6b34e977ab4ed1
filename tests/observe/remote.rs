//! `observe` over a remote `KeyClient`: against keyman's orchestrator on the
//! memory bus, and against an Augur-style responder that knows nothing but
//! EXPIRE, INVALIDATE and NEW and echoes no `request_id`.

use super::*;

fn config(deadline: Duration) -> ClientConfig {
    ClientConfig {
        deadline,
        resend_interval: Duration::from_millis(200),
        ..ClientConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_client_observes_against_keymans_orchestrator() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let orch = tokio::spawn(Orchestrator::new(bus.clone(), EngineConfig::default()).run());
    let admin = KeyPublisher::connect(bus.clone(), config(Duration::from_secs(5)))
        .await
        .unwrap();
    admin.ping().await.unwrap();
    for k in ["ghp_a", "ghp_b", "ghp_c", "ghp_d"] {
        admin.publish(P, k).await.unwrap();
    }
    admin.ping().await.unwrap();
    let worker = KeyClient::connect(bus.clone(), config(Duration::from_secs(5)))
        .await
        .unwrap();
    let now = wall_clock().as_secs();
    let reset = now + 600;

    // A 403 with calls left: the key stays, nothing changes.
    let k1 = worker.request(P).await.unwrap();
    let seen = github(4000, reset, Some(now));
    assert_eq!(worker.observe(P, &k1, 403, &seen).await, Ok(Next::Keep));

    // A 200 with nothing remaining, from a platform whose clock is 30 s behind ours.
    let next = worker
        .observe(P, &k1, 200, &github(0, reset, Some(now - 30)))
        .await
        .unwrap();
    let Next::Expired {
        key: k2,
        refresh_at,
        secondary: false,
    } = next
    else {
        panic!("not expired: {next:?}");
    };
    assert_ne!(k2, k1);
    let local = refresh_at.as_secs();
    assert!(
        (reset + 30..=reset + 31).contains(&local),
        "refresh at {local}, reset {reset}"
    );
    let status = admin.status().await.unwrap();
    assert_eq!((status[0].fresh, status[0].expired), (3, 1));
    let next = status[0].next_refresh.expect("a refresh time");
    assert!(
        (reset + 30..=reset + 32).contains(&next),
        "{next} vs {reset}"
    );

    // A 403 with Retry-After: expired for that long.
    let retry = headers(&[
        ("retry-after", "120".to_string()),
        ("x-ratelimit-remaining", "3000".to_string()),
    ]);
    let before = wall_clock();
    let next = worker.observe(P, &k2, 403, &retry).await.unwrap();
    let Next::Expired {
        key: k3,
        refresh_at,
        secondary: true,
    } = next
    else {
        panic!("not a secondary expiry: {next:?}");
    };
    assert!(refresh_at >= before.saturating_add(Duration::from_secs(120)));
    assert!(refresh_at <= wall_clock().saturating_add(Duration::from_secs(120)));

    // A 401: invalid.
    let next = worker
        .observe(P, &k3, 401, &RateLimit::default())
        .await
        .unwrap();
    let Next::Invalidated { key: k4 } = next else {
        panic!("not invalidated: {next:?}");
    };
    assert_eq!(admin.invalid_keys(P).await.unwrap(), vec![k3.clone()]);
    let mut all = vec![k1.clone(), k2.clone(), k3.clone(), k4.clone()];
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 4, "a key came back that should not have");

    // Per-call deadlines: with every other key out, expiring the last one ends
    // at the call's deadline.
    let short = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let later = wall_clock().saturating_add(Duration::from_secs(60));
    assert_eq!(
        worker.expire_within(P, &k4, later, short).await,
        Err(KeyError::Timeout(short))
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250),
        "gave up early: {took:?}"
    );
    assert!(took < Duration::from_secs(2), "gave up late: {took:?}");
    admin.shutdown().await.unwrap();
    orch.await.unwrap().unwrap();
}

// --- remote: a KeyClient against a responder that knows only Augur's protocol ---

/// A memory bus that hides its native request/reply, so clients use reply
/// channels, as they do with Augur's orchestrator over Redis.
struct PubSubOnly(MemoryBus);

#[async_trait]
impl Bus for PubSubOnly {
    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), BusError> {
        self.0.publish(channel, payload).await
    }
    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BusError> {
        self.0.subscribe(channels).await
    }
}

/// What the responder saw, in order.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    New,
    /// A message type Augur's orchestrator does not know (it would stop).
    Report,
    Expire {
        key: String,
        refresh_secs: u64,
    },
    Invalidate {
        key: String,
    },
}

/// Answers NEW with the next of `keys`, as Augur's orchestrator does
/// (`{"key": ...}`, no `request_id`), and tells what it saw.
fn augur_responder(
    mem: MemoryBus,
    mut requests: Subscription,
    keys: Vec<&'static str>,
) -> mpsc::UnboundedReceiver<Seen> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut next = keys.into_iter().cycle();
        while let Some(event) = requests.next().await {
            let BusEvent::Message(m) = event else {
                continue;
            };
            let Ok(request) = decode_request(&m.payload, 1 << 16) else {
                continue;
            };
            // Tells what it saw before answering, so the test sees it once
            // the client has its answer.
            let seen = match request {
                // Augur's orchestrator reads a NEW with `lease` as a NEW.
                Request::New { reply, .. } | Request::Lease { reply, .. } => {
                    if tx.send(Seen::New).is_err() {
                        return;
                    }
                    let channel = format!("worker-oath-request-{}", reply.requester_id);
                    let key = next.next().unwrap_or("none");
                    let body = format!("{{\"key\": \"{key}\"}}");
                    let _ = mem.publish(&channel, body.as_bytes()).await;
                    continue;
                }
                Request::Expire {
                    key, refresh_time, ..
                } => Seen::Expire {
                    key,
                    refresh_secs: refresh_time.as_millis().div_ceil(1000),
                },
                Request::Invalidate { key, .. } => Seen::Invalidate { key },
                Request::Report { .. } => Seen::Report,
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_client_falls_back_to_expire_and_new_against_augurs_orchestrator() {
    let mem = MemoryBus::new();
    let bus: Arc<dyn Bus> = Arc::new(PubSubOnly(mem.clone()));
    let requests = mem
        .subscribe(&["worker-oath-request".to_string()])
        .await
        .unwrap();
    let mut seen = augur_responder(mem, requests, vec!["ghp_b", "ghp_c", "ghp_d"]);
    let worker = KeyClient::connect(bus, config(Duration::from_secs(3)))
        .await
        .unwrap();
    let now = wall_clock().as_secs();
    let reset = now + 900;
    let recv = |seen: &mut mpsc::UnboundedReceiver<Seen>| {
        seen.try_recv()
            .unwrap_or_else(|e| panic!("nothing seen: {e}"))
    };

    // A 403 with calls left sends nothing at all.
    assert_eq!(
        worker
            .observe(P, "ghp_a", 403, &github(12, reset, Some(now)))
            .await,
        Ok(Next::Keep)
    );
    assert!(seen.try_recv().is_err(), "a kept key was reported");

    // A spent quota: EXPIRE with the reset, then NEW, answered without request_id.
    let next = worker
        .observe(P, "ghp_a", 200, &github(0, reset, None))
        .await
        .unwrap();
    assert_eq!(
        next,
        Next::Expired {
            key: "ghp_b".into(),
            refresh_at: secs(reset),
            secondary: false
        }
    );
    assert_eq!(
        recv(&mut seen),
        Seen::Expire {
            key: "ghp_a".into(),
            refresh_secs: reset
        }
    );
    assert_eq!(recv(&mut seen), Seen::New);

    // A 401: INVALIDATE, then NEW.
    let next = worker
        .observe(P, "ghp_b", 401, &RateLimit::default())
        .await
        .unwrap();
    assert_eq!(
        next,
        Next::Invalidated {
            key: "ghp_c".into()
        }
    );
    assert_eq!(
        recv(&mut seen),
        Seen::Invalidate {
            key: "ghp_b".into()
        }
    );
    assert_eq!(recv(&mut seen), Seen::New);

    // The same through the blocking-style deadlines.
    let next = worker
        .observe_within(
            P,
            "ghp_c",
            429,
            &RateLimit::default(),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    assert!(
        matches!(&next, Next::Expired { key, secondary: true, .. } if key == "ghp_d"),
        "{next:?}"
    );
    assert!(matches!(recv(&mut seen), Seen::Expire { key, .. } if key == "ghp_c"));
    assert_eq!(recv(&mut seen), Seen::New);
    assert_eq!(
        worker
            .invalidate_within(P, "ghp_d", Duration::from_secs(2))
            .await,
        Ok("ghp_b".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_fall_back_to_plain_keys_and_send_no_report_to_augurs_orchestrator() {
    let mem = MemoryBus::new();
    let bus: Arc<dyn Bus> = Arc::new(PubSubOnly(mem.clone()));
    let requests = mem
        .subscribe(&["worker-oath-request".to_string()])
        .await
        .unwrap();
    let mut seen = augur_responder(mem, requests, vec!["ghp_a", "ghp_b", "ghp_c"]);
    let worker = KeyClient::connect(bus, config(Duration::from_secs(3)))
        .await
        .unwrap();
    let now = wall_clock().as_secs();
    let reset = now + 900;

    // NEW with `lease` is answered as a NEW: a key without a lease.
    let mut leased = worker.lease(P, 100).await.expect("a key");
    assert_eq!(leased.key(), "ghp_a");
    assert_eq!(leased.lease(), None);
    assert_eq!(seen.try_recv(), Ok(Seen::New));

    // Calls go on until the platform refuses one: no renewal, no REPORT.
    for remaining in (1..200).rev() {
        let next = worker
            .observe_lease(&mut leased, 200, &github(remaining, reset, Some(now)))
            .await;
        assert_eq!(next, Ok(Next::Keep));
    }
    assert!(seen.try_recv().is_err(), "sent while the key was fine");

    // A spent quota: EXPIRE and NEW, as Augur's own workers send them.
    let next = worker
        .observe_lease(&mut leased, 403, &github(0, reset, Some(now)))
        .await
        .expect("another key");
    assert!(
        matches!(&next, Next::Expired { key, .. } if key == "ghp_b"),
        "{next:?}"
    );
    assert_eq!(leased.key(), "ghp_b");
    assert!(matches!(seen.try_recv(), Ok(Seen::Expire { key, .. }) if key == "ghp_a"));
    assert_eq!(seen.try_recv(), Ok(Seen::New));
    worker.release(leased).await.expect("release");
    assert!(
        seen.try_recv().is_err(),
        "release sent something to Augur's orchestrator"
    );
}

/// A bus that loses the first REPORT published on it and passes everything
/// else: a message lost on the way, as a broker restart may lose one.
struct LosesFirstReport {
    bus: MemoryBus,
    lost: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl Bus for LosesFirstReport {
    async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), BusError> {
        let report = payload.windows(8).any(|w| w == b"\"REPORT\"");
        if report && !self.lost.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        self.bus.publish(channel, payload).await
    }
    async fn subscribe(&self, channels: &[String]) -> Result<Subscription, BusError> {
        self.bus.subscribe(channels).await
    }
}

/// `release` returns once the orchestrator has the calls back: a STATUS asked
/// right after it, by another client, counts them as free, even when the
/// first REPORT was lost (it is sent again until it is answered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_returns_once_the_orchestrator_has_the_calls_back() {
    let mem = MemoryBus::new();
    let orch =
        tokio::spawn(Orchestrator::new(Arc::new(mem.clone()), EngineConfig::default()).run());
    let admin = KeyPublisher::connect(Arc::new(mem.clone()), config(Duration::from_secs(5)))
        .await
        .unwrap();
    admin.ping().await.unwrap();
    admin
        .publish_account(P, "ghp_a", None, Some(10))
        .await
        .unwrap();
    admin.ping().await.unwrap();
    let bus: Arc<dyn Bus> = Arc::new(LosesFirstReport {
        bus: mem.clone(),
        lost: std::sync::atomic::AtomicBool::new(false),
    });
    let worker = KeyClient::connect(bus, config(Duration::from_secs(5)))
        .await
        .unwrap();
    let leased = worker.lease(P, 8).await.expect("a lease");
    assert_eq!(leased.lease().map(|l| l.calls), Some(8));
    let leased_now = async || {
        let status = admin.status().await.expect("status");
        status
            .iter()
            .find(|s| s.platform == P)
            .and_then(|s| s.leased)
    };
    assert_eq!(leased_now().await, Some(8));
    worker.release(leased).await.expect("release");
    assert_eq!(leased_now().await, None, "the calls are still lent");
    orch.abort();
}
