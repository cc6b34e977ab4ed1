//! The `keyman` command-line program: the orchestrator (`serve`), admin and
//! worker subcommands for scripts, and `simulate`.

use clap::Parser;
use cli::{Cli, Command};
use keyman::EngineConfig;
use std::process::ExitCode;
use std::time::Duration;

mod admin;
mod cli;
mod exit;
mod input;
mod logging;
mod quota_options;
mod serve;
mod simulate;
mod watch;
mod worker;

use exit::Failure;

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

/// Runs one subcommand (all but `simulate`) inside the runtime.
async fn run(command: Command) -> Result<(), Failure> {
    let done = match command {
        Command::Serve {
            conn,
            max_payload,
            max_expiry,
            max_platforms,
            max_keys_per_platform,
            state,
            quota,
            connect_timeout,
            metrics_addr,
        } => {
            let (selection, quota) = quota.config()?;
            let config = EngineConfig {
                channels: conn.channels(),
                max_payload,
                max_expiry: Duration::from_secs(max_expiry),
                max_platforms,
                max_keys_per_platform,
                selection,
                quota,
                ..EngineConfig::default()
            };
            let give_up = serve::connect_limit(connect_timeout)?;
            return serve::serve(conn, config, state, give_up, metrics_addr).await;
        }
        // Handled in `main`, without a runtime.
        Command::Simulate(_) => Ok(()),
        Command::Publish {
            conn,
            platform,
            keys,
            from,
            account,
            limit,
        } => {
            let how = admin::Announce::Publish { account, limit };
            admin::announce_keys(&conn, &platform, keys, &from, how).await
        }
        Command::Unpublish {
            conn,
            platform,
            keys,
            from,
        } => admin::announce_keys(&conn, &platform, keys, &from, admin::Announce::Unpublish).await,
        Command::Forget { conn, keys } => admin::forget(&conn, &keys).await,
        Command::Platforms { conn } => admin::platforms(&conn).await,
        Command::Keys { conn, platform } => admin::keys(&conn, &platform).await,
        Command::Invalid { conn, platform } => admin::invalid(&conn, &platform).await,
        Command::Status { conn, watch } => admin::status(&conn, watch).await,
        Command::Ping { conn } => admin::ping(&conn).await,
        Command::Shutdown { conn } => admin::shutdown(&conn).await,
        Command::Request { conn, platform } => worker::request(&conn, &platform).await,
        Command::Expire {
            conn,
            platform,
            key,
            from,
            reset,
        } => worker::expire(&conn, &platform, key, &from, reset).await,
        Command::Invalidate {
            conn,
            platform,
            key,
            from,
        } => worker::invalidate(&conn, &platform, key, &from).await,
    };
    Ok(done?)
}
