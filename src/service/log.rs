//! Engine events as log lines: one message per event, at the level the core
//! gives it ([`Event::level`]), wherever the service drives an engine.

use crate::engine::{Event, KeyEvent, Level};

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
            log_at!(level, %channel, %error, "dropped a message")
        }
        Event::UnknownChannel { channel } => {
            log_at!(level, %channel, "message on a channel this orchestrator does not serve")
        }
        Event::UnknownPlatform { platform } => {
            log_at!(level, %platform, "key requested for a platform with no published keys")
        }
        Event::Key {
            platform,
            key,
            what,
        } => match what {
            KeyEvent::Published => log_at!(level, %platform, %key, "key published"),
            KeyEvent::Revived => log_at!(level, %platform, %key, "invalid key published again"),
            KeyEvent::Unpublished => log_at!(level, %platform, %key, "key unpublished"),
            KeyEvent::Expired { refresh_at } => log_at!(
                level,
                %platform,
                %key,
                refresh_at = refresh_at.as_secs(),
                "key rate limited"
            ),
            KeyEvent::Invalidated => log_at!(level, %platform, %key, "key invalidated"),
        },
        Event::Shutdown => log_at!(level, "SHUTDOWN received"),
    }
}
