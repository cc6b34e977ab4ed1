//! Augur's restart flow as one burst: 100 000 keys published to four
//! platforms (400 000 PUBLISHes of Augur's exact bytes, pipelined on one
//! connection), spread evenly over a sending time, against the `keyman serve`
//! binary of this build on a redis-server with its **default** settings (the
//! pub/sub output buffer limit `32mb 8mb 60`).
//!
//! keyman reads at its own pace and leaves the rest to Redis; Redis cuts a
//! subscriber off once 32 MB wait for it. This prints, per sending time, how
//! many keys were listed afterwards on each platform and whether Redis cut
//! the subscription: the shortest sending time that is applied in full is how
//! fast a burst may come without raising Redis's limit (README: "Bursts").
//!
//! Run: `cargo bench --bench burst` (the release-like bench profile builds
//! the binary). `KEYMAN_BURST_SECS` lists the sending times (default
//! `3,1.5,1,0.75,0.5`); `KEYMAN_BURST_STATE=1` also saves the state in Redis,
//! as `serve` does by default.

use keyman::service::{ClientConfig, KeyAdmin, KeyPublisher};
use keyman_transport::testing::RedisServer;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEYS: usize = 100_000;
const PLATFORMS: [&str; 4] = [
    "github_rest",
    "github_graphql",
    "github_search",
    "gitlab_rest",
];
const ANNOUNCE: &str = "augur-oauth-announce";
/// The slices a burst is sent in, evenly spaced over the sending time.
const SLICES: usize = 40;
/// What `serve` logs when Redis cut its subscription off.
const CUT_OFF: &str = "Redis subscription lost its connection";

/// The PUBLISH commands of the burst, in RESP, each key to the four platforms in turn.
fn burst() -> Vec<Vec<u8>> {
    let mut commands = Vec::with_capacity(KEYS * PLATFORMS.len());
    for i in 0..KEYS {
        let key = format!("ghp_burst{i:07}_abcdefghijklmnopqrstuvwxyz");
        for platform in PLATFORMS {
            let payload = format!(
                r#"{{"type": "PUBLISH", "key_str": "{key}", "key_platform": "{platform}"}}"#
            );
            let mut command = format!(
                "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{ANNOUNCE}\r\n${}\r\n",
                ANNOUNCE.len(),
                payload.len()
            )
            .into_bytes();
            command.extend_from_slice(payload.as_bytes());
            command.extend_from_slice(b"\r\n");
            commands.push(command);
        }
    }
    commands
}

/// `keyman serve` on `url`, its log in `log`.
fn serve(url: &str, log: &std::path::Path, state: bool) -> Child {
    let log = std::fs::File::create(log).expect("create the log file");
    let mut command = Command::new(env!("CARGO_BIN_EXE_keyman"));
    command.args(["serve", "--redis-url", url]);
    if !state {
        command.arg("--no-state");
    }
    command
        .env_remove("REDIS_CONN_STRING")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start keyman serve")
}

/// Sends `commands` on one connection in [`SLICES`] slices spread over
/// `over`, reading Redis's replies on a thread of its own; returns how long
/// the sending took.
fn send(port: u16, commands: &[Vec<u8>], over: Duration) -> Duration {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis-server");
    let mut reader = stream.try_clone().expect("clone the connection");
    let replies = commands.len();
    let draining = std::thread::spawn(move || {
        let (mut lines, mut buf) = (0usize, vec![0u8; 1 << 20]);
        while lines < replies {
            match reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
            }
        }
    });
    let per = commands.len().div_ceil(SLICES);
    let start = Instant::now();
    for (i, slice) in commands.chunks(per).enumerate() {
        stream
            .write_all(&slice.concat())
            .expect("send to redis-server");
        let due = over.mul_f64((i + 1) as f64 / SLICES as f64);
        if let Some(left) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(left);
        }
    }
    let sent = start.elapsed();
    let _ = draining.join();
    sent
}

struct Outcome {
    sent_in: Duration,
    listed: Vec<Result<usize, String>>,
    cut_off: bool,
    applied_in: Duration,
}

async fn run(commands: &[Vec<u8>], over: Duration, state: bool) -> Outcome {
    let redis = RedisServer::start().expect("start redis-server");
    let url = redis.url();
    let log = redis.dir().join("serve.log");
    let mut child = serve(&url, &log, state);
    let bus = keyman::service::connect_url(&url).await.expect("connect");
    let config = ClientConfig {
        deadline: Duration::from_secs(60),
        ..ClientConfig::default()
    };
    let admin = KeyPublisher::connect(bus, config)
        .await
        .expect("connect a publisher");
    admin
        .ping_within(Duration::from_secs(30))
        .await
        .expect("keyman serve answers");
    let port = redis.port();
    let start = Instant::now();
    let sent_in = tokio::task::block_in_place(|| send(port, commands, over));
    admin
        .ping()
        .await
        .expect("keyman serve answers after the burst");
    let applied_in = start.elapsed();
    let mut listed = Vec::new();
    for platform in PLATFORMS {
        listed.push(
            admin
                .keys(platform)
                .await
                .map(|keys| keys.len())
                .map_err(|e| e.to_string()),
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    let cut_off = std::fs::read_to_string(&log)
        .map(|log| log.contains(CUT_OFF))
        .unwrap_or(false);
    Outcome {
        sent_in,
        listed,
        cut_off,
        applied_in,
    }
}

fn main() {
    let times: Vec<f64> = std::env::var("KEYMAN_BURST_SECS")
        .unwrap_or_else(|_| "3,1.5,1,0.75,0.5".to_owned())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let state = std::env::var("KEYMAN_BURST_STATE").is_ok_and(|v| v == "1");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let commands = burst();
    println!(
        "{} PUBLISHes ({KEYS} keys x {} platforms), Redis default pub/sub limit, state {}",
        commands.len(),
        PLATFORMS.len(),
        if state { "saved in Redis" } else { "off" }
    );
    println!(
        "sending time | sent in | ping answered after | keys listed per platform | Redis cut off"
    );
    for secs in times {
        let over = Duration::from_secs_f64(secs);
        let outcome = runtime.block_on(run(&commands, over, state));
        let listed: Vec<String> = outcome
            .listed
            .iter()
            .map(|n| match n {
                Ok(n) => n.to_string(),
                Err(e) => format!("error: {e}"),
            })
            .collect();
        let all = outcome.listed.iter().all(|n| n == &Ok(KEYS));
        println!(
            "{secs:>9.2} s | {:>6.2} s | {:>16.2} s | {} ({}) | {}",
            outcome.sent_in.as_secs_f64(),
            outcome.applied_in.as_secs_f64(),
            listed.join(" / "),
            if all { "all applied" } else { "keys lost" },
            if outcome.cut_off { "yes" } else { "no" }
        );
    }
}
