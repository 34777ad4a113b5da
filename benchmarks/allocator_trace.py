"""GPU queue and idle reclaim on a synthetic semester: served GPU demand vs an offline optimum,
queue waits, losses.

The trace. A semester of lab sessions on 8 GPUs: weekday peaks (9-18 h), exclusive requests for 1
GPU (75 %) or 2 GPUs (25 %) and shared seats (35 % of requests, 2 seats per GPU). Every user is
distinct (one server each, no per-user cap). Each session has

- an *active* part, GPU busy the whole time (lognormal, median 2 h, sigma 0.6, capped at 12 h), then
- an *idle tail*: the student walked away and left the server open; it still holds its GPUs at 0 %
  utilisation. 50 % of sessions have one, lognormal with median 1.5 h, sigma 1.0, capped at 10 h
  (mean 2.4 h when present); the rest are stopped when their work is done. Tails come from their own
  random stream, so the active parts are exactly those of the earlier version of this benchmark (its
  figures are kept: see "allocator alone" below).

Three modes, each a discrete-event simulation driving the project's real pure modules (GPUAllocator,
GPUQueue, IdleTracker, reclaim.queue_demand), with the hub's wiring (spawner.start,
WaitRoom.dispatch_once, Reclaimer.run_once):

- ``no-queue`` (gpu_queue off): a start that gets no GPU is refused. The student tries again every 5
  minutes (--retry-minutes) for up to 30 minutes after the first try, the same patience as the queue
  timeout, then gives up: lost. (--retry-minutes 0: lost at the first refusal.)
- ``queue`` (the default gpu_queue, gpu_queue_timeout 1800 s): a start that gets no GPU, or that
  finds anybody already waiting (a new start never goes around the line), joins GPUQueue (one pool,
  strict first come first served). The queue is offered the GPUs whenever something changes (the
  hub's dispatcher polls every 0.2 s; here the hand-off is instant). A waiter not granted within 30
  minutes gives up: lost.
- ``queue+reclaim``: as ``queue``, plus IdleTracker with the product defaults (IdlePolicy(60, 10,
  "when_queued"), busy threshold 5 %) sampling every GPU each simulated minute (--sample-minutes;
  the hub samples every 10 s). A GPU reads 100 % while any server holding it is in its active part,
  else 0 %. review() gets demand and head_need from reclaim.queue_demand(waiting, allocator,
  free_count); servers it marks due are stopped at once and their GPUs go to the queue. A reclaimed
  server loses only (the rest of) its idle tail: it is only ever due after 60 idle minutes, so its
  work was done.

Served GPU demand = GPU-hours of *active* work started (a shared seat counts 1/2 GPU-hour per hour,
a 2-GPU session 2). Idle tails count for nothing: holding an idle GPU serves nobody.

The optimum. A clairvoyant scheduler that knows the whole semester, never lets an idle server hold a
GPU (it sees only the active parts), and may start each request at any moment within 30 minutes of
its arrival (the same patience every mode above gives the student: the queue timeout, or the
retries). It maximises started active GPU-hours under the capacity at every instant, with shared
seats counted as 1/2 GPU and no GPU identities (a relaxation: a real scheduler must pair seats on
one GPU). The 30-minute window is relaxed too, so that the figure stays an *upper bound*: start
times are on a grid of --opt-step-minutes (5) after arrival, and a session started at grid step k >=
1 is only counted as occupying [start, start + duration - step) (any real start in the preceding
step maps to it, and its true interval contains that one). The MILP (HiGHS via scipy) runs for at
most --milp-seconds per load; when it stops before proving optimality the reported bound is its dual
bound, still an upper bound. So "% of optimum" is conservative: the true optimum lies below the
figure used.

Also reported: "% of the at-arrival optimum", the same MILP without delays (what the earlier version
of this benchmark called the optimum; a queue that serves later can exceed it, so it is *not* used
for the goal), and "allocator alone": the earlier benchmark exactly (no idle tails, no queue,
refused = lost) against that optimum, for our allocator and a naive first-fit (keys ``ratio_ours``
and ``ratio_first_fit``).

Also: the no-queue and queue modes on the same trace without idle tails (every server stopped the
moment its work ended), what an instant, perfect reclaim could reach; the rest of the gap is the
optimum's clairvoyance (it picks which requests to serve knowing their durations, and shifts starts
knowing the future).

Where the gap to the optimum goes, for the queue modes (GPU-hours while at least one start waits):
"free" = GPUs no server holds (head-of-line blocking: the head needs 2 GPUs, or a whole GPU while
only a seat is free), "idle-held" = GPUs held only by servers in their idle tail.

Goal (issue 11): queue+reclaim >= 98 % of the optimum at every load.

    .venv/bin/python benchmarks/allocator_trace.py [--gpus 8] [--weeks 15] [--seed 1] [--loads 0.6
    1.0 1.4]
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import math
import os
import random
import sys
import time
from typing import NamedTuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jupyter_gpuspawn.allocation import AllocationError, GPUAllocator, GPURequest, NoGPUAvailable
from jupyter_gpuspawn.gpus import GPU
from jupyter_gpuspawn.idle import Holder, IdlePolicy, IdleTracker
from jupyter_gpuspawn.queue import GPUQueue
from jupyter_gpuspawn.reclaim import queue_demand
from jupyter_gpuspawn.waitroom import POOL

SHARED_SEATS = 2
# the product defaults (IdlePolicy is a frozen value)
DEFAULT_POLICY = IdlePolicy(minutes=60, warn_minutes=10, reclaim="when_queued")
MODES = ("no-queue", "queue", "queue+reclaim")
QUEUE_TIMEOUT_S = 1800.0  # gpu_queue_timeout's default
BUSY_UTILIZATION = 5.0  # gpu_idle_utilization's default
IDLE_TAIL_SHARE = 0.5
IDLE_TAIL_MEDIAN_H = 1.5
IDLE_TAIL_SIGMA = 1.0
IDLE_TAIL_CAP_H = 10.0


class Request(NamedTuple):
    arrival: float  # hours from the start of the semester
    active: float  # hours of GPU work
    policy: str  # "exclusive" | "shared"
    gpus: int
    idle: float  # hours the server stays open, idle, after the work (0: stopped when done)


def semester(weeks, seed, load=1.4):
    """Requests sorted by arrival (see the module docstring)."""
    rng = random.Random(seed)
    # its own stream: the active parts do not depend on it
    tails = random.Random(f"idle tails {seed}")
    requests = []
    for day in range(weeks * 7):
        weekday = day % 7 < 5
        for hour in range(24):
            busy = weekday and 9 <= hour < 18
            rate = load * (3.0 if busy else 0.4 if weekday else 0.2)
            for _ in range(_poisson(rng, rate)):
                start = day * 24 + hour + rng.random()
                duration = min(12.0, rng.lognormvariate(math.log(2.0), 0.6))
                if rng.random() < 0.35:
                    policy, gpus = "shared", 1
                else:
                    policy, gpus = "exclusive", 2 if rng.random() < 0.25 else 1
                idle = 0.0
                if tails.random() < IDLE_TAIL_SHARE:
                    idle = min(
                        IDLE_TAIL_CAP_H,
                        tails.lognormvariate(math.log(IDLE_TAIL_MEDIAN_H), IDLE_TAIL_SIGMA),
                    )
                requests.append(Request(start, duration, policy, gpus, idle))
    return sorted(requests)


def _poisson(rng, lam):
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def gpu_weight(request):
    return request.gpus if request.policy == "exclusive" else 1 / SHARED_SEATS


def gpu_hours(request):
    """Active GPU-hours: what serving this request is worth."""
    return request.active * gpu_weight(request)


class FirstFit(GPUAllocator):
    """Naive first-fit: the lowest-numbered GPUs that can take the request."""

    def candidates(self, gpus, request):
        return [gpu for gpu in gpus if self._can_take(gpu, request)]


# ---- the simulation ------------------------------------------------------------------------------
# event kinds, in the order they are handled at one instant: work ends before servers stop, stops
# before timeouts (a GPU freed at the deadline still reaches the waiter), and all of those before
# new starts
ACTIVE_END, STOP, DEADLINE, TRY = range(4)


def _percentile(values, q):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def simulate(
    trace,
    n_gpus,
    mode,
    *,
    idle_tails=True,
    retry_s=300.0,
    patience_s=QUEUE_TIMEOUT_S,
    policy=DEFAULT_POLICY,
    sample_s=60.0,
    allocator_class=GPUAllocator,
):
    """Replay ``trace`` in ``mode``; returns the mode's figures (see the module docstring)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}")
    queued, reclaiming = mode != "no-queue", mode == "queue+reclaim"
    allocator = allocator_class(foreign_memory_threshold=2**62)
    queue = GPUQueue()
    tracker = IdleTracker(BUSY_UTILIZATION, started=0.0)
    uuids = [f"GPU-{i}" for i in range(n_gpus)]
    requests = [
        GPURequest(f"u{i}", "", r.gpus, r.policy, SHARED_SEATS if r.policy == "shared" else 1)
        for i, r in enumerate(trace)
    ]
    started = {}  # request index -> start (s), for servers running now
    active_until = {}  # request index -> end of its active part (s), for servers running now
    holders_of = {u: set() for u in uuids}  # uuid -> request indexes holding it
    events = []  # (time s, kind, request index)

    def push(t, kind, i):
        heapq.heappush(events, (t, kind, i))

    def busy(uuid, now):
        return any(active_until[i] > now for i in holders_of[uuid])

    def inventory(now):
        # what the hub's snapshot shows: utilisation 100 % while a holder works, 0 % otherwise
        return [
            GPU(u, n, "sim", 80 * 2**30, utilization_pct=100 if busy(u, now) else 0)
            for n, u in enumerate(uuids)
        ]

    figures = {
        "mode": mode,
        "served_gpu_hours": 0.0,
        "lost": 0,
        "waited": 0,
        "waits_min": [],
        "reclaims": 0,
        "free_while_waiting_gpu_hours": 0.0,
        "idle_held_while_waiting_gpu_hours": 0.0,
    }

    def begin(i, now):
        r = trace[i]
        started[i] = now
        active_until[i] = now + r.active * 3600
        for u in allocator.assignment(f"u{i}"):
            holders_of[u].add(i)
        figures["served_gpu_hours"] += gpu_hours(r)
        arrival = r.arrival * 3600
        if now > arrival:
            figures["waited"] += 1
            figures["waits_min"].append((now - arrival) / 60)
        push(active_until[i], ACTIVE_END, i)
        push(active_until[i] + (r.idle * 3600 if idle_tails else 0.0), STOP, i)

    def stop(i):
        for u in allocator.release(f"u{i}"):
            holders_of[u].discard(i)
        del started[i], active_until[i]
        tracker.forget([(f"u{i}", "")])  # Reclaimer.unregister, on every stop

    def dispatch(now):
        # WaitRoom.dispatch_once
        if not len(queue):
            return
        gpus = inventory(now)

        def try_allocate(ticket):
            try:
                return allocator.allocate(ticket.request, gpus)
            except NoGPUAvailable:
                raise
            # cannot happen here (no per-user cap): the turn would end with it
            except AllocationError as e:
                return e

        for ticket, result in queue.grant(try_allocate):
            i = int(ticket.key[0][1:])
            if isinstance(result, Exception):
                figures["lost"] += 1
            else:
                begin(i, now)

    def tick(now):
        # Reclaimer.run_once, at a fixed step
        gpus = inventory(now)
        holders = []
        for i, since in started.items():
            key = (f"u{i}", "")
            held = allocator.assignment(*key)
            if held:
                frees = sum(1 / max(1, len(allocator.holders_of(u))) for u in held)
                holders.append(
                    Holder(key=key, gpus=held, started=since, policy=policy, frees=frees)
                )
        tracker.observe(gpus, [u for h in holders for u in h.gpus], now)
        waiting = queue.waiting(POOL)
        demand, head_need = queue_demand(waiting, allocator, allocator.free_count(gpus))
        review = tracker.review(holders, now, demand, len(waiting), head_need)
        for notice in review.due:
            i = int(notice.key[0][1:])
            if started.get(i) != notice.started:
                continue
            assert active_until[i] <= now, "a server at work was reclaimed"
            stop(i)
            figures["reclaims"] += 1
        if review.due:
            dispatch(now)

    last = [0.0]

    def account(now):
        # GPU-hours lost while someone waits: GPUs nobody holds, and GPUs held only by idle servers
        if len(queue) and now > last[0]:
            hours = (now - last[0]) / 3600
            t = last[0]
            for u in uuids:
                if not holders_of[u]:
                    figures["free_while_waiting_gpu_hours"] += hours
                elif not busy(u, t):
                    figures["idle_held_while_waiting_gpu_hours"] += hours
        last[0] = now

    for i, r in enumerate(trace):
        push(r.arrival * 3600, TRY, i)
    next_tick = 0.0
    while events:
        now, kind, i = events[0]
        if reclaiming and next_tick < now:
            account(next_tick)
            tick(next_tick)
            next_tick += sample_s
            continue
        heapq.heappop(events)
        account(now)
        if kind == ACTIVE_END:
            pass  # the GPU reads idle from now on (inventory() looks at active_until)
        elif kind == STOP:
            if i in started:  # not reclaimed meanwhile
                stop(i)
                dispatch(now)
        elif kind == DEADLINE:
            if queue.leave((f"u{i}", "")) is not None:
                figures["lost"] += 1
                dispatch(now)  # the head may have left: the next in line may fit
        elif kind == TRY:
            request = requests[i]
            arrival = trace[i].arrival * 3600
            if queued and len(queue):
                # others wait for GPUs: a new start goes behind them, never around them
                # (spawner.start)
                queue.join(request, pool=POOL, holds_other=False, now=now, timeout=patience_s)
                push(now + patience_s, DEADLINE, i)
                dispatch(now)
                continue
            try:
                allocator.allocate(request, inventory(now))
            except NoGPUAvailable:
                if queued:
                    queue.join(request, pool=POOL, holds_other=False, now=now, timeout=patience_s)
                    push(now + patience_s, DEADLINE, i)
                elif retry_s > 0 and now + retry_s <= arrival + patience_s + 1e-6:
                    push(now + retry_s, TRY, i)
                else:
                    figures["lost"] += 1
                continue
            begin(i, now)
    assert not started and not len(queue)
    waits = figures.pop("waits_min")
    figures.update(
        requests=len(trace),
        lost_share=figures["lost"] / max(1, len(trace)),
        wait_median_min=_percentile(waits, 50),
        wait_p95_min=_percentile(waits, 95),
    )
    return figures


# ---- the offline optimum -------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet_stdout():
    """HiGHS prints debugging lines straight to file descriptor 1; keep them out of the table."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def offline_optimum(trace, n_gpus, window_h=0.0, step_h=5 / 60, time_limit=120.0, relaxed=True):
    """Upper bound on the active GPU-hours a clairvoyant scheduler starts when each request may
    start up to
    ``window_h`` after its arrival (0: at arrival only). See the module docstring. Returns a dict
    with ``bound`` (the MILP's dual bound: an upper bound even when time ran out), ``incumbent``,
    ``gap``, ``status``, ``seconds``.
    ``relaxed=False``: delayed starts occupy their whole duration, so a solution is a real schedule
    (on the grid): its ``incumbent`` is then a lower bound on that optimum, to see how tight the
    relaxation is."""
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import coo_matrix, csr_matrix
    from scipy.sparse.csgraph import connected_components

    began = time.monotonic()
    steps = int(round(window_h / step_h)) if window_h > 0 else 0
    owner, starts, ends = [], [], []
    for i, r in enumerate(trace):
        for k in range(steps + 1):
            start = r.arrival + k * step_h
            # step k >= 1 stands for every start in (start - step, start]: count only what all of
            # them occupy
            end = r.arrival + r.active + (k - 1) * step_h if k and relaxed else start + r.active
            owner.append(i)
            starts.append(start)
            ends.append(max(start, end))
    owner, starts, ends = np.array(owner), np.array(starts), np.array(ends)
    weights = np.array([gpu_hours(r) for r in trace])[owner]
    demand = np.array([gpu_weight(r) for r in trace])[owner]

    # Capacity holds everywhere iff it holds at each start after which an end comes before the next
    # start (the load only rises at starts; a check point followed by another start and no end is
    # dominated by the next one).
    times = np.unique(starts[ends > starts])
    ends_sorted = np.sort(ends)
    following = np.append(times[1:], np.inf)
    keep = np.searchsorted(ends_sorted, following, "right") > np.searchsorted(
        ends_sorted, times, "right"
    )
    checks = times[keep]
    lo = np.searchsorted(checks, starts, "left")
    hi = np.searchsorted(checks, ends, "left")
    counts = np.maximum(hi - lo, 0)
    offsets = np.repeat(np.cumsum(counts) - counts, counts)
    rows = np.arange(counts.sum()) - offsets + np.repeat(lo, counts)
    cols = np.repeat(np.arange(len(owner)), counts)
    data = np.repeat(demand, counts)
    # A check point where even every request at its largest cannot exceed the capacity constrains
    # nothing: drop it. What is left falls apart into independent pieces (each weekday's peak,
    # mostly), each solved on its own.
    order = np.lexsort((owner[cols], rows))
    pair_rows, pair_owner, pair_data = rows[order], owner[cols][order], data[order]
    first = np.flatnonzero(np.r_[True, (np.diff(pair_rows) != 0) | (np.diff(pair_owner) != 0)])
    peak = np.bincount(
        pair_rows[first], np.maximum.reduceat(pair_data, first), minlength=len(checks)
    )
    binding = peak > n_gpus + 1e-9
    mask = binding[rows]
    rows, cols, data = rows[mask], cols[mask], data[mask]
    row_ids = np.cumsum(binding) - 1
    rows = row_ids[rows]
    n_rows, n_req = int(binding.sum()), len(trace)
    graph = coo_matrix(
        (np.ones(len(rows)), (owner[cols], n_req + rows)), shape=(n_req + n_rows,) * 2
    )
    _, label = connected_components(graph, directed=False)
    request_weight = np.array([gpu_hours(r) for r in trace])
    constrained = np.zeros(n_req, bool)
    constrained[owner[cols]] = True
    # nothing limits these: all served
    bound = incumbent = float(request_weight[~constrained].sum())
    optimal, worst, pieces = True, "", 0
    deadline = began + time_limit
    by_piece = np.argsort(label[owner], kind="stable")
    piece_of_option = label[owner][by_piece]
    splits = np.flatnonzero(np.diff(piece_of_option)) + 1
    entries = np.argsort(label[n_req + rows], kind="stable")
    entry_piece = label[n_req + rows][entries]
    for options in np.split(by_piece, splits):
        if not constrained[owner[options[0]]]:
            continue
        pieces += 1
        piece = label[owner[options[0]]]
        lo_e, hi_e = np.searchsorted(entry_piece, [piece, piece + 1])
        e = entries[lo_e:hi_e]
        local_col = np.full(len(owner), -1)
        local_col[options] = np.arange(len(options))
        piece_rows, inverse = np.unique(rows[e], return_inverse=True)
        a = csr_matrix(
            (data[e], (inverse, local_col[cols[e]])), shape=(len(piece_rows), len(options))
        )
        constraints = [LinearConstraint(a, -np.inf, n_gpus)]
        reqs, req_of = np.unique(owner[options], return_inverse=True)
        if steps:
            once = csr_matrix(
                (np.ones(len(options)), (req_of, np.arange(len(options)))),
                shape=(len(reqs), len(options)),
            )
            constraints.append(LinearConstraint(once, -np.inf, 1))
        w = weights[options]
        with _quiet_stdout():
            result = milp(
                -w,
                integrality=np.ones(len(options)),
                bounds=Bounds(0, 1),
                constraints=constraints,
                options={"time_limit": max(1.0, deadline - time.monotonic())},
            )
        if result.x is None:  # out of time before any solution: the trivial bounds
            optimal, worst = False, result.message
            bound += float(request_weight[reqs].sum())
            continue
        found = float(w @ np.round(result.x))
        dual = getattr(result, "mip_dual_bound", None)
        incumbent += found
        bound += found if dual is None or not np.isfinite(dual) else max(found, -float(dual))
        if result.status != 0:
            optimal, worst = False, result.message
    return {
        "bound": bound,
        "incumbent": incumbent,
        "gap": bound / incumbent - 1 if incumbent else 0.0,
        "status": "optimal" if optimal else worst,
        "optimal": optimal,
        "variables": len(owner),
        "binding_rows": n_rows,
        "pieces": pieces,
        "seconds": time.monotonic() - began,
    }


def run(
    n_gpus=8,
    weeks=15,
    seed=1,
    load=1.4,
    *,
    retry_minutes=5.0,
    sample_minutes=1.0,
    opt_step_minutes=5.0,
    milp_seconds=120.0,
    policy=DEFAULT_POLICY,
):
    trace = semester(weeks, seed, load)
    began = time.monotonic()
    window_h = QUEUE_TIMEOUT_S / 3600
    at_arrival = offline_optimum(trace, n_gpus, 0.0, time_limit=milp_seconds)
    optimum = offline_optimum(
        trace, n_gpus, window_h, opt_step_minutes / 60, time_limit=milp_seconds
    )
    # the earlier benchmark, unchanged: no idle tails, no queue, a refused request is lost
    ours = simulate(trace, n_gpus, "no-queue", idle_tails=False, retry_s=0)["served_gpu_hours"]
    first_fit = simulate(
        trace, n_gpus, "no-queue", idle_tails=False, retry_s=0, allocator_class=FirstFit
    )["served_gpu_hours"]
    modes = {}
    for mode in MODES:
        figures = simulate(
            trace,
            n_gpus,
            mode,
            retry_s=retry_minutes * 60,
            sample_s=sample_minutes * 60,
            policy=policy,
        )
        figures["ratio"] = figures["served_gpu_hours"] / optimum["bound"]
        figures["ratio_at_arrival"] = figures["served_gpu_hours"] / at_arrival["bound"]
        modes[mode] = figures
    # what an instant reclaim could reach: every server gives its GPUs back the moment its work is
    # done (no tails)
    no_tails = {
        mode: simulate(trace, n_gpus, mode, idle_tails=False, retry_s=retry_minutes * 60)[
            "served_gpu_hours"
        ]
        / optimum["bound"]
        for mode in MODES[:2]
    }
    return {
        "load": load,
        "weeks": weeks,
        "gpus": n_gpus,
        "seed": seed,
        "requests": len(trace),
        "requested_gpu_hours": sum(gpu_hours(r) for r in trace),
        "idle_tail_gpu_hours": sum(r.idle * gpu_weight(r) for r in trace),
        "optimum_upper_bound": optimum["bound"],
        "optimum": optimum,
        "optimum_at_arrival": at_arrival["bound"],
        "at_arrival": at_arrival,
        "modes": modes,
        "ratio_queue_reclaim": modes["queue+reclaim"]["ratio"],
        "ratio_without_idle_tails": no_tails,
        # the earlier figures (allocator alone): vs the at-arrival optimum on the same active parts
        "ours": ours,
        "first_fit": first_fit,
        "ratio_ours": ours / at_arrival["bound"],
        "ratio_first_fit": first_fit / at_arrival["bound"],
        "solver": optimum["status"],
        "seconds": time.monotonic() - began,
    }


def _hours(value, shown=True):
    return f"{value:.0f}" if shown else "-"


def _solved(optimum):
    how = "optimal" if optimum["optimal"] else f"time limit, gap {100 * optimum['gap']:.1f} %"
    return f"{how}, {optimum['seconds']:.0f} s"


def _minutes(value):
    return "-" if value is None else f"{value:.0f}"


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--weeks", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--loads",
        type=float,
        nargs="+",
        default=[0.6, 1.0, 1.4],
        help="demand relative to a busy lab (1.4: the GPUs are oversubscribed in peak hours)",
    )
    parser.add_argument(
        "--retry-minutes",
        type=float,
        default=5.0,
        help="no-queue: a refused student tries again this often for 30 minutes (0: lost at once)",
    )
    parser.add_argument(
        "--sample-minutes", type=float, default=1.0, help="queue+reclaim: GPU sampling step"
    )
    parser.add_argument(
        "--opt-step-minutes", type=float, default=5.0, help="optimum: start-time grid in the window"
    )
    parser.add_argument(
        "--milp-seconds", type=float, default=120.0, help="time limit of each optimum, per load"
    )
    parser.add_argument(
        "--idle-minutes", type=float, default=60.0, help="gpu_idle_minutes (default: the product's)"
    )
    parser.add_argument(
        "--warn-minutes", type=float, default=10.0, help="gpu_idle_warn_minutes (the product's)"
    )
    parser.add_argument(
        "--reclaim",
        choices=("when_queued", "always", "never"),
        default="when_queued",
        help="gpu_idle_reclaim (the product's default: when_queued)",
    )
    args = parser.parse_args(argv)
    policy = IdlePolicy(args.idle_minutes, args.warn_minutes, args.reclaim)
    began = time.monotonic()
    results = []
    print(
        f"\nSemester trace, {args.weeks} weeks, {args.gpus} GPUs, sessions with idle tails: served "
        f"active GPU-hours "
        f"as % of the optimum (upper bound, starts within 30 min of arrival); goal: queue+reclaim "
        f">= 98 %\n"
        f"reclaim: {policy}, sampled every {args.sample_minutes:g} min; no-queue: "
        + (
            f"retry every {args.retry_minutes:g} min for 30 min"
            if args.retry_minutes
            else "lost at once"
        )
    )
    header = (
        f"{'load':>5} {'mode':<14}{'served h':>9}{'% opt':>7}{'% arr':>7}{'lost %':>8}{'waited':>8}"
        f"{'wait p50':>9}{'p95 min':>8}{'reclaims':>9}{'free h':>8}{'idle h':>8}"
    )
    print(header)
    for load in args.loads:
        r = run(
            args.gpus,
            args.weeks,
            args.seed,
            load,
            retry_minutes=args.retry_minutes,
            sample_minutes=args.sample_minutes,
            opt_step_minutes=args.opt_step_minutes,
            milp_seconds=args.milp_seconds,
            policy=policy,
        )
        results.append(r)
        for mode, m in r["modes"].items():
            queued = mode != "no-queue"
            print(
                f"{load:5.1f} {mode:<14}{m['served_gpu_hours']:9.0f}{100 * m['ratio']:7.1f}"
                f"{100 * m['ratio_at_arrival']:7.1f}{100 * m['lost_share']:8.1f}{m['waited']:8d}"
                f"{_minutes(m['wait_median_min']):>9}{_minutes(m['wait_p95_min']):>8}"
                f"{(str(m['reclaims']) if mode == 'queue+reclaim' else '-'):>9}"
                f"{_hours(m['free_while_waiting_gpu_hours'], queued):>8}"
                f"{_hours(m['idle_held_while_waiting_gpu_hours'], queued):>8}"
            )
        o, a = r["optimum"], r["at_arrival"]
        print(
            f"{'':6}{r['requests']} requests, {r['requested_gpu_hours']:.0f} active GPU-h asked "
            f"(+{r['idle_tail_gpu_hours']:.0f} idle-tail GPU-h); optimum <= {o['bound']:.0f} h "
            f"({_solved(o)}), "
            f"at-arrival <= {a['bound']:.0f} h; allocator alone (no tails, no queue) "
            f"{100 * r['ratio_ours']:.1f} % "
            f"of at-arrival (first-fit {100 * r['ratio_first_fit']:.1f} %)"
        )
        t = r["ratio_without_idle_tails"]
        print(
            f"{'':6}with no idle tails at all (every server stopped the moment its work ended; "
            f"what an instant "
            f"reclaim could reach): no-queue {100 * t['no-queue']:.1f} %, queue "
            f"{100 * t['queue']:.1f} % "
            "of the optimum"
        )
    print(
        "% opt: of the optimum that may start a request up to 30 min late (the goal's reference); "
        "% arr: of the "
        "optimum that starts at arrival only.\nwaited: requests served after a wait (queue, or "
        "retries without "
        "one); wait p50/p95: their wait in minutes.\nfree h / idle h: GPU-hours while someone "
        "queued with the GPU "
        "held by nobody (head-of-line blocking) / held only by idle servers."
    )
    print(f"({time.monotonic() - began:.0f} s)")
    return results


if __name__ == "__main__":
    main()
