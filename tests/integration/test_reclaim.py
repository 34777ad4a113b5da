"""Idle GPUs come back, through a real hub: a warning the container's status endpoint carries, then
a stop through the hub, the GPU to the next in line, and a note on the student's next spawn page.
Short timings throughout."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import requests

from .conftest import labelled
from .hub import simulated_gpus, wait_until
from .test_courses_hub import course, write_course
from .test_queue import ProgressWatcher

IDLE = """
c.GPUDockerSpawner.gpu_queue_timeout = 120
c.Spawner.start_timeout = 240
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
c.GPUDockerSpawner.gpu_idle_check_seconds = 1
c.GPUDockerSpawner.gpu_idle_minutes = {minutes}
c.GPUDockerSpawner.gpu_idle_warn_minutes = {warn}
"""


def reclaim_notice(hub, user, server=""):
    r = hub.session.get(hub.user_url(user, server) + "gpuspawn/status", timeout=30)
    assert r.status_code == 200, r.text
    return r.json().get("reclaim")


def set_utilization(hub, gpus, busy_uuids=()):
    for gpu in gpus:
        gpu["utilization"] = 90 if gpu["uuid"] in busy_uuids else 0
    # in place: the containers see the file through a bind mount
    with open(hub.gpus_file, "w") as f:
        json.dump(gpus, f)


def spawn_page(hub, user) -> str:
    """The spawn page as the student sees it (logged in through the hub's login form)."""
    browser = requests.Session()
    browser.get(f"{hub.url}/hub/login", timeout=30)
    r = browser.post(
        f"{hub.url}/hub/login",
        timeout=30,
        data={"username": user, "password": "pw", "_xsrf": browser.cookies.get("_xsrf", "")},
    )
    assert r.status_code == 200, r.text[:500]
    r = browser.get(f"{hub.url}/hub/spawn", timeout=30)
    assert r.status_code == 200, r.text[:500]
    return r.text


def test_an_idle_gpu_goes_to_the_student_who_waits_after_a_warning(make_hub):
    gpus = simulated_gpus(1)
    gpus[0]["utilization"] = 0
    # GPU-idle after 12 s, warned 8 s ahead
    hub = make_hub(gpus=gpus, extra_config=IDLE.format(minutes=0.2, warn=8 / 60))
    hub.create_users("idler", "waiter")
    hub.spawn_ready("idler", {"gpus": 1})

    # idle for longer than gpu_idle_minutes, but nobody waits: under when_queued it keeps its GPU,
    # unwarned
    time.sleep(15)
    assert reclaim_notice(hub, "idler") is None
    assert hub.server("idler")["ready"]

    assert hub.spawn("waiter", {"gpus": 1}).status_code == 202
    waiter = ProgressWatcher(hub, "waiter")
    waiter.wait_for("you are 1st in line")
    warned_at = time.time()
    notice = wait_until(
        lambda: reclaim_notice(hub, "idler"), 15, f"no warning came\n{hub.log_tail()}"
    )
    assert notice["reason"] == "idle" and notice["waiting"] == 1
    # a full warning, although the server had been idle long before anyone waited
    assert notice["deadline"] >= warned_at + 7, notice
    assert 0 < notice["seconds_left"] <= 8.5, notice
    assert "while someone waits for a GPU" in notice["message"], notice["message"]
    assert hub.server("idler")["ready"]
    # the admin's view: who holds the GPU, idle for how long, reclaimed when
    out = subprocess.run(
        [
            os.path.join(os.path.dirname(sys.executable), "jupyter-gpuspawn"),
            "gpus",
            "-f",
            hub.config_file,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert re.search(r"idler \(idle \d+ min, reclaim at \d\d:\d\d\)", out), out

    # then stopped through the hub; the GPU goes to the waiter
    wait_until(
        lambda: hub.server("idler") is None,
        30,
        f"the idle server was never stopped\n{hub.log_tail()}",
    )
    # not before its deadline (the hub samples once a second)
    assert time.time() >= notice["deadline"] - 1.5
    assert waiter.done()["ready"]
    [container] = labelled("waiter")
    assert container["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == [gpus[0]["uuid"]]
    assert labelled("idler") == []
    log = hub.log_tail(400)
    assert re.search(
        r"Reclaiming idle GPU\(s\) " + re.escape(gpus[0]["uuid"]) + " of idler", log
    ), log

    # the student's next spawn page says what happened; their files stay
    page = spawn_page(hub, "idler")
    assert "gpuspawn-notice" in page and "Your previous server was stopped" in page, page[:3000]
    assert "while someone else waited for a GPU" in page and "Your files are kept" in page


def test_busy_gpus_and_courses_that_say_never_keep_their_servers(make_hub, tmp_path):
    gpus = simulated_gpus(3)
    courses_dir = tmp_path / "courses"
    courses_dir.mkdir()
    write_course(
        str(courses_dir),
        course("dl", gpus={"default": 1, "max": 1}, idle={"minutes": 0.1, "warn_minutes": 0.05}),
    )
    write_course(
        str(courses_dir),
        course("keep", gpus={"default": 1, "max": 1}, idle={"minutes": 0.1, "reclaim": "never"}),
    )
    # spawner-wide: always, after an hour; the courses shorten the time, and one of them says never
    hub = make_hub(
        gpus=gpus,
        extra_config=IDLE.format(minutes=60, warn=10)
        + f"c.GPUDockerSpawner.courses_dir = {str(courses_dir)!r}\n"
        + "c.GPUDockerSpawner.gpu_idle_reclaim = 'always'\n",
    )
    hub.create_users("trainer", "idler", "keeper")
    hub.spawn_ready("trainer", {"course": "dl", "gpus": 1})
    hub.spawn_ready("idler", {"course": "dl", "gpus": 1})
    hub.spawn_ready("keeper", {"course": "keep", "gpus": 1})
    trainer_gpu = labelled("trainer")[0]["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"]
    # a training run; every other GPU idle, nobody waits
    set_utilization(hub, gpus, busy_uuids=[trainer_gpu])

    notice = wait_until(
        lambda: reclaim_notice(hub, "idler"), 20, f"'always' never warned\n{hub.log_tail()}"
    )
    assert "Servers here give idle GPUs back after" in notice["message"], notice
    wait_until(
        lambda: hub.server("idler") is None, 30, f"'always' never reclaimed\n{hub.log_tail()}"
    )
    time.sleep(5)  # many idle checks later
    for user in ("trainer", "keeper"):
        assert hub.server(user)["ready"], f"{user} was stopped\n{hub.log_tail()}"
        assert reclaim_notice(hub, user) is None
