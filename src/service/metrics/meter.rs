//! The orchestrator's hooks into its [`Metrics`](super::Metrics): called where
//! it hands a message to the engine, logs an event, queues a reply, begins
//! and ends a term. Without the feature `metrics` (or without metrics given)
//! they do nothing.

use crate::engine::{Engine, Event, Transmit};
use crate::rng::SplitMix64;
use crate::service::{Bus, StateStore};
use crate::time::Timestamp;
use std::sync::Arc;
use std::time::Instant;

#[cfg(feature = "metrics")]
use super::Metrics;
#[cfg(feature = "metrics")]
pub(crate) use super::tracking::Seen;
#[cfg(feature = "metrics")]
use super::tracking::Waiting;

/// Nothing to remember without metrics.
#[cfg(not(feature = "metrics"))]
#[derive(Debug)]
pub(crate) struct Seen;

/// The metrics of an orchestrator, if it has any.
#[derive(Clone, Default)]
pub(crate) struct Meter {
    #[cfg(feature = "metrics")]
    metrics: Option<Metrics>,
}

impl std::fmt::Debug for Meter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meter").finish_non_exhaustive()
    }
}

impl Meter {
    /// Hooks that feed `metrics`.
    #[cfg(feature = "metrics")]
    pub(crate) fn new(metrics: Metrics) -> Self {
        Self {
            metrics: Some(metrics),
        }
    }

    /// The bus the orchestrator should use: `bus`, timed when there are metrics.
    pub(crate) fn bus(&self, bus: Arc<dyn Bus>) -> Arc<dyn Bus> {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            return Arc::new(super::wrap::MeteredBus {
                inner: bus,
                metrics: metrics.clone(),
            });
        }
        bus
    }

    /// The store the orchestrator should use: `store`, noting saves when
    /// there are metrics.
    pub(crate) fn store(&self, store: Arc<dyn StateStore>) -> Arc<dyn StateStore> {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            return Arc::new(super::wrap::MeteredStore {
                inner: store,
                metrics: metrics.clone(),
            });
        }
        store
    }

    /// A term begins: subscribed and serving; the key counts are taken now.
    pub(crate) fn serving(&self, engine: &mut Engine<SplitMix64>, now: Timestamp) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.serving();
            metrics.observe(engine, now);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (engine, now);
    }

    /// The term ended.
    pub(crate) fn term_ended(&self) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.term_ended();
        }
    }

    /// The broker connection went down (`false`) or came back (`true`).
    pub(crate) fn broker(&self, up: bool) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.broker(up);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = up;
    }

    /// A message received at `arrived` is about to be handed to `engine`:
    /// what it is, for [`handled`](Self::handled) and [`reply`](Self::reply).
    pub(crate) fn message(
        &self,
        engine: &Engine<SplitMix64>,
        channel: &str,
        payload: &[u8],
        reply_subject: Option<&str>,
        arrived: Instant,
    ) -> Option<Seen> {
        #[cfg(feature = "metrics")]
        if self.metrics.is_some() {
            return seen(engine, channel, payload, reply_subject, arrived);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (engine, channel, payload, reply_subject, arrived);
        None
    }

    /// The engine logged `event`.
    pub(crate) fn event(&self, event: &Event) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            metrics.event(event);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = event;
    }

    /// The engine produced `transmit` (while handling `current`, if a message).
    pub(crate) fn reply(
        &self,
        engine: &Engine<SplitMix64>,
        transmit: &Transmit,
        current: Option<&mut Seen>,
    ) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            reply(metrics, engine, transmit, current);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (engine, transmit, current);
    }

    /// The engine is done with `seen` (its replies are queued): counts it,
    /// and the key counts when they are due.
    pub(crate) fn handled(
        &self,
        engine: &mut Engine<SplitMix64>,
        seen: Option<Seen>,
        now: Timestamp,
    ) {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            if let Some(seen) = seen {
                handled(metrics, engine, seen);
            }
            metrics.observe(engine, now);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = (engine, seen, now);
    }

    /// When the key counts are next due, if there are metrics.
    pub(crate) fn observe_at(&self) -> Option<tokio::time::Instant> {
        #[cfg(feature = "metrics")]
        if let Some(metrics) = &self.metrics {
            return Some(tokio::time::Instant::from_std(metrics.observe_at()));
        }
        None
    }
}

/// Decodes what the engine will decode, to know the message's type and platform.
#[cfg(feature = "metrics")]
fn seen(
    engine: &Engine<SplitMix64>,
    channel: &str,
    payload: &[u8],
    reply_subject: Option<&str>,
    arrived: Instant,
) -> Option<Seen> {
    use crate::protocol::{Announce, Request, decode_announce, decode_request};
    let config = engine.config();
    let max = config.max_payload;
    let (kind, platform, dest) = if channel == config.channels.request {
        match decode_request(payload, max).ok()? {
            Request::New {
                platform, reply, ..
            } => {
                let dest = match reply_subject {
                    Some(subject) => subject.to_string(),
                    None => config.channels.request_reply(&reply.requester_id),
                };
                ("NEW", Some(platform), Some(dest))
            }
            Request::Lease {
                platform, reply, ..
            } => {
                let dest = match reply_subject {
                    Some(subject) => subject.to_string(),
                    None => config.channels.request_reply(&reply.requester_id),
                };
                ("NEW", Some(platform), Some(dest))
            }
            Request::Expire { platform, .. } => ("EXPIRE", Some(platform), None),
            Request::Invalidate { platform, .. } => ("INVALIDATE", Some(platform), None),
            Request::Report { platform, .. } => ("REPORT", Some(platform), None),
        }
    } else if channel == config.channels.announce {
        match decode_announce(payload, max).ok()? {
            Announce::Publish { platform, .. } | Announce::PublishWithQuota { platform, .. } => {
                ("PUBLISH", Some(platform), None)
            }
            Announce::Unpublish { platform, .. } => ("UNPUBLISH", Some(platform), None),
            Announce::Ack { .. } => ("ACK", None, None),
            Announce::ListPlatforms { .. } => ("LIST_PLATFORMS", None, None),
            Announce::ListKeys { .. } => ("LIST_KEYS", None, None),
            Announce::ListInvalidKeys { .. } => ("LIST_INVALID_KEYS", None, None),
            Announce::Status { .. } => ("STATUS", None, None),
            Announce::Shutdown => ("SHUTDOWN", None, None),
        }
    } else {
        return None;
    };
    Some(Seen {
        kind,
        platform,
        dest,
        arrived,
        answered: false,
    })
}

/// The `answer` label of a reply to a NEW, or `None` if it is no such reply.
#[cfg(feature = "metrics")]
fn answer(payload: &[u8]) -> Option<&'static str> {
    use crate::protocol::{ErrorCode, Reply};
    Some(match Reply::decode(payload, usize::MAX).ok()?.reply {
        Reply::Key(_) | Reply::NullKey => "key",
        Reply::Wait(_) => "wait",
        Reply::Error { code, .. } => match code {
            ErrorCode::UnknownPlatform => "unknown_platform",
            ErrorCode::NoKeys => "no_keys",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Other(_) => "error",
        },
        _ => return None,
    })
}

#[cfg(feature = "metrics")]
fn reply(
    metrics: &Metrics,
    engine: &Engine<SplitMix64>,
    transmit: &Transmit,
    current: Option<&mut Seen>,
) {
    let held = metrics.tracking().take_held(&transmit.channel);
    let waiting = match held {
        Some(waiting) => waiting,
        None => match current {
            Some(seen) if !seen.answered && seen.dest.as_deref() == Some(&transmit.channel) => {
                seen.answered = true;
                Waiting {
                    platform: metrics
                        .platform_label(engine, seen.platform.as_deref().unwrap_or_default()),
                    arrived: seen.arrived,
                }
            }
            // An admin reply, or an error to a message that could not be read.
            _ => return,
        },
    };
    if let Some(answer) = answer(&transmit.payload) {
        metrics.count_answer(waiting.platform, answer);
        metrics
            .tracking()
            .publishing(&transmit.channel, waiting.arrived);
    }
}

#[cfg(feature = "metrics")]
fn handled(metrics: &Metrics, engine: &Engine<SplitMix64>, seen: Seen) {
    let Some(platform) = seen.platform.as_deref() else {
        metrics.count_admin(seen.kind);
        return;
    };
    let label = metrics.platform_label(engine, platform);
    if let (Some(dest), false) = (seen.dest, seen.answered) {
        // A NEW not answered while it was handled is held.
        metrics.tracking().hold(
            dest,
            Waiting {
                platform: label.clone(),
                arrived: seen.arrived,
            },
        );
    }
    metrics.count_message(label, seen.kind);
}
