"""The JupyterLab extension inside a real hub-spawned container: status bar and "My container"
panel."""

from __future__ import annotations

import json
import os
import re

import pytest

from ..integration.conftest import labelled
from ..integration.hub import TEST_IMAGE
from .conftest import ARTIFACTS, login, screenshot

pytestmark = pytest.mark.integration


# Every word of `root` that the browser lays out over two lines ("deep-learnin / g"): a word's
# range then has boxes at two heights.
BROKEN_WORDS_JS = """root => {
  const broken = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    for (const m of node.data.matchAll(/\\S+/g)) {
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const tops = new Set([...range.getClientRects()].filter(r => r.width > 0)
        .map(r => Math.round(r.top)));
      if (tops.size > 1) broken.push(m[0]);
    }
  }
  return broken;
}"""

# Each shown value of the panel: its text, title, height in lines and whether an ellipsis cuts it.
VALUES_JS = """root => [...root.querySelectorAll('dd')]
  .filter(dd => dd.offsetParent !== null).map(dd => {
  const style = getComputedStyle(dd);
  const line = parseFloat(style.lineHeight) || 1.4 * parseFloat(style.fontSize);
  return {key: dd.dataset.key, text: dd.textContent, title: dd.title,
          lines: dd.getBoundingClientRect().height / line, cut: dd.scrollWidth > dd.clientWidth};
})"""

# figures short enough that they must show whole at the default sidebar width
SHORT = {"memory", "cpu", "shm", "pids", "uptime", "utilization", "gpu-memory", "temperature"}


def assert_reads_well(panel):
    """No word broken over two lines, every value on one line, a cut value's title holds it all."""
    assert panel.evaluate(BROKEN_WORDS_JS) == []
    values = panel.evaluate(VALUES_JS)
    assert {"image", "memory", "cpu", "uuid", "utilization"} <= {v["key"] for v in values}
    for v in values:
        assert v["lines"] < 1.5, v
        assert not v["cut"] or v["title"] == v["text"], v
        assert not (v["cut"] and v["key"] in SHORT), v


def element_screenshot(locator, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, name)
    locator.screenshot(path=path)
    return path


def wait_for_polls(page, uuid, n=2):
    """Wait until the panel has taken `n` more polls (the memory sparkline grows at each)."""
    path = f'.jp-gpuspawn-gpu[data-uuid="{uuid}"] .jp-gpuspawn-sparklines svg:last-of-type path'
    for _ in range(n):
        before = page.locator(path).get_attribute("d")
        page.wait_for_function(
            "([path, d]) => document.querySelector(path).getAttribute('d') !== d",
            arg=[path, before],
            timeout=30_000,
        )


# An element's text colour and the first opaque background behind it, as the browser computes them.
COLOURS_JS = """e => {
  let bg = e;
  while (bg && ['transparent', 'rgba(0, 0, 0, 0)'].includes(getComputedStyle(bg).backgroundColor)) {
    bg = bg.parentElement;
  }
  return [getComputedStyle(e).color, getComputedStyle(bg || document.body).backgroundColor];
}"""


def _rgba(css):
    parts = [float(x) for x in css[css.index("(") + 1 : -1].split(",")]
    return parts[:3], parts[3] if len(parts) > 3 else 1.0


def contrast(locator):
    """WCAG contrast ratio of an element's text on its background (text alpha blended)."""
    fg_css, bg_css = locator.evaluate(COLOURS_JS)
    (fg, alpha), (bg, _) = _rgba(fg_css), _rgba(bg_css)
    fg = [alpha * f + (1 - alpha) * b for f, b in zip(fg, bg, strict=True)]

    def luminance(rgb):
        lin = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    light, dark = sorted([luminance(fg), luminance(bg)], reverse=True)
    return (light + 0.05) / (dark + 0.05)


def assert_legible(page, card):
    """Values, labels, the badge and the status item read against their backgrounds (WCAG AA for
    text, 3:1 for the small secondary labels and the badge)."""
    assert contrast(card.locator('dd[data-key="utilization"]')) >= 4.5
    assert contrast(card.locator("dt").first) >= 3
    assert contrast(card.locator(".jp-gpuspawn-badge")) >= 3
    assert contrast(page.locator(".jp-gpuspawn-statusbar .jp-StatusBar-TextItem")) >= 4.5


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
    # demo mode: the hub's file gives no figures, so the server makes them up, and says so
    assert isinstance(gpu["utilization_pct"], int) and isinstance(gpu["temperature_c"], int)
    assert gpu["demo_figures"] == ["utilization_pct", "temperature_c", "memory_used"]
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
    assert re.fullmatch(rf"GPU {gpu['index']}: \d+% · [\d.]+/80 GB · RAM [\d.]+/1.0 GB", text), text
    assert "jp-StatusBar-TextItem" in item.inner_html()  # JupyterLab's status-item look
    assert "click for details" in item.get_attribute("title")
    screenshot(page, "lab-status-bar.png")

    item.click()
    panel = page.locator("#jp-gpuspawn-panel")
    panel.wait_for(state="visible", timeout=30_000)
    card = panel.locator(f'.jp-gpuspawn-gpu[data-uuid="{uuid}"]')
    card.wait_for(timeout=30_000)
    uuid_value = card.locator('dd[data-key="uuid"]')
    # all of it, to select and copy (an ellipsis may cut what shows: the title has it all)
    assert uuid_value.text_content() == uuid and uuid_value.get_attribute("title") == uuid
    assert "/80 GB" in card.locator('dd[data-key="gpu-memory"]').inner_text()
    badge = card.locator(".jp-gpuspawn-badge")
    assert badge.is_visible() and badge.inner_text() == "simulated"
    assert "made up" in badge.get_attribute("title")
    assert panel.locator('dd[data-key="image"]').text_content() == TEST_IMAGE
    assert "/1.0 GB" in panel.locator('dd[data-key="memory"]').inner_text()
    assert panel.locator(f'[data-uuid="{other}"]').count() == 0

    # reads well at JupyterLab's default sidebar width
    width = panel.bounding_box()["width"]
    assert width < 320, width
    assert_reads_well(panel)
    assert_legible(page, card)

    # simulated figures move between polls (and are no "?")
    utilisation = card.locator('dd[data-key="utilization"]')
    first = utilisation.inner_text()
    assert re.fullmatch(r"\d+%", first), first
    assert re.fullmatch(r"\d+ °C", card.locator('dd[data-key="temperature"]').inner_text())
    page.wait_for_function(
        "([sel, t]) => document.querySelector(sel).textContent !== t",
        arg=[f'.jp-gpuspawn-gpu[data-uuid="{uuid}"] dd[data-key="utilization"]', first],
        timeout=30_000,
    )
    assert re.fullmatch(r"\d+%", utilisation.inner_text())
    line = card.locator("svg path").first.get_attribute("d")
    heights = {point.split(",")[1] for point in re.findall(r"[\d.]+,[\d.]+", line)}
    assert len(heights) > 1, line  # not a flat line
    page.mouse.move(640, 450)  # off the status item, which shows its hover look
    screenshot(page, "lab-my-container-panel.png")
    element_screenshot(page.locator("#jp-main-statusbar"), "lab-status-bar-light.png")
    element_screenshot(panel, "lab-panel-light.png")
    light_background = panel.evaluate("e => getComputedStyle(e).backgroundColor")

    # updated in place: a student's selection of their UUID survives the polls
    text_node = uuid_value.evaluate_handle("dd => dd.firstChild")
    page.evaluate(
        """node => { const range = document.createRange(); range.selectNodeContents(node);
                     getSelection().removeAllRanges(); getSelection().addRange(range); }""",
        text_node,
    )
    wait_for_polls(page, uuid, 2)
    assert page.evaluate(
        "([node, dd]) => node.isConnected && dd.firstChild === node",
        [text_node, uuid_value.element_handle()],
    )
    assert page.evaluate("() => getSelection().toString()") == uuid

    # dark theme: the panel and the status bar follow JupyterLab's theme variables
    r = hub.session.put(
        hub.user_url("lab") + "lab/api/settings/@jupyterlab/apputils-extension:themes",
        json={"raw": '{"theme": "JupyterLab Dark"}'},
    )
    assert r.status_code == 204, r.text
    page.reload()
    page.locator(".jp-gpuspawn-statusbar").click(timeout=90_000)
    panel.wait_for(state="visible", timeout=30_000)
    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
    card.wait_for(timeout=30_000)
    wait_for_polls(page, uuid, 2)
    dark_background = panel.evaluate("e => getComputedStyle(e).backgroundColor")
    assert dark_background != light_background
    channels = [int(c) for c in dark_background[dark_background.index("(") + 1 : -1].split(",")[:3]]
    assert sum(channels) / 3 < 100, dark_background  # actually dark
    assert_reads_well(panel)
    assert_legible(page, card)
    page.mouse.move(640, 450)
    paths = [
        screenshot(page, "lab-my-container-panel-dark.png"),
        element_screenshot(page.locator("#jp-main-statusbar"), "lab-status-bar-dark.png"),
        element_screenshot(panel, "lab-panel-dark.png"),
    ]
    for path in paths:
        assert os.path.getsize(path) > 1000, path


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
