//! Held requests: a NEW that asked to wait (`hold_ms`, ext) for a key of its
//! platform, answered as soon as one is fresh or when its hold ends.

use super::{Engine, Transmit, wait_seconds};
use crate::pool::Assignment;
use crate::protocol::{ErrorCode, Id, Reply, ReplyTo};
use crate::time::Timestamp;
use rand_core::Rng;
use std::collections::VecDeque;
use std::time::Duration;

/// A NEW held until a key of its platform is fresh, or until `until`.
#[derive(Debug, Clone)]
pub(super) struct Held {
    pub(super) dest: String,
    pub(super) requester_id: Id,
    pub(super) request_id: Option<Id>,
    pub(super) until: Timestamp,
}

impl<R: Rng> Engine<R> {
    /// Answers held requests: with a key, oldest first, while the platform has a
    /// fresh key; with an error once it has no keys at all; and, when
    /// `expire` is set, with `{"wait": n}` once their hold has ended.
    pub(super) fn serve_held(&mut self, now: Timestamp, expire: bool) {
        let platforms: Vec<String> = self.held.keys().cloned().collect();
        let mut changed = false;
        for platform in platforms {
            let Some(mut queue) = self.held.remove(&platform) else {
                continue;
            };
            let before = queue.len();
            while let Some(front) = queue.front() {
                let answer = match self.draw(now, &platform) {
                    Assignment::Key(k) => Reply::Key(k.to_string()),
                    Assignment::Wait { .. } => break,
                    Assignment::NoKeys | Assignment::UnknownPlatform => Reply::Error {
                        code: ErrorCode::NoKeys,
                        message: format!("no usable keys for platform: {platform}"),
                    },
                };
                if !matches!(answer, Reply::Key(_)) {
                    self.stats.errors += 1;
                }
                let dest = front.dest.clone();
                let rid = front.request_id.clone();
                queue.pop_front();
                self.send(dest, &answer, rid.as_ref());
            }
            if expire {
                let next = self.pool.next_refresh_of(&platform).unwrap_or(now);
                let wait = Reply::Wait(wait_seconds(now, next));
                let mut kept = VecDeque::with_capacity(queue.len());
                for h in queue.drain(..) {
                    if h.until <= now {
                        self.stats.waits += 1;
                        self.transmits.push_back(Transmit {
                            channel: h.dest,
                            payload: wait.encode(h.request_id.as_ref()),
                        });
                    } else {
                        kept.push_back(h);
                    }
                }
                queue = kept;
            }
            if queue.len() != before {
                changed = true;
                self.held_count -= before - queue.len();
            }
            if !queue.is_empty() {
                self.held.insert(platform, queue);
            }
        }
        if changed {
            self.next_hold_expiry = self.held.values().flatten().map(|h| h.until).min();
        }
    }

    /// Holds a NEW that found no fresh key, if it asked to be held and there is
    /// room; returns whether it was held (or was a duplicate of a held one).
    pub(super) fn hold(
        &mut self,
        now: Timestamp,
        platform: &str,
        dest: &str,
        reply: &ReplyTo,
        hold_ms: u64,
    ) -> bool {
        if hold_ms == 0 || self.held_count >= self.config.max_held {
            return false;
        }
        let queue = self.held.entry(platform.to_string()).or_default();
        // A request sent again (after a reconnect, or to a new native reply
        // subject) is held once, and answered where it was last sent from.
        if let Some(h) = queue.iter_mut().find(|h| {
            reply.request_id.is_some()
                && h.request_id == reply.request_id
                && h.requester_id == reply.requester_id
        }) {
            h.dest = dest.to_string();
            return true;
        }
        let hold = Duration::from_millis(hold_ms).min(self.config.max_hold);
        let until = now.saturating_add(hold);
        queue.push_back(Held {
            dest: dest.to_string(),
            requester_id: reply.requester_id.clone(),
            request_id: reply.request_id.clone(),
            until,
        });
        self.held_count += 1;
        self.stats.holds_total += 1;
        self.next_hold_expiry = Some(self.next_hold_expiry.map_or(until, |t| t.min(until)));
        true
    }
}
