"""The hub's way to the usage records through an outage: real SQLite, an outage made by failing
every use of the database."""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa

from jupyter_gpuspawn import records as records_module
from jupyter_gpuspawn.reconcile import LabelledContainer
from jupyter_gpuspawn.records import UsageRecords
from jupyter_gpuspawn.spec import GPUAssignment
from jupyter_gpuspawn.usage import Hold, UsageDB


class Outage:
    """While ``on``, every UsageDB call fails as an unreachable database does; counts the tries."""

    def __init__(self, monkeypatch):
        self.on = False
        self.tries = 0
        real = UsageDB.ensure_schema

        def ensure_schema(db):
            if self.on:
                self.tries += 1
                raise sa.exc.OperationalError("connect", {}, Exception("no route to host"))
            return real(db)

        monkeypatch.setattr(UsageDB, "ensure_schema", ensure_schema)


def rows(url):
    db = UsageDB(url)
    try:
        return {(r["user"], r["gpu_uuid"]): (r["end"], r["end_reason"]) for r in db.records()}
    finally:
        db.dispose()


def running(user, uuid, created=100.0):
    return LabelledContainer(
        f"c-{user}", "running", GPUAssignment(user, "", (uuid,), course="dl"), created
    )


def test_stops_during_an_outage_are_written_when_they_happened_once_it_ends(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path}/usage.sqlite"
    outage = Outage(monkeypatch)
    log = logging.getLogger("test-records")

    async def scenario():
        records = UsageRecords(url, log)
        for user, uuid in (("alice", "GPU-a"), ("bob", "GPU-b")):
            records.later(UsageDB.record, Hold(user, "", "dl", (uuid,)), 100.0)
        await asyncio.gather(*records._writes)
        outage.on = True
        records.later(UsageDB.close, "alice", "", "stopped", 200.0)  # fails
        await asyncio.gather(*records._writes)
        records.later(UsageDB.close, "bob", "", "reclaimed idle", 210.0)  # not even tried
        await asyncio.gather(*records._writes)
        tries = outage.tries
        # the reconcile's round does not wait on the database either while it is left alone
        await records.follow([], set(), 220.0, first=False)
        assert outage.tries == tries == 1
        outage.on = False
        records._down_until = 0.0  # RETRY_SECONDS later
        # the round after: the kept writes first, then the reconcile, which has nothing to close
        await records.follow([], set(), 300.0, first=False)
        records._executor.shutdown()

    asyncio.run(scenario())
    assert rows(url) == {
        ("alice", "GPU-a"): (200.0, "stopped"),
        ("bob", "GPU-b"): (210.0, "reclaimed idle"),
    }


def test_writes_kept_for_an_outage_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(records_module, "MAX_PENDING_WRITES", 3)
    outage = Outage(monkeypatch)
    outage.on = True

    async def scenario():
        records = UsageRecords(f"sqlite:///{tmp_path}/usage.sqlite", logging.getLogger("t"))
        for i in range(5):
            records.later(UsageDB.close, f"u{i}", "", "stopped", float(i))
        await asyncio.gather(*records._writes)
        records._executor.shutdown()
        return [args[0] for _, args in records._pending]

    assert asyncio.run(scenario()) == ["u2", "u3", "u4"]


def test_a_round_that_reaches_the_records_after_an_outage_at_start_says_hub_restart(
    tmp_path, monkeypatch
):
    url = f"sqlite:///{tmp_path}/usage.sqlite"
    db = UsageDB(url)
    db.record(Hold("carol", "", "dl", ("GPU-c",)), 100.0)
    db.dispose()
    outage = Outage(monkeypatch)

    async def scenario():
        records = UsageRecords(url, logging.getLogger("t"))
        outage.on = True
        await records.follow([running("dave", "GPU-d")], set(), 500.0, first=True)
        outage.on = False
        records._down_until = 0.0
        # carol's server ended while the hub was down: the first round that reaches the records
        # says so, although it is not the hub's first round
        await records.follow([running("dave", "GPU-d")], set(), 600.0, first=False)
        records._executor.shutdown()

    asyncio.run(scenario())
    assert rows(url)[("carol", "GPU-c")][1] == "hub restart"
    assert rows(url)[("dave", "GPU-d")] == (None, None)
