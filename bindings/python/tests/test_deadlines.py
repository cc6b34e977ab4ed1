"""Deadlines: no call waits past its deadline; unknown platform and no keys raise at once."""

from __future__ import annotations

import threading
import time

import pytest

import keyman_client
from keyman_client import KeyClient, KeyPublisher
from conftest import make_key


@pytest.mark.parametrize("broker", ["bare_redis", "bare_nats"])
def test_request_without_orchestrator_times_out_in_time(broker: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue(broker)
    with KeyClient("github_rest", None, url=url, timeout=1.0) as client:
        for deadline, call in (
            (1.0, lambda: client.request()),
            (0.5, lambda: client.request(timeout=0.5)),
            (0.5, lambda: client.expire(make_key(), int(time.time()) + 60, timeout=0.5)),
            (0.5, lambda: client.invalidate(make_key(), timeout=0.5)),
        ):
            started = time.monotonic()
            with pytest.raises(keyman_client.Timeout) as caught:
                call()
            took = time.monotonic() - started
            assert deadline - 0.05 <= took < deadline + 0.5, (deadline, took)
            assert isinstance(caught.value, TimeoutError)
    with KeyPublisher(url=url, timeout=0.5) as admin:
        started = time.monotonic()
        assert admin.wait(1) is False
        assert time.monotonic() - started < 1.5
        with pytest.raises(keyman_client.Timeout):
            admin.list_platforms()


def test_request_deadline_is_kept_precisely(bare_redis: str) -> None:
    with KeyClient("github_rest", None, url=bare_redis, timeout=5) as client:
        for deadline in (0.3, 1.0, 2.0):
            started = time.monotonic()
            with pytest.raises(keyman_client.Timeout):
                client.request(timeout=deadline)
            took = time.monotonic() - started
            assert deadline - 0.05 <= took < deadline + 0.5, (deadline, took)


def test_unknown_platform_and_no_keys_raise_at_once(served: str, platform: str) -> None:
    with KeyClient(platform, None, url=served, timeout=10) as client:
        started = time.monotonic()
        with pytest.raises(keyman_client.UnknownPlatform):
            client.request()
        assert time.monotonic() - started < 1.0
        key = make_key()
        with KeyPublisher(url=served, timeout=5) as admin:
            admin.publish(key, platform)
            admin.unpublish(key, platform)
            assert admin.wait(5)
        started = time.monotonic()
        with pytest.raises(keyman_client.NoKeys):
            client.request()
        assert time.monotonic() - started < 1.0


def test_all_keys_rate_limited_times_out_at_the_deadline(served: str, platform: str) -> None:
    key = make_key()
    with KeyPublisher(url=served, timeout=5) as admin:
        admin.publish(key, platform)
        assert admin.wait(5)
    with KeyClient(platform, None, url=served, timeout=5) as client:
        started = time.monotonic()
        with pytest.raises(keyman_client.Timeout):
            client.expire(key, int(time.time()) + 3600, timeout=1.0)
        assert 0.95 <= time.monotonic() - started < 1.5


def test_unreachable_broker_raises_disconnected_in_time() -> None:
    import conftest

    port = conftest.free_port()
    started = time.monotonic()
    with pytest.raises(keyman_client.Disconnected) as caught:
        KeyClient("github_rest", None, url=f"redis://127.0.0.1:{port}", timeout=1.0)
    assert time.monotonic() - started < 1.5
    assert isinstance(caught.value, ConnectionError)


def test_the_gil_is_released_while_waiting(bare_redis: str) -> None:
    with KeyClient("github_rest", None, url=bare_redis, timeout=5) as client:
        errors = []

        def wait() -> None:
            try:
                client.request(timeout=1.0)
            except keyman_client.Timeout as e:
                errors.append(e)

        threads = [threading.Thread(target=wait) for _ in range(4)]
        started = time.monotonic()
        for t in threads:
            t.start()
        spins = 0
        while any(t.is_alive() for t in threads):
            spins += 1
        took = time.monotonic() - started
        assert len(errors) == 4
        assert took < 1.6, took  # they waited side by side, not one after another
        assert spins > 1000  # and this thread kept running Python meanwhile
