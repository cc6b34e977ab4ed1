//! Property tests of the staggered wait hints: Augur-style workers (a
//! `requester_id`, no `request_id`, no hold) ask for a key of a platform whose
//! keys are rate limited until different seconds, at random times. Every
//! `{"wait": n}` names the refresh of a rate-limited key; a lone waiter is told
//! the earliest; with `W` workers waiting and `K` keys limited, none is told a
//! refresh later than that of the `min(W, K)`-th key to refresh.

use keyman::{Engine, EngineConfig, Reply, SplitMix64, Timestamp};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};
use std::collections::BTreeMap;

const REQ: &str = "worker-oath-request";
const START: u64 = 1_767_225_600_000;

/// The keys' refresh times (distinct whole seconds after the start) and the
/// asks: worker, then milliseconds the clock moves before it asks.
#[derive(Clone, Debug)]
struct Crowd {
    refreshes: Vec<u64>,
    asks: Vec<(u8, u16)>,
}

impl Arbitrary for Crowd {
    fn arbitrary(g: &mut Gen) -> Self {
        let keys = 1 + usize::from(u8::arbitrary(g)) % 6;
        let mut refreshes: Vec<u64> = Vec::new();
        while refreshes.len() < keys {
            let s = 1 + u64::from(u8::arbitrary(g)) % 120;
            if !refreshes.contains(&s) {
                refreshes.push(s);
            }
        }
        let asks = (0..usize::from(u8::arbitrary(g)) % 60)
            .map(|_| (u8::arbitrary(g) % 12, u16::arbitrary(g) % 4000))
            .collect();
        Crowd { refreshes, asks }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Self>> {
        let refreshes = self.refreshes.clone();
        Box::new(self.asks.shrink().map(move |asks| Crowd {
            refreshes: refreshes.clone(),
            asks,
        }))
    }
}

fn check(crowd: &Crowd) -> Result<(), String> {
    let mut e = Engine::new(EngineConfig::default(), SplitMix64::new(1));
    let start = Timestamp::from_millis(START);
    for (i, s) in crowd.refreshes.iter().enumerate() {
        let key = format!("ghp_key{i}");
        e.publish(start, "p", &key);
        e.expire(start, "p", &key, Timestamp::from_millis(START + s * 1000));
    }
    // Worker -> the refresh it was told (milliseconds).
    let mut told: BTreeMap<u8, u64> = BTreeMap::new();
    let mut now = START;
    for &(worker, step) in &crowd.asks {
        now += u64::from(step);
        let at = Timestamp::from_millis(now);
        e.handle_timeout(at);
        let msg = format!(r#"{{"type":"NEW","key_platform":"p","requester_id":{worker}}}"#);
        e.handle(at, REQ, msg.as_bytes());
        let tx = e.poll_transmit().ok_or("no answer")?;
        let reply = Reply::decode(&tx.payload, usize::MAX)
            .map_err(|e| e.to_string())?
            .reply;
        let mut limited: Vec<u64> = crowd
            .refreshes
            .iter()
            .map(|s| START + s * 1000)
            .filter(|&t| t > now)
            .collect();
        limited.sort_unstable();
        match reply {
            Reply::Key(_) => {
                told.remove(&worker);
            }
            Reply::Wait(n) => {
                let named = limited
                    .iter()
                    .copied()
                    .find(|&t| (t - now).div_ceil(1000) == n)
                    .ok_or_else(|| format!("wait {n} at {now} names no refresh of {limited:?}"))?;
                let waiting = 1 + told
                    .iter()
                    .filter(|&(w, &t)| *w != worker && t > now)
                    .count();
                let last = limited[waiting.min(limited.len()) - 1];
                if named > last {
                    return Err(format!(
                        "{waiting} waiting, told {named}, later than {last} ({limited:?})"
                    ));
                }
                if waiting == 1 && named != limited[0] {
                    return Err(format!("a lone waiter told {named}, not {}", limited[0]));
                }
                told.insert(worker, named);
            }
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    Ok(())
}

#[test]
fn wait_hints_name_a_refresh_and_spread_a_crowd_over_the_first_keys() {
    fn prop(crowd: Crowd) -> TestResult {
        match check(&crowd) {
            Ok(()) => TestResult::passed(),
            Err(e) => TestResult::error(e),
        }
    }
    QuickCheck::new()
        .tests(500)
        .quickcheck(prop as fn(Crowd) -> TestResult);
}

#[test]
fn a_crowd_asking_at_once_is_spread_one_per_key_first() {
    // Six workers at once, four keys: the first four keys once each, then the
    // first two again.
    let crowd = Crowd {
        refreshes: vec![40, 10, 30, 20],
        asks: (0..6).map(|w| (w, 0)).collect(),
    };
    assert_eq!(check(&crowd), Ok(()));
    let mut e = Engine::new(EngineConfig::default(), SplitMix64::new(1));
    let start = Timestamp::from_millis(START);
    for (i, s) in crowd.refreshes.iter().enumerate() {
        let key = format!("ghp_key{i}");
        e.publish(start, "p", &key);
        e.expire(start, "p", &key, Timestamp::from_millis(START + s * 1000));
    }
    let hints: Vec<Reply> = (0..6)
        .map(|w| {
            let msg = format!(r#"{{"type":"NEW","key_platform":"p","requester_id":{w}}}"#);
            e.handle(start, REQ, msg.as_bytes());
            let tx = e.poll_transmit().expect("an answer");
            Reply::decode(&tx.payload, usize::MAX)
                .expect("a reply")
                .reply
        })
        .collect();
    assert_eq!(hints, [10, 20, 30, 40, 10, 20].map(Reply::Wait));
}
