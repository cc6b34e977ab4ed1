//! A subscriber that reads slower than Redis delivers: the burst waits in the
//! kernel's socket buffers and in Redis's output buffer for the subscriber,
//! not in keyman's memory, and arrives whole and in order; beyond Redis's
//! output buffer limit Redis cuts the subscriber off, and the subscription
//! reports the gap, reconnects and goes on.

use keyman_redis::{RedisBus, RedisOptions};
use keyman_transport::testing::{QUICK_BACKOFF, QUICK_TIMEOUT, RedisServer, conformance};
use keyman_transport::{Bus, BusEvent, ConnectionOptions, Subscription};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The subscription's queue in these tests: small, so a burst is many times larger.
const QUEUE: usize = 256;
/// Redis's default `client-output-buffer-limit` for pub/sub clients, as `CONFIG GET` shows it.
const DEFAULT_PUBSUB_LIMIT: &str = "pubsub 33554432 8388608 60";
/// Bytes of each message's payload: its number in 8 digits, then padding.
const PAYLOAD: usize = 200;
/// How long a check may take to hold.
const WAIT: Duration = conformance::EVENT_TIMEOUT;

/// The tests measure the process's memory and the server's buffers: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn options() -> RedisOptions {
    RedisOptions {
        connection: ConnectionOptions {
            operation_timeout: QUICK_TIMEOUT,
            reconnect: QUICK_BACKOFF,
            queue_capacity: QUEUE,
        },
        ..RedisOptions::default()
    }
}

fn payload(number: usize, size: usize) -> Vec<u8> {
    let mut payload = format!("{number:08}").into_bytes();
    payload.resize(size, b'.');
    payload
}

fn number(payload: &[u8]) -> usize {
    std::str::from_utf8(&payload[..8])
        .ok()
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("not a numbered payload: {payload:?}"))
}

/// The bytes Redis sends a subscriber for one message.
fn frame_len(channel: &str, payload: usize) -> usize {
    format!(
        "*3\r\n$7\r\nmessage\r\n${}\r\n{channel}\r\n${payload}\r\n\r\n",
        channel.len()
    )
    .len()
        + payload
}

/// Publishes `count` numbered payloads on `channel` over a raw connection
/// with `CLIENT REPLY OFF`, as fast as the socket takes them, and returns
/// once the server has handled every one.
async fn publish_burst(url_port: u16, channel: &str, count: usize, size: usize) {
    let mut publisher = tokio::net::TcpStream::connect(("127.0.0.1", url_port))
        .await
        .expect("the publisher connects");
    let mut batch = redis::cmd("CLIENT")
        .arg("REPLY")
        .arg("OFF")
        .get_packed_command();
    for number in 0..count {
        batch.extend(
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload(number, size))
                .get_packed_command(),
        );
        if batch.len() > 256 * 1024 {
            publisher.write_all(&batch).await.expect("publish");
            batch.clear();
        }
    }
    batch.extend(
        redis::cmd("CLIENT")
            .arg("REPLY")
            .arg("ON")
            .get_packed_command(),
    );
    batch.extend(redis::cmd("PING").get_packed_command());
    publisher.write_all(&batch).await.expect("publish");
    let expected = b"+OK\r\n+PONG\r\n";
    let mut answer = vec![0u8; expected.len()];
    publisher
        .read_exact(&mut answer)
        .await
        .expect("the publisher's PING is answered");
    assert_eq!(answer, expected);
}

async fn inspector(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("inspector connects")
}

/// Where the bytes sent to the one pub/sub client wait: in Redis's output
/// buffer for it (`omem`), in Redis's socket not yet acknowledged, and in the
/// subscriber's socket not yet read.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    output_buffer: usize,
    server_socket: usize,
    subscriber_socket: usize,
}

impl Waiting {
    fn total(&self) -> usize {
        self.output_buffer + self.server_socket + self.subscriber_socket
    }
}

async fn waiting(inspector: &mut redis::aio::MultiplexedConnection, server_port: u16) -> Waiting {
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(inspector)
        .await
        .expect("CLIENT LIST");
    let line = clients
        .lines()
        .find(|line| !line.is_empty())
        .expect("a pub/sub client");
    let field = |name: &str| -> &str {
        line.split(' ')
            .find_map(|field| field.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    let output_buffer = field("omem=").parse().expect("omem");
    let subscriber_port: u16 = field("addr=")
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .expect("the subscriber's port");
    let (server_socket, _) = socket_queues(server_port, subscriber_port);
    let (_, subscriber_socket) = socket_queues(subscriber_port, server_port);
    Waiting {
        output_buffer,
        server_socket,
        subscriber_socket,
    }
}

/// The send and receive queues, in bytes, of the loopback TCP socket from
/// `local` to `remote` (`/proc/net/tcp`).
fn socket_queues(local: u16, remote: u16) -> (usize, usize) {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let local = format!(":{local:04X}");
    let remote = format!(":{remote:04X}");
    table
        .lines()
        .skip(1)
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !(fields.get(1)?.ends_with(&local) && fields.get(2)?.ends_with(&remote)) {
                return None;
            }
            let (tx, rx) = fields.get(4)?.split_once(':')?;
            Some((
                usize::from_str_radix(tx, 16).ok()?,
                usize::from_str_radix(rx, 16).ok()?,
            ))
        })
        .unwrap_or_else(|| panic!("no socket {local} -> {remote} in /proc/net/tcp"))
}

/// The resident memory of this process, in bytes.
fn resident() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| {
            kb.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<usize>()
                .ok()
        })
        .expect("VmRSS")
        * 1024
}

async fn next_event(subscription: &mut Subscription, what: &str) -> BusEvent {
    tokio::time::timeout(WAIT, subscription.next())
        .await
        .unwrap_or_else(|_| panic!("no event within {WAIT:?}: {what}"))
        .expect("the subscription is open")
}

async fn config_limit(inspector: &mut redis::aio::MultiplexedConnection) -> String {
    let (_, limit): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("client-output-buffer-limit")
        .query_async(inspector)
        .await
        .expect("CONFIG GET");
    limit
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_within_redis_limit_waits_in_redis_and_arrives_whole_and_in_order() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = RedisServer::start().expect("redis-server starts");
    let mut inspector = inspector(&server.url()).await;
    let limit = config_limit(&mut inspector).await;
    assert!(
        limit.contains(DEFAULT_PUBSUB_LIMIT),
        "the server runs with Redis's default limits: {limit}"
    );
    let bus = RedisBus::connect(&server.url(), options())
        .await
        .expect("connect");
    let channel = conformance::unique_channel("backpressure");
    let mut subscription = bus
        .subscribe(std::slice::from_ref(&channel))
        .await
        .expect("subscribe");

    // 100 000 messages, 24 MB as Redis sends them: within its 32 MB limit,
    // 390 times the subscriber's queue. Nobody reads the subscription meanwhile.
    let count = 100_000;
    let frame = frame_len(&channel, PAYLOAD);
    let burst = count * frame;
    let before = resident();
    publish_burst(server.port(), &channel, count, PAYLOAD).await;

    // The subscriber's socket has filled and the rest waits in Redis.
    let deadline = Instant::now() + WAIT;
    let mut now_waiting = waiting(&mut inspector, server.port()).await;
    while now_waiting.output_buffer == 0 || now_waiting.subscriber_socket == 0 {
        assert!(
            Instant::now() < deadline,
            "the burst never backed up to Redis: {now_waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        now_waiting = waiting(&mut inspector, server.port()).await;
    }
    // What keyman has read is the burst less what waits outside it: its queue,
    // the message it waits to queue, and a read buffer; for a while, it reads no more.
    let allowed = (QUEUE + 2) * frame + 64 * 1024;
    let mut most_read = 0;
    for _ in 0..10 {
        let now_waiting = waiting(&mut inspector, server.port()).await;
        let read = burst.saturating_sub(now_waiting.total());
        most_read = most_read.max(read);
        assert!(
            read <= allowed,
            "keyman read {read} bytes of a {burst}-byte burst with a queue of {QUEUE} \
             ({allowed} allowed); waiting outside it: {now_waiting:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grown = resident().saturating_sub(before);
    println!(
        "burst of {count} messages ({burst} bytes) to a paused subscriber with a queue of {QUEUE}: \
         the burst less what waits outside keyman (Redis's omem counts allocated blocks, so this \
         is an upper bound of what keyman read) at most {most_read} bytes; keyman's memory grew \
         by {grown} bytes; waiting: {now_waiting:?}"
    );
    assert!(
        grown < burst / 2,
        "keyman's memory grew by {grown} bytes during a {burst}-byte burst it did not read"
    );

    // The subscriber reads: everything arrives, in order, with no gap.
    for expected in 0..count {
        match next_event(&mut subscription, "the paused burst").await {
            BusEvent::Message(message) => {
                assert_eq!(message.channel, channel);
                assert_eq!(number(&message.payload), expected, "out of order");
            }
            other => panic!("expected message {expected}, got {other:?}"),
        }
    }
    assert_eq!(subscription.try_next(), None, "nothing after the burst");
    let drained = waiting(&mut inspector, server.port()).await;
    assert_eq!(drained.total(), 0, "Redis holds nothing more: {drained:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_redis_limit_the_subscriber_is_cut_off_reports_the_gap_and_resubscribes() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server =
        RedisServer::start_with_args(&["--client-output-buffer-limit", "pubsub 1mb 256kb 60"])
            .expect("redis-server starts");
    let bus = RedisBus::connect(&server.url(), options())
        .await
        .expect("connect");
    let channel = conformance::unique_channel("cut-off");
    let mut subscription = bus
        .subscribe(std::slice::from_ref(&channel))
        .await
        .expect("subscribe");

    // 40 000 messages of 500 bytes, 20 MB, to a paused subscriber: far beyond 1 MB.
    let count = 40_000;
    publish_burst(server.port(), &channel, count, 500).await;
    let log = std::fs::read_to_string(server.dir().join("server.log")).expect("server log");
    assert!(
        log.contains("output buffer limits"),
        "Redis cut the subscriber off; its log:\n{log}"
    );

    // The subscriber reads: an unbroken beginning of the burst, then the gap.
    let mut received = 0;
    let reason = loop {
        match next_event(&mut subscription, "the beginning of the burst").await {
            BusEvent::Message(message) => {
                assert_eq!(number(&message.payload), received, "out of order");
                received += 1;
            }
            BusEvent::Disconnected { reason } => break reason,
            BusEvent::Reconnected => panic!("Reconnected before Disconnected"),
        }
    };
    println!("{received} of {count} messages before the gap; reason: {reason}");
    assert!(
        received < count,
        "the whole burst came through a 1 MB limit"
    );
    assert!(
        reason.contains("client-output-buffer-limit pubsub"),
        "the reason names the likely cause: {reason}"
    );
    assert!(
        reason.contains(&format!("{received} messages were received")),
        "the reason counts what came before the gap: {reason}"
    );
    assert_eq!(
        next_event(&mut subscription, "the new subscription").await,
        BusEvent::Reconnected
    );

    // Subscribed again: what is published now arrives.
    bus.publish(&channel, &payload(count, 16))
        .await
        .expect("publish");
    match next_event(&mut subscription, "a message after the gap").await {
        BusEvent::Message(message) => assert_eq!(number(&message.payload), count),
        other => panic!("expected the message after the gap, got {other:?}"),
    }
}
