"""The hub side of idle-GPU reclaim (reclaim.py): a real GPUAllocator and WaitRoom, real files under
tmp_path.

Only the edges are made up: the GPU inventory (a snapshot provider returning gpus.GPU objects) and
the servers (targets with server_key / idle_holder / stop_for_reclaim, standing in for
GPUDockerSpawner). Rounds are driven with
``run_once(now=...)`` so the tests never wait for the clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import stat

import pytest

from jupyter_gpuspawn.allocation import GPUAllocator, GPURequest
from jupyter_gpuspawn.gpus import GPU, Snapshot
from jupyter_gpuspawn.idle import Holder, IdlePolicy, Notice
from jupyter_gpuspawn.reclaim import (
    ACTIVITY_FILE,
    NOTICE_FILE,
    Reclaimer,
    notice_dir,
    prepare_notice_dir,
    reclaimed_message,
    warning_message,
    write_notice,
)
from jupyter_gpuspawn.waitroom import POOL, WaitRoom

MIN = 60.0
T0 = 1_700_000_000.0  # the first round (the hub's start)
QUEUED = IdlePolicy(minutes=10, warn_minutes=2, reclaim="when_queued")
ALWAYS = IdlePolicy(minutes=10, warn_minutes=2, reclaim="always")


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


class Inventory:
    """The snapshot provider: GPU-0..GPU-(n-1), each idle unless ``util`` says otherwise."""

    def __init__(self, n=2):
        self.util = {f"GPU-{i}": 0 for i in range(n)}
        self.calls = 0
        self.error = None

    @property
    def gpus(self):
        return tuple(
            GPU(uuid, i, "A100", 80 * 1024**3, utilization_pct=util)
            for i, (uuid, util) in enumerate(self.util.items())
        )

    async def snapshot(self):
        self.calls += 1
        if self.error:
            raise self.error
        return Snapshot("simulated", self.gpus)


async def blocking(func, *args):
    return func(*args)


class Server:
    """A running server holding GPUs, as the reclaimer sees a GPUDockerSpawner."""

    def __init__(self, hub, user, name="", count=1, started=T0 - 60 * MIN, policy=QUEUED):
        self.hub = hub
        self.server_key = (user, name)
        self.started, self.policy = started, policy
        self.gpus = hub.allocator.allocate(GPURequest(user, name, count), hub.inventory.gpus)
        self.running = True
        self.stops = []  # messages stop_for_reclaim was called with
        self.gate = None  # an asyncio.Event the stop waits for
        self.answer = True  # False: "busy starting or stopping, not now"
        self.budget_left = None  # seconds before its GPU-hour budget is spent, if it has one
        self.reasons = []  # the reason of each stop_for_reclaim call
        self.directory = notice_dir(hub.runtime_dir, self.server_key)
        # as the spawner does before its container mounts the directory
        prepare_notice_dir(self.directory)
        hub.reclaimer.register(self, self.directory)

    async def idle_holder(self):
        if not self.running:
            return None
        return Holder(
            self.server_key,
            self.gpus,
            self.started,
            self.policy,
            budget_seconds=self.budget_left,
            budget_warning="nearly spent",
            budget_stopped="spent: stopped",
        )

    async def stop_for_reclaim(self, message, started, reason):
        assert started == self.started  # the very start that was judged idle
        self.stops.append(message)
        self.reasons.append(reason)
        if self.gate is not None:
            await self.gate.wait()
        if isinstance(self.answer, Exception):
            raise self.answer
        if not self.answer:
            return False
        self.stopped()
        return True

    def stopped(self):
        """What clear_state does: the GPUs go back, the reclaimer forgets the server."""
        self.running = False
        self.hub.allocator.release(*self.server_key)
        self.hub.reclaimer.unregister(self.server_key, self.directory)

    def notice(self):
        with open(os.path.join(self.directory, NOTICE_FILE), encoding="utf-8") as f:
            return json.load(f)


class Hub:
    def __init__(self, tmp_path, n=2, reclaimer=None):
        self.runtime_dir = str(tmp_path / "runtime")
        os.makedirs(self.runtime_dir, exist_ok=True)
        self.allocator = GPUAllocator()
        self.waitroom = WaitRoom(self.allocator)
        self.inventory = Inventory(n)
        self.log = logging.getLogger(f"test-reclaim-{id(self)}")
        self.log.propagate = False
        self.log.setLevel(logging.DEBUG)
        self.handler = ListHandler()
        self.log.addHandler(self.handler)
        self.reclaimer = Reclaimer(self.allocator, self.waitroom)

    async def configure(self, reclaimer=None, utilization=5.0):
        """The spawner's ensure_started, minus the clock-driven loop: the tests call run_once
        themselves."""
        reclaimer = reclaimer or self.reclaimer
        reclaimer.ensure_started(
            interval=3600,
            utilization=utilization,
            runtime_dir=self.runtime_dir,
            snapshot=self.inventory.snapshot,
            blocking=blocking,
            log=self.log,
        )
        reclaimer.task.cancel()  # cancelled before its first step: it never runs a round
        with contextlib.suppress(asyncio.CancelledError):
            await reclaimer.task
        return reclaimer

    def wait(self, user, count=1, name="", user_limit=None):
        return self.waitroom.queue.join(
            GPURequest(user, name, count, user_limit=user_limit),
            pool=POOL,
            holds_other=False,
            now=0,
        )

    def activity(self):
        with open(os.path.join(self.runtime_dir, ACTIVITY_FILE), encoding="utf-8") as f:
            return json.load(f)


def reclaim(notice_document):
    return notice_document.get("reclaim")


async def warned_server(hub):
    """Server "a", idle since T0 while someone waits: warned at T0 + 8 min, due at T0 + 10 min."""
    await hub.configure()
    server = Server(hub, "a")
    hub.wait("waiter")
    await hub.reclaimer.run_once(now=T0)
    await hub.reclaimer.run_once(now=T0 + 8 * MIN)
    return server


# ---- notices -------------------------------------------------------------------------------------
def test_only_the_warned_server_gets_a_notice_and_it_is_emptied_when_withdrawn(tmp_path):
    hub = Hub(tmp_path)

    async def scenario():
        await hub.configure()
        idle, busy = Server(hub, "idle"), Server(hub, "busy")
        hub.inventory.util[busy.gpus[0]] = 90
        hub.wait("waiter")
        await hub.reclaimer.run_once(now=T0)
        assert idle.notice() == {} and busy.notice() == {}
        review = await hub.reclaimer.run_once(now=T0 + 8 * MIN)
        assert [n.key for n in review.warned] == [("idle", "")] and review.due == []
        notice = reclaim(idle.notice())
        assert notice["deadline"] == T0 + 10 * MIN and notice["idle_since"] == T0
        assert notice["waiting"] == 1 and notice["reason"] == "idle"
        assert notice["message"] == (
            "Your GPU has been idle (under 5 % utilisation) for 8 minutes while someone waits for "
            "a GPU. This "
            "server will be stopped so they can use it."
        )
        assert busy.notice() == {}

        hub.waitroom.queue.leave(("waiter", ""))  # the waiter gave up: the warning is withdrawn
        review = await hub.reclaimer.run_once(now=T0 + 9 * MIN)
        assert review.warned == [] and review.due == []
        assert idle.notice() == {} and busy.notice() == {}
        assert idle.stops == [] and busy.stops == []

    asyncio.run(scenario())


def test_a_notice_is_withdrawn_when_the_gpu_gets_busy(tmp_path):
    hub = Hub(tmp_path, n=1)

    async def scenario():
        a = await warned_server(hub)
        assert reclaim(a.notice())["deadline"] == T0 + 10 * MIN
        hub.inventory.util[a.gpus[0]] = 50
        await hub.reclaimer.run_once(now=T0 + 9 * MIN)
        assert a.notice() == {}
        hub.inventory.util[a.gpus[0]] = 0
        review = await hub.reclaimer.run_once(now=T0 + 11 * MIN)
        assert review.due == [] and review.warned == [] and a.stops == []

    asyncio.run(scenario())


def test_nobody_is_warned_while_a_free_gpu_covers_the_queue(tmp_path):
    hub = Hub(tmp_path, n=2)

    async def scenario():
        await hub.configure()
        a = Server(hub, "a")  # GPU-1 stays free
        hub.wait("waiter")
        for minutes in (0, 8, 30):
            review = await hub.reclaimer.run_once(now=T0 + minutes * MIN)
        assert review.warned == [] and review.due == [] and a.notice() == {}
        hub.wait("second")  # now the queue wants more than the free GPU
        review = await hub.reclaimer.run_once(now=T0 + 31 * MIN)
        assert [n.key for n in review.warned] == [("a", "")]
        assert reclaim(a.notice())["waiting"] == 2

    asyncio.run(scenario())


def test_an_unchanged_notice_is_not_rewritten(tmp_path):
    hub = Hub(tmp_path, n=1)

    async def scenario():
        await hub.configure()
        a = Server(hub, "a")
        hub.wait("waiter")
        path = os.path.join(a.directory, NOTICE_FILE)
        await hub.reclaimer.run_once(now=T0)
        empty = os.stat(path).st_ino
        await hub.reclaimer.run_once(now=T0 + 10)
        assert os.stat(path).st_ino == empty  # {} stays {}: not replaced
        await hub.reclaimer.run_once(now=T0 + 8 * MIN)
        warned = os.stat(path).st_ino
        assert warned != empty
        # same decision, same wording (same minute)
        await hub.reclaimer.run_once(now=T0 + 8 * MIN + 10)
        assert os.stat(path).st_ino == warned

    asyncio.run(scenario())


def test_notice_directories_and_files_are_readable_by_the_container_user_whatever_the_umask(
    tmp_path,
):
    hub = Hub(tmp_path, n=1)
    old = os.umask(0o077)
    try:

        async def scenario():
            await hub.configure()
            a = Server(hub, "a")
            hub.wait("waiter")
            path = os.path.join(a.directory, NOTICE_FILE)
            assert stat.S_IMODE(os.stat(a.directory).st_mode) == 0o755
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
            await hub.reclaimer.run_once(now=T0)
            await hub.reclaimer.run_once(now=T0 + 8 * MIN)
            assert reclaim(a.notice())  # rewritten with the warning
            assert stat.S_IMODE(os.stat(a.directory).st_mode) == 0o755
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
            activity = os.path.join(hub.runtime_dir, ACTIVITY_FILE)
            assert stat.S_IMODE(os.stat(activity).st_mode) == 0o644

        asyncio.run(scenario())
    finally:
        os.umask(old)


def test_notice_directories_are_per_server_inside_the_runtime_dir(tmp_path):
    runtime = str(tmp_path)
    keys = [("a", ""), ("a", "b"), ("a-b", ""), ("a/b", ""), ("a", "/b"), ("", "a")]
    dirs = [notice_dir(runtime, key) for key in keys]
    assert len(set(dirs)) == len(keys)
    for directory in dirs:  # named by a hash: no user-chosen character reaches the path
        assert os.path.dirname(directory) == os.path.join(runtime, "notices")
        name = os.path.basename(directory)
        assert len(name) == 24 and set(name) <= set("0123456789abcdef")
    assert notice_dir(runtime, ("a", "b")) == notice_dir(runtime, ("a", "b"))


# ---- stops ---------------------------------------------------------------------------------------
def test_a_due_server_is_stopped_once_even_while_the_stop_is_still_running(tmp_path):
    hub = Hub(tmp_path, n=1)

    async def scenario():
        await hub.configure()
        a = Server(hub, "a")
        a.gate = asyncio.Event()
        hub.wait("waiter")
        await hub.reclaimer.run_once(now=T0)
        await hub.reclaimer.run_once(now=T0 + 8 * MIN)
        review = await hub.reclaimer.run_once(now=T0 + 10 * MIN)
        assert [n.key for n in review.due] == [("a", "")]
        # the warning stays up until the stop
        assert reclaim(a.notice())["deadline"] == T0 + 10 * MIN
        await asyncio.sleep(0)  # the stop task begins and waits at the gate
        assert len(a.stops) == 1
        # still due, stop still in flight
        review = await hub.reclaimer.run_once(now=T0 + 10 * MIN + 10)
        assert [n.key for n in review.due] == [("a", "")]
        await asyncio.sleep(0)
        assert len(a.stops) == 1
        a.gate.set()
        for _ in range(10):
            await asyncio.sleep(0)
        assert not a.running and hub.allocator.assignment("a") == ()
        review = await hub.reclaimer.run_once(now=T0 + 10 * MIN + 20)
        assert review.due == [] and review.warned == []
        await asyncio.sleep(0)
        assert len(a.stops) == 1
        message = a.stops[0]
        assert message.startswith("Your previous server was stopped on ")
        assert (
            "because its GPU stayed idle (under 5 % utilisation) for 10 minutes while someone else "
            "waited for "
            "a GPU. Your files are kept"
        ) in message
        warnings = [r.getMessage() for r in hub.handler.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "Reclaiming idle GPU(s) GPU-0 of a (reclaim=when_queued, 1 waiting)" in warnings[0]

    asyncio.run(scenario())


def test_a_stop_refused_or_failed_is_tried_again_next_round(tmp_path):
    hub = Hub(tmp_path, n=1)

    async def scenario():
        await hub.configure()
        a = Server(hub, "a", policy=ALWAYS)
        a.answer = False  # busy starting or stopping
        await hub.reclaimer.run_once(now=T0)
        await hub.reclaimer.run_once(now=T0 + 8 * MIN)
        await hub.reclaimer.run_once(now=T0 + 10 * MIN)
        await asyncio.sleep(0)
        assert len(a.stops) == 1 and a.running
        assert any(
            r.levelno == logging.INFO and "skipped" in r.getMessage() for r in hub.handler.records
        )
        a.answer = RuntimeError("dockerd is restarting")
        await hub.reclaimer.run_once(now=T0 + 10 * MIN + 10)
        await asyncio.sleep(0)
        assert len(a.stops) == 2 and a.running
        assert any(
            r.levelno == logging.ERROR and "failed; trying again" in r.getMessage()
            for r in hub.handler.records
        )
        a.answer = True
        await hub.reclaimer.run_once(now=T0 + 10 * MIN + 20)
        await asyncio.sleep(0)
        assert len(a.stops) == 3 and not a.running

    asyncio.run(scenario())


def test_always_stops_an_idle_server_with_nobody_waiting_and_never_never_does(tmp_path):
    hub = Hub(tmp_path, n=2)

    async def scenario():
        await hub.configure()
        always = Server(hub, "always", policy=ALWAYS)
        never = Server(hub, "never", policy=IdlePolicy(minutes=10, warn_minutes=2, reclaim="never"))
        hub.wait("waiter")
        hub.wait("second")
        for minutes in (0, 8, 10, 100):
            await hub.reclaimer.run_once(now=T0 + minutes * MIN)
            await asyncio.sleep(0)
        assert len(always.stops) == 1 and never.stops == [] and never.notice() == {}
        assert (
            "stayed idle (under 5 % utilisation) for 10 minutes. Your files are kept"
            in always.stops[0]
        )

    asyncio.run(scenario())


def test_a_quick_stop_and_start_keeps_the_directory_the_new_container_mounts(tmp_path):
    hub = Hub(tmp_path, n=2)

    async def scenario():
        await hub.configure()
        a = Server(hub, "a", policy=ALWAYS)
        await hub.reclaimer.run_once(now=T0)
        a.stopped()  # stopped by its student: clear_state unregisters it
        # the next start prepares the same directory and mounts it; its registration comes only once
        # it answers
        prepare_notice_dir(a.directory)
        inode = os.stat(a.directory).st_ino
        await hub.reclaimer.run_once(now=T0 + 10)
        # never removed under a container that is starting
        assert os.stat(a.directory).st_ino == inode
        again = Server(hub, "a", policy=ALWAYS, started=T0 + 10)
        await hub.reclaimer.run_once(now=T0 + 10 + 8 * MIN)
        assert reclaim(again.notice()) is not None and os.stat(again.directory).st_ino == inode

    asyncio.run(scenario())


def test_a_warning_left_by_the_previous_hub_process_is_withdrawn(tmp_path):
    hub = Hub(tmp_path, n=1)

    async def scenario():
        a = await warned_server(hub)
        assert reclaim(a.notice()) is not None
        # the hub restarts: the queue is gone (JupyterHub forgets pending spawns); the server is
        # registered again from its saved state, its notice file still holding the old warning
        restarted = Hub(tmp_path, n=1)  # the same runtime_dir
        await restarted.configure()
        b = Server(restarted, "a")
        await restarted.reclaimer.run_once(now=T0 + 8 * MIN + 30)
        assert b.notice() == {}

    asyncio.run(scenario())


def test_a_failed_round_stops_nobody_and_the_loop_goes_on(tmp_path):
    hub = Hub(tmp_path, n=1)

    async def scenario():
        a = Server(hub, "a", policy=ALWAYS, started=0)
        hub.inventory.error = RuntimeError("NVML: GPU is lost")
        hub.reclaimer.ensure_started(
            interval=0.01,
            utilization=5,
            runtime_dir=hub.runtime_dir,
            snapshot=hub.inventory.snapshot,
            blocking=blocking,
            log=hub.log,
        )
        for _ in range(500):
            if hub.inventory.calls >= 3:
                break
            await asyncio.sleep(0.01)
        task = hub.reclaimer.task
        assert not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert hub.inventory.calls >= 3 and a.stops == []
        # the first failure with its traceback, the next ones in a line each: no traceback flood
        # every 10 s
        [error] = [r for r in hub.handler.records if r.levelno == logging.ERROR]
        assert "nothing reclaimed until it works again" in error.getMessage() and error.exc_info
        again = [r for r in hub.handler.records if r.levelno == logging.WARNING]
        assert len(again) >= 2 and all(
            "failed again (NVML: GPU is lost)" in r.getMessage() for r in again
        )

    asyncio.run(scenario())


def test_ensure_started_runs_one_task_and_none_when_sampling_is_off(tmp_path):
    hub = Hub(tmp_path, n=1)

    async def scenario():
        args = dict(
            utilization=5,
            runtime_dir=hub.runtime_dir,
            snapshot=hub.inventory.snapshot,
            blocking=blocking,
            log=hub.log,
        )
        hub.reclaimer.ensure_started(interval=0, **args)
        assert hub.reclaimer.task is None
        hub.reclaimer.ensure_started(interval=3600, **args)
        first = hub.reclaimer.task
        hub.reclaimer.ensure_started(interval=3600, **args)
        assert hub.reclaimer.task is first
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first

    asyncio.run(scenario())


# ---- GPU activity, and the idle clocks across a hub restart --------------------------------------
def test_gpu_activity_is_written_and_idle_clocks_survive_a_hub_restart(tmp_path):
    hub = Hub(tmp_path, n=2)

    async def scenario():
        await hub.configure()
        a = Server(hub, "a")
        b = Server(hub, "b", name="train")
        hub.inventory.util[a.gpus[0]] = 70
        await hub.reclaimer.run_once(now=T0)  # a busy, b idle since the hub started
        hub.inventory.util[a.gpus[0]] = 0
        hub.wait("waiter")
        await hub.reclaimer.run_once(now=T0 + 8 * MIN)
        activity = hub.activity()
        assert activity["updated"] == T0 + 8 * MIN and activity["busy_utilization"] == 5
        # b's GPU was never seen busy: idle since the hub began to look, which a restart must keep
        # too
        assert activity["gpus"] == {a.gpus[0]: {"last_busy": T0}, b.gpus[0]: {"last_busy": T0}}
        assert activity["servers"] == {
            "a/": {
                "user": "a",
                "server": "",
                "gpus": list(a.gpus),
                "idle_since": T0,
                "reclaim": "when_queued",
                "deadline": T0 + 10 * MIN,
                "deadline_reason": "idle",
                "course": "",
                "started": a.started,
            },
            "b/train": {
                "user": "b",
                "server": "train",
                "gpus": list(b.gpus),
                "idle_since": T0,
                "reclaim": "when_queued",
                "deadline": None,
                "deadline_reason": None,
                "course": "",
                "started": b.started,
            },
        }
        [waiter] = activity["queue"]
        assert (waiter["user"], waiter["gpus"], waiter["position"], waiter["pool"]) == (
            "waiter",
            1,
            1,
            "gpu",
        )
        assert activity["devices"][a.gpus[0]]["utilization_pct"] == 0
        return a, b

    a, b = asyncio.run(scenario())

    # the hub restarts: a new process, a new Reclaimer; the servers kept running and are registered
    # again
    restarted = Hub(tmp_path, n=2)
    restarted.inventory.util = dict(hub.inventory.util)
    restarted.allocator.restore("a", "", a.gpus)
    restarted.allocator.restore("b", "train", b.gpus)

    async def after_restart():
        await restarted.configure()
        for server in (a, b):
            server.hub = restarted
            restarted.reclaimer.register(server, server.directory)
        now = T0 + 9 * MIN  # a restart for a config change: a minute after the last sample
        review = await restarted.reclaimer.run_once(now=now)
        # not "busy when the hub started"
        assert restarted.reclaimer.tracker.last_busy[a.gpus[0]] == T0
        servers = restarted.activity()["servers"]
        assert servers["a/"]["idle_since"] == T0
        assert servers["b/train"]["idle_since"] == T0
        # nobody waits: the queue did not survive the restart
        assert review.warned == [] and review.due == []
        restarted.wait("waiter")
        review = await restarted.reclaimer.run_once(now=now + 10)
        assert [n.key for n in review.warned] == [("a", "")]
        assert review.warned[0].idle_since == T0 and review.warned[0].deadline == now + 10 + 2 * MIN

    asyncio.run(after_restart())


def test_a_last_busy_time_from_the_future_is_taken_as_now(tmp_path):
    hub = Hub(tmp_path, n=1)
    with open(os.path.join(hub.runtime_dir, ACTIVITY_FILE), "w", encoding="utf-8") as f:
        json.dump(
            {
                "updated": T0 - 10,
                "gpus": {
                    "GPU-0": {"last_busy": T0 + 3600},
                    "GPU-x": {"last_busy": "soon"},
                    "GPU-y": 5,
                },
            },
            f,
        )

    async def scenario():
        await hub.configure()
        await hub.reclaimer.run_once(now=T0)
        return dict(hub.reclaimer.tracker.last_busy)

    # the clock went back: never idle "from the future"
    assert asyncio.run(scenario()) == {"GPU-0": T0}


def test_a_broken_activity_file_is_ignored(tmp_path):
    hub = Hub(tmp_path, n=1)
    with open(os.path.join(hub.runtime_dir, ACTIVITY_FILE), "w", encoding="utf-8") as f:
        f.write('{"gpus": [1, 2')

    async def scenario():
        await hub.configure()
        Server(hub, "a")
        await hub.reclaimer.run_once(now=T0)
        return hub.activity()

    assert asyncio.run(scenario())["servers"]["a/"]["idle_since"] == T0


# ---- the words -----------------------------------------------------------------------------------
def notice(gpus=1, waiting=1, policy=QUEUED, idle_minutes=45):
    return Notice(
        ("a", ""),
        tuple(f"GPU-{i}" for i in range(gpus)),
        T0 - 90 * MIN,
        T0 - idle_minutes * MIN,
        T0 + 2 * MIN,
        policy,
        waiting,
    )


def test_warning_words_for_one_gpu_and_one_waiter():
    assert warning_message(notice(), 5, T0) == (
        "Your GPU has been idle (under 5 % utilisation) for 45 minutes while someone waits for a "
        "GPU. This server "
        "will be stopped so they can use it."
    )


def test_warning_words_for_several_gpus_and_several_waiters():
    assert warning_message(notice(gpus=2, waiting=3), 2.5, T0) == (
        "Your 2 GPUs have been idle (under 2.5 % utilisation) for 45 minutes while 3 others wait "
        "for a GPU. This "
        "server will be stopped so they can use them."
    )


def test_warning_words_under_always_and_for_short_and_long_times():
    assert warning_message(notice(policy=ALWAYS, idle_minutes=1), 5, T0) == (
        "Your GPU has been idle (under 5 % utilisation) for 1 minute. Servers here give idle GPUs "
        "back after "
        "10 minutes."
    )
    # short test timings
    assert "for less than a minute" in warning_message(notice(idle_minutes=0.5), 5, T0)
    assert "for 2.5 hours" in warning_message(notice(idle_minutes=150), 5, T0)
    assert "for 2 hours" in warning_message(notice(idle_minutes=120), 5, T0)
    assert "for 90 minutes" in warning_message(notice(idle_minutes=90), 5, T0)


def test_reclaimed_words_for_one_and_several():
    one = reclaimed_message(notice(), 5, T0)
    assert one.startswith("Your previous server was stopped on ")
    assert one.endswith(
        " because its GPU stayed idle (under 5 % utilisation) for 45 minutes while someone else "
        "waited for a GPU. Your files are kept: start again when you need the GPU, or choose a "
        "CPU-only environment."
    )
    several = reclaimed_message(notice(gpus=4, waiting=2), 5, T0)
    assert (
        "because its 4 GPUs stayed idle" in several
        and "while 2 others waited for a GPU." in several
    )
    always = reclaimed_message(notice(policy=ALWAYS), 5, T0)
    assert "for 45 minutes. Your files are kept" in always and "waited" not in always


def test_a_multi_gpu_server_is_told_in_the_plural_through_its_notice_file(tmp_path):
    hub = Hub(tmp_path, n=2)

    async def scenario():
        await hub.configure()
        big = Server(hub, "big", count=2)
        for user in ("w1", "w2", "w3"):
            hub.wait(user)
        await hub.reclaimer.run_once(now=T0)
        await hub.reclaimer.run_once(now=T0 + 8 * MIN)
        return reclaim(big.notice())

    notice_ = asyncio.run(scenario())
    assert notice_["waiting"] == 3
    assert notice_["message"].startswith(
        "Your 2 GPUs have been idle (under 5 % utilisation) for 8 minutes while "
        "3 others wait for a GPU. This server will be stopped so they can use them"
    )


def test_after_a_long_hub_outage_idle_clocks_start_again(tmp_path):
    """Nobody sampled the GPUs while the hub was down: that time is not counted as idle."""
    hub = Hub(tmp_path, n=1)
    with open(os.path.join(hub.runtime_dir, ACTIVITY_FILE), "w", encoding="utf-8") as f:
        json.dump({"updated": T0 - 30 * MIN, "gpus": {"GPU-0": {"last_busy": T0 - 90 * MIN}}}, f)

    async def scenario():
        await hub.configure()
        a = Server(hub, "a")
        await hub.reclaimer.run_once(now=T0)
        return a, hub.activity()

    a, activity = asyncio.run(scenario())
    assert activity["servers"]["a/"]["idle_since"] == T0


def test_one_student_queueing_many_servers_gets_no_more_reclaimed_than_their_limit_allows(tmp_path):
    hub = Hub(tmp_path, n=4)

    async def scenario():
        await hub.configure()
        idle = [Server(hub, user) for user in ("a", "b", "c", "d")]
        for name in ("one", "two", "three"):
            hub.wait("greedy", name=name, user_limit=1)  # only one of them can ever get a GPU
        await hub.reclaimer.run_once(now=T0)
        review = await hub.reclaimer.run_once(now=T0 + 8 * MIN)
        assert [n.key for n in review.warned] == [("a", "")]
        return idle

    asyncio.run(scenario())


def test_a_warning_that_could_not_be_written_does_not_count(tmp_path):
    hub = Hub(tmp_path, n=1)
    failing = {"on": False}

    async def flaky(func, *args):
        if failing["on"] and func is write_notice:
            raise OSError(28, "No space left on device")
        return func(*args)

    async def scenario():
        reclaimer = hub.reclaimer
        reclaimer.ensure_started(
            interval=3600,
            utilization=5,
            runtime_dir=hub.runtime_dir,
            snapshot=hub.inventory.snapshot,
            blocking=flaky,
            log=hub.log,
        )
        reclaimer.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reclaimer.task
        a = Server(hub, "a")
        hub.wait("waiter")
        await reclaimer.run_once(now=T0)
        failing["on"] = True
        for minutes in (8, 9, 10):  # the disk is full while the warning should show
            with pytest.raises(OSError):
                await reclaimer.run_once(now=T0 + minutes * MIN)
        failing["on"] = False
        # the first warning the student can see
        review = await reclaimer.run_once(now=T0 + 11 * MIN)
        await asyncio.sleep(0)
        assert review.due == [] and a.stops == []
        assert reclaim(a.notice())["deadline"] == T0 + 13 * MIN  # a full warning from now

    asyncio.run(scenario())


def test_a_budget_running_out_warns_then_stops_whatever_the_queue(tmp_path):
    hub = Hub(tmp_path, n=1)

    async def scenario():
        await hub.configure()
        a = Server(hub, "a", started=T0)
        # busy: idle reclaim has nothing to say; nobody waits either
        hub.inventory.util[a.gpus[0]] = 90
        a.budget_left = 5 * MIN
        await hub.reclaimer.run_once(now=T0)
        assert a.notice() == {}  # 5 minutes left, warned 2 minutes ahead
        a.budget_left = 2 * MIN - 1
        review = await hub.reclaimer.run_once(now=T0 + 3 * MIN + 1)
        notice = reclaim(a.notice())
        assert notice["reason"] == "budget" and notice["message"] == "nearly spent"
        assert notice["deadline"] == T0 + 5 * MIN and [n.reason for n in review.warned] == [
            "budget"
        ]
        a.budget_left = 0.0
        await hub.reclaimer.run_once(now=T0 + 5 * MIN)
        await asyncio.sleep(0)
        assert a.stops == ["spent: stopped"] and a.reasons == ["budget"]
        warnings = [r.getMessage() for r in hub.handler.records if r.levelno == logging.WARNING]
        assert any("its GPU-hour budget is spent" in w for w in warnings), warnings

    asyncio.run(scenario())


def test_the_earlier_of_an_idle_and_a_budget_end_is_the_one_shown(tmp_path):
    hub = Hub(tmp_path, n=1)

    async def scenario():
        await hub.configure()
        a = Server(hub, "a")
        a.budget_left = 9 * MIN  # the idle deadline (someone waits) is T0 + 10 min
        hub.wait("waiter")
        await hub.reclaimer.run_once(now=T0)
        a.budget_left = 1 * MIN
        await hub.reclaimer.run_once(now=T0 + 8 * MIN)
        assert (
            reclaim(a.notice())["reason"] == "budget"
            and reclaim(a.notice())["deadline"] == T0 + 9 * MIN
        )
        a.budget_left = 22 * MIN  # an admin granted more hours: the idle end comes first again
        await hub.reclaimer.run_once(now=T0 + 8 * MIN + 10)
        assert (
            reclaim(a.notice())["reason"] == "idle"
            and reclaim(a.notice())["deadline"] == T0 + 10 * MIN
        )

    asyncio.run(scenario())


def test_the_first_round_creates_the_runtime_dir(tmp_path):
    """The first idle check comes before any server's notices exist: it still writes the GPU
    activity."""
    hub = Hub(tmp_path, n=1)
    hub.runtime_dir = str(tmp_path / "not-yet" / "runtime")

    async def scenario():
        await hub.configure()
        await hub.reclaimer.run_once(now=T0)

    asyncio.run(scenario())
    assert hub.activity()["updated"] == T0


# ---- the GPU-hours metric ------------------------------------------------------------------------
def test_the_gpu_hours_metric_charges_what_the_usage_records_charge(tmp_path):
    """gpuspawn_gpu_hours_total and `jupyter-gpuspawn usage` (and the budgets) agree: a seat on a
    GPU shared by up to 4 costs 1/4 of a GPU-hour per hour, even while it is alone on its GPU."""
    from prometheus_client import CollectorRegistry

    from jupyter_gpuspawn.metrics import HubMetrics
    from jupyter_gpuspawn.spec import GPUAssignment
    from jupyter_gpuspawn.usage import Hold, UsageDB

    hub = Hub(tmp_path, n=3)
    registry = CollectorRegistry()
    hub.reclaimer.metrics = HubMetrics(registry)
    db = UsageDB(f"sqlite:///{tmp_path / 'usage.sqlite'}")

    def counted(course):
        return registry.get_sample_value("gpuspawn_gpu_hours_total", {"course": course})

    async def scenario():
        await hub.configure()
        shared = Server(hub, "alone", policy=ALWAYS)
        exclusive = Server(hub, "pair", count=2, policy=ALWAYS)
        shared._assignment = GPUAssignment(
            "alone", "", shared.gpus, "shared", max_users_per_gpu=4, course="dl"
        )
        exclusive._assignment = GPUAssignment("pair", "", exclusive.gpus, course="cv")
        for server, course in ((shared, "dl"), (exclusive, "cv")):
            holder = server.idle_holder

            async def with_course(holder=holder, course=course):
                return dataclasses.replace(await holder(), course=course)

            server.idle_holder = with_course
            a = server._assignment
            db.record(Hold(a.user, a.server, a.course, a.gpus, a.share, start=T0), T0)
        hub.inventory.util = dict.fromkeys(hub.inventory.util, 90)  # busy: nobody is reclaimed
        await hub.reclaimer.run_once(now=T0)
        await hub.reclaimer.run_once(now=T0 + 60 * MIN)

    asyncio.run(scenario())
    assert counted("dl") == pytest.approx(0.25)
    assert counted("cv") == pytest.approx(2.0)
    for user, course in (("alone", "dl"), ("pair", "cv")):
        recorded = db.gpu_seconds(user, T0, T0 + 60 * MIN, course) / 3600
        assert counted(course) == pytest.approx(recorded)
