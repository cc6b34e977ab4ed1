"""keyman_client: a drop-in ``KeyClient`` / ``KeyPublisher`` for Augur's key orchestrator.

The same API as Augur's ``keyman/KeyClient.py``, built on keyman's Rust client, so
switching is one import line::

    from keyman_client import KeyClient, KeyPublisher

What it adds (and nothing it takes away):

- a deadline on every call (keyword ``timeout=``, seconds; the client's default is
  :data:`DEFAULT_TIMEOUT`), after which :class:`Timeout` is raised;
- exceptions a caller can tell apart (:class:`KeymanError` and its subclasses);
- the GIL is released while a call waits; one client may be used from any
  number of threads at once;
- a client created before ``os.fork()`` works in the child, which opens its own
  connections (Celery's prefork pool);
- ``with KeyClient(...) as client:`` and ``close()``;
- works against keyman's orchestrator (``keyman serve``) and Augur's own.

The broker is the explicit ``url=`` keyword, else the environment variable
``REDIS_CONN_STRING``, else ``REDIS_URL``, else ``redis://127.0.0.1:6379``.
``redis://``, ``rediss://`` and ``nats://`` URLs are understood.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any, List, NamedTuple, Optional, TypeVar, Union

from ._errors import (
    Disconnected,
    InvalidArgument,
    KeymanError,
    NoKeys,
    OrchestratorError,
    Timeout,
    UnknownPlatform,
)
from ._native import Connection as _Connection

__all__ = [
    "KeyClient",
    "KeyPublisher",
    "PlatformStatus",
    "KeymanError",
    "Timeout",
    "NoKeys",
    "UnknownPlatform",
    "Disconnected",
    "InvalidArgument",
    "OrchestratorError",
    "DEFAULT_TIMEOUT",
    "DEFAULT_URL",
    "broker_url",
    "mask",
]

__version__ = "0.1.0"

#: The deadline of a call, in seconds, unless the client or the call says otherwise.
DEFAULT_TIMEOUT: float = 30.0

#: The broker used when neither ``url=`` nor the environment names one.
DEFAULT_URL: str = "redis://127.0.0.1:6379"

_log = logging.getLogger("keyman_client")


def broker_url(url: Optional[str] = None) -> str:
    """The broker URL a client uses: ``url`` if given, else ``REDIS_CONN_STRING``,
    else ``REDIS_URL`` (as Augur configures it), else :data:`DEFAULT_URL`."""
    for candidate in (url, os.environ.get("REDIS_CONN_STRING"), os.environ.get("REDIS_URL")):
        if candidate:
            return candidate
    return DEFAULT_URL


def mask(key: str) -> str:
    """``key`` as it may appear in a log line: its first characters (at most 4,
    and at most a quarter of it) and its length, e.g. ``ghp_…(40 chars)``."""
    text = str(key)
    return f"{text[: min(len(text) // 4, 4)]}…({len(text)} chars)"


def _seconds(timeout: Optional[float], default: float) -> float:
    value = default if timeout is None else timeout
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise InvalidArgument(f"timeout must be a number of seconds, not {type(value).__name__}") from None
    if math.isnan(seconds) or seconds < 0:
        raise InvalidArgument("timeout must be a number of seconds >= 0")
    return seconds


def _millis(refresh_timestamp: Union[int, float]) -> int:
    if isinstance(refresh_timestamp, bool) or not isinstance(refresh_timestamp, (int, float)):
        raise InvalidArgument(
            f"refresh_timestamp must be Unix seconds (int or float), not {type(refresh_timestamp).__name__}"
        )
    if math.isnan(refresh_timestamp) or refresh_timestamp <= 0:
        return 0
    if math.isinf(refresh_timestamp):
        return 2**63
    return min(int(math.ceil(refresh_timestamp * 1000)), 2**63)


_Self = TypeVar("_Self", bound="_Closing")


class _Closing:
    """Context-manager support shared by both clients."""

    _conn: _Connection

    def close(self) -> None:
        """Closes the client's connections. Idempotent; later calls raise :class:`Disconnected`."""
        self._conn.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return bool(self._conn.closed)

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class KeyClient(_Closing):
    """A worker's client: asks the orchestrator for keys and reports rate-limited
    and invalid ones. Augur's ``KeyClient(platform, logger)``, with deadlines.

    Thread-safe: one client may serve any number of threads at once, each reply
    going to the thread that asked. Fork-safe: in a child process it opens its
    own connections on first use.

    Args:
        platform: The default platform of requests (e.g. ``"github_rest"``).
        logger: Where warnings go (a failed call, before it raises); never a
            whole key. ``None`` means the ``keyman_client`` logger.
        url: The broker (see :func:`broker_url`).
        timeout: The default deadline of each call, in seconds, also used to
            connect.

    Raises:
        InvalidArgument: (a ``ValueError``) if ``platform`` is empty or the URL unusable.
        Disconnected: if the broker cannot be reached within ``timeout``.
    """

    def __init__(
        self,
        platform: str,
        logger: Optional[logging.Logger] = None,
        *,
        url: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if not platform:
            raise InvalidArgument("Platform must not be empty")
        self.platform: str = platform
        self.logger: logging.Logger = logger if logger is not None else _log
        self.timeout: float = _seconds(timeout, DEFAULT_TIMEOUT)
        self.url: str = broker_url(url)
        self._conn = _Connection(self.url, False, self.timeout)

    @property
    def requester_id(self) -> str:
        """The id that names this process's reply channel (unique per client and process)."""
        return str(self._conn.requester_id)

    def _warn(self, what: str, error: KeymanError) -> None:
        self.logger.warning("keyman: %s failed: %s: %s", what, type(error).__name__, error)

    def request(self, platform: Optional[str] = None, *, timeout: Optional[float] = None) -> str:
        """A fresh key of ``platform`` (default: the client's platform).

        Waits while all its keys are rate limited, but never past the deadline.

        Raises:
            Timeout: no key within ``timeout`` seconds (default: the client's).
            NoKeys: the platform has keys, but none usable (at once).
            UnknownPlatform: no key was ever published for it (at once).
            Disconnected: the broker cannot be reached.
        """
        platform = platform or self.platform
        try:
            return self._conn.request(platform, _seconds(timeout, self.timeout))
        except KeymanError as e:
            self._warn(f"key request for {platform}", e)
            raise

    def expire(
        self,
        key: str,
        refresh_timestamp: Union[int, float],
        platform: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
    ) -> str:
        """Reports ``key`` as rate limited until ``refresh_timestamp`` (Unix
        seconds, from the API's reset header) and returns another key.

        Raises the same exceptions as :meth:`request`, within one deadline for both steps.
        """
        platform = platform or self.platform
        try:
            return self._conn.expire(platform, key, _millis(refresh_timestamp), _seconds(timeout, self.timeout))
        except KeymanError as e:
            self._warn(f"expiry of key {mask(key)} for {platform}", e)
            raise

    def invalidate(self, key: str, platform: Optional[str] = None, *, timeout: Optional[float] = None) -> str:
        """Reports ``key`` as permanently invalid (HTTP 401) and returns another key.

        Raises the same exceptions as :meth:`request`, within one deadline for both steps.
        """
        platform = platform or self.platform
        try:
            return self._conn.invalidate(platform, key, _seconds(timeout, self.timeout))
        except KeymanError as e:
            self._warn(f"invalidation of key {mask(key)} for {platform}", e)
            raise

    def __repr__(self) -> str:
        return f"KeyClient(platform={self.platform!r}, requester_id={self.requester_id!r})"


class PlatformStatus(NamedTuple):
    """Key counts of one platform, from :meth:`KeyPublisher.status`."""

    platform: str
    """The platform."""
    fresh: int
    """Keys that may be handed out."""
    expired: int
    """Rate-limited keys, waiting for their refresh time."""
    invalid: int
    """Permanently invalid keys."""


class KeyPublisher(_Closing):
    """An admin's client: publishes and unpublishes keys, lists them, waits for
    the orchestrator, shuts it down. Augur's ``KeyPublisher()``, with deadlines.

    Args:
        url: The broker (see :func:`broker_url`).
        timeout: The default deadline of each call, in seconds, also used to connect.
        logger: Where warnings go (a failed call, before it raises); never a whole key.
    """

    def __init__(
        self,
        *,
        url: Optional[str] = None,
        timeout: float = DEFAULT_TIMEOUT,
        logger: Optional[logging.Logger] = None,
    ) -> None:
        self.logger: logging.Logger = logger if logger is not None else _log
        self.timeout: float = _seconds(timeout, DEFAULT_TIMEOUT)
        self.url: str = broker_url(url)
        self._conn = _Connection(self.url, True, self.timeout)

    @property
    def requester_id(self) -> str:
        """The id that names this process's reply channel."""
        return str(self._conn.requester_id)

    def _call(self, what: str, method: Any, *args: Any, timeout: Optional[float] = None) -> Any:
        try:
            return method(*args, _seconds(timeout, self.timeout))
        except KeymanError as e:
            self.logger.warning("keyman: %s failed: %s: %s", what, type(e).__name__, e)
            raise

    def publish(self, key: str, platform: str, *, timeout: Optional[float] = None) -> None:
        """Adds ``key`` to ``platform`` (creating the platform on first use). No reply is awaited."""
        self._call(f"publish of key {mask(key)} to {platform}", self._conn.publish, platform, key, timeout=timeout)

    def unpublish(self, key: str, platform: str, *, timeout: Optional[float] = None) -> None:
        """Removes ``key`` from ``platform``; an unknown key or platform is ignored."""
        self._call(
            f"unpublish of key {mask(key)} from {platform}", self._conn.unpublish, platform, key, timeout=timeout
        )

    def wait(self, timeout_seconds: float = 30, republish: bool = False) -> bool:
        """Waits for the orchestrator to acknowledge, having handled everything sent before.

        Returns ``True`` once it answered, ``False`` if it did not within
        ``timeout_seconds``. The ACK is sent again every second while waiting,
        so ``republish`` (kept for Augur's signature) changes nothing.

        Raises:
            InvalidArgument: (a ``ValueError``) if ``timeout_seconds`` is negative.
        """
        del republish
        if timeout_seconds is None or timeout_seconds < 0:
            raise InvalidArgument("timeout cannot be negative")
        return bool(self._call("wait for the orchestrator", self._conn.ping, timeout=timeout_seconds))

    def list_platforms(self, *, timeout: Optional[float] = None) -> List[str]:
        """The names of the platforms the orchestrator knows."""
        return list(self._call("platform list", self._conn.platforms, timeout=timeout))

    def list_keys(self, platform: str, *, timeout: Optional[float] = None) -> List[str]:
        """The fresh and rate-limited keys of ``platform``.

        Raises:
            UnknownPlatform: (a ``ValueError``, as Augur's) for a platform that does not exist.
        """
        return list(self._call(f"key list of {platform}", self._conn.keys, platform, timeout=timeout))

    def list_invalid_keys(self, platform: str, *, timeout: Optional[float] = None) -> List[str]:
        """The permanently invalid keys of ``platform``.

        Raises:
            UnknownPlatform: (a ``ValueError``, as Augur's) for a platform that does not exist.
        """
        return list(self._call(f"invalid key list of {platform}", self._conn.invalid_keys, platform, timeout=timeout))

    def status(self, *, timeout: Optional[float] = None) -> List[PlatformStatus]:
        """Key counts per platform (keyman's orchestrator only; Augur's does not answer)."""
        return [PlatformStatus(*row) for row in self._call("status", self._conn.status, timeout=timeout)]

    def shutdown(self, *, timeout: Optional[float] = None) -> None:
        """Asks the orchestrator to stop once it has handled everything sent before."""
        self._call("shutdown", self._conn.shutdown, timeout=timeout)

    def __repr__(self) -> str:
        return f"KeyPublisher(requester_id={self.requester_id!r})"
