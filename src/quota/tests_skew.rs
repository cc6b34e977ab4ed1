//! Reset times on our clock: a skew that whole-second dates cannot tell from
//! none leaves the platform's reset as it is; a measured one shifts it, late.

use super::*;

const P: &str = "github_rest";

fn view_reset(q: &Quotas) -> Option<Timestamp> {
    q.account(P, &Account::Key("k".into()))?
        .view
        .as_ref()?
        .reset
}

/// What a view holds after a report received at `now_ms` of a window that
/// resets at 4 000 s and a `Date` of `date` s (both on the platform's clock).
fn reset_seen(now_ms: u64, date: u64) -> Option<u64> {
    let mut q = Quotas::new();
    let observation = Observation {
        remaining: Some(0),
        limit: Some(5000),
        reset: Some(Timestamp::from_secs(4000)),
        server_date: Some(Timestamp::from_secs(date)),
        ..Observation::default()
    };
    q.report(Timestamp::from_millis(now_ms), P, "k", &observation, None);
    view_reset(&q).map(Timestamp::as_millis)
}

#[test]
fn a_reset_said_with_clocks_that_agree_is_taken_as_said() {
    // Received 0.1 s and 0.9 s into the second the `Date` names: a skew of
    // +0.4 s or -0.4 s as read, none in truth. The reset is the header's, the
    // same a worker's EXPIRE gives, whatever the fraction.
    assert_eq!(reset_seen(1_000_100, 1000), Some(4_000_000));
    assert_eq!(reset_seen(1_000_900, 1000), Some(4_000_000));
}

#[test]
fn a_measured_skew_moves_the_reset_and_errs_late() {
    // The platform's clock 30 s behind ours: its reset comes 30 s later on
    // ours, taken half a second later still.
    assert_eq!(reset_seen(1_030_000, 1000), Some(4_030_000));
    // 2 to 3 s ahead (2.5 s as read, the middle of the `Date`'s second):
    // 2.5 s earlier, taken half a second late.
    assert_eq!(reset_seen(1_000_000, 1002), Some(3_998_000));
}
