"""Type stubs of keyman_client._native, the Rust extension (PyO3) under keyman_client."""

from typing import List, Optional, Tuple

INNER_DEADLINE_SECONDS: int
"""The deadline keyman's Rust clients are given; the binding enforces the caller's, shorter one."""

class Connection:
    """A worker's or admin's connection to the broker, with its own runtime.

    Thread-safe; re-opened by itself in a forked child. Every method releases the
    GIL while it waits and returns or raises within ``timeout`` seconds.
    """

    def __init__(self, url: str, admin: bool, timeout: float) -> None:
        """Connects to the broker at ``url`` within ``timeout`` seconds."""
    @property
    def requester_id(self) -> str:
        """The id naming this process's reply channel ("" before a forked child used it)."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` was called."""
    def request(self, platform: str, timeout: float) -> str:
        """A fresh key of ``platform``."""
    def expire(self, platform: str, key: str, reset_ms: int, timeout: float) -> str:
        """Reports ``key`` rate limited until ``reset_ms`` (Unix ms); returns a fresh key."""
    def invalidate(self, platform: str, key: str, timeout: float) -> str:
        """Reports ``key`` invalid; returns a fresh key."""
    def publish(self, platform: str, key: str, timeout: float) -> None:
        """Adds ``key`` to ``platform``."""
    def publish_account(
        self, platform: str, key: str, account: Optional[str], limit: Optional[int], timeout: float
    ) -> None:
        """Adds ``key`` to ``platform`` as a key of ``account`` with ``limit`` calls per window as a hint."""
    def lease(self, platform: str, calls: int, timeout: float) -> Lease:
        """A key of ``platform`` lent with up to ``calls`` calls."""
    def observe(
        self, platform: str, key: str, status: int, headers: List[Tuple[str, str]], timeout: float
    ) -> str:
        """What a response made with the plain ``key`` said; returns the key for the next call."""
    def observe_lease(self, lease: Lease, status: int, headers: List[Tuple[str, str]], timeout: float) -> str:
        """Counts a response made with ``lease``; returns the key for the next call. If it fails, the lease has ended."""
    def release(self, lease: Lease, timeout: float) -> None:
        """Returns the unused calls of ``lease``; it has ended afterwards."""
    def unpublish(self, platform: str, key: str, timeout: float) -> None:
        """Removes ``key`` from ``platform``."""
    def ping(self, timeout: float) -> bool:
        """Whether the orchestrator acknowledged within ``timeout``."""
    def platforms(self, timeout: float) -> List[str]:
        """The platform names."""
    def keys(self, platform: str, timeout: float) -> List[str]:
        """The fresh and expired keys of ``platform``."""
    def invalid_keys(self, platform: str, timeout: float) -> List[str]:
        """The invalid keys of ``platform``."""
    def status(
        self, timeout: float
    ) -> List[
        Tuple[
            str, int, int, int, Optional[int], Optional[int], Optional[int], Optional[int], Optional[int], Optional[int]
        ]
    ]:
        """``(platform, fresh, expired, invalid, next_refresh, remaining, leased, burn_per_hour, dry_at,
        clock_lag_ms)`` per platform; the last six ``None`` when unknown."""
    def shutdown(self, timeout: float) -> None:
        """Asks the orchestrator to stop."""
    def close(self) -> None:
        """Closes the connection; idempotent."""

class Lease:
    """A key lent with up to a number of calls (``keyman_client.Lease`` wraps it).

    Thread-safe: calls that change it take turns; reading it never waits. In a
    process other than the one that took it, it has ended. Its ``repr`` masks the key.
    """

    @property
    def key(self) -> str:
        """The key, for the next call."""
    @property
    def platform(self) -> str:
        """The platform it is a key of."""
    @property
    def wanted(self) -> int:
        """The calls asked for with each lease."""
    @property
    def calls(self) -> Optional[int]:
        """The calls lent with the key; ``None`` for a key without a lease."""
    @property
    def used(self) -> int:
        """Calls observed with the key since it was lent."""
    @property
    def calls_left(self) -> Optional[int]:
        """Calls the lease still allows (0 once ended); ``None`` for a key without a lease."""
    @property
    def until(self) -> Optional[int]:
        """When the lease ends (Unix seconds); ``None`` for a key without a lease."""
    @property
    def ended(self) -> bool:
        """Whether it has ended: released, its renewal failed, or taken by another process."""
