"""The admin page's view of the hub's activity file and the usage totals (pure)."""

from __future__ import annotations

import jinja2

from jupyter_gpuspawn.admin import admin_service, instructor_access_role
from jupyter_gpuspawn.admin.app import TEMPLATES
from jupyter_gpuspawn.admin.view import course_rows, freshness, gpu_rows, queue_rows

NOW = 1_800_000_000.0
ACTIVITY = {
    "updated": NOW - 5,
    "devices": {
        "GPU-b": {
            "index": 1,
            "name": "A100",
            "utilization_pct": 0,
            "memory_used": 0,
            "memory_total": 80 * 2**30,
        },
        "GPU-a": {
            "index": 0,
            "name": "A100",
            "utilization_pct": 97,
            "memory_used": 40 * 2**30,
            "memory_total": 80 * 2**30,
        },
    },
    "servers": {
        "ann/": {
            "user": "ann",
            "server": "",
            "gpus": ["GPU-a"],
            "course": "dl",
            "started": NOW - 3 * 3600,
            "idle_since": NOW - 30,
            "deadline": None,
        },
        "bob/big": {
            "user": "bob",
            "server": "big",
            "gpus": ["GPU-b"],
            "course": "",
            "started": NOW - 600,
            "idle_since": NOW - 600,
            "deadline": NOW + 120,
            "deadline_reason": "idle",
        },
    },
    "queue": [
        {
            "user": "<cat>",
            "server": "",
            "gpus": 2,
            "pool": "gpu",
            "position": 1,
            "waiting_since": NOW - 90,
        }
    ],
}


def test_gpus_are_listed_in_index_order_with_their_holders():
    rows = gpu_rows(ACTIVITY, NOW)
    assert [r["uuid"] for r in rows] == ["GPU-a", "GPU-b"]
    [ann] = rows[0]["holders"]
    assert (ann["name"], ann["course"], ann["since"], ann["idle"], ann["deadline"]) == (
        "ann",
        "dl",
        "3 h 00 min",
        "30 s",
        "",
    )
    assert rows[0]["utilization"] == "97 %" and rows[0]["memory"] == "40.0 / 80 GiB"
    [bob] = rows[1]["holders"]
    assert bob["name"] == "bob/big" and bob["deadline"] == "idle in 2 min" and bob["course"] == "-"


def test_queue_courses_and_freshness():
    [q] = queue_rows(ACTIVITY, NOW)
    assert (q["name"], q["gpus"], q["waiting"]) == ("<cat>", 2, "1 min")
    totals = [
        {"user": "a", "course": "dl", "gpu_hours": 1.5},
        {"user": "b", "course": "dl", "gpu_hours": 0.5},
        {"user": "c", "course": "", "gpu_hours": 3.0},
    ]
    assert course_rows(totals) == [
        {"course": "(no course)", "hours": "3.00", "students": 1},
        {"course": "dl", "hours": "2.00", "students": 2},
    ]
    assert freshness(ACTIVITY, NOW) == ""
    assert "is the hub running" in freshness(ACTIVITY, NOW + 600)
    assert "has not reported" in freshness({}, NOW)


def test_the_page_escapes_every_name_and_carries_the_xsrf_token():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    html = env.get_template("gpuspawn_admin.html").render(
        user="boss",
        gpus=gpu_rows(ACTIVITY, NOW),
        queue=queue_rows(ACTIVITY, NOW),
        courses=[],
        usage_error="",
        stale="",
        done="",
        failed="<b>no</b>",
        refresh=False,
        xsrf='<input type="hidden" name="_xsrf" value="t">',
        base="/services/gpu-admin/",
    )
    assert "<cat>" not in html and "&lt;cat&gt;" in html and "&lt;b&gt;no&lt;/b&gt;" in html
    assert html.count('name="_xsrf"') == 3  # one per action form: two holders, one waiter
    assert 'action="/services/gpu-admin/stop"' in html


def test_the_service_definition_can_stop_servers_and_manage_groups_but_not_users(tmp_path):
    service, role = admin_service(str(tmp_path / "jupyterhub_config.py"), port=12345)
    assert service["url"] == "http://127.0.0.1:12345" and service["command"][-1].endswith(
        "jupyterhub_config.py"
    )
    assert role["services"] == ["gpu-admin"]
    assert set(role["scopes"]) == {"read:servers", "delete:servers", "list:users", "admin:groups"}
    # every user reaches the service (the pages decide who may see what); the default user role
    # stays as it was
    assert instructor_access_role() == {
        "name": "user",
        "scopes": ["self", "access:services!service=gpu-admin"],
    }


def test_the_cookie_secret_outlives_a_restart_and_only_the_hub_reads_it(tmp_path):
    import os
    import stat

    from jupyter_gpuspawn.admin.app import cookie_secret

    first = cookie_secret(str(tmp_path / "runtime"))
    assert len(first) == 32 and cookie_secret(str(tmp_path / "runtime")) == first
    path = tmp_path / "runtime" / "admin-cookie-secret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    path.write_bytes(b"short")  # a crash while writing it
    assert len(cookie_secret(str(tmp_path / "runtime"))) == 32


def test_an_instructor_sees_only_the_servers_of_their_course_with_gpus_and_idle_time():
    from datetime import datetime, timezone

    from jupyter_gpuspawn.admin.view import student_rows

    started = (
        datetime.fromtimestamp(NOW - 3 * 3600, timezone.utc).isoformat().replace("+00:00", "Z")
    )
    servers = {
        ("ann", ""): {
            "user_options": {"course": "dl", "gpus": 1},
            "started": started,
            "pending": None,
        },
        ("bob", "big"): {
            "user_options": {"course": "other", "gpus": 1},
            "started": started,
            "pending": None,
        },
        ("cid", ""): {
            "user_options": {"course": "dl", "gpus": 0},
            "started": started,
            "pending": None,
        },
        ("dee", ""): {
            "user_options": {"course": "dl", "gpus": 1},
            "started": None,
            "pending": "spawn",
        },
        ("eve", ""): {
            "user_options": {"course": "dl", "gpus": 2},
            "started": started,
            "pending": None,
        },
    }
    rows = {r["name"]: r for r in student_rows("dl", servers, ACTIVITY, NOW)}
    assert sorted(rows) == ["ann", "cid", "dee", "eve"]  # bob runs another course
    assert rows["ann"]["gpus"] == ["0: A100 (GPU-a…)"] and rows["ann"]["since"] == "3 h 00 min"
    assert rows["ann"]["state"] == "GPU idle for 30 s"
    assert (
        rows["cid"]["state"] == "running (CPU only)" and rows["dee"]["state"] == "waiting for a GPU"
    )
    assert "next report" in rows["eve"]["state"]  # started after the hub's last report


def test_the_preview_is_the_students_card_with_the_courses_choices():
    from jupyter_gpuspawn.admin.view import preview_card
    from jupyter_gpuspawn.courses import Course, CourseImage
    from jupyter_gpuspawn.form import template_environment

    course = Course(
        id="dl",
        title="<b>DL</b>",
        images=(CourseImage("a", "img:1", "Image A"), CourseImage("b", "img:2", "Image B")),
        gpu_max=2,
    )
    html = preview_card(template_environment(()), course, ACTIVITY)
    assert "&lt;b&gt;DL&lt;/b&gt;" in html and 'name="gpus:dl"' in html and "Image B" in html
    assert "0 of 2 GPUs free" in html  # both GPUs of ACTIVITY are held
    html = preview_card(template_environment(()), course, {})  # before the hub's first report
    assert html.count('<option value="') == 2 + 3  # two images, 0..2 GPUs
