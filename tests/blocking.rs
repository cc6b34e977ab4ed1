//! The blocking clients, from plain threads with no runtime of their own,
//! against `keyman serve` over Redis.

#![cfg(feature = "redis")]

mod support;

use keyman::KeyError;
use keyman::service::blocking::{KeyClient, KeyPublisher};
use std::time::Duration;
use support::{Broker, Serve, client_config};

#[test]
fn blocking_clients_work_from_many_threads() {
    let broker = Broker::redis();
    let _serve = Serve::start(&broker);
    let url = broker.url();
    let admin =
        KeyPublisher::connect(&url, client_config(Duration::from_secs(10))).expect("publisher");
    admin.ping().expect("ping");
    for i in 0..4 {
        admin
            .publish("p", &format!("blocking-key-{i}-abcdefgh"))
            .expect("publish");
    }
    admin.ping().expect("ping");
    assert_eq!(admin.keys("p").expect("keys").len(), 4);

    let client = KeyClient::connect(&url, client_config(Duration::from_secs(10))).expect("client");
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let c = client.clone();
            std::thread::spawn(move || {
                (0..20)
                    .map(|_| c.request("p").expect("a key"))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for t in threads {
        for key in t.join().expect("thread") {
            assert!(key.starts_with("blocking-key-"));
        }
    }
    let key = client.request("p").expect("a key");
    let other = client.invalidate("p", &key).expect("another key");
    assert_ne!(other, key);
    assert_eq!(admin.invalid_keys("p").expect("invalid"), vec![key]);
    assert_eq!(
        client.request_within("nope", Duration::from_secs(1)),
        Err(KeyError::UnknownPlatform("nope".into()))
    );
    admin.shutdown().expect("shutdown");
}
