"""Type stubs of keyman_client._native, the Rust extension (PyO3) under keyman_client."""

from typing import List, Tuple

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
    def status(self, timeout: float) -> List[Tuple[str, int, int, int]]:
        """``(platform, fresh, expired, invalid)`` per platform."""
    def shutdown(self, timeout: float) -> None:
        """Asks the orchestrator to stop."""
    def close(self) -> None:
        """Closes the connection; idempotent."""
