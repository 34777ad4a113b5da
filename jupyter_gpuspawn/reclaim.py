"""The hub side of idle-GPU reclaim: one task per hub process samples the held GPUs, warns, and
stops.

Every ``interval`` seconds: one inventory snapshot (the cached one every spawner shares), the
decision of idle.py, each server's notice file rewritten when it changed (the container reads it
through a read-only mount, and its JupyterLab shows the warning), servers whose deadline passed
stopped through the hub, and the GPU activity written for ``jupyter-gpuspawn gpus``. Stopping goes
through the hub's own User.stop (after removing the proxy route, as the hub's REST handler does), so
the hub's database, the proxy and the GPU queue all follow.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from .datafiles import write_json_atomic
from .idle import Holder, IdleTracker, Notice, ServerKey
from .waitroom import POOL

NOTICES = "notices"
NOTICE_FILE = "notice.json"
ACTIVITY_FILE = "gpu-activity.json"
# A hub down longer than this saw nothing of its GPUs meanwhile: their idle clocks start again
# rather than count the gap as idle. A restart for a config change is seconds.
RESTART_GAP_SECONDS = 120


class ReclaimTarget(Protocol):
    """What the reclaimer needs of a spawner (GPUDockerSpawner implements it). Its
    ``_assignment`` (a spec.GPUAssignment), where it has one, sets what the GPU-hours metric charges
    (gpu_charge)."""

    server_key: ServerKey

    async def idle_holder(self) -> Holder | None:
        """This server as a holder of GPUs, None while it is not running with GPUs."""

    async def stop_for_reclaim(self, message: str, started: float, reason: str) -> bool:
        """Stop through the hub, remembering ``message`` for the student's next spawn page; False if
        not now, or if the server is no longer the one started at ``started`` (it was restarted
        meanwhile)."""


def notice_dir(runtime_dir: str, key: ServerKey) -> str:
    """The host directory mounted into this server's container. Named by a hash: user and server
    names may hold any character, and one server must never see another's directory."""
    user, server = key
    digest = hashlib.sha256(f"{user}\0{server}".encode()).hexdigest()[:24]
    return os.path.join(runtime_dir, NOTICES, digest)


def _minutes(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    if minutes == 0:
        return "less than a minute"
    if minutes >= 120:
        return f"{minutes / 60:.1f}".removesuffix(".0") + " hours"
    return "1 minute" if minutes == 1 else f"{minutes} minutes"


def _gpus_word(notice: Notice) -> tuple:
    return (
        ("Your GPU has", "it")
        if len(notice.gpus) == 1
        else (f"Your {len(notice.gpus)} GPUs have", "them")
    )


def _others(waiting: int) -> str:
    return "someone waits" if waiting == 1 else f"{waiting} others wait"


def warning_message(notice: Notice, utilization: float, now: float) -> str:
    """Why this server will be stopped, for the student in JupyterLab (the countdown is the
    extension's)."""
    subject, them = _gpus_word(notice)
    idle_for = _minutes(now - notice.idle_since)
    idle = f"{subject} been idle (under {utilization:g} % utilisation) for {idle_for}"
    # what to do, and that the files stay, is the extension's to say
    if notice.policy.reclaim == "when_queued":
        return (
            f"{idle} while {_others(notice.waiting)} for a GPU. "
            f"This server will be stopped so they can use {them}."
        )
    return f"{idle}. Servers here give idle GPUs back after {_minutes(notice.policy.seconds)}."


def reclaimed_message(notice: Notice, utilization: float, now: float) -> str:
    """What happened, for the student's next spawn page and the hub log."""
    gpus = "its GPU" if len(notice.gpus) == 1 else f"its {len(notice.gpus)} GPUs"
    when = time.strftime("%b %d at %H:%M %Z", time.localtime(now))
    idle_for = _minutes(now - notice.idle_since)
    because = f"{gpus} stayed idle (under {utilization:g} % utilisation) for {idle_for}"
    if notice.policy.reclaim == "when_queued":
        others = "someone else waited" if notice.waiting == 1 else f"{notice.waiting} others waited"
        because += f" while {others} for a GPU"
    return (
        f"Your previous server was stopped on {when} because {because}. Your files are kept: start "
        f"again "
        "when you need the GPU, or choose a CPU-only environment."
    )


def budget_notice(holder: Holder, deadline: float, waiting: int) -> Notice:
    return Notice(
        holder.key,
        holder.gpus,
        holder.started,
        holder.started,
        deadline,
        holder.policy,
        waiting,
        reason="budget",
    )


def notice_document(notice: Notice | None, message: str) -> dict:
    if notice is None:
        return {}
    return {
        "reclaim": {
            "deadline": notice.deadline,
            "reason": notice.reason,
            "message": message,
            "idle_since": notice.idle_since,
            "waiting": notice.waiting,
        }
    }


def write_notice(directory: str, document: dict) -> None:
    """Write one server's notice; the directory is readable by the container's user whatever the
    hub's umask, writable by the hub only (blocking). Directories stay when servers stop, like
    homes: one small directory per server ever started, and none can vanish under a container that
    is starting."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    os.chmod(directory, 0o755)
    write_json_atomic(os.path.join(directory, NOTICE_FILE), document)


def prepare_notice_dir(directory: str) -> None:
    """A server's notice directory, empty of any old warning, before its container mounts it
    (blocking)."""
    write_notice(directory, {})


def queue_demand(waiting, allocator, free: int) -> tuple[float, float]:
    """(GPUs the line needs beyond the ``free`` ones, what its first still lacks). A request the
    user's max_gpus_per_user will refuse when its turn comes asks for nothing: one student queueing
    several named servers must not get several others reclaimed."""
    granted: dict[str, int] = {}
    total = 0
    for ticket in waiting:
        request = ticket.request
        user = request.user
        held = granted.get(user, allocator.user_gpu_count(user, excluding=request.key))
        if request.user_limit is not None and held + request.count > request.user_limit:
            continue
        granted[user] = held + request.count
        total += request.count
    head = waiting[0].request.count if waiting else 0
    return max(0.0, float(total - free)), max(0.0, float(head - free))


def write_activity(runtime_dir: str, activity: dict) -> None:
    # the first round may come before any server's notices
    os.makedirs(runtime_dir, mode=0o755, exist_ok=True)
    write_json_atomic(os.path.join(runtime_dir, ACTIVITY_FILE), activity)


def read_activity(runtime_dir: str) -> dict:
    """The GPU activity the hub last wrote, {} when there is none (blocking)."""
    try:
        with open(os.path.join(runtime_dir, ACTIVITY_FILE), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def gpu_charge(target, holder: Holder) -> float:
    """GPUs a running server is charged for, per hour held: what its usage records charge (one row
    per GPU at the assignment's ``share``: 1, or 1/n of a GPU shared by up to n), not what a stop
    would free (``holder.gpus_freed``: 1/current holders). A server without an assignment (never
    the case for a holder) is charged its whole GPUs, as a record without a share is."""
    assignment = getattr(target, "_assignment", None)
    share = assignment.share if assignment is not None else 1.0
    return len(holder.gpus) * share


class Reclaimer:
    """One per hub process: see the module's docstring."""

    def __init__(self, allocator, waitroom, metrics=None):
        self.allocator = allocator
        self.waitroom = waitroom
        self.metrics = metrics  # HubMetrics: reclaims, GPU-hours by course
        self._last_round: float | None = None
        self.servers: dict[ServerKey, ReclaimTarget] = {}
        self.tracker: IdleTracker | None = None
        self.stopping: set[ServerKey] = set()
        # notice directory -> the document last written there
        self.written: dict[str, dict | None] = {}
        self.task: asyncio.Future | None = None
        self._stops: set[asyncio.Future] = set()
        # the last round failed: later failures of the same kind are logged short
        self._failing = False

    # ---- servers come and go ---------------------------------------------------------------------
    def register(self, target: ReclaimTarget, directory: str) -> None:
        self.servers[target.server_key] = target
        # unknown: after a hub restart the file may still hold a warning this process never made
        self.written[directory] = None

    def unregister(self, key: ServerKey, directory: str) -> None:
        self.servers.pop(key, None)
        self.written.pop(directory, None)
        if self.tracker is not None:
            self.tracker.forget([key])

    # ---- the task --------------------------------------------------------------------------------
    def ensure_started(
        self,
        *,
        interval: float,
        utilization: float,
        runtime_dir: str,
        snapshot: Callable[[], Awaitable],
        blocking: Callable[..., Awaitable],
        log,
    ) -> None:
        if interval <= 0 or (self.task is not None and not self.task.done()):
            return
        self.interval, self.utilization, self.runtime_dir = interval, utilization, runtime_dir
        self.snapshot, self.blocking, self.log = snapshot, blocking, log
        self.task = asyncio.ensure_future(self._forever())

    async def _forever(self):
        while True:
            try:
                await self.run_once()
                self._failing = False
            except asyncio.CancelledError:
                raise
            # an unreadable inventory or a full disk: nothing is stopped on a failed look
            except Exception as e:
                if self._failing:
                    self.log.warning("GPU idle check failed again (%s); nothing reclaimed", e)
                else:
                    self.log.exception(
                        "GPU idle check failed; nothing reclaimed until it works again"
                    )
                self._failing = True
            await asyncio.sleep(self.interval)

    async def run_once(self, now: float | None = None):
        now = time.time() if now is None else now
        if self.tracker is None:
            self.tracker = IdleTracker(self.utilization, started=now)
            # idle clocks survive a hub restart: GPUs keep the last busy time the previous hub
            # process saw idle clocks survive a quick hub restart: GPUs keep the last busy time the
            # previous process saw
            previous = await self.blocking(read_activity, self.runtime_dir)
            updated = previous.get("updated")
            if isinstance(updated, (int, float)) and 0 <= now - updated <= RESTART_GAP_SECONDS:
                for uuid, entry in (previous.get("gpus") or {}).items():
                    if isinstance(entry, dict) and isinstance(entry.get("last_busy"), (int, float)):
                        self.tracker.last_busy[uuid] = min(float(entry["last_busy"]), now)
        snapshot = await self.snapshot()
        holders = []
        charged = []  # (course, GPUs charged per hour) of each holder, as its usage records charge
        for key, target in list(self.servers.items()):
            try:
                holder = await target.idle_holder()
            # one server's trouble (its course unreadable) must not stop the others' checks
            except Exception as e:
                self.log.warning("GPU idle check of %s skipped: %s", "/".join(key).rstrip("/"), e)
                continue
            if holder is not None:
                holders.append(holder)
                charged.append((holder.course, gpu_charge(target, holder)))
        self.tracker.observe(snapshot.gpus, [u for h in holders for u in h.gpus], now)
        if self.metrics is not None and self._last_round is not None:
            for course, rate in charged:
                self.metrics.gpu_hours.labels(course).inc(
                    rate * max(0.0, now - self._last_round) / 3600
                )
        self._last_round = now
        waiting = self.waitroom.queue.waiting(POOL)
        demand, head_need = queue_demand(
            waiting, self.allocator, self.allocator.free_count(snapshot.gpus)
        )
        review = self.tracker.review(holders, now, demand, len(waiting), head_need)
        notices = {n.key: n for n in review.warned + review.due}
        by_key = {h.key: h for h in holders}
        for holder in holders:
            # a budget that runs out comes with the same warning, whatever the queue; the earlier
            # end wins
            if holder.budget_seconds is None or holder.budget_seconds > holder.policy.warn_seconds:
                continue
            deadline = now + holder.budget_seconds
            if holder.key not in notices or deadline < notices[holder.key].deadline:
                notices[holder.key] = budget_notice(holder, deadline, len(waiting))
        review.due = [n for n in notices.values() if n.deadline <= now]
        review.warned = [n for n in notices.values() if n.deadline > now]

        writes = {}
        for key in self.servers:
            directory = notice_dir(self.runtime_dir, key)
            notice = notices.get(key)
            document = notice_document(notice, self._warning(notice, by_key, now) if notice else "")
            if self.written.get(directory) != document:
                writes[directory] = document
        failed = None
        for directory, document in writes.items():
            try:
                await self.blocking(write_notice, directory, document)
                self.written[directory] = document
            except Exception as e:
                failed = failed or e
        # a warning the student never saw does not count: its countdown starts once a write
        # succeeds, and nobody is stopped without one
        unseen = [
            key
            for key in notices
            if not (self.written.get(notice_dir(self.runtime_dir, key)) or {}).get("reclaim")
        ]
        self.tracker.forget(unseen)
        for notice in review.due:
            target = self.servers.get(notice.key)
            if target is not None and notice.key not in self.stopping and notice.key not in unseen:
                self._start_stop(target, notice, by_key[notice.key], now)
        await self.blocking(
            write_activity,
            self.runtime_dir,
            self._activity(holders, notices, snapshot, waiting, now),
        )
        if failed is not None:
            raise failed  # logged by the loop; the other servers' warnings and stops went ahead
        return review

    def _warning(self, notice: Notice, holders: dict[ServerKey, Holder], now: float) -> str:
        if notice.reason == "budget":
            return holders[notice.key].budget_warning
        return warning_message(notice, self.utilization, now)

    def _start_stop(self, target: ReclaimTarget, notice: Notice, holder: Holder, now: float):
        if notice.reason == "budget":
            message, reason = holder.budget_stopped, "budget"
        else:
            message, reason = reclaimed_message(notice, self.utilization, now), "reclaimed idle"
        if notice.reason == "budget":
            self.log.warning(
                "Stopping %s: its GPU-hour budget is spent (GPUs %s): %s",
                "/".join(notice.key).rstrip("/"),
                ",".join(notice.gpus),
                message,
            )
        else:
            self.log.warning(
                "Reclaiming idle GPU(s) %s of %s (reclaim=%s, %d waiting): %s",
                ",".join(notice.gpus),
                "/".join(notice.key).rstrip("/"),
                notice.policy.reclaim,
                notice.waiting,
                message,
            )
        self.stopping.add(notice.key)

        async def stop():
            try:
                if not await target.stop_for_reclaim(message, notice.started, reason):
                    self.log.info(
                        "Reclaim of %s skipped: the server is busy starting or stopping", notice.key
                    )
                elif self.metrics is not None:
                    self.metrics.reclaims.labels(notice.reason).inc()
            except Exception:
                self.log.exception("Reclaim of %s failed; trying again next round", notice.key)
            finally:
                self.stopping.discard(notice.key)

        task = asyncio.ensure_future(stop())
        self._stops.add(task)
        task.add_done_callback(self._stops.discard)

    def _activity(self, holders, notices, snapshot, waiting, now) -> dict:
        """What the hub sees, for `jupyter-gpuspawn gpus` and the admin page (which run in other
        processes)."""
        servers = {}
        for holder in holders:
            notice = notices.get(holder.key)
            servers["/".join(holder.key)] = {
                "user": holder.key[0],
                "server": holder.key[1],
                "gpus": list(holder.gpus),
                "course": holder.course,
                "started": holder.started,
                "idle_since": self.tracker.idle_since(holder),
                "reclaim": holder.policy.reclaim,
                "deadline": notice.deadline if notice else None,
                "deadline_reason": notice.reason if notice else None,
            }
        # the queue keeps loop time; the file keeps epoch seconds
        clock = asyncio.get_running_loop().time()
        queue = [
            {
                "user": t.request.user,
                "server": t.request.server,
                "gpus": t.request.count,
                "pool": t.pool,
                "position": i + 1,
                "waiting_since": now - max(0.0, clock - t.joined_at),
            }
            for i, t in enumerate(waiting)
        ]
        devices = {
            gpu.uuid: {
                "index": gpu.index,
                "name": gpu.label,
                "utilization_pct": gpu.utilization_pct,
                "memory_used": gpu.memory_used,
                "memory_total": gpu.memory_total,
            }
            for gpu in snapshot.gpus
        }
        last_busy = dict(self.tracker.last_busy)
        # a held GPU never seen busy: idle since this process started looking
        for holder in holders:
            for uuid in holder.gpus:
                last_busy.setdefault(uuid, self.tracker.started)
        return {
            "updated": now,
            "busy_utilization": self.utilization,
            "gpus": {uuid: {"last_busy": t} for uuid, t in sorted(last_busy.items())},
            "devices": devices,
            "servers": servers,
            "queue": queue,
        }
