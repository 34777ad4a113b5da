"""GPU usage records through a real hub: written on start, closed with the reason on every kind of
end, and never lost when the hub is killed with -9 (the reconcile closes what ended while it was
down, at the time it last saw it)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

from .conftest import _docker, labelled
from .hub import wait_until

FAST = "c.Spawner.poll_interval = 1\nc.GPUDockerSpawner.reconcile_interval = 1\n"


def records(hub) -> list:
    # the default: next to the hub's database
    path = os.path.join(hub.dir, "jupyter_gpuspawn_usage.sqlite")
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        return [dict(row) for row in db.execute("SELECT * FROM gpuspawn_gpu_usage ORDER BY id")]


def of(hub, user) -> list:
    return [r for r in records(hub) if r["user"] == user]


def test_every_end_is_recorded_with_its_reason(make_hub):
    # the reconcile looks far more often than the hub's poll: it sees the exited container first,
    # and must leave its end to the poll, which knows how it ended
    hub = make_hub(
        n_gpus=4,
        extra_config="c.Spawner.poll_interval = 5\nc.GPUDockerSpawner.reconcile_interval = 0.5\n",
    )
    hub.create_users("stopper", "quitter", "crasher", "cpu")
    t0 = time.time()
    for user in ("stopper", "quitter", "crasher"):
        hub.spawn_ready(user, {"gpus": 1})
    hub.spawn_ready("cpu", {"gpus": 0})
    for user in ("stopper", "quitter", "crasher"):
        [row] = of(hub, user)
        uuid = labelled(user)[0]["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"]
        # from the container's start (Docker keeps whole seconds)
        assert (
            row["gpu_uuid"] == uuid and row["end"] is None and t0 - 1 <= row["start"] <= time.time()
        )
        assert row["share"] == 1.0 and row["server"] == "" and row["course"] == ""
    assert of(hub, "cpu") == []  # CPU-only servers hold no GPU-hours

    hub.stop_server("stopper")
    # Lab's File > Shut Down: exit code 0
    r = hub.session.post(hub.user_url("quitter") + "api/shutdown")
    assert r.status_code in (200, 204), r.text
    _docker("kill", labelled("crasher")[0]["Id"])
    wait_until(
        lambda: all(of(hub, u)[0]["end"] for u in ("stopper", "quitter", "crasher")),
        30,
        f"records not closed: {records(hub)}\n{hub.log_tail()}",
    )
    reasons = {u: of(hub, u)[0]["end_reason"] for u in ("stopper", "quitter", "crasher")}
    assert reasons == {"stopper": "stopped", "quitter": "exited", "crasher": "crashed"}, reasons


def test_records_survive_a_hub_killed_with_minus_9(make_hub):
    hub = make_hub(n_gpus=3, extra_config=FAST)
    hub.create_users("keeps", "stopped", "lost")
    for user in ("keeps", "stopped", "lost"):
        hub.spawn_ready(user, {"gpus": 1})
    hub.stop_server("stopped")
    time.sleep(2.5)  # a reconcile round or two: last_seen is fresh
    lost_seen = of(hub, "lost")[0]["last_seen"]
    hub.kill9()
    killed_at = time.time()
    _docker("rm", "-f", labelled("lost")[0]["Id"])  # gone while nobody watched
    time.sleep(2)
    before = {r["id"]: r for r in records(hub)}
    # open, as left
    assert [r["end"] for r in before.values() if r["user"] in ("keeps", "lost")] == [None, None]

    hub.start()
    lost = wait_until(
        lambda: of(hub, "lost")[0]["end"] and of(hub, "lost")[0],
        30,
        f"the lost server's record was never closed\n{hub.log_tail()}",
    )
    assert lost["end_reason"] == "hub restart"
    assert lost_seen <= lost["end"] <= killed_at  # when the hub last saw it, not when it came back
    [keeps] = of(hub, "keeps")
    # still running: still open, seen again
    assert keeps["end"] is None and keeps["last_seen"] > killed_at
    assert of(hub, "stopped")[0]["end_reason"] == "stopped"
    assert len(records(hub)) == len(before)  # nothing lost, nothing doubled

    hub.stop_server("keeps")
    assert wait_until(lambda: of(hub, "keeps")[0]["end"], 10, "not closed")
    cli = [
        os.path.join(os.path.dirname(sys.executable), "jupyter-gpuspawn"),
        "usage",
        "-f",
        hub.config_file,
        "--format",
        "json",
    ]
    rows = json.loads(subprocess.run(cli, check=True, capture_output=True, text=True).stdout)[
        "rows"
    ]
    assert sorted(r["user"] for r in rows) == ["keeps", "lost", "stopped"], rows
    assert all(r["gpu_hours"] > 0 for r in rows)
