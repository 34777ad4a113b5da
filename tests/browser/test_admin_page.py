"""The GPU admin page, a hub-managed service, in a real browser: holders and the queue of a live
scenario, its stop and remove actions through the hub's API, and a 403 for anyone but an admin."""

from __future__ import annotations

import pytest
import requests

from ..integration.conftest import labelled
from ..integration.hub import free_port, wait_until
from ..integration.test_queue import ProgressWatcher
from .conftest import login, screenshot

pytestmark = pytest.mark.integration

ADMIN = """
from jupyter_gpuspawn.admin import admin_service
_service, _role = admin_service(__file__, port={port})
c.JupyterHub.services += [_service]
c.JupyterHub.load_roles += [_role]
c.Authenticator.admin_users = {{"boss"}}
# some hubs give students access to every service (for other services): the page still needs an
# admin
c.JupyterHub.load_roles += [
    {{"name": "services-for-ben", "users": ["ben"], "scopes": ["access:services"]}}
]
c.GPUDockerSpawner.gpu_idle_check_seconds = 1
c.GPUDockerSpawner.gpu_queue_timeout = 300
c.Spawner.start_timeout = 420
c.JupyterHub.tornado_settings = {{"slow_spawn_timeout": 0}}
"""


def reload_until(page, url, selector, count, timeout=30):
    """The page is plain HTML, rendered from what the hub last reported (every second here): load it
    again until
    ``selector`` matches ``count`` elements."""

    def shown():
        page.goto(url)
        return page.locator(selector).count() == count

    wait_until(
        shown, timeout, f"{selector} never matched {count} element(s):\n{page.content()[:3000]}"
    )


def test_admins_see_holders_and_queue_and_act_others_get_403(make_hub, page):
    hub = make_hub(n_gpus=2, extra_config=ADMIN.format(port=free_port()))
    hub.create_users("boss", "ana", "ben", "cid", "dee")
    hub.spawn_ready("ana", {"gpus": 1})
    hub.spawn_ready("ben", {"gpus": 1}, server="big")
    assert hub.spawn("cid", {"gpus": 1}).status_code == 202  # both GPUs held: cid waits
    ProgressWatcher(hub, "cid").wait_for("you are 1st in line")
    assert hub.spawn("dee", {"gpus": 1}).status_code == 202  # and dee behind cid
    ProgressWatcher(hub, "dee").wait_for("you are 2nd in line")

    url = f"{hub.url}/services/gpu-admin/"
    login(page, hub, "boss")
    page.goto(url)
    page.locator("#gpus").wait_for(timeout=60_000)
    reload_until(page, url, "#queue tr[data-waiter]", 2)
    ana_gpu = labelled("ana")[0]["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"]
    row = page.locator('#gpus tr[data-holder="ana"]')
    assert row.get_attribute("data-uuid") == ana_gpu
    assert page.locator('#gpus tr[data-holder="ben/big"]').count() == 1
    waiters = page.locator("#queue tr[data-waiter]")
    assert [waiters.nth(i).get_attribute("data-waiter") for i in range(2)] == ["cid", "dee"]
    screenshot(page, "admin-gpus-and-queue.png")

    # remove dee from the queue: the pending start is cancelled through the hub's API
    page.locator('#queue tr[data-waiter="dee"] button').click()
    page.locator(".note.ok").wait_for(timeout=30_000)
    assert "Removed dee from the queue" in page.locator(".note.ok").inner_text()
    wait_until(lambda: hub.server("dee") is None, 30, "dee still pending")

    # stop ana's server: its GPU goes to cid, first in line
    page.locator('#gpus tr[data-holder="ana"] button').click()
    page.locator(".note.ok").wait_for(timeout=30_000)
    assert "Stopping ana" in page.locator(".note.ok").inner_text()
    wait_until(lambda: hub.server("ana") is None, 60, "ana was not stopped")
    hub.wait_ready("cid")
    reload_until(page, url, '#gpus tr[data-holder="cid"]', 1)
    assert page.locator("#courses").inner_text().count("GPU-hours") == 1
    screenshot(page, "admin-after-actions.png")

    # a student: 403, from the hub's OAuth (no access:services) or from the page (access, but not an
    # admin)
    for student in ("dee", "ben"):
        page.context.clear_cookies()
        login(page, hub, student)
        response = page.goto(url)
        assert response.status == 403, (student, response.status)
    # ben got past OAuth; the page itself refused him
    assert "for JupyterHub admins" in page.content()
    r = requests.post(
        url + "stop",
        data={"user": "cid", "server": "", "action": "stop"},
        timeout=10,
        allow_redirects=False,
    )
    assert r.status_code in (302, 403) and hub.server("cid") is not None
