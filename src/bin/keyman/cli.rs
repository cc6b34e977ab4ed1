//! The command line: clap's definitions of the subcommands and their options.

use crate::{exit, logging, simulate};
use clap::{Args, Parser, Subcommand};
use keyman::service::ClientConfig;
use keyman::{Channels, Masked};
use std::time::Duration;

/// Hands rate-limited API keys to many workers; a drop-in for Augur's key orchestrator.
#[derive(Parser, Debug)]
#[command(name = "keyman", version, about, long_about = None, after_help = exit::EXIT_CODES)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// How log lines are written to stderr: `text` (coloured only on a
    /// terminal, never with NO_COLOR set) or `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    pub(crate) log_format: logging::LogFormat,
}

/// Options every subcommand that talks to a broker takes.
#[derive(Args, Debug, Clone)]
pub(crate) struct Connection {
    /// The Redis server (`redis://` or `rediss://`, with user, password and
    /// database, e.g. `redis://user:password@host:6379/0`).
    #[arg(
        long,
        env = "REDIS_CONN_STRING",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    pub(crate) redis_url: String,
    /// Use NATS at this URL (`nats://host:port`) instead of Redis.
    #[arg(long, env = "KEYMAN_NATS_URL", hide_env_values = true)]
    pub(crate) nats_url: Option<String>,
    /// The id of the admin channel.
    #[arg(long, default_value = keyman::protocol::DEFAULT_ANNOUNCE)]
    pub(crate) announce_channel: String,
    /// The id of the worker channel.
    #[arg(long, default_value = keyman::protocol::DEFAULT_REQUEST)]
    pub(crate) request_channel: String,
    /// Seconds to wait for an answer before giving up.
    #[arg(long, default_value_t = 30.0)]
    pub(crate) timeout: f64,
    /// Print machine-readable JSON instead of text for people.
    #[arg(long)]
    pub(crate) json: bool,
    /// Print keys whole instead of masked.
    #[arg(long)]
    pub(crate) show_keys: bool,
}

impl Connection {
    pub(crate) fn url(&self) -> &str {
        self.nats_url.as_deref().unwrap_or(&self.redis_url)
    }

    pub(crate) fn channels(&self) -> Channels {
        Channels {
            announce: self.announce_channel.clone(),
            request: self.request_channel.clone(),
        }
    }

    pub(crate) fn deadline(&self) -> Duration {
        Duration::try_from_secs_f64(self.timeout.max(0.0)).unwrap_or(Duration::MAX)
    }

    pub(crate) fn client_config(&self) -> ClientConfig {
        ClientConfig {
            channels: self.channels(),
            deadline: self.deadline(),
            ..ClientConfig::default()
        }
    }

    pub(crate) fn show(&self, key: &str) -> String {
        if self.show_keys {
            key.to_string()
        } else {
            Masked(key).to_string()
        }
    }
}

/// Keys read from a file or stdin instead of the command line.
#[derive(Args, Debug, Clone)]
pub(crate) struct KeysFrom {
    /// Read the keys from this file, or from stdin for `-`: one key a line
    /// (blank lines skipped). Keys in the command line are seen by `ps` and
    /// kept in shell history; keys read this way are not.
    #[arg(long, value_name = "FILE|-")]
    pub(crate) keys_from: Option<String>,
}

/// Where `keyman serve` keeps its state across restarts.
#[derive(Args, Debug, Clone)]
pub(crate) struct StateOptions {
    /// Keep the state in this file instead of the broker.
    #[arg(long, conflicts_with = "no_state")]
    pub(crate) state_file: Option<std::path::PathBuf>,
    /// Keep no state: every restart starts empty, as Augur's orchestrator does.
    #[arg(long)]
    pub(crate) no_state: bool,
    /// The name of the state kept in the broker (default: the announce channel id):
    /// Redis key `keyman:state:NAME`, or NATS key-value `keyman` / `state.NAME`.
    /// With `--standby` the lease is named after it too.
    #[arg(long)]
    pub(crate) state_name: Option<String>,
    /// Start empty when the saved state cannot be read (cut short, not
    /// keyman's, or of a newer version) instead of exiting with code 7. Either
    /// way it is first copied aside (Redis key `...:unreadable:MS`, file
    /// `PATH.unreadable.MS`, NATS entry `state.NAME.unreadable.MS`).
    #[arg(long, conflicts_with = "no_state")]
    pub(crate) discard_unreadable_state: bool,
    /// Run as one of several orchestrators on the broker: serve only while
    /// holding the lease (Redis key `keyman:leader:NAME`, or NATS key-value
    /// `keyman` / `leader.NAME`), stand by otherwise, and take over when the
    /// serving one dies.
    #[arg(long)]
    pub(crate) standby: bool,
    /// With `--standby`: seconds the leadership lease (which orchestrator
    /// serves) lasts without renewal. A standby takes over within about 1.3
    /// times this after the serving one died. Not the quota leases lent to
    /// workers (that is --quota-lease-duration).
    #[arg(long, default_value_t = 3.0, requires = "standby")]
    pub(crate) lease_ttl: f64,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run the orchestrator (in place of Augur's `python keyman/Orchestrator.py`).
    Serve {
        #[command(flatten)]
        conn: Connection,
        /// The largest payload accepted, in bytes.
        #[arg(long, default_value_t = keyman::protocol::DEFAULT_MAX_PAYLOAD)]
        max_payload: usize,
        /// The furthest ahead, in seconds, an EXPIRE may park a key; later
        /// refresh times are cut to it.
        #[arg(long, default_value_t = 25 * 3600)]
        max_expiry: u64,
        /// The most platforms; a PUBLISH that would add one more is logged and dropped.
        #[arg(long, default_value_t = keyman::engine::DEFAULT_MAX_PLATFORMS)]
        max_platforms: usize,
        /// The most keys of one platform (in any state); a PUBLISH of one more
        /// is logged and dropped.
        #[arg(long, default_value_t = keyman::engine::DEFAULT_MAX_KEYS_PER_PLATFORM)]
        max_keys_per_platform: usize,
        #[command(flatten)]
        state: StateOptions,
        #[command(flatten)]
        quota: crate::quota_options::QuotaOptions,
        /// Give up (exit 6) when the broker cannot be reached within this many
        /// seconds of starting. By default `serve` waits for its broker as long
        /// as it takes, trying again with a growing delay (up to 5 s) and
        /// logging each attempt; a bad URL or refused credentials end it at once.
        #[arg(long, value_name = "SECONDS")]
        connect_timeout: Option<f64>,
        /// Answer HTTP at this address (e.g. `127.0.0.1:9464`): Prometheus
        /// metrics at `/metrics`, `/healthz` (alive) and `/readyz` (200 while
        /// serving: the leader, subscribed, the broker connected; 503
        /// otherwise). Off by default.
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Publish keys to a platform.
    Publish {
        #[command(flatten)]
        conn: Connection,
        /// The platform (e.g. github_rest).
        #[arg(long)]
        platform: String,
        /// The keys (better: `--keys-from`, which keeps them out of `ps`
        /// and shell history).
        #[arg(required_unless_present = "keys_from")]
        keys: Vec<String>,
        #[command(flatten)]
        from: KeysFrom,
        /// The account the keys belong to: keys of one account share one
        /// quota (the tokens of one GitHub user), and a rate limit of one is
        /// a rate limit of all. Without it each key is its own account.
        #[arg(long)]
        account: Option<String>,
        /// Calls per window of the account (a hint until a worker's report
        /// says otherwise), e.g. 5000 for GitHub's REST API.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Remove keys from a platform.
    Unpublish {
        #[command(flatten)]
        conn: Connection,
        /// The platform.
        #[arg(long)]
        platform: String,
        /// The keys (better: `--keys-from`, which keeps them out of `ps`
        /// and shell history).
        #[arg(required_unless_present = "keys_from")]
        keys: Vec<String>,
        #[command(flatten)]
        from: KeysFrom,
    },
    /// Drop keys for good: remove them from every platform, whatever their
    /// state (fresh, expired or invalid), so that the saved state forgets them.
    /// For a key deleted from Augur's database, which a restart no longer
    /// publishes. Keys are never printed.
    Forget {
        #[command(flatten)]
        conn: Connection,
        /// The keys; `-` reads them from standard input, one a line (keeps them
        /// out of the shell's history and the process list).
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// List the platforms.
    Platforms {
        #[command(flatten)]
        conn: Connection,
    },
    /// List the fresh and expired keys of a platform.
    Keys {
        #[command(flatten)]
        conn: Connection,
        /// The platform.
        #[arg(long)]
        platform: String,
    },
    /// List the invalid keys of a platform.
    Invalid {
        #[command(flatten)]
        conn: Connection,
        /// The platform.
        #[arg(long)]
        platform: String,
    },
    /// Key counts per platform and state (keyman's orchestrator only).
    Status {
        #[command(flatten)]
        conn: Connection,
        /// Redraw every second until Ctrl-C (with `--json`: one JSON line a second).
        #[arg(long)]
        watch: bool,
    },
    /// Wait until the orchestrator answers (ACK).
    Ping {
        #[command(flatten)]
        conn: Connection,
    },
    /// Stop the orchestrator once it has handled everything sent before.
    Shutdown {
        #[command(flatten)]
        conn: Connection,
    },
    /// Get a key for a platform.
    Request {
        #[command(flatten)]
        conn: Connection,
        /// The platform.
        #[arg(long)]
        platform: String,
    },
    /// Report a key as rate limited until a reset time; prints another key.
    Expire {
        #[command(flatten)]
        conn: Connection,
        /// The platform.
        #[arg(long)]
        platform: String,
        /// The rate-limited key (or keys, with `--keys-from`).
        #[arg(required_unless_present = "keys_from")]
        key: Option<String>,
        #[command(flatten)]
        from: KeysFrom,
        /// When its quota resets, in Unix epoch seconds (the API's reset header).
        #[arg(long)]
        reset: u64,
    },
    /// Report a key as permanently invalid; prints another key.
    Invalidate {
        #[command(flatten)]
        conn: Connection,
        /// The platform.
        #[arg(long)]
        platform: String,
        /// The invalid key (or keys, with `--keys-from`).
        #[arg(required_unless_present = "keys_from")]
        key: Option<String>,
        #[command(flatten)]
        from: KeysFrom,
    },
    /// Simulate keyman in virtual time against a GitHub-like rate-limited API
    /// (needs no server): throughput, 403s, waiting and key states over time.
    Simulate(simulate::SimulateArgs),
}
