"""An instructor runs a course from the browser (issue 13's walk-through), with a student in another
browser: create from the template, enrol by a pasted list, the student's form follows each edit
within seconds and the server starts with the course's limits, an over-cap edit is refused, other
people are kept out, the history shows the edits. Screenshots: test-artifacts/course-*.png."""

from __future__ import annotations

import os

import pytest

from ..integration.conftest import labelled
from ..integration.hub import TEST_IMAGE, free_port, wait_until
from .conftest import login, screenshot

pytestmark = pytest.mark.integration

CONFIG = """
from jupyter_gpuspawn.admin import admin_service, instructor_access_role
_service, _role = admin_service(__file__, port={port})
c.JupyterHub.services += [_service]
c.JupyterHub.load_roles += [_role, instructor_access_role()]
c.JupyterHub.load_groups = {{"teachers": {{"users": []}}}}
c.GPUDockerSpawner.courses_dir = {courses!r}
c.GPUDockerSpawner.instructor_limits = {{
    "max_gpus": 2, "max_mem_limit": "2G", "images": [{image!r}]
}}
c.GPUDockerSpawner.course_creator_groups = ["teachers"]
"""


def form_gpu_choices(page, course_id):
    return page.locator(f'select[name="gpus:{course_id}"] option').evaluate_all(
        "els => els.map(e => e.value)"
    )


def test_an_instructor_creates_enrols_edits_and_students_follow(make_hub, browser, tmp_path):
    courses = tmp_path / "courses"
    courses.mkdir()
    os.chmod(tmp_path, 0o755)
    hub = make_hub(
        n_gpus=2,
        extra_config=CONFIG.format(port=free_port(), courses=str(courses), image=TEST_IMAGE),
    )
    hub.create_users("prof", "prof2", "ana", "ben")
    r = hub.session.post(f"{hub.api}/groups/teachers/users", json={"users": ["prof", "prof2"]})
    assert r.status_code == 200, r.text
    base = f"{hub.url}/services/gpu-admin/"

    prof = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    ana = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()

    # the instructor opens the service and lands on their (empty) course list; creates a course
    login(prof, hub, "prof")
    prof.goto(base)
    prof.wait_for_url("**/courses/")
    prof.fill('#new-course input[name="id"]', "ml101")
    prof.fill('#new-course input[name="title"]', "Machine Learning 101")
    prof.click("#new-course button")
    prof.wait_for_url("**/courses/ml101/**")
    assert "Created ml101" in prof.locator(".note.ok").inner_text()

    # enrol two students by a pasted list
    prof.fill("#enrol textarea", "ana,\nben")
    prof.click("#enrol button")
    prof.locator(".note.ok").wait_for()
    assert "Enrolled 2: ana, ben" in prof.locator(".note.ok").inner_text()
    assert prof.locator("#members tr[data-member]").count() == 2

    # edit 1: two GPUs at most, one by default, 1 GiB of memory
    prof.fill('input[name="gpus_max"]', "2")
    prof.fill('input[name="gpus_default"]', "1")
    prof.fill('input[name="mem_limit"]', "1G")
    prof.click("#save")
    prof.locator(".note.ok").wait_for()
    assert "gpus.max: 1 → 2" in prof.locator(".note.ok").inner_text()
    # the preview follows
    assert form_gpu_choices(prof.locator("#preview"), "ml101") == ["0", "1", "2"]
    screenshot(prof, "course-edit.png")

    # the student sees it in the spawn form and starts it with the course's limits
    login(ana, hub, "ana")
    ana.wait_for_selector('.gpuspawn-course[data-course="ml101"]', timeout=30_000)
    assert (
        ana.locator('.gpuspawn-course[data-course="ml101"] .gpuspawn-title').inner_text()
        == "Machine Learning 101"
    )
    assert form_gpu_choices(ana, "ml101") == ["0", "1", "2"]
    screenshot(ana, "course-student-form.png")
    ana.check('input[name="course"][value="ml101"]')
    ana.select_option('select[name="gpus:ml101"]', "1")
    ana.click('form#spawn_form [type="submit"]')
    ana.wait_for_url("**/user/ana/**", timeout=120_000)
    hub.wait_ready("ana")
    [container] = labelled("ana")
    assert container["Config"]["Labels"]["org.jupyter.gpuspawn.course"] == "ml101"
    assert container["HostConfig"]["Memory"] == 2**30
    assert len(container["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"].split(",")) == 1

    # the instructor sees her running, and lowers the GPU max: the form follows
    prof.goto(base + "courses/ml101/")
    assert prof.locator('#students tr[data-server="ana"]').count() == 1
    prof.fill('input[name="gpus_max"]', "1")
    prof.click("#save")
    prof.locator(".note.ok").wait_for()

    def form_follows():
        ana.goto(f"{hub.url}/hub/spawn/ana/second")
        return form_gpu_choices(ana, "ml101") == ["0", "1"]

    wait_until(form_follows, 15, "the spawn form still offers 2 GPUs")

    # an over-cap edit is refused with the cap, and nothing changes
    prof.goto(base + "courses/ml101/")
    before = (courses / "ml101.yaml").read_text()
    prof.fill('input[name="gpus_max"]', "3")
    prof.click("#save")
    prof.locator("#problems").wait_for()
    assert (
        "gpus.max: 3 is more than instructors may set (2)" in prof.locator("#problems").inner_text()
    )
    assert (courses / "ml101.yaml").read_text() == before
    screenshot(prof, "course-over-cap.png")

    # the history shows the creation, the enrolment and both edits
    prof.goto(base + "courses/ml101/")
    assert prof.locator('#history tr[data-action="edited"]').count() == 2
    assert prof.locator('#history tr[data-action="enrolled"]').count() == 1
    assert prof.locator('#history tr[data-action="created"]').count() == 1
    screenshot(prof, "course-history.png")

    # another instructor cannot open it; a student is refused
    other = browser.new_context().new_page()
    login(other, hub, "prof2")
    assert other.goto(base + "courses/ml101/").status == 403
    assert "Machine Learning 101" not in other.goto(base + "courses/").text()
    assert ana.goto(base + "courses/").status == 403
    assert ana.goto(base + "courses/ml101/").status == 403
