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
- quota reporting: :meth:`KeyClient.observe` takes each response's status code
  and headers and says which key to use next; :meth:`KeyClient.lease` borrows a
  number of calls with a key (:class:`Lease`), so that workers never overdraw a
  key together;
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
from ._quota import HeadersLike, Lease
from ._quota import header_pairs as _header_pairs
from ._quota import status_code as _status_code

__all__ = [
    "KeyClient",
    "KeyPublisher",
    "Lease",
    "HeadersLike",
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

    def observe(
        self,
        key: Union[str, Lease],
        status: int,
        headers: HeadersLike = None,
        platform: Optional[str] = None,
        *,
        timeout: Optional[float] = None,
    ) -> str:
        """Hands over what the API answered to a call made with ``key`` and
        returns the key for the next call. One call per response.

        ``status`` is the response's status code, ``headers`` its headers (a
        ``dict``, ``requests``' or ``httpx``' headers, anything with
        ``.items()``, or ``(name, value)`` pairs; names in any case). They are
        read for GitHub's ``x-ratelimit-*``, GitLab's ``RateLimit-*``,
        ``Retry-After`` and ``Date`` (to correct for the platform's clock), and:

        - a 401 reports the key invalid and returns another (INVALIDATE + NEW);
        - a 403 or 429 that is a rate limit (no calls remaining, or
          ``Retry-After``), or any response that says no calls remain, reports
          the key rate limited until the reset and returns another
          (EXPIRE + NEW); a 403 with calls remaining keeps the key;
        - anything else keeps the key: the same key is returned.

        ``key`` is a plain key (``str``, from :meth:`request`) or a
        :class:`Lease` (from :meth:`lease`). A lease counts the call and is
        updated in place: when its calls are used up (or it is about to end)
        it is returned, with what the headers said about the key's remaining
        calls, and another taken; when the key was refused, the lease is
        returned, the key reported and another leased. Against an
        orchestrator that speaks no quota extension (Augur's) nothing but
        EXPIRE, INVALIDATE and NEW is sent.

        Args:
            platform: The platform of a plain key (default: the client's). For
                a lease it must be the lease's platform, or ``None``.
            timeout: The deadline of the whole call (report and next key).

        Raises:
            InvalidArgument: (a ``ValueError``) for a status that is not an
                HTTP status code, headers that are neither a mapping nor
                pairs, a lease of another platform, or a lease that has ended.
            Timeout, NoKeys, UnknownPlatform, Disconnected: as :meth:`request`,
                when another key is needed. After any of them the old key may
                already be reported, and a lease has ended: take a new key
                (:meth:`request`) or lease (:meth:`lease`).
        """
        code = _status_code(status)
        pairs = _header_pairs(headers)
        seconds = _seconds(timeout, self.timeout)
        if isinstance(key, Lease):
            if platform is not None and platform != key.platform:
                raise InvalidArgument(f"the lease is of platform {key.platform}, not {platform}")
            try:
                return str(self._conn.observe_lease(key._state, code, pairs, seconds))
            except KeymanError as e:
                self._warn(f"observe of a {code} response with leased key {mask(key.key)} for {key.platform}", e)
                raise
        if not isinstance(key, str):
            raise InvalidArgument(f"key must be a str or a Lease, not {type(key).__name__}")
        platform = platform or self.platform
        try:
            return str(self._conn.observe(platform, key, code, pairs, seconds))
        except KeymanError as e:
            self._warn(f"observe of a {code} response with key {mask(key)} for {platform}", e)
            raise

    def lease(self, calls: int, platform: Optional[str] = None, *, timeout: Optional[float] = None) -> Lease:
        """A key of ``platform`` (default: the client's) lent with up to
        ``calls`` calls: a :class:`Lease`. Make at most ``lease.calls_left``
        calls with ``lease.key``, and hand each response to :meth:`observe`.

        keyman's orchestrator never lends more calls than the key's account
        has left (above its floor, less what other leases hold), so workers
        with leases never overdraw a key together; a key whose quota is not
        known yet lends 1 call until a response tells. Waits, like
        :meth:`request`, while no key can lend a call. Against an orchestrator
        that lends no calls (Augur's) the lease is a plain key
        (``lease.calls`` is ``None``).

        ``with client.lease(100) as lease:`` returns the unused calls at the end.

        Raises:
            InvalidArgument: (a ``ValueError``) if ``calls`` is not an int of at least 1.
            Timeout, NoKeys, UnknownPlatform, Disconnected: as :meth:`request`.
        """
        if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
            raise InvalidArgument("calls must be an int of at least 1")
        platform = platform or self.platform
        try:
            state = self._conn.lease(platform, min(calls, 2**64 - 1), _seconds(timeout, self.timeout))
        except KeymanError as e:
            self._warn(f"lease for {platform}", e)
            raise
        return Lease(state, self)

    def release(self, lease: Lease, *, timeout: Optional[float] = None) -> None:
        """Returns the unused calls of ``lease`` to its key's account (for a
        worker that stops before they are used), and waits until keyman's
        orchestrator has them back (a lease or ``status()`` asked afterwards,
        from any process, counts them); the lease has ended afterwards, also when the return could not be sent in time (its calls
        then count as used until ``lease.until``). Nothing to do for a lease
        that has ended, a key without a lease, or a lease taken by another
        process (before a fork).

        Raises:
            InvalidArgument: (a ``ValueError``) if ``lease`` is not a :class:`Lease`.
            Timeout: the return was not taken in within the deadline, or another thread's
                ``observe`` of the lease took all of it (then the lease is as it was).
            Disconnected: the broker could not be reached in time (the lease
                has ended), or the client is closed (the lease is as it was).
        """
        if not isinstance(lease, Lease):
            raise InvalidArgument(f"lease must be a Lease, not {type(lease).__name__}")
        try:
            self._conn.release(lease._state, _seconds(timeout, self.timeout))
        except KeymanError as e:
            self._warn(f"release of the lease of key {mask(lease.key)} for {lease.platform}", e)
            raise

    def __repr__(self) -> str:
        return f"KeyClient(platform={self.platform!r}, requester_id={self.requester_id!r})"


class _PlatformCounts(NamedTuple):
    platform: str
    fresh: int
    expired: int
    invalid: int


class PlatformStatus(_PlatformCounts):
    """Key counts and quota figures of one platform, from :meth:`KeyPublisher.status`.

    A tuple of the four counts ``(platform, fresh, expired, invalid)`` (it
    unpacks, indexes and compares as that tuple), with the quota figures as
    further attributes that are not part of the tuple, like
    :class:`os.stat_result`: ``None`` where the orchestrator knows nothing.
    """

    _quota_fields = ("next_refresh", "remaining", "leased", "burn_per_hour", "dry_at", "clock_lag_ms")

    def __new__(
        cls,
        platform: str,
        fresh: int,
        expired: int,
        invalid: int,
        *,
        next_refresh: Optional[int] = None,
        remaining: Optional[int] = None,
        leased: Optional[int] = None,
        burn_per_hour: Optional[int] = None,
        dry_at: Optional[int] = None,
        clock_lag_ms: Optional[int] = None,
    ) -> "PlatformStatus":
        self = super().__new__(cls, platform, fresh, expired, invalid)
        self.__dict__.update(
            _next_refresh=next_refresh,
            _remaining=remaining,
            _leased=leased,
            _burn_per_hour=burn_per_hour,
            _dry_at=dry_at,
            _clock_lag_ms=clock_lag_ms,
        )
        return self

    @property
    def next_refresh(self) -> Optional[int]:
        """When the first rate-limited key is fresh again (Unix seconds)."""
        return self.__dict__.get("_next_refresh")

    @property
    def remaining(self) -> Optional[int]:
        """The calls the platform's keys have left, as reported by workers
        (less the calls lent in leases)."""
        return self.__dict__.get("_remaining")

    @property
    def leased(self) -> Optional[int]:
        """The calls lent in leases not yet returned; ``None`` when none are."""
        return self.__dict__.get("_leased")

    @property
    def burn_per_hour(self) -> Optional[int]:
        """The calls spent per hour lately."""
        return self.__dict__.get("_burn_per_hour")

    @property
    def dry_at(self) -> Optional[int]:
        """When the remaining calls run out at that rate (Unix seconds)."""
        return self.__dict__.get("_dry_at")

    @property
    def clock_lag_ms(self) -> Optional[int]:
        """How far the platform's clock runs behind ours, in milliseconds, as
        learnt from rate-limit resets reported after they had passed by our
        clock (keyman then holds such keys that much longer)."""
        return self.__dict__.get("_clock_lag_ms")

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        quota = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._quota_fields)
        return f"PlatformStatus({counts}, {quota})"


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

    def publish(
        self,
        key: str,
        platform: str,
        *,
        account: Optional[str] = None,
        limit: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> None:
        """Adds ``key`` to ``platform`` (creating the platform on first use). No reply is awaited.

        Args:
            account: The account whose quota the key shares (the personal
                access tokens of one GitHub user share that user's 5 000 calls
                an hour; a rate limit of one is a rate limit of all). Without
                it a key stays in the account it has (its own, unless it was
                published to one).
            limit: The account's calls per window, a hint for leases until a
                worker's report says otherwise.

        Augur's orchestrator ignores ``account`` and ``limit`` and publishes the key.

        Raises:
            InvalidArgument: (a ``ValueError``) for an empty key, platform or
                account, or a ``limit`` that is not an int of at least 1.
        """
        what = f"publish of key {mask(key)} to {platform}"
        if account is None and limit is None:
            self._call(what, self._conn.publish, platform, key, timeout=timeout)
            return
        if account is not None and not isinstance(account, str):
            raise InvalidArgument(f"account must be a str, not {type(account).__name__}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidArgument("limit must be an int of at least 1")
        if limit is not None:
            limit = min(limit, 2**64 - 1)
        self._call(what, self._conn.publish_account, platform, key, account, limit, timeout=timeout)

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
        """Key counts and quota figures per platform (keyman's orchestrator only;
        Augur's does not answer)."""
        rows = self._call("status", self._conn.status, timeout=timeout)
        return [
            PlatformStatus(
                platform,
                fresh,
                expired,
                invalid,
                next_refresh=next_refresh,
                remaining=remaining,
                leased=leased,
                burn_per_hour=burn_per_hour,
                dry_at=dry_at,
                clock_lag_ms=clock_lag_ms,
            )
            for (
                platform,
                fresh,
                expired,
                invalid,
                next_refresh,
                remaining,
                leased,
                burn_per_hour,
                dry_at,
                clock_lag_ms,
            ) in rows
        ]

    def shutdown(self, *, timeout: Optional[float] = None) -> None:
        """Asks the orchestrator to stop once it has handled everything sent before."""
        self._call("shutdown", self._conn.shutdown, timeout=timeout)

    def __repr__(self) -> str:
        return f"KeyPublisher(requester_id={self.requester_id!r})"
