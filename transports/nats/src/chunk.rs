//! Payloads larger than the server takes (1 MiB by default): split into
//! chunks on the way out and put together again on the way in, so the layers
//! above never see the server's limit and operators need not raise it.
//!
//! A payload that fits is sent as it is, without headers, as every NATS client
//! expects. A larger one goes as consecutive messages on the same subject, each
//! with the header `Keyman-Chunk: <id> <index> <count> <total>` and at most
//! [`chunk_size`] bytes. NATS keeps the order of one connection's messages on
//! one subject, so a subscriber receives the chunks in order (possibly with
//! other messages between them); it puts them together in an [`Assembler`],
//! bounded in size ([`NatsOptions::max_message`](crate::NatsOptions)) and in
//! time ([`CHUNK_WAIT`]), and drops (and logs) what breaks those bounds or
//! arrives incomplete.

use async_nats::HeaderMap;
use bytes::Bytes;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// The header that marks a chunk.
pub(crate) const CHUNK_HEADER: &str = "Keyman-Chunk";

/// The longest the chunks of one message may take to arrive in full.
pub(crate) const CHUNK_WAIT: Duration = Duration::from_secs(30);

/// How many messages may be incomplete at once on one subscription; the
/// oldest is dropped beyond it.
const MAX_INCOMPLETE: usize = 32;

/// Room left in each chunk for the header (which counts toward the server's limit).
const HEADER_ROOM: usize = 512;

/// The server's limit when it announces none.
const DEFAULT_SERVER_MAX: usize = 1024 * 1024;

/// The payload bytes of each chunk under a server limit of `server_max` bytes.
pub(crate) fn chunk_size(server_max: usize) -> usize {
    let server_max = if server_max == 0 {
        DEFAULT_SERVER_MAX
    } else {
        server_max
    };
    server_max.saturating_sub(HEADER_ROOM).max(1024)
}

/// Whether a payload of `len` bytes must be split under a server limit of `server_max`.
pub(crate) fn needs_split(len: usize, server_max: usize) -> bool {
    let server_max = if server_max == 0 {
        DEFAULT_SERVER_MAX
    } else {
        server_max
    };
    len > server_max
}

/// The chunks of `payload`, each with its header.
pub(crate) fn split(id: &str, payload: Bytes, size: usize) -> Vec<(HeaderMap, Bytes)> {
    let total = payload.len();
    let count = total.div_ceil(size);
    (0..count)
        .map(|index| {
            let start = index * size;
            let end = (start + size).min(total);
            let mut headers = HeaderMap::new();
            headers.insert(CHUNK_HEADER, format!("{id} {index} {count} {total}"));
            (headers, payload.slice(start..end))
        })
        .collect()
}

/// What one chunk header says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChunkHeader {
    id: String,
    index: usize,
    count: usize,
    total: usize,
}

fn parse_header(value: &str) -> Option<ChunkHeader> {
    let mut parts = value.split_ascii_whitespace();
    let id = parts.next()?.to_owned();
    let index = parts.next()?.parse().ok()?;
    let count = parts.next()?.parse().ok()?;
    let total = parts.next()?.parse().ok()?;
    if parts.next().is_some() || index >= count {
        return None;
    }
    Some(ChunkHeader {
        id,
        index,
        count,
        total,
    })
}

/// A message that is being put together.
struct Incomplete {
    data: Vec<u8>,
    next: usize,
    count: usize,
    total: usize,
    started: Instant,
}

/// What an [`Assembler`] makes of one incoming message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Assembled {
    /// A whole message: one that was never split, or the last chunk of one.
    Whole(Bytes),
    /// A chunk of a message not yet complete.
    Pending,
    /// A chunk that was dropped, with the reason (for the log).
    Dropped(String),
}

/// Puts chunked messages together again, per subject and chunk id.
pub(crate) struct Assembler {
    max_message: usize,
    incomplete: HashMap<(String, String), Incomplete>,
}

impl Assembler {
    /// An assembler that refuses messages of more than `max_message` bytes.
    pub(crate) fn new(max_message: usize) -> Assembler {
        Assembler {
            max_message,
            incomplete: HashMap::new(),
        }
    }

    /// Takes one incoming message on `subject`.
    pub(crate) fn accept(
        &mut self,
        subject: &str,
        headers: Option<&HeaderMap>,
        payload: Bytes,
    ) -> Assembled {
        let Some(value) = headers.and_then(|headers| headers.get(CHUNK_HEADER)) else {
            return Assembled::Whole(payload);
        };
        let now = Instant::now();
        self.incomplete
            .retain(|_, part| now.duration_since(part.started) < CHUNK_WAIT);
        let Some(header) = parse_header(value.as_str()) else {
            return Assembled::Dropped(format!("a chunk with an unreadable header on {subject}"));
        };
        if header.total > self.max_message {
            return Assembled::Dropped(format!(
                "a message of {} bytes on {subject}, more than the {} bytes accepted",
                header.total, self.max_message
            ));
        }
        let key = (subject.to_owned(), header.id.clone());
        if header.index == 0 {
            if header.count == 1 {
                return Self::finish(payload.to_vec(), header.total, subject);
            }
            if self.incomplete.len() >= MAX_INCOMPLETE
                && let Some(oldest) = self
                    .incomplete
                    .iter()
                    .min_by_key(|(_, part)| part.started)
                    .map(|(key, _)| key.clone())
            {
                self.incomplete.remove(&oldest);
            }
            let mut data = Vec::with_capacity(header.total);
            data.extend_from_slice(&payload);
            self.incomplete.insert(
                key,
                Incomplete {
                    data,
                    next: 1,
                    count: header.count,
                    total: header.total,
                    started: now,
                },
            );
            return Assembled::Pending;
        }
        let Some(part) = self.incomplete.get_mut(&key) else {
            return Assembled::Dropped(format!(
                "chunk {} of {} on {subject} without its beginning (too late, or its beginning was lost)",
                header.index, header.count
            ));
        };
        if header.index != part.next
            || header.count != part.count
            || header.total != part.total
            || part.data.len() + payload.len() > part.total
        {
            self.incomplete.remove(&key);
            return Assembled::Dropped(format!(
                "chunk {} of {} on {subject} out of order; the message is dropped",
                header.index, header.count
            ));
        }
        part.data.extend_from_slice(&payload);
        part.next += 1;
        if part.next < part.count {
            return Assembled::Pending;
        }
        let Some(part) = self.incomplete.remove(&key) else {
            return Assembled::Pending;
        };
        Self::finish(part.data, part.total, subject)
    }

    fn finish(data: Vec<u8>, total: usize, subject: &str) -> Assembled {
        if data.len() == total {
            Assembled::Whole(Bytes::from(data))
        } else {
            Assembled::Dropped(format!(
                "a message on {subject} of {} bytes where its chunks announced {total}",
                data.len()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(assembler: &mut Assembler, chunks: Vec<(HeaderMap, Bytes)>) -> Vec<Assembled> {
        chunks
            .into_iter()
            .map(|(headers, payload)| assembler.accept("s", Some(&headers), payload))
            .collect()
    }

    #[test]
    fn a_split_payload_is_put_together_again() {
        let payload: Bytes = (0..10_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>()
            .into();
        let chunks = split("a", payload.clone(), 1024);
        assert_eq!(chunks.len(), 10);
        let mut assembler = Assembler::new(1 << 20);
        let mut results = feed(&mut assembler, chunks);
        assert_eq!(results.pop(), Some(Assembled::Whole(payload)));
        assert!(results.iter().all(|r| *r == Assembled::Pending));
        assert!(assembler.incomplete.is_empty());
    }

    #[test]
    fn messages_without_the_header_pass_through() {
        let mut assembler = Assembler::new(16);
        let payload = Bytes::from_static(b"plain and longer than the limit");
        assert_eq!(
            assembler.accept("s", None, payload.clone()),
            Assembled::Whole(payload)
        );
    }

    #[test]
    fn interleaved_messages_are_kept_apart() {
        let one: Bytes = vec![1u8; 3000].into();
        let two: Bytes = vec![2u8; 3000].into();
        let mut assembler = Assembler::new(1 << 20);
        let mut out = Vec::new();
        for (a, b) in
            split("one", one.clone(), 1024)
                .into_iter()
                .zip(split("two", two.clone(), 1024))
        {
            out.push(assembler.accept("s", Some(&a.0), a.1));
            out.push(assembler.accept("s", Some(&b.0), b.1));
        }
        assert_eq!(&out[4..], [Assembled::Whole(one), Assembled::Whole(two)]);
    }

    #[test]
    fn too_large_gaps_and_bad_headers_are_dropped() {
        let payload: Bytes = vec![7u8; 5000].into();
        let mut small = Assembler::new(4000);
        let results = feed(&mut small, split("big", payload.clone(), 1024));
        assert!(results.iter().all(|r| matches!(r, Assembled::Dropped(_))));

        let mut assembler = Assembler::new(1 << 20);
        let mut chunks = split("gap", payload, 1024);
        chunks.remove(2);
        let results = feed(&mut assembler, chunks);
        assert!(matches!(results[2], Assembled::Dropped(_)));
        assert!(!results.iter().any(|r| matches!(r, Assembled::Whole(_))));
        assert!(assembler.incomplete.is_empty());

        let mut headers = HeaderMap::new();
        headers.insert(CHUNK_HEADER, "x 3 2 10");
        assert!(matches!(
            assembler.accept("s", Some(&headers), Bytes::new()),
            Assembled::Dropped(_)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_incomplete_message_expires() {
        let payload: Bytes = vec![7u8; 3000].into();
        let mut chunks = split("slow", payload, 1024);
        let mut assembler = Assembler::new(1 << 20);
        let (headers, first) = chunks.remove(0);
        assert_eq!(
            assembler.accept("s", Some(&headers), first),
            Assembled::Pending
        );
        tokio::time::advance(CHUNK_WAIT + Duration::from_secs(1)).await;
        let (headers, second) = chunks.remove(0);
        assert!(matches!(
            assembler.accept("s", Some(&headers), second),
            Assembled::Dropped(_)
        ));
    }

    #[test]
    fn the_split_threshold_follows_the_server() {
        assert!(!needs_split(1024 * 1024, 0));
        assert!(needs_split(1024 * 1024 + 1, 0));
        assert!(needs_split(2000, 1500));
        assert_eq!(chunk_size(1024 * 1024), 1024 * 1024 - HEADER_ROOM);
    }
}
