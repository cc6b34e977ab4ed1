"""Threads and forks: one client shared by 32 threads; a client made before a fork
works in the child, and the parent keeps working."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from typing import Dict, List, Tuple

import pytest

from keyman_client import KeyClient, KeyPublisher
from conftest import make_key

THREADS = 32
TOTAL = 1000


def publish_per_platform(url: str, names: List[str]) -> Dict[str, str]:
    keys = {name: make_key(name[-4:]) for name in names}
    with KeyPublisher(url=url, timeout=5) as admin:
        for name, key in keys.items():
            admin.publish(key, name)
        assert admin.wait(10)
    return keys


def test_32_threads_1000_requests_on_one_client(served: str, platform: str) -> None:
    # Each thread asks for its own platform, which has one key: a reply that
    # went to the wrong thread would show as a key of another platform.
    names = [f"{platform}_{i:02d}" for i in range(THREADS)]
    keys = publish_per_platform(served, names)
    counts = [TOTAL // THREADS + (1 if i < TOTAL % THREADS else 0) for i in range(THREADS)]
    assert sum(counts) == TOTAL
    got: Dict[int, List[str]] = {i: [] for i in range(THREADS)}
    failures: List[BaseException] = []
    start = threading.Barrier(THREADS)
    with KeyClient(names[0], None, url=served, timeout=10) as client:

        def work(i: int) -> None:
            try:
                start.wait()
                for _ in range(counts[i]):
                    got[i].append(client.request(names[i]))
            except BaseException as e:  # noqa: BLE001 - reported below
                failures.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
        began = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        took = time.monotonic() - began
    assert not failures, failures[:3]
    assert sum(len(v) for v in got.values()) == TOTAL
    for i in range(THREADS):
        assert got[i] == [keys[names[i]]] * counts[i], f"thread {i} got another thread's reply"
    print(f"{TOTAL} requests from {THREADS} threads in {took:.2f} s")


def _child_requests(client: KeyClient, name: str, n: int) -> Tuple[int, str, List[str]]:
    got = [client.request(name) for _ in range(n)]
    return os.getpid(), client.requester_id, got


# The client the pool's children inherit (multiprocessing's fork start method).
_inherited: Dict[str, KeyClient] = {}


def _pool_task(name: str) -> Tuple[int, str, List[str]]:
    return _child_requests(_inherited["client"], name, 20)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_client_made_before_fork_works_in_the_child(served: str, platform: str) -> None:
    names = [f"{platform}_parent", f"{platform}_child"]
    keys = publish_per_platform(served, names)
    parent_name, child_name = names
    with KeyClient(parent_name, None, url=served, timeout=10) as client:
        assert client.request() == keys[parent_name]
        parent_id = client.requester_id

        # The parent keeps asking, from a thread, while the child works.
        stop = threading.Event()
        parent_got: List[str] = []
        parent_errors: List[BaseException] = []

        def parent_loop() -> None:
            try:
                while not stop.is_set():
                    parent_got.append(client.request())
            except BaseException as e:  # noqa: BLE001
                parent_errors.append(e)

        loop = threading.Thread(target=parent_loop)
        loop.start()
        try:
            read, write = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child
                code = 1
                try:
                    os.close(read)
                    _, child_id, got = _child_requests(client, child_name, 20)
                    ok = got == [keys[child_name]] * 20 and child_id != parent_id and child_id
                    os.write(write, b"ok" if ok else f"{child_id!r}, {len(got)} replies".encode())
                    code = 0
                finally:
                    os._exit(code)
            os.close(write)
            with os.fdopen(read, "rb") as pipe:
                answer = pipe.read()
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
            assert answer == b"ok", answer

            _inherited["client"] = client
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(3) as pool:
                results = pool.map(_pool_task, [child_name] * 6)
            _inherited.clear()
            child_ids = set()
            for child_pid, child_id, got in results:
                assert child_pid != os.getpid()
                assert child_id and child_id != parent_id
                child_ids.add(child_id)
                assert got == [keys[child_name]] * 20
            assert len(child_ids) >= 1
        finally:
            stop.set()
            loop.join(timeout=30)
        assert not parent_errors, parent_errors
        assert parent_got and set(parent_got) == {keys[parent_name]}
        # And after the children are gone, the parent's connection is intact.
        assert client.requester_id == parent_id
        assert client.request() == keys[parent_name]


FORKS = 60
HAMMERS = 8


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forks_while_threads_call_never_hang_the_child(served: str, platform: str) -> None:
    # fork() copies only the calling thread: a lock another thread held at
    # that moment stays locked in the child. Children forked while 8 threads
    # keep calling must each get their key within the deadline, never hang.
    names = [f"{platform}_parent", f"{platform}_child"]
    keys = publish_per_platform(served, names)
    parent_name, child_name = names
    with KeyClient(parent_name, None, url=served, timeout=10) as client:
        assert client.request() == keys[parent_name]
        stop = threading.Event()
        errors: List[BaseException] = []

        def hammer() -> None:
            try:
                while not stop.is_set():
                    client.request()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=hammer) for _ in range(HAMMERS)]
        for t in threads:
            t.start()
        outcomes: List[str] = []
        try:
            for _ in range(FORKS):
                read, write = os.pipe()
                pid = os.fork()
                if pid == 0:  # the child
                    code = 1
                    try:
                        os.close(read)
                        got = client.request(child_name, timeout=5)
                        os.write(write, b"ok" if got == keys[child_name] else b"wrong key")
                        code = 0
                    finally:
                        os._exit(code)
                os.close(write)
                # The child's deadline is 5 s: one still running after 15 s hangs.
                until = time.monotonic() + 15
                hung = True
                while time.monotonic() < until:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                    if done:
                        hung = False
                        break
                    time.sleep(0.01)
                if hung:
                    os.kill(pid, 9)
                    os.waitpid(pid, 0)
                with os.fdopen(read, "rb") as pipe:
                    answer = pipe.read()
                outcomes.append("hung" if hung else answer.decode() or "failed")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
        assert not errors, errors[:3]
        assert outcomes == ["ok"] * FORKS, outcomes
