"""Read GPU assignments back from container labels (the hub's reconcile, the `gpus` command)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

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


class Reconciler:
    """Keeps the allocator equal to "running containers + starts in flight" while the hub runs.

    Once at hub start (rebuild from labels), then every ``interval`` seconds: GPUs whose container
    is gone (crashed, OOM-killed, ``docker rm -f``, lost with dockerd) are freed even before the
    hub's poll notices, holders the hub did not know are adopted and logged, containers left
    ``created`` by an interrupted spawn are removed (they carry device requests for GPUs the
    allocator may hand out again), and containers whose stop failed are removed again until Docker
    confirms. One Docker list call per round, off the event loop.
    """

    def __init__(self, allocator, list_labelled=list_labelled, remove=remove_container):
        self.allocator = allocator
        # the engine's calls (engines.Engine): containers on one host, services on a Swarm
        self.list_labelled, self.remove = list_labelled, remove
        # server keys with a start in flight in this process
        self.starting: set[tuple[str, str]] = set()
        # server keys with a stop in flight (their end is the stop's)
        self.stopping: set[tuple[str, str]] = set()
        # container id -> server key: must go, still holds GPUs
        self.removals: dict[str, tuple[str, str]] = {}
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
