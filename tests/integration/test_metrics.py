"""Prometheus metrics on the hub's own /hub/metrics, scraped by a real Prometheus (Debian's) on
loopback and asked with PromQL: GPUs by state, holders, the queue, waits, refusals, after a burst of
real spawns."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import threading
import time

import pytest
import requests

from .conftest import labelled
from .hub import free_port, wait_until

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"

METRICS = """
c.GPUDockerSpawner.gpu_queue_timeout = 120
c.Spawner.start_timeout = 240
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.GPUDockerSpawner.max_gpus_per_user = 2
c.JupyterHub.services += [{{"name": "prometheus", "api_token": "{token}"}}]
c.JupyterHub.load_roles += [
    {{"name": "prometheus", "services": ["prometheus"], "scopes": ["read:metrics"]}}
]
"""


@pytest.fixture
def prometheus(tmp_path):
    """Start Prometheus on loopback scraping one target every second; yields a PromQL query
    function."""
    procs = []

    def start(target: str, token: str):
        port = free_port()
        config = tmp_path / "prometheus.yml"
        config.write_text(f"""
global: {{scrape_interval: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: hub
    metrics_path: /hub/metrics
    authorization: {{type: token, credentials: "{token}"}}
    static_configs: [{{targets: ["{target}"]}}]
""")
        log = open(tmp_path / "prometheus.log", "wb")
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"

        def query(promql: str):
            r = requests.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10)
            r.raise_for_status()
            return r.json()["data"]["result"]

        deadline = time.monotonic() + 60
        while True:
            try:
                if query("up") and query("up")[0]["value"][1] == "1":
                    return query
            except requests.RequestException:
                pass
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (
                "Prometheus never scraped the hub:\n"
                + (tmp_path / "prometheus.log").read_text()[-3000:]
            )
            time.sleep(0.5)

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def value(query, promql) -> float:
    result = query(promql)
    assert len(result) == 1, (promql, result)
    return float(result[0]["value"][1])


def eventually(check, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_real_prometheus_sees_gpus_holders_queue_and_refusals(make_hub, prometheus):
    token = secrets.token_hex(16)
    hub = make_hub(n_gpus=4, extra_config=METRICS.format(token=token))
    users = ["ann", "bob", "cat", "dan", "eve"]
    hub.create_users(*users)
    # a burst: three 1-GPU servers and a CPU-only one at once
    threads = [
        threading.Thread(target=hub.spawn_ready, args=(u, {"gpus": g}))
        for u, g in (("ann", 1), ("bob", 1), ("cat", 1), ("dan", 0))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert hub.spawn("eve", {"gpus": 2}).status_code == 202  # 1 free: eve waits in line

    # the hub's own endpoint needs the read:metrics scope
    assert requests.get(f"{hub.url}/hub/metrics", timeout=10).status_code in (401, 403)
    query = prometheus(f"127.0.0.1:{hub.port}", token)
    held_by_labels = sum(
        len(c["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"].split(","))
        for u in ("ann", "bob", "cat")
        for c in labelled(u)
    )

    def after_burst():
        assert value(query, 'gpuspawn_gpus{state="held"}') == held_by_labels == 3
        assert value(query, 'gpuspawn_gpus{state="free"}') == 1
        assert value(query, 'gpuspawn_gpus{state="busy_outside"}') == 0
        assert value(query, 'gpuspawn_queue_length{pool="gpu"}') == 1
        ann_gpu = labelled("ann")[0]["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"]
        [info] = query('gpuspawn_gpu_holder_info{user="ann"}')
        # "" is no label
        assert info["metric"]["gpu_uuid"] == ann_gpu and "server" not in info["metric"]
        assert query('gpuspawn_gpu_holder_info{user="dan"}') == []  # CPU-only holds nothing

    eventually(after_burst)

    hub.stop_server("ann")  # 2 free: eve's turn
    hub.wait_ready("eve")
    # eve holds 2 = max_gpus_per_user: a second server of hers is refused, and counted
    r = hub.spawn("eve", {"gpus": 1}, server="more")
    assert r.status_code in (202, 409), r.text  # 202: the refusal comes a moment later
    wait_until(
        lambda: hub.server("eve", "more") is None, 30, "eve's second server is still pending"
    )
    assert "the limit is 2 per user" in r.text + hub.log_tail(300)

    def after_handoff():
        assert value(query, 'gpuspawn_gpus{state="held"}') == 4
        assert value(query, 'gpuspawn_queue_length{pool="gpu"}') == 0
        assert value(query, 'gpuspawn_queue_wait_seconds_count{outcome="granted"}') == 1
        assert value(query, 'gpuspawn_queue_wait_seconds_sum{outcome="granted"}') > 0
        assert value(query, 'gpuspawn_allocation_refusals_total{reason="user_limit"}') == 1
        assert len(query('gpuspawn_gpu_holder_info{user="eve"}')) == 2

    eventually(after_handoff)
