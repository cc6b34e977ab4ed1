//! Withholding while a probe is pending: a new key until the platform has
//! answered, a key a worker said is invalid until the platform confirms it.
//! The key is expired for one step at a time (a NEW meanwhile gets a short
//! `wait`), moved on while its probe is pending, and ends handed out, invalid,
//! or (after the longest withholding) as the worker or the admin said.

use super::{Why, Withheld};
use crate::engine::{Engine, Event, KeyEvent, ProbeEvent};
use crate::mask::Masked;
use crate::pool::KeyState;
use crate::time::Timestamp;
use rand_core::Rng;
use std::time::Duration;

impl<R: Rng> Engine<R> {
    /// Withholds `key` of `platform` (expired for one step) while its probe
    /// is pending.
    pub(super) fn withhold_for_probe(
        &mut self,
        now: Timestamp,
        platform: &str,
        key: &str,
        why: Why,
    ) {
        let Some(p) = self.probe.as_mut() else {
            return;
        };
        let step = p.config.withhold_step.max(Duration::from_millis(1));
        let until = now.saturating_add(step);
        let record = (platform.to_string(), key.to_string());
        let sent = match p.withheld.get(&record) {
            Some(w) => {
                p.deadlines
                    .remove(&(w.until, record.0.clone(), record.1.clone()));
                w.sent
            }
            None => None,
        };
        // A suspect key stays suspect even if it was only withheld as new.
        let why = match p.withheld.get(&record) {
            Some(w) if w.why == Why::Suspect => Why::Suspect,
            _ => why,
        };
        p.withheld
            .insert(record.clone(), Withheld { why, sent, until });
        p.deadlines.insert((until, record.0, record.1));
        self.pool.expire(platform, key, until, now);
        self.key_event(platform, key, KeyEvent::Withheld { until });
    }

    /// Ends the withholding of `key` of `platform` by a probe's answer: the key
    /// is handed out again (if nothing else expired it meanwhile).
    pub(super) fn release_withheld(&mut self, now: Timestamp, platform: &str, key: &str) {
        let Some(w) = self.drop_withheld(platform, key) else {
            return;
        };
        if w.why == Why::Suspect
            && let Some(provider) = self.probe.as_ref().and_then(|p| p.provider_of(platform))
        {
            self.events.push_back(Event::Probe {
                provider,
                key: Masked(key).to_string(),
                what: ProbeEvent::Confirmed,
            });
        }
        if self.pool.state(platform, key, now)
            == Some(KeyState::Expired {
                refresh_at: w.until,
            })
        {
            self.release_key(now, platform, key);
        }
    }

    pub(super) fn drop_withheld(&mut self, platform: &str, key: &str) -> Option<Withheld> {
        let p = self.probe.as_mut()?;
        let record = (platform.to_string(), key.to_string());
        let w = p.withheld.remove(&record)?;
        p.deadlines.remove(&(w.until, record.0, record.1));
        Some(w)
    }

    /// The withheld keys whose step ended by `now`: moved on while their probe
    /// is pending, else (or after the longest withholding) a new key is
    /// handed out and a suspect one made invalid. Called before anything that
    /// may hand out a key.
    pub(in crate::engine) fn settle_withheld(&mut self, now: Timestamp) {
        loop {
            let Some(p) = self.probe.as_mut() else {
                return;
            };
            let Some((until, platform, key)) = p.deadlines.first().cloned() else {
                return;
            };
            if until > now {
                return;
            }
            let record = (platform.clone(), key.clone());
            let Some(w) = p.withheld.get(&record).copied() else {
                p.deadlines.pop_first();
                continue;
            };
            let last = w
                .sent
                .map_or(Timestamp::MAX, |t| t.saturating_add(p.config.max_withhold));
            let pending = p
                .provider_of(&platform)
                .is_some_and(|provider| p.schedule.pending(provider, &key));
            let step = p.config.withhold_step.max(Duration::from_millis(1));
            let next = now.saturating_add(step).min(last);
            if pending && next > now {
                p.deadlines.pop_first();
                p.deadlines.insert((next, platform.clone(), key.clone()));
                p.withheld.insert(record, Withheld { until: next, ..w });
                self.pool.expire(&platform, &key, next, now);
                continue;
            }
            self.drop_withheld(&platform, &key);
            let provider = self.probe.as_ref().and_then(|p| p.provider_of(&platform));
            let invalidated = w.why == Why::Suspect;
            if let Some(provider) = provider {
                self.events.push_back(Event::Probe {
                    provider,
                    key: Masked(&key).to_string(),
                    what: ProbeEvent::Unconfirmed { invalidated },
                });
            }
            if invalidated {
                self.invalidate(now, &platform, &key);
            } else if self.pool.state(&platform, &key, now)
                == Some(KeyState::Expired {
                    refresh_at: w.until,
                })
            {
                self.release_key(now, &platform, &key);
            }
        }
    }
}
