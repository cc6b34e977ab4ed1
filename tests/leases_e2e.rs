//! Leases over a real broker and a real `keyman serve`: a lease never
//! returned ends at its `lease_until`, counted as fully used, and the key's
//! account is then withheld as spent; what the workers were lent shows in
//! STATUS meanwhile.

#![cfg(feature = "tokio")]

mod support;

use keyman::service::{KeyAdmin, KeyClient, KeySource};
use std::time::{Duration, Instant};
use support::{Broker, Serve, client_config, ready_admin};

const P: &str = "github_rest";
const KEY: &str = "ghp_leasedkey00000000000000000000000000";

async fn a_lease_never_returned_ends_at_its_deadline(broker: Broker) {
    let _serve = Serve::start_with(&broker, &["--quota-lease-duration", "2"]);
    let bus = broker.bus().await;
    let admin = ready_admin(bus.clone()).await;
    admin
        .publish_account(P, KEY, None, Some(10))
        .await
        .expect("publish with a limit");
    admin.ping().await.expect("ping");
    let worker = KeyClient::connect(bus, client_config(Duration::from_secs(10)))
        .await
        .expect("client");

    let started = Instant::now();
    let leased = worker.lease(P, 10).await.expect("a lease");
    let terms = *leased.lease().expect("calls are lent");
    assert_eq!(terms.calls, 10);
    let now = keyman::service::wall_clock().as_secs();
    assert!(
        terms.until.as_secs() > now && terms.until.as_secs() <= now + 3,
        "lease_until {} is not about 2 s after {now}",
        terms.until.as_secs()
    );
    let status = admin.status().await.expect("status");
    assert_eq!(status[0].leased, Some(10), "{status:?}");
    assert_eq!(status[0].remaining, Some(0), "{status:?}");

    // The worker never reports. Once the lease's deadline has passed, it has
    // ended counted as fully used: nothing is lent, nothing is left, and the
    // key is withheld as a spent one.
    let status = loop {
        let status = admin.status().await.expect("status");
        if status[0].leased.is_none() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the lease did not end: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(started.elapsed() >= Duration::from_secs(1), "ended early");
    assert_eq!(status[0].remaining, Some(0), "{status:?}");
    assert_eq!((status[0].fresh, status[0].expired), (0, 1), "{status:?}");
    let short = Duration::from_millis(500);
    assert!(
        matches!(
            worker.lease_within(P, 1, short).await,
            Err(keyman::KeyError::Timeout(_))
        ),
        "a spent key lent a call"
    );
    drop(leased);
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_redis_a_lease_never_returned_ends_at_its_deadline() {
    a_lease_never_returned_ends_at_its_deadline(Broker::redis()).await;
}

#[cfg(feature = "nats")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_nats_a_lease_never_returned_ends_at_its_deadline() {
    a_lease_never_returned_ends_at_its_deadline(Broker::nats()).await;
}
