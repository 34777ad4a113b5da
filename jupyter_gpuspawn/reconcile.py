"""Read GPU assignments back from container labels (the hub's reconcile, the `gpus` command)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from .datafiles import read_text, write_json_atomic
from .spec import LABEL_USER, GPUAssignment

# States in which a container holds its GPUs (a paused process keeps its GPU memory; a restarting
# one comes back).
HOLDING_STATES = ("running", "paused", "restarting")


@dataclass(frozen=True)
class LabelledContainer:
    id: str
    state: str  # Docker's: created, running, paused, restarting, removing, exited, dead
    assignment: GPUAssignment
    created: float = 0.0  # epoch seconds

    @property
    def holds_gpus(self) -> bool:
        return self.state in HOLDING_STATES


def list_labelled(client) -> list[LabelledContainer]:
    """Every container labelled by jupyter-gpuspawn, in any state: one Docker API call (docker-py
    APIClient; blocking)."""
    found = []
    for container in client.containers(all=True, filters={"label": LABEL_USER}):
        assignment = GPUAssignment.from_labels(container.get("Labels") or {})
        if assignment is not None:
            found.append(
                LabelledContainer(
                    container["Id"],
                    container.get("State") or "",
                    assignment,
                    float(container.get("Created") or 0),
                )
            )
    return found


def remove_container(client, container_id: str) -> None:
    """Force-remove a container; one that is already gone counts as removed (blocking)."""
    import docker.errors

    try:
        client.remove_container(container_id, force=True, v=True)
    except docker.errors.NotFound:
        pass


def _state(client, container_id_or_name: str) -> dict | None:
    """Docker's State of the container, None when it does not exist; other errors are raised
    (blocking)."""
    import docker.errors

    try:
        return client.inspect_container(container_id_or_name)["State"]
    except docker.errors.NotFound:
        return None


def container_holds_gpus(client, container_id: str) -> bool:
    """Whether Docker says this container may still use its GPUs; an engine that does not answer
    counts as yes, since nothing then proves the devices are free (blocking)."""
    try:
        state = _state(client, container_id)
    except Exception:
        return True
    return state is not None and bool(
        state.get("Running") or state.get("Paused") or state.get("Restarting")
    )


def container_ended(client, container_id_or_name: str) -> str | None:
    """How the container ended, if Docker says for sure that it can no longer use its GPUs: "exited"
    (exit code 0: Lab's Shut Down), "crashed" (any other exit, OOM, or removed under the hub's
    feet), None while it may still run. A container still "created" may yet be started (a ``docker
    start`` still running in another thread), and an engine that does not answer proves nothing
    (blocking)."""
    try:
        state = _state(client, container_id_or_name)
    except Exception:
        return None
    if state is None:
        return "crashed"
    if state.get("Status") not in ("exited", "dead"):
        return None
    return "exited" if state.get("ExitCode") == 0 and not state.get("OOMKilled") else "crashed"


DockerCall = Callable[..., Awaitable]

REMOVALS_FILE_VERSION = 1
# far above what a hub ever has pending (about 100 bytes an entry)
MAX_REMOVALS_FILE_BYTES = 16 * 1024 * 1024


def pending_removals_file(runtime_dir: str, owner: str = "") -> str:
    """Where the reconcile of the spawner class ``owner`` keeps the containers it must still
    remove: one file per spawner class, since each class has its own reconcile and engine (a
    Swarm class must not remove, or drop, a one-host class's containers)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", owner)
    return os.path.join(
        runtime_dir, f"pending-removals-{name}.json" if name else "pending-removals.json"
    )


class PendingRemovals(MutableMapping):
    """Container (or service) id -> server key: containers the hub has forgotten the server of
    (its stop or its start failed, Docker did not confirm it stopped) that must still go, and whose
    GPUs stay held until they have. A dict that outlives the hub process: a restarted hub would
    otherwise adopt such a container as a running server nobody can stop, its GPUs held and its
    usage billed for good.

    With a ``path``, the mapping is read from it once, here (an unreadable or corrupt file is
    logged and counts as empty: the hub starts anyway), and every change is written back to it:
    atomically (temporary file, fsync, rename, fsync of the directory), in order, by one writer
    thread of its own, so the event loop (which makes every change) never waits on the disk. Changes
    made faster than the disk takes them are written together. A write that fails is logged; the
    mapping still holds in memory. Without a path it is a plain in-memory mapping.
    """

    def __init__(self, path: str | None = None, log: logging.Logger | None = None):
        self.path = path or None
        self.log = log or logging.getLogger("jupyter_gpuspawn.reconcile")
        self._data: dict[str, tuple[str, str]] = {}
        self._version = 0  # of the last change; the writer skips all but the newest snapshot
        self._writer: ThreadPoolExecutor | None = None
        self._last_write: Future | None = None
        if self.path:
            self._data = self._load()

    # ---- the mapping -----------------------------------------------------------------------------
    def __getitem__(self, container_id: str) -> tuple[str, str]:
        return self._data[container_id]

    def __setitem__(self, container_id: str, key) -> None:
        key = (str(key[0]), str(key[1]))
        if self._data.get(container_id) != key:
            self._data[container_id] = key
            self._changed()

    def __delitem__(self, container_id: str) -> None:
        del self._data[container_id]
        self._changed()

    def __contains__(self, container_id) -> bool:
        return container_id in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"PendingRemovals({self._data!r})"

    # ---- the file --------------------------------------------------------------------------------
    def _load(self) -> dict[str, tuple[str, str]]:
        try:
            text = read_text(self.path, kind="pending removals", max_bytes=MAX_REMOVALS_FILE_BYTES)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            self._bad_file(f"cannot be read: {e}")
            return {}
        try:
            document = json.loads(text)
            if document.get("version") != REMOVALS_FILE_VERSION:
                raise ValueError(
                    f"version {document.get('version')!r} is not {REMOVALS_FILE_VERSION}"
                )
            removals = document["removals"]
            loaded = {}
            for container_id, key in removals.items():
                if not (
                    container_id
                    and isinstance(key, list)
                    and len(key) == 2
                    and all(isinstance(part, str) for part in key)
                ):
                    raise ValueError(f"entry {container_id[:64]!r} is not a server key")
                loaded[container_id] = (key[0], key[1])
        except Exception as e:  # any shape at all: the hub starts anyway
            self._bad_file(f"is not a pending-removals document ({type(e).__name__}: {e})"[:300])
            return {}
        if loaded:
            self.log.warning(
                "GPU reconcile: %d container(s) whose removal was pending when the hub stopped "
                "will be removed: %s",
                len(loaded),
                ", ".join(f"{cid[:12]} ({_name(key)})" for cid, key in list(loaded.items())[:20])
                + (", ..." if len(loaded) > 20 else ""),
            )
        return loaded

    def _bad_file(self, why: str) -> None:
        self.log.error(
            "GPU reconcile: %s %s; starting with no pending container removals (the file is "
            "replaced at the next change). A container whose removal was pending is adopted as "
            "running: find stray ones with `docker ps --filter label=%s`",
            self.path,
            why,
            LABEL_USER,
        )

    def _changed(self) -> None:
        if not self.path:
            return
        self._version += 1
        snapshot = {cid: list(key) for cid, key in self._data.items()}
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="gpuspawn-removals")
        self._last_write = self._writer.submit(self._write, snapshot, self._version)

    def _write(self, snapshot: dict, version: int) -> None:
        if version != self._version:
            return  # a newer snapshot is queued behind this one
        try:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o755, exist_ok=True)
            write_json_atomic(
                self.path,
                {"version": REMOVALS_FILE_VERSION, "removals": snapshot},
                mode=0o600,
                durable=True,
            )
        except Exception as e:
            self.log.error(
                "GPU reconcile: cannot save the pending container removals to %s: %s. They hold "
                "in this hub process; one restarted before they are done adopts those containers",
                self.path,
                e,
            )

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every change so far is on disk (or its write failed and was logged);
        blocking."""
        if self._last_write is not None:
            self._last_write.result(timeout)


class Reconciler:
    """Keeps the allocator equal to "running containers + starts in flight" while the hub runs.

    Once at hub start (rebuild from labels), then every ``interval`` seconds: GPUs whose container
    is gone (crashed, OOM-killed, ``docker rm -f``, lost with dockerd) are freed even before the
    hub's poll notices, holders the hub did not know are adopted and logged, containers left
    ``created`` by an interrupted spawn are removed (they carry device requests for GPUs the
    allocator may hand out again), and containers whose stop failed are removed again until Docker
    confirms. One Docker list call per round, off the event loop.
    """

    def __init__(
        self,
        allocator,
        list_labelled=list_labelled,
        remove=remove_container,
        *,
        runtime_dir: str = "",
        owner: str = "",
        log: logging.Logger | None = None,
    ):
        self.allocator = allocator
        # the engine's calls (engines.Engine): containers on one host, services on a Swarm
        self.list_labelled, self.remove = list_labelled, remove
        # server keys with a start in flight in this process
        self.starting: set[tuple[str, str]] = set()
        # server keys with a stop in flight (their end is the stop's)
        self.stopping: set[tuple[str, str]] = set()
        # container id -> server key: must go, still holds GPUs; kept in runtime_dir across hub
        # restarts
        self.removals = PendingRemovals(
            pending_removals_file(runtime_dir, owner) if runtime_dir else None, log
        )
        self.first: asyncio.Future | None = None
        self.loop: asyncio.Future | None = None
        self.rounds = 0
        # called after each round with (containers holding GPUs, server keys in flight, the
        # wall-clock time the containers were listed, first round?): the usage records follow the
        # containers as the allocator does
        self.on_round: Callable[[list, set, float, bool], Awaitable] | None = None
        # servers the hub still counts as running: their end, when it comes, is the spawner's to
        # record
        self.tracked: Callable[[], set] = set

    async def ensure_started(self, call: DockerCall, log, interval: float):
        """Wait for the first rebuild (raises if Docker cannot be read); start the periodic one."""
        if self.first is None or (self.first.done() and self.first.exception()):
            self.first = asyncio.ensure_future(self.run_once(call, log))
        await asyncio.shield(self.first)
        if self.loop is None and interval > 0:
            self.loop = asyncio.ensure_future(self._forever(call, log, interval))

    async def _forever(self, call: DockerCall, log, interval: float):
        while True:
            await asyncio.sleep(interval)
            try:
                await self.run_once(call, log)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # dockerd restarting: change nothing until it answers
                log.warning(
                    "GPU reconcile skipped, holds unchanged: cannot read containers from Docker "
                    "(%s)",
                    e,
                )

    async def run_once(self, call: DockerCall, log):
        allocator = self.allocator
        since = allocator.mark()
        in_flight = set(self.starting)
        listed_at = time.time()
        containers = await call(self.list_labelled)
        in_flight |= self.starting
        in_flight |= allocator.changed_since(since)
        removed = set()
        for c in containers:
            key = (c.assignment.user, c.assignment.server)
            if c.state == "created" and key not in in_flight:
                if await self._remove(
                    call, log, c.id, f"left created by an interrupted spawn of {_name(key)}"
                ):
                    removed.add(c.id)
        for container_id, key in list(self.removals.items()):
            if key in in_flight:
                # its server is starting again (perhaps reusing this very container): not ours to
                # remove
                continue
            if await self._remove(
                call, log, container_id, f"its server was stopped ({_name(key)})"
            ):
                removed.add(container_id)
                del self.removals[container_id]
        records = [
            (
                c.assignment.user,
                c.assignment.server,
                c.assignment.gpus,
                c.assignment.policy,
                c.assignment.max_users_per_gpu,
            )
            for c in containers
            if c.holds_gpus and c.id not in removed
        ]
        report = allocator.rebuild(records, keep=in_flight, since=since)
        self.rounds += 1
        if self.rounds == 1:
            log.info(
                "GPU allocations rebuilt from %d running container(s): %d GPU(s) held",
                len(records),
                sum(len(r[2]) for r in records),
            )
        else:
            for key, uuids in report.adopted:
                log.warning(
                    "GPU reconcile: %s holds %s on a running container this hub did not know; "
                    "kept held",
                    _name(key),
                    ",".join(uuids),
                )
        for key, uuids in report.freed:
            log.info(
                "GPU reconcile: freed %s of %s: its container no longer runs",
                ",".join(uuids),
                _name(key),
            )
        for uuid, holders in report.conflicts:
            log.error("GPU %s is held beyond its policy by %s", uuid, [_name(k) for k in holders])
        if self.on_round is not None:
            first = self.rounds == 1
            # a server stopping, or one the hub still counts as running (its container exited or
            # vanished and the hub's poll has not taken it yet), ends with the reason the spawner
            # gives it ("stopped", "exited", "crashed", "reclaimed idle"); after a restart the first
            # look closes what ended while the hub was down
            keep = set(in_flight) | self.stopping
            if not first:
                keep |= self.tracked()
            try:
                await self.on_round(
                    [c for c in containers if c.holds_gpus and c.id not in removed],
                    keep,
                    listed_at,
                    first,
                )
            except Exception:  # the records catch up next round; the allocator's round stands
                log.exception("GPU usage records: reconcile round failed")
        return report

    async def _remove(self, call: DockerCall, log, container_id: str, why: str) -> bool:
        try:
            await call(self.remove, container_id)
        except Exception as e:
            log.error(
                "Could not remove container %s (%s): %s; trying again next round",
                container_id[:12],
                why,
                e,
            )
            return False
        log.warning("Removed container %s: %s", container_id[:12], why)
        return True


def _name(key) -> str:
    user, server = key
    return f"{user}/{server}" if server else user
