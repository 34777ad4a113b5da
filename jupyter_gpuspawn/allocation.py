"""GPU allocation: pure bookkeeping of which server holds which GPU (by UUID).

No Docker, no NVML, no awaits: :meth:`GPUAllocator.allocate` chooses and reserves in one synchronous
call, so two spawns running on the same event loop can never be handed the same GPU.

Policies:

- ``exclusive`` (default): a GPU belongs to one server.
- ``shared``: up to ``max_users_per_gpu`` shared servers on one GPU; never mixed with an exclusive
  holder.

Servers are keyed by ``(user, server_name)`` tuples, never by a joined string, so user ``a-b`` and
user ``a``'s server ``b`` are different keys.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

POLICIES = ("exclusive", "shared")
GiB = 1024**3
# Seconds after a release during which the GPU's memory still counts as ours, not as work outside
# the hub: an inventory snapshot taken just before the release still shows the stopped container's
# memory, and the next start in line must not be kept waiting for a fresher one.
RELEASE_GRACE = 5.0

ServerKey = tuple[str, str]


class AllocationError(Exception):
    """A request that cannot be met now; ``message`` is written for the student who asked."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class NoGPUAvailable(AllocationError):
    pass


class UserGPULimit(AllocationError):
    pass


@dataclass(frozen=True)
class Hold:
    policy: str = "exclusive"
    max_users_per_gpu: int = 1


@dataclass(frozen=True)
class GPURequest:
    user: str
    server: str = ""
    count: int = 0
    policy: str = "exclusive"
    max_users_per_gpu: int = 1
    # most GPUs the user may hold over all their servers (max_gpus_per_user)
    user_limit: int | None = None

    @property
    def key(self) -> ServerKey:
        return (self.user, self.server)


@dataclass
class RebuildReport:
    """What a rebuild from the running containers changed, for the log."""

    # held, but no container runs
    freed: list[tuple[ServerKey, tuple[str, ...]]] = field(default_factory=list)
    # a container runs, not held
    adopted: list[tuple[ServerKey, tuple[str, ...]]] = field(default_factory=list)
    # GPUs held beyond their policy
    conflicts: list[tuple[str, tuple]] = field(default_factory=list)


def _plural(n, word):
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _by_node(gpus: Sequence) -> dict[str | None, list]:
    """GPUs grouped by their Swarm node (one group, None, on a single host), each group in the given
    order."""
    groups: dict[str | None, list] = {}
    for gpu in gpus:
        groups.setdefault(getattr(gpu, "node", None), []).append(gpu)
    return groups


def _is_slice(gpu) -> bool:
    return getattr(gpu, "mig_profile", None) is not None


def _fit_for(candidates: Sequence, count: int) -> list:
    """The candidates a request for ``count`` GPUs may take: MIG slices only alone. A CUDA process
    sees one MIG device, so a second slice (or a slice beside whole GPUs) would be held and never
    used."""
    return list(candidates) if count <= 1 else [g for g in candidates if not _is_slice(g)]


def largest_server(gpus: Sequence) -> int:
    """The most GPUs one server can have of these: all of one host's whole GPUs (the most on one
    Swarm node), or one MIG slice."""
    most = 0
    for group in _by_node(gpus).values():
        whole = sum(1 for g in group if not _is_slice(g))
        most = max(most, whole or (1 if group else 0))
    return most


def _one_node(candidates: Sequence, count: int) -> list:
    """``count`` of the candidates (best first), all on one node. Of the nodes that can take the
    request, the one with the fewest candidates (best fit): packing keeps other nodes' GPUs together
    for larger requests, as the shared policy keeps whole GPUs free; ties go to the node holding the
    better candidate."""
    fitting = [group for group in _by_node(candidates).values() if len(group) >= count]
    if not fitting:
        return []
    best = min(fitting, key=lambda group: (len(group), candidates.index(group[0])))
    return best[:count]


class GPUAllocator:
    def __init__(self, foreign_memory_threshold: int = GiB):
        self.foreign_memory_threshold = foreign_memory_threshold
        # uuid -> {server key -> Hold}
        self._holds: dict[str, dict[ServerKey, Hold]] = {}
        # server key -> uuids, in assignment order
        self._assignments: dict[ServerKey, tuple[str, ...]] = {}
        # Every allocate/release/restore bumps the epoch and stamps the server: a rebuild from a
        # container list read at epoch E must not undo what happened to a server after E (see
        # rebuild).
        self._epoch = 0
        self._changed: dict[ServerKey, int] = {}
        self._released_at: dict[str, float] = {}  # uuid -> time.monotonic() of its last release

    # ---- queries ---------------------------------------------------------------------------------
    def assignment(self, user: str, server: str = "") -> tuple[str, ...]:
        return self._assignments.get((user, server), ())

    def assignments(self) -> dict[ServerKey, tuple[str, ...]]:
        return dict(self._assignments)

    def holders_of(self, uuid: str) -> tuple[ServerKey, ...]:
        """Servers holding this GPU (more than one only under the shared policy)."""
        return tuple(self._holds.get(uuid, {}))

    def user_gpu_count(self, user: str, excluding: ServerKey | None = None) -> int:
        return sum(
            len(uuids)
            for key, uuids in self._assignments.items()
            if key[0] == user and key != excluding
        )

    def busy_outside_hub(self, gpu) -> bool:
        # Memory or processes on a GPU that no server of ours holds belong to someone else (a job
        # started by hand, another hub): do not put a student there.
        if self._holds.get(gpu.uuid):
            return False
        if time.monotonic() - self._released_at.get(gpu.uuid, float("-inf")) < RELEASE_GRACE:
            return False
        return gpu.process_count > 0 or gpu.memory_used >= self.foreign_memory_threshold

    def _can_take(self, gpu, request: GPURequest) -> bool:
        holds = self._holds.get(gpu.uuid, {})
        if self.busy_outside_hub(gpu):
            return False
        if not holds:
            return True
        if request.policy == "exclusive" or any(h.policy == "exclusive" for h in holds.values()):
            return False
        capacity = min([request.max_users_per_gpu] + [h.max_users_per_gpu for h in holds.values()])
        return len(holds) < capacity

    def candidates(self, gpus: Sequence, request: GPURequest) -> list:
        """GPUs the request could take, best first.

        Exclusive: the least loaded free GPUs. Shared: GPUs already shared that still have room come
        before fresh ones (packing keeps whole GPUs free for exclusive requests; spreading
        measurably refused more of them, see benchmarks/allocator_trace.py), least loaded first
        within each group.
        """
        usable = [gpu for gpu in gpus if self._can_take(gpu, request)]
        return sorted(
            usable,
            key=lambda g: (
                -len(self._holds.get(g.uuid, {})),
                g.memory_used,
                g.utilization_pct or 0,
                g.index,
            ),
        )

    def free_count(self, gpus: Sequence, policy="exclusive", max_users_per_gpu=1) -> int:
        probe = GPURequest(user="", count=1, policy=policy, max_users_per_gpu=max_users_per_gpu)
        return len(self.candidates(gpus, probe))

    def largest_request(self, gpus: Sequence, policy="exclusive", max_users_per_gpu=1) -> int:
        """The most GPUs one server could get now: all free ones on one host, the most free on one
        Swarm node."""
        probe = GPURequest(user="", count=1, policy=policy, max_users_per_gpu=max_users_per_gpu)
        return largest_server(self.candidates(gpus, probe))

    # ---- changes ---------------------------------------------------------------------------------
    def allocate(self, request: GPURequest, gpus: Sequence) -> tuple[str, ...]:
        """Choose and reserve ``request.count`` GPUs from ``gpus`` (the inventory snapshot), or
        raise.

        Any earlier assignment of the same server is released first: a server has one assignment at
        a time.
        """
        if request.policy not in POLICIES:
            raise ValueError(f"unknown GPU policy {request.policy!r}")
        if request.count < 0:
            raise ValueError("GPU count must not be negative")
        self.release(request.user, request.server)
        if request.count == 0:
            return ()
        self._check_user_limit(request)
        total = largest_server(gpus)
        if total == 0:
            raise NoGPUAvailable(
                "This server has no GPUs. Start a CPU-only server (0 GPUs) instead."
            )
        if request.count > total:
            if any(_is_slice(g) for g in gpus):
                where = (
                    "a server gets at most one MIG slice (CUDA uses only one) or whole GPUs, "
                    f"here at most {total}"
                )
            elif len(gpus) > total:
                where = f"one node of this cluster has at most {total}"
            else:
                where = f"this server has only {total}"
            raise NoGPUAvailable(
                f"You asked for {_plural(request.count, 'GPU')} but {where}. Ask for fewer."
            )
        chosen = _one_node(_fit_for(self.candidates(gpus, request), request.count), request.count)
        if len(chosen) < request.count:
            raise NoGPUAvailable(
                self._shortage_message(request, gpus, len(self.candidates(gpus, request)))
            )
        uuids = tuple(gpu.uuid for gpu in chosen)
        self._record(request.key, uuids, Hold(request.policy, request.max_users_per_gpu))
        return uuids

    def _check_user_limit(self, request: GPURequest):
        limit = request.user_limit
        if limit is None:
            return
        held = self.user_gpu_count(request.user, excluding=request.key)
        if held + request.count > limit:
            if held:
                msg = (
                    f"You already hold {_plural(held, 'GPU')} on your other servers and the limit "
                    f"is {limit} per "
                    f"user. Stop another server or ask for {max(limit - held, 0)} or fewer."
                )
            else:
                msg = f"The limit is {_plural(limit, 'GPU')} per user; ask for {limit} or fewer."
            raise UserGPULimit(msg)

    def _shortage_message(self, request: GPURequest, gpus: Sequence, free: int) -> str:
        total = len(gpus)
        outside = sum(1 for gpu in gpus if self.busy_outside_hub(gpu))
        note = f" ({outside} busy with work outside JupyterHub)" if outside else ""
        if free == 0:
            which = "The only GPU is" if total == 1 else f"All {total} GPUs are"
            return f"{which} in use{note}; try a CPU-only server or try again later."
        if free >= request.count:  # enough in all, but spread over nodes, or MIG slices
            most = largest_server(self.candidates(gpus, request))
            if any(_is_slice(g) for g in gpus):
                return (
                    f"{free} GPUs are free, but a server gets at most one MIG slice (CUDA uses "
                    f"only one) and "
                    f"at most {most} whole GPUs fit now; ask for {max(most, 1)} or fewer, or try "
                    f"again later."
                )
            return (
                f"{free} GPUs are free, but at most {most} on any one node, and a server's GPUs "
                f"must be on "
                f"one node; ask for {most} or fewer, or try again later."
            )
        return (
            f"Only {free} of {total} GPUs {'is' if free == 1 else 'are'} free{note} and you asked "
            f"for "
            f"{request.count}; ask for fewer or try again later."
        )

    def mark(self) -> int:
        """The current epoch; pass it to :meth:`rebuild` with a container list read after this
        call."""
        return self._epoch

    def changed_since(self, epoch: int) -> set:
        """Servers allocated, released or restored after ``epoch``."""
        return {key for key, changed in self._changed.items() if changed > epoch}

    def _touch(self, key: ServerKey):
        self._epoch += 1
        self._changed[key] = self._epoch

    def _record(self, key: ServerKey, uuids: tuple[str, ...], hold: Hold):
        self._touch(key)
        self._assignments[key] = uuids
        for uuid in uuids:
            self._holds.setdefault(uuid, {})[key] = hold

    def release(self, user: str, server: str = "") -> tuple[str, ...]:
        key = (user, server)
        self._touch(key)
        uuids = self._assignments.pop(key, ())
        for uuid in uuids:
            holds = self._holds.get(uuid, {})
            holds.pop(key, None)
            if not holds:
                self._holds.pop(uuid, None)
                self._released_at[uuid] = time.monotonic()
        return uuids

    def restore(
        self, user: str, server: str, uuids: Iterable[str], policy="exclusive", max_users_per_gpu=1
    ):
        """Record an assignment found on a running container (hub restart). No checks: the container
        holds them."""
        if policy not in POLICIES:
            policy = "exclusive"  # an unknown label value must not loosen isolation
        self.release(user, server)
        uuids = tuple(uuids)
        if uuids:
            self._record((user, server), uuids, Hold(policy, max(1, int(max_users_per_gpu))))

    def rebuild(
        self, records: Iterable[tuple], keep: Iterable[ServerKey] = (), since: int | None = None
    ) -> RebuildReport:
        """Make the table what the running containers say: ``records`` are (user, server, uuids,
        policy, max_users) read from their labels.

        The allocator's truth is "running containers + starts in flight". Servers in ``keep``
        (starts in flight, which have no running container yet) keep their current assignment, and
        so does every server the allocator changed after epoch ``since`` (taken with :meth:`mark`
        before the containers were listed): a start that finished or a stop that released meanwhile
        is newer than the list.
        """
        pinned = set(keep)
        if since is not None:
            pinned |= self.changed_since(since)
        before = {key: (uuids, self._holds_of(key)) for key, uuids in self._assignments.items()}
        self._holds.clear()
        self._assignments.clear()
        for key in pinned:
            if key in before:
                self._assignments[key] = before[key][0]
                for uuid in before[key][0]:
                    self._holds.setdefault(uuid, {})[key] = before[key][1]
        found = set()
        for user, server, uuids, policy, max_users in records:
            key = (user, server)
            if key in pinned or key in found:
                continue
            found.add(key)
            self.restore(user, server, uuids, policy, max_users)
        report = RebuildReport(conflicts=self.conflicts())
        for key, (uuids, _) in sorted(before.items()):
            if uuids and key not in self._assignments:
                report.freed.append((key, uuids))
        for key in sorted(found):
            uuids = self._assignments.get(key, ())
            if uuids and before.get(key, ((), None))[0] != uuids:
                report.adopted.append((key, uuids))
        return report

    def _holds_of(self, key: ServerKey) -> Hold:
        uuids = self._assignments.get(key, ())
        return self._holds[uuids[0]][key] if uuids else Hold()

    def conflicts(self) -> list:
        """GPUs held beyond their policy (only possible through restore from outside state)."""
        found = []
        for uuid, holds in self._holds.items():
            exclusive = any(h.policy == "exclusive" for h in holds.values())
            capacity = min(h.max_users_per_gpu for h in holds.values())
            if (exclusive and len(holds) > 1) or len(holds) > capacity:
                found.append((uuid, tuple(holds)))
        return found
