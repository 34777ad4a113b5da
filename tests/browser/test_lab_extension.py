"""The JupyterLab extension inside a real hub-spawned container: status bar and "My container"
panel."""

from __future__ import annotations

import json

import pytest

from ..integration.conftest import labelled
from ..integration.hub import TEST_IMAGE
from .conftest import login, screenshot

pytestmark = pytest.mark.integration


def test_status_bar_and_panel_show_this_containers_gpu_and_limits(make_hub, page):
    hub = make_hub(n_gpus=2, extra_config='c.GPUDockerSpawner.mem_limit = "1G"\n')
    hub.create_users("lab")
    hub.spawn_ready("lab", {"gpus": 1})
    [container] = labelled("lab")
    uuid = container["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"]

    r = hub.session.get(hub.user_url("lab") + "gpuspawn/status")
    assert r.status_code == 200, r.text
    status = r.json()
    [gpu] = status["gpus"]
    assert gpu["uuid"] == uuid and gpu["simulated"] is True
    other = next(g["uuid"] for g in hub.gpus if g["uuid"] != uuid)
    assert other not in r.text  # the other GPU never shows up
    assert status["container"]["memory_limit"] == 1024**3
    assert status["container"]["image"] == TEST_IMAGE

    login(page, hub, "lab")
    page.goto(hub.user_url("lab") + "lab")
    item = page.locator(".jp-gpuspawn-statusbar")
    item.wait_for(timeout=90_000)
    page.wait_for_function(
        "() => document.querySelector('.jp-gpuspawn-statusbar').textContent.includes('RAM')",
        timeout=30_000,
    )
    text = item.inner_text()
    assert f"GPU {gpu['index']}:" in text and "/80 GB" in text and "/1.0 GB" in text, text
    screenshot(page, "lab-status-bar.png")

    item.click()
    panel = page.locator("#jp-gpuspawn-panel")
    panel.wait_for(state="visible", timeout=30_000)
    card = panel.locator(f'.jp-gpuspawn-gpu[data-uuid="{uuid}"]')
    card.wait_for(timeout=30_000)
    assert card.locator('dd[data-key="uuid"]').inner_text() == uuid[:12]
    assert "/80 GB" in card.locator('dd[data-key="gpu-memory"]').inner_text()
    assert "simulated" in card.locator("h3").inner_text()
    assert panel.locator('dd[data-key="image"]').inner_text() == TEST_IMAGE
    assert "/1.0 GB" in panel.locator('dd[data-key="memory"]').inner_text()
    assert panel.locator(f'[data-uuid="{other}"]').count() == 0
    screenshot(page, "lab-my-container-panel.png")
    light_background = panel.evaluate("e => getComputedStyle(e).backgroundColor")

    # dark theme: the panel follows JupyterLab's theme variables
    r = hub.session.put(
        hub.user_url("lab") + "lab/api/settings/@jupyterlab/apputils-extension:themes",
        json={"raw": '{"theme": "JupyterLab Dark"}'},
    )
    assert r.status_code == 204, r.text
    page.reload()
    page.locator(".jp-gpuspawn-statusbar").click(timeout=90_000)
    panel.wait_for(state="visible", timeout=30_000)
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    dark_background = panel.evaluate("e => getComputedStyle(e).backgroundColor")
    assert dark_background != light_background
    channels = [int(c) for c in dark_background[dark_background.index("(") + 1 : -1].split(",")[:3]]
    assert sum(channels) / 3 < 100, dark_background  # actually dark
    screenshot(page, "lab-my-container-panel-dark.png")


def open_lab_until_status_bar_says(page, hub, user, text):
    login(page, hub, user)
    page.goto(hub.user_url(user) + "lab")
    page.wait_for_function(
        "text => { const e = document.querySelector('.jp-gpuspawn-statusbar');"
        " return e && e.textContent.includes(text); }",
        arg=text,
        timeout=90_000,
    )


def test_cpu_only_server_says_so(make_hub, page):
    hub = make_hub(n_gpus=1)
    hub.create_users("cpu")
    hub.spawn_ready("cpu", {"gpus": 0})
    open_lab_until_status_bar_says(page, hub, "cpu", "CPU only")
    assert hub.gpus[0]["uuid"] not in page.content()


def test_the_status_bar_and_panel_warn_before_an_idle_gpu_is_reclaimed(make_hub, page):
    # reclaimed after 3 idle minutes whether anyone waits or not, warned 2.9 minutes ahead: the
    # warning shows about 6 s after the start, long enough for a browser on a busy machine to see it
    hub = make_hub(
        n_gpus=1,
        extra_config="""
c.GPUDockerSpawner.gpu_idle_reclaim = "always"
c.GPUDockerSpawner.gpu_idle_minutes = 3
c.GPUDockerSpawner.gpu_idle_warn_minutes = 2.9
c.GPUDockerSpawner.gpu_idle_check_seconds = 1
""",
    )
    hub.gpus[0]["utilization"] = 0
    with open(hub.gpus_file, "w") as f:
        json.dump(hub.gpus, f)
    hub.create_users("idle")
    hub.spawn_ready("idle", {"gpus": 1})
    login(page, hub, "idle")
    page.goto(hub.user_url("idle") + "lab")
    item = page.locator(".jp-gpuspawn-statusbar.jp-gpuspawn-statusbar-warning")
    item.wait_for(timeout=90_000)
    text = item.inner_text()
    assert "GPU idle: server stops in" in text and "min" in text, text
    assert "been idle (under 5 % utilisation)" in item.get_attribute("title")
    screenshot(page, "lab-status-bar-reclaim-warning.png")

    item.click()
    warning = page.locator("#jp-gpuspawn-panel .jp-gpuspawn-reclaim[role=alert]")
    warning.wait_for(state="visible", timeout=30_000)
    assert "min" in warning.locator('[data-key="reclaim-countdown"]').inner_text()
    message = warning.locator('[data-key="reclaim-message"]').inner_text()
    assert "Servers here give idle GPUs back after 3 minutes" in message, message
    assert "CPU-only" in warning.inner_text()
    screenshot(page, "lab-my-container-panel-reclaim-warning.png")


def test_a_mig_slice_reads_as_a_slice_without_a_made_up_utilisation(make_hub, page):
    parent = "GPU-a100a100-5eed-4a11-9b00-000000000000"
    slice_ = {
        "uuid": "MIG-00000001-5eed-4a11-9b00-000000000000",
        "name": "NVIDIA A100 80GB PCIe",
        "index": 0,
        "mig_profile": "1g.10gb",
        "parent_uuid": parent,
        "memory_total": "10GiB",
        "memory_used": "512MiB",
    }
    hub = make_hub(gpus=[slice_])
    hub.create_users("slice")
    hub.spawn_ready("slice", {"gpus": 1})
    open_lab_until_status_bar_says(page, hub, "slice", "MIG")
    assert (
        page.locator(".jp-gpuspawn-statusbar")
        .inner_text()
        .startswith("GPU 0 MIG 1g.10gb: 0.5/10 GB")
    )
    page.locator(".jp-gpuspawn-statusbar").click()
    card = page.locator(f'.jp-gpuspawn-gpu[data-uuid="{slice_["uuid"]}"]')
    card.wait_for(timeout=30_000)
    assert "1g.10gb slice of NVIDIA A100 80GB PCIe (10 GiB)" in card.locator("h3").inner_text()
    assert card.locator('dd[data-key="utilization"]').inner_text() == "n/a (MIG)"
    assert card.locator('dd[data-key="mig"]').inner_text() == f"1g.10gb of {parent[:12]}"
    # the memory sparkline only: no flat line for a figure NVML lacks
    assert card.locator("svg").count() == 1
    screenshot(page, "lab-mig-slice-panel.png")
