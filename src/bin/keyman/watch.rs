//! `keyman status --watch`: the key counts per platform, redrawn every second
//! with plain ANSI codes until Ctrl-C.

use keyman::KeyError;
use keyman::protocol::PlatformStatus;
use keyman::service::{KeyAdmin, KeyPublisher};
use std::io::Write;
use std::time::Duration;

/// How often the view is redrawn.
const EVERY: Duration = Duration::from_secs(1);

/// The table `keyman status` prints: a header, then one line per platform.
pub(crate) fn table(status: &[PlatformStatus]) -> String {
    let now = keyman::service::wall_clock().as_secs();
    let mut text = format!(
        "{:<24} {:>8} {:>8} {:>8}  next refresh\n",
        "platform", "fresh", "expired", "invalid"
    );
    for p in status {
        let next = p.next_refresh.map_or("-".to_string(), |s| {
            format!("in {}s", s.saturating_sub(now))
        });
        text.push_str(&format!(
            "{:<24} {:>8} {:>8} {:>8}  {next}\n",
            p.platform.escape_debug().to_string(),
            p.fresh,
            p.expired,
            p.invalid
        ));
    }
    text
}

/// Redraws the status every second until Ctrl-C (or SIGTERM). A failed query
/// is shown in place of the table, and tried again a second later.
pub(crate) async fn watch(publisher: KeyPublisher, json: bool) -> Result<(), KeyError> {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stop = stop_signal();
    tokio::pin!(stop);
    let mut out = std::io::stdout();
    loop {
        tokio::select! {
            () = stop.as_mut() => break,
            _ = ticks.tick() => {}
        }
        let answer = tokio::select! {
            () = stop.as_mut() => break,
            answer = publisher.status() => answer,
        };
        let frame = match (&answer, json) {
            (Ok(status), true) => {
                let items: Vec<serde_json::Value> = status
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "platform": p.platform, "fresh": p.fresh, "expired": p.expired,
                            "invalid": p.invalid, "next_refresh": p.next_refresh,
                        })
                    })
                    .collect();
                format!("{}\n", serde_json::Value::from(items))
            }
            (Ok(status), false) => table(status),
            (Err(error), true) => {
                format!("{}\n", serde_json::json!({ "error": error.to_string() }))
            }
            (Err(error), false) => format!("keyman: {error}; trying again\n"),
        };
        let drawn = if json {
            out.write_all(frame.as_bytes())
        } else {
            // Home, clear the screen, the table, and the time of this frame.
            let clock = keyman::service::wall_clock().as_secs();
            write!(
                out,
                "\x1b[H\x1b[2J{frame}\nkeyman status --watch: every {}s, Ctrl-C to stop (unix time {clock})\n",
                EVERY.as_secs()
            )
        };
        if drawn.and_then(|()| out.flush()).is_err() {
            // stdout is gone (a closed pipe): nobody is watching.
            break;
        }
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
