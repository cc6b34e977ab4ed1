//! `keyman status` and `keyman status --watch`: the key counts and the quota
//! forecast per platform (a table, or JSON), redrawn every second with plain
//! ANSI codes until Ctrl-C.

use keyman::KeyError;
use keyman::protocol::PlatformStatus;
use keyman::service::{KeyAdmin, KeyPublisher};
use std::io::Write;
use std::time::Duration;

/// How often the view is redrawn.
const EVERY: Duration = Duration::from_secs(1);

/// What the table shows for something unknown.
const UNKNOWN: &str = "\u{2014}";

/// A span of time for people: `2h 10m`, `4m`, `12s`, `3d 4h`.
pub(crate) fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// "in 2h 10m" from `now` to `at` (Unix seconds), "now" when it has come.
fn until(now: u64, at: u64) -> String {
    if at <= now {
        "now".to_string()
    } else {
        format!("in {}", span(at - now))
    }
}

/// The table `keyman status` prints: a header, then one line per platform:
/// key counts, the next refresh, and the quota forecast (the known remaining
/// calls less those lent, the calls lent, calls spent per hour lately, and
/// when the platform runs dry at that rate).
pub(crate) fn table(status: &[PlatformStatus]) -> String {
    let now = keyman::service::wall_clock().as_secs();
    let known = |n: Option<u64>| n.map_or(UNKNOWN.to_string(), |n| n.to_string());
    let mut text = format!(
        "{:<24} {:>8} {:>8} {:>8}  {:<13} {:>10} {:>8} {:>8}  runs dry\n",
        "platform", "fresh", "expired", "invalid", "next refresh", "remaining", "leased", "burn/h"
    );
    for p in status {
        let next = p
            .next_refresh
            .map_or(UNKNOWN.to_string(), |s| until(now, s));
        let dry = p.dry_at.map_or(UNKNOWN.to_string(), |s| until(now, s));
        text.push_str(&format!(
            "{:<24} {:>8} {:>8} {:>8}  {next:<13} {:>10} {:>8} {:>8}  {dry}\n",
            p.platform.escape_debug().to_string(),
            p.fresh,
            p.expired,
            p.invalid,
            known(p.remaining),
            p.leased.unwrap_or(0),
            known(p.burn_per_hour),
        ));
    }
    for p in status {
        if let Some(ms) = p.clock_lag_ms {
            text.push_str(&format!(
                "{}: the platform's clock is about {} behind ours (or ours ahead); its resets are taken that much later\n",
                p.platform.escape_debug(),
                span(ms.div_ceil(1000)),
            ));
        }
    }
    text
}

/// The status as `--json` prints it: one object per platform, with the
/// forecast (`remaining`, `burn_per_hour` and `dry_at` are null when unknown)
/// and the platform's clock lag (`clock_lag_ms`, null when none is known).
pub(crate) fn json_status(status: &[PlatformStatus]) -> serde_json::Value {
    status
        .iter()
        .map(|p| {
            serde_json::json!({
                "platform": p.platform, "fresh": p.fresh, "expired": p.expired,
                "invalid": p.invalid, "next_refresh": p.next_refresh,
                "remaining": p.remaining, "leased": p.leased.unwrap_or(0),
                "burn_per_hour": p.burn_per_hour, "dry_at": p.dry_at,
                "clock_lag_ms": p.clock_lag_ms,
            })
        })
        .collect()
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
            (Ok(status), true) => format!("{}\n", json_status(status)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(name: &str) -> PlatformStatus {
        PlatformStatus {
            platform: name.to_string(),
            fresh: 2,
            expired: 1,
            ..PlatformStatus::default()
        }
    }

    #[test]
    fn spans_read_as_people_say_them() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(59), "59s");
        assert_eq!(span(240), "4m");
        assert_eq!(span(7_800), "2h 10m");
        assert_eq!(span(3 * 86_400 + 4 * 3_600 + 59), "3d 4h");
    }

    #[test]
    fn the_table_shows_the_forecast_and_dashes_for_what_is_unknown() {
        let now = keyman::service::wall_clock().as_secs();
        let known = PlatformStatus {
            remaining: Some(4_000),
            leased: Some(250),
            burn_per_hour: Some(60_000),
            dry_at: Some(now + 7_800 + 30),
            ..platform("github_rest")
        };
        let text = table(&[known, platform("gitlab_rest")]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("remaining") && lines[0].contains("runs dry"),
            "{text}"
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "github_rest",
                "2",
                "1",
                "0",
                "\u{2014}",
                "4000",
                "250",
                "60000",
                "in",
                "2h",
                "10m"
            ],
            "{text}"
        );
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "gitlab_rest",
                "2",
                "1",
                "0",
                "\u{2014}",
                "\u{2014}",
                "0",
                "\u{2014}",
                "\u{2014}"
            ],
            "{text}"
        );
        assert_eq!(lines.len(), 3, "no clock line when no lag is known: {text}");
        let j = json_status(&[platform("p")]);
        assert_eq!(j[0]["remaining"], serde_json::Value::Null);
        assert_eq!(j[0]["leased"], 0);
        assert_eq!(j[0]["clock_lag_ms"], serde_json::Value::Null);
    }

    #[test]
    fn a_platform_clock_behind_ours_is_said_under_the_table() {
        let lagging = PlatformStatus {
            clock_lag_ms: Some(32_000),
            ..platform("github_rest")
        };
        let text = table(&[lagging.clone(), platform("gitlab_rest")]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[3].starts_with("github_rest: the platform's clock is about 32s behind ours"),
            "{text}"
        );
        assert_eq!(json_status(&[lagging])[0]["clock_lag_ms"], 32_000);
    }
}
