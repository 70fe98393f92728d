"""Seats this process knows to be SOLD, so that Checkout can refuse a sold seat without
calling its Ticket.

The set is in memory only, per process, and bounded: at most `cap` seats (the least
recently used go first) and each for at most `ttl_s` seconds. SOLD is final in
`service/ticket.py`, so an entry can only be stale if an operator resets a Ticket's
state (`kv clear`, a purge): such a seat is refused for at most `ttl_s` more, or until
the service restarts, which empties the set. A seat that is missing costs the old path,
one call to its Ticket, which puts it back.

Safety under replay rests on the caller: Checkout reads the set only in an attempt
whose journal holds nothing but its input. Such an attempt has no hold call recorded,
so it has sold nothing; an attempt that replays a journal skips the set and follows its
recorded calls. See docs/sold-out-seats.md."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_CAP = 50_000  # seat ids of a few large shows: a few MB at most
DEFAULT_TTL_S = 60.0  # how long a reset Ticket can go on being refused


class SoldSeats:
    """A bounded, expiring set of ticket ids known SOLD."""

    def __init__(
        self,
        cap: int = DEFAULT_CAP,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cap < 1:
            raise ValueError(f"cap must be at least 1, got {cap}")
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be more than 0, got {ttl_s}")
        self.cap = cap
        self.ttl_s = ttl_s
        self._clock = clock
        self._until: OrderedDict[str, float] = OrderedDict()  # ticket id -> expiry

    def add(self, ticket_id: str) -> None:
        """Remember `ticket_id` as sold for `ttl_s` from now; the oldest goes if full."""
        self._until[ticket_id] = self._clock() + self.ttl_s
        self._until.move_to_end(ticket_id)
        while len(self._until) > self.cap:
            self._until.popitem(last=False)

    def known_sold(self, ticket_id: str) -> bool:
        """Whether `ticket_id` is known sold (and not expired); a hit counts as a use."""
        until = self._until.get(ticket_id)
        if until is None:
            return False
        if self._clock() >= until:
            del self._until[ticket_id]
            return False
        self._until.move_to_end(ticket_id)
        return True

    def clear(self) -> None:
        self._until.clear()

    def __len__(self) -> int:
        return len(self._until)


#: The process's set, fed by Checkout's own confirms and by Ticket's "already sold".
sold_seats = SoldSeats()
