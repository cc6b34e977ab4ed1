//! Test support shared by the integration tests: brokers the tests start
//! themselves, the `keyman serve` process, connections, and the behaviours every
//! key source shares (`behaviour`). Each file that declares `mod support;` uses
//! only part of it.

#![allow(dead_code)]

pub mod behaviour;
pub mod fake_api;
pub mod faults;
pub mod scenarios;

use keyman::service::{Bus, BusEvent, ClientConfig, KeyAdmin, KeyPublisher, Subscription};
use keyman_transport::testing::{NatsServer, RedisServer};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A broker this test started on a free loopback port.
pub enum Broker {
    /// A `redis-server`.
    Redis(RedisServer),
    /// A `nats-server`.
    Nats(NatsServer),
}

impl Broker {
    pub fn redis() -> Broker {
        Broker::Redis(RedisServer::start().expect("start redis-server"))
    }

    pub fn nats() -> Broker {
        Broker::Nats(NatsServer::start().expect("start nats-server"))
    }

    pub fn url(&self) -> String {
        match self {
            Broker::Redis(s) => s.url(),
            Broker::Nats(s) => s.url(),
        }
    }

    /// The `keyman` option that names this broker.
    pub fn url_flag(&self) -> &'static str {
        match self {
            Broker::Redis(_) => "--redis-url",
            Broker::Nats(_) => "--nats-url",
        }
    }

    pub fn stop(&mut self) {
        match self {
            Broker::Redis(s) => s.stop().expect("stop broker"),
            Broker::Nats(s) => s.stop().expect("stop broker"),
        }
    }

    pub fn restart(&mut self) {
        match self {
            Broker::Redis(s) => s.restart().expect("restart broker"),
            Broker::Nats(s) => s.restart().expect("restart broker"),
        }
    }

    pub async fn bus(&self) -> Arc<dyn Bus> {
        keyman::service::connect_url(&self.url())
            .await
            .expect("connect to the broker")
    }
}

/// A `keyman serve` process, killed on drop.
pub struct Serve {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Serve {
    pub fn start(broker: &Broker) -> Serve {
        Self::start_with(broker, &[])
    }

    pub fn start_with(broker: &Broker, extra: &[&str]) -> Serve {
        let url = broker.url();
        let mut args = vec![broker.url_flag(), url.as_str()];
        args.extend_from_slice(extra);
        Self::spawn(&args)
    }

    /// `keyman serve` with exactly `args` (the broker's URL among them).
    pub fn spawn(args: &[&str]) -> Serve {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("serve.log");
        let file = std::fs::File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_keyman"))
            .arg("serve")
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("REDIS_CONN_STRING")
            .env_remove("KEYMAN_NATS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start keyman serve");
        Serve {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Its resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client_config(deadline: Duration) -> ClientConfig {
    ClientConfig {
        deadline,
        resend_interval: Duration::from_millis(250),
        ..ClientConfig::default()
    }
}

/// A publisher that has seen the orchestrator answer.
pub async fn ready_admin(bus: Arc<dyn Bus>) -> KeyPublisher {
    let admin = KeyPublisher::connect(bus, client_config(Duration::from_secs(20)))
        .await
        .expect("connect publisher");
    admin.ping().await.expect("the orchestrator answers");
    admin
}

/// The next message payload on `sub`, as text (how Augur's clients read it).
pub async fn next_text(sub: &mut Subscription, limit: Duration) -> Option<String> {
    let until = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(until, sub.next()).await {
            Ok(Some(BusEvent::Message(m))) => {
                return Some(String::from_utf8(m.payload).expect("replies are UTF-8"));
            }
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => return None,
        }
    }
}
