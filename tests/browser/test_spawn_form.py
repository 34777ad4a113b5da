"""The spawn form in a real browser against a real hub and real containers."""

from __future__ import annotations

import os

import pytest
import yaml

from ..integration.conftest import labelled
from ..integration.hub import TEST_IMAGE
from .conftest import login, screenshot

pytestmark = pytest.mark.integration


def write_courses(directory):
    courses = [
        {
            "id": "dl",
            "title": "Deep Learning (GPU)",
            "description": "Exclusive GPUs.",
            "groups": ["dl"],
            "gpus": {"default": 1, "max": 2},
        },
        {
            "id": "cpu",
            "title": "Data Science (CPU)",
            "description": "No GPU needed.",
            "gpus": {"max": 0},
        },
        {"id": "other", "title": "Someone Else's Course", "groups": ["other"]},
        {
            "id": "xss",
            "title": "<script>alert(1)</script>",
            "description": "<img src=x onerror=alert(2)>",
        },
    ]
    os.makedirs(directory)
    for data in courses:
        data["images"] = [{"key": "default", "image": TEST_IMAGE, "label": "Python + JupyterLab"}]
        with open(os.path.join(directory, data["id"] + ".yaml"), "w") as f:
            yaml.safe_dump(data, f)


def hub_with_a_busy_gpu(make_hub, tmp_path, n_gpus, student, other, extra_config=""):
    """A hub with the example courses, ``student`` and ``other`` in the dl group, ``other`` holding
    one GPU."""
    courses_dir = str(tmp_path / "courses")
    write_courses(courses_dir)
    hub = make_hub(
        n_gpus=n_gpus,
        extra_config=f"c.GPUDockerSpawner.courses_dir = {courses_dir!r}\n" + extra_config,
    )
    hub.create_users(student, other)
    r = hub.session.post(f"{hub.api}/groups/dl", json={"users": [student, other]})
    assert r.status_code == 201, r.text
    hub.spawn_ready(other, {"course": "dl", "gpus": 1})
    return hub


def test_student_sees_their_courses_with_live_gpus_and_lands_in_jupyterlab(
    make_hub, page, tmp_path
):
    hub = hub_with_a_busy_gpu(make_hub, tmp_path, 4, "stu", "busy")

    login(page, hub, "stu")
    page.wait_for_selector(".gpuspawn-form", timeout=30_000)
    titles = page.locator(".gpuspawn-title").all_inner_texts()
    assert sorted(titles) == sorted(
        ["Deep Learning (GPU)", "Data Science (CPU)", "<script>alert(1)</script>"]
    )
    assert "Someone Else's Course" not in page.content()
    card = page.locator('.gpuspawn-course[data-course="dl"]')
    assert "3 of 4 GPUs free" in card.locator(".gpuspawn-availability").inner_text()
    assert page.locator(".gpuspawn-badge").inner_text() == "simulated GPUs"
    assert page.dialogs == []  # the hostile title and description rendered as text
    screenshot(page, "spawn-form.png")

    page.check('input[name="course"][value="dl"]')
    page.select_option('select[name="gpus:dl"]', "1")
    page.click('form#spawn_form [type="submit"]')
    page.wait_for_url("**/user/stu/lab**", timeout=90_000)
    page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
    screenshot(page, "jupyterlab-after-spawn.png")

    [container] = labelled("stu")
    labels = container["Config"]["Labels"]
    assert labels["org.jupyter.gpuspawn.course"] == "dl"
    assert len(labels["org.jupyter.gpuspawn.gpus"].split(",")) == 1
    busy_gpu = labelled("busy")[0]["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"]
    assert labels["org.jupyter.gpuspawn.gpus"] != busy_gpu


def test_form_errors_are_shown_as_messages_not_tracebacks(make_hub, page, tmp_path):
    hub = hub_with_a_busy_gpu(make_hub, tmp_path, 1, "stu2", "hog")

    login(page, hub, "stu2")
    page.wait_for_selector(".gpuspawn-form", timeout=30_000)
    assert (
        "The only GPU is in use" in page.locator('.gpuspawn-course[data-course="dl"]').inner_text()
    )
    page.check('input[name="course"][value="dl"]')
    page.select_option('select[name="gpus:dl"]', "1")
    page.click('form#spawn_form [type="submit"]')
    page.wait_for_selector("text=The only GPU is in use", timeout=30_000)
    assert "HTTP 409" not in page.content()
    assert "Traceback" not in page.content()
    screenshot(page, "spawn-no-gpu-free.png")
    assert labelled("stu2") == []


def test_a_student_waits_in_line_on_the_spawn_page_and_lands_in_lab(make_hub, page, tmp_path):
    hub = hub_with_a_busy_gpu(
        make_hub,
        tmp_path,
        1,
        "stu3",
        "hog3",
        extra_config="""
c.GPUDockerSpawner.gpu_queue_timeout = 120
c.Spawner.start_timeout = 300
""",
    )
    login(page, hub, "stu3")
    page.wait_for_selector(".gpuspawn-form", timeout=30_000)
    card = page.locator('.gpuspawn-course[data-course="dl"]').inner_text()
    assert "The only GPU is in use" in card and "0 waiting · you would be 1st" in card, card
    assert "Data Science (CPU)" in page.content()  # CPU-only is still on offer
    screenshot(page, "spawn-form-queue.png")
    page.check('input[name="course"][value="dl"]')
    page.select_option('select[name="gpus:dl"]', "1")
    page.click('form#spawn_form [type="submit"]')
    page.wait_for_selector("text=you are 1st in line", timeout=30_000)
    screenshot(page, "spawn-pending-in-queue.png")
    hub.stop_server("hog3")  # the GPU frees: the student's page goes on to Lab by itself
    page.wait_for_url("**/user/stu3/lab**", timeout=90_000)
    page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
    [container] = labelled("stu3")
    assert container["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"] == hub.gpus[0]["uuid"]


def test_a_spawn_link_opens_the_form_preselected_and_starts_nothing(make_hub, page, tmp_path):
    # anyone can post a link: opening it must not start a GPU server (and spend GPU hours) unasked
    hub = hub_with_a_busy_gpu(make_hub, tmp_path, 4, "clicker", "poster")
    login(page, hub, "clicker")
    page.wait_for_selector(".gpuspawn-form", timeout=30_000)
    response = page.goto(f"{hub.url}/hub/spawn?opt-course=dl&opt-gpus=2")
    assert response.status == 200
    page.wait_for_selector(".gpuspawn-form", timeout=30_000)
    assert "This link asks to start a server for you" in page.content()
    assert page.locator('input[name="course"][value="dl"]').is_checked()
    assert page.locator('select[name="gpus:dl"]').input_value() == "2"
    screenshot(page, "spawn-link-form.png")
    r = hub.session.get(f"{hub.api}/users/clicker")
    assert r.json()["servers"] == {} and labelled("clicker") == []
    # a link with a GPU count nobody typed: the form, with the course's default count
    page.goto(f"{hub.url}/hub/spawn?opt-course=dl&opt-gpus=%C2%B2")
    assert "This link asks to start a server for you" in page.content()
    assert "Traceback" not in page.content() and labelled("clicker") == []
    # pressing Start is the student's own choice
    page.click('form#spawn_form [type="submit"]')
    page.wait_for_url("**/user/clicker/lab**", timeout=90_000)
    [container] = labelled("clicker")
    assert len(container["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"].split(",")) == 1


def test_an_admin_may_let_links_start_servers(make_hub, page, tmp_path):
    hub = hub_with_a_busy_gpu(
        make_hub, tmp_path, 4, "linked", "poster2", "c.GPUDockerSpawner.spawn_from_link = True\n"
    )
    login(page, hub, "linked")
    page.wait_for_selector(".gpuspawn-form", timeout=30_000)
    page.goto(f"{hub.url}/hub/spawn?opt-course=dl&opt-gpus=2")
    page.wait_for_url("**/user/linked/lab**", timeout=90_000)
    [container] = labelled("linked")
    assert len(container["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"].split(",")) == 2
