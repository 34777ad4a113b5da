"""The GPU queue: pure ordering and positions for starts that wait for GPUs.

No asyncio, no Docker, no I/O, no clock: every call that needs the time takes ``now`` (seconds, any
monotonic origin). The spawner awaits; this module only decides who is where and who gets GPUs next.

Order, within one pool (a course's GPUs; waiters in different pools never block each other):

- Users who hold no GPUs on another server come first, then users who already do; within each group,
  join order. The sort key is ``(holds_other, seq)``, fixed when a ticket joins.
- Consequence: a waiter who holds no GPUs never loses a place. A later arrival gets a larger
  ``seq``, so nobody can be inserted ahead of them, and a leave or a grant only moves people up. A
  waiter who already holds GPUs on another server yields to every later arrival holding none: they
  have a GPU to work on meanwhile.

Granting is strict first come, first served per pool (:meth:`GPUQueue.grant`): the head of a pool is
tried first, and when it cannot be served nobody behind it in that pool is tried. A later, smaller
request never overtakes the head, so no request starves. The price: a 2-GPU request at the head with
1 GPU free keeps that GPU idle for itself until a second one frees, even while a 1-GPU request waits
behind it. Letting small requests backfill would use that GPU now, but a steady stream of 1-GPU
requests could then keep the 2-GPU request waiting forever.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from .allocation import AllocationError, GPURequest, ServerKey

Grant = tuple["Ticket", tuple[str, ...]]


@dataclass(frozen=True)
class Ticket:
    """One waiting start. Frozen: its place (``order``) must not change while it waits."""

    key: ServerKey  # (user, server name), as GPURequest.key
    request: GPURequest
    pool: str
    holds_other: bool  # the user held GPUs on another server when this ticket joined
    seq: int  # join order, unique within one queue
    joined_at: float
    deadline: float  # math.inf: waits until granted or removed

    @property
    def order(self) -> tuple[bool, int]:
        return (self.holds_other, self.seq)


class GPUQueue:
    def __init__(self) -> None:
        self._seq = 0
        self._tickets: dict[ServerKey, Ticket] = {}
        # pool -> its tickets, kept sorted by Ticket.order (insertion is O(n): a class is tens of
        # waiters)
        self._pools: dict[str, list[Ticket]] = {}

    # ---- changes ---------------------------------------------------------------------------------
    def join(
        self,
        request: GPURequest,
        *,
        pool: str,
        holds_other: bool,
        now: float,
        timeout: float | None = None,
    ) -> Ticket:
        """Queue ``request`` in ``pool`` until ``now + timeout`` (None: no deadline)."""
        key = request.key
        if key in self._tickets:
            # Replacing would silently move a server to the back (or the front): the caller leaves
            # first.
            raise ValueError(f"server {key!r} is already waiting for a GPU")
        if request.count < 1:
            raise ValueError("only a request for GPUs can wait for GPUs")
        if timeout is not None and (math.isnan(timeout) or timeout < 0):
            raise ValueError(f"queue timeout must be a number of seconds >= 0, got {timeout!r}")
        deadline = math.inf if timeout is None else now + timeout
        self._seq += 1
        ticket = Ticket(key, request, pool, bool(holds_other), self._seq, now, deadline)
        tickets = self._pools.setdefault(pool, [])
        # Behind every ticket that sorts before it; a non-holder has the largest seq of all
        # non-holders, so it lands behind them all and ahead of the holders.
        index = len(tickets)
        while index and tickets[index - 1].order > ticket.order:
            index -= 1
        tickets.insert(index, ticket)
        self._tickets[key] = ticket
        return ticket

    def leave(self, key: ServerKey) -> Ticket | None:
        """Remove a waiter (cancel, timeout, stop); None when it was not waiting."""
        ticket = self._tickets.pop(key, None)
        if ticket is not None:
            tickets = self._pools[ticket.pool]
            tickets.remove(ticket)
            if not tickets:
                # pools come and go with courses: do not accumulate them
                del self._pools[ticket.pool]
        return ticket

    def grant(self, try_allocate: Callable[[Ticket], tuple[str, ...]]) -> list[Grant]:
        """Serve waiters in order; return ``(ticket, result)`` for each one served, in the order
        served.

        ``try_allocate(ticket)`` reserves GPUs and returns them (the UUIDs) or raises
        AllocationError. A success removes the ticket; the first AllocationError stops that pool for
        this call (strict FIFO, see the module docstring) while other pools go on. Pools are
        interleaved by ``Ticket.order``, so where pools draw on the same GPUs the earlier waiter is
        tried first.

        Every AllocationError blocks its pool, UserGPULimit included: refuse over-limit requests
        before they join, or one would block its pool until the user stops another server. Any other
        exception propagates and the ticket that raised stays queued; tickets served earlier in the
        same call are removed already, so a ``try_allocate`` that can fail that way must hand its
        results over itself.
        """
        granted: list[Grant] = []
        blocked: set[str] = set()
        # Walk a snapshot: if try_allocate joins or leaves, no ticket is skipped or tried twice.
        for ticket in sorted(self._tickets.values(), key=lambda t: t.order):
            if ticket.pool in blocked or self._tickets.get(ticket.key) is not ticket:
                continue
            try:
                result = try_allocate(ticket)
            except AllocationError:
                blocked.add(ticket.pool)
                continue
            self.leave(ticket.key)
            granted.append((ticket, result))
        return granted

    # ---- queries ---------------------------------------------------------------------------------
    def position(self, key: ServerKey) -> tuple[int, int] | None:
        """(1-based place within its pool, number waiting in that pool), or None when not
        waiting."""
        ticket = self._tickets.get(key)
        if ticket is None:
            return None
        tickets = self._pools[ticket.pool]
        return (tickets.index(ticket) + 1, len(tickets))

    def position_if_joined(self, pool: str, *, holds_other: bool) -> int:
        """The place a request joining ``pool`` now would get (the spawn form's "you would be
        4th")."""
        tickets = self._pools.get(pool, [])
        if holds_other:
            return len(tickets) + 1
        return sum(1 for t in tickets if not t.holds_other) + 1

    def waiting(self, pool: str | None = None) -> list[Ticket]:
        """Waiters in ``pool`` in order, or all waiters (pool by pool, each in order) for None."""
        if pool is not None:
            return list(self._pools.get(pool, ()))
        return [ticket for tickets in self._pools.values() for ticket in tickets]

    def __len__(self) -> int:
        return len(self._tickets)

    def __contains__(self, key: object) -> bool:
        return key in self._tickets
