//! Fault-injection support for the reliability tests: raw broker clients that
//! pipeline thousands of messages without waiting for each (as Augur's Python
//! clients do, one PUBLISH per message), raw subscribers that read replies of
//! any size with no queue of their own to overflow, raw access to the saved
//! state, and signals for `keyman serve` processes.
//!
//! Everything here speaks the broker's wire protocol itself (RESP for Redis,
//! the NATS text protocol) over loopback `std::net` sockets, so that what a
//! test measures is `keyman serve`, not the library's own Bus.

use super::{Broker, Serve};
use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The admin channel id (Augur's).
pub const ANN: &str = "augur-oauth-announce";
/// The worker channel id (Augur's).
pub const REQ: &str = "worker-oath-request";
/// What a standby logs when it takes the lease.
pub const SERVING: &str = "took the lease; serving";
/// The Redis key of the saved state under the default name.
pub const REDIS_STATE_KEY: &str = "keyman:state:augur-oauth-announce";
/// The NATS JetStream key-value bucket of the saved state.
pub const NATS_BUCKET: &str = "keyman";
/// How long one raw broker operation may take.
const IO_LIMIT: Duration = Duration::from_secs(60);

mod subscriber;
mod wire;
pub use subscriber::RawSub;
pub use wire::Resp;
use wire::*;

/// Augur's exact bytes for a NEW (`json.dumps` of the worker's dict).
pub fn new_bytes(platform: &str, requester: &str) -> Vec<u8> {
    format!(r#"{{"type": "NEW", "key_platform": "{platform}", "requester_id": {requester}}}"#)
        .into_bytes()
}

/// Augur's exact bytes for a PUBLISH.
pub fn publish_bytes(platform: &str, key: &str) -> Vec<u8> {
    format!(r#"{{"type": "PUBLISH", "key_str": "{key}", "key_platform": "{platform}"}}"#)
        .into_bytes()
}

/// The port of `broker`'s URL.
fn port(broker: &Broker) -> u16 {
    match broker {
        Broker::Redis(s) => s.port(),
        Broker::Nats(s) => s.port(),
    }
}

fn connect_stream(port: u16) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_LIMIT))?;
    stream.set_write_timeout(Some(IO_LIMIT))?;
    Ok(stream)
}

// ---------------------------------------------------------------- publisher

/// A raw connection that publishes, pipelined, and runs simple commands.
pub enum Raw {
    /// A Redis connection.
    Redis {
        /// Reads replies.
        reader: BufReader<TcpStream>,
        /// Writes commands.
        writer: BufWriter<TcpStream>,
    },
    /// A NATS connection.
    Nats {
        /// Reads from the server.
        reader: BufReader<TcpStream>,
        /// Writes to the server.
        writer: BufWriter<TcpStream>,
    },
}

impl Raw {
    /// Connects to `broker`.
    pub fn connect(broker: &Broker) -> Raw {
        let p = port(broker);
        match broker {
            Broker::Redis(_) => {
                let stream = connect_stream(p).expect("connect to redis-server");
                Raw::Redis {
                    reader: BufReader::with_capacity(1 << 20, stream.try_clone().expect("clone")),
                    writer: BufWriter::with_capacity(1 << 20, stream),
                }
            }
            Broker::Nats(_) => {
                let (reader, writer) = nats_connect(p).expect("connect to nats-server");
                Raw::Nats { reader, writer }
            }
        }
    }

    /// Publishes every `(channel, payload)` in one go, writing them all
    /// before reading any answer (Redis's integer replies are read by a second
    /// thread meanwhile), then waits until the broker has taken them all.
    pub fn publish_all(&mut self, messages: &[(String, Vec<u8>)]) {
        match self {
            Raw::Redis { reader, writer } => {
                std::thread::scope(|scope| {
                    let count = messages.len();
                    let replies = scope.spawn(move || -> io::Result<()> {
                        for _ in 0..count {
                            if let Resp::Error(e) = read_resp(reader)? {
                                return Err(bad(e));
                            }
                        }
                        Ok(())
                    });
                    for (channel, payload) in messages {
                        write_command(writer, &[b"PUBLISH", channel.as_bytes(), payload])
                            .expect("write PUBLISH");
                    }
                    writer.flush().expect("flush PUBLISHes");
                    replies
                        .join()
                        .expect("reply reader")
                        .expect("redis-server took every PUBLISH");
                });
            }
            Raw::Nats { reader, writer } => {
                for (channel, payload) in messages {
                    write!(writer, "PUB {channel} {}\r\n", payload.len()).expect("write PUB");
                    writer.write_all(payload).expect("write PUB");
                    writer.write_all(b"\r\n").expect("write PUB");
                }
                nats_round_trip(reader, writer).expect("nats-server took every PUB");
            }
        }
    }

    /// Publishes one message and waits until the broker took it (one round
    /// trip, as `redis.publish` in Augur's Python code).
    pub fn publish(&mut self, channel: &str, payload: &[u8]) {
        match self {
            Raw::Redis { .. } => {
                if let Resp::Error(e) = self.redis(&[b"PUBLISH", channel.as_bytes(), payload]) {
                    panic!("PUBLISH refused: {e}");
                }
            }
            Raw::Nats { .. } => self.publish_all(&[(channel.to_owned(), payload.to_vec())]),
        }
    }

    /// A Redis command (panics on a NATS connection).
    pub fn redis(&mut self, args: &[&[u8]]) -> Resp {
        let Raw::Redis { reader, writer } = self else {
            panic!("a Redis command on a NATS connection");
        };
        write_command(writer, args).expect("write command");
        writer.flush().expect("flush command");
        read_resp(reader).expect("read reply")
    }

    /// A NATS request: publishes `payload` on `subject` with a fresh reply
    /// subject and returns the first answer's payload (panics on Redis).
    pub fn nats_request(&mut self, subject: &str, payload: &[u8]) -> Vec<u8> {
        let Raw::Nats { reader, writer } = self else {
            panic!("a NATS request on a Redis connection");
        };
        let inbox = format!("_INBOX.reliability.{}", unique());
        write!(writer, "SUB {inbox} 1\r\nUNSUB 1 1\r\n").expect("write SUB");
        write!(writer, "PUB {subject} {inbox} {}\r\n", payload.len()).expect("write PUB");
        writer.write_all(payload).expect("write PUB");
        writer.write_all(b"\r\n").expect("write PUB");
        writer.flush().expect("flush");
        loop {
            match read_nats(reader).expect("read NATS answer") {
                NatsIn::Msg {
                    subject, payload, ..
                } if subject == inbox => return payload,
                NatsIn::Ping => {
                    writer.write_all(b"PONG\r\n").expect("PONG");
                    writer.flush().expect("flush");
                }
                NatsIn::Err(e) => panic!("nats-server: {e}"),
                _ => {}
            }
        }
    }

    /// A JetStream API call; its JSON answer.
    pub fn jetstream(&mut self, api: &str, body: serde_json::Value) -> serde_json::Value {
        let answer = self.nats_request(&format!("$JS.API.{api}"), body.to_string().as_bytes());
        serde_json::from_slice(&answer).expect("a JSON JetStream answer")
    }
}

/// A process-unique number.
pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1_000_000
}

// ---------------------------------------------------------------- admin calls

/// One admin request by raw PUBLISH, its reply read raw (no payload limit):
/// `None` if there was none within `limit`.
pub fn admin_call(broker: &Broker, body: serde_json::Value, limit: Duration) -> Option<Vec<u8>> {
    let id = unique();
    let sub = RawSub::channels(broker, &[format!("{ANN}-{id}")]);
    let mut body = body;
    body["requester_id"] = serde_json::Value::from(id);
    Raw::connect(broker).publish(ANN, body.to_string().as_bytes());
    sub.next(limit).map(|(_, payload, _)| payload)
}

/// One worker request by raw PUBLISH on the request channel (a NEW, with
/// `lease` or not; a REPORT with `request_id`), its reply read raw and parsed:
/// `None` if there was none within `limit`.
pub fn worker_call(
    broker: &Broker,
    body: serde_json::Value,
    limit: Duration,
) -> Option<serde_json::Value> {
    let id = unique();
    let sub = RawSub::channels(broker, &[format!("{REQ}-{id}")]);
    let mut body = body;
    body["requester_id"] = serde_json::Value::from(id);
    Raw::connect(broker).publish(REQ, body.to_string().as_bytes());
    let (_, payload, _) = sub.next(limit)?;
    serde_json::from_slice(&payload).ok()
}

/// Waits until `keyman serve` answers an ACK (sent again every 100 ms), at
/// most `limit`; whether it did.
pub fn wait_ack(broker: &Broker, limit: Duration) -> bool {
    let id = unique();
    let sub = RawSub::channels(broker, &[format!("{ANN}-{id}")]);
    let mut raw = Raw::connect(broker);
    let ack = format!(r#"{{"type": "ACK", "requester_id": {id}}}"#);
    let until = Instant::now() + limit;
    while Instant::now() < until {
        raw.publish(ANN, ack.as_bytes());
        if sub.next(Duration::from_millis(100)).is_some() {
            return true;
        }
    }
    false
}

/// The keys LIST_KEYS names for `platform` (read raw, any size); `None` if
/// nothing answered within `limit` or the answer is not a list.
pub fn list_keys(broker: &Broker, platform: &str, limit: Duration) -> Option<Vec<String>> {
    list(broker, "LIST_KEYS", Some(platform), limit)
}

/// A LIST_* call: the list it answers.
pub fn list(
    broker: &Broker,
    kind: &str,
    platform: Option<&str>,
    limit: Duration,
) -> Option<Vec<String>> {
    let mut body = serde_json::json!({ "type": kind });
    if let Some(p) = platform {
        body["key_platform"] = serde_json::Value::from(p);
    }
    let reply = admin_call(broker, body, limit)?;
    serde_json::from_slice(&reply).ok()
}

// ---------------------------------------------------------------- saved state

/// The raw bytes of a NATS key-value entry; `None` if it has none.
pub fn nats_kv_get(raw: &mut Raw, entry: &str) -> Option<Vec<u8>> {
    let answer = raw.jetstream(
        &format!("STREAM.MSG.GET.KV_{NATS_BUCKET}"),
        serde_json::json!({ "last_by_subj": format!("$KV.{NATS_BUCKET}.{entry}") }),
    );
    let data = answer.pointer("/message/data")?.as_str()?;
    Some(decode_base64(data).expect("JetStream gives base64"))
}

/// The entries of the NATS bucket (the part after `$KV.keyman.`).
pub fn nats_kv_entries(raw: &mut Raw) -> Vec<String> {
    let info = raw.jetstream(
        &format!("STREAM.INFO.KV_{NATS_BUCKET}"),
        serde_json::json!({ "subjects_filter": format!("$KV.{NATS_BUCKET}.>") }),
    );
    let prefix = format!("$KV.{NATS_BUCKET}.");
    info.pointer("/state/subjects")
        .and_then(serde_json::Value::as_object)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix(&prefix).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Redis keys matching `pattern`.
pub fn redis_keys(raw: &mut Raw, pattern: &str) -> Vec<String> {
    match raw.redis(&[b"KEYS", pattern.as_bytes()]) {
        Resp::Array(Some(items)) => items
            .iter()
            .filter_map(|i| i.bytes().map(|b| String::from_utf8_lossy(b).into_owned()))
            .collect(),
        other => panic!("KEYS answered {other:?}"),
    }
}

/// Decodes standard base64.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from((acc >> bits) & 0xff).ok()?);
        }
    }
    Some(out)
}

/// Deterministic bytes that are neither UTF-8 nor JSON.
pub fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = vec![0xff, 0xfe];
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x.to_le_bytes()[3]);
    }
    out
}

// ---------------------------------------------------------------- processes

/// Sends `signal` (`STOP`, `CONT`, `TERM`, `KILL`) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// Waits until `serve`'s log contains `text` `times` times, at most `limit`.
pub fn wait_log(serve: &Serve, text: &str, times: usize, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        if serve.log().matches(text).count() >= times {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `text` without its terminal colour codes.
pub fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The last `n` lines of a log, without colour codes.
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    plain(&lines[lines.len().saturating_sub(n)..].join("\n"))
}

/// Log lines that contain any of `needles` (at most 10 of them).
pub fn grep(log: &str, needles: &[&str]) -> String {
    log.lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
        .take(10)
        .map(plain)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Median and worst of some durations.
pub fn median_and_worst(times: &[Duration]) -> (Duration, Duration) {
    let mut sorted = times.to_vec();
    sorted.sort();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let worst = sorted.last().copied().unwrap_or_default();
    (median, worst)
}

/// The distinct strings of a list, and how many were repeated.
pub fn distinct(items: &[String]) -> (BTreeSet<String>, usize) {
    let set: BTreeSet<String> = items.iter().cloned().collect();
    let repeated = items.len() - set.len();
    (set, repeated)
}

/// Whether any saved-state record on `broker` (Redis keys `keyman:state:*`
/// of any type, NATS entries `state.*`) contains `needle`: a check that does
/// not depend on the record's format.
pub fn saved_state_contains(broker: &Broker, needle: &str) -> bool {
    let mut raw = Raw::connect(broker);
    let records: Vec<Vec<u8>> = match broker {
        Broker::Redis(_) => redis_keys(&mut raw, "keyman:state:*")
            .iter()
            .flat_map(|k| {
                let values = match raw.redis(&[b"TYPE", k.as_bytes()]).bytes() {
                    Some(b"hash") => raw.redis(&[b"HGETALL", k.as_bytes()]),
                    Some(b"string") => raw.redis(&[b"GET", k.as_bytes()]),
                    _ => Resp::Array(None),
                };
                match values {
                    Resp::Array(Some(items)) => items
                        .iter()
                        .filter_map(|i| i.bytes().map(<[u8]>::to_vec))
                        .collect::<Vec<_>>(),
                    other => other.bytes().map(<[u8]>::to_vec).into_iter().collect(),
                }
            })
            .collect(),
        Broker::Nats(_) => nats_kv_entries(&mut raw)
            .iter()
            .filter(|e| e.starts_with("state."))
            .filter_map(|e| nats_kv_get(&mut raw, e))
            .collect(),
    };
    records
        .iter()
        .any(|r| r.windows(needle.len()).any(|w| w == needle.as_bytes()))
}

/// Waits until [`saved_state_contains`] `needle`, at most `limit`.
pub fn wait_saved(broker: &Broker, needle: &str, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    loop {
        if saved_state_contains(broker, needle) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
