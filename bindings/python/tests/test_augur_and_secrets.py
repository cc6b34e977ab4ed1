"""Against a responder that answers the way Augur's orchestrator does, and: keys
never appear in exception messages or log records."""

from __future__ import annotations

import logging
import time
from typing import Iterator

import pytest

import keyman_client
from keyman_client import KeyClient, KeyPublisher
from augur_responder import AugurResponder
from conftest import make_key


@pytest.fixture
def augur(bare_redis: str) -> Iterator[AugurResponder]:
    responder = AugurResponder(bare_redis, wait_margin=1.0)
    yield responder
    responder.stop()


def test_client_works_against_augurs_orchestrator(bare_redis: str, augur: AugurResponder) -> None:
    a, b = make_key("a"), make_key("b")
    with KeyPublisher(url=bare_redis, timeout=5) as admin:
        assert admin.wait(5) is True  # ACK answered with an empty payload
        admin.publish(a, "github_rest")
        admin.publish(b, "github_rest")
        assert admin.wait(5)
        assert admin.list_platforms() == ["github_rest"]
        assert sorted(admin.list_keys("github_rest")) == sorted([a, b])
        assert admin.list_invalid_keys("github_rest") == []
        with pytest.raises(ValueError):  # {"status": ...}, as Augur's client raises
            admin.list_keys("gitlab_rest")

    with KeyClient("github_rest", logging.getLogger("worker"), url=bare_redis, timeout=5) as client:
        assert {client.request() for _ in range(20)} <= {a, b}
        assert client.invalidate(a) == b
        # b rate limited for 1 s: the responder says {"wait": n}; the client waits and asks again.
        started = time.monotonic()
        assert client.expire(b, time.time() + 1, timeout=8) == b
        assert 1.0 <= time.monotonic() - started < 6.0
        # An unknown platform gets no answer from Augur's orchestrator: a Timeout, in time.
        started = time.monotonic()
        with pytest.raises(keyman_client.Timeout):
            client.request("gitlab_rest", timeout=0.5)
        assert time.monotonic() - started < 1.0

    with KeyPublisher(url=bare_redis, timeout=5) as admin:
        assert admin.list_invalid_keys("github_rest") == [a]
    sent = [p for p in augur.payloads if p.get("type") == "NEW"]
    assert sent and all(isinstance(p["requester_id"], (str, int)) for p in sent)


def test_threads_against_augurs_orchestrator(bare_redis: str, augur: AugurResponder) -> None:
    import threading

    key = make_key()
    with KeyPublisher(url=bare_redis, timeout=5) as admin:
        admin.publish(key, "github_rest")
        assert admin.wait(5)
    got = []
    with KeyClient("github_rest", None, url=bare_redis, timeout=10) as client:

        def work() -> None:
            for _ in range(20):
                got.append(client.request())

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
    assert got == [key] * 160


def test_keys_never_appear_in_errors_or_logs(
    bare_redis: str, served: str, platform: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = make_key("secret")
    logger = logging.getLogger("worker")
    caplog.set_level(logging.DEBUG)
    messages = []
    # No orchestrator: timeouts of every call that carries a key.
    with KeyClient(platform, logger, url=bare_redis, timeout=0.3) as client:
        for call in (lambda: client.expire(key, int(time.time()) + 60), lambda: client.invalidate(key)):
            with pytest.raises(keyman_client.Timeout) as caught:
                call()
            messages.append(str(caught.value))
    with KeyPublisher(url=bare_redis, timeout=0.3, logger=logger) as admin:
        admin.publish(key, platform)  # nobody listens; no error, and nothing logged with the key
    admin.close()
    with pytest.raises(keyman_client.Disconnected) as caught:
        admin.publish(key, platform)
    messages.append(str(caught.value))
    # A real orchestrator: the key is invalid, nothing is left.
    with KeyPublisher(url=served, timeout=5) as admin:
        admin.publish(key, platform)
        assert admin.wait(5)
    with KeyClient(platform, logger, url=served, timeout=5) as client:
        assert client.request() == key
        with pytest.raises(keyman_client.NoKeys) as caught:
            client.invalidate(key)
        messages.append(str(caught.value))
        messages.append(repr(caught.value))
        messages.append(repr(client))
    assert caplog.records, "the failures were logged as warnings"
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "worker")
    texts = messages + [r.getMessage() for r in caplog.records] + [str(r.args) for r in caplog.records]
    for text in texts:
        assert key not in text, text
        assert key[4:] not in text, text
    assert any(keyman_client.mask(key) in r.getMessage() for r in caplog.records)
