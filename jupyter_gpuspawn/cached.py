"""A value read by a blocking function, kept for a short time and read off the event loop, one read
at a time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")


class Cached(Generic[T]):
    """``await cached.get()`` returns a value at most ``seconds`` old; concurrent callers share one
    read."""

    def __init__(self, read: Callable[[], T], seconds: float, name: str):
        self._read = read
        self.seconds = seconds
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"gpuspawn-{name}")
        self._value: T | None = None
        self._taken_at = float("-inf")
        self._pending: asyncio.Future | None = None

    @property
    def last(self) -> T | None:
        """The value last read, however old (None before the first read); never reads."""
        return self._value

    def _fresh(self) -> bool:
        return time.monotonic() - self._taken_at < self.seconds

    def _store(self, value: T) -> T:
        self._value, self._taken_at = value, time.monotonic()
        return value

    async def get(self) -> T:
        if self._fresh():
            return self._value
        if self._pending is None or self._pending.done():
            loop = asyncio.get_running_loop()
            self._pending = asyncio.ensure_future(loop.run_in_executor(self._executor, self._read))
        value = await asyncio.shield(self._pending)
        return self._store(value)
