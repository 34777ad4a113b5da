"""Allocator quality on a synthetic semester: admitted GPU-hours vs the offline optimum and naive first-fit.

A semester of lab sessions on 8 GPUs: weekday peaks, exclusive requests for 1 or 2 GPUs and shared seats (2 per
GPU). Requests arrive online; one that cannot be placed is refused (the student comes back later: a new request).
The offline optimum sees the whole semester in advance: an integer program maximising admitted GPU-hours under
the capacity at every moment, with shared seats counted as 1/2 GPU each (a relaxation, so it is an upper bound
and the ratio is conservative). Target: >= 98 % of the optimum's admitted GPU-hours.

    .venv/bin/python benchmarks/allocator_trace.py [--gpus 8] [--weeks 15] [--seed 1]
"""
from __future__ import annotations

import argparse
import heapq
import math
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jupyter_gpuspawn.allocation import AllocationError, GPUAllocator, GPURequest  # noqa: E402
from jupyter_gpuspawn.gpus import GPU  # noqa: E402

SHARED_SEATS = 2


def semester(weeks, seed, load=1.4):
    """(arrival_h, duration_h, policy, gpus) sorted by arrival."""
    rng = random.Random(seed)
    requests = []
    for day in range(weeks * 7):
        weekday = day % 7 < 5
        for hour in range(24):
            busy = weekday and 9 <= hour < 18
            rate = load * (3.0 if busy else 0.4 if weekday else 0.2)
            for _ in range(rng.poisson(rate) if hasattr(rng, "poisson") else _poisson(rng, rate)):
                start = day * 24 + hour + rng.random()
                duration = min(12.0, rng.lognormvariate(math.log(2.0), 0.6))
                if rng.random() < 0.35:
                    requests.append((start, duration, "shared", 1))
                else:
                    requests.append((start, duration, "exclusive", 2 if rng.random() < 0.25 else 1))
    return sorted(requests)


def _poisson(rng, lam):
    threshold, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= threshold:
            return k
        k += 1


def gpu_hours(request):
    _, duration, policy, gpus = request
    return duration * (gpus if policy == "exclusive" else 1 / SHARED_SEATS)


class FirstFit(GPUAllocator):
    """Naive first-fit: the lowest-numbered GPUs that can take the request."""

    def candidates(self, gpus, request):
        return [gpu for gpu in gpus if self._can_take(gpu, request)]


def replay(allocator, trace, n_gpus):
    gpus = [GPU(f"GPU-{i}", i, "sim", 80 * 2**30) for i in range(n_gpus)]
    ends = []  # (end time, key)
    admitted = 0.0
    for i, request in enumerate(trace):
        start, duration, policy, count = request
        while ends and ends[0][0] <= start:
            _, key = heapq.heappop(ends)
            allocator.release(*key)
        try:
            allocator.allocate(GPURequest(f"u{i}", "", count, policy, SHARED_SEATS if policy == "shared" else 1),
                               gpus)
        except AllocationError:
            continue
        admitted += gpu_hours(request)
        heapq.heappush(ends, (start + duration, (f"u{i}", "")))
    return admitted


def offline_optimum(trace, n_gpus):
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp
    from scipy.sparse import lil_matrix

    weights = np.array([gpu_hours(r) for r in trace])
    demand = np.array([r[3] if r[2] == "exclusive" else 1 / SHARED_SEATS for r in trace])
    # capacity must hold at every arrival instant (load only rises at arrivals)
    rows = lil_matrix((len(trace), len(trace)))
    for j, (t, *_rest) in enumerate(trace):
        for i, (start, duration, *_r) in enumerate(trace):
            if start > t:
                break
            if start + duration > t:
                rows[j, i] = demand[i]
    result = milp(-weights, integrality=np.ones(len(trace)), bounds=Bounds(0, 1),
                  constraints=LinearConstraint(rows.tocsr(), -np.inf, n_gpus), options={"time_limit": 120})
    if result.x is None:
        raise RuntimeError(f"the offline optimum could not be computed: {result.message}")
    return float(weights @ np.round(result.x)), result.message


def run(n_gpus=8, weeks=15, seed=1, load=1.4):
    trace = semester(weeks, seed, load)
    total = sum(gpu_hours(r) for r in trace)
    ours = replay(GPUAllocator(foreign_memory_threshold=2**62), trace, n_gpus)
    first_fit = replay(FirstFit(foreign_memory_threshold=2**62), trace, n_gpus)
    optimum, status = offline_optimum(trace, n_gpus)
    return {"requests": len(trace), "requested_gpu_hours": total, "ours": ours, "first_fit": first_fit,
            "optimum_upper_bound": optimum, "ratio_ours": ours / optimum, "ratio_first_fit": first_fit / optimum,
            "solver": status, "load": load}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--weeks", type=int, default=15)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--loads", type=float, nargs="+", default=[0.6, 1.0, 1.4],
                        help="demand relative to a busy lab (1.4: the GPUs are oversubscribed in peak hours)")
    args = parser.parse_args(argv)
    results = []
    print(f"\nSemester trace, {args.weeks} weeks, {args.gpus} GPUs: admitted GPU-hours (target: >= 98 % of optimum)")
    print(f"{'load':>5}{'requests':>10}{'asked h':>9}{'optimum h':>11}{'ours h':>8}{'ours %':>8}{'first-fit %':>13}")
    for load in args.loads:
        r = run(args.gpus, args.weeks, args.seed, load)
        results.append(r)
        print(f"{load:5.1f}{r['requests']:10d}{r['requested_gpu_hours']:9.0f}{r['optimum_upper_bound']:11.0f}"
              f"{r['ours']:8.0f}{100 * r['ratio_ours']:8.1f}{100 * r['ratio_first_fit']:13.1f}")
    return results


if __name__ == "__main__":
    main()
