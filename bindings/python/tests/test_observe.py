"""Quota reporting: KeyClient.observe with a response's status and headers, leases
(KeyClient.lease / release, publish(limit=)), the quota figures of status(), against
a real `keyman serve` over Redis and NATS."""

from __future__ import annotations

import email.message
import threading
import time
from typing import Any, Callable, Dict, List

import pytest

import keyman_client
from keyman_client import KeyClient, KeyPublisher, Lease
from conftest import make_key


def publish(url: str, platform: str, *keys: str, limit: Any = None) -> None:
    with KeyPublisher(url=url, timeout=5) as admin:
        for key in keys:
            if limit is None:
                admin.publish(key, platform)
            else:
                admin.publish(key, platform, limit=limit)
        assert admin.wait(5)


def status_of(url: str, platform: str) -> keyman_client.PlatformStatus:
    with KeyPublisher(url=url, timeout=5) as admin:
        assert admin.wait(5)  # everything sent before is handled
        return {s.platform: s for s in admin.status()}[platform]


def github(remaining: int, reset: int, limit: int = 5000) -> Dict[str, str]:
    """GitHub's rate-limit headers, as `requests` shows them (names as sent)."""
    return {
        "Content-Type": "application/json",
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Used": str(limit - remaining),
        "X-RateLimit-Reset": str(reset),
        "X-RateLimit-Resource": "core",
    }


def as_requests(headers: Dict[str, str]) -> Any:
    requests_structures = pytest.importorskip("requests.structures")
    return requests_structures.CaseInsensitiveDict(headers)


def as_email_message(headers: Dict[str, str]) -> Any:
    message = email.message.Message()  # what urllib's responses carry
    for name, value in headers.items():
        message[name] = value
    return message


HEADER_KINDS: Dict[str, Callable[[Dict[str, str]], Any]] = {
    "dict": lambda h: dict(h),
    "requests": as_requests,
    "pairs": lambda h: list(h.items()),
    "bytes pairs": lambda h: [(n.lower().encode(), v.encode()) for n, v in h.items()],
    "message": as_email_message,
}


def test_observe_keeps_the_key_on_a_200_with_calls_left(served: str, platform: str) -> None:
    a, b = make_key("a"), make_key("b")
    publish(served, platform, a, b)
    reset = int(time.time()) + 3600
    with KeyClient(platform, None, url=served, timeout=5) as client:
        key = client.request()
        for kind, make in HEADER_KINDS.items():
            if kind == "requests":
                pytest.importorskip("requests")
            assert client.observe(key, 200, make(github(4000, reset))) == key, kind
        assert client.observe(key, 200) == key  # no headers at all
        # A 403 with calls left is a resource the key may not read: the key stays.
        assert client.observe(key, 403, github(3999, reset)) == key
    status = status_of(served, platform)
    assert (status.fresh, status.expired, status.invalid) == (2, 0, 0)


@pytest.mark.parametrize("kind", list(HEADER_KINDS))
def test_observe_expires_the_key_on_a_403_with_nothing_remaining(served: str, platform: str, kind: str) -> None:
    a, b = make_key("a"), make_key("b")
    publish(served, platform, a, b)
    reset = int(time.time()) + 3600
    headers = HEADER_KINDS[kind](github(0, reset))
    with KeyClient(platform, None, url=served, timeout=5) as client:
        key = client.request()
        other = client.observe(key, 403, headers)
        assert other != key and other in (a, b)
        assert {client.request() for _ in range(10)} == {other}
    status = status_of(served, platform)
    assert (status.fresh, status.expired, status.invalid) == (1, 1, 0)
    assert status.next_refresh is not None and reset <= status.next_refresh <= reset + 2
    with KeyPublisher(url=served, timeout=5) as admin:
        assert sorted(admin.list_keys(platform)) == sorted([a, b])  # expired keys are listed
        assert admin.list_invalid_keys(platform) == []


def test_observe_expires_for_retry_after_and_invalidates_on_a_401(served: str, platform: str) -> None:
    a, b, c = make_key("a"), make_key("b"), make_key("c")
    publish(served, platform, a, b, c)
    with KeyClient(platform, None, url=served, timeout=5) as client:
        first = client.request()
        # GitHub's secondary limit: calls remain, but "retry after 120 s".
        second = client.observe(first, 403, {"retry-after": "120", "x-ratelimit-remaining": "4000"})
        assert second != first
        started = time.time()
        third = client.observe(second, 401, None, platform)
        assert third not in (first, second)
    with KeyPublisher(url=served, timeout=5) as admin:
        assert admin.list_invalid_keys(platform) == [second]
    status = status_of(served, platform)
    assert (status.fresh, status.expired, status.invalid) == (1, 1, 1)
    assert status.next_refresh is not None and started + 110 <= status.next_refresh <= started + 125


def test_a_lease_lends_what_the_limit_allows_and_is_renewed_after_its_calls(served: str, platform: str) -> None:
    key = make_key()
    publish(served, platform, key, limit=10)
    reset = int(time.time()) + 3600
    with KeyClient(platform, None, url=served, timeout=5) as client:
        lease = client.lease(4)
        assert isinstance(lease, Lease)
        assert (lease.key, lease.platform, lease.wanted) == (key, platform, 4)
        assert (lease.calls, lease.used, lease.calls_left, lease.ended) == (4, 0, 4, False)
        assert lease.until is not None and lease.until > time.time()
        assert status_of(served, platform).leased == 4
        remaining = 10
        for call in range(1, 4):
            remaining -= 1
            assert client.observe(lease, 200, github(remaining, reset, limit=10)) == key
            assert (lease.used, lease.calls_left) == (call, 4 - call)
        # The 4th call uses the lease up: it is returned and another taken.
        remaining -= 1
        assert client.observe(lease, 200, github(remaining, reset, limit=10)) == key
        assert (lease.calls, lease.used, lease.calls_left) == (4, 0, 4), "6 calls are left"
        for _ in range(4):
            remaining -= 1
            client.observe(lease, 200, github(remaining, reset, limit=10))
        assert (lease.calls, lease.used) == (2, 0), "the last response said 2 calls are left"
        status = status_of(served, platform)
        assert (status.leased, status.remaining) == (2, 0)
        client.release(lease)
        assert lease.ended and lease.calls_left == 0
        client.release(lease)  # idempotent
        with pytest.raises(keyman_client.InvalidArgument):
            client.observe(lease, 200, github(1, reset, limit=10))
    status = status_of(served, platform)
    assert (status.leased, status.remaining) == (None, 2)


def test_leases_never_lend_more_than_is_left_and_release_returns_the_calls(served: str, platform: str) -> None:
    key = make_key()
    publish(served, platform, key, limit=10)
    with KeyClient(platform, None, url=served, timeout=5) as client:
        first = client.lease(8)
        with client.lease(8) as second:
            assert (first.calls, second.calls) == (8, 2), "10 - 8 are left to lend"
            started = time.monotonic()
            with pytest.raises(keyman_client.Timeout):
                client.lease(1, timeout=0.6)
            assert time.monotonic() - started < 0.6 + 0.5
            assert status_of(served, platform).leased == 10
            client.release(first)
            assert status_of(served, platform).leased == 2
            with client.lease(8, platform) as third:
                assert third.calls == 8
                assert status_of(served, platform).leased == 10
            assert third.ended
        assert second.ended
    assert status_of(served, platform).leased is None


def test_a_refused_call_ends_the_lease_and_leases_another_key(served: str, platform: str) -> None:
    a, b, c = make_key("a"), make_key("b"), make_key("c")
    publish(served, platform, a, b, c)
    reset = int(time.time()) + 3600
    with KeyClient(platform, None, url=served, timeout=5) as client:
        lease = client.lease(50)
        first = lease.key
        second = client.observe(lease, 403, github(0, reset))
        assert second != first and lease.key == second and lease.used == 0
        third = client.observe(lease, 401, {})
        assert third not in (first, second) and lease.key == third
        client.release(lease)
    with KeyPublisher(url=served, timeout=5) as admin:
        assert admin.list_invalid_keys(platform) == [second]
    status = status_of(served, platform)
    assert (status.fresh, status.expired, status.invalid) == (1, 1, 1)
    assert status.leased is None


def test_one_client_many_threads_each_with_a_lease(served: str, platform: str) -> None:
    key = make_key()
    publish(served, platform, key, limit=100_000)
    reset = int(time.time()) + 3600
    remaining = [100_000]
    counter = threading.Lock()
    failures: List[BaseException] = []

    def response() -> Dict[str, str]:
        with counter:
            remaining[0] -= 1
            return github(remaining[0], reset, limit=100_000)

    with KeyClient(platform, None, url=served, timeout=10) as client:
        shared = client.lease(10)

        def work() -> None:
            try:
                with client.lease(10) as own:
                    for _ in range(25):
                        assert client.observe(own, 200, response()) == key
                for _ in range(10):
                    client.observe(shared, 200, response())
            except BaseException as e:  # noqa: BLE001 - reported below
                failures.append(e)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not failures, failures[:3]
        # 80 calls counted on the shared lease of 10: renewed 8 times, none lost.
        assert (shared.calls, shared.used) == (10, 0)
        client.release(shared)
    assert status_of(served, platform).leased is None


def test_bad_arguments_are_value_errors_and_change_nothing(served: str, platform: str) -> None:
    key = make_key()
    publish(served, platform, key, limit=10)
    with KeyClient(platform, None, url=served, timeout=5) as client:
        lease = client.lease(5)
        for status in ("200", 200.0, True, 99, 1000, None):
            with pytest.raises(keyman_client.InvalidArgument):
                client.observe(lease, status, {})  # type: ignore[arg-type]
        for headers in ("x-ratelimit-remaining: 0", 42, [("only-a-name",)], [1, 2]):
            with pytest.raises(ValueError):
                client.observe(lease, 401, headers)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            client.observe(lease, 401, None, "another_platform")
        with pytest.raises(ValueError):
            client.observe(42, 401)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            client.observe("", 401)
        for calls in (0, -1, 1.5, True):
            with pytest.raises(ValueError):
                client.lease(calls)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            client.release(key)  # type: ignore[arg-type]
        assert (lease.used, lease.calls_left, lease.ended) == (0, 5, False)
    with KeyPublisher(url=served, timeout=5) as admin:
        for bad in ({"limit": 0}, {"limit": "10"}, {"account": ""}, {"account": 7}):
            with pytest.raises(ValueError):
                admin.publish(make_key(), platform, **bad)  # type: ignore[arg-type]
        admin.publish(make_key("acct"), platform, account="alice", limit=50)
        assert admin.wait(5)
        assert len(admin.list_keys(platform)) == 2
    status = status_of(served, platform)
    assert (status.fresh, status.expired, status.invalid, status.leased) == (2, 0, 0, 5)


def test_platform_status_is_still_the_tuple_of_counts(served: str, platform: str) -> None:
    publish(served, platform, make_key())
    status = status_of(served, platform)
    name, fresh, expired, invalid = status
    assert (name, fresh, expired, invalid) == (platform, 1, 0, 0)
    assert status == keyman_client.PlatformStatus(platform, 1, 0, 0)
    assert status[1:] == (1, 0, 0) and len(status) == 4
    assert (status.remaining, status.leased, status.burn_per_hour, status.dry_at) == (None, None, None, None)
    assert "remaining=None" in repr(status)
    import pickle

    again = pickle.loads(pickle.dumps(keyman_client.PlatformStatus(platform, 1, 2, 3, remaining=7, dry_at=9)))
    assert (tuple(again), again.remaining, again.dry_at) == ((platform, 1, 2, 3), 7, 9)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_a_lease_belongs_to_the_process_that_took_it(served: str, platform: str) -> None:
    import os

    key = make_key()
    publish(served, platform, key, limit=100)
    reset = int(time.time()) + 3600
    with KeyClient(platform, None, url=served, timeout=10) as client:
        lease = client.lease(10)
        assert client.observe(lease, 200, github(99, reset, limit=100)) == key
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                os.close(read)
                problems = []
                if not lease.ended or lease.calls_left != 0:
                    problems.append("the parent's lease is not ended in the child")
                client.release(lease)  # not the child's to return: nothing happens
                try:
                    client.observe(lease, 200, github(98, reset, limit=100))
                    problems.append("observe of the parent's lease worked in the child")
                except keyman_client.InvalidArgument:
                    pass
                with client.lease(5) as own:
                    if own.calls != 5 or client.observe(own, 200, github(97, reset, limit=100)) != key:
                        problems.append("the child's own lease did not work")
                os.write(write, "; ".join(problems).encode() or b"ok")
                code = 0
            finally:
                os._exit(code)
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            answer = pipe.read()
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert answer == b"ok", answer
        # The parent's lease is untouched: still lent, still counting.
        assert not lease.ended and lease.used == 1
        assert status_of(served, platform).leased == 10
        assert client.observe(lease, 200, github(96, reset, limit=100)) == key
        assert lease.used == 2
        client.release(lease)
    assert status_of(served, platform).leased is None


def test_against_augurs_orchestrator_a_lease_is_a_plain_key_and_no_report_is_sent(bare_redis: str) -> None:
    from augur_responder import AugurResponder

    augur = AugurResponder(bare_redis, wait_margin=1.0)
    try:
        a, b, c = make_key("a"), make_key("b"), make_key("c")
        with KeyPublisher(url=bare_redis, timeout=5) as admin:
            assert admin.wait(5)
            admin.publish(a, "github_rest", limit=10)  # Augur's reads a PUBLISH, and ignores the hint
            admin.publish(b, "github_rest", account="alice")
            admin.publish(c, "github_rest")
            assert admin.wait(5)
            assert sorted(admin.list_keys("github_rest")) == sorted([a, b, c])
        reset = int(time.time()) + 3600
        with KeyClient("github_rest", None, url=bare_redis, timeout=5) as client:
            # A plain key: a 200 with calls left sends nothing at all.
            key = client.request()
            sent = len(augur.payloads)
            assert client.observe(key, 200, github(100, reset)) == key
            with client.lease(100) as lease:
                assert (lease.calls, lease.calls_left, lease.until) == (None, None, None)
                first = lease.key
                for remaining in (50, 49, 48):
                    assert client.observe(lease, 200, github(remaining, reset)) == first
                assert lease.used == 3
                second = client.observe(lease, 403, github(0, reset))
                assert second != first and lease.key == second
                third = client.observe(lease, 401)
                assert third not in (first, second)
            assert lease.ended
            with KeyPublisher(url=bare_redis, timeout=5) as admin:
                assert admin.wait(5)  # handled after anything the release might have sent
                assert admin.list_invalid_keys("github_rest") == [second]
        mine = [p for p in augur.payloads[sent:] if p.get("type") not in ("ACK", "LIST_INVALID_KEYS")]
        kinds = [p["type"] for p in mine]
        assert kinds == ["NEW", "EXPIRE", "NEW", "INVALIDATE", "NEW"], kinds
        assert mine[1]["key_str"] == first and int(mine[1]["refresh_time"]) in (reset, reset + 1)
        assert mine[3]["key_str"] == second
        assert not any(p.get("type") == "REPORT" for p in augur.payloads)
    finally:
        augur.stop()


def test_keys_never_appear_in_reprs_errors_or_logs(
    served: str, bare_redis: str, platform: str, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    key = make_key("secret")
    logger = logging.getLogger("worker")
    caplog.set_level(logging.DEBUG)
    texts: List[str] = []
    publish(served, platform, key, limit=10)
    with KeyClient(platform, logger, url=served, timeout=5) as client:
        lease = client.lease(5)
        texts += [repr(lease), str(lease), repr(lease._state)]
        assert keyman_client.mask(key) in repr(lease)
        with pytest.raises(keyman_client.NoKeys) as caught:  # the only key, refused
            client.observe(lease, 401, {"x-ratelimit-remaining": "4"})
        texts += [str(caught.value), repr(caught.value), repr(lease)]
        with pytest.raises(keyman_client.InvalidArgument) as bad:
            client.observe(lease, 200, {})
        texts += [str(bad.value)]
        with pytest.raises(keyman_client.NoKeys) as caught:
            client.observe(key, 401, [("X-RateLimit-Remaining", key)])
        texts += [str(caught.value)]
    # No orchestrator: a lease times out, an observe that needs another key too.
    with KeyClient(platform, logger, url=bare_redis, timeout=0.3) as client:
        with pytest.raises(keyman_client.Timeout) as timed_out:
            client.observe(key, 403, github(0, int(time.time()) + 60))
        texts += [str(timed_out.value)]
        with pytest.raises(keyman_client.Timeout):
            client.lease(5)
    assert any(r.name == "worker" and r.levelno == logging.WARNING for r in caplog.records)
    texts += [r.getMessage() for r in caplog.records] + [str(r.args) for r in caplog.records]
    for text in texts:
        assert key not in text, text
        assert key[4:] not in text, text


def test_status_says_how_far_the_platform_clock_lags(served: str, platform: str) -> None:
    a, b = make_key("a"), make_key("b")
    publish(served, platform, a, b)
    assert status_of(served, platform).clock_lag_ms is None
    with KeyClient(platform, None, url=served, timeout=5) as client:
        key = client.request()
        # A 403 whose reset had passed 3 s ago by our clock: the platform's clock is behind.
        assert client.expire(key, int(time.time()) - 3) != key
    status = status_of(served, platform)
    # At least twice the 3 s (the second's fraction adds to it).
    assert status.clock_lag_ms is not None and 6_000 <= status.clock_lag_ms <= 8_000, status
