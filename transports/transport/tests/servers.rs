//! The throwaway brokers of the `testing` module start, stop, restart on the
//! same port, and go away when dropped.

use keyman_transport::testing::{NatsServer, RedisServer};
use std::net::{Ipv4Addr, TcpStream};
use std::path::Path;

fn accepts_connections(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Whether a process runs. Checked by process, not by port: once a server is
/// gone, another test may start one on the same port.
fn is_running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn redis_server_restarts_on_the_same_port_and_dies_on_drop() {
    let mut server = RedisServer::start().expect("redis-server starts");
    let port = server.port();
    assert_eq!(server.url(), format!("redis://127.0.0.1:{port}"));
    assert!(accepts_connections(port));
    let first = server.pid().expect("running");
    server.stop().expect("stop");
    assert_eq!(server.pid(), None);
    assert!(!is_running(first));
    server.restart().expect("restart");
    assert_eq!(server.port(), port);
    assert!(accepts_connections(port));
    let second = server.pid().expect("running");
    let dir = server.dir().to_path_buf();
    drop(server);
    assert!(!is_running(second));
    assert!(!dir.exists(), "the temporary directory is removed");
}

#[test]
fn nats_server_restarts_on_the_same_port_and_dies_on_drop() {
    let mut server = NatsServer::start().expect("nats-server starts");
    let port = server.port();
    assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));
    assert!(accepts_connections(port));
    let first = server.pid().expect("running");
    server.restart().expect("restart while running");
    assert!(!is_running(first));
    assert_eq!(server.port(), port);
    assert!(accepts_connections(port));
    let second = server.pid().expect("running");
    drop(server);
    assert!(!is_running(second));
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
