//! Counters of what an [`Engine`](super::Engine) did.

/// Counters of what the engine did, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Messages decoded and handled.
    pub handled: u64,
    /// Messages rejected as malformed, oversized or unknown.
    pub rejected: u64,
    /// Keys handed out.
    pub assigned: u64,
    /// `wait` replies sent.
    pub waits: u64,
    /// Error replies sent.
    pub errors: u64,
    /// NEW requests held for a key (ext `hold_ms`) since the start, counted
    /// once each; [`Engine::held`](super::Engine::held) is how many are held now.
    pub holds_total: u64,
    /// Changes of the pool's state (publish, unpublish, expire, invalidate);
    /// when it moves, the state is worth saving.
    pub changes: u64,
}
