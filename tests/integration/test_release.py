"""A GPU comes back however a server stops, and never while its container may still run.

Each test runs a 1-GPU host with a second student waiting for that GPU. JupyterHub calls
``Spawner.stop()`` only for servers its poll finds running; a server that stopped by itself gets
``clear_state()`` alone, and a periodic reconcile catches what the hub has not noticed yet.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import requests

from .conftest import gpuspawn_containers, inspect, labelled
from .hub import wait_until
from .test_chaos import restart_dockerd
from .test_courses_hub import course, write_course
from .test_usage import of

ONLY_POLL = "c.Spawner.poll_interval = 1\nc.GPUDockerSpawner.reconcile_interval = 0\n"
ONLY_RECONCILE = "c.Spawner.poll_interval = 3600\nc.GPUDockerSpawner.reconcile_interval = 1\n"


def container_of(user, server=""):
    [container] = labelled(user, server)
    return container


def refused_as_in_use(hub, user):
    r = hub.spawn(user, {"gpus": 1})
    assert r.status_code == 409, f"{r.status_code} {r.text}\n{hub.log_tail()}"
    assert "The only GPU is in use" in r.json()["message"]


def spawn_when_free(hub, user, timeout=30):
    """The waiting student retries, as they would from the spawn page, until the GPU is theirs."""
    deadline = time.monotonic() + timeout
    while True:
        r = hub.spawn(user, {"gpus": 1})
        if r.status_code in (201, 202):
            return hub.wait_ready(user)
        assert r.status_code == 409, f"{r.status_code} {r.text}"
        assert time.monotonic() < deadline, f"the GPU never came back: {r.text}\n{hub.log_tail()}"
        time.sleep(0.5)


def wait_hub_forgets(hub, user, timeout=30):
    deadline = time.monotonic() + timeout
    while hub.server(user) is not None:
        assert time.monotonic() < deadline, (
            f"the hub never noticed {user}'s server stopped\n{hub.log_tail()}"
        )
        time.sleep(0.3)


def test_shut_down_from_jupyterlab_gives_the_gpu_back(make_hub):
    hub = make_hub(n_gpus=1, extra_config=ONLY_POLL)
    hub.create_users("ann", "ben")
    hub.spawn_ready("ann", {"gpus": 1})
    refused_as_in_use(hub, "ben")
    # File > Shut Down in JupyterLab: the server's own shutdown API
    r = hub.session.post(hub.user_url("ann") + "api/shutdown")
    assert r.status_code in (200, 202, 204), r.text
    wait_hub_forgets(hub, "ann")
    spawn_when_free(hub, "ben", timeout=10)
    assert container_of("ben")["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == [
        hub.gpus[0]["uuid"]
    ]


def test_docker_kill_gives_the_gpu_back_when_the_hub_notices(make_hub):
    hub = make_hub(n_gpus=1, extra_config=ONLY_POLL)
    hub.create_users("cat", "dan")
    hub.spawn_ready("cat", {"gpus": 1})
    subprocess.run(["docker", "kill", container_of("cat")["Id"]], check=True, capture_output=True)
    wait_hub_forgets(hub, "cat")
    spawn_when_free(hub, "dan", timeout=10)


def test_docker_rm_gives_the_gpu_back_before_the_hub_notices(make_hub):
    # the hub's poll is an hour away: the reconcile alone finds the container gone
    hub = make_hub(n_gpus=1, extra_config=ONLY_RECONCILE)
    hub.create_users("eli", "fay")
    hub.spawn_ready("eli", {"gpus": 1})
    refused_as_in_use(hub, "fay")
    subprocess.run(
        ["docker", "rm", "-f", container_of("eli")["Id"]], check=True, capture_output=True
    )
    spawn_when_free(hub, "fay", timeout=15)
    assert "freed" in hub.log_tail(200) and "its container no longer runs" in hub.log_tail(200)


def test_dockerd_restart_while_the_hub_runs_keeps_running_servers_and_books_nothing_twice(make_hub):
    hub = make_hub(
        n_gpus=1,
        extra_config="c.Spawner.poll_interval = 1\nc.GPUDockerSpawner.reconcile_interval = 1\n",
    )
    hub.create_users("gus", "hal", "ivy")
    hub.spawn_ready("gus", {"gpus": 1})
    hub.spawn_ready("ivy", {"gpus": 0})
    before = {user: container_of(user)["Id"] for user in ("gus", "ivy")}
    restart_dockerd()  # live-restore: the containers outlive the daemon
    time.sleep(3)  # several polls and reconciles run against the restarted daemon
    for user, cid in before.items():
        assert inspect(cid)["State"]["Running"], (
            f"{user}'s container did not survive the dockerd restart"
        )
        assert hub.wait_ready(user)
        r = hub.session.get(hub.user_url(user) + "api/status")
        assert r.status_code == 200, (user, r.status_code, r.text)
    refused_as_in_use(hub, "hal")  # gus still holds the only GPU: nobody is double-booked
    hub.stop_server("gus")
    spawn_when_free(hub, "hal", timeout=10)


SLOW_START = """
import asyncio, os
from jupyter_gpuspawn import GPUDockerSpawner

class HangsAfterCreate(GPUDockerSpawner):
    async def start_object(self):
        if self.user.name == "kim":
            open(os.path.join({workdir!r}, "kim-created"), "w").close()
            # the hub dies here: a container left "created", holding its devices
            await asyncio.sleep(3600)
        return await super().start_object()

c.JupyterHub.spawner_class = HangsAfterCreate
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
"""


def test_a_spawn_interrupted_by_a_hub_crash_leaves_no_container_behind(make_hub, tmp_path):
    hub = make_hub(n_gpus=1, extra_config=SLOW_START.format(workdir=str(tmp_path)))
    hub.create_users("kim", "lee")
    assert hub.spawn("kim", {"gpus": 1}).status_code == 202
    deadline = time.monotonic() + 60
    while not os.path.exists(tmp_path / "kim-created"):
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.2)
    left = container_of("kim")
    assert left["State"]["Status"] == "created"
    assert left["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == [hub.gpus[0]["uuid"]]
    hub.kill9()
    hub.start()
    hub.spawn_ready("lee", {"gpus": 1})
    assert labelled("kim") == [], (
        "the interrupted spawn's container still carries the GPU lee now has"
    )


FAILING_STOP = """
from jupyter_gpuspawn import GPUDockerSpawner

class DockerRefusesToStop(GPUDockerSpawner):
    async def stop_object(self):
        if self.user.name == "max":
            raise RuntimeError("dockerd did not answer")
        return await super().stop_object()

c.JupyterHub.spawner_class = DockerRefusesToStop
c.Spawner.poll_interval = 1
c.GPUDockerSpawner.reconcile_interval = 1
"""


def test_a_failed_stop_keeps_the_gpu_until_the_container_is_gone(make_hub):
    hub = make_hub(n_gpus=1, extra_config=FAILING_STOP)
    hub.create_users("max", "ned")
    hub.spawn_ready("max", {"gpus": 1})
    cid = container_of("max")["Id"]
    try:
        hub.session.delete(f"{hub.api}/users/max/server", timeout=30)
    except requests.RequestException:
        pass
    wait_hub_forgets(hub, "max")  # the hub gives up on the server either way
    # until Docker confirms the container is gone, its GPU is not handed out; the reconcile then
    # removes it
    deadline = time.monotonic() + 20
    while True:
        r = hub.spawn("ned", {"gpus": 1})
        if r.status_code in (201, 202):
            left = subprocess.run(
                ["docker", "ps", "-aq", "--no-trunc", "--filter", f"id={cid}"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            assert not left, "ned got the GPU while max's container still existed"
            break
        assert r.status_code == 409, r.text
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.3)
    hub.wait_ready("ned")
    assert "its GPUs stay reserved until the reconcile removes it" in hub.log_tail(300)


def running_holders() -> dict:
    """GPU UUID -> users of running containers that hold it."""
    holders = {}
    for cid in gpuspawn_containers():
        data = inspect(cid)
        if data["State"]["Running"]:
            labels = data["Config"]["Labels"]
            for uuid in filter(None, labels["org.jupyter.gpuspawn.gpus"].split(",")):
                holders.setdefault(uuid, []).append(labels["org.jupyter.gpuspawn.user"])
    return holders


def test_starting_again_after_a_failed_stop_never_frees_what_the_old_container_holds(make_hub):
    # no reconcile to help: the student's own next start must deal with the old container first
    hub = make_hub(
        n_gpus=2, extra_config=FAILING_STOP + "c.GPUDockerSpawner.reconcile_interval = 0\n"
    )
    hub.create_users("max", "ned", "oz")
    hub.spawn_ready("ned", {"gpus": 1})
    hub.spawn_ready("max", {"gpus": 1})
    try:
        hub.session.delete(f"{hub.api}/users/max/server", timeout=30)
    except requests.RequestException:
        pass
    wait_hub_forgets(hub, "max")
    # max asks for both GPUs; ned holds one, so the allocator refuses
    r = hub.spawn("max", {"gpus": 2})
    assert r.status_code == 409, r.text
    # the refused start removed max's old container before it let go of its GPU, which oz may now
    # have
    hub.spawn_ready("oz", {"gpus": 1})
    holders = running_holders()
    assert sorted(holders) == sorted(g["uuid"] for g in hub.gpus), holders
    assert all(len(users) == 1 for users in holders.values()), f"a GPU is booked twice: {holders}"


def fail_max_stop(hub, options=None) -> str:
    """max's stop fails with his container still running; the hub forgets his server. Returns the
    container's id."""
    hub.spawn_ready("max", options or {"gpus": 1})
    cid = container_of("max")["Id"]
    try:
        hub.session.delete(f"{hub.api}/users/max/server", timeout=30)
    except requests.RequestException:
        pass
    wait_hub_forgets(hub, "max")
    assert container_of("max")["State"]["Running"]
    return cid


def pending_removals(hub) -> dict:
    # the default runtime_dir: next to the hub's database; one file per spawner class
    path = os.path.join(hub.dir, "jupyter_gpuspawn", "pending-removals-DockerRefusesToStop.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)["removals"]
    except FileNotFoundError:
        return {}


def test_a_failed_stop_is_still_removed_after_a_hub_crash(make_hub):
    # no periodic reconcile: the removal is still pending when the hub dies
    hub = make_hub(
        n_gpus=1, extra_config=FAILING_STOP + "c.GPUDockerSpawner.reconcile_interval = 0\n"
    )
    hub.create_users("max", "ned")
    cid = fail_max_stop(hub)
    wait_until(
        lambda: pending_removals(hub).get(cid) == ["max", ""],
        10,
        f"the pending removal never reached the disk\n{hub.log_tail()}",
    )
    hub.kill9()
    hub.start()
    # the new hub removes it at its first reconcile, where it used to adopt it as a running server
    # nobody could stop: its GPU held and its usage billed for good
    hub.spawn_ready("ned", {"gpus": 1})
    assert labelled("max") == [], f"max's container outlived the restart\n{hub.log_tail()}"
    assert held_by("ned") == [g["uuid"] for g in hub.gpus]
    wait_until(
        lambda: of(hub, "max") and all(row["end"] for row in of(hub, "max")),
        10,
        f"max's usage record stayed open: {of(hub, 'max')}",
    )
    wait_until(lambda: pending_removals(hub) == {}, 10, "the done removal stayed in the file")


def held_by(user) -> list:
    return container_of(user)["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"].split(",")


def test_a_start_refused_for_its_budget_still_removes_the_old_container(make_hub, tmp_path):
    courses = tmp_path / "courses"
    courses.mkdir()
    write_course(str(courses), course("free", gpus={"default": 1, "max": 1}))
    write_course(str(courses), course("zero", gpus={"default": 1, "max": 1, "weekly_hours": 0}))
    hub = make_hub(
        n_gpus=1,
        extra_config=FAILING_STOP
        + "c.GPUDockerSpawner.reconcile_interval = 0\n"
        + f"c.GPUDockerSpawner.courses_dir = {str(courses)!r}\n",
    )
    hub.create_users("max", "ned")
    fail_max_stop(hub, {"course": "free", "gpus": 1})
    # max's budget in this course is spent: refused, but only after his old container is gone
    r = hub.spawn("max", {"course": "zero", "gpus": 1})
    assert r.status_code == 403, r.text
    assert labelled("max") == [], "a refused start left the old container holding its GPU"
    hub.spawn_ready("ned", {"course": "free", "gpus": 1})
