//! The one driver of an [`Engine`] under test: it owns the engine and a virtual
//! clock, feeds it messages, drains its outputs in the documented order
//! (transmits, then events), steps the clock to the next `poll_timeout`, keeps
//! the replies per channel and (in debug builds, or when asked) checks the
//! [invariants](super::invariants) after every input. Modelled on quinn-proto's
//! test `Pair::step` / `drive`.

use super::START_MILLIS;
use super::invariants::{Checker, Violation};
use super::operation::{Clock, Operation};
use super::quota_ops::{Context, LiveLease};
use super::setup::Setup;
use crate::engine::{Engine, EngineConfig, Event, Transmit};
use crate::probe::{ProbeAnswer, ProbeRequest};
use crate::rng::SplitMix64;
use crate::time::Timestamp;
use rand_core::Rng;
use std::collections::BTreeMap;

/// What the engine gave out after one input, in the order drained.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs {
    /// Every [`Engine::poll_transmit`], in order.
    pub transmits: Vec<Transmit>,
    /// Every [`Engine::poll_event`], in order.
    pub events: Vec<Event>,
    /// Every [`Engine::poll_probe`], in order (only [`drain`] takes them).
    pub probes: Vec<ProbeRequest>,
}

/// Drains `engine` in the documented order: every transmit to `on_transmit`,
/// then every event to `on_event`.
pub fn drain_each<R: Rng>(
    engine: &mut Engine<R>,
    mut on_transmit: impl FnMut(Transmit),
    mut on_event: impl FnMut(Event),
) {
    while let Some(tx) = engine.poll_transmit() {
        on_transmit(tx);
    }
    while let Some(ev) = engine.poll_event() {
        on_event(ev);
    }
}

/// Drains `engine` in the documented order, keeping what it gave out: the
/// transmits, the probes, then the events.
pub fn drain<R: Rng>(engine: &mut Engine<R>) -> Outputs {
    let mut out = Outputs::default();
    while let Some(tx) = engine.poll_transmit() {
        out.transmits.push(tx);
    }
    while let Some(probe) = engine.poll_probe() {
        out.probes.push(probe);
    }
    while let Some(ev) = engine.poll_event() {
        out.events.push(ev);
    }
    out
}

/// How many timer ticks [`Driver::drive_until_idle`] and
/// [`Driver::advance_to`] fire at most before they give up.
const MAX_STEPS: usize = 100_000;

/// An engine, its virtual clock, the replies it sent per channel and the
/// invariant checker.
pub struct Driver<R = SplitMix64> {
    /// The engine driven.
    pub engine: Engine<R>,
    now: Timestamp,
    checker: Option<Checker>,
    replies: BTreeMap<String, Vec<Vec<u8>>>,
    /// Probes given out and not yet taken, with the time each was given out.
    probes: Vec<(Timestamp, ProbeRequest)>,
}

impl Driver<SplitMix64> {
    /// An engine with the default configuration and a generator seeded with
    /// `seed`, at [`START_MILLIS`], checked after every input.
    pub fn new(seed: u64) -> Self {
        let engine = Engine::new(EngineConfig::default(), SplitMix64::new(seed));
        Driver::with_engine(engine, Timestamp::from_millis(START_MILLIS)).checked(true)
    }

    /// [`new`](Self::new), with the configuration of `setup`.
    pub fn with_setup(seed: u64, setup: &Setup) -> Self {
        let engine = Engine::new(setup.config(), SplitMix64::new(seed));
        Driver::with_engine(engine, Timestamp::from_millis(START_MILLIS)).checked(true)
    }
}

impl<R: Rng> Driver<R> {
    /// Drives `engine` from `now`; checked in debug builds.
    pub fn with_engine(engine: Engine<R>, now: Timestamp) -> Self {
        let checker =
            cfg!(debug_assertions).then(|| Checker::new(engine.config().channels.clone()));
        Driver {
            engine,
            now,
            checker,
            replies: BTreeMap::new(),
            probes: Vec::new(),
        }
    }

    /// Whether the invariants are checked after every input.
    pub fn checked(mut self, on: bool) -> Self {
        self.checker = on.then(|| Checker::new(self.engine.config().channels.clone()));
        self
    }

    /// The virtual time.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Sets the virtual time, backwards too, firing no timer.
    pub fn set_time(&mut self, now: Timestamp) {
        self.now = now;
    }

    /// How many held requests the checker follows (0 when unchecked).
    pub fn held_followed(&self) -> usize {
        self.checker.as_ref().map_or(0, Checker::held)
    }

    /// What the leases the checker followed went through (nothing when
    /// unchecked).
    pub fn tally(&self) -> super::leases::Tally {
        self.checker
            .as_ref()
            .map(Checker::tally)
            .unwrap_or_default()
    }

    /// The payloads sent on `channel` so far, in order.
    pub fn replies(&self, channel: &str) -> &[Vec<u8>] {
        self.replies.get(channel).map_or(&[], Vec::as_slice)
    }

    /// Takes the payloads sent on `channel` so far.
    pub fn take_replies(&mut self, channel: &str) -> Vec<Vec<u8>> {
        self.replies.remove(channel).unwrap_or_default()
    }

    /// Takes the probes the engine gave out so far (to answer them with
    /// [`answer_probe`](Self::answer_probe)).
    pub fn take_probes(&mut self) -> Vec<ProbeRequest> {
        self.take_probes_at().into_iter().map(|(_, p)| p).collect()
    }

    /// Takes the probes the engine gave out so far, each with the virtual time
    /// at which it was given out.
    pub fn take_probes_at(&mut self) -> Vec<(Timestamp, ProbeRequest)> {
        std::mem::take(&mut self.probes)
    }

    fn record(&mut self, out: &Outputs) {
        let now = self.now;
        self.probes
            .extend(out.probes.iter().map(|p| (now, p.clone())));
        for tx in &out.transmits {
            self.replies
                .entry(tx.channel.clone())
                .or_default()
                .push(tx.payload.clone());
        }
    }

    /// Feeds `payload` on `channel` at the current time and drains.
    pub fn handle(&mut self, channel: &str, payload: &[u8]) -> Result<Outputs, Violation> {
        let now = self.now;
        let before = self
            .checker
            .as_mut()
            .map(|c| c.before(&self.engine, now, Some(payload)));
        self.engine.handle(now, channel, payload);
        let out = drain(&mut self.engine);
        if let (Some(checker), Some(before)) = (self.checker.as_mut(), before) {
            checker.after_message(&mut self.engine, before, now, channel, payload, &out)?;
        }
        self.record(&out);
        Ok(out)
    }

    /// Fires the engine's timer at the current time and drains.
    pub fn handle_timeout(&mut self) -> Result<Outputs, Violation> {
        let now = self.now;
        let before = self
            .checker
            .as_mut()
            .map(|c| c.before(&self.engine, now, None));
        self.engine.handle_timeout(now);
        let out = drain(&mut self.engine);
        if let (Some(checker), Some(before)) = (self.checker.as_mut(), before) {
            checker.after_timeout(&self.engine, before, now, &out, true)?;
        }
        self.record(&out);
        Ok(out)
    }

    /// Feeds the answer to a probe at the current time and drains; checked
    /// like a timer tick (it may answer held requests, nothing else).
    pub fn answer_probe(&mut self, answer: ProbeAnswer) -> Result<Outputs, Violation> {
        let now = self.now;
        let before = self
            .checker
            .as_mut()
            .map(|c| c.before(&self.engine, now, None));
        self.engine.handle_probe(now, answer);
        let out = drain(&mut self.engine);
        if let (Some(checker), Some(before)) = (self.checker.as_mut(), before) {
            checker.after_timeout(&self.engine, before, now, &out, false)?;
        }
        self.record(&out);
        Ok(out)
    }

    /// Moves the clock to the engine's next timeout (never back) and fires it.
    /// `false` when the engine has no timer.
    pub fn step(&mut self) -> Result<bool, Violation> {
        let Some(at) = self.engine.poll_timeout() else {
            return Ok(false);
        };
        self.now = self.now.max(at);
        self.handle_timeout()?;
        Ok(true)
    }

    /// Moves the clock to `to`, firing every timer that falls due on the way.
    pub fn advance_to(&mut self, to: Timestamp) -> Result<(), Violation> {
        for _ in 0..MAX_STEPS {
            match self.engine.poll_timeout() {
                Some(at) if at <= to => {
                    self.step()?;
                }
                _ => {
                    self.now = self.now.max(to);
                    return Ok(());
                }
            }
        }
        Err(Violation(format!("timers keep falling due before {to:?}")))
    }

    /// Fires timers until the engine has none.
    pub fn drive_until_idle(&mut self) -> Result<(), Violation> {
        for _ in 0..MAX_STEPS {
            if !self.step()? {
                return Ok(());
            }
        }
        Err(Violation("the engine's timer never settles".into()))
    }

    /// Replays one operation.
    pub fn apply(&mut self, op: &Operation) -> Result<(), Violation> {
        let now = self.now.as_millis();
        let channels = self.engine.config().channels.clone();
        // A REPORT names the leases the engine has lent.
        let quotas = self.engine.quotas();
        let live: Vec<LiveLease> = quotas
            .leases()
            .map(|(id, l)| LiveLease {
                id,
                platform: l.platform.clone(),
                key: l.key.clone(),
            })
            .collect();
        let cx = Context {
            now_millis: now,
            live: &live,
            last_id: quotas.last_lease_id(),
        };
        match op {
            Operation::Send(message) => {
                let channel = message.channel().name(&channels).to_string();
                self.handle(&channel, &message.encode(&cx))?;
            }
            Operation::SendTo { channel, payload } => {
                self.handle(channel.name(&channels), &payload.encode(&cx))?;
            }
            Operation::Clock(Clock::Millis(ms)) => {
                self.now = Timestamp::from_millis(now.saturating_add(u64::from(*ms)));
            }
            Operation::Clock(Clock::Seconds(s)) => {
                self.now = Timestamp::from_millis(now.saturating_add(u64::from(*s) * 1000));
            }
            Operation::Clock(Clock::Minutes(m)) => {
                self.now = Timestamp::from_millis(now.saturating_add(u64::from(*m) * 60_000));
            }
            Operation::Clock(Clock::Back(ms)) => {
                self.now = Timestamp::from_millis(now.saturating_sub(u64::from(*ms)));
            }
            Operation::Clock(Clock::Step) => {
                self.step()?;
            }
            Operation::Clock(Clock::Tick) => {
                self.handle_timeout()?;
            }
        }
        Ok(())
    }

    /// Replays `ops` in order; the error names the operation that broke an
    /// invariant.
    pub fn replay(&mut self, ops: &[Operation]) -> Result<(), Violation> {
        for (i, op) in ops.iter().enumerate() {
            let at = self.now.as_millis();
            self.apply(op)
                .map_err(|v| Violation(format!("operation {i} ({op:?}) at {at}: {v}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = "worker-oath-request";
    const ANN: &str = "augur-oauth-announce";

    fn at(secs: u64) -> Timestamp {
        Timestamp::from_millis(START_MILLIS + secs * 1000)
    }

    /// A driver with one key on `p`, rate limited until 10 s after the start,
    /// and a NEW from 42 held for up to 30 s.
    fn held() -> Driver {
        let mut d = Driver::new(7);
        let refresh = START_MILLIS / 1000 + 10;
        d.handle(
            ANN,
            br#"{"type":"PUBLISH","key_str":"k","key_platform":"p"}"#,
        )
        .unwrap();
        let expire = format!(
            r#"{{"type":"EXPIRE","key_str":"k","key_platform":"p","refresh_time":{refresh}}}"#
        );
        d.handle(REQ, expire.as_bytes()).unwrap();
        let out = d
            .handle(
                REQ,
                br#"{"type":"NEW","key_platform":"p","requester_id":42,"hold_ms":30000}"#,
            )
            .unwrap();
        assert!(out.transmits.is_empty());
        d
    }

    #[test]
    fn step_goes_to_the_next_timeout_and_fires_it() {
        let mut d = held();
        assert!(d.step().unwrap());
        assert_eq!(d.now(), at(10));
        assert_eq!(
            d.replies("worker-oath-request-42"),
            [br#"{"key":"k"}"#.to_vec()]
        );
        assert!(!d.step().unwrap(), "no timer is left");
        assert_eq!(d.now(), at(10));
    }

    #[test]
    fn advance_to_fires_what_falls_due_on_the_way_and_stops_at_the_time_given() {
        let mut d = held();
        d.advance_to(at(5)).unwrap();
        assert_eq!(d.now(), at(5));
        assert!(d.replies("worker-oath-request-42").is_empty());
        d.advance_to(at(60)).unwrap();
        assert_eq!(d.now(), at(60));
        assert_eq!(d.take_replies("worker-oath-request-42").len(), 1);
        assert!(d.replies("worker-oath-request-42").is_empty());
    }

    #[test]
    fn drive_until_idle_fires_every_timer() {
        let mut d = held();
        d.drive_until_idle().unwrap();
        assert_eq!(d.engine.poll_timeout(), None);
        assert_eq!(d.engine.held(), 0);
        assert_eq!(d.held_followed(), 0);
    }

    #[test]
    fn the_checker_sees_a_broken_promise() {
        // A checker that did not see the NEW held finds a held request lost.
        let mut d = held().checked(true);
        assert!(d.step().is_err());
    }
}
