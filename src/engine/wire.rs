//! The wire side of the [`Engine`]: a message is decoded, handed to the typed
//! operation it names, and the answer encoded for the channel its sender reads.
//! Nothing here decides what a key does; that is the typed methods' work.

use super::{Engine, Event, Transmit, wait_seconds};
use crate::pool::Assignment;
use crate::protocol::{
    Announce, ErrorCode, Id, Rejected, Reply, ReplyTo, Request, decode_announce, decode_request,
};
use crate::time::Timestamp;
use rand_core::Rng;

/// Why no key of a platform can serve a request.
#[derive(Debug, Clone, Copy)]
pub(super) enum Refusal {
    /// No key was ever published for the platform.
    UnknownPlatform,
    /// The platform has no usable key.
    NoKeys,
}

impl<R: Rng> Engine<R> {
    /// Handles one message received on `channel` at `now`. Call
    /// [`poll_transmit`](Self::poll_transmit) and [`poll_event`](Self::poll_event)
    /// afterwards.
    pub fn handle(&mut self, now: Timestamp, channel: &str, payload: &[u8]) {
        self.handle_with_reply(now, channel, payload, None);
    }

    /// Like [`handle`](Self::handle), for transports with native request/reply:
    /// when `reply_subject` is given, the answer goes there instead of to the
    /// `{channel}-{requester_id}` channel.
    pub fn handle_with_reply(
        &mut self,
        now: Timestamp,
        channel: &str,
        payload: &[u8],
        reply_subject: Option<&str>,
    ) {
        if self.shutdown {
            return;
        }
        self.hold_clock.observe(now);
        self.settle_withheld(now);
        let max = self.config.max_payload;
        if channel == self.config.channels.request {
            match decode_request(payload, max) {
                Ok(req) => {
                    self.stats.handled += 1;
                    self.on_request(now, req, reply_subject);
                }
                Err(rej) => self.reject(channel, rej, reply_subject, false),
            }
        } else if channel == self.config.channels.announce {
            match decode_announce(payload, max) {
                Ok(msg) => {
                    self.stats.handled += 1;
                    self.on_announce(now, msg, reply_subject);
                }
                Err(rej) => self.reject(channel, rej, reply_subject, true),
            }
        } else {
            self.stats.rejected += 1;
            self.events.push_back(Event::UnknownChannel {
                channel: channel.to_string(),
            });
        }
        if self.held.len() > 0 {
            self.serve_held(now, false);
        }
        self.after_probe_input(now);
    }

    fn reject(
        &mut self,
        channel: &str,
        rej: Rejected,
        reply_subject: Option<&str>,
        announce: bool,
    ) {
        self.stats.rejected += 1;
        if let Some(reply) = &rej.reply {
            let message = rej.error.to_string();
            let dest = self.destination(reply, reply_subject, announce);
            let code = if rej.error.is_too_large() {
                ErrorCode::TooLarge
            } else {
                ErrorCode::BadRequest
            };
            self.send_error(dest, reply, code, message);
        }
        self.events.push_back(Event::Rejected {
            channel: channel.to_string(),
            error: rej.error,
        });
    }

    pub(super) fn destination(
        &self,
        reply: &ReplyTo,
        reply_subject: Option<&str>,
        announce: bool,
    ) -> String {
        match reply_subject {
            Some(s) => s.to_string(),
            None if announce => self.config.channels.announce_reply(&reply.requester_id),
            None => self.config.channels.request_reply(&reply.requester_id),
        }
    }

    pub(super) fn send(&mut self, channel: String, reply: &Reply, request_id: Option<&Id>) {
        self.transmits.push_back(Transmit {
            channel,
            payload: reply.encode(request_id),
        });
    }

    /// Answers a NEW (or a lease request) that no key of `platform` can
    /// serve: its platform is unknown, or it has no usable key. A re-send of
    /// it is a new request from then on.
    pub(super) fn refuse(
        &mut self,
        channel: String,
        reply: &ReplyTo,
        platform: &str,
        refusal: Refusal,
    ) {
        let (code, message) = match refusal {
            Refusal::UnknownPlatform => (
                ErrorCode::UnknownPlatform,
                format!("unknown platform: {platform}"),
            ),
            Refusal::NoKeys => (
                ErrorCode::NoKeys,
                format!("no usable keys for platform: {platform}"),
            ),
        };
        self.forget_resent(platform, reply);
        self.send_error(channel, reply, code, message);
    }

    pub(super) fn send_error(
        &mut self,
        channel: String,
        reply: &ReplyTo,
        code: ErrorCode,
        message: String,
    ) {
        self.stats.errors += 1;
        self.send(
            channel,
            &Reply::Error { code, message },
            reply.request_id.as_ref(),
        );
    }

    fn on_request(&mut self, now: Timestamp, req: Request, reply_subject: Option<&str>) {
        match req {
            Request::New {
                platform,
                reply,
                hold_ms,
            } => {
                let dest = self.destination(&reply, reply_subject, false);
                let waiter = (reply.requester_id.clone(), reply.request_id.clone());
                let pick = self.request_pick(now, &platform, Some(&waiter));
                let answer = match self.pool.picked(&platform, pick) {
                    Assignment::Key(k) => Reply::Key(k.to_string()),
                    Assignment::Wait { refresh_at } => {
                        if let Some(ms) = hold_ms
                            && self.hold(now, &platform, &dest, &reply, ms, None)
                        {
                            return;
                        }
                        let at = self.wait_until(now, &platform, Some(waiter), refresh_at);
                        self.stats.waits += 1;
                        Reply::Wait(wait_seconds(now, at))
                    }
                    Assignment::UnknownPlatform => {
                        return self.refuse(dest, &reply, &platform, Refusal::UnknownPlatform);
                    }
                    Assignment::NoKeys => {
                        return self.refuse(dest, &reply, &platform, Refusal::NoKeys);
                    }
                };
                self.forget_resent(&platform, &reply);
                self.send(dest, &answer, reply.request_id.as_ref());
            }
            Request::Expire {
                key,
                platform,
                refresh_time,
                ..
            } => {
                self.expire(now, &platform, &key, refresh_time);
            }
            Request::Invalidate { key, platform, .. } => {
                self.invalidate_or_confirm(now, &platform, &key);
            }
            // Quota extension: NEW with `lease`, REPORT.
            other => self.on_quota_request(now, other, reply_subject),
        }
    }

    fn on_announce(&mut self, now: Timestamp, msg: Announce, reply_subject: Option<&str>) {
        let dest = msg
            .reply_to()
            .map(|r| self.destination(r, reply_subject, true))
            .unwrap_or_default();
        let (answer, reply) = match msg {
            Announce::Publish { key, platform } => {
                self.publish(now, &platform, &key);
                return;
            }
            Announce::Unpublish { key, platform } => {
                self.unpublish(now, &platform, &key);
                return;
            }
            Announce::Shutdown => {
                self.shutdown(now);
                return;
            }
            // Quota extension: PUBLISH with `account` or `limit`.
            Announce::PublishWithQuota {
                key,
                platform,
                account,
                limit,
            } => {
                self.publish_account(now, &platform, &key, account.as_deref(), limit);
                return;
            }
            Announce::Ack { reply } => (Reply::Ack, reply),
            Announce::ListPlatforms { reply } => (Reply::List(self.platforms()), reply),
            Announce::ListKeys { platform, reply } => {
                let answer = match self.keys(now, &platform) {
                    Some(keys) => Reply::List(keys),
                    None => Reply::ListError(format!("unknown platform: {platform}")),
                };
                (answer, reply)
            }
            Announce::ListInvalidKeys { platform, reply } => {
                let answer = match self.invalid_keys(&platform) {
                    Some(keys) => Reply::List(keys),
                    None => Reply::ListError(format!("unknown platform: {platform}")),
                };
                (answer, reply)
            }
            Announce::Status { reply } => (Reply::Status(self.status(now)), reply),
        };
        self.send(dest, &answer, reply.request_id.as_ref());
    }
}
