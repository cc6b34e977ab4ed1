//! The `keyman` command-line program: the orchestrator (`serve`), admin and
//! worker subcommands for scripts, and `simulate`.

use clap::{Args, Parser, Subcommand};
use keyman::service::metrics::Metrics;
use keyman::service::{
    Backoff, Bus, BusError, ClientConfig, FileStore, KeyAdmin, KeyClient, KeyPublisher, KeySource,
    Lease, Orchestrator, StateStore,
};
use keyman::{Channels, EngineConfig, KeyError, Masked, Timestamp};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

mod exit;
mod input;
mod logging;
mod simulate;
mod watch;

use exit::Failure;

/// Hands rate-limited API keys to many workers; a drop-in for Augur's key orchestrator.
#[derive(Parser, Debug)]
#[command(name = "keyman", version, about, long_about = None, after_help = exit::EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines are written to stderr: `text` (coloured only on a
    /// terminal, never with NO_COLOR set) or `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
}

/// Options every subcommand that talks to a broker takes.
#[derive(Args, Debug, Clone)]
struct Connection {
    /// The Redis server (`redis://` or `rediss://`, with user, password and
    /// database, e.g. `redis://user:password@host:6379/0`).
    #[arg(
        long,
        env = "REDIS_CONN_STRING",
        hide_env_values = true,
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// Use NATS at this URL (`nats://host:port`) instead of Redis.
    #[arg(long, env = "KEYMAN_NATS_URL", hide_env_values = true)]
    nats_url: Option<String>,
    /// The id of the admin channel.
    #[arg(long, default_value = keyman::protocol::DEFAULT_ANNOUNCE)]
    announce_channel: String,
    /// The id of the worker channel.
    #[arg(long, default_value = keyman::protocol::DEFAULT_REQUEST)]
    request_channel: String,
    /// Seconds to wait for an answer before giving up.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Print machine-readable JSON instead of text for people.
    #[arg(long)]
    json: bool,
    /// Print keys whole instead of masked.
    #[arg(long)]
    show_keys: bool,
}

impl Connection {
    fn url(&self) -> &str {
        self.nats_url.as_deref().unwrap_or(&self.redis_url)
    }

    fn channels(&self) -> Channels {
        Channels {
            announce: self.announce_channel.clone(),
            request: self.request_channel.clone(),
        }
    }

    fn deadline(&self) -> Duration {
        Duration::try_from_secs_f64(self.timeout.max(0.0)).unwrap_or(Duration::MAX)
    }

    fn client_config(&self) -> ClientConfig {
        ClientConfig {
            channels: self.channels(),
            deadline: self.deadline(),
            ..ClientConfig::default()
        }
    }

    fn show(&self, key: &str) -> String {
        if self.show_keys {
            key.to_string()
        } else {
            Masked(key).to_string()
        }
    }
}

/// Keys read from a file or stdin instead of the command line.
#[derive(Args, Debug, Clone)]
struct KeysFrom {
    /// Read the keys from this file, or from stdin for `-`: one key a line
    /// (blank lines skipped). Keys in the command line are seen by `ps` and
    /// kept in shell history; keys read this way are not.
    #[arg(long, value_name = "FILE|-")]
    keys_from: Option<String>,
}

/// Where `keyman serve` keeps its state across restarts.
#[derive(Args, Debug, Clone)]
struct StateOptions {
    /// Keep the state in this file instead of the broker.
    #[arg(long, conflicts_with = "no_state")]
    state_file: Option<std::path::PathBuf>,
    /// Keep no state: every restart starts empty, as Augur's orchestrator does.
    #[arg(long)]
    no_state: bool,
    /// The name of the state kept in the broker (default: the announce channel id):
    /// Redis key `keyman:state:NAME`, or NATS key-value `keyman` / `state.NAME`.
    /// With `--standby` the lease is named after it too.
    #[arg(long)]
    state_name: Option<String>,
    /// Start empty when the saved state cannot be read (cut short, not
    /// keyman's, or of a newer version) instead of exiting with code 7. Either
    /// way it is first copied aside (Redis key `...:unreadable:MS`, file
    /// `PATH.unreadable.MS`, NATS entry `state.NAME.unreadable.MS`).
    #[arg(long, conflicts_with = "no_state")]
    discard_unreadable_state: bool,
    /// Run as one of several orchestrators on the broker: serve only while
    /// holding the lease (Redis key `keyman:leader:NAME`, or NATS key-value
    /// `keyman` / `leader.NAME`), stand by otherwise, and take over when the
    /// serving one dies.
    #[arg(long)]
    standby: bool,
    /// With `--standby`: seconds the lease lasts without renewal. A standby
    /// takes over within about 1.3 times this after the serving one died.
    #[arg(long, default_value_t = 3.0, requires = "standby")]
    lease_ttl: f64,
}

#[derive(Subcommand, Debug)]
enum Command {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Simulate(args) = cli.command {
        return simulate::run(args);
    }
    let default_log = match cli.command {
        Command::Serve { .. } => "info",
        _ => "warn",
    };
    logging::init(default_log, cli.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keyman: could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli.command));
    // Tasks still blocked on an unreachable broker do not hold up the exit.
    rt.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if denied(&e) => {
            // Not a lost connection: trying again does not help.
            eprintln!(
                "keyman: permission denied: the broker's ACL does not allow this command to the user of the URL: {e}"
            );
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("keyman: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Whether the broker refused a command to the URL's user (a Redis ACL's
/// `NOPERM`, a NATS permissions violation): a usage error (exit 2).
fn denied(failure: &Failure) -> bool {
    let text = failure.to_string();
    text.contains("NOPERM")
        || text.contains("NoPerm")
        || text.to_ascii_lowercase().contains("permissions violation")
}

fn print_list(conn: &Connection, items: &[String], keys: bool) {
    let shown: Vec<String> = items
        .iter()
        .map(|k| if keys { conn.show(k) } else { k.clone() })
        .collect();
    if conn.json {
        println!("{}", serde_json::Value::from(shown));
    } else {
        for s in shown {
            println!("{s}");
        }
    }
}

fn print_key(conn: &Connection, key: &str) {
    if conn.json {
        println!("{}", serde_json::json!({ "key": conn.show(key) }));
    } else {
        println!("{}", conn.show(key));
    }
}

async fn publisher(conn: &Connection) -> Result<KeyPublisher, KeyError> {
    let bus = keyman::service::connect_url(conn.url()).await?;
    KeyPublisher::connect(bus, conn.client_config()).await
}

async fn client(conn: &Connection) -> Result<KeyClient, KeyError> {
    let bus = keyman::service::connect_url(conn.url()).await?;
    KeyClient::connect(bus, conn.client_config()).await
}

async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Serve {
            conn,
            max_payload,
            max_expiry,
            max_platforms,
            max_keys_per_platform,
            state,
            connect_timeout,
            metrics_addr,
        } => {
            let config = EngineConfig {
                channels: conn.channels(),
                max_payload,
                max_expiry: Duration::from_secs(max_expiry),
                max_platforms,
                max_keys_per_platform,
                ..EngineConfig::default()
            };
            let give_up = match connect_timeout {
                None => None,
                Some(secs) => match Duration::try_from_secs_f64(secs) {
                    Ok(limit) => Some(limit),
                    Err(_) => {
                        return Err(KeyError::InvalidArgument(
                            "--connect-timeout must be a number of seconds, 0 or more".into(),
                        )
                        .into());
                    }
                },
            };
            serve(conn, config, state, give_up, metrics_addr).await
        }
        // Handled in `main`, without a runtime.
        Command::Simulate(_) => Ok(()),
        Command::Publish {
            conn,
            platform,
            keys,
            from,
        } => {
            let keys = input::keys(keys, from.keys_from.as_deref())?;
            Ok(announce_keys(&conn, &platform, &keys, true).await?)
        }
        Command::Unpublish {
            conn,
            platform,
            keys,
            from,
        } => {
            let keys = input::keys(keys, from.keys_from.as_deref())?;
            Ok(announce_keys(&conn, &platform, &keys, false).await?)
        }
        Command::Forget { conn, keys } => Ok(forget(&conn, &keys).await?),
        Command::Platforms { conn } => {
            let list = publisher(&conn).await?.platforms().await?;
            print_list(&conn, &list, false);
            Ok(())
        }
        Command::Keys { conn, platform } => {
            let list = publisher(&conn).await?.keys(&platform).await?;
            print_list(&conn, &list, true);
            Ok(())
        }
        Command::Invalid { conn, platform } => {
            let list = publisher(&conn).await?.invalid_keys(&platform).await?;
            print_list(&conn, &list, true);
            Ok(())
        }
        Command::Status { conn, watch } => {
            let publisher = publisher(&conn).await?;
            if watch {
                return Ok(watch::watch(publisher, conn.json).await?);
            }
            let status = publisher.status().await?;
            if conn.json {
                let items: Vec<serde_json::Value> = status
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "platform": p.platform, "fresh": p.fresh, "expired": p.expired,
                            "invalid": p.invalid, "next_refresh": p.next_refresh,
                        })
                    })
                    .collect();
                println!("{}", serde_json::Value::from(items));
            } else {
                print!("{}", watch::table(&status));
            }
            Ok(())
        }
        Command::Ping { conn } => {
            let start = std::time::Instant::now();
            publisher(&conn).await?.ping().await?;
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            if conn.json {
                println!("{}", serde_json::json!({ "ok": true, "ms": ms }));
            } else {
                println!("orchestrator answered in {ms:.1} ms");
            }
            Ok(())
        }
        Command::Shutdown { conn } => {
            let p = publisher(&conn).await?;
            p.shutdown().await?;
            if conn.json {
                println!("{}", serde_json::json!({ "ok": true }));
            } else {
                println!("shutdown sent");
            }
            Ok(())
        }
        Command::Request { conn, platform } => {
            let key = client(&conn).await?.request(&platform).await?;
            print_key(&conn, &key);
            Ok(())
        }
        Command::Expire {
            conn,
            platform,
            key,
            from,
            reset,
        } => {
            let keys = input::keys(key.into_iter().collect(), from.keys_from.as_deref())?;
            let client = client(&conn).await?;
            // One line (the key handed out instead) for each key reported.
            for key in keys {
                let next = client
                    .expire(&platform, &key, Timestamp::from_secs(reset))
                    .await?;
                print_key(&conn, &next);
            }
            Ok(())
        }
        Command::Invalidate {
            conn,
            platform,
            key,
            from,
        } => {
            let keys = input::keys(key.into_iter().collect(), from.keys_from.as_deref())?;
            let client = client(&conn).await?;
            for key in keys {
                let next = client.invalidate(&platform, &key).await?;
                print_key(&conn, &next);
            }
            Ok(())
        }
    }
}

async fn announce_keys(
    conn: &Connection,
    platform: &str,
    keys: &[String],
    publish: bool,
) -> Result<(), KeyError> {
    let p = publisher(conn).await?;
    for key in keys {
        if publish {
            p.publish(platform, key).await?;
        } else {
            p.unpublish(platform, key).await?;
        }
    }
    let verb = if publish { "published" } else { "unpublished" };
    if conn.json {
        println!(
            "{}",
            serde_json::json!({ "ok": true, verb: keys.len(), "platform": platform })
        );
    } else {
        println!("{verb} {} key(s) on {platform}", keys.len());
    }
    Ok(())
}

/// `keyman forget`: every key off every platform, then an ACK, so that the
/// orchestrator has handled (and will save) the removals when it returns.
async fn forget(conn: &Connection, args: &[String]) -> Result<(), KeyError> {
    let mut keys = Vec::new();
    for arg in args {
        if arg == "-" {
            for line in std::io::stdin().lines() {
                let line = line.map_err(|e| {
                    KeyError::InvalidArgument(format!("could not read keys from stdin: {e}"))
                })?;
                let key = line.trim();
                if !key.is_empty() {
                    keys.push(key.to_string());
                }
            }
        } else {
            keys.push(arg.clone());
        }
    }
    let p = publisher(conn).await?;
    let platforms = p.platforms().await?;
    for key in &keys {
        for platform in &platforms {
            p.unpublish(platform, key).await?;
        }
    }
    p.ping().await?;
    let shown: Vec<String> = keys.iter().map(|k| Masked(k).to_string()).collect();
    if conn.json {
        println!(
            "{}",
            serde_json::json!({ "ok": true, "forgotten": shown, "platforms": platforms.len() })
        );
    } else {
        println!(
            "forgot {} key(s) on all {} platform(s): {}",
            keys.len(),
            platforms.len(),
            shown.join(", ")
        );
    }
    Ok(())
}

/// What `serve` connects to the broker for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// Only the bus.
    Bus,
    /// The bus and the state store.
    Store,
    /// The bus, the state store and the lease.
    Lease,
}

/// The bus, and the store and lease [`Needs`] asks for.
type Connected = (
    Arc<dyn Bus>,
    Option<Arc<dyn StateStore>>,
    Option<Arc<dyn Lease>>,
);

/// The delays between attempts to reach the broker at start: 250 ms,
/// doubling up to 5 s.
const CONNECT_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(250),
    max: Duration::from_secs(5),
};

/// The least time an attempt to reach the broker has, even at the deadline
/// of `--connect-timeout`.
const LAST_ATTEMPT: Duration = Duration::from_millis(200);

/// Connects to the broker at `url`, waiting for it while it cannot be reached
/// (trying again after each [`CONNECT_BACKOFF`] delay and logging each attempt),
/// at most `give_up` if given. A bad URL or refused credentials fail at
/// once. `None` when a signal came first.
async fn connect_waiting(
    url: &str,
    name: &str,
    needs: Needs,
    give_up: Option<Duration>,
    signals: &mut StopSignals,
) -> Result<Option<Connected>, KeyError> {
    let started = tokio::time::Instant::now();
    let deadline = give_up.map(|limit| started + limit);
    let mut attempt: u32 = 0;
    loop {
        attempt = attempt.saturating_add(1);
        let connecting = async {
            match needs {
                Needs::Bus => Ok((keyman::service::connect_url(url).await?, None, None)),
                Needs::Store => {
                    let (bus, store) = keyman::service::connect_url_with_store(url, name).await?;
                    Ok((bus, Some(store), None))
                }
                Needs::Lease => {
                    let (bus, store, lease) =
                        keyman::service::connect_url_with_lease(url, name).await?;
                    Ok((bus, Some(store), Some(lease)))
                }
            }
        };
        // An attempt ends at the deadline, but has at least a moment to get
        // its answer (a refused connection says so at once).
        let bounded = async {
            match deadline {
                Some(at) => {
                    let at = at.max(tokio::time::Instant::now() + LAST_ATTEMPT);
                    tokio::time::timeout_at(at, connecting)
                        .await
                        .unwrap_or(Err(KeyError::Timeout(at - started)))
                }
                None => connecting.await,
            }
        };
        let outcome = tokio::select! {
            outcome = bounded => outcome,
            () = signals.recv() => {
                tracing::info!("stop requested while waiting for the broker");
                return Ok(None);
            }
        };
        let error = match outcome {
            Ok(connected) => return Ok(Some(connected)),
            // Unreachable now: it may come up.
            Err(error @ (KeyError::Disconnected(_) | KeyError::Timeout(_))) => error,
            // A bad URL, refused credentials, an unsupported scheme: waiting does not help.
            Err(error) => return Err(error),
        };
        let mut delay = CONNECT_BACKOFF.delay(attempt);
        if let Some(at) = deadline {
            // The last attempt is made at the deadline.
            let left = at.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                tracing::error!(
                    url = %redact(url),
                    attempts = attempt,
                    %error,
                    "could not reach the broker within {:?}; giving up",
                    at - started
                );
                // A lost connection (exit 6), whatever the last error was.
                return Err(match error {
                    KeyError::Timeout(_) => KeyError::Disconnected(BusError::Disconnected(
                        format!(
                            "the broker at {} did not answer within {:?}",
                            redact(url),
                            at - started
                        )
                        .into(),
                    )),
                    error => error,
                });
            }
            delay = delay.min(left);
        }
        tracing::warn!(
            url = %redact(url),
            attempt,
            %error,
            retry_in = ?delay,
            "cannot reach the broker; trying again"
        );
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = signals.recv() => {
                tracing::info!("stop requested while waiting for the broker");
                return Ok(None);
            }
        }
    }
}

async fn serve(
    conn: Connection,
    config: EngineConfig,
    state: StateOptions,
    give_up: Option<Duration>,
    metrics_addr: Option<std::net::SocketAddr>,
) -> Result<(), Failure> {
    // From now on SIGINT and SIGTERM stop `serve` cleanly, even while it waits
    // for the broker.
    let mut signals = StopSignals::install();
    // The health endpoints answer from the start: alive, not ready.
    let metrics = match metrics_addr {
        Some(addr) => Some(start_metrics(addr).await?),
        None => None,
    };
    let lease_ttl = if state.standby {
        match Duration::try_from_secs_f64(state.lease_ttl) {
            Ok(ttl) if ttl >= keyman::service::MIN_LEASE_TTL => Some(ttl),
            _ => {
                return Err(KeyError::InvalidArgument(format!(
                    "--lease-ttl must be at least {} seconds",
                    keyman::service::MIN_LEASE_TTL.as_secs_f64()
                ))
                .into());
            }
        }
    } else {
        None
    };
    let name = state
        .state_name
        .as_deref()
        .unwrap_or(&config.channels.announce);
    let needs = if state.standby {
        Needs::Lease
    } else if state.no_state || state.state_file.is_some() {
        Needs::Bus
    } else {
        Needs::Store
    };
    let Some((bus, broker_store, lease)) =
        connect_waiting(conn.url(), name, needs, give_up, &mut signals).await?
    else {
        tracing::info!("bye");
        return Ok(());
    };
    let store: Option<Arc<dyn StateStore>> = if state.no_state {
        None
    } else if let Some(path) = &state.state_file {
        Some(Arc::new(FileStore::new(path.clone())))
    } else {
        broker_store
    };
    tracing::info!(url = %redact(conn.url()), "connected");
    let mut orchestrator =
        Orchestrator::new(bus, config).discard_unreadable_state(state.discard_unreadable_state);
    if let Some(store) = store {
        orchestrator = orchestrator.with_store(store);
    }
    if let Some(metrics) = metrics {
        orchestrator = orchestrator.with_metrics(metrics);
    }
    if let (Some(lease), Some(ttl)) = (lease, lease_ttl) {
        if state.no_state {
            tracing::warn!(
                "--standby with --no-state: a standby that takes over starts with no keys"
            );
        } else if state.state_file.is_some() {
            tracing::warn!(
                "--standby with --state-file: a standby sees the saved state only if it runs on the same host and file"
            );
        }
        tracing::info!(lease = %lease.describe(), ttl = ?ttl, holder = %orchestrator.holder(), "standby enabled");
        orchestrator = orchestrator.with_lease(lease, ttl);
    }
    let stopped = orchestrator
        .run_until(async move { signals.recv().await })
        .await?;
    tracing::info!(?stopped, "bye");
    Ok(())
}

/// Starts answering `/metrics`, `/healthz` and `/readyz` at `addr`.
async fn start_metrics(addr: std::net::SocketAddr) -> Result<Metrics, KeyError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| KeyError::InvalidArgument(format!("--metrics-addr {addr}: {e}")))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let metrics = Metrics::new();
    tokio::spawn(keyman::service::metrics::serve_http(
        metrics.clone(),
        listener,
    ));
    tracing::info!(addr = %bound, "metrics at /metrics, health at /healthz and /readyz");
    Ok(metrics)
}

/// The URL without its password, for logs and messages: `user:password@`
/// becomes `user:***@`, and credentials without a `:` (a NATS token) become
/// `***@`.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}://{}:***@{}", &url[..s], user, &url[at + 1..]),
                None => format!("{}://***@{}", &url[..s], &url[at + 1..]),
            }
        }
        _ => url.to_string(),
    }
}

/// SIGINT and SIGTERM (Ctrl-C elsewhere), listened for from the moment they
/// are installed: a signal that comes while nobody waits is kept for the next
/// [`recv`](Self::recv).
struct StopSignals {
    #[cfg(unix)]
    unix: Option<(tokio::signal::unix::Signal, tokio::signal::unix::Signal)>,
}

impl StopSignals {
    /// Installs the handlers (inside the runtime).
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) {
                (Ok(int), Ok(term)) => Self {
                    unix: Some((int, term)),
                },
                (Err(error), _) | (_, Err(error)) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops serve");
                    Self { unix: None }
                }
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// Waits for the next signal.
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some((int, term)) = self.unix.as_mut() {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}
