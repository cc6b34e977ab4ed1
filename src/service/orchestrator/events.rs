//! How the orchestrator logs the engine's events (one place, so that it can be
//! replaced by the service layer's shared event logging).

use crate::engine::{Event, KeyEvent};
use crate::time::Timestamp;

/// Logs one event of the engine.
pub(super) fn log_event(ev: &Event) {
    match ev {
        Event::Rejected { channel, error } => {
            tracing::warn!(%channel, %error, "dropped a message");
        }
        Event::UnknownChannel { channel } => {
            tracing::warn!(%channel, "message on a channel this orchestrator does not serve");
        }
        Event::UnknownPlatform { platform } => {
            tracing::warn!(%platform, "key requested for a platform with no published keys");
        }
        Event::Key {
            platform,
            key,
            what,
        } => match what {
            KeyEvent::Published => tracing::info!(%platform, %key, "key published"),
            KeyEvent::Revived => tracing::info!(%platform, %key, "invalid key published again"),
            KeyEvent::Unpublished => tracing::info!(%platform, %key, "key unpublished"),
            KeyEvent::Expired(until) => {
                tracing::debug!(%platform, %key, until = %Timestamp::as_secs(*until), "key rate limited")
            }
            KeyEvent::Invalidated => tracing::warn!(%platform, %key, "key invalidated"),
        },
        Event::Shutdown => tracing::info!("SHUTDOWN received"),
    }
}
