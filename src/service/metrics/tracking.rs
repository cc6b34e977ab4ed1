//! Which reply answers which request: a NEW is answered at once (a reply to
//! its channel while it is handled) or later, after being held; its reply is
//! timed until the bus has published it.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

/// The most requests and replies followed at once; past it, new ones are
/// counted but not timed.
const MAX_TRACKED: usize = 100_000;

/// What a message handed to the engine was, as far as the metrics care.
#[derive(Debug)]
pub(crate) struct Seen {
    /// Its type on the wire (`NEW`, `PUBLISH`, …).
    pub(super) kind: &'static str,
    /// Its platform, for the types that name one.
    pub(super) platform: Option<String>,
    /// For a NEW: the channel its reply goes to.
    pub(super) dest: Option<String>,
    /// When it was received.
    pub(super) arrived: Instant,
    /// For a NEW: whether its reply came out while it was handled.
    pub(super) answered: bool,
}

/// A request waiting for its reply: its platform (a label value) and arrival.
#[derive(Debug, Clone)]
pub(super) struct Waiting {
    pub(super) platform: String,
    pub(super) arrived: Instant,
}

/// The NEW requests held by the engine, and the replies on their way to the
/// bus, by channel, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Tracking {
    held: HashMap<String, VecDeque<Waiting>>,
    pending: HashMap<String, VecDeque<Instant>>,
    count: usize,
}

impl Tracking {
    /// Forgets everything (a term ended: what was held is not answered by it).
    pub(super) fn clear(&mut self) {
        self.held.clear();
        self.pending.clear();
        self.count = 0;
    }

    /// A NEW to `dest` was held.
    pub(super) fn hold(&mut self, dest: String, waiting: Waiting) {
        if self.count < MAX_TRACKED {
            self.count += 1;
            self.held.entry(dest).or_default().push_back(waiting);
        }
    }

    /// The oldest held NEW whose reply goes to `dest`, if any.
    pub(super) fn take_held(&mut self, dest: &str) -> Option<Waiting> {
        let queue = self.held.get_mut(dest)?;
        let waiting = queue.pop_front();
        if queue.is_empty() {
            self.held.remove(dest);
        }
        if waiting.is_some() {
            self.count = self.count.saturating_sub(1);
        }
        waiting
    }

    /// A reply to a NEW that arrived at `arrived` is on its way to `dest`.
    pub(super) fn publishing(&mut self, dest: &str, arrived: Instant) {
        if self.count < MAX_TRACKED {
            self.count += 1;
            self.pending
                .entry(dest.to_string())
                .or_default()
                .push_back(arrived);
        }
    }

    /// A payload was published to `dest` (or failed to be): the arrival of
    /// the request it answered, if it answered one.
    pub(super) fn published(&mut self, dest: &str) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        let queue = self.pending.get_mut(dest)?;
        let arrived = queue.pop_front();
        if queue.is_empty() {
            self.pending.remove(dest);
        }
        if arrived.is_some() {
            self.count = self.count.saturating_sub(1);
        }
        arrived
    }
}
