"""Status endpoint cost: GET gpuspawn/status vs jupyter-resource-usage's /api/metrics/v1, in one
running server.

Reports p50/p95 latency and the server's CPU time per call (from /proc/<pid>/stat). Our endpoint
runs with its cache off (every call collects: a single tab polling every 2 s always misses a 1 s
cache), so the comparison is call for call. Targets: p50 <= 5 ms and CPU per call no more than
resource-usage's.

    .venv/bin/python benchmarks/status_endpoint.py [--calls 300]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time

import requests

CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def measure(session, url, pid, calls):
    session.get(url).raise_for_status()  # warm
    latencies = []
    cpu0 = cpu_seconds(pid)
    for _ in range(calls):
        t0 = time.perf_counter()
        r = session.get(url)
        latencies.append(time.perf_counter() - t0)
        r.raise_for_status()
    cpu = cpu_seconds(pid) - cpu0
    latencies.sort()
    return {
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p95_ms": latencies[int(len(latencies) * 0.95)] * 1000,
        "cpu_ms_per_call": cpu / calls * 1000,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args(argv)
    port, token = free_port(), secrets.token_hex(16)
    gpu = "GPU-5eed0000-0000-4000-8000-000000000000"
    env = dict(
        os.environ,
        JUPYTER_GPUSPAWN_GPUS=gpu,
        MEM_LIMIT=str(4 * 1024**3),
        JUPYTER_GPUSPAWN_SIMULATED_GPUS=json.dumps(
            [
                {
                    "uuid": gpu,
                    "name": "NVIDIA A100 80GB PCIe",
                    "memory_total": "80GiB",
                    "utilization": 30,
                }
            ]
        ),
    )
    with tempfile.TemporaryDirectory() as tmp:
        env.update(JUPYTER_CONFIG_DIR=tmp, JUPYTER_RUNTIME_DIR=tmp, HOME=tmp)
        with open(os.path.join(tmp, "jupyter_server_config.json"), "w") as f:
            json.dump(
                {
                    "ServerApp": {
                        "jpserver_extensions": {
                            "jupyter_gpuspawn": True,
                            "jupyter_resource_usage": True,
                        }
                    },
                    "StatusCollector": {"cache_seconds": 0},
                },
                f,
            )
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyter_server",
                f"--port={port}",
                "--ip=127.0.0.1",
                "--no-browser",
                "--allow-root",
                f"--IdentityProvider.token={token}",
                f"--ServerApp.root_dir={tmp}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            session = requests.Session()
            session.headers["Authorization"] = f"token {token}"
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    if session.get(f"{base}/api/status", timeout=1).ok:
                        break
                except requests.ConnectionError:
                    time.sleep(0.2)
            ours = measure(session, f"{base}/gpuspawn/status", server.pid, args.calls)
            theirs = measure(session, f"{base}/api/metrics/v1", server.pid, args.calls)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(10)
    print(
        f"\nStatus endpoint, {args.calls} sequential calls each, one jupyter_server (cache off for "
        f"ours)"
    )
    print(f"{'':38}{'p50 ms':>8}{'p95 ms':>8}{'CPU ms/call':>13}")
    for name, r in (
        ("jupyter-gpuspawn  gpuspawn/status", ours),
        ("jupyter-resource-usage  /api/metrics/v1", theirs),
    ):
        print(f"{name:38}{r['p50_ms']:8.2f}{r['p95_ms']:8.2f}{r['cpu_ms_per_call']:13.2f}")
    print(
        f"targets: p50 <= 5 ms ({'met' if ours['p50_ms'] <= 5 else 'NOT met'}); CPU per call <= "
        f"resource-usage's "
        f"({'met' if ours['cpu_ms_per_call'] <= theirs['cpu_ms_per_call'] else 'NOT met'})"
    )
    return {"ours": ours, "resource_usage": theirs}


if __name__ == "__main__":
    main()
