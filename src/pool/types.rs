//! The pool's vocabulary: how keys are chosen, what a key's state is, and
//! what each operation answers.

#[cfg(doc)]
use super::KeyPool;
use crate::time::Timestamp;

/// How [`KeyPool::assign`] chooses among the fresh keys of a platform.
///
/// New strategies (most remaining quota, leases with a concurrency cap) are added
/// here: the pool keeps the fresh keys in a dense array, so a strategy only has to
/// pick an index into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Selection {
    /// Uniformly at random, as Augur's orchestrator does. `O(1)`.
    #[default]
    Uniform,
    /// Each fresh key in turn. `O(1)`. The order changes when keys leave the fresh set.
    RoundRobin,
    // -- quota-aware strategies --
    /// The key whose account has the most calls left above its floor; keys with
    /// nothing known come first (to learn them), ties are broken uniformly at
    /// random. Without quota information ([`KeyPool::assign`]) it is
    /// [`Uniform`](Self::Uniform). `O(n)`.
    MostRemaining,
    /// At random, each key weighted by its calls left above the floor (a key
    /// with nothing known weighs as the mean of the known ones): spreads the
    /// load without a herd on one key. Uniform when nothing is known. `O(n)`.
    WeightedRemaining,
    /// The fresh key handed out the fewest times since it became fresh (was
    /// refreshed, published or revived); ties uniformly at random. Spreads
    /// workers that keep a key until it is spent (Augur's) over the fresh
    /// keys instead of piling them on one. `O(n)`.
    LeastAssigned,
}

/// What a quota-aware choice ([`KeyPool::choose`]) knows of a fresh key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weight {
    /// Nothing is known of its quota: it may be chosen.
    Unknown,
    /// This many calls are left above its floor (after the calls lent); 0
    /// means it may not be chosen now.
    Calls(u64),
}

/// The state of one key in one platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// May be handed out.
    Fresh,
    /// Rate limited; becomes fresh when the clock reaches `refresh_at`.
    Expired {
        /// The refresh time.
        refresh_at: Timestamp,
    },
    /// Permanently bad; only a publish brings it back.
    Invalid,
}

/// What [`KeyPool::assign`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignment<'a> {
    /// A fresh key.
    Key(&'a str),
    /// No key is fresh; the earliest expired key refreshes at `refresh_at`.
    Wait {
        /// The earliest refresh time of the platform.
        refresh_at: Timestamp,
    },
    /// No key was ever published for this platform.
    UnknownPlatform,
    /// The platform has no fresh and no expired key (all invalid or unpublished).
    NoKeys,
}

/// What [`KeyPool::assign`] and [`KeyPool::choose`] decided, with the fresh
/// key as its place in the platform's fresh keys: it borrows nothing, so the
/// engine may do more before it reads the key ([`KeyPool::picked`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// The fresh key at this index.
    Key(usize),
    /// As [`Assignment::Wait`].
    Wait(Timestamp),
    /// As [`Assignment::UnknownPlatform`].
    UnknownPlatform,
    /// As [`Assignment::NoKeys`].
    NoKeys,
}

/// What a publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The key is new to the platform and fresh now.
    Added,
    /// The key was invalid and is fresh again.
    Revived,
    /// The key was already fresh or expired; nothing changed (publish is idempotent,
    /// and an expired key stays expired until its refresh time).
    Unchanged,
    /// Nothing changed: the key or platform name is longer than its limit, or
    /// the key would pass a cap of the engine. Only
    /// [`Engine::publish`](crate::Engine::publish) refuses; the pool itself has
    /// no limits.
    Refused,
}

/// What an expire did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// The key was fresh and is now expired until the given time.
    Expired,
    /// The key was already expired until an earlier time; it is now expired until
    /// the later one (the later of two refresh times wins: the API said so).
    Extended,
    /// Nothing changed: the key is unknown, invalid, already expired until a later
    /// time, or the refresh time is not after `now`.
    Unchanged,
}

/// What an invalidate did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalidated {
    /// The key was fresh or expired and is invalid now.
    Invalidated,
    /// The key was already invalid.
    AlreadyInvalid,
    /// The platform or the key is unknown; nothing changed.
    Unknown,
}

/// How many keys of a platform are in each state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Keys that may be handed out.
    pub fresh: usize,
    /// Rate-limited keys waiting for their refresh time.
    pub expired: usize,
    /// Permanently bad keys.
    pub invalid: usize,
}

impl Counts {
    /// All keys of the platform.
    pub fn total(&self) -> usize {
        self.fresh + self.expired + self.invalid
    }
}
