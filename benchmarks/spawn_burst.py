"""Burst spawn benchmark: N concurrent spawns through the hub REST API.

Compares, in one run and on the same image:
- GPUDockerSpawner (1 simulated GPU per server),
- stock DockerSpawner, configured the way sites hand-write it for host networking,
- the raw limit: the same image started N times straight with `docker run`, until every server answers.
Prints time-to-all-ready, median per-server latency and the two ratios. Not a test: no pass/fail.

    .venv/bin/python benchmarks/spawn_burst.py --n 10 [--rounds 2] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.integration.hub import CONTAINER_PREFIX, TEST_IMAGE, Hub, free_port, simulated_gpus  # noqa: E402

# 30 servers starting at once on 2 cores take longer than the test harness's 60 s
SLOW_HOST_CONFIG = """
c.Spawner.http_timeout = 300
c.Spawner.start_timeout = 300
"""

STOCK_CONFIG = SLOW_HOST_CONFIG + """
from dockerspawner import DockerSpawner
from jupyterhub.utils import random_port

class HostNetworkDockerSpawner(DockerSpawner):
    # the usual hand-written host-network setup (DockerSpawner docs): a free port, the hub talks to 127.0.0.1
    async def start(self):
        self.port = random_port()
        return await super().start()

    async def get_ip_and_port(self):
        return "127.0.0.1", self.port

c.JupyterHub.spawner_class = HostNetworkDockerSpawner
c.DockerSpawner.network_name = "host"
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.ip = "127.0.0.1"
c.DockerSpawner.extra_create_kwargs = {"user": "200000:200000"}
c.DockerSpawner.environment = {"HOME": "/tmp"}
"""


def remove_containers():
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", f"name=^{CONTAINER_PREFIX}-"],
                         capture_output=True, text=True).stdout.split()
    ids += subprocess.run(["docker", "ps", "-aq", "--filter", "label=gpuspawn-bench=raw"],
                          capture_output=True, text=True).stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)


def burst_through_hub(hub: Hub, n: int, options: dict) -> list:
    users = [f"bench{i}" for i in range(n)]
    hub.create_users(*users)

    def one(user):
        t0 = time.monotonic()
        r = hub.spawn(user, options)
        if r.status_code not in (201, 202):
            raise RuntimeError(f"{user}: {r.status_code} {r.text}")
        hub.wait_ready(user, timeout=300)
        return time.monotonic() - t0

    with ThreadPoolExecutor(n) as pool:
        latencies = list(pool.map(one, users))
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(hub.stop_server, users))
    return latencies


def burst_raw(n: int) -> list:
    """Start the image n times with docker run (host network, as a non-root uid) and wait for each to answer."""
    def one(i):
        port = free_port()
        t0 = time.monotonic()
        subprocess.run(
            ["docker", "run", "-d", "--rm", "--network", "host", "--label", "gpuspawn-bench=raw",
             "--user", "200000:200000", "-e", "HOME=/tmp", TEST_IMAGE,
             "jupyter", "server", "--ip=127.0.0.1", f"--port={port}", "--IdentityProvider.token=bench"],
            check=True, capture_output=True,
        )
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api", timeout=1).ok:
                    return time.monotonic() - t0
            except requests.ConnectionError:
                pass
            time.sleep(0.05)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def summarise(name, latencies):
    return {"name": name, "n": len(latencies), "all_ready_s": max(latencies),
            "median_s": statistics.median(latencies)}


def run(n: int, rounds: int) -> dict:
    results = {"gpudocker": [], "stock": [], "raw": []}
    for _ in range(rounds):
        for kind in ("gpudocker", "stock"):
            remove_containers()
            with tempfile.TemporaryDirectory() as tmp:
                os.chmod(tmp, 0o755)
                if kind == "gpudocker":
                    hub = Hub(tmp, simulated_gpus(n), extra_config=SLOW_HOST_CONFIG)
                    options = {"gpus": 1}
                else:
                    hub = Hub(tmp, [], extra_config=STOCK_CONFIG, spawner_class="docker")
                    options = {}
                hub.start()
                try:
                    results[kind].append(summarise(kind, burst_through_hub(hub, n, options)))
                finally:
                    hub.stop()
        remove_containers()
        results["raw"].append(summarise("raw", burst_raw(n)))
        remove_containers()
    best = {kind: min(rs, key=lambda r: r["all_ready_s"]) for kind, rs in results.items()}
    return {"n": n, "rounds": rounds, "best": best, "all": results,
            "ratio_vs_stock": best["gpudocker"]["all_ready_s"] / best["stock"]["all_ready_s"],
            "ratio_vs_raw": best["gpudocker"]["all_ready_s"] / best["raw"]["all_ready_s"]}


def print_report(report):
    print(f"\nBurst of {report['n']} concurrent spawns (best of {report['rounds']} rounds)")
    print(f"{'':28}{'all ready (s)':>15}{'median (s)':>12}")
    labels = {"gpudocker": "GPUDockerSpawner (1 GPU each)", "stock": "stock DockerSpawner",
              "raw": "raw docker run"}
    for kind in ("gpudocker", "stock", "raw"):
        b = report["best"][kind]
        print(f"{labels[kind]:30}{b['all_ready_s']:13.2f}{b['median_s']:12.2f}")
    print(f"ratio GPUDockerSpawner / stock DockerSpawner: {report['ratio_vs_stock']:.2f}  (target < 1)")
    print(f"ratio GPUDockerSpawner / raw docker run:      {report['ratio_vs_raw']:.2f}  (target <= 1.15)")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    report = run(args.n, args.rounds)
    print_report(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
