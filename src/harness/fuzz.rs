//! Bodies of the fuzz targets in `fuzz/`, kept here so that the test suite runs
//! them too (`tests/fuzz_in_suite.rs`).
//!
//! Each function takes arbitrary bytes and panics when an invariant of the core is
//! broken: a panic is how a fuzzer (or a test) sees a finding. Nothing here is
//! meant for programs that use keyman.

use super::leases::Tally;
use super::{Driver, Operation, Setup};
use crate::engine::Stats;
use crate::protocol::{DEFAULT_MAX_PAYLOAD, Reply, Request, decode_announce, decode_request};
use crate::time::Timestamp;

/// Decodes `data` as an announce, a request and a reply. Whatever decodes must
/// encode to bytes that decode to the same value (a request's `refresh_time`
/// travels in whole seconds, rounded up, so that field is compared rounded), and
/// every error must format.
pub fn decode_bytes(data: &[u8]) {
    let max = DEFAULT_MAX_PAYLOAD;
    match decode_announce(data, max) {
        Ok(msg) => {
            let again = decode_announce(&msg.encode(), usize::MAX);
            assert_eq!(again.as_ref().ok(), Some(&msg), "announce round trip");
        }
        Err(rej) => {
            let _ = rej.error.to_string();
        }
    }
    match decode_request(data, max) {
        Ok(msg) => {
            let once = decode_request(&msg.encode(), usize::MAX);
            assert_eq!(
                once.as_ref().ok(),
                Some(&whole_seconds(msg)),
                "request round trip"
            );
            if let Ok(once) = once {
                let twice = decode_request(&once.encode(), usize::MAX);
                assert_eq!(twice.ok(), Some(once), "request second round trip");
            }
        }
        Err(rej) => {
            let _ = rej.error.to_string();
        }
    }
    match Reply::decode(data, max) {
        Ok(msg) => {
            let bytes = msg.reply.encode(msg.request_id.as_ref());
            let again = Reply::decode(&bytes, usize::MAX);
            assert_eq!(again.ok(), Some(msg), "reply round trip");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// A request as it reads after one trip through `encode`: the refresh time in
/// whole seconds, rounded up.
fn whole_seconds(msg: Request) -> Request {
    match msg {
        Request::Expire {
            key,
            platform,
            refresh_time,
            requester_id,
        } => Request::Expire {
            key,
            platform,
            refresh_time: Timestamp::from_secs(refresh_time.as_millis().div_ceil(1000)),
            requester_id,
        },
        other => other,
    }
}

/// Reads `data` as a [`Setup`] (the engine's floors, strategies and lease
/// settings) and a sequence of [`Operation`]s (with `arbitrary`, one after
/// another until the bytes run out) and replays them on one
/// [`Engine`](crate::Engine) through the checked [`Driver`]: see [`replay`].
#[cfg(feature = "arbitrary")]
pub fn drive_engine(data: &[u8]) -> (Stats, Tally) {
    let (setup, ops) = operations(data);
    replay_in(&setup, &ops)
}

/// `data` as a setup and operations, one after another until the bytes run
/// out (not `Vec::arbitrary_take_rest`, which stops after each element half of
/// the time).
#[cfg(feature = "arbitrary")]
pub fn operations(data: &[u8]) -> (Setup, Vec<Operation>) {
    use arbitrary::Arbitrary;
    let mut input = arbitrary::Unstructured::new(data);
    let setup = Setup::arbitrary(&mut input).unwrap_or_default();
    let mut ops = Vec::new();
    while !input.is_empty() {
        match Operation::arbitrary(&mut input) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    (setup, ops)
}

/// Replays `ops` on one engine through the checked [`Driver`], panicking when an
/// invariant breaks (see [`invariants`](super::invariants)): the pool is
/// consistent; a rejected message changed no key; a reply goes to
/// `{channel}-{requester_id}`, and only when the message had a usable
/// `requester_id`; a key handed out is fresh; a `wait` hint is the earliest
/// refresh time rounded up to a whole second and never 0; no event shows a key;
/// leases lend no more than remains above the floor (see
/// [`leases`](super::leases)).
/// Returns what the engine did, so that a caller can see which paths were taken.
pub fn replay(ops: &[Operation]) -> Stats {
    let mut driver = Driver::new(SEED);
    if let Err(v) = driver.replay(ops) {
        panic!("{v}");
    }
    driver.engine.stats()
}

/// [`replay`] on an engine set up as `setup` says. Returns what the engine
/// did and what its leases went through.
pub fn replay_in(setup: &Setup, ops: &[Operation]) -> (Stats, Tally) {
    let mut driver = Driver::with_setup(SEED, setup);
    if let Err(v) = driver.replay(ops) {
        panic!("{setup:?}: {v}");
    }
    (driver.engine.stats(), driver.tally())
}

/// The seed of the engine the fuzz targets drive.
const SEED: u64 = 0x00F0_221E;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::operation::{Clock, Message, Requester};

    fn publish(key: u8) -> Operation {
        Operation::Send(Message::Publish { key, platform: 0 })
    }

    /// EXPIRE key 0 of platform 0 until 60 s after now.
    fn expire() -> Operation {
        Operation::Send(Message::Expire {
            key: 0,
            platform: 0,
            requester: Some(Requester::Number(4)),
            refresh_in: 60,
            fractional: false,
        })
    }

    fn new(hold: Option<u8>) -> Operation {
        Operation::Send(Message::New {
            platform: 0,
            requester: Some(Requester::Number(68)),
            request_id: None,
            hold,
        })
    }

    #[test]
    fn operations_reach_the_engines_deep_paths() {
        // PUBLISH a key, expire it, and ask for one: the reply is a wait.
        let mut d = Driver::new(SEED);
        d.replay(&[publish(0), expire(), new(None)]).unwrap();
        assert_eq!(d.engine.stats().waits, 1);
        assert_eq!(d.engine.stats().rejected, 0);
        // Step to the refresh time: the next NEW gets the key.
        d.replay(&[Operation::Clock(Clock::Step), new(None)])
            .unwrap();
        assert_eq!(d.engine.stats().assigned, 1);
    }

    #[test]
    fn held_requests_are_followed_to_their_answers() {
        // NEW on platform 0, held for 40 * 250 ms = 10 s.
        let held_new = new(Some(40));
        let mut d = Driver::new(SEED);
        d.replay(&[publish(0), expire(), held_new.clone()]).unwrap();
        assert_eq!((d.engine.stats().holds_total, d.held_followed()), (1, 1));
        // Another key is published: the held request gets it.
        d.replay(&[publish(1)]).unwrap();
        assert_eq!((d.engine.stats().assigned, d.held_followed()), (1, 0));

        let mut d = Driver::new(SEED);
        d.replay(&[publish(0), expire(), held_new]).unwrap();
        // A timer tick at the end of the hold: the request gets a wait.
        d.replay(&[Operation::Clock(Clock::Step)]).unwrap();
        assert_eq!((d.engine.stats().waits, d.held_followed()), (1, 0));
    }
}
