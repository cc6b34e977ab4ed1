//! Throwaway `redis-server` and `nats-server` processes for tests.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::marker::PhantomData;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to accept connections after it was started.
const STARTUP_DEADLINE: Duration = Duration::from_secs(15);
/// How often a starting server is probed.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
/// How many fresh ports [`ServerProcess::start`] tries when a port turns out to be taken.
const PORT_ATTEMPTS: usize = 5;

/// Where Debian installs `redis-server`; used when it is not found otherwise.
pub const REDIS_SERVER_BINARY: &str = "/usr/bin/redis-server";
/// Where Debian installs `nats-server`; used when it is not found otherwise.
pub const NATS_SERVER_BINARY: &str = "/usr/sbin/nats-server";

/// The binary to run: the path in `env_var` if set, else `name` found on `PATH`
/// or in the usual system folders, else `fallback`.
fn find_binary(env_var: &str, name: &str, fallback: &str) -> String {
    if let Some(path) = std::env::var_os(env_var).filter(|p| !p.is_empty()) {
        return path.to_string_lossy().into_owned();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| fallback.to_string())
}

/// Which server a [`TestServer`] runs: [`RedisBroker`] or [`NatsBroker`], the
/// only two (a third could not say how its process is run).
pub trait Broker: std::fmt::Debug {
    /// The binary's name, such as `redis-server`, for messages.
    const NAME: &'static str;
    /// The URL scheme of its plain connections, such as `redis`.
    const SCHEME: &'static str;
    /// How its process is started and probed.
    #[doc(hidden)]
    const KIND: ServerKind;
}

/// A `redis-server` on a free loopback port, with no persistence, in its own
/// temporary directory; it is ready when it answers `PING`.
#[derive(Debug, Clone, Copy)]
pub struct RedisBroker;

impl Broker for RedisBroker {
    const NAME: &'static str = "redis-server";
    const SCHEME: &'static str = "redis";
    const KIND: ServerKind = ServerKind::Redis;
}

/// A `nats-server` with JetStream on a free loopback port, storing in its own
/// temporary directory (a restart keeps the store); it is ready when it greets
/// a client with `INFO`.
#[derive(Debug, Clone, Copy)]
pub struct NatsBroker;

impl Broker for NatsBroker {
    const NAME: &'static str = "nats-server";
    const SCHEME: &'static str = "nats";
    const KIND: ServerKind = ServerKind::Nats;
}

/// A throwaway server of kind `B` on a free loopback port, in its own
/// temporary directory. It is killed when dropped.
#[derive(Debug)]
pub struct TestServer<B: Broker> {
    process: ServerProcess,
    broker: PhantomData<B>,
}

/// A `redis-server` on a free loopback port, with no persistence, in its own
/// temporary directory. It is killed when dropped.
pub type RedisServer = TestServer<RedisBroker>;

/// A `nats-server` with JetStream on a free loopback port, storing in its own
/// temporary directory. It is killed when dropped.
pub type NatsServer = TestServer<NatsBroker>;

impl<B: Broker> TestServer<B> {
    /// Starts a server and waits until it is ready (see [`RedisBroker`] and
    /// [`NatsBroker`]).
    pub fn start() -> io::Result<Self> {
        Self::start_with_args(&[])
    }

    /// Starts a server with extra command-line arguments, for example
    /// `["--requirepass", "secret"]` for Redis or
    /// `["--user", "alice", "--pass", "secret"]` for NATS, and waits until it is ready.
    pub fn start_with_args(extra: &[&str]) -> io::Result<Self> {
        let extra: Vec<String> = extra.iter().map(|arg| (*arg).to_owned()).collect();
        let process = ServerProcess::start(B::KIND, extra)?;
        Ok(Self {
            process,
            broker: PhantomData,
        })
    }

    /// The loopback port it listens on; it stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.process.port
    }

    /// `<scheme>://127.0.0.1:<port>`, such as `redis://127.0.0.1:6379`.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", B::SCHEME, self.process.port)
    }

    /// The server's temporary directory, which also holds its log, `server.log`.
    pub fn dir(&self) -> &Path {
        self.process.dir.path()
    }

    /// The process id of the running server; `None` while it is stopped.
    pub fn pid(&self) -> Option<u32> {
        self.process.child.as_ref().map(Child::id)
    }

    /// Kills the server and waits for it to exit. Does nothing if it is stopped.
    pub fn stop(&mut self) -> io::Result<()> {
        self.process.stop()
    }

    /// Stops the server if it runs, starts it again on the same port (NATS's
    /// JetStream keeps its store), and waits until it is ready.
    pub fn restart(&mut self) -> io::Result<()> {
        self.process.restart()
    }
}

/// How a server process is run and probed.
#[derive(Debug, Clone, Copy)]
pub enum ServerKind {
    Redis,
    Nats,
}

impl ServerKind {
    /// The server binary: `KEYMAN_REDIS_SERVER` / `KEYMAN_NATS_SERVER` if set,
    /// else found on `PATH` or in the system folders.
    fn binary(self) -> String {
        match self {
            ServerKind::Redis => {
                find_binary("KEYMAN_REDIS_SERVER", "redis-server", REDIS_SERVER_BINARY)
            }
            ServerKind::Nats => {
                find_binary("KEYMAN_NATS_SERVER", "nats-server", NATS_SERVER_BINARY)
            }
        }
    }

    fn args(self, port: u16, dir: &Path) -> Vec<String> {
        let port = port.to_string();
        let dir = dir.display().to_string();
        let args: Vec<&str> = match self {
            ServerKind::Redis => vec![
                "--save",
                "",
                "--appendonly",
                "no",
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--dir",
                &dir,
            ],
            ServerKind::Nats => vec!["-a", "127.0.0.1", "-p", &port, "-js", "-sd", &dir],
        };
        args.into_iter().map(str::to_owned).collect()
    }

    /// Whether a server on `port` is up: Redis answers a `PING` (with `+PONG`,
    /// or an error if it wants a password), NATS greets with `INFO`.
    fn is_ready(self, port: u16) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        if stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .is_err()
        {
            return false;
        }
        match self {
            ServerKind::Redis => {
                if stream.write_all(b"PING\r\n").is_err() {
                    return false;
                }
                let mut first = [0u8; 1];
                matches!(stream.read_exact(&mut first), Ok(()) if first[0] == b'+' || first[0] == b'-')
            }
            ServerKind::Nats => {
                let mut line = String::new();
                BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("INFO ")
            }
        }
    }
}

/// A server process that can be stopped and started again on the same port.
#[derive(Debug)]
struct ServerProcess {
    kind: ServerKind,
    extra: Vec<String>,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl ServerProcess {
    /// Starts on a free port; tries another port if the chosen one was taken meanwhile.
    fn start(kind: ServerKind, extra: Vec<String>) -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(match kind {
                ServerKind::Redis => "keyman-redis-",
                ServerKind::Nats => "keyman-nats-",
            })
            .tempdir()?;
        let mut process = Self {
            kind,
            extra,
            port: 0,
            dir,
            child: None,
        };
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            process.port = free_port()?;
            match process.spawn() {
                Ok(()) => return Ok(process),
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::other("the server did not start")))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Spawns the server on `self.port` and waits until it is ready.
    fn spawn(&mut self) -> io::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut args = self.kind.args(self.port, self.dir.path());
        args.extend(self.extra.iter().cloned());
        let mut child = Command::new(self.kind.binary())
            .args(&args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("cannot run {}: {err}", self.kind.binary()),
                )
            })?;
        let deadline = Instant::now() + STARTUP_DEADLINE;
        loop {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "{} exited with {status} before it accepted connections on port {}; log:\n{}",
                    self.kind.binary(),
                    self.port,
                    self.log_tail()
                )));
            }
            // Another process may have taken the port meanwhile: only a
            // listener of our own child counts.
            if self.kind.is_ready(self.port) && owns_listener(child.id(), self.port) {
                self.child = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} did not accept connections on port {} within {STARTUP_DEADLINE:?}; log:\n{}",
                        self.kind.binary(),
                        self.port,
                        self.log_tail()
                    ),
                ));
            }
            std::thread::sleep(PROBE_INTERVAL);
        }
    }

    fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    fn restart(&mut self) -> io::Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// The last lines of the server's log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Whether process `pid` has a socket listening on `port` (IPv4). Where
/// `/proc` cannot tell, it is assumed to.
fn owns_listener(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return true;
    };
    let port_hex = format!(":{port:04X}");
    let listeners: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            (local.ends_with(&port_hex) && *state == "0A").then(|| format!("socket:[{inode}]"))
        })
        .collect();
    let Ok(descriptors) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return true;
    };
    descriptors.flatten().any(|descriptor| {
        std::fs::read_link(descriptor.path()).is_ok_and(|target| {
            listeners
                .iter()
                .any(|socket| target.as_os_str() == socket.as_str())
        })
    })
}

/// A loopback port that nothing listened on a moment ago.
pub(crate) fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}
