"""The exceptions of keyman_client.

Every exception the package raises on purpose is a :class:`KeymanError`. The
subclasses also derive from the built-in exception that fits, so code written
for Augur's client (which raises ``ValueError`` for a bad argument or an
unknown platform) keeps working. No message contains a whole key.
"""

from __future__ import annotations

__all__ = [
    "KeymanError",
    "Timeout",
    "NoKeys",
    "UnknownPlatform",
    "Disconnected",
    "InvalidArgument",
    "OrchestratorError",
]


class KeymanError(Exception):
    """The base class of every error keyman_client raises."""


class Timeout(KeymanError, TimeoutError):
    """No answer (or no fresh key) within the call's deadline.

    Also a built-in :class:`TimeoutError`. Raised as well when no orchestrator
    listens on the broker until the deadline passes.
    """


class NoKeys(KeymanError, LookupError):
    """The platform has no usable key: all are invalid or unpublished.

    Raised at once (Augur's orchestrator answers ``{"key": null}`` here and
    Augur's client returns ``None``). Also a built-in :class:`LookupError`.
    """


class UnknownPlatform(KeymanError, ValueError):
    """No key was ever published for this platform.

    Also a :class:`ValueError`, which is what Augur's ``list_keys`` raises for an
    unknown platform. Raised at once by keyman's orchestrator; Augur's own
    orchestrator never answers, so against it this surfaces as :class:`Timeout`.
    """


class Disconnected(KeymanError, ConnectionError):
    """The broker could not be reached until the deadline, or the client is closed.

    Also a built-in :class:`ConnectionError`.
    """


class InvalidArgument(KeymanError, ValueError):
    """An argument or the broker URL is unusable: an empty platform or key, a
    negative timeout, a URL of an unsupported scheme, refused credentials.

    Also a :class:`ValueError`, as Augur's client raises for an empty platform.
    """


class OrchestratorError(KeymanError, ValueError):
    """The orchestrator rejected the request or answered in a shape the call
    does not expect (Augur's client raises ``ValueError`` here)."""
