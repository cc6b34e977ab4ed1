//! [`RawSub`]: a raw subscriber that reads replies of any size with no queue
//! of its own to overflow.

use super::*;

// ---------------------------------------------------------------- subscriber

/// A raw subscriber: a thread reads every message into an unbounded queue,
/// so nothing it is sent is lost on the test's side.
pub struct RawSub {
    stream: TcpStream,
    rx: mpsc::Receiver<(String, Vec<u8>, Instant)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawSub {
    /// Subscribes to exactly `channels`, and returns once the broker has them
    /// all in place.
    pub fn channels(broker: &Broker, channels: &[String]) -> RawSub {
        Self::open(broker, channels, None)
    }

    /// Subscribes to every channel that starts with `prefix`: a pattern
    /// subscription on Redis (`prefix*`); on NATS, where `-` is no token
    /// separator, the channels `prefix{id}` for every id in `ids`.
    pub fn prefixed(broker: &Broker, prefix: &str, ids: &[String]) -> RawSub {
        match broker {
            Broker::Redis(_) => Self::open(broker, &[], Some(&format!("{prefix}*"))),
            Broker::Nats(_) => {
                let channels: Vec<String> = ids.iter().map(|id| format!("{prefix}{id}")).collect();
                Self::open(broker, &channels, None)
            }
        }
    }

    fn open(broker: &Broker, channels: &[String], pattern: Option<&str>) -> RawSub {
        let (tx, rx) = mpsc::channel();
        let p = port(broker);
        let (stream, thread) = match broker {
            Broker::Redis(_) => {
                let stream = connect_stream(p).expect("connect to redis-server");
                stream.set_read_timeout(None).expect("no read timeout");
                let mut reader =
                    BufReader::with_capacity(1 << 20, stream.try_clone().expect("clone"));
                let mut writer = BufWriter::new(stream.try_clone().expect("clone"));
                let mut expected = 0usize;
                for chunk in channels.chunks(1000) {
                    let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
                    args.extend(chunk.iter().map(|c| c.as_bytes()));
                    write_command(&mut writer, &args).expect("SUBSCRIBE");
                    expected += chunk.len();
                }
                if let Some(pattern) = pattern {
                    write_command(&mut writer, &[b"PSUBSCRIBE", pattern.as_bytes()])
                        .expect("PSUBSCRIBE");
                    expected += 1;
                }
                writer.flush().expect("flush SUBSCRIBE");
                for _ in 0..expected {
                    match read_resp(&mut reader).expect("subscription confirmed") {
                        Resp::Array(Some(_)) => {}
                        other => panic!("unexpected answer to SUBSCRIBE: {other:?}"),
                    }
                }
                let thread = std::thread::spawn(move || {
                    while let Ok(Resp::Array(Some(items))) = read_resp(&mut reader) {
                        let at = Instant::now();
                        let (channel, payload) = match items.as_slice() {
                            [kind, channel, payload] if kind.bytes() == Some(b"message") => {
                                (channel, payload)
                            }
                            [kind, _, channel, payload] if kind.bytes() == Some(b"pmessage") => {
                                (channel, payload)
                            }
                            _ => continue,
                        };
                        let channel = String::from_utf8_lossy(channel.bytes().unwrap_or_default())
                            .into_owned();
                        let payload = payload.bytes().unwrap_or_default().to_vec();
                        if tx.send((channel, payload, at)).is_err() {
                            return;
                        }
                    }
                });
                (stream, thread)
            }
            Broker::Nats(_) => {
                let (mut reader, mut writer) = nats_connect(p).expect("connect to nats-server");
                reader
                    .get_ref()
                    .set_read_timeout(None)
                    .expect("no read timeout");
                for (sid, channel) in channels.iter().enumerate() {
                    write!(writer, "SUB {channel} {}\r\n", sid + 1).expect("SUB");
                }
                nats_round_trip(&mut reader, &mut writer).expect("subscriptions in place");
                let stream = writer.get_ref().try_clone().expect("clone");
                let thread = std::thread::spawn(move || {
                    // Messages keyman's NATS transport split, being put together.
                    let mut parts: std::collections::HashMap<(String, String), Vec<u8>> =
                        std::collections::HashMap::new();
                    loop {
                        match read_nats(&mut reader) {
                            Ok(NatsIn::Msg {
                                subject,
                                payload,
                                chunk,
                            }) => {
                                let payload = match chunk {
                                    None => payload,
                                    Some((id, index, count)) => {
                                        let key = (subject.clone(), id);
                                        let part = parts.entry(key.clone()).or_default();
                                        part.extend_from_slice(&payload);
                                        if index + 1 < count {
                                            continue;
                                        }
                                        parts.remove(&key).unwrap_or_default()
                                    }
                                };
                                if tx.send((subject, payload, Instant::now())).is_err() {
                                    return;
                                }
                            }
                            Ok(NatsIn::Ping) => {
                                if writer
                                    .write_all(b"PONG\r\n")
                                    .and_then(|()| writer.flush())
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(_) => return,
                        }
                    }
                });
                (stream, thread)
            }
        };
        RawSub {
            stream,
            rx,
            thread: Some(thread),
        }
    }

    /// The next message within `limit`: its channel, payload and when it was read.
    pub fn next(&self, limit: Duration) -> Option<(String, Vec<u8>, Instant)> {
        self.rx.recv_timeout(limit).ok()
    }

    /// The next message if one is already there.
    pub fn try_next(&self) -> Option<(String, Vec<u8>, Instant)> {
        self.rx.try_recv().ok()
    }
}

impl Drop for RawSub {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
