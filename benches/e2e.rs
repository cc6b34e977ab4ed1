//! End-to-end throughput: W concurrent workers doing NEW against the keyman
//! orchestrator over a real broker, next to a trivial responder that answers
//! every NEW with a constant key (the ceiling the broker itself allows).
//!
//! Run: `cargo bench --bench e2e --all-features` (both Redis and NATS), or
//! `cargo bench --bench e2e` for Redis only. `KEYMAN_BENCH_SECS` sets the
//! measuring time per case (default 3). Brokers are started on free loopback
//! ports in temporary directories.

use keyman::protocol::{Reply, Request, decode_request};
use keyman::service::{
    Bus, BusEvent, ClientConfig, KeyAdmin, KeyClient, KeyPublisher, KeySource, Orchestrator,
};
use keyman::{Channels, EngineConfig};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    Keyman,
    Trivial,
}

struct Figures {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

/// Runs a responder on its own thread with its own single-threaded runtime, so
/// that it competes with the load generator as a separate process would.
fn spawn_responder(url: String, target: Target) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let bus = keyman::service::connect_url(&url).await.expect("connect");
            match target {
                Target::Keyman => {
                    let _ = Orchestrator::new(bus, EngineConfig::default()).run().await;
                }
                Target::Trivial => trivial(bus).await,
            }
        });
    })
}

/// Publishes what queues up in batches, pipelined, as the orchestrator does.
async fn pipelined(bus: Arc<dyn Bus>, mut rx: tokio::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 64).await > 0 {
        let sends = batch.iter().map(|(ch, p)| bus.publish(ch, p));
        let _ = futures_util::future::join_all(sends).await;
        batch.clear();
    }
}

/// Answers NEW with a constant key; stops on SHUTDOWN.
async fn trivial(bus: Arc<dyn Bus>) {
    let (out, rx) = tokio::sync::mpsc::channel(4096);
    let publisher = tokio::spawn(pipelined(bus.clone(), rx));
    trivial_loop(bus, out).await;
    let _ = publisher.await;
}

async fn trivial_loop(bus: Arc<dyn Bus>, out: tokio::sync::mpsc::Sender<(String, Vec<u8>)>) {
    let ch = Channels::default();
    let mut sub = bus
        .subscribe(&[ch.request.clone(), ch.announce.clone()])
        .await
        .expect("subscribe");
    let key = Reply::Key("ghp_constantconstantconstantconstant0000".into());
    while let Some(ev) = sub.next().await {
        let BusEvent::Message(m) = ev else { continue };
        if m.channel == ch.announce {
            if m.payload.windows(8).any(|w| w == b"SHUTDOWN") {
                return;
            }
            if let Ok(keyman::protocol::Announce::Ack { reply }) =
                keyman::protocol::decode_announce(&m.payload, 1 << 16)
            {
                let dest = m
                    .reply_to
                    .unwrap_or_else(|| ch.announce_reply(&reply.requester_id));
                let _ = out
                    .send((dest, Reply::Ack.encode(reply.request_id.as_ref())))
                    .await;
            }
            continue;
        }
        if let Ok(Request::New { reply, .. }) = decode_request(&m.payload, 1 << 16) {
            let dest = m
                .reply_to
                .unwrap_or_else(|| ch.request_reply(&reply.requester_id));
            let _ = out
                .send((dest, key.encode(reply.request_id.as_ref())))
                .await;
        }
    }
}

async fn load(url: &str, workers: usize, secs: f64) -> Figures {
    let config = ClientConfig {
        deadline: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    let bus = keyman::service::connect_url(url).await.expect("connect");
    let mut clients = Vec::new();
    for _ in 0..workers {
        clients.push(
            KeyClient::connect(bus.clone(), config.clone())
                .await
                .expect("client"),
        );
    }
    // Warm up every client once.
    for c in &clients {
        c.request("github_rest").await.expect("warm-up request");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                match c.request("github_rest").await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("worker");
        all.extend(lat);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Figures {
        rps: all.len() as f64 / elapsed,
        p50: pct(0.50),
        p99: pct(0.99),
        errors,
    }
}

async fn run_case(url: &str, target: Target, workers: usize, secs: f64) -> Figures {
    let responder = spawn_responder(url.to_string(), target);
    let bus = keyman::service::connect_url(url).await.expect("connect");
    let admin = KeyPublisher::connect(bus, ClientConfig::default())
        .await
        .expect("admin");
    admin.ping().await.expect("responder up");
    for i in 0..20 {
        admin
            .publish(
                "github_rest",
                &format!("ghp_benchkey{i:02}abcdefghijklmnopqrstuvwx"),
            )
            .await
            .expect("publish");
    }
    let figures = load(url, workers, secs).await;
    admin.shutdown().await.expect("shutdown");
    let _ = tokio::task::spawn_blocking(move || responder.join()).await;
    figures
}

fn main() {
    let secs: f64 = std::env::var("KEYMAN_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let mut brokers: Vec<(&str, Box<dyn std::any::Any>, String)> = Vec::new();
    #[cfg(feature = "redis")]
    {
        let s = keyman_transport::testing::RedisServer::start().expect("redis-server");
        let url = s.url();
        brokers.push(("redis", Box::new(s), url));
    }
    #[cfg(feature = "nats")]
    {
        let s = keyman_transport::testing::NatsServer::start().expect("nats-server");
        let url = s.url();
        brokers.push(("nats", Box::new(s), url));
    }
    println!(
        "keyman end-to-end NEW throughput ({secs} s per case, 2 cores shared by broker, responder and load)"
    );
    println!(
        "{:<6} {:>7} {:<8} {:>10} {:>9} {:>9} {:>7} {:>9}",
        "bus", "workers", "target", "req/s", "p50 ms", "p99 ms", "errors", "% ceiling"
    );
    for (name, _server, url) in &brokers {
        for workers in [16usize, 64, 256] {
            let ceiling = rt.block_on(run_case(url, Target::Trivial, workers, secs));
            let keyman = rt.block_on(run_case(url, Target::Keyman, workers, secs));
            for (label, f) in [("trivial", &ceiling), ("keyman", &keyman)] {
                let pct = if label == "keyman" {
                    format!("{:.0} %", 100.0 * f.rps / ceiling.rps.max(1.0))
                } else {
                    String::new()
                };
                println!(
                    "{:<6} {:>7} {:<8} {:>10.0} {:>9.2} {:>9.2} {:>7} {:>9}",
                    name,
                    workers,
                    label,
                    f.rps,
                    f.p50.as_secs_f64() * 1e3,
                    f.p99.as_secs_f64() * 1e3,
                    f.errors,
                    pct
                );
            }
        }
    }
}
