"""GPU queue hand-off latency: a GPU is released -> the first start in line holds it and goes on to create its
container (target <= 0.5 s).

Runs the hub's own wait room (queue + dispatcher, real allocator, real asyncio) in-process with N starts waiting on
8 busy GPUs, releases the GPUs one at a time, and times each release until the waiter that gets it resumes. What
the spawner does next is the container create itself, so this is the latency the queue adds. The dispatcher polls
(see waitroom.py), so the figure is bounded by its poll interval plus one pass over the queue.

    .venv/bin/python benchmarks/queue_handoff.py [--waiters 30] [--poll 0.2]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from jupyter_gpuspawn.allocation import GPUAllocator, GPURequest  # noqa: E402
from jupyter_gpuspawn.gpus import GPU  # noqa: E402
from jupyter_gpuspawn.waitroom import WaitRoom  # noqa: E402

GPUS = tuple(GPU(f"GPU-{i}", i, "NVIDIA A100 80GB", 80 * 1024**3) for i in range(8))


async def measure(waiters: int, poll: float) -> list:
    allocator = GPUAllocator()
    for i in range(len(GPUS)):
        allocator.allocate(GPURequest(f"holder{i}", count=1), GPUS)
    room = WaitRoom(allocator, poll=poll)

    async def inventory():
        return GPUS

    resumed = {}
    rng = random.Random(11)

    async def start(i):
        await room.wait(GPURequest(f"student{i}", count=1), holds_other=False, timeout=600, gpus=inventory,
                        on_place=lambda *place: None)
        resumed[i] = time.perf_counter()

    tasks = [asyncio.ensure_future(start(i)) for i in range(waiters)]
    await asyncio.sleep(0.5)
    latencies = []
    holders = [f"holder{i}" for i in range(len(GPUS))] + [f"student{i}" for i in range(waiters)]
    for n in range(waiters):
        released = time.perf_counter()
        allocator.release(holders[n])
        while n not in resumed:
            await asyncio.sleep(0.001)
        latencies.append(resumed[n] - released)
        await asyncio.sleep(rng.uniform(0, poll))  # the next release lands anywhere in the dispatcher's poll cycle
    await asyncio.gather(*tasks)
    return latencies


def run(waiters=30, poll=0.2) -> dict:
    latencies = asyncio.run(measure(waiters, poll))
    ordered = sorted(latencies)
    return {"waiters": waiters, "poll_s": poll, "median_s": statistics.median(latencies),
            "p95_s": ordered[int(0.95 * (len(ordered) - 1))], "max_s": ordered[-1]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--waiters", type=int, default=30)
    parser.add_argument("--poll", type=float, default=0.2)
    args = parser.parse_args(argv)
    r = run(args.waiters, args.poll)
    print(f"\nQueue hand-off, {r['waiters']} waiters on 8 GPUs (dispatcher poll {r['poll_s']} s): "
          f"median {r['median_s'] * 1000:.0f} ms, p95 {r['p95_s'] * 1000:.0f} ms, max {r['max_s'] * 1000:.0f} ms "
          "(target <= 500 ms)")
    return r


if __name__ == "__main__":
    main()
