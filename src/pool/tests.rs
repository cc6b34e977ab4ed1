use super::choice::uniform_index;
use super::*;
use crate::rng::SplitMix64;

fn t(secs: u64) -> Timestamp {
    Timestamp::from_secs(secs)
}

#[test]
fn assign_answers_each_outcome() {
    let mut pool = KeyPool::new();
    let mut rng = SplitMix64::new(1);
    assert_eq!(
        pool.assign("gh", t(0), &mut rng),
        Assignment::UnknownPlatform
    );
    pool.publish("gh", "k1");
    assert_eq!(pool.assign("gh", t(0), &mut rng), Assignment::Key("k1"));
    assert_eq!(pool.expire("gh", "k1", t(100), t(0)), Expired::Expired);
    assert_eq!(
        pool.assign("gh", t(50), &mut rng),
        Assignment::Wait { refresh_at: t(100) }
    );
    assert_eq!(pool.assign("gh", t(100), &mut rng), Assignment::Key("k1"));
    assert_eq!(
        pool.invalidate("gh", "k1", t(100)),
        Invalidated::Invalidated
    );
    assert_eq!(pool.assign("gh", t(200), &mut rng), Assignment::NoKeys);
    pool.check_consistency().unwrap();
}

#[test]
fn publish_is_idempotent_and_revives_invalid_keys() {
    let mut pool = KeyPool::new();
    assert_eq!(pool.publish("gh", "k"), Published::Added);
    assert_eq!(pool.publish("gh", "k"), Published::Unchanged);
    assert_eq!(pool.keys("gh", t(0)).unwrap(), vec!["k".to_string()]);
    pool.invalidate("gh", "k", t(0));
    assert_eq!(pool.invalid_keys("gh").unwrap(), vec!["k".to_string()]);
    assert!(pool.keys("gh", t(0)).unwrap().is_empty());
    assert_eq!(pool.publish("gh", "k"), Published::Revived);
    assert!(pool.invalid_keys("gh").unwrap().is_empty());
    assert_eq!(pool.state("gh", "k", t(0)), Some(KeyState::Fresh));
    pool.check_consistency().unwrap();
}

#[test]
fn the_later_refresh_time_wins_and_publish_keeps_an_expired_key_expired() {
    let mut pool = KeyPool::new();
    pool.publish("gh", "k");
    assert_eq!(pool.expire("gh", "k", t(10), t(0)), Expired::Expired);
    assert_eq!(pool.expire("gh", "k", t(5), t(0)), Expired::Unchanged);
    assert_eq!(pool.expire("gh", "k", t(20), t(0)), Expired::Extended);
    assert_eq!(pool.publish("gh", "k"), Published::Unchanged);
    assert_eq!(
        pool.state("gh", "k", t(15)),
        Some(KeyState::Expired { refresh_at: t(20) })
    );
    assert_eq!(pool.next_refresh(), Some(t(20)));
    assert_eq!(pool.refresh_due(t(20)), 1);
    assert_eq!(pool.next_refresh(), None);
    pool.check_consistency().unwrap();
}

#[test]
fn expire_in_the_past_or_of_unknown_keys_changes_nothing() {
    let mut pool = KeyPool::new();
    pool.publish("gh", "k");
    assert_eq!(pool.expire("gh", "k", t(10), t(10)), Expired::Unchanged);
    assert_eq!(pool.expire("gh", "nope", t(20), t(10)), Expired::Unchanged);
    assert_eq!(pool.expire("gl", "k", t(20), t(10)), Expired::Unchanged);
    pool.invalidate("gh", "k", t(10));
    assert_eq!(pool.expire("gh", "k", t(20), t(10)), Expired::Unchanged);
    assert_eq!(pool.state("gh", "k", t(10)), Some(KeyState::Invalid));
}

#[test]
fn unpublish_removes_a_key_in_any_state_and_keeps_the_platform() {
    let mut pool = KeyPool::new();
    for k in ["a", "b", "c"] {
        pool.publish("gh", k);
    }
    pool.expire("gh", "b", t(10), t(0));
    pool.invalidate("gh", "c", t(0));
    assert!(pool.unpublish("gh", "a"));
    assert!(pool.unpublish("gh", "b"));
    assert!(pool.unpublish("gh", "c"));
    assert!(!pool.unpublish("gh", "c"));
    assert!(!pool.unpublish("zz", "c"));
    assert_eq!(pool.counts("gh", t(0)), Some(Counts::default()));
    assert_eq!(pool.platforms().collect::<Vec<_>>(), vec!["gh"]);
    let mut rng = SplitMix64::new(2);
    assert_eq!(pool.assign("gh", t(0), &mut rng), Assignment::NoKeys);
    pool.check_consistency().unwrap();
}

#[test]
fn platforms_are_independent_and_listed_in_publish_order() {
    let mut pool = KeyPool::new();
    pool.publish("github_rest", "k");
    pool.publish("github_graphql", "k");
    pool.publish("github_search", "k");
    pool.expire("github_rest", "k", t(10), t(0));
    assert_eq!(
        pool.state("github_graphql", "k", t(0)),
        Some(KeyState::Fresh)
    );
    assert_eq!(
        pool.platforms().collect::<Vec<_>>(),
        vec!["github_rest", "github_graphql", "github_search"]
    );
}

#[test]
fn round_robin_visits_every_fresh_key_in_turn() {
    let mut pool = KeyPool::with_selection(Selection::RoundRobin);
    for k in ["a", "b", "c"] {
        pool.publish("gh", k);
    }
    let mut rng = SplitMix64::new(3);
    let mut seen = Vec::new();
    for _ in 0..6 {
        if let Assignment::Key(k) = pool.assign("gh", t(0), &mut rng) {
            seen.push(k.to_string());
        }
    }
    assert_eq!(seen, vec!["a", "b", "c", "a", "b", "c"]);
}

#[test]
fn a_snapshot_restores_every_state_and_the_platform_order() {
    let mut pool = KeyPool::new();
    for k in ["a", "b", "c", "d"] {
        pool.publish("gh", k);
    }
    pool.publish("gl", "x");
    pool.unpublish("gl", "x");
    pool.expire("gh", "b", t(10), t(0));
    pool.expire("gh", "c", t(20), t(0));
    pool.invalidate("gh", "d", t(0));
    let snap = pool.snapshot();
    let json = serde_json::to_string(&snap).unwrap();
    let back: PoolSnapshot = serde_json::from_str(&json).unwrap();
    let mut restored = KeyPool::from_snapshot(&back, Selection::Uniform);
    restored.check_consistency().unwrap();
    assert_eq!(restored.platforms().collect::<Vec<_>>(), vec!["gh", "gl"]);
    for k in ["a", "b", "c", "d"] {
        assert_eq!(
            restored.state("gh", k, t(5)),
            pool.state("gh", k, t(5)),
            "{k}"
        );
    }
    assert_eq!(restored.counts("gl", t(5)), Some(Counts::default()));
    assert_eq!(restored.next_refresh(), Some(t(10)));
    assert_eq!(restored.snapshot(), snap);
}

#[test]
fn uniform_index_stays_in_range() {
    for len in [1usize, 2, 3, 1000] {
        assert_eq!(uniform_index(0, len), 0);
        assert_eq!(uniform_index(u64::MAX, len), len - 1);
    }
}
