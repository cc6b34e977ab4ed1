//! `rediss://` against a redis-server that speaks TLS on a port of its own,
//! with a certificate of a throwaway CA that this process trusts through
//! `SSL_CERT_FILE` (read by the system root store of both the Redis client
//! and keyman's subscription connections). Needs `openssl` to make the
//! certificates.

#![cfg(feature = "tls")]

use keyman_redis::{RedisBus, RedisOptions};
use keyman_transport::testing::{
    QUICK_BACKOFF, QUICK_TIMEOUT, RedisServer, conformance, next_payload, subscribe_to, unused_port,
};
use keyman_transport::{Bus, ConnectionOptions};
use std::path::Path;
use std::process::Command;

/// Runs `openssl` with `args` in `dir`; panics with its output if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| panic!("this test needs openssl to make certificates: {err}"));
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 signed by it
/// (`server.pem`, `server.key`), in `dir`.
fn make_certificates(dir: &Path) {
    let subject_ca = "/CN=keyman test CA";
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
            "-days", "2", "-subj", subject_ca,
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("write the extension file");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
}

#[test]
fn publish_subscribe_and_prefixes_over_tls() {
    let certificates = tempfile::tempdir().expect("temp dir");
    make_certificates(certificates.path());
    let file = |name: &str| certificates.path().join(name).display().to_string();
    // SAFETY: set before any thread of this test binary (its only test)
    // reads the environment; the runtime starts below.
    unsafe { std::env::set_var("SSL_CERT_FILE", file("ca.pem")) };

    let tls_port = unused_port().to_string();
    let server = RedisServer::start_with_args(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &file("server.pem"),
        "--tls-key-file",
        &file("server.key"),
        "--tls-ca-cert-file",
        &file("ca.pem"),
        "--tls-auth-clients",
        "no",
    ])
    .expect("redis-server with TLS starts");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let options = RedisOptions {
            connection: ConnectionOptions {
                operation_timeout: QUICK_TIMEOUT,
                reconnect: QUICK_BACKOFF,
                ..ConnectionOptions::default()
            },
            ..RedisOptions::default()
        };
        let url = format!("rediss://127.0.0.1:{tls_port}");
        let bus = RedisBus::connect(&url, options)
            .await
            .expect("connect over TLS");
        let channel = conformance::unique_channel("tls");
        let mut plain = subscribe_to(&bus, &channel).await;
        let mut watching = bus
            .subscribe_with_prefixes(std::slice::from_ref(&channel), &[format!("{channel}:")])
            .await
            .expect("subscribe with prefixes over TLS");

        // The subscriptions' own connections go to the TLS port.
        let mut inspector = redis::Client::open(server.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("inspector connects");
        let clients: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut inspector)
            .await
            .expect("CLIENT LIST");
        let subscribers: Vec<&str> = clients.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(subscribers.len(), 2, "{clients}");
        for subscriber in subscribers {
            assert!(
                subscriber.contains(&format!("laddr=127.0.0.1:{tls_port} ")),
                "a subscription connected elsewhere than the TLS port: {subscriber}"
            );
        }

        bus.publish(&channel, b"over tls").await.expect("publish");
        bus.publish(&format!("{channel}:reply"), b"reply over tls")
            .await
            .expect("publish");
        assert_eq!(next_payload(&mut plain).await, b"over tls");
        assert_eq!(next_payload(&mut watching).await, b"over tls");
        assert_eq!(next_payload(&mut watching).await, b"reply over tls");
    });
}
