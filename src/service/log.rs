//! Engine events as log lines: one message per event, at the level the core
//! gives it ([`Event::level`]), wherever the service drives an engine.
//!
//! Text that comes from outside (platform names, channels, masked keys) is
//! logged through [`Escaped`], so that a newline or an escape sequence in it
//! cannot forge a log line or colour a terminal.

use crate::engine::{Event, KeyEvent, Level, ProbeEvent};

/// Text from outside, shown with its control characters escaped (`\n`,
/// `\u{1b}`, …): one log line stays one line. Plain text shows as it is.
pub(crate) struct Escaped<'a>(pub(crate) &'a str);

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::fmt::Write;
        for c in self.0.chars() {
            if c.is_control() {
                for e in c.escape_default() {
                    f.write_char(e)?;
                }
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// Logs through `tracing` at `level`, which is known only at run time.
macro_rules! log_at {
    ($level:expr, $($arg:tt)+) => {
        match $level {
            Level::Debug => tracing::debug!($($arg)+),
            Level::Info => tracing::info!($($arg)+),
            Level::Warn => tracing::warn!($($arg)+),
        }
    };
}

/// Logs `event` at its level. Keys in events are already masked.
pub(crate) fn log_event(event: &Event) {
    let level = event.level();
    match event {
        Event::Rejected { channel, error } => {
            let channel = Escaped(channel);
            let error = error.to_string();
            let error = Escaped(&error);
            log_at!(level, %channel, %error, "dropped a message")
        }
        Event::UnknownChannel { channel } => {
            let channel = Escaped(channel);
            log_at!(level, %channel, "message on a channel this orchestrator does not serve")
        }
        Event::UnknownPlatform { platform } => {
            let platform = Escaped(platform);
            log_at!(level, %platform, "key requested for a platform with no published keys")
        }
        Event::Key {
            platform,
            key,
            what,
        } => {
            let platform = Escaped(platform);
            let key = Escaped(key);
            match what {
                KeyEvent::Published => log_at!(level, %platform, %key, "key published"),
                KeyEvent::Revived => {
                    log_at!(level, %platform, %key, "invalid key published again")
                }
                KeyEvent::Unpublished => log_at!(level, %platform, %key, "key unpublished"),
                KeyEvent::Expired { refresh_at } => log_at!(
                    level,
                    %platform,
                    %key,
                    refresh_at = refresh_at.as_secs(),
                    "key rate limited"
                ),
                KeyEvent::Invalidated => log_at!(level, %platform, %key, "key invalidated"),
                KeyEvent::Withheld { until } => log_at!(
                    level,
                    %platform,
                    %key,
                    until = until.as_secs(),
                    "key withheld while the platform is asked about it"
                ),
            }
        }
        Event::Shutdown => log_at!(level, "SHUTDOWN received"),
        Event::ClockLag { platform, lag } => {
            let platform = Escaped(platform);
            log_at!(
                level,
                %platform,
                lag_ms = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX),
                "the platform refuses keys after the reset time workers report, by our clock: its clock is behind ours (or ours ahead); its rate limits are taken that much later (check this host's clock)"
            )
        }
        Event::Probe {
            provider,
            key,
            what,
        } => {
            let key = Escaped(key);
            match what {
                ProbeEvent::Confirmed => log_at!(
                    level,
                    %provider,
                    %key,
                    "the platform says a key reported invalid is valid; handed out again"
                ),
                ProbeEvent::Revoked => log_at!(
                    level,
                    %provider,
                    %key,
                    "the platform answered 401 to a probe; the key is invalid"
                ),
                ProbeEvent::Expiring { expires_at } => log_at!(
                    level,
                    %provider,
                    %key,
                    expires_at = expires_at.as_secs(),
                    "token expires soon; replace it"
                ),
                ProbeEvent::Throttled { retry_after } => log_at!(
                    level,
                    %provider,
                    %key,
                    retry_after_secs = retry_after.map(|d| d.as_secs()),
                    "the platform throttled a probe; probing it later"
                ),
                ProbeEvent::Failed => log_at!(
                    level,
                    %provider,
                    %key,
                    "a probe got no answer; trying again later"
                ),
                ProbeEvent::Unconfirmed { invalidated } => log_at!(
                    level,
                    %provider,
                    %key,
                    invalidated,
                    "a withheld key's probe did not answer in time"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Escaped;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_not() {
        assert_eq!(Escaped("github_rest").to_string(), "github_rest");
        assert_eq!(
            Escaped("a\nINFO forged\u{1b}[31m").to_string(),
            "a\\nINFO forged\\u{1b}[31m"
        );
    }
}
