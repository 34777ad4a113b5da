"""Reconcile time: rebuild GPU allocations from 200 labelled running containers (target <= 2 s).

Starts 200 small labelled containers (sleep, from the base image), then times one reconcile round,
as a restarted hub does once and a running hub every reconcile_interval: list the labelled
containers through the Docker API, remove any left "created", and rebuild the allocator from the
labels.

    .venv/bin/python benchmarks/reconcile.py [--containers 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jupyter_gpuspawn.allocation import GPUAllocator
from jupyter_gpuspawn.reconcile import Reconciler
from jupyter_gpuspawn.spec import GPUAssignment

BASE = os.environ.get("GPUSPAWN_BASE_IMAGE", "local/base:bookworm")
MARK = "gpuspawn-bench=reconcile"


def start_containers(n):
    def one(i):
        labels = GPUAssignment(
            f"bench-user-{i:03d}",
            "",
            (f"GPU-bench-{i % 64:04d}",) if i % 4 else (),
            "shared" if i % 3 == 0 else "exclusive",
            4,
        ).labels()
        args = ["docker", "run", "-d", "--network", "none", "--label", MARK]
        for key, value in labels.items():
            args += ["--label", f"{key}={value}"]
        subprocess.run(args + [BASE, "sleep", "infinity"], check=True, capture_output=True)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(n)))


def remove_containers():
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={MARK}"], capture_output=True, text=True
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def run(n=200, repeat=5):
    import docker

    remove_containers()
    start_containers(n)
    try:
        client = docker.APIClient(version="auto")

        # the spawner's executor call, inline: one round is timed end to end
        async def call(func, *args):
            return func(client, *args)

        samples, found = [], 0
        log = logging.getLogger("bench")
        # the synthetic labels over-book on purpose: no log per round
        log.setLevel(logging.CRITICAL)
        for _ in range(repeat):
            allocator = GPUAllocator()
            t0 = time.perf_counter()
            asyncio.run(Reconciler(allocator).run_once(call, log))
            samples.append(time.perf_counter() - t0)
            found = sum(1 for user, _ in allocator.assignments() if user.startswith("bench-user-"))
        return {
            "containers": n,
            "found": found,
            "median_s": statistics.median(samples),
            "max_s": max(samples),
        }
    finally:
        remove_containers()


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--containers", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    r = run(args.containers, args.repeat)
    print(
        f"\nReconcile round over {r['containers']} labelled running containers ({r['found']} "
        f"holding GPUs): "
        f"median {r['median_s'] * 1000:.0f} ms, max {r['max_s'] * 1000:.0f} ms (target <= 2 s)"
    )
    return r


if __name__ == "__main__":
    main()
