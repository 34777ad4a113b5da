"""Chaos: a class of 30 logs in at 9:00 while the hub is killed, Docker restarts and an admin
deletes a container.

Bounded in time, loopback only. Afterwards: no GPU held beyond its policy, running containers and
hub records agree, failed spawns left nothing behind, and every user can spawn again.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import requests
import yaml

from .conftest import gpuspawn_containers, inspect
from .hub import TEST_IMAGE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COURSES = [
    {
        "id": "excl",
        "title": "Exclusive GPUs",
        "gpus": {"default": 1, "max": 2, "policy": "exclusive"},
    },
    {
        "id": "shared",
        "title": "Shared GPUs",
        "gpus": {"default": 1, "max": 1, "policy": "shared", "max_users_per_gpu": 2},
    },
    {"id": "cpu", "title": "CPU only", "gpus": {"max": 0}},
]
REQUESTS = [("excl", 1), ("excl", 2), ("shared", 1), ("cpu", 0), ("excl", 0), ("shared", 0)]


def stop_dockerd():
    live_restore = subprocess.run(
        ["docker", "info", "--format", "{{.LiveRestoreEnabled}}"], capture_output=True, text=True
    ).stdout.strip()
    assert live_restore == "true", (
        "dockerd runs without --live-restore: restarting it would stop every container"
    )
    subprocess.run(["pkill", "-TERM", "-x", "dockerd"], check=False)
    deadline = time.monotonic() + 60
    # the socket closes before the daemon has exited; a new one started then finds the old pid file
    while subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "dockerd did not stop"
        time.sleep(0.5)


def start_dockerd():
    r = subprocess.run(
        ["bash", os.path.join(ROOT, "scripts", "setup"), "docker"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


def restart_dockerd():
    stop_dockerd()
    start_dockerd()


def running(cid):
    """Inspect data if the container still exists and runs; containers come and go during the
    chaos."""
    try:
        data = inspect(cid)
    except subprocess.CalledProcessError:
        return None
    return data if data["State"]["Running"] else None


def running_assignments():
    found = []
    for cid in gpuspawn_containers():
        data = running(cid)
        if data:
            labels = data["Config"]["Labels"]
            found.append(
                (
                    labels["org.jupyter.gpuspawn.user"],
                    labels["org.jupyter.gpuspawn.server"],
                    [u for u in labels["org.jupyter.gpuspawn.gpus"].split(",") if u],
                    labels["org.jupyter.gpuspawn.gpu-policy"],
                    int(labels["org.jupyter.gpuspawn.max-users-per-gpu"]),
                )
            )
    return found


def assert_no_overbooking(assignments):
    holders = defaultdict(list)
    for user, _server, gpus, policy, max_users in assignments:
        for uuid in gpus:
            holders[uuid].append((user, policy, max_users))
    for uuid, held in holders.items():
        policies = {p for _, p, _ in held}
        if "exclusive" in policies:
            assert len(held) == 1, f"{uuid} held exclusively by several: {held}"
        else:
            assert len(held) <= min(m for _, _, m in held), (
                f"{uuid} shared beyond its limit: {held}"
            )


def settle(hub, users, timeout=180):
    """Wait until no server is pending: each is ready or gone."""
    deadline = time.monotonic() + timeout
    pending = None
    while time.monotonic() < deadline:
        r = hub.session.get(f"{hub.api}/users", params={"state": "active"})
        if r.ok:
            pending = {
                (u["name"], n): s.get("pending")
                for u in r.json()
                for n, s in u.get("servers", {}).items()
                if s.get("pending")
            }
            if not pending:
                return
        time.sleep(1)
    raise AssertionError(f"servers still pending after the chaos: {pending}\n{hub.log_tail(80)}")


def test_chaos_burst_with_hub_kill_docker_restart_and_manual_delete(make_hub, tmp_path):
    courses_dir = tmp_path / "courses"
    courses_dir.mkdir()
    for course in COURSES:
        course["images"] = [{"key": "default", "image": TEST_IMAGE}]
        (courses_dir / f"{course['id']}.yaml").write_text(yaml.safe_dump(course))
    hub = make_hub(
        n_gpus=8, extra_config=f"c.GPUDockerSpawner.courses_dir = {str(courses_dir)!r}\n"
    )
    users = [f"s{i:02d}" for i in range(30)]
    hub.create_users(*users)
    rng = random.Random(9)
    wanted = {u: REQUESTS[i % len(REQUESTS)] for i, u in enumerate(users)}
    outcome = Counter()
    lock = threading.Lock()

    def spawn(user):
        course, gpus = wanted[user]
        time.sleep(rng.random() * 2)
        try:
            r = hub.spawn(user, {"course": course, "gpus": gpus})
            kind = (
                "accepted"
                if r.status_code in (201, 202)
                else "refused"
                if r.status_code < 500 and r.json().get("message")
                else "failed"
            )
        except requests.RequestException:
            kind = "failed"  # the hub was down
        with lock:
            outcome[kind] += 1

    chaos_errors = []
    survivors = []

    def chaos():
        try:
            run_chaos()
        except BaseException as e:  # re-raised in the test thread below
            chaos_errors.append(e)

    def ready_servers():
        users_now = hub.session.get(f"{hub.api}/users", params={"state": "ready"}, timeout=5).json()
        return {
            (u["name"], name)
            for u in users_now
            for name, srv in u.get("servers", {}).items()
            if srv.get("ready")
        }

    def owner(data):
        labels = data["Config"]["Labels"]
        return labels["org.jupyter.gpuspawn.user"], labels["org.jupyter.gpuspawn.server"]

    def ready_count():
        try:
            users_now = hub.session.get(
                f"{hub.api}/users", params={"state": "ready"}, timeout=5
            ).json()
            return sum(
                1 for u in users_now for srv in u.get("servers", {}).values() if srv.get("ready")
            )
        except (requests.RequestException, ValueError):
            return 0

    def run_chaos():
        time.sleep(1.5)
        for user in rng.sample(users, 3):
            try:
                hub.session.delete(f"{hub.api}/users/{user}/server", timeout=10)
            except requests.RequestException:
                pass
        # kill the hub mid-burst: some servers are up, others still starting
        deadline = time.monotonic() + 90
        while ready_count() < 4 and time.monotonic() < deadline:
            time.sleep(0.5)
        ready_before = ready_servers()
        assert ready_before, f"no server was ready 90 s into the burst\n{hub.log_tail(80)}"
        hub.kill9()
        # survivors are checked among servers the hub knew as ready: one still starting is stopped
        # by the restarted hub, as it should be
        alive = [
            c for c in gpuspawn_containers() if (data := running(c)) and owner(data) in ready_before
        ]
        if alive:
            deleted = rng.choice(alive)
            subprocess.run(["docker", "rm", "-f", deleted], capture_output=True)
            alive.remove(deleted)
        restart_dockerd()
        # dockerd runs with --live-restore: the servers outlive it, so the over-booking checks below
        # have holders to check against
        survivors.extend(c for c in alive if running(c))
        assert survivors, (
            f"no user container survived the dockerd restart (alive before: {len(alive)})"
        )
        hub.start()

    started = time.monotonic()
    chaos_thread = threading.Thread(target=chaos)
    chaos_thread.start()
    with ThreadPoolExecutor(30) as pool:
        list(pool.map(spawn, users))
    chaos_thread.join()
    with open(os.path.join(ROOT, "test-artifacts", "chaos-hub.log"), "w") as f:
        f.write(hub.log_tail(100000))
    if chaos_errors:
        raise chaos_errors[0]
    settle(hub, users)

    # after reconcile: GPUs within policy, containers and hub records agree
    assignments = running_assignments()
    assert_no_overbooking(assignments)
    hub_servers = {}
    for u in hub.session.get(f"{hub.api}/users").json():
        for name, s in u.get("servers", {}).items():
            hub_servers[(u["name"], name)] = s
    containers = {(user, server) for user, server, *_ in assignments}
    assert containers == {k for k, s in hub_servers.items() if s.get("ready")}, (
        containers,
        hub_servers,
    )
    ready = len(containers)
    assert any(running(c) for c in survivors), (
        "every server that outlived the dockerd restart was lost"
    )

    # every user can spawn again: nothing is left reserved
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda u: hub.stop_server(u) if (u, "") in hub_servers else None, users))
    assert [c for c in gpuspawn_containers() if running(c)] == []
    gpu_users, cpu_users = users[:8], users[8:]
    with ThreadPoolExecutor(12) as pool:
        responses = list(
            pool.map(
                lambda u: hub.spawn(
                    u, {"course": "excl", "gpus": 1} if u in gpu_users else {"course": "cpu"}
                ),
                users,
            )
        )
    assert all(r.status_code in (201, 202) for r in responses), [
        r.text for r in responses if r.status_code >= 300
    ]
    for user in users:
        hub.wait_ready(user, timeout=240)
    final = running_assignments()
    assert_no_overbooking(final)
    assert sorted(u for a in final for u in a[2]) == sorted(g["uuid"] for g in hub.gpus)

    tried = len(users)
    print(f"\nchaos summary ({time.monotonic() - started:.0f} s)")
    print(f"  containers that outlived the dockerd restart: {len(survivors)}")
    print(
        f"  spawns tried {tried} | accepted {outcome['accepted']} (ready after the chaos: {ready}) "
        f"| "
        f"refused with a clear message {outcome['refused']} | failed (hub down) {outcome['failed']}"
    )
    print(
        f"  then every user spawned again: {len(gpu_users)} with a GPU each (all 8 GPUs), "
        f"{len(cpu_users)} CPU-only"
    )
    with open(os.path.join(ROOT, "test-artifacts", "chaos-summary.json"), "w") as f:
        json.dump(
            {
                "tried": tried,
                **outcome,
                "ready_after_chaos": ready,
                "survived_dockerd_restart": len(survivors),
            },
            f,
        )


def test_a_hub_started_while_docker_is_down_keeps_the_running_servers(make_hub):
    # 3 a.m.: an upgrade restarts dockerd and the hub together, the hub comes up first (its config
    # names the hub's address itself, not asking Docker). The containers run on (live-restore);
    # "Docker does not answer" must not read as "stopped", or JupyterHub forgets the servers and
    # their containers are removed once Docker is back.
    hub = make_hub(
        n_gpus=2,
        extra_config="c.GPUDockerSpawner.reconcile_interval = 2\n",
        fixed_hub_address=True,
    )
    hub.create_users("night", "late")
    hub.spawn_ready("night", {"gpus": 1})
    [before] = [c for c in gpuspawn_containers() if running(c)]
    gpus = inspect(before)["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"]
    hub.kill9()
    stop_dockerd()
    try:
        hub.start(timeout=120)
        assert hub.wait_ready("night")["ready"]
        # a start meanwhile is told what is wrong, not a Python exception
        r = hub.spawn("late", {"gpus": 1})
        assert r.status_code in (500, 503), r.text
        message = r.json()["message"]
        assert "container engine does not answer right now" in message, message
        assert "Connection aborted" not in message and "Error" not in message
    finally:
        start_dockerd()
    time.sleep(8)  # a few reconcile rounds with Docker back
    assert running(before), f"the server's container was removed:\n{hub.log_tail()}"
    assert hub.server("night")["ready"]
    # the GPU is still this server's: the other one goes to the next student, not the same twice
    hub.create_users("early")
    hub.spawn_ready("early", {"gpus": 1})
    [other] = [c for c in gpuspawn_containers() if running(c) and c != before]
    assert inspect(other)["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"] != gpus
    hub.stop_server("night")
    assert not running(before)


def test_a_hub_started_before_docker_waits_for_it(make_hub):
    # the config asks Docker for the hub's address: without Docker the hub used to exit at once,
    # and systemd stops restarting a unit that fails five times in ten seconds
    hub = make_hub(n_gpus=1)
    hub.create_users("dawn")
    hub.spawn_ready("dawn", {"gpus": 1})
    hub.kill9()
    stop_dockerd()
    started = threading.Thread(target=hub.start, kwargs={"timeout": 120})
    try:
        started.start()
        time.sleep(6)
        assert hub.proc.poll() is None, f"the hub exited without Docker:\n{hub.log_tail()}"
        with open(os.path.join(hub.dir, "hub.log"), errors="replace") as f:
            assert "Docker does not answer" in f.read()
    finally:
        start_dockerd()
    started.join(130)
    assert hub.wait_ready("dawn")["ready"]
