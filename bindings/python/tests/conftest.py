"""Fixtures: private brokers (redis-server, nats-server) on free loopback ports in
temporary folders, and a real `keyman serve` on each.

`keyman` is found through the environment variable KEYMAN_BIN, else in
$CARGO_TARGET_DIR (or the repository's target/) under release/ or debug/.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, List

import pytest

import keyman_client

REPO = Path(__file__).resolve().parents[3]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, what: str, within: float = 10.0) -> None:
    until = time.monotonic() + within
    while time.monotonic() < until:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {within} s")


def find_program(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/usr/bin")
    if not found:
        pytest.fail(f"{name} is not installed")
    return found


class Server:
    """A child process that is stopped (and its folder removed) at the end."""

    def __init__(self, argv: List[str], port: int, what: str, cwd: str) -> None:
        self.what = what
        self.port = port
        self.log = open(os.path.join(cwd, "server.log"), "wb")
        self.proc = subprocess.Popen(argv, cwd=cwd, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for_port(port, self.proc, what)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_redis(folder: str) -> tuple:
    port = free_port()
    argv = [
        find_program("redis-server"),
        "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", folder,
    ]
    return Server(argv, port, "redis-server", folder), f"redis://127.0.0.1:{port}"


def start_nats(folder: str) -> tuple:
    port = free_port()
    argv = [find_program("nats-server"), "-a", "127.0.0.1", "-p", str(port)]
    return Server(argv, port, "nats-server", folder), f"nats://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def workdir() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="keyman-py-")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def subfolder(workdir: str) -> str:
    path = os.path.join(workdir, uuid.uuid4().hex[:8])
    os.makedirs(path)
    return path


@pytest.fixture(scope="session")
def keyman_bin() -> str:
    explicit = os.environ.get("KEYMAN_BIN")
    if explicit:
        return explicit
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    built = [target / profile / "keyman" for profile in ("release", "debug")]
    built = [p for p in built if p.is_file()]
    if built:
        return str(max(built, key=lambda p: p.stat().st_mtime))
    pytest.fail("keyman not found: build it with `cargo build --bin keyman --features nats` or set KEYMAN_BIN")


def start_serve(keyman_bin: str, url: str, folder: str) -> Server:
    flag = "--nats-url" if url.startswith("nats") else "--redis-url"
    argv = [keyman_bin, "serve", flag, url, "--no-state"]
    proc_log = open(os.path.join(folder, "keyman.log"), "wb")
    proc = subprocess.Popen(argv, cwd=folder, stdout=proc_log, stderr=subprocess.STDOUT)
    server = Server.__new__(Server)
    server.what, server.port, server.log, server.proc = "keyman serve", 0, proc_log, proc
    with keyman_client.KeyPublisher(url=url, timeout=5) as admin:
        if not admin.wait(15):
            server.stop()
            raise RuntimeError("keyman serve did not answer within 15 s")
    return server


@pytest.fixture(scope="session")
def redis_url(workdir: str) -> Iterator[str]:
    server, url = start_redis(subfolder(workdir))
    yield url
    server.stop()


@pytest.fixture(scope="session")
def nats_url(workdir: str) -> Iterator[str]:
    server, url = start_nats(subfolder(workdir))
    yield url
    server.stop()


@pytest.fixture(scope="session")
def served_redis(redis_url: str, keyman_bin: str, workdir: str) -> Iterator[str]:
    """The URL of a private Redis with `keyman serve` on it."""
    server = start_serve(keyman_bin, redis_url, subfolder(workdir))
    yield redis_url
    server.stop()


@pytest.fixture(scope="session")
def served_nats(nats_url: str, keyman_bin: str, workdir: str) -> Iterator[str]:
    """The URL of a private NATS with `keyman serve` on it."""
    server = start_serve(keyman_bin, nats_url, subfolder(workdir))
    yield nats_url
    server.stop()


@pytest.fixture(params=["redis", "nats"])
def served(request: pytest.FixtureRequest) -> str:
    """Each test that uses it runs over Redis and over NATS, against `keyman serve`."""
    return str(request.getfixturevalue(f"served_{request.param}"))


@pytest.fixture
def bare_redis(workdir: str) -> Iterator[str]:
    """A private Redis with no orchestrator on it."""
    server, url = start_redis(subfolder(workdir))
    yield url
    server.stop()


@pytest.fixture
def bare_nats(workdir: str) -> Iterator[str]:
    """A private NATS with no orchestrator on it."""
    server, url = start_nats(subfolder(workdir))
    yield url
    server.stop()


@pytest.fixture
def platform() -> str:
    """A platform name of its own, so tests sharing an orchestrator do not meet."""
    return f"test_{uuid.uuid4().hex[:12]}"


def make_key(tag: str = "") -> str:
    """A key that looks like a GitHub token and is unique."""
    return f"ghp_{tag}{uuid.uuid4().hex}"


sys.path.insert(0, str(Path(__file__).parent))
