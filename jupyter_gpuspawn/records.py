"""The hub process's way to the usage records: one writer thread, never a failed spawn, and a pause
after a failure. Budgets are read through it.

A failure is never a failed spawn (the reconcile opens missing records and closes finished ones from
the running servers), and after one the records are left alone for ``RETRY_SECONDS``: a locked or
unreachable database must not hold up every start, form and idle check behind it (budgets are not
enforced meanwhile).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from .budget import BudgetState, next_week_start, week_start
from .usage import Hold, UsageDB

RETRY_SECONDS = 60  # after the records failed, how long they are left alone


class UsageRecords:
    """One usage database (by URL) as the spawners of one hub process use it."""

    def __init__(self, url: str, log):
        self.url = url
        self.log = log
        self._db: UsageDB | None = None
        # one thread: writes stay in order, and SQLite sees one writer
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="gpuspawn-usage")
        self._writes: set = set()  # writes not waited for, kept until done
        self._down_until = 0.0  # loop time until which the records are not tried again

    @property
    def db(self) -> UsageDB:
        if self._db is None:
            self._db = UsageDB(self.url)
        return self._db

    async def call(self, method, *args):
        """UsageDB.method(db, *args) in the usage thread; None when the records cannot be used."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._down_until:
            return None
        try:
            return await loop.run_in_executor(self._executor, method, self.db, *args)
        except Exception as e:
            if loop.time() >= self._down_until:
                self.log.error(
                    "GPU usage records at %s unavailable (%s); budgets are not enforced and "
                    "records are "
                    "repaired from the containers once it answers; trying again in %d s",
                    self.url,
                    e,
                    RETRY_SECONDS,
                )
            self._down_until = loop.time() + RETRY_SECONDS
            return None

    def later(self, method, *args):
        """UsageDB.method(db, *args) without waiting for it (clear_state is synchronous; a start
        must not wait on a slow database); the usage thread keeps the order, the task is kept until
        done."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test's clear_state): the reconcile catches up
        task = loop.create_task(self.call(method, *args))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def follow(self, servers, in_flight, listed_at: float, first: bool):
        """After each reconcile round: the open records follow the running servers. Records of
        servers that vanished are closed when last seen: "hub restart" on the hub's first round
        (gone while it was down), "crashed" later (docker rm -f, dockerd lost them)."""
        holds = [
            Hold(
                s.assignment.user,
                s.assignment.server,
                s.assignment.course,
                s.assignment.gpus,
                s.assignment.share,
                start=s.created or None,
            )
            for s in servers
            if s.assignment.gpus
        ]
        closed = await asyncio.get_running_loop().run_in_executor(
            self._executor,
            self.db.reconcile,
            holds,
            in_flight,
            listed_at,
            time.time(),
            "hub restart" if first else "crashed",
        )
        for user, server, uuid, _end in closed:
            self.log.info(
                "GPU usage: closed the record of %s on %s: its container is gone",
                f"{user}/{server}".rstrip("/"),
                uuid,
            )

    async def budget(
        self, user: str, limit: float | None, week_start_spec: str, course_id: str, title: str
    ) -> BudgetState | None:
        """``user``'s GPU-hour budget of ``limit`` hours (plus grants) in ``course_id`` this week;
        None without a limit, or when the records cannot be read (logged): a budget nobody can count
        is not enforced."""
        if limit is None:
            return None
        now = time.time()
        start, reset = week_start(now, week_start_spec), next_week_start(now, week_start_spec)
        used = await self.call(UsageDB.gpu_seconds, user, start, now, course_id)
        granted = await self.call(UsageDB.granted_hours, user, start, reset, course_id)
        if used is None or granted is None:
            return None
        return BudgetState(limit + granted, used / 3600, reset, title)
