"""Every public method against a real `keyman serve`, over Redis and over NATS."""

from __future__ import annotations

import logging
import time

import pytest

import keyman_client
from keyman_client import KeyClient, KeyPublisher
from conftest import make_key


def publish(url: str, platform: str, *keys: str) -> None:
    with KeyPublisher(url=url, timeout=5) as admin:
        for key in keys:
            admin.publish(key, platform)
        assert admin.wait(5)


def test_publisher_lists_what_was_published(served: str, platform: str) -> None:
    a, b = make_key("a"), make_key("b")
    with KeyPublisher(url=served, timeout=5) as admin:
        admin.publish(a, platform)
        admin.publish(b, platform)
        assert admin.wait(5) is True
        assert platform in admin.list_platforms()
        assert sorted(admin.list_keys(platform)) == sorted([a, b])
        assert admin.list_invalid_keys(platform) == []
        admin.unpublish(a, platform)
        assert admin.wait(timeout_seconds=5, republish=True)
        assert admin.list_keys(platform) == [b]
        status = {s.platform: s for s in admin.status()}
        assert status[platform] == keyman_client.PlatformStatus(platform, 1, 0, 0)


def test_client_request_expire_invalidate(served: str, platform: str) -> None:
    a, b = make_key("a"), make_key("b")
    publish(served, platform, a, b)
    log = logging.getLogger("test")
    with KeyClient(platform, log, url=served, timeout=5) as client:
        assert client.request() in (a, b)
        assert client.request(platform) in (a, b)
        # a rate limited for an hour: only b comes back.
        assert client.expire(a, int(time.time()) + 3600) == b
        assert {client.request() for _ in range(10)} == {b}
        # b invalid, a rate limited: the client waits for a, up to its deadline.
        with pytest.raises(keyman_client.Timeout):
            client.invalidate(b, timeout=0.5)
        # a unpublished too: nothing usable is left, and the client hears so at once.
        with KeyPublisher(url=served, timeout=5) as admin:
            admin.unpublish(a, platform)
            assert admin.wait(5)
        with pytest.raises(keyman_client.NoKeys):
            client.request()
    with KeyPublisher(url=served, timeout=5) as admin:
        assert admin.list_invalid_keys(platform) == [b]
        assert admin.list_keys(platform) == []


def test_expired_key_comes_back_after_its_refresh_time(served: str, platform: str) -> None:
    key = make_key()
    publish(served, platform, key)
    with KeyClient(platform, None, url=served, timeout=5) as client:
        started = time.monotonic()
        assert client.expire(key, time.time() + 1.5, timeout=6) == key
        assert 1.0 <= time.monotonic() - started < 4.0


def test_platform_argument_overrides_the_default(served: str, platform: str) -> None:
    key = make_key()
    publish(served, platform, key)
    with KeyClient("some_other_platform", None, url=served, timeout=5) as client:
        assert client.request(platform) == key
        assert client.invalidate(make_key(), platform) == key


def test_unknown_platform_is_a_value_error_for_lists(served: str, platform: str) -> None:
    with KeyPublisher(url=served, timeout=5) as admin:
        with pytest.raises(keyman_client.UnknownPlatform):
            admin.list_keys(platform)
        with pytest.raises(ValueError):
            admin.list_invalid_keys(platform)


def test_url_comes_from_the_environment(served: str, platform: str, monkeypatch: pytest.MonkeyPatch) -> None:
    key = make_key()
    publish(served, platform, key)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_CONN_STRING", served)
    assert keyman_client.broker_url() == served
    with KeyClient(platform, None) as client:
        assert client.url == served
        assert client.request() == key
    monkeypatch.delenv("REDIS_CONN_STRING")
    monkeypatch.setenv("REDIS_URL", served)
    assert keyman_client.broker_url() == served
    assert keyman_client.broker_url("redis://elsewhere:1") == "redis://elsewhere:1"
    monkeypatch.delenv("REDIS_URL")
    assert keyman_client.broker_url() == keyman_client.DEFAULT_URL


def test_close_and_context_manager(served: str, platform: str) -> None:
    key = make_key()
    publish(served, platform, key)
    client = KeyClient(platform, None, url=served, timeout=5)
    with client as c:
        assert c is client
        assert c.request() == key
        assert not c.closed
    assert client.closed
    with pytest.raises(keyman_client.Disconnected):
        client.request()
    client.close()  # idempotent


@pytest.mark.parametrize("broker", ["bare_redis", "bare_nats"])
def test_shutdown_stops_the_orchestrator(
    keyman_bin: str, broker: str, workdir: str, request: pytest.FixtureRequest
) -> None:
    import conftest

    url = request.getfixturevalue(broker)
    server = conftest.start_serve(keyman_bin, url, conftest.subfolder(workdir))
    try:
        with KeyPublisher(url=url, timeout=5) as admin:
            admin.shutdown()
            assert server.proc.wait(timeout=10) == 0
            assert admin.wait(0.5) is False
    finally:
        server.stop()


def test_bad_arguments_are_value_errors(served: str) -> None:
    with pytest.raises(ValueError):
        KeyClient("", None, url=served)
    with pytest.raises(keyman_client.InvalidArgument):
        KeyClient("p", None, url="ftp://nowhere")
    with KeyClient("p", None, url=served, timeout=5) as client:
        with pytest.raises(ValueError):
            client.request(timeout=-1)
        with pytest.raises(ValueError):
            client.expire("", 0)
    with KeyPublisher(url=served, timeout=5) as admin:
        with pytest.raises(ValueError):
            admin.wait(-1)


def test_exception_hierarchy() -> None:
    assert issubclass(keyman_client.Timeout, TimeoutError)
    assert issubclass(keyman_client.Disconnected, ConnectionError)
    assert issubclass(keyman_client.UnknownPlatform, ValueError)
    assert issubclass(keyman_client.InvalidArgument, ValueError)
    for cls in (
        keyman_client.Timeout,
        keyman_client.NoKeys,
        keyman_client.UnknownPlatform,
        keyman_client.Disconnected,
        keyman_client.InvalidArgument,
        keyman_client.OrchestratorError,
    ):
        assert issubclass(cls, keyman_client.KeymanError)
        assert cls.__doc__


def test_every_public_name_has_a_docstring() -> None:
    import inspect

    from keyman_client import _native

    assert keyman_client.__doc__
    for name in keyman_client.__all__:
        obj = getattr(keyman_client, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__doc__, name
            for attr, member in vars(obj).items():
                if not attr.startswith("_") and (inspect.isfunction(member) or isinstance(member, property)):
                    assert member.__doc__, f"{name}.{attr}"
    for attr in (
        "request", "expire", "invalidate", "publish", "unpublish", "ping", "close",
        "publish_account", "lease", "observe", "observe_lease", "release", "status",
    ):
        assert getattr(_native.Connection, attr).__doc__, attr
    for attr in ("key", "platform", "wanted", "calls", "used", "calls_left", "until", "ended"):
        assert getattr(_native.Lease, attr).__doc__, attr
        assert getattr(keyman_client.Lease, attr).__doc__, attr
    for attr in keyman_client.PlatformStatus._quota_fields:
        assert getattr(keyman_client.PlatformStatus, attr).__doc__, attr
