//! The orchestrator and the clients over the in-memory bus: both reply paths
//! (native request/reply and `{channel}-{requester_id}` reply channels),
//! request-id correlation, and Augur-style replies without `request_id`.

#![cfg(feature = "tokio")]

use async_trait::async_trait;
use keyman::protocol::{Reply, Request, decode_request};
use keyman::service::{
    Bus, BusError, BusEvent, ClientConfig, KeyAdmin, KeyClient, KeyPublisher, KeySource,
    Orchestrator, Stopped, Subscription,
};
use keyman::{EngineConfig, KeyError};
use keyman_transport::MemoryBus;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A memory bus that hides its native request/reply, so clients use reply channels.
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

fn buses() -> Vec<(&'static str, Arc<dyn Bus>)> {
    vec![
        ("native", Arc::new(MemoryBus::new())),
        ("pubsub", Arc::new(PubSubOnly(MemoryBus::new()))),
    ]
}

fn config(deadline_ms: u64) -> ClientConfig {
    ClientConfig {
        deadline: Duration::from_millis(deadline_ms),
        resend_interval: Duration::from_millis(200),
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn clients_get_keys_lists_and_typed_errors_over_both_reply_paths() {
    for (name, bus) in buses() {
        let orch = tokio::spawn(Orchestrator::new(bus.clone(), EngineConfig::default()).run());
        let admin = KeyPublisher::connect(bus.clone(), config(5000))
            .await
            .unwrap();
        admin.ping().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        admin.publish("github_rest", "ghp_a").await.unwrap();
        admin.publish("github_rest", "ghp_b").await.unwrap();
        let worker = KeyClient::connect(bus.clone(), config(5000)).await.unwrap();
        let key = worker.request("github_rest").await.unwrap();
        assert!(key == "ghp_a" || key == "ghp_b", "{name}: {key}");
        assert_eq!(
            worker.request("nope").await,
            Err(KeyError::UnknownPlatform("nope".into())),
            "{name}"
        );
        let other = worker.invalidate("github_rest", &key).await.unwrap();
        assert_ne!(other, key, "{name}");
        assert_eq!(
            admin.invalid_keys("github_rest").await.unwrap(),
            vec![key.clone()]
        );
        assert_eq!(
            admin.keys("github_rest").await.unwrap(),
            vec![other.clone()]
        );
        assert_eq!(
            admin.platforms().await.unwrap(),
            vec!["github_rest".to_string()]
        );
        assert_eq!(
            admin.keys("gitlab_rest").await,
            Err(KeyError::UnknownPlatform("gitlab_rest".into()))
        );
        assert_eq!(
            worker.invalidate("github_rest", &other).await,
            Err(KeyError::NoKeys("github_rest".into())),
            "{name}"
        );
        let status = admin.status().await.unwrap();
        assert_eq!((status[0].fresh, status[0].invalid), (0, 2), "{name}");
        admin.shutdown().await.unwrap();
        assert_eq!(orch.await.unwrap(), Ok(Stopped::Shutdown), "{name}");
    }
}

#[tokio::test]
async fn many_clients_and_concurrent_calls_on_one_client_all_succeed() {
    for (name, bus) in buses() {
        let orch = tokio::spawn(Orchestrator::new(bus.clone(), EngineConfig::default()).run());
        let admin = KeyPublisher::connect(bus.clone(), config(5000))
            .await
            .unwrap();
        // Wait for the orchestrator to be up: what is published before it listens is lost.
        admin.ping().await.unwrap();
        for i in 0..5 {
            admin.publish("p", &format!("key-{i}")).await.unwrap();
        }
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let client = KeyClient::connect(bus.clone(), config(5000)).await.unwrap();
            for _ in 0..25 {
                let c = client.clone();
                tasks.push(tokio::spawn(async move { c.request("p").await }));
            }
        }
        for t in tasks {
            let key = t.await.unwrap().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(key.starts_with("key-"));
        }
        admin.shutdown().await.unwrap();
        orch.await.unwrap().unwrap();
    }
}

// Waits only for time: on the paused clock.
#[tokio::test(start_paused = true)]
async fn a_call_with_no_orchestrator_returns_within_its_deadline() {
    let bus: Arc<dyn Bus> = Arc::new(PubSubOnly(MemoryBus::new()));
    let worker = KeyClient::connect(bus, config(300)).await.unwrap();
    let start = Instant::now();
    assert!(matches!(
        worker.request("p").await,
        Err(KeyError::Timeout(_))
    ));
    assert!(start.elapsed() < Duration::from_secs(2));

    // Over native request/reply, "nobody listens" is known at once.
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let worker = KeyClient::connect(bus, config(5000)).await.unwrap();
    let start = Instant::now();
    assert!(matches!(
        worker.request("p").await,
        Err(KeyError::NoOrchestrator(_))
    ));
    assert!(start.elapsed() < Duration::from_secs(1));
}

/// Answers requests by hand: `answer(request, reply)` decides what to send back.
async fn next_new(sub: &mut Subscription) -> (String, Option<keyman::Id>) {
    loop {
        match sub.next().await {
            Some(BusEvent::Message(m)) => {
                if let Ok(Request::New { reply, .. }) = decode_request(&m.payload, 1 << 16) {
                    let channel = format!("worker-oath-request-{}", reply.requester_id);
                    return (channel, reply.request_id);
                }
            }
            Some(_) => continue,
            None => panic!("bus closed"),
        }
    }
}

// Waits only for time: on the paused clock.
#[tokio::test(start_paused = true)]
async fn a_late_reply_to_a_timed_out_call_is_never_taken_for_a_new_one() {
    let mem = MemoryBus::new();
    let bus: Arc<dyn Bus> = Arc::new(PubSubOnly(mem.clone()));
    let mut requests = mem
        .subscribe(&["worker-oath-request".to_string()])
        .await
        .unwrap();
    let worker = KeyClient::connect(bus.clone(), config(300)).await.unwrap();

    let first = tokio::spawn({
        let w = worker.clone();
        async move { w.request("p").await }
    });
    let (channel, first_id) = next_new(&mut requests).await;
    assert!(matches!(first.await.unwrap(), Err(KeyError::Timeout(_))));

    let second = tokio::spawn({
        let w = worker.clone();
        async move { w.request("p").await }
    });
    let (_, second_id) = next_new(&mut requests).await;
    assert_ne!(first_id, second_id);
    // The stale answer arrives first, then the right one.
    bus.publish(
        &channel,
        &Reply::Key("stale".into()).encode(first_id.as_ref()),
    )
    .await
    .unwrap();
    bus.publish(
        &channel,
        &Reply::Key("fresh".into()).encode(second_id.as_ref()),
    )
    .await
    .unwrap();
    assert_eq!(second.await.unwrap(), Ok("fresh".to_string()));
}

#[tokio::test]
async fn replies_without_request_id_from_augurs_orchestrator_are_accepted() {
    let mem = MemoryBus::new();
    let bus: Arc<dyn Bus> = Arc::new(PubSubOnly(mem.clone()));
    let mut requests = mem
        .subscribe(&["worker-oath-request".to_string()])
        .await
        .unwrap();
    let worker = KeyClient::connect(bus.clone(), config(3000)).await.unwrap();
    let call = tokio::spawn({
        let w = worker.clone();
        async move { w.request("github_rest").await }
    });
    let (channel, _) = next_new(&mut requests).await;
    // Exactly what Augur's orchestrator publishes: json.dumps({"key": key}).
    bus.publish(&channel, br#"{"key": "ghp_from_augur"}"#)
        .await
        .unwrap();
    assert_eq!(call.await.unwrap(), Ok("ghp_from_augur".to_string()));

    // {"key": null} (Augur's answer when it has no key) is a typed NoKeys.
    let call = tokio::spawn({
        let w = worker.clone();
        async move { w.request("github_rest").await }
    });
    let (channel, _) = next_new(&mut requests).await;
    bus.publish(&channel, br#"{"key": null}"#).await.unwrap();
    assert_eq!(
        call.await.unwrap(),
        Err(KeyError::NoKeys("github_rest".into()))
    );
}

// Waits only for time: on the paused clock.
#[tokio::test(start_paused = true)]
async fn wait_replies_are_waited_out_within_the_deadline() {
    let mem = MemoryBus::new();
    let bus: Arc<dyn Bus> = Arc::new(PubSubOnly(mem.clone()));
    let mut requests = mem
        .subscribe(&["worker-oath-request".to_string()])
        .await
        .unwrap();
    let worker = KeyClient::connect(bus.clone(), config(3000)).await.unwrap();
    let call = tokio::spawn({
        let w = worker.clone();
        async move { w.request("p").await }
    });
    let (channel, id) = next_new(&mut requests).await;
    let asked = Instant::now();
    bus.publish(&channel, &Reply::Wait(1).encode(id.as_ref()))
        .await
        .unwrap();
    let (channel, id) = next_new(&mut requests).await;
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "asked again too early"
    );
    bus.publish(&channel, &Reply::Key("k".into()).encode(id.as_ref()))
        .await
        .unwrap();
    assert_eq!(call.await.unwrap(), Ok("k".to_string()));

    // A wait longer than the deadline ends in a timeout, not later than the deadline.
    let short = KeyClient::connect(bus.clone(), config(500)).await.unwrap();
    let call = tokio::spawn(async move { short.request("p").await });
    let (channel, id) = next_new(&mut requests).await;
    let start = Instant::now();
    // The largest wait the wire can carry must not overflow the client's clock.
    bus.publish(&channel, &Reply::Wait(u64::MAX).encode(id.as_ref()))
        .await
        .unwrap();
    assert!(matches!(call.await.unwrap(), Err(KeyError::Timeout(_))));
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn the_longest_deadline_does_not_overflow_the_clock() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let orch = tokio::spawn(Orchestrator::new(bus.clone(), EngineConfig::default()).run());
    let admin = KeyPublisher::connect(bus.clone(), config(5000))
        .await
        .unwrap();
    admin.ping().await.unwrap();
    admin.publish("p", "k").await.unwrap();
    let worker = KeyClient::connect(
        bus.clone(),
        ClientConfig {
            deadline: Duration::MAX,
            ..ClientConfig::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(worker.request("p").await, Ok("k".to_string()));
    assert_eq!(
        worker.request_within("p", Duration::MAX).await,
        Ok("k".to_string())
    );
    admin.shutdown().await.unwrap();
    orch.await.unwrap().unwrap();
}

/// A call is sent again only once it has waited the resend interval since it
/// was sent, not at whatever tick of the client's timer comes first: an
/// orchestrator that answers each NEW in 300 ms sees each of ten NEWs once
/// (a second copy of a lease request would lend calls to nobody).
#[tokio::test(start_paused = true)]
async fn a_call_answered_within_the_resend_interval_is_sent_once() {
    let mem = MemoryBus::new();
    let mut requests = mem
        .subscribe(&["worker-oath-request".to_string()])
        .await
        .expect("subscribe");
    let responder_bus = mem.clone();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen_by_responder = seen.clone();
    tokio::spawn(async move {
        while let Some(event) = requests.next().await {
            let BusEvent::Message(m) = event else {
                continue;
            };
            let Ok(Request::New { reply, .. }) = decode_request(&m.payload, 1 << 20) else {
                continue;
            };
            let id = reply.request_id.map(|i| i.to_string()).unwrap_or_default();
            seen_by_responder.lock().expect("seen").push(id.clone());
            let bus = responder_bus.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let channel = format!("worker-oath-request-{}", reply.requester_id);
                let answer = format!(r#"{{"key": "ghp_k", "request_id": {id}}}"#);
                bus.publish(&channel, answer.as_bytes())
                    .await
                    .expect("reply");
            });
        }
    });
    let config = ClientConfig {
        deadline: Duration::from_secs(5),
        resend_interval: Duration::from_secs(1),
        ..ClientConfig::default()
    };
    let worker = KeyClient::connect(Arc::new(PubSubOnly(mem.clone())), config)
        .await
        .expect("connect");
    for _ in 0..10 {
        assert_eq!(worker.request("p").await.as_deref(), Ok("ghp_k"));
    }
    let seen = seen.lock().expect("seen").clone();
    let mut unique = seen.clone();
    unique.dedup();
    assert_eq!(seen, unique, "requests sent twice: {seen:?}");
    assert_eq!(seen.len(), 10);
}
