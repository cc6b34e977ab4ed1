//! Scenarios across a restart: state kept, and a standby taking over.

use super::*;

/// Keys and their states survive a restart of the orchestrator: after a
/// SHUTDOWN, and after a crash once the change had time to be saved.
/// `--no-state` starts empty, as Augur's orchestrator does.
pub async fn state_survives_restart(broker: Broker) {
    use keyman::protocol::DEFAULT_ANNOUNCE;
    let (a, b, c) = (
        "ghp_state_a_0123456789abcdefghijklmn",
        "ghp_state_b_0123456789abcdefghijklmn",
        "ghp_state_c_0123456789abcdefghijklmn",
    );
    let mut serve = Serve::start(&broker);
    let bus = broker.bus().await;
    let admin = ready_admin(bus.clone()).await;
    for k in [a, b, c] {
        admin.publish("github_rest", k).await.expect("publish");
    }
    admin.ping().await.expect("ping");
    let worker = KeyClient::connect(bus.clone(), client_config(Duration::from_secs(5)))
        .await
        .expect("client");
    let reset = keyman::Timestamp::from_secs(keyman::service::wall_clock().as_secs() + 120);
    worker
        .expire("github_rest", b, reset)
        .await
        .expect("expire");
    worker
        .invalidate("github_rest", c)
        .await
        .expect("invalidate");
    admin.shutdown().await.expect("shutdown");
    assert!(serve.wait_exit(WAIT).expect("exits").success());

    let serve = Serve::start(&broker);
    let admin = ready_admin(bus.clone()).await;
    let status = admin.status().await.expect("status");
    assert_eq!(status.len(), 1, "{status:?}");
    let s = &status[0];
    assert_eq!((s.fresh, s.expired, s.invalid), (1, 1, 1), "{status:?}");
    assert_eq!(s.next_refresh, Some(reset.as_secs()));
    assert_eq!(
        admin.invalid_keys("github_rest").await.expect("invalid"),
        vec![c.to_string()]
    );
    assert_eq!(worker.request("github_rest").await.expect("a key"), a);

    // A crash loses nothing that had time to be saved: wait until the store has
    // the new key, then kill the orchestrator without warning.
    let d = "ghp_state_d_0123456789abcdefghijklmn";
    admin.publish("github_rest", d).await.expect("publish");
    admin.ping().await.expect("ping");
    let (_, store) = keyman::service::connect_url_with_store(&broker.url(), DEFAULT_ANNOUNCE)
        .await
        .expect("store");
    let until = Instant::now() + WAIT;
    loop {
        let saved = store.load(None).await.expect("load").unwrap_or_default();
        if saved
            .values()
            .any(|v| String::from_utf8_lossy(v).contains(d))
        {
            break;
        }
        assert!(Instant::now() < until, "the new key was never saved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(serve); // SIGKILL
    let _serve = Serve::start(&broker);
    let admin = ready_admin(bus.clone()).await;
    let mut keys = admin.keys("github_rest").await.expect("keys");
    keys.sort();
    assert_eq!(keys, vec![a.to_string(), b.to_string(), d.to_string()]);

    // --no-state: nothing is loaded.
    admin.shutdown().await.expect("shutdown");
    let _fresh = Serve::start_with(&broker, &["--no-state"]);
    let admin = ready_admin(bus.clone()).await;
    assert_eq!(
        admin.platforms().await.expect("platforms"),
        Vec::<String>::new()
    );
}

/// What `keyman serve --standby` logs when it takes the lease and serves.
const SERVING: &str = "took the lease; serving";

/// Two `keyman serve --standby --lease-ttl 1` on one broker: only the one
/// holding the lease answers; when it is killed the other takes over within
/// a few seconds, with the keys and states the first saved. SHUTDOWN stops
/// the serving instance only: a standby then takes over.
pub async fn standby_takes_over(broker: Broker) {
    use keyman::pool::PoolSnapshot;
    use keyman::protocol::DEFAULT_ANNOUNCE;
    let standby = ["--standby", "--lease-ttl", "1"];
    let (a, b, c) = (
        "ghp_standby_a_0123456789abcdefghijkl",
        "ghp_standby_b_0123456789abcdefghijkl",
        "ghp_standby_c_0123456789abcdefghijkl",
    );
    let mut serves = vec![
        Serve::start_with(&broker, &standby),
        Serve::start_with(&broker, &standby),
    ];
    let bus = broker.bus().await;
    let admin = KeyPublisher::connect(bus.clone(), client_config(Duration::from_secs(20)))
        .await
        .expect("connect publisher");
    if let Err(e) = admin.ping().await {
        let broker_dir = match &broker {
            Broker::Redis(s) => s.dir().to_path_buf(),
            Broker::Nats(s) => s.dir().to_path_buf(),
        };
        panic!(
            "no orchestrator answers: {e}\n{}\n---\n{}\n--- broker:\n{}",
            serves[0].log(),
            serves[1].log(),
            std::fs::read_to_string(broker_dir.join("server.log")).unwrap_or_default()
        );
    }

    // Exactly one serves; the other stands by.
    let until = Instant::now() + WAIT;
    let leader = loop {
        let logs: Vec<String> = serves.iter().map(Serve::log).collect();
        let serving: Vec<usize> = (0..2).filter(|&i| logs[i].contains(SERVING)).collect();
        if let [leader] = serving[..]
            && logs[1 - leader].contains("standing by")
        {
            break leader;
        }
        assert!(
            Instant::now() < until,
            "not one leader and one standby:\n{}\n---\n{}",
            logs[0],
            logs[1]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(!serves[1 - leader].log().contains("orchestrator ready"));

    for k in [a, b, c] {
        admin.publish("github_rest", k).await.expect("publish");
    }
    let worker = KeyClient::connect(bus.clone(), client_config(Duration::from_secs(1)))
        .await
        .expect("client");
    let reset = keyman::Timestamp::from_secs(keyman::service::wall_clock().as_secs() + 120);
    worker
        .expire("github_rest", b, reset)
        .await
        .expect("expire");
    worker
        .invalidate("github_rest", c)
        .await
        .expect("invalidate");

    // A raw NEW, as Augur's workers send it, gets exactly one reply.
    let pid = 5151;
    let mut replies = bus
        .subscribe(&[format!("{REQ}-{pid}")])
        .await
        .expect("subscribe worker replies");
    let new = json!({"key_platform": "github_rest", "type": "NEW", "requester_id": pid});
    bus.publish(REQ, dumps(&new).as_bytes())
        .await
        .expect("publish NEW");
    let reply = next_text(&mut replies, WAIT).await.expect("a reply to NEW");
    assert_eq!(
        serde_json::from_str::<Value>(&reply).expect("JSON"),
        json!({"key": a})
    );
    assert_eq!(
        next_text(&mut replies, Duration::from_millis(500)).await,
        None,
        "only the leader answers"
    );

    // Kill the leader once the store has its changes.
    let (_, store) = keyman::service::connect_url_with_store(&broker.url(), DEFAULT_ANNOUNCE)
        .await
        .expect("store");
    let until = Instant::now() + WAIT;
    loop {
        let saved = store.load(None).await.expect("load").unwrap_or_default();
        let saved: Option<PoolSnapshot> = keyman::pool::decode_records(&saved)
            .ok()
            .map(|d| d.snapshot);
        if saved.is_some_and(|s| {
            s.platforms
                .iter()
                .any(|p| p.invalid == [c] && p.expired.len() == 1 && p.fresh == [a])
        }) {
            break;
        }
        assert!(Instant::now() < until, "the changes were never saved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader_log = serves[leader].log();
    let killed = Instant::now();
    drop(serves.remove(leader)); // SIGKILL
    let mut survivor = serves.remove(0);

    // The standby takes over within a few seconds, with the saved state.
    let took = loop {
        match worker.request("github_rest").await {
            Ok(key) => {
                assert_eq!(key, a, "the only fresh key");
                break killed.elapsed();
            }
            Err(KeyError::Timeout(_) | KeyError::NoOrchestrator(_) | KeyError::Disconnected(_)) => {
                assert!(
                    killed.elapsed() < Duration::from_secs(5),
                    "no takeover within 5 s:\n{}",
                    survivor.log()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(other) => panic!("unexpected error {other}"),
        }
    };
    assert!(took < Duration::from_secs(5), "took {took:?} to take over");
    assert!(survivor.log().contains(SERVING), "{}", survivor.log());
    let status = admin.status().await.expect("status");
    assert_eq!(status.len(), 1, "{status:?}");
    let s = &status[0];
    assert_eq!((s.fresh, s.expired, s.invalid), (1, 1, 1), "{status:?}");
    assert_eq!(s.next_refresh, Some(reset.as_secs()));
    assert_eq!(
        admin.invalid_keys("github_rest").await.expect("invalid"),
        vec![c.to_string()]
    );

    // SHUTDOWN stops the serving instance; a standby started meanwhile takes over.
    let mut third = Serve::start_with(&broker, &standby);
    let until = Instant::now() + WAIT;
    while !third.log().contains("standing by") {
        assert!(Instant::now() < until, "no standby:\n{}", third.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin.shutdown().await.expect("shutdown");
    let status = survivor
        .wait_exit(WAIT)
        .expect("the serving instance exits after SHUTDOWN");
    assert!(status.success(), "exit status {status}: {}", survivor.log());
    if let Err(e) = admin.ping().await {
        panic!("no takeover after SHUTDOWN: {e}\n{}", third.log());
    }
    assert_eq!(
        admin.invalid_keys("github_rest").await.expect("invalid"),
        vec![c.to_string()]
    );
    assert!(third.is_running());
    assert!(third.log().contains(SERVING), "{}", third.log());
    for log in [leader_log, survivor.log(), third.log()] {
        assert!(
            !log.contains(a) && !log.contains(b) && !log.contains(c),
            "a whole key in the log:\n{log}"
        );
    }
}
