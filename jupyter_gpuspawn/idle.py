"""Idle GPUs come back: which servers' GPUs stayed idle, who is warned, whose server is due (pure;
no I/O).

A server is *GPU-idle* once every one of its GPUs stayed under the utilisation threshold for
``minutes``, counted from its start or from the last sample that saw one of them busy, whichever is
later. A GPU whose utilisation cannot be read (MIG devices, a GPU gone from the inventory) counts as
busy: nothing is reclaimed on a guess.

Reclaim modes (spawner-wide, or per course):

- ``when_queued`` (default): an idle server is due only while someone waits for a GPU it would free.
  With several idle servers, the longest-idle go first, and only as many as the waiting requests
  need.
- ``always``: an idle server is due whether anyone waits or not.
- ``never``: never reclaimed.

The student is warned ``warn_minutes`` before the stop: a server becomes *at risk* ``warn_minutes``
before it would be idle long enough, and its deadline is never earlier than ``warn_minutes`` after
the first warning (a server idle for hours when the queue forms still gets its full warning). Using
the GPU, or the queue emptying under ``when_queued``, withdraws the warning.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

RECLAIM_MODES = ("when_queued", "always", "never")

ServerKey = tuple[str, str]


@dataclass(frozen=True)
class IdlePolicy:
    minutes: float = 60.0
    warn_minutes: float = 10.0
    reclaim: str = "when_queued"

    @property
    def seconds(self) -> float:
        return self.minutes * 60

    @property
    def warn_seconds(self) -> float:
        return min(self.warn_minutes, self.minutes) * 60


@dataclass(frozen=True)
class Holder:
    """A running server that holds GPUs, as the reclaim sees it."""

    key: ServerKey
    gpus: tuple[str, ...]
    started: float  # epoch seconds: idle time never counts from before the server started
    policy: IdlePolicy
    course: str = ""
    # GPUs a stop would free (a seat on a GPU shared by n counts 1/n); default len(gpus)
    frees: float = 0.0
    # seconds of running left before its GPU-hour budget is spent
    budget_seconds: float | None = None
    budget_warning: str = ""  # what the student reads while that end is near
    budget_stopped: str = ""  # what the next spawn page says after it

    @property
    def gpus_freed(self) -> float:
        return self.frees or float(len(self.gpus))


@dataclass(frozen=True)
class Notice:
    """A warned server: when it stops, and why."""

    key: ServerKey
    gpus: tuple[str, ...]
    started: float  # the server's, to stop only the very server that was judged idle
    idle_since: float
    deadline: float
    policy: IdlePolicy
    waiting: int  # requests in the queue when the notice was made
    reason: str = "idle"  # or "budget"


@dataclass
class Review:
    warned: list[Notice] = field(default_factory=list)  # at risk, deadline still ahead
    due: list[Notice] = field(default_factory=list)  # deadline reached: stop now


class IdleTracker:
    """Remembers when each GPU was last seen busy and when each server was first warned."""

    def __init__(self, busy_utilization: float = 5.0, started: float = 0.0):
        self.busy_utilization = busy_utilization
        self.started = started  # GPUs never sampled count as busy at this moment (the hub's start)
        self.last_busy: dict[str, float] = {}
        self.warned_at: dict[ServerKey, float] = {}

    def observe(self, gpus: Iterable, held: Iterable[str], now: float) -> None:
        """One sample: ``gpus`` as the inventory reports them (``uuid``, ``utilization_pct``),
        ``held`` the UUIDs servers hold. A held GPU missing from the sample, or without a
        utilisation figure, counts as busy."""
        seen = {}
        for gpu in gpus:
            seen[gpu.uuid] = gpu.utilization_pct
        for uuid in set(held) | set(seen):
            util = seen.get(uuid)
            if util is None or util >= self.busy_utilization:
                self.last_busy[uuid] = now

    def idle_since(self, holder: Holder) -> float:
        busy = max(
            (self.last_busy.get(uuid, self.started) for uuid in holder.gpus), default=self.started
        )
        return max(holder.started, busy)

    def review(
        self,
        holders: Iterable[Holder],
        now: float,
        demand: float,
        waiting: int = 0,
        head_need: float = 0.0,
    ) -> Review:
        """Warn and pick servers for reclaim. ``demand``: GPUs the queue needs beyond the free ones
        (0 when nobody waits, or when the free GPUs already cover the queue); ``head_need``: what
        the first in line still lacks (the queue is strict: nobody behind it gets a GPU first);
        ``waiting``: requests in line."""
        for uuid, busy in self.last_busy.items():
            # the clock stepped back: a busy time "in the future" would block reclaim that long
            if busy > now:
                self.last_busy[uuid] = now
        candidates = []
        for holder in holders:
            if not holder.gpus or holder.policy.reclaim == "never":
                continue
            since = self.idle_since(holder)
            if now - since >= holder.policy.seconds - holder.policy.warn_seconds:
                candidates.append((since, holder))
        # servers already warned keep their turn: a warning never jumps to someone else
        # mid-countdown
        candidates.sort(key=lambda c: (c[1].key not in self.warned_at, c[0], c[1].key))
        at_risk = [c for c in candidates if c[1].policy.reclaim == "always"]
        # those reclaimed anyway cover part of the queue; the longest-idle of the others cover the
        # rest
        need = demand - sum(holder.gpus_freed for _, holder in at_risk)
        if head_need > sum(holder.gpus_freed for _, holder in candidates):
            # even every idle GPU would not let the first in line start: stopping some helps nobody
            need = 0
        for since, holder in candidates:
            if holder.policy.reclaim == "when_queued" and need > 0:
                at_risk.append((since, holder))
                need -= holder.gpus_freed

        review = Review()
        risky = {holder.key for _, holder in at_risk}
        for key in list(self.warned_at):
            if key not in risky:
                # busy again, stopped, or no longer needed: the warning is withdrawn
                del self.warned_at[key]
        for since, holder in at_risk:
            warned = self.warned_at.setdefault(holder.key, now)
            deadline = max(since + holder.policy.seconds, warned + holder.policy.warn_seconds)
            notice = Notice(
                holder.key, holder.gpus, holder.started, since, deadline, holder.policy, waiting
            )
            (review.due if now >= deadline else review.warned).append(notice)
        return review

    def forget(self, keys: Iterable[ServerKey]) -> None:
        for key in keys:
            self.warned_at.pop(key, None)
