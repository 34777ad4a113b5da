"""The GPU queue through a real hub: places in line on the progress stream, hand-off, cancel,
time-out, restart."""

from __future__ import annotations

import json
import threading
import time

import requests

from .conftest import labelled

QUEUE = """
c.GPUDockerSpawner.gpu_queue_timeout = {timeout}
c.Spawner.start_timeout = {timeout} + 120
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
"""


class ProgressWatcher:
    """Follows one pending server's progress stream in a thread, as the spawn page does."""

    def __init__(self, hub, user):
        self.messages, self.final = [], None
        self._thread = threading.Thread(target=self._follow, args=(hub, user), daemon=True)
        self._thread.start()

    def _follow(self, hub, user):
        try:
            with hub.session.get(
                f"{hub.api}/users/{user}/server/progress", stream=True, timeout=300
            ) as r:
                for line in r.iter_lines(decode_unicode=True):
                    if line and line.startswith("data:"):
                        event = json.loads(line[5:])
                        self.messages.append(event.get("message", ""))
                        if event.get("ready") or event.get("failed"):
                            self.final = event
                            return
        except requests.RequestException:
            pass  # the hub went away (the restart test); done() then reports what was seen

    def wait_for(self, text, timeout=30):
        deadline = time.monotonic() + timeout
        while not any(text in m for m in self.messages):
            assert time.monotonic() < deadline, f"never saw {text!r}; saw {self.messages}"
            time.sleep(0.1)

    def done(self, timeout=60):
        self._thread.join(timeout)
        assert self.final is not None, self.messages
        return self.final


def pending(hub, user):
    info = hub.server(user)
    return bool(info and info.get("pending") == "spawn")


def test_students_wait_in_line_and_the_freed_gpu_goes_to_the_first(make_hub):
    hub = make_hub(n_gpus=1, extra_config=QUEUE.format(timeout=120))
    hub.create_users("ada", "bea", "cyd")
    hub.spawn_ready("ada", {"gpus": 1})
    assert hub.spawn("bea", {"gpus": 1}).status_code == 202
    bea = ProgressWatcher(hub, "bea")
    bea.wait_for("you are 1st in line (1 waiting for NVIDIA A100 80GB PCIe (simulated))")
    assert hub.spawn("cyd", {"gpus": 1}).status_code == 202
    cyd = ProgressWatcher(hub, "cyd")
    cyd.wait_for("you are 2nd in line (2 waiting for")
    assert (
        pending(hub, "bea")
        and pending(hub, "cyd")
        and labelled("bea") == []
        and labelled("cyd") == []
    )

    hub.stop_server("ada")
    t0 = time.monotonic()
    assert bea.done()["ready"]
    assert time.monotonic() - t0 < 30  # a hand-off, then a container start on a busy 2-core machine
    assert labelled("bea")[0]["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == [
        hub.gpus[0]["uuid"]
    ]
    cyd.wait_for("you are 1st in line (1 waiting for")  # moved up

    # cyd gives up: the spawn page's cancel (DELETE of the pending server) leaves the queue at once
    r = hub.session.delete(f"{hub.api}/users/cyd/server")
    assert r.status_code in (202, 204), r.text
    deadline = time.monotonic() + 10
    while hub.server("cyd") is not None:
        assert time.monotonic() < deadline, hub.log_tail()
        time.sleep(0.2)
    hub.stop_server("bea")
    hub.spawn_ready("ada", {"gpus": 1})  # the GPU went to nobody in between: cyd left the line
    assert labelled("cyd") == []


def test_a_queue_timeout_says_so_and_holds_nothing(make_hub):
    hub = make_hub(n_gpus=1, extra_config=QUEUE.format(timeout=3))
    hub.create_users("dee", "eve", "fox")
    hub.spawn_ready("dee", {"gpus": 1})
    assert hub.spawn("eve", {"gpus": 1}).status_code == 202
    final = ProgressWatcher(hub, "eve").done(timeout=30)
    assert final.get("failed")
    assert "No GPU came free within 3 seconds; nothing is held for you" in final["message"], final
    assert labelled("eve") == []
    hub.stop_server("dee")
    hub.spawn_ready("fox", {"gpus": 1})


def test_a_small_start_timeout_shortens_the_wait_instead_of_cutting_the_student_off(make_hub):
    # the admin set start_timeout below gpu_queue_timeout + http_timeout: the queue gives up first,
    # with its own message, never the hub's generic timeout
    hub = make_hub(
        n_gpus=1,
        extra_config="""
c.GPUDockerSpawner.gpu_queue_timeout = 600
c.Spawner.start_timeout = 36
c.Spawner.http_timeout = 3
c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}
""",
    )
    hub.create_users("gil", "hal")
    hub.spawn_ready("gil", {"gpus": 1})
    assert hub.spawn("hal", {"gpus": 1}).status_code == 202
    final = ProgressWatcher(hub, "hal").done(timeout=60)
    assert "No GPU came free within 3 seconds" in final["message"], final
    assert "cuts the GPU queue wait to 3 s" in hub.log_tail(200)


def test_a_hub_restart_forgets_queued_starts_and_holds_nothing_for_them(make_hub):
    hub = make_hub(n_gpus=1, extra_config=QUEUE.format(timeout=120))
    hub.create_users("ida", "jon", "kai")
    hub.spawn_ready("ida", {"gpus": 1})
    assert hub.spawn("jon", {"gpus": 1}).status_code == 202
    ProgressWatcher(hub, "jon").wait_for("1st in line")
    hub.kill9()
    hub.start()
    # JupyterHub does not restore pending spawns: jon's is gone, and he starts again from the spawn
    # page
    assert not pending(hub, "jon") and hub.server("jon") is None
    hub.stop_server("ida")
    hub.spawn_ready("kai", {"gpus": 1})  # nothing was held for jon's forgotten request
    assert labelled("jon") == []
    hub.spawn_ready("jon", {"gpus": 0})  # and he can start again


def test_nobody_gets_around_the_line_and_a_two_gpu_request_is_not_starved(make_hub):
    hub = make_hub(n_gpus=2, extra_config=QUEUE.format(timeout=120))
    hub.create_users("lu", "mo", "ned", "ora")
    hub.spawn_ready("lu", {"gpus": 1})
    hub.spawn_ready("mo", {"gpus": 1})
    assert hub.spawn("ned", {"gpus": 2}).status_code == 202
    ned = ProgressWatcher(hub, "ned")
    ned.wait_for("you are 1st in line")
    hub.stop_server("lu")  # one GPU free: not enough for ned, who keeps it
    assert hub.spawn("ora", {"gpus": 1}).status_code == 202  # ora goes behind ned, not around him
    ora = ProgressWatcher(hub, "ora")
    ora.wait_for("you are 2nd in line (2 waiting")
    time.sleep(1)  # several dispatcher rounds with a GPU free
    assert labelled("ora") == [] and pending(hub, "ora")
    hub.stop_server("mo")
    assert ned.done()["ready"]
    assert sorted(labelled("ned")[0]["HostConfig"]["DeviceRequests"][0]["DeviceIDs"]) == sorted(
        g["uuid"] for g in hub.gpus
    )
    ora.wait_for("you are 1st in line (1 waiting")
    r = hub.session.delete(f"{hub.api}/users/ora/server")
    assert r.status_code in (202, 204), r.text
