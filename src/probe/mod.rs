//! Probes: the orchestrator asks the platform itself what it knows of a key.
//!
//! Augur's workers hold a key until the platform answers 403 and tell nothing
//! else. The platform can tell more, to whoever holds the token: GitHub's
//! `GET /rate_limit` gives the limit, remaining calls and reset time of every
//! resource (`core`, `graphql`, `search`, …) without spending any of them, and
//! `GET /user` the account; GitLab's `GET /api/v4/personal_access_tokens/self`
//! says whether a token is valid and when it expires. With that the pool stops
//! handing out a key that is revoked, drained by someone else, or at its floor,
//! before a worker gets a 403 for it.
//!
//! This module is the pure side: which key to probe when ([`ProbeSchedule`]),
//! at a bounded rate, and the types of the question ([`ProbeRequest`]) and its
//! answer ([`ProbeAnswer`]). Like the rest of the core it does no I/O and
//! reads no clock. The [`Engine`](crate::Engine) owns the schedule and decides
//! what an answer does to the pool (its probe side); the service performs the
//! HTTP calls and feeds the answers back, and the simulator answers them in
//! virtual time.
//!
//! A probe is of one token with one [`Provider`], for every platform of that
//! provider the token is published to: one `GET /rate_limit` answers for
//! `github_rest`, `github_graphql` and `github_search` at once. Which
//! platform is which provider's which resource is [`ProbeConfig::targets`]; a
//! platform not there is never probed.

use crate::mask::Masked;
use crate::time::Timestamp;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

mod schedule;
#[cfg(test)]
mod tests;

pub use schedule::{ProbeSchedule, Settled, Urgency};

/// Who answers a probe, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Provider {
    /// GitHub (or GitHub Enterprise Server): `GET {api}/rate_limit` for the
    /// quotas of every resource, `GET {api}/user` once for the account.
    GitHub,
    /// GitLab: `GET {api}/api/v4/personal_access_tokens/self` for validity and
    /// expiry, and its `RateLimit-*` headers where the instance sends them.
    GitLab,
}

impl Provider {
    /// The provider's name in settings and logs (`github`, `gitlab`).
    pub fn name(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
        }
    }

    /// The provider named `name` (`github`, `gitlab`), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "github" => Some(Provider::GitHub),
            "gitlab" => Some(Provider::GitLab),
            _ => None,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which provider answers for a platform, and which of its resources is the
/// platform's quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Who to ask.
    pub provider: Provider,
    /// The resource whose quota is the platform's (`core`, `graphql`,
    /// `search` on GitHub; `rest` for GitLab's `RateLimit-*` headers).
    pub resource: String,
}

impl Target {
    /// A target of `provider`'s `resource`.
    pub fn new(provider: Provider, resource: &str) -> Self {
        Self {
            provider,
            resource: resource.to_string(),
        }
    }
}

/// The platforms probed by default: GitHub's `core`, `graphql` and `search`
/// resources as `github_rest`, `github_graphql` and `github_search` (the
/// platforms Augur publishes every GitHub token to), and GitLab as
/// `gitlab_rest`.
pub fn default_targets() -> BTreeMap<String, Target> {
    [
        ("github_rest", Target::new(Provider::GitHub, "core")),
        ("github_graphql", Target::new(Provider::GitHub, "graphql")),
        ("github_search", Target::new(Provider::GitHub, "search")),
        ("gitlab_rest", Target::new(Provider::GitLab, "rest")),
    ]
    .into_iter()
    .map(|(p, t)| (p.to_string(), t))
    .collect()
}

/// How probing is set up ([`EngineConfig::probe`](crate::EngineConfig::probe);
/// `None` there means no probes at all). The defaults suit a pool of a few
/// hundred GitHub tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// Which platform is which provider's resource; platforms not named are
    /// not probed. [`default_targets`] by default.
    pub targets: BTreeMap<String, Target>,
    /// The most probes sent in any one second, over all keys and providers
    /// (at least 1). 10 by default.
    pub max_per_second: u32,
    /// The most probes waiting for their answer at once (at least 1). 16 by
    /// default.
    pub max_in_flight: usize,
    /// The least time between two probes of one key. 5 s by default.
    pub min_interval: Duration,
    /// How often a key handed out since its last probe is probed again, so
    /// that a key drained outside keyman is withheld before a worker gets a
    /// 403 for it. 60 s by default.
    pub in_use_interval: Duration,
    /// How often every other key is probed. 15 minutes by default.
    pub idle_interval: Duration,
    /// How long a probe may wait for its answer before it counts as failed.
    /// 30 s by default.
    pub answer_timeout: Duration,
    /// How long a newly published key, or one a worker said is invalid, is
    /// withheld at most once its probe was sent and while it is pending
    /// (in flight, or retried after a failure); then a new key is handed out
    /// unconfirmed, and a key said invalid is invalid. Time spent waiting
    /// for the rate cap or a provider's pause does not count. 30 s by default.
    pub max_withhold: Duration,
    /// The steps in which a withheld key's refresh time is moved on while its
    /// probe is pending: the `wait` a NEW gets meanwhile. 2 s by default.
    pub withhold_step: Duration,
    /// The first wait after a failed or throttled probe of a key; doubled at
    /// each failure in a row. 5 s by default.
    pub backoff: Duration,
    /// The longest wait after failures. 10 minutes by default.
    pub max_backoff: Duration,
    /// How far ahead a token's expiry is warned about. 7 days by default.
    pub expiry_warning: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            targets: default_targets(),
            max_per_second: 10,
            max_in_flight: 16,
            min_interval: Duration::from_secs(5),
            in_use_interval: Duration::from_secs(60),
            idle_interval: Duration::from_secs(15 * 60),
            answer_timeout: Duration::from_secs(30),
            max_withhold: Duration::from_secs(30),
            withhold_step: Duration::from_secs(2),
            backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(10 * 60),
            expiry_warning: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl ProbeConfig {
    /// The provider and resource of `platform`, if it is probed.
    pub fn target(&self, platform: &str) -> Option<&Target> {
        self.targets.get(platform)
    }
}

/// A question for the platform: "what do you know of this token?" Given out by
/// [`Engine::poll_probe`](crate::Engine::poll_probe); answer it with
/// [`Engine::handle_probe`](crate::Engine::handle_probe) and the same `id`.
/// `Debug` masks the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ProbeRequest {
    /// Which probe this is; the answer names it.
    pub id: u64,
    /// Who to ask.
    pub provider: Provider,
    /// The token to ask with (a secret: send it only in the `Authorization`
    /// header).
    pub key: String,
    /// The platforms of `provider` the token is published to, with the
    /// resource of each.
    pub platforms: Vec<(String, String)>,
    /// Whether the account is still unknown (GitHub: ask `GET /user` too).
    pub want_account: bool,
}

impl fmt::Debug for ProbeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeRequest")
            .field("id", &self.id)
            .field("provider", &self.provider)
            .field("key", &Masked(&self.key))
            .field("platforms", &self.platforms)
            .field("want_account", &self.want_account)
            .finish()
    }
}

/// The platform's answer to a [`ProbeRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// The request's id.
    pub id: u64,
    /// What the platform said.
    pub outcome: ProbeOutcome,
}

/// What the platform said to a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeOutcome {
    /// The token is valid; what the platform told of it.
    Valid(ProbeFacts),
    /// 401: the token is revoked or was never valid. It becomes invalid on
    /// every platform it is probed for.
    Unauthorized,
    /// 403 or 429 to the probe itself (a secondary rate limit): the key and
    /// the provider are asked again later, after `retry_after` if given.
    Throttled {
        /// The platform's `Retry-After`, if it sent one.
        retry_after: Option<Duration>,
    },
    /// No answer that says anything: a network error, a timeout, a 5xx, a
    /// body that could not be read. The key is asked again after a backoff.
    Failed,
}

/// What a platform told of a valid token. Times are the platform's clock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeFacts {
    /// The answer's `Date`.
    pub server_date: Option<Timestamp>,
    /// The quota of each resource the answer named.
    pub resources: Vec<ResourceQuota>,
    /// The account the token belongs to (GitHub's login), if asked and told.
    pub account: Option<String>,
    /// When the token expires, if it does (GitHub's
    /// `github-authentication-token-expiration`, GitLab's `expires_at`).
    pub expires_at: Option<Timestamp>,
}

/// The quota of one resource, as a probe's answer gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceQuota {
    /// The resource (`core`, `graphql`, `search`, …).
    pub resource: String,
    /// Calls per window.
    pub limit: Option<u64>,
    /// Calls left in the window.
    pub remaining: Option<u64>,
    /// When the window resets, on the platform's clock.
    pub reset: Option<Timestamp>,
}
