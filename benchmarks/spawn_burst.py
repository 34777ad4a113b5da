"""Burst spawn benchmark: N concurrent spawns through the hub REST API.

Compares, in one run and on the same image:
- GPUDockerSpawner (1 simulated GPU per server) on its default isolated bridge network,
- stock DockerSpawner, configured the way sites hand-write it for host networking,
- the raw limit: the container a spawner starts (`jupyterhub-singleuser`, the hub's environment, the
  same uid, the same isolated network), started N times straight with `docker run` against an idle
  hub, until every server answers. No spawner can start that server faster; the two ratios are
  measured against it.
- for reference, the image's floor without JupyterHub: plain `jupyter server` started the same way.
  The gap between the two raw figures is jupyterhub-singleuser's own start-up (it imports the hub's
  ORM), which every spawner pays.
Prints time-to-all-ready, median per-server latency and the ratios. Not a test: no pass/fail.

    .venv/bin/python benchmarks/spawn_burst.py --n 10 [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import requests

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tests.integration.hub import CONTAINER_PREFIX, TEST_IMAGE, TEST_NETWORK, Hub, simulated_gpus

# 30 servers starting at once on 2 cores take longer than the test harness's 60 s
SLOW_HOST_CONFIG = """
c.Spawner.http_timeout = 300
c.Spawner.start_timeout = 300
"""

STOCK_CONFIG = (
    SLOW_HOST_CONFIG
    + """
from dockerspawner import DockerSpawner
from jupyterhub.utils import random_port

class HostNetworkDockerSpawner(DockerSpawner):
    # the usual hand-written host-network setup (DockerSpawner docs): a free port, the hub
    # talks to 127.0.0.1
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
)


def remove_containers():
    ids = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"name=^{CONTAINER_PREFIX}-"],
        capture_output=True,
        text=True,
    ).stdout.split()
    ids += subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=gpuspawn-bench=raw"],
        capture_output=True,
        text=True,
    ).stdout.split()
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
        # the spawn page's way of waiting: the progress stream, not REST polls (each costs the hub a
        # token hash)
        events = hub.progress_events(user, timeout=300)
        if not events or not events[-1].get("ready"):
            raise RuntimeError(
                f"{user}: spawn did not become ready: {events[-1:] or 'no progress events'}"
            )
        return time.monotonic() - t0

    with ThreadPoolExecutor(n) as pool:
        latencies = list(pool.map(one, users))
    with ThreadPoolExecutor(n) as pool:
        list(pool.map(hub.stop_server, users))
    return latencies


def _accepts(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) == 0


SERVER_PORT = 8888  # inside each container, on its own address, as DockerSpawner does


def _docker_run_until_answering(args: list, path: str, timeout: float = 300) -> float:
    """docker run on the isolated network, then wait the way the spawner does (a cheap connect every
    0.1 s, HTTP once the port is open): a costlier wait here would take CPU from the servers and
    flatter the spawners. A container that exits, or a server that never answers, fails the run with
    its output instead of hanging it."""
    t0 = time.monotonic()
    container = subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--network",
            TEST_NETWORK,
            "--label",
            "gpuspawn-bench=raw",
            "--user",
            "200000:200000",
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # the address is known once the container runs: one inspect, as the spawner's get_ip_and_port
    # does
    host = subprocess.run(
        [
            "docker",
            "inspect",
            "-f",
            f'{{{{(index .NetworkSettings.Networks "{TEST_NETWORK}").IPAddress}}}}',
            container,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    next_exit_check = t0 + 20  # rarely: a docker CLI call costs the servers CPU too
    while True:
        if host and _accepts(host, SERVER_PORT):
            try:
                if requests.get(f"http://{host}:{SERVER_PORT}{path}", timeout=2).ok:
                    return time.monotonic() - t0
            except requests.ConnectionError:
                pass
        now = time.monotonic()
        if now >= next_exit_check or now - t0 > timeout:
            next_exit_check = now + 10
            running = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Running}}", container],
                capture_output=True,
                text=True,
            ).stdout.strip()
            if running != "true" or now - t0 > timeout:
                output = subprocess.run(
                    ["docker", "logs", "--tail", "20", container], capture_output=True, text=True
                )
                raise RuntimeError(
                    f"raw server {container[:12]} did not answer (running: {running}):\n"
                    f"{output.stdout}{output.stderr}"
                )
        time.sleep(0.1)


def burst_raw_singleuser(hub: Hub, n: int) -> list:
    """Start the spawner's container (jupyterhub-singleuser with the hub's environment) n times with
    docker run."""

    def one(i):
        user = f"raw{i}"
        prefix = f"/user/{user}/"
        env = {
            "JUPYTERHUB_API_URL": hub.hub_api,
            "JUPYTERHUB_API_TOKEN": "raw-benchmark-token",
            "JUPYTERHUB_USER": user,
            "JUPYTERHUB_CLIENT_ID": f"jupyterhub-user-{user}",
            "JUPYTERHUB_BASE_URL": "/",
            "JUPYTERHUB_SERVICE_PREFIX": prefix,
            "JUPYTERHUB_OAUTH_CALLBACK_URL": f"{prefix}oauth_callback",
            "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:{SERVER_PORT}{prefix}",
            "HOME": "/tmp",
        }
        env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        return _docker_run_until_answering(
            [*env_args, TEST_IMAGE, "jupyterhub-singleuser"], f"{prefix}api"
        )

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def burst_raw_server(n: int) -> list:
    """Start plain `jupyter server` from the same image n times: the floor without JupyterHub."""

    def one(i):
        return _docker_run_until_answering(
            [
                "-e",
                "HOME=/tmp",
                TEST_IMAGE,
                "jupyter",
                "server",
                "--ip=0.0.0.0",
                f"--port={SERVER_PORT}",
                "--IdentityProvider.token=bench",
            ],
            "/api",
        )

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def summarise(name, latencies):
    return {
        "name": name,
        "n": len(latencies),
        "all_ready_s": max(latencies),
        "median_s": statistics.median(latencies),
    }


KINDS = ("gpudocker", "stock", "raw", "raw_server")
LABELS = {
    "gpudocker": "GPUDockerSpawner (1 GPU each)",
    "stock": "stock DockerSpawner",
    "raw": "raw docker run (singleuser)",
    "raw_server": "raw docker run (jupyter server)",
}


def _one_burst(kind: str, n: int) -> list:
    remove_containers()
    if kind == "raw_server":
        try:
            return burst_raw_server(n)
        finally:
            remove_containers()
    with tempfile.TemporaryDirectory() as tmp:
        os.chmod(tmp, 0o755)
        if kind == "gpudocker":
            hub, options = Hub(tmp, simulated_gpus(n), extra_config=SLOW_HOST_CONFIG), {"gpus": 1}
        elif kind == "stock":
            hub, options = Hub(tmp, [], extra_config=STOCK_CONFIG, spawner_class="docker"), {}
        else:  # raw: an idle hub only answers the servers' start-up version check
            hub, options = Hub(tmp, []), None
        hub.start()
        try:
            if kind == "raw":
                return burst_raw_singleuser(hub, n)
            return burst_through_hub(hub, n, options)
        finally:
            hub.stop()
            remove_containers()


def run(n: int, rounds: int) -> dict:
    """Rounds interleave the kinds, so a slow spell of the machine hits all of them; the best round
    counts."""
    results = {kind: [] for kind in KINDS}
    for _ in range(rounds):
        for kind in KINDS:
            results[kind].append(summarise(kind, _one_burst(kind, n)))
    best = {kind: min(rs, key=lambda r: r["all_ready_s"]) for kind, rs in results.items()}
    typical = {
        kind: statistics.median(r["all_ready_s"] for r in rs) for kind, rs in results.items()
    }
    return {
        "n": n,
        "rounds": rounds,
        "best": best,
        "median_of_rounds": typical,
        "all": results,
        "ratio_vs_stock": best["gpudocker"]["all_ready_s"] / best["stock"]["all_ready_s"],
        "ratio_vs_raw": best["gpudocker"]["all_ready_s"] / best["raw"]["all_ready_s"],
    }


def print_report(report):
    print(f"\nBurst of {report['n']} concurrent spawns (best of {report['rounds']} rounds)")
    print(f"{'':32}{'all ready (s)':>15}{'median (s)':>12}")
    for kind in KINDS:
        b = report["best"][kind]
        print(f"{LABELS[kind]:34}{b['all_ready_s']:13.2f}{b['median_s']:12.2f}")
    if report["rounds"] > 1:
        typical = report["median_of_rounds"]
        print(
            "median over rounds (all ready): "
            + ", ".join(f"{kind} {typical[kind]:.2f} s" for kind in KINDS)
        )
    print(
        f"ratio GPUDockerSpawner / stock DockerSpawner: {report['ratio_vs_stock']:.2f}  (target < "
        f"1)"
    )
    print(
        f"ratio GPUDockerSpawner / raw docker run:      {report['ratio_vs_raw']:.2f}  (target <= "
        f"1.15)"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    return publish(run(args.n, args.rounds), print_report, args.json)


def publish(report: dict, printer, json_path=None) -> dict:
    """Print a benchmark's report, and write it as JSON where asked."""
    printer(report)
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
