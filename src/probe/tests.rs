use super::*;
use std::collections::HashMap;

const T0: u64 = 1_700_000_000_000;

fn at(ms: u64) -> Timestamp {
    Timestamp::from_millis(T0 + ms)
}

fn config() -> ProbeConfig {
    ProbeConfig {
        max_per_second: 5,
        max_in_flight: 1_000,
        ..ProbeConfig::default()
    }
}

fn key(i: usize) -> String {
    format!("ghp_scheduleKey{i:05}xxxxxxxxxxxxxxxxxxxxx")
}

/// Gives out every due probe at `now`.
fn take_all(s: &mut ProbeSchedule, now: Timestamp) -> Vec<ProbeRequest> {
    std::iter::from_fn(|| s.next(now)).collect()
}

#[test]
fn a_thousand_new_keys_are_probed_no_faster_than_the_cap() {
    let mut s = ProbeSchedule::new(&config());
    for i in 0..1_000 {
        assert!(s.track(at(0), Provider::GitHub, &key(i), "github_rest", "core"));
    }
    let mut now = at(0);
    let mut sent = Vec::new();
    while sent.len() < 1_000 {
        for p in take_all(&mut s, now) {
            sent.push(now);
            let (provider, k) = s.take_answer(p.id).unwrap();
            s.settle(now, provider, &k, Settled::Answered);
        }
        now = s.next_wake().expect("more to probe").max(now);
    }
    for (i, t) in sent.iter().enumerate() {
        let in_window = sent[i..]
            .iter()
            .take_while(|u| u.as_millis() < t.as_millis() + 1_000)
            .count();
        assert!(in_window <= 5, "{in_window} probes within a second of {t}");
    }
    let took = sent[999].saturating_since(sent[0]);
    assert_eq!(
        took,
        Duration::from_millis(199_000),
        "5 a second, no slower"
    );
}

#[test]
fn a_key_is_not_probed_again_within_its_minimum_interval() {
    let mut s = ProbeSchedule::new(&config());
    s.track(at(0), Provider::GitHub, &key(1), "github_rest", "core");
    let p = s.next(at(0)).unwrap();
    s.take_answer(p.id);
    s.settle(at(100), Provider::GitHub, &key(1), Settled::Answered);
    s.want(at(200), Provider::GitHub, &key(1), at(200), Urgency::Urgent);
    assert_eq!(s.next(at(4_999)), None);
    assert_eq!(s.next_wake(), Some(at(5_000)));
    assert!(s.next(at(5_000)).is_some());
}

#[test]
fn failures_back_off_doubling_and_an_answer_resets_them() {
    let mut s = ProbeSchedule::new(&config());
    let k = key(2);
    s.track(at(0), Provider::GitHub, &k, "github_rest", "core");
    let mut now = at(0);
    let mut gaps = Vec::new();
    for _ in 0..4 {
        let p = s.next(now).expect("due");
        s.take_answer(p.id);
        s.settle(now, Provider::GitHub, &k, Settled::Failed);
        let next = s.next_wake().unwrap();
        assert_eq!(s.next(Timestamp::from_millis(next.as_millis() - 1)), None);
        gaps.push(next.saturating_since(now).as_secs());
        now = next;
    }
    assert_eq!(gaps, [5, 10, 20, 40]);
    let p = s.next(now).unwrap();
    s.take_answer(p.id);
    s.settle(now, Provider::GitHub, &k, Settled::Answered);
    // The next one is the idle one: 15 minutes.
    assert_eq!(
        s.next_wake(),
        Some(now.saturating_add(Duration::from_secs(900)))
    );
}

#[test]
fn a_throttled_provider_is_paused_and_the_other_is_not() {
    let mut s = ProbeSchedule::new(&config());
    s.track(at(0), Provider::GitHub, &key(1), "github_rest", "core");
    let p = s.next(at(0)).unwrap();
    s.take_answer(p.id);
    s.settle(
        at(0),
        Provider::GitHub,
        &key(1),
        Settled::Throttled {
            retry_after: Some(Duration::from_secs(60)),
        },
    );
    s.track(at(10), Provider::GitHub, &key(2), "github_rest", "core");
    s.track(at(10), Provider::GitLab, &key(3), "gitlab_rest", "rest");
    let out = take_all(&mut s, at(10));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].provider, Provider::GitLab);
    assert!(take_all(&mut s, at(59_999)).is_empty());
    let out = take_all(&mut s, at(60_000));
    assert_eq!(out.len(), 2, "both GitHub keys after the pause");
}

#[test]
fn no_more_than_the_cap_wait_for_answers_and_late_ones_count_as_failed() {
    let cfg = ProbeConfig {
        max_per_second: 100,
        max_in_flight: 3,
        ..ProbeConfig::default()
    };
    let mut s = ProbeSchedule::new(&cfg);
    for i in 0..10 {
        s.track(at(0), Provider::GitHub, &key(i), "github_rest", "core");
    }
    assert_eq!(take_all(&mut s, at(0)).len(), 3);
    assert_eq!(s.in_flight(), 3);
    assert_eq!(s.next_wake(), Some(at(30_000)), "the answer deadline");
    let late = s.overdue(at(30_000));
    assert_eq!(late.len(), 3);
    for (provider, k) in late {
        s.settle(at(30_000), provider, &k, Settled::Failed);
    }
    assert_eq!(take_all(&mut s, at(30_000)).len(), 3);
}

#[test]
fn a_key_in_use_is_probed_at_the_in_use_interval() {
    let mut s = ProbeSchedule::new(&config());
    let k = key(4);
    s.track(at(0), Provider::GitHub, &k, "github_rest", "core");
    let p = s.next(at(0)).unwrap();
    s.take_answer(p.id);
    s.settle(at(0), Provider::GitHub, &k, Settled::Answered);
    assert_eq!(s.next_wake(), Some(at(900_000)));
    s.mark_used(at(1_000), Provider::GitHub, &k);
    assert_eq!(s.next_wake(), Some(at(60_000)));
    let p = s.next(at(60_000)).unwrap();
    s.take_answer(p.id);
    s.settle(at(60_000), Provider::GitHub, &k, Settled::Answered);
    // Not used since: idle again.
    assert_eq!(s.next_wake(), Some(at(960_000)));
}

#[test]
fn one_probe_answers_for_every_platform_of_a_token_and_forgotten_keys_are_ignored() {
    let mut s = ProbeSchedule::new(&config());
    let k = key(5);
    s.track(at(0), Provider::GitHub, &k, "github_rest", "core");
    assert!(!s.track(at(0), Provider::GitHub, &k, "github_search", "search"));
    let p = s.next(at(0)).unwrap();
    assert_eq!(
        p.platforms,
        [
            ("github_rest".to_string(), "core".to_string()),
            ("github_search".to_string(), "search".to_string())
        ]
    );
    assert!(p.want_account);
    assert!(s.next(at(0)).is_none(), "one probe per token");
    s.untrack(Provider::GitHub, &k, "github_rest");
    s.untrack(Provider::GitHub, &k, "github_search");
    assert_eq!(s.take_answer(p.id), None);
    assert!(s.is_empty());
    assert_eq!(s.next_wake(), None);
}

#[test]
fn a_request_never_shows_its_key_in_debug() {
    let mut s = ProbeSchedule::new(&config());
    let k = key(6);
    s.track(at(0), Provider::GitHub, &k, "github_rest", "core");
    let p = s.next(at(0)).unwrap();
    assert!(!format!("{p:?}").contains(&k));
}

#[test]
fn a_clock_stepped_back_lets_no_more_probes_through() {
    let mut s = ProbeSchedule::new(&config());
    let mut count: HashMap<u64, usize> = HashMap::new();
    for i in 0..20 {
        s.track(at(0), Provider::GitHub, &key(i), "github_rest", "core");
    }
    for (step, now) in [at(10_000), at(0), at(500), at(10_400)]
        .into_iter()
        .enumerate()
    {
        let n = take_all(&mut s, now).len();
        *count.entry(step as u64).or_default() += n;
    }
    assert_eq!(count[&0], 5);
    assert_eq!(count[&1] + count[&2] + count[&3], 0);
    assert_eq!(take_all(&mut s, at(11_000)).len(), 5);
}

#[test]
fn a_key_published_again_keeps_its_failures_and_backoff() {
    let mut s = ProbeSchedule::new(&config());
    let k = key(3);
    s.track(at(0), Provider::GitHub, &k, "github_rest", "core");
    let p = s.next(at(0)).expect("due");
    s.take_answer(p.id);
    s.settle(at(0), Provider::GitHub, &k, Settled::Failed);
    // Unpublished and published again (to another platform) during its
    // 5 s backoff: it is not probed before the backoff ends...
    s.untrack(Provider::GitHub, &k, "github_rest");
    s.track(at(1_000), Provider::GitHub, &k, "github_graphql", "graphql");
    assert_eq!(s.next(at(4_999)), None);
    let p = s.next(at(5_000)).expect("due after the backoff");
    s.take_answer(p.id);
    // ...and a second failure backs off twice as long, as if it had stayed.
    s.settle(at(5_000), Provider::GitHub, &k, Settled::Failed);
    assert_eq!(s.next_wake(), Some(at(15_000)));
}
