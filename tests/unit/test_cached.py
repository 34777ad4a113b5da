"""cached.py: one read at a time, off the event loop, and no caller held by a read that hangs."""

from __future__ import annotations

import asyncio
import threading

import pytest

from jupyter_gpuspawn.cached import Cached, ReadTimeout


class Source:
    """A blocking read that hangs while ``stuck`` is set (an NVML call on a GPU gone from the
    bus)."""

    def __init__(self):
        self.calls = 0
        self.stuck = False
        self.release = threading.Event()

    def read(self):
        self.calls += 1
        call = self.calls
        if self.stuck:
            self.release.wait(10)
        return {"n": call, "errors": []}


def noted(value, note):
    return {**value, "errors": [*value["errors"], note]}


def test_a_hung_read_answers_the_last_value_with_a_note_and_is_not_started_again():
    source = Source()
    cached = Cached(source.read, 0, "status", timeout=0.2, stale=noted)

    async def scenario():
        assert await cached.get() == {"n": 1, "errors": []}
        source.stuck = True
        first, second = await asyncio.wait_for(
            asyncio.gather(cached.get(), cached.get()), timeout=5
        )
        assert first["n"] == second["n"] == 1  # the last value...
        assert "has not finished" in first["errors"][0]  # ...with a note
        # later callers wait on the same hung read: it is not started again while it runs
        third = await asyncio.wait_for(cached.get(), timeout=5)
        assert third["n"] == 1 and third["errors"]
        assert source.calls == 2
        # once it ends, its value is kept and the next read starts as usual
        source.release.set()
        for _ in range(100):
            if cached.last["n"] == 2:
                break
            await asyncio.sleep(0.02)
        assert cached.last == {"n": 2, "errors": []}
        source.stuck = False
        assert (await cached.get())["n"] == 3

    try:
        asyncio.run(scenario())
    finally:
        source.release.set()


def test_a_read_that_hangs_before_any_value_is_an_error_not_a_wait_for_ever():
    source = Source()
    source.stuck = True
    cached = Cached(source.read, 1, "status", timeout=0.2, stale=noted)

    async def scenario():
        with pytest.raises(ReadTimeout, match="has not finished"):
            await asyncio.wait_for(cached.get(), timeout=5)
        with pytest.raises(ReadTimeout):
            await asyncio.wait_for(cached.get(), timeout=5)
        assert source.calls == 1

    try:
        asyncio.run(scenario())
    finally:
        source.release.set()


def test_without_a_timeout_concurrent_callers_share_one_read():
    source = Source()
    cached = Cached(source.read, 60, "status")

    async def scenario():
        values = await asyncio.gather(*(cached.get() for _ in range(5)))
        assert {v["n"] for v in values} == {1} and source.calls == 1
        assert (await cached.get())["n"] == 1  # fresh: not read again

    asyncio.run(scenario())


def test_a_failed_read_fails_its_callers_and_the_next_call_reads_again():
    calls = []

    def read():
        calls.append(1)
        if len(calls) == 1:
            raise OSError("boom")
        return {"n": len(calls), "errors": []}

    cached = Cached(read, 60, "status", timeout=1, stale=noted)

    async def scenario():
        with pytest.raises(OSError):
            await cached.get()
        assert (await cached.get())["n"] == 2

    asyncio.run(scenario())


def test_the_status_collector_answers_its_last_collection_while_one_hangs(tmp_path):
    """The endpoint and GPUActivity.check await StatusCollector.status(): neither waits for ever."""
    from jupyter_gpuspawn.status.activity import GPUActivity
    from jupyter_gpuspawn.status.collector import StatusCollector

    release = threading.Event()

    class Hanging(StatusCollector):
        hang = False

        def collect(self):
            if self.hang:
                release.wait(10)
            return {"gpus": [], "errors": [], "collected_at": 1.0}

    collector = Hanging(env={}, cache_seconds=0, read_timeout=0.2)
    settings = {}
    activity = GPUActivity(collector, settings)

    async def scenario():
        assert (await collector.status())["errors"] == []
        collector.hang = True
        status = await asyncio.wait_for(collector.status(), timeout=5)
        assert status["collected_at"] == 1.0
        [note] = status["errors"]
        assert "not finished after" in note and "stuck" in note
        await asyncio.wait_for(activity.check(), timeout=5)
        assert settings == {}

    try:
        asyncio.run(scenario())
    finally:
        release.set()


def test_the_hubs_gpu_inventory_does_not_hang_on_a_stuck_driver(tmp_path):
    # the hub's forms, starts and reclaim rounds read the inventory: a stuck NVML call must not hold
    # them for good
    from jupyter_gpuspawn.gpus import GPUInventory

    gpus = tmp_path / "gpus.json"
    gpus.write_text('[{"uuid": "GPU-1", "name": "A100", "memory_total": "80GiB"}]')
    release = threading.Event()

    class Stuck(GPUInventory):
        def read(self):
            release.wait(10)  # hangs until released
            return super().read()

    async def scenario():
        inventory = Stuck("simulated", str(gpus), cache_seconds=0, read_timeout=0.2)
        with pytest.raises(ReadTimeout):  # nothing read yet: the spawner answers 503
            await inventory.snapshot()
        release.set()
        await asyncio.sleep(0.1)
        fresh = await inventory.snapshot()
        assert [g.uuid for g in fresh.gpus] == ["GPU-1"] and fresh.errors == ()
        release.clear()
        stale = await asyncio.wait_for(inventory.snapshot(), 2)
        assert [g.uuid for g in stale.gpus] == ["GPU-1"]
        assert "GPU inventory: These figures are" in stale.errors[0]
        release.set()

    asyncio.run(scenario())
