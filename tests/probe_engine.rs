//! Probes in the pure core, in virtual time: what a platform's answers to the
//! engine's probes do to the keys Augur's workers get. The platform here is a
//! small model ([`World`]) that answers each probe as GitHub's `/rate_limit`
//! would; the engine is driven by the harness's driver (invariants checked
//! after every input).

use keyman::engine::{Event, ProbeEvent};
use keyman::harness::{Driver, START_MILLIS};
use keyman::probe::{
    ProbeAnswer, ProbeConfig, ProbeFacts, ProbeOutcome, ProbeRequest, Provider, ResourceQuota,
};
use keyman::quota::QuotaConfig;
use keyman::{Engine, EngineConfig, Reply, SplitMix64, Timestamp};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const ANN: &str = "augur-oauth-announce";
const REQ: &str = "worker-oath-request";
const REVOKED: &str = "ghp_revokedTokenRRRRRRRRRRRRRRRRRRRRRRRR";
const GOOD_A: &str = "ghp_goodTokenAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const GOOD_B: &str = "ghp_goodTokenBBBBBBBBBBBBBBBBBBBBBBBBBBB";

fn secs(s: u64) -> Timestamp {
    Timestamp::from_millis(START_MILLIS + s * 1000)
}

/// Augur's PUBLISH, byte for byte as its `KeyPublisher.publish` sends it.
fn publish(key: &str, platform: &str) -> Vec<u8> {
    format!(r#"{{"type": "PUBLISH", "key_str": "{key}", "key_platform": "{platform}"}}"#)
        .into_bytes()
}

/// Augur's NEW from worker `id`.
fn new(id: u64, platform: &str) -> Vec<u8> {
    format!(r#"{{"type": "NEW", "key_platform": "{platform}", "requester_id": {id}}}"#).into_bytes()
}

/// What the modelled platform knows: revoked tokens, the quota of each token
/// (remaining, reset in seconds since the start, on the platform's clock),
/// logins, expiry, and how far its clock is off ours.
#[derive(Default)]
struct World {
    revoked: BTreeSet<String>,
    quota: BTreeMap<String, (u64, u64)>,
    login: BTreeMap<String, String>,
    expires: BTreeMap<String, Timestamp>,
    skew_secs: i64,
    /// Probes answered, per key.
    asked: BTreeMap<String, usize>,
}

impl World {
    fn platform_time(&self, now: Timestamp) -> Timestamp {
        let ms = now.as_millis() as i64 + self.skew_secs * 1000;
        Timestamp::from_secs((ms / 1000) as u64)
    }

    fn answer(&mut self, now: Timestamp, probe: &ProbeRequest) -> ProbeAnswer {
        *self.asked.entry(probe.key.clone()).or_default() += 1;
        let outcome = if self.revoked.contains(&probe.key) {
            ProbeOutcome::Unauthorized
        } else {
            let (remaining, reset) = self.quota.get(&probe.key).copied().unwrap_or((5000, 3600));
            let reset = Timestamp::from_secs(
                (START_MILLIS / 1000).saturating_add_signed(self.skew_secs) + reset,
            );
            ProbeOutcome::Valid(ProbeFacts {
                server_date: Some(self.platform_time(now)),
                resources: ["core", "graphql", "search"]
                    .into_iter()
                    .map(|r| ResourceQuota {
                        resource: r.to_string(),
                        limit: Some(5000),
                        remaining: Some(remaining),
                        reset: Some(reset),
                    })
                    .collect(),
                account: probe
                    .want_account
                    .then(|| self.login.get(&probe.key).cloned())
                    .flatten(),
                expires_at: self.expires.get(&probe.key).copied(),
            })
        };
        ProbeAnswer {
            id: probe.id,
            outcome,
        }
    }
}

fn probing(config: ProbeConfig, quota: QuotaConfig) -> Driver {
    let engine = Engine::new(
        EngineConfig {
            probe: Some(config),
            quota,
            // Wait hints for the earliest refresh, as the assertions read them.
            stagger_waits: false,
            ..EngineConfig::default()
        },
        SplitMix64::new(5),
    );
    Driver::with_engine(engine, secs(0)).checked(true)
}

fn default_probing() -> Driver {
    probing(ProbeConfig::default(), QuotaConfig::default())
}

/// Answers every probe given out so far, at the driver's time.
fn answer_all(d: &mut Driver, world: &mut World) -> usize {
    let probes = d.take_probes();
    for p in &probes {
        let answer = world.answer(d.now(), p);
        d.answer_probe(answer).unwrap();
    }
    probes.len()
}

/// A NEW from `id` and its answer.
fn ask(d: &mut Driver, id: u64, platform: &str) -> Reply {
    d.handle(REQ, &new(id, platform)).unwrap();
    let replies = d.take_replies(&format!("{REQ}-{id}"));
    let last = replies.last().expect("an answer");
    Reply::decode(last, usize::MAX).unwrap().reply
}

fn publish_all(d: &mut Driver, keys: &[&str], platforms: &[&str]) {
    for k in keys {
        for p in platforms {
            d.handle(ANN, &publish(k, p)).unwrap();
        }
    }
}

fn invalid_keys(d: &mut Driver, platform: &str) -> Vec<String> {
    d.engine.invalid_keys(platform).unwrap_or_default()
}

#[test]
fn a_revoked_token_published_is_never_handed_out_and_is_listed_invalid() {
    let mut d = default_probing();
    let mut world = World::default();
    world.revoked.insert(REVOKED.into());
    let platforms = ["github_rest", "github_graphql", "github_search"];
    publish_all(&mut d, &[REVOKED, GOOD_A, GOOD_B], &platforms);
    // Before any answer every key is withheld: a short wait, never a key.
    assert_eq!(ask(&mut d, 1, "github_rest"), Reply::Wait(2));
    let probes = answer_all(&mut d, &mut world);
    assert_eq!(probes, 3, "one probe per token for its three platforms");
    for i in 0..200 {
        for p in platforms {
            match ask(&mut d, 100 + i, p) {
                Reply::Key(k) => assert_ne!(k, REVOKED),
                other => panic!("{other:?}"),
            }
        }
    }
    for p in platforms {
        assert_eq!(invalid_keys(&mut d, p), [REVOKED]);
    }
}

#[test]
fn a_worker_s_invalidate_of_a_good_token_is_confirmed_away_and_of_a_revoked_one_stands() {
    let mut d = default_probing();
    let mut world = World::default();
    publish_all(&mut d, &[GOOD_A], &["github_rest"]);
    answer_all(&mut d, &mut world);
    assert_eq!(ask(&mut d, 1, "github_rest"), Reply::Key(GOOD_A.into()));

    let invalidate = format!(
        r#"{{"type": "INVALIDATE", "key_str": "{GOOD_A}", "key_platform": "github_rest", "requester_id": 1}}"#
    );
    d.set_time(secs(10));
    let out = d.handle(REQ, invalidate.as_bytes()).unwrap();
    assert_eq!(out.probes.len(), 1, "probed at once");
    // Augur's client asks for a new key 0.1 s later: not this one yet.
    assert_eq!(ask(&mut d, 1, "github_rest"), Reply::Wait(2));
    answer_all(&mut d, &mut world);
    assert!(
        d.engine.poll_event().is_none(),
        "events were drained by the driver"
    );
    assert_eq!(ask(&mut d, 1, "github_rest"), Reply::Key(GOOD_A.into()));
    assert!(invalid_keys(&mut d, "github_rest").is_empty());

    // Revoked since: the platform says 401, the key is invalid.
    world.revoked.insert(GOOD_A.into());
    d.set_time(secs(20));
    d.handle(REQ, invalidate.as_bytes()).unwrap();
    answer_all(&mut d, &mut world);
    assert_eq!(invalid_keys(&mut d, "github_rest"), [GOOD_A]);
    assert!(matches!(ask(&mut d, 1, "github_rest"), Reply::Error { .. }));
}

#[test]
fn without_an_answer_a_suspect_key_is_invalid_and_a_new_one_handed_out_after_the_longest_withholding()
 {
    let mut d = default_probing();
    publish_all(&mut d, &[GOOD_A], &["github_rest"]);
    assert_eq!(d.take_probes().len(), 1, "never answered");
    // Withheld in 2 s steps while the probe is in flight…
    d.advance_to(secs(29)).unwrap();
    assert_eq!(ask(&mut d, 1, "github_rest"), Reply::Wait(1));
    // …and handed out after 30 s: the answer timeout fails the probe, its
    // retry is queued, but the longest withholding has passed.
    d.advance_to(secs(30)).unwrap();
    assert_eq!(ask(&mut d, 1, "github_rest"), Reply::Key(GOOD_A.into()));

    let invalidate = format!(
        r#"{{"type": "INVALIDATE", "key_str": "{GOOD_A}", "key_platform": "github_rest", "requester_id": 1}}"#
    );
    d.handle(REQ, invalidate.as_bytes()).unwrap();
    // Its probe goes out after the backoff of the failed one (at 35 s) and is
    // never answered: the key is invalid 30 s after that.
    d.advance_to(secs(64)).unwrap();
    assert!(invalid_keys(&mut d, "github_rest").is_empty());
    assert!(matches!(ask(&mut d, 1, "github_rest"), Reply::Wait(_)));
    d.advance_to(secs(65)).unwrap();
    assert_eq!(invalid_keys(&mut d, "github_rest"), [GOOD_A]);
    let sent: Vec<Timestamp> = d.take_probes_at().into_iter().map(|(t, _)| t).collect();
    assert_eq!(sent, [secs(35)], "an invalid key is not probed again");
}

#[test]
fn a_token_drained_outside_keyman_is_withheld_after_its_next_probe_until_the_platform_s_reset() {
    let cfg = ProbeConfig {
        in_use_interval: Duration::from_secs(10),
        ..ProbeConfig::default()
    };
    let mut d = probing(cfg, QuotaConfig::default());
    let mut world = World::default();
    // The current window resets 600 s after the start.
    world.quota.insert(GOOD_A.into(), (5000, 600));
    world.quota.insert(GOOD_B.into(), (5000, 600));
    publish_all(&mut d, &[GOOD_A, GOOD_B], &["github_rest"]);
    answer_all(&mut d, &mut world);
    // Both are in use.
    let mut seen = BTreeSet::new();
    for i in 0..20 {
        if let Reply::Key(k) = ask(&mut d, i, "github_rest") {
            seen.insert(k);
        }
    }
    assert_eq!(seen.len(), 2);
    // The donor drains A.
    world.quota.insert(GOOD_A.into(), (0, 600));
    d.advance_to(secs(10)).unwrap();
    assert_eq!(
        answer_all(&mut d, &mut world),
        2,
        "keys in use are probed again"
    );
    for i in 0..50 {
        assert_eq!(ask(&mut d, i, "github_rest"), Reply::Key(GOOD_B.into()));
    }
    world.quota.insert(GOOD_A.into(), (5000, 4200));
    d.advance_to(secs(598)).unwrap();
    answer_all(&mut d, &mut world);
    // Until the reset (less the half second by which a whole-second `Date`
    // may be late).
    assert!(matches!(
        d.engine.pool().state("github_rest", GOOD_A, secs(598)),
        Some(keyman::KeyState::Expired { refresh_at })
            if refresh_at >= Timestamp::from_millis(secs(600).as_millis() - 500)
    ));
    d.advance_to(secs(600)).unwrap();
    let seen: BTreeSet<_> = (0..50)
        .filter_map(|i| match ask(&mut d, i, "github_rest") {
            Reply::Key(k) => Some(k),
            _ => None,
        })
        .collect();
    assert!(seen.contains(GOOD_A), "back at the platform's reset");
}

#[test]
fn a_token_at_its_floor_is_not_handed_to_augur_s_workers() {
    let quota = QuotaConfig {
        floors: [("github_rest".to_string(), 50)].into(),
        ..QuotaConfig::default()
    };
    let mut d = probing(ProbeConfig::default(), quota);
    let mut world = World::default();
    world.quota.insert(GOOD_A.into(), (40, 1800));
    world.quota.insert(GOOD_B.into(), (51, 1800));
    publish_all(&mut d, &[GOOD_A, GOOD_B], &["github_rest"]);
    answer_all(&mut d, &mut world);
    for i in 0..100 {
        assert_eq!(ask(&mut d, i, "github_rest"), Reply::Key(GOOD_B.into()));
    }
    // What the probe said is in the quota view, as learnt from a probe.
    let account = keyman::Account::Key(GOOD_A.into());
    let state = d.engine.quotas().account("github_rest", &account).unwrap();
    let view = state.view.as_ref().unwrap();
    assert_eq!(
        (view.remaining, view.source),
        (40, keyman::quota::Source::Probe)
    );
}

/// A worker's EXPIRE with the reset header as read (the platform's clock).
fn expire(key: &str, refresh_time: u64) -> Vec<u8> {
    format!(
        r#"{{"type": "EXPIRE", "key_str": "{key}", "key_platform": "github_rest", "refresh_time": {refresh_time}, "requester_id": 1}}"#
    )
    .into_bytes()
}

#[test]
fn behind_a_slow_platform_clock_a_key_refreshes_at_the_platform_s_reset_not_ours() {
    let mut d = default_probing();
    let mut world = World {
        skew_secs: -60,
        ..World::default()
    };
    world.quota.insert(GOOD_A.into(), (5000, 260));
    publish_all(&mut d, &[GOOD_A], &["github_rest"]);
    answer_all(&mut d, &mut world);
    // At 100 s a worker gets a 403 whose reset header says 200 s after the
    // start on the platform's clock: 260 s on ours.
    world.quota.insert(GOOD_A.into(), (0, 260));
    d.set_time(secs(100));
    let header = START_MILLIS / 1000 - 60 + 260;
    d.handle(REQ, &expire(GOOD_A, header)).unwrap();
    // Without probes the key would be fresh at 200 s (its header read as our
    // time); the probe before the refresh finds the window not yet reset.
    d.advance_to(secs(171)).unwrap();
    assert_eq!(answer_all(&mut d, &mut world), 1);
    d.advance_to(secs(201)).unwrap();
    assert!(matches!(ask(&mut d, 1, "github_rest"), Reply::Wait(_)));
    d.advance_to(secs(259)).unwrap();
    assert_eq!(ask(&mut d, 1, "github_rest"), Reply::Wait(1));
    world.quota.insert(GOOD_A.into(), (5000, 3860));
    d.advance_to(secs(261)).unwrap();
    assert_eq!(ask(&mut d, 1, "github_rest"), Reply::Key(GOOD_A.into()));
}

#[test]
fn ahead_of_a_fast_platform_clock_a_key_refreshes_at_the_platform_s_reset_not_ours() {
    let mut d = default_probing();
    let mut world = World {
        skew_secs: 60,
        ..World::default()
    };
    world.quota.insert(GOOD_A.into(), (5000, 200));
    publish_all(&mut d, &[GOOD_A], &["github_rest"]);
    answer_all(&mut d, &mut world);
    // At 100 s a worker gets a 403 whose reset header says 260 s on the
    // platform's clock: 200 s on ours.
    world.quota.insert(GOOD_A.into(), (0, 200));
    d.set_time(secs(100));
    let header = START_MILLIS / 1000 + 60 + 200;
    d.handle(REQ, &expire(GOOD_A, header)).unwrap();
    d.advance_to(secs(200)).unwrap();
    // The platform has reset by now (its clock says 260 s).
    world.quota.insert(GOOD_A.into(), (5000, 3800));
    answer_all(&mut d, &mut world);
    d.advance_to(secs(202)).unwrap();
    answer_all(&mut d, &mut world);
    assert_eq!(
        ask(&mut d, 1, "github_rest"),
        Reply::Key(GOOD_A.into()),
        "handed out at the platform's reset, a minute before ours"
    );
}

#[test]
fn with_probing_off_nothing_is_probed_and_invalidate_is_at_once() {
    let mut d = Driver::new(3);
    publish_all(&mut d, &[GOOD_A], &["github_rest"]);
    let invalidate = format!(
        r#"{{"type": "INVALIDATE", "key_str": "{GOOD_A}", "key_platform": "github_rest", "requester_id": 1}}"#
    );
    d.handle(REQ, invalidate.as_bytes()).unwrap();
    assert!(d.take_probes().is_empty());
    assert_eq!(invalid_keys(&mut d, "github_rest"), [GOOD_A]);
    assert_eq!(d.engine.poll_timeout(), None);
}

#[test]
fn a_token_that_expires_soon_is_warned_about_once_masked_and_counted_in_status() {
    let mut d = default_probing();
    let mut world = World::default();
    world.expires.insert(GOOD_A.into(), secs(3 * 24 * 3600));
    world.expires.insert(GOOD_B.into(), secs(30 * 24 * 3600));
    publish_all(&mut d, &[GOOD_A, GOOD_B], &["github_rest"]);
    let mut warnings = Vec::new();
    for p in d.take_probes() {
        let answer = world.answer(d.now(), &p);
        let out = d.answer_probe(answer).unwrap();
        for e in out.events {
            if let Event::Probe {
                key,
                what: ProbeEvent::Expiring { expires_at },
                ..
            } = e
            {
                warnings.push((key, expires_at));
            }
        }
    }
    assert_eq!(warnings.len(), 1);
    assert!(!warnings[0].0.contains(GOOD_A));
    assert!(warnings[0].0.starts_with("ghp_"));
    assert_eq!(warnings[0].1, secs(3 * 24 * 3600));
    let status = d.engine.status(d.now());
    let rest = status.iter().find(|s| s.platform == "github_rest").unwrap();
    assert_eq!(rest.tokens_expiring, Some(1));
    assert_eq!(rest.token_expires_at, Some(secs(3 * 24 * 3600).as_secs()));
    // The periodic probe says the same: no second warning.
    d.advance_to(secs(901)).unwrap();
    for p in d.take_probes() {
        let answer = world.answer(d.now(), &p);
        let out = d.answer_probe(answer).unwrap();
        assert!(!out.events.iter().any(|e| matches!(
            e,
            Event::Probe {
                what: ProbeEvent::Expiring { .. },
                ..
            }
        )));
    }
}

#[test]
fn tokens_of_one_login_share_an_account_and_expire_together() {
    let mut d = default_probing();
    let mut world = World::default();
    world.login.insert(GOOD_A.into(), "octocat".into());
    world.login.insert(GOOD_B.into(), "octocat".into());
    publish_all(&mut d, &[GOOD_A, GOOD_B], &["github_rest"]);
    answer_all(&mut d, &mut world);
    assert_eq!(
        d.engine.quotas().account_of("github_rest", GOOD_A),
        keyman::Account::Named("octocat".into())
    );
    d.handle(REQ, &expire(GOOD_A, START_MILLIS / 1000 + 600))
        .unwrap();
    assert_eq!(ask(&mut d, 1, "github_rest"), Reply::Wait(600));
}

#[test]
fn a_throttled_probe_keeps_a_new_key_withheld_and_is_tried_again_later() {
    let mut d = default_probing();
    let mut world = World::default();
    publish_all(&mut d, &[GOOD_A], &["github_rest"]);
    let p = d.take_probes().pop().unwrap();
    let out = d
        .answer_probe(ProbeAnswer {
            id: p.id,
            outcome: ProbeOutcome::Throttled {
                retry_after: Some(Duration::from_secs(10)),
            },
        })
        .unwrap();
    assert!(out.events.iter().any(|e| matches!(
        e,
        Event::Probe {
            provider: Provider::GitHub,
            what: ProbeEvent::Throttled { .. },
            ..
        }
    )));
    d.advance_to(secs(9)).unwrap();
    assert!(d.take_probes().is_empty());
    assert!(matches!(ask(&mut d, 1, "github_rest"), Reply::Wait(_)));
    d.advance_to(secs(10)).unwrap();
    assert_eq!(answer_all(&mut d, &mut world), 1);
    assert_eq!(ask(&mut d, 1, "github_rest"), Reply::Key(GOOD_A.into()));
}

#[test]
fn a_platform_without_a_provider_is_not_probed() {
    let mut d = default_probing();
    publish_all(&mut d, &[GOOD_A], &["some_api"]);
    assert!(d.take_probes().is_empty());
    assert_eq!(ask(&mut d, 1, "some_api"), Reply::Key(GOOD_A.into()));
}

#[test]
fn a_pool_of_a_thousand_tokens_is_probed_within_the_rate_cap() {
    let cfg = ProbeConfig {
        max_per_second: 20,
        ..ProbeConfig::default()
    };
    let mut d = probing(cfg, QuotaConfig::default()).checked(false);
    let mut world = World::default();
    let keys: Vec<String> = (0..1000)
        .map(|i| format!("ghp_rateKey{i:04}{}", "x".repeat(30)))
        .collect();
    for k in &keys {
        d.handle(ANN, &publish(k, "github_rest")).unwrap();
    }
    let mut sent = Vec::new();
    while world.asked.len() < 1000 {
        for (at, p) in d.take_probes_at() {
            sent.push(at);
            let answer = world.answer(d.now(), &p);
            d.answer_probe(answer).unwrap();
        }
        let fresh = d.engine.counts(d.now(), "github_rest").unwrap().fresh;
        assert_eq!(
            fresh,
            world.asked.len(),
            "only the tokens probed are handed out"
        );
        assert!(d.step().unwrap(), "probes are due");
    }
    for (i, t) in sent.iter().enumerate() {
        let n = sent[i..]
            .iter()
            .take_while(|u| u.as_millis() < t.as_millis() + 1000)
            .count();
        assert!(n <= 20, "{n} probes within a second of {t}");
    }
    let took = sent[sent.len() - 1].saturating_since(sent[0]);
    assert!(took >= Duration::from_millis(49_000), "{took:?}");
    // Every token was withheld until its probe answered, however long it
    // waited for the rate cap, and handed out then.
    let counts = d.engine.counts(d.now(), "github_rest").unwrap();
    assert_eq!(counts.fresh, 1000);
}
