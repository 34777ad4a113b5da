"""The admin page's view of the hub's activity file and the usage totals (pure)."""
from __future__ import annotations

import jinja2

from jupyter_gpuspawn.admin import admin_service
from jupyter_gpuspawn.admin.app import TEMPLATES
from jupyter_gpuspawn.admin.view import course_rows, freshness, gpu_rows, queue_rows

NOW = 1_800_000_000.0
ACTIVITY = {
    "updated": NOW - 5,
    "devices": {
        "GPU-b": {"index": 1, "name": "A100", "utilization_pct": 0, "memory_used": 0, "memory_total": 80 * 2**30},
        "GPU-a": {"index": 0, "name": "A100", "utilization_pct": 97, "memory_used": 40 * 2**30,
                  "memory_total": 80 * 2**30},
    },
    "servers": {
        "ann/": {"user": "ann", "server": "", "gpus": ["GPU-a"], "course": "dl", "started": NOW - 3 * 3600,
                 "idle_since": NOW - 30, "deadline": None},
        "bob/big": {"user": "bob", "server": "big", "gpus": ["GPU-b"], "course": "", "started": NOW - 600,
                    "idle_since": NOW - 600, "deadline": NOW + 120, "deadline_reason": "idle"},
    },
    "queue": [{"user": "<cat>", "server": "", "gpus": 2, "pool": "gpu", "position": 1, "waiting_since": NOW - 90}],
}


def test_gpus_are_listed_in_index_order_with_their_holders():
    rows = gpu_rows(ACTIVITY, NOW)
    assert [r["uuid"] for r in rows] == ["GPU-a", "GPU-b"]
    [ann] = rows[0]["holders"]
    assert (ann["name"], ann["course"], ann["since"], ann["idle"], ann["deadline"]) == \
        ("ann", "dl", "3 h 00 min", "30 s", "")
    assert rows[0]["utilization"] == "97 %" and rows[0]["memory"] == "40.0 / 80 GiB"
    [bob] = rows[1]["holders"]
    assert bob["name"] == "bob/big" and bob["deadline"] == "idle in 2 min" and bob["course"] == "-"


def test_queue_courses_and_freshness():
    [q] = queue_rows(ACTIVITY, NOW)
    assert (q["name"], q["gpus"], q["waiting"]) == ("<cat>", 2, "1 min")
    totals = [{"user": "a", "course": "dl", "gpu_hours": 1.5}, {"user": "b", "course": "dl", "gpu_hours": 0.5},
              {"user": "c", "course": "", "gpu_hours": 3.0}]
    assert course_rows(totals) == [{"course": "(no course)", "hours": "3.00", "students": 1},
                                   {"course": "dl", "hours": "2.00", "students": 2}]
    assert freshness(ACTIVITY, NOW) == ""
    assert "is the hub running" in freshness(ACTIVITY, NOW + 600)
    assert "has not reported" in freshness({}, NOW)


def test_the_page_escapes_every_name_and_carries_the_xsrf_token():
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True)
    html = env.get_template("gpuspawn_admin.html").render(
        user="boss", gpus=gpu_rows(ACTIVITY, NOW), queue=queue_rows(ACTIVITY, NOW), courses=[], usage_error="",
        stale="", done="", failed="<b>no</b>", refresh=False, xsrf='<input type="hidden" name="_xsrf" value="t">',
        base="/services/gpu-admin/")
    assert "<cat>" not in html and "&lt;cat&gt;" in html and "&lt;b&gt;no&lt;/b&gt;" in html
    assert html.count('name="_xsrf"') == 3  # one per action form: two holders, one waiter
    assert 'action="/services/gpu-admin/stop"' in html


def test_the_service_definition_is_admin_only_and_can_only_stop_servers(tmp_path):
    service, role = admin_service(str(tmp_path / "jupyterhub_config.py"), port=12345)
    assert service["url"] == "http://127.0.0.1:12345" and service["command"][-1].endswith("jupyterhub_config.py")
    assert role["services"] == ["gpu-admin"] and set(role["scopes"]) == {"read:servers", "delete:servers"}


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
