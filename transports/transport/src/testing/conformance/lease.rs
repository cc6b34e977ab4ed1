//! The behaviour every [`Lease`] must show.

use super::EVENT_TIMEOUT;
use crate::Lease;
use std::time::{Duration, Instant};

/// The behaviour every [`Lease`] must show. `first` and `second` are two
/// handles on the same lease (preferably over separate connections), free when
/// this is called and free again when it returns. Takes a few seconds: it
/// waits for the lease to expire.
pub async fn lease(first: &dyn Lease, second: &dyn Lease) {
    let ttl = Duration::from_millis(600);
    let (one, two) = ("holder-one", "holder-two");
    let acquire = async |lease: &dyn Lease, holder: &str| {
        lease
            .try_acquire(holder, ttl)
            .await
            .unwrap_or_else(|err| panic!("try_acquire on {} failed: {err}", lease.describe()))
    };
    // Two holders racing for the free lease: exactly one wins.
    let (won_one, won_two) = tokio::join!(acquire(first, one), acquire(second, two));
    assert!(
        won_one != won_two,
        "exactly one of two racing holders takes a free lease (one: {won_one}, two: {won_two})"
    );
    let (winner, winner_handle) = if won_one { (one, first) } else { (two, second) };
    winner_handle
        .release(winner)
        .await
        .unwrap_or_else(|err| panic!("release failed: {err}"));

    assert!(acquire(first, one).await, "a free lease is taken");
    assert!(
        !acquire(second, two).await,
        "a held lease is refused to another holder"
    );

    // Renewing keeps it past its first time to live.
    let renewing = Instant::now();
    while renewing.elapsed() < ttl * 2 {
        tokio::time::sleep(ttl / 4).await;
        assert!(acquire(first, one).await, "the holder renews its lease");
        assert!(
            !acquire(second, two).await,
            "a renewed lease is refused to another holder"
        );
    }

    // Release frees it at once, and only for its holder.
    second
        .release(two)
        .await
        .unwrap_or_else(|err| panic!("release failed: {err}"));
    assert!(
        !acquire(second, two).await,
        "releasing a lease someone else holds does nothing"
    );
    first
        .release(one)
        .await
        .unwrap_or_else(|err| panic!("release failed: {err}"));
    assert!(
        acquire(second, two).await,
        "a released lease is taken at once"
    );

    // Expiry: once `two` stops renewing, `one` takes it after the time to live.
    let taken = Instant::now();
    assert!(
        !acquire(first, one).await,
        "a fresh lease is refused to others"
    );
    while !acquire(first, one).await {
        assert!(
            taken.elapsed() < ttl + EVENT_TIMEOUT,
            "an expired lease was never taken over"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        taken.elapsed() >= ttl / 2,
        "the lease was taken over after {:?}, before its time to live of {ttl:?}",
        taken.elapsed()
    );
    assert!(!acquire(second, two).await, "the new holder has it");
    first
        .release(one)
        .await
        .unwrap_or_else(|err| panic!("release failed: {err}"));
}
