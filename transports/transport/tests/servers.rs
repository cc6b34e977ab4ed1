//! The throwaway brokers of the `testing` module start, stop, restart on the
//! same port, and go away when dropped.

use keyman_transport::testing::{NatsServer, RedisServer};
use std::net::{Ipv4Addr, TcpStream};

fn accepts_connections(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}

#[test]
fn redis_server_restarts_on_the_same_port_and_dies_on_drop() {
    let mut server = RedisServer::start().expect("redis-server starts");
    let port = server.port();
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
    assert!(accepts_connections(port));
    server.stop().expect("stop");
    assert!(!accepts_connections(port));
    server.restart().expect("restart");
    assert_eq!(server.port(), port);
    assert!(accepts_connections(port));
    let dir = server.dir().to_path_buf();
    drop(server);
    assert!(!accepts_connections(port));
    assert!(!dir.exists(), "the temporary directory is removed");
}

#[test]
fn nats_server_restarts_on_the_same_port_and_dies_on_drop() {
    let mut server = NatsServer::start().expect("nats-server starts");
    let port = server.port();
    assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));
    assert!(accepts_connections(port));
    server.restart().expect("restart while running");
    assert_eq!(server.port(), port);
    assert!(accepts_connections(port));
    drop(server);
    assert!(!accepts_connections(port));
}

#[test]
fn a_bad_argument_is_reported_with_the_server_log() {
    let error = RedisServer::start_with_args(&["--no-such-option", "1"])
        .expect_err("redis-server refuses an unknown option");
    assert!(
        error.to_string().contains("exited"),
        "the error says the server exited: {error}"
    );
}
