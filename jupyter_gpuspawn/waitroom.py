"""Where starts wait for GPUs: the async side of the GPU queue (queue.py holds the order, this
awaits it).

One dispatcher task per hub process runs while anyone waits: every ``poll`` seconds it offers the
free GPUs to the queue in order (choose + reserve in one synchronous step, as every allocation), and
hands each grant to the start that waits for it. Polling keeps every path that frees a GPU (stop, a
crash the hub's poll noticed, the reconcile) free of callbacks, and costs one pass over the queue:
the hand-off latency is at most ``poll`` plus a snapshot read (benchmarks/queue_handoff.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from .allocation import AllocationError, GPUAllocator, GPURequest, NoGPUAvailable
from .queue import GPUQueue

log = logging.getLogger("jupyter_gpuspawn.waitroom")

# One pool per hub: the allocator chooses among all of the host's GPUs (courses do not pick a model
# yet).
POOL = "gpu"


class QueueTimeout(Exception):
    """Nobody freed a GPU in time; the start holds nothing."""


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def pool_label(gpus) -> str:
    """What the queue waits for, in the student's words: the GPU model (or MIG slice) when the host
    has one."""
    names = {gpu.label for gpu in gpus}
    return names.pop() if len(names) == 1 else "a GPU"


def waiting_message(position: int, total: int, label: str) -> str:
    return f"Waiting for a GPU: you are {ordinal(position)} in line ({total} waiting for {label})"


class WaitRoom:
    def __init__(self, allocator: GPUAllocator, poll: float = 0.2):
        self.allocator = allocator
        self.queue = GPUQueue()
        self.poll = poll
        self._grants: dict[tuple[str, str], asyncio.Future] = {}
        self._dispatcher: asyncio.Future | None = None

    def __len__(self):
        return len(self.queue)

    def waiting_for(self, user: str) -> bool:
        """Whether ``user`` already has a start in line (another named server)."""
        return any(ticket.request.user == user for ticket in self.queue.waiting())

    async def wait(
        self,
        request: GPURequest,
        *,
        holds_other: bool,
        timeout: float,
        gpus: Callable[[], Awaitable[tuple]],
        on_place: Callable[[int, int], None],
    ) -> tuple:
        """Wait until the queue grants ``request`` its GPUs (already reserved), or raise
        QueueTimeout, or the AllocationError that ended its turn (a per-user limit reached
        meanwhile). ``gpus()`` returns the current inventory; ``on_place(position, waiting)`` is
        called whenever the place in line changes."""
        loop = asyncio.get_running_loop()
        key = request.key
        ticket = self.queue.join(
            request, pool=POOL, holds_other=holds_other, now=loop.time(), timeout=timeout
        )
        granted = loop.create_future()
        self._grants[key] = granted
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.ensure_future(self._dispatch(gpus))
        shown, taken = None, False
        try:
            while True:
                if granted.done():
                    result = granted.result()  # raises the AllocationError that ended its turn
                    taken = True
                    return result
                place = self.queue.position(key)
                if place and place != shown:
                    shown = place
                    on_place(*place)
                remaining = ticket.deadline - loop.time()
                if remaining <= 0:
                    raise QueueTimeout()
                await asyncio.wait({granted}, timeout=min(remaining, self.poll))
        finally:
            self.queue.leave(key)
            self._grants.pop(key, None)
            if (
                not taken
                and granted.done()
                and not granted.cancelled()
                and granted.exception() is None
            ):
                # granted at the last moment to a start that gave up (or was cancelled)
                self.allocator.release(*key)

    async def _dispatch(self, gpus: Callable[[], Awaitable[tuple]]):
        while len(self.queue):
            try:
                inventory = await gpus()
            # the inventory is unreadable for a moment: the waiters keep their places
            except Exception:
                await asyncio.sleep(1)
                continue
            try:
                self.dispatch_once(inventory)
            except Exception:  # a bug must not stall the line: log it and keep offering GPUs
                log.exception("GPU queue: dispatch failed")
            await asyncio.sleep(self.poll)

    def dispatch_once(self, inventory):
        """Offer the free GPUs of ``inventory`` to the queue, in order; hand each grant to its
        waiter."""

        def try_allocate(ticket):
            try:
                return self.allocator.allocate(ticket.request, inventory)
            except NoGPUAvailable:
                raise  # not yet: the head keeps its place, and its pool waits behind it
            except AllocationError as e:
                # this request can no longer be met as asked: its turn ends with the reason
                return e
            except Exception as e:  # never lose the grants made before it in this pass
                log.exception("GPU queue: allocating for %s failed", ticket.key)
                return e

        for ticket, result in self.queue.grant(try_allocate):
            granted = self._grants.get(ticket.key)
            if granted is None or granted.done():
                if not isinstance(result, Exception):
                    self.allocator.release(*ticket.key)
            elif isinstance(result, Exception):
                granted.set_exception(result)
            else:
                granted.set_result(result)
