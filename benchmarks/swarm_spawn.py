"""Swarm vs one host: spawn latency and a burst through the hub REST API, same image, same machine,
same run.

- one host: GPUDockerSpawner with simulated GPUs on the host's dockerd;
- Swarm: GPUSwarmSpawner on the 3-node test bed (scripts/swarm-testbed: three dockerds in network
  namespaces of this machine, 5 GPUs advertised as generic resources, the image on every node).

Single spawn: one server with 1 GPU, started and stopped ``--singles`` times in a row; the median
counts (target: Swarm <= 1.3x one host). Burst: ``--n`` concurrent CPU-only servers (the test bed
has 5 GPUs; the spawn path is the same); time until all are ready, best of ``--rounds``. The nodes
share this machine's 2 cores with the hub, so the Swarm figures include three dockerds' overhead
that separate machines would not pay. Not a test: no pass/fail.

    .venv/bin/python benchmarks/swarm_spawn.py [--n 10] [--singles 5] [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.spawn_burst import SLOW_HOST_CONFIG, burst_through_hub, publish, remove_containers
from tests.integration.hub import Hub, simulated_gpus

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTBED = os.path.join(ROOT, "scripts", "swarm-testbed")
MANAGER = "unix:///run/gsnode1/docker.sock"


def testbed_up() -> dict:
    """The test bed with the image on every node: {hostname: socket}."""
    out = (
        subprocess.run(
            [TESTBED, "up"],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "SWARM_SKIP_IMAGE_ON": ""},
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    nodes = dict(part.split("=", 1) for part in out.split()[1:])["nodes"].split(",")
    return {
        entry.split(":")[0]: f"unix:///run/{entry.split(':')[0]}/docker.sock" for entry in nodes
    }


def remove_services():
    ids = subprocess.run(
        [
            "docker",
            "-H",
            MANAGER,
            "service",
            "ls",
            "-q",
            "--filter",
            "label=org.jupyter.gpuspawn.user",
        ],
        capture_output=True,
        text=True,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "-H", MANAGER, "service", "rm", *ids], capture_output=True)


def swarm_config(nodes: dict) -> str:
    return (
        SLOW_HOST_CONFIG
        + f"""
c.JupyterHub.hub_bind_url = "http://10.231.0.1:" + c.JupyterHub.hub_bind_url.rsplit(":", 1)[1]
c.DockerSpawner.client_kwargs = {{"base_url": {MANAGER!r}}}
c.GPUSwarmSpawner.node_docker_hosts = {nodes!r}
c.GPUSwarmSpawner.gpu_inventory = "swarm"
c.GPUSwarmSpawner.network_name = ""
"""
    )


def make_hub(kind: str, tmp: str, nodes: dict) -> Hub:
    os.chmod(tmp, 0o755)
    if kind == "swarm":
        return Hub(tmp, [], extra_config=swarm_config(nodes), spawner_class="gpuswarm")
    return Hub(tmp, simulated_gpus(5), extra_config=SLOW_HOST_CONFIG)


def singles(kind: str, count: int, nodes: dict) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        hub = make_hub(kind, tmp, nodes).start()
        try:
            hub.create_users("single")
            times = []
            for _ in range(count):
                started = time.monotonic()
                r = hub.spawn("single", {"gpus": 1})
                if r.status_code not in (201, 202):
                    raise RuntimeError(f"{kind}: {r.status_code} {r.text}")
                hub.wait_ready("single")
                times.append(time.monotonic() - started)
                hub.stop_server("single")
            return times
        finally:
            hub.stop()
            remove_containers()
            remove_services()


def burst(kind: str, n: int, nodes: dict) -> list:
    with tempfile.TemporaryDirectory() as tmp:
        hub = make_hub(kind, tmp, nodes).start()
        try:
            return burst_through_hub(hub, n, {"gpus": 0})
        finally:
            hub.stop()
            remove_containers()
            remove_services()


def run(n: int, count: int, rounds: int) -> dict:
    nodes = testbed_up()
    remove_services()
    result = {"n": n, "singles": count, "rounds": rounds, "single": {}, "burst": {}}
    for kind in ("host", "swarm"):
        result["single"][kind] = singles(kind, count, nodes)
    bursts = {"host": [], "swarm": []}
    for _ in range(rounds):  # interleaved: a slow spell of the machine hits both
        for kind in ("host", "swarm"):
            bursts[kind].append(max(burst(kind, n, nodes)))
    result["burst"] = bursts
    median = {k: statistics.median(v) for k, v in result["single"].items()}
    best = {k: min(v) for k, v in bursts.items()}
    result.update(
        single_median=median,
        burst_best=best,
        single_ratio=median["swarm"] / median["host"],
        burst_ratio=best["swarm"] / best["host"],
    )
    return result


def print_report(r: dict):
    print(
        f"\nSingle spawn (1 GPU), median of {r['singles']}: one host "
        f"{r['single_median']['host']:.2f} s, "
        f"Swarm {r['single_median']['swarm']:.2f} s -> ratio {r['single_ratio']:.2f} (target <= "
        f"1.3)"
    )
    print(
        f"Burst of {r['n']} CPU-only spawns, all ready, best of {r['rounds']}: one host "
        f"{r['burst_best']['host']:.2f} s, Swarm {r['burst_best']['swarm']:.2f} s -> ratio "
        f"{r['burst_ratio']:.2f}"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--singles", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    return publish(run(args.n, args.singles, args.rounds), print_report, args.json)


if __name__ == "__main__":
    main()
