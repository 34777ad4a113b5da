"""The hub process's way to the usage records: one writer thread, never a failed spawn, and a pause
after a failure. Budgets are read through it.

A failure is never a failed spawn (the reconcile opens missing records and closes finished ones from
the running servers), and after one the records are left alone for ``RETRY_SECONDS``: a locked or
unreachable database must not hold up every start, form and idle check behind it (budgets are not
enforced meanwhile), the reconcile's round included. Writes that failed or came meanwhile are kept,
in order, and written before anything else once the database answers: a server stopped during an
outage is recorded as stopped when it stopped, not as crashed when it was last seen.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from .budget import BudgetState, next_week_start, week_start
from .usage import Hold, UsageDB

RETRY_SECONDS = 60  # after the records failed, how long they are left alone
# writes kept for a database that does not answer; beyond that the oldest go (the reconcile repairs
# the records from the containers, less exactly)
MAX_PENDING_WRITES = 10_000


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
        # (UsageDB method, args) not written yet, oldest first; drained only in the usage thread
        self._pending: list[tuple] = []
        self._followed = False  # a reconcile round reached the records

    @property
    def db(self) -> UsageDB:
        if self._db is None:
            self._db = UsageDB(self.url)
        return self._db

    async def call(self, method, *args):
        """UsageDB.method(db, *args) in the usage thread; None when the records cannot be used."""
        return await self._run(lambda: method(self.db, *args))

    async def _run(self, work):
        """``work()`` in the usage thread, unless the records are left alone after a failure; None
        then, or when it fails (logged, and the records are left alone from then on)."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._down_until:
            return None
        try:
            return await loop.run_in_executor(self._executor, work)
        except Exception as e:
            if loop.time() >= self._down_until:
                self.log.error(
                    "GPU usage records at %s unavailable (%s); budgets are not enforced, and "
                    "records are written once it answers (or repaired from the containers); "
                    "trying again in %d s",
                    self.url,
                    e,
                    RETRY_SECONDS,
                )
            self._down_until = loop.time() + RETRY_SECONDS
            return None

    def later(self, method, *args):
        """UsageDB.method(db, *args) without waiting for it (clear_state is synchronous; a start
        must not wait on a slow database). Kept in order until written, however long the database
        does not answer (up to MAX_PENDING_WRITES); the task is kept until done."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a unit test's clear_state): the reconcile catches up
        self._pending.append((method, args))
        if len(self._pending) > MAX_PENDING_WRITES:
            del self._pending[0]
            self.log.warning("GPU usage records: too many writes kept; the oldest is dropped")
        task = loop.create_task(self._run(self._drain))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _drain(self) -> None:
        """Write the kept writes, oldest first; one that fails stays first (usage thread only)."""
        while self._pending:
            method, args = self._pending[0]
            method(self.db, *args)
            self._pending.pop(0)

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
        # until one round reached the records, what ended did so while the hub was down
        reason = "hub restart" if first or not self._followed else "crashed"

        def reconcile():
            self._drain()  # what happened before this round first, in order
            return self.db.reconcile(holds, in_flight, listed_at, time.time(), reason)

        closed = await self._run(reconcile)
        if closed is None:
            return
        self._followed = True
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
