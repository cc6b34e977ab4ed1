"""Quota reporting: :class:`Lease`, a key lent with a number of calls, and how
the status code and headers of an API's response are read for
:meth:`KeyClient.observe <keyman_client.KeyClient.observe>`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, List, Optional, Protocol, Tuple, Union

from ._errors import InvalidArgument, KeymanError
from ._native import Lease as _LeaseState

if TYPE_CHECKING:
    from . import KeyClient

__all__ = ["Lease", "HeadersLike"]


class _HasItems(Protocol):
    def items(self) -> Iterable[Tuple[Any, Any]]: ...


#: What :meth:`KeyClient.observe` takes as a response's headers: a ``dict``,
#: the headers of ``requests`` (``CaseInsensitiveDict``), ``httpx``,
#: ``aiohttp`` or ``urllib`` (anything with ``.items()``), a list of
#: ``(name, value)`` pairs, or ``None``. Names in any case; values ``str``,
#: ``bytes`` or numbers.
HeadersLike = Union[_HasItems, Iterable[Tuple[Any, Any]], None]


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    return str(value)


def header_pairs(headers: HeadersLike) -> List[Tuple[str, str]]:
    """``headers`` as a list of ``(name, value)`` text pairs (see :data:`HeadersLike`).

    A header given more than once stays apart where the object keeps it apart
    (``httpx``'s ``multi_items()``, ``urllib``'s and ``aiohttp``'s ``items()``).
    No message says a header's value.

    Raises:
        InvalidArgument: (a ``ValueError``) if ``headers`` is a string, or not
            a mapping nor an iterable of pairs.
    """
    if headers is None:
        return []
    if isinstance(headers, (str, bytes, bytearray)):
        raise InvalidArgument("headers must be a mapping or (name, value) pairs, not a string")
    multi = getattr(headers, "multi_items", None)
    items = getattr(headers, "items", None)
    pairs: Any = multi() if callable(multi) else items() if callable(items) else headers
    try:
        iterator = iter(pairs)
    except TypeError:
        raise InvalidArgument(
            f"headers must be a mapping or (name, value) pairs, not {type(headers).__name__}"
        ) from None
    out = []
    for pair in iterator:
        try:
            name, value = pair
        except (TypeError, ValueError):
            raise InvalidArgument("each header must be a (name, value) pair") from None
        out.append((_text(name), _text(value)))
    return out


def status_code(status: Any) -> int:
    """``status`` as an HTTP status code: an ``int`` (or ``http.HTTPStatus``) from 100 to 999.

    Raises:
        InvalidArgument: (a ``ValueError``) for anything else.
    """
    if isinstance(status, bool) or not isinstance(status, int):
        raise InvalidArgument(f"status must be an HTTP status code (an int), not {type(status).__name__}")
    if not 100 <= status <= 999:
        raise InvalidArgument(f"status must be an HTTP status code from 100 to 999, not {int(status)}")
    return int(status)


class Lease:
    """A key lent with a number of calls, from :meth:`KeyClient.lease`.

    Make at most :attr:`calls_left` calls with :attr:`key`, and hand each
    response to :meth:`KeyClient.observe`, which counts it and updates the
    lease in place: when its calls are used up (or it is about to end) it is
    returned and another taken, maybe of the same key; when the platform
    refused the key (403/429 with no calls left, 401) the key is reported and
    another leased. Read :attr:`key` again after each ``observe`` (or use what
    it returns). Orchestrators that lend no calls (Augur's) give a key without
    a lease: :attr:`calls` is ``None`` and the key is used until the platform
    refuses a call, as with :meth:`KeyClient.request`.

    ``with client.lease(100) as lease:`` returns the unused calls at the end
    (:meth:`KeyClient.release`); a lease never returned ends at :attr:`until`,
    its calls counted as used.

    A lease belongs to the thread that uses it. Shared between threads it is
    safe (``observe`` calls take turns and every call is counted), but a thread
    may then make a call with a key whose lease another thread has just
    returned: give each thread its own. It belongs to the process that took it:
    in a forked child it has :attr:`ended`.

    Its ``repr`` masks the key; a lease is not made directly.
    """

    __slots__ = ("_state", "_client")

    def __init__(self, state: _LeaseState, client: "KeyClient") -> None:
        self._state = state
        self._client = client

    @property
    def key(self) -> str:
        """The key, for the next call."""
        return str(self._state.key)

    @property
    def platform(self) -> str:
        """The platform it is a key of."""
        return str(self._state.platform)

    @property
    def wanted(self) -> int:
        """The calls asked for with each lease (the ``calls`` given to :meth:`KeyClient.lease`)."""
        return int(self._state.wanted)

    @property
    def calls(self) -> Optional[int]:
        """The calls lent with the key (at most :attr:`wanted`); ``None`` for a
        key without a lease (an orchestrator that lends none)."""
        return self._state.calls

    @property
    def used(self) -> int:
        """The responses observed with the key since it was lent."""
        return int(self._state.used)

    @property
    def calls_left(self) -> Optional[int]:
        """The calls the lease still allows (0 once it has ended); ``None`` for a key without a lease."""
        return self._state.calls_left

    @property
    def until(self) -> Optional[int]:
        """When the lease ends, in Unix seconds by the orchestrator's clock (its
        calls then count as used); ``None`` for a key without a lease."""
        return self._state.until

    @property
    def ended(self) -> bool:
        """Whether the lease has ended: released, its renewal failed (an
        exception from :meth:`KeyClient.observe`), or taken by another process.
        An ended lease cannot be observed: take a new one."""
        return bool(self._state.ended)

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._client.release(self)
        except KeymanError:
            pass  # logged by release(); the lease ends at `until` by itself

    def __repr__(self) -> str:
        return repr(self._state)
