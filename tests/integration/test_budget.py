"""Weekly GPU-hour budgets through a real hub (budgets of seconds): the form says what is left, a
running server that spends its budget is warned in Lab and stopped, the next GPU start is refused
with the reason, CPU-only still starts, an admin's grant opens it again, admins are exempt."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time

from .hub import simulated_gpus, wait_until
from .test_courses_hub import course, write_course
from .test_reclaim import reclaim_notice, spawn_page

BUDGET = """
c.GPUDockerSpawner.courses_dir = {courses!r}
c.GPUDockerSpawner.gpu_idle_reclaim = "never"  # only the budget stops servers here
c.GPUDockerSpawner.gpu_idle_check_seconds = 1
c.GPUDockerSpawner.gpu_idle_warn_minutes = 0.2
c.Authenticator.admin_users = {{"prof"}}
"""


def test_a_spent_budget_warns_stops_refuses_and_a_grant_reopens_it(make_hub, tmp_path):
    courses = tmp_path / "courses"
    courses.mkdir()
    # 0.01 GPU-hours = 36 GPU-seconds a week; warned 12 s before it runs out
    write_course(str(courses), course("dl", gpus={"default": 1, "max": 1, "weekly_hours": 0.01}))
    write_course(str(courses), course("zero", gpus={"default": 1, "max": 1, "weekly_hours": 0}))
    hub = make_hub(n_gpus=2, extra_config=BUDGET.format(courses=str(courses)))
    hub.create_users("student", "prof")

    page = spawn_page(hub, "student")
    assert "0.01 of 0.01 GPU-hours left this week; resets Monday 00:00" in page, page[:4000]

    hub.spawn_ready("student", {"course": "dl", "gpus": 1})
    started = time.time()
    notice = wait_until(
        lambda: reclaim_notice(hub, "student"), 40, f"no budget warning\n{hub.log_tail()}"
    )
    assert (
        notice["reason"] == "budget" and "nearly used your 0.01 GPU-hours" in notice["message"]
    ), notice
    assert started + 30 <= notice["deadline"] <= started + 40, (notice, started)
    wait_until(lambda: hub.server("student") is None, 40, f"never stopped\n{hub.log_tail()}")
    assert time.time() >= started + 33
    db = os.path.join(hub.dir, "jupyter_gpuspawn_usage.sqlite")

    def closed_record():
        # the usage records' writer thread closes the row just after the stop (not in its path)
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT end_reason, end - start FROM gpuspawn_gpu_usage").fetchall()
        return rows if rows and rows[0][0] is not None else None

    [(reason, used)] = wait_until(closed_record, 10, "the usage record was never closed")
    assert reason == "budget" and 34 <= used <= 40, (reason, used)
    assert "Stopping student: its GPU-hour budget is spent" in hub.log_tail(400)

    # spent: a GPU start is refused and says why; nothing is created or held; CPU-only still starts
    r = hub.spawn("student", {"course": "dl", "gpus": 1})
    assert r.status_code == 403, r.text
    assert (
        "You have used your 0.01 GPU-hours for this week in Course DL; they reset Monday 00:00"
        in r.text
    )
    assert hub.server("student") is None
    page = spawn_page(hub, "student")
    # what happened to the last one
    assert "used up your 0.01 GPU-hours for this week in Course DL" in page
    assert "0 of 0.01 GPU-hours left this week" in page
    hub.spawn_ready("student", {"course": "dl", "gpus": 0})
    hub.stop_server("student")

    # the admin grants 0.01 more for this week: GPUs again
    cli = [
        os.path.join(os.path.dirname(sys.executable), "jupyter-gpuspawn"),
        "grant",
        "student",
        "0.01",
        "--course",
        "dl",
        "-f",
        hub.config_file,
        "--by",
        "prof",
    ]
    out = subprocess.run(cli, check=True, capture_output=True, text=True).stdout
    assert "student: 0.01 extra GPU-hours in course dl this week" in out, out
    hub.spawn_ready("student", {"course": "dl", "gpus": 1})
    hub.stop_server("student")

    # a budget of 0: students get none, admins are exempt (gpu_budget_admins is False)
    r = hub.spawn("student", {"course": "zero", "gpus": 1})
    assert r.status_code == 403 and "You have used your 0 GPU-hours" in r.text, r.text
    hub.spawn_ready("prof", {"course": "zero", "gpus": 1})


def test_a_running_server_keeps_its_course_rules_when_the_file_breaks_and_the_hub_restarts(
    make_hub, tmp_path
):
    """The course gives 0.05 GPU-hours and never reclaims idle GPUs; the hub's own settings give
    0.001 GPU-hours and reclaim idle GPUs always, after 3 s. The instructor saves a broken file and
    the hub restarts: the running server is still judged by its course (its state kept the rules),
    not stopped for a budget or an idle GPU it never had."""
    courses = tmp_path / "courses"
    courses.mkdir()
    rules = course(
        "k",
        gpus={"default": 1, "max": 1, "weekly_hours": 0.05},  # 180 GPU-seconds
        idle={"minutes": 600, "warn_minutes": 5, "reclaim": "never"},
    )
    write_course(str(courses), rules)
    gpus = simulated_gpus(1)
    gpus[0]["utilization"] = 0  # idle throughout
    hub = make_hub(
        gpus=gpus,
        extra_config=f"""
c.GPUDockerSpawner.courses_dir = {str(courses)!r}
c.GPUDockerSpawner.gpu_hours_per_week = 0.001
c.GPUDockerSpawner.gpu_idle_reclaim = "always"
c.GPUDockerSpawner.gpu_idle_minutes = 0.05
c.GPUDockerSpawner.gpu_idle_warn_minutes = 0.02
c.GPUDockerSpawner.gpu_idle_check_seconds = 1
""",
    )
    hub.create_users("student")
    hub.spawn_ready("student", {"course": "k"})

    def course_budget_warning():
        notice = reclaim_notice(hub, "student")
        return notice if notice and notice["reason"] == "budget" else None

    # 180 GPU-seconds with 5 minutes' warning: warned at once, with the course's budget
    notice = wait_until(course_budget_warning, 20, f"no budget warning\n{hub.log_tail()}")
    assert "nearly used your 0.05 GPU-hours for this week in Course K" in notice["message"], notice

    with open(courses / "k.yaml", "a") as f:
        f.write("gpus: [\n")  # not YAML any more
    hub.stop()
    hub.start()
    hub.wait_ready("student")
    # several rounds (1 s apart), past the hub's own idle time and budget: still running, warned
    # about the course's budget as before
    time.sleep(6)
    info = hub.server("student")
    assert info and info["ready"], f"stopped under the hub's own rules\n{hub.log_tail()}"
    notice = reclaim_notice(hub, "student")
    assert notice and notice["reason"] == "budget", notice
    assert "nearly used your 0.05 GPU-hours for this week in Course K" in notice["message"], notice
    log = hub.log_tail(400)
    assert "Stopping student" not in log and "used up your" not in log, log
    # and the admin is told, once
    assert log.count("server keeps the rules it was started with") == 1, log
