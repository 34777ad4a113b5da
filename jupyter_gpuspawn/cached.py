"""A value read by a blocking function, kept for a short time and read off the event loop, one read
at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")


class ReadTimeout(TimeoutError):
    """A read outlasted the wait and there is no earlier value to give instead."""


class Cached(Generic[T]):
    """``await cached.get()`` returns a value at most ``seconds`` old; concurrent callers share one
    read.

    With ``timeout``, no caller waits longer than that for a read that does not finish (a GPU that
    fell off the bus can hang an NVML call for good): it gets ``stale(last value, note)`` instead,
    or :class:`ReadTimeout` before the first value. The hung read is not started again while it
    runs; callers keep waiting on it, and its value is kept if it ever comes."""

    def __init__(
        self,
        read: Callable[[], T],
        seconds: float,
        name: str,
        timeout: float | None = None,
        stale: Callable[[T, str], T] | None = None,
    ):
        self._read = read
        self.seconds = seconds
        self.name = name
        self.timeout = timeout if timeout and timeout > 0 else None
        self._stale = stale or (lambda value, note: value)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"gpuspawn-{name}")
        self._value: T | None = None
        self._taken_at = float("-inf")
        self._pending: asyncio.Future | None = None
        self._started_at = 0.0

    @property
    def last(self) -> T | None:
        """The value last read, however old (None before the first read); never reads."""
        return self._value

    def _fresh(self) -> bool:
        return time.monotonic() - self._taken_at < self.seconds

    def _store(self, value: T) -> T:
        self._value, self._taken_at = value, time.monotonic()
        return value

    def _finished(self, future: asyncio.Future) -> None:
        # also when every caller gave up waiting: a late value is still the newest there is (and a
        # late error is retrieved here, never logged as "never retrieved")
        if not future.cancelled() and future.exception() is None:
            self._store(future.result())

    async def get(self) -> T:
        if self._fresh():
            return self._value
        if self._pending is None or self._pending.done():
            loop = asyncio.get_running_loop()
            self._started_at = time.monotonic()
            self._pending = asyncio.ensure_future(loop.run_in_executor(self._executor, self._read))
            self._pending.add_done_callback(self._finished)
        pending = self._pending
        if self.timeout is None:
            return await asyncio.shield(pending)
        try:
            return await asyncio.wait_for(asyncio.shield(pending), self.timeout)
        except asyncio.TimeoutError:
            running = time.monotonic() - self._started_at
            if self._value is None:
                raise ReadTimeout(
                    f"reading the {self.name} has not finished after {running:.0f} s"
                ) from None
            age = time.monotonic() - self._taken_at
            return self._stale(
                self._value,
                f"These figures are {age:.0f} s old: reading them has not finished after "
                f"{running:.0f} s (a GPU driver call may be stuck).",
            )
