"""The instructors' course pages through a real hub, its OAuth and its REST API, as an attacker
would try them: students, other instructors, edits past the admin's caps, forged forms, two editors
at once, enrolment into groups that are not the course's, stopping servers of other courses. Plain
HTTP (the browser tier walks the happy path)."""

from __future__ import annotations

import os
import re

import pytest
import requests

from .hub import TEST_IMAGE, free_port, wait_until

pytestmark = pytest.mark.integration

SERVICE = """
from jupyter_gpuspawn.admin import admin_service, instructor_access_role
_service, _role = admin_service(__file__, port={port})
c.JupyterHub.services += [_service]
c.JupyterHub.load_roles += [_role, instructor_access_role()]
c.JupyterHub.load_groups = {{"tas": {{"users": []}}}}
c.JupyterHub.load_roles += [{{"name": "ta-powers", "groups": ["tas"], "scopes": ["read:users"]}}]
c.Authenticator.admin_users = {{"boss"}}
c.GPUDockerSpawner.courses_dir = {courses!r}
c.GPUDockerSpawner.course_data_roots = [{data_root!r}]
c.GPUDockerSpawner.instructor_limits = {{
    "max_gpus": 1, "max_mem_limit": "2G", "max_weekly_hours": 10, "images": [{image!r}],
    "data_roots": [{instructor_root!r}],
}}
"""

DL = f"""\
# Deep learning: the instructors keep this comment
id: dl
title: Deep Learning
instructors: [prof]
groups: [course-dl]
images:
  - {{key: base, image: "{TEST_IMAGE}", label: Base}}   # the lab image
gpus: {{default: 0, max: 1}}
"""
VISION = f"""\
id: vision
title: Vision
instructors: [prof2]
groups: [vision-students]
images: [{{key: base, image: "{TEST_IMAGE}"}}]
"""
# prof's other courses: one borrowing the vision group, one whose group carries hub roles
BORROWED = (
    VISION.replace("id: vision", "id: borrowed")
    .replace("prof2", "prof")
    .replace("Vision", "Borrowed")
)
TA_ROOM = (
    VISION.replace("id: vision", "id: ta-room")
    .replace("prof2", "prof")
    .replace("vision-students", "tas")
)


class Client(requests.Session):
    """A user's browser without JavaScript: logged in through the hub's form, through the service's
    OAuth."""

    def __init__(self, hub, user):
        super().__init__()
        self.hub = hub
        self.base = f"{hub.url}/services/gpu-admin/"
        self.get(f"{hub.url}/hub/login", timeout=30)
        r = self.post(
            f"{hub.url}/hub/login",
            timeout=30,
            data={"username": user, "password": "pw", "_xsrf": self.cookies.get("_xsrf", "")},
        )
        assert r.status_code == 200, r.text[:300]

    def page(self, path="courses/", status=200) -> str:
        r = self.get(self.base + path, timeout=60)
        assert r.status_code == status, (path, r.status_code, r.text[:1500])
        return r.text

    def xsrf(self) -> str:
        """The token a page's forms carry; for someone every page refuses, the one the service set
        as a cookie (what a forged form would have to guess)."""
        r = self.get(self.base + "courses/", timeout=60)
        found = re.search(r'name="_xsrf" value="([^"]+)"', r.text)
        if found:
            return found.group(1)
        return next(
            c.value for c in self.cookies if c.name == "_xsrf" and c.path.startswith("/services/")
        )

    def submit(self, path, data, status=None, xsrf=True) -> requests.Response:
        data = dict(data, **({"_xsrf": self.xsrf()} if xsrf else {}))
        r = self.post(self.base + path, data=data, timeout=60)
        if status is not None:
            assert r.status_code == status, (path, r.status_code, r.text[:2000])
        return r


def revision(html: str) -> str:
    return re.search(r'name="revision" value="([0-9a-f]{64})"', html).group(1)


def form_of(html: str) -> dict:
    """The course form's fields as the page filled them (what a browser would send back
    unchanged)."""
    form = re.search(
        r'<form method="post" action="[^"]*" id="course-form">(.*?)</form>', html, re.S
    ).group(1)
    data = {}
    for name, value in re.findall(
        r'<input type="(?:text|number|hidden)"[^>]* name="([^"]+)" value="([^"]*)"', form
    ):
        data.setdefault(name, []).append(_unescape(value))
    for name, value in re.findall(r'<textarea name="([^"]+)"[^>]*>(.*?)</textarea>', form, re.S):
        data[name] = [_unescape(value)]
    for name, options in re.findall(r'<select name="([^"]+)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.findall(r'<option value="([^"]*)" selected', options)
        data.setdefault(name, []).append(_unescape(chosen[0]) if chosen else "")
    data.pop("_xsrf", None)
    return data


def members(hub, group) -> list:
    r = hub.session.get(f"{hub.api}/groups/{group}")
    return [] if r.status_code == 404 else r.json()["users"]


def _unescape(text):
    import html

    return html.unescape(text)


@pytest.fixture
def course_hub(make_hub, tmp_path):
    courses = tmp_path / "courses"
    data_root = tmp_path / "datasets"
    instructor_root = data_root / "open"
    (instructor_root / "mnist").mkdir(parents=True)
    (data_root / "exam").mkdir()
    courses.mkdir()
    os.chmod(tmp_path, 0o755)
    for name, text in (
        ("dl", DL),
        ("vision", VISION),
        ("borrowed", BORROWED),
        ("ta-room", TA_ROOM),
    ):
        (courses / f"{name}.yaml").write_text(text)
    hub = make_hub(
        n_gpus=2,
        extra_config=SERVICE.format(
            port=free_port(),
            courses=str(courses),
            data_root=str(data_root),
            image=TEST_IMAGE,
            instructor_root=str(instructor_root),
        ),
    )
    hub.create_users("boss", "prof", "prof2", "ana", "ben", "stu")
    hub.courses = courses
    hub.data_root = data_root
    return hub


def test_students_and_other_instructors_are_refused_and_change_nothing(course_hub):
    hub = course_hub
    before = {p.name: p.read_text() for p in hub.courses.iterdir()}
    stu = Client(hub, "stu")
    for path in ("courses/", "courses/dl/", "courses/nope/", ""):
        stu.page(path, status=403)
    # every action, with a valid XSRF token of their own session: refused by the pages, not by the
    # token check
    for path, data in (
        ("courses/", {"id": "mine", "title": "Mine"}),
        ("courses/dl/", {"mode": "yaml", "yaml": DL}),
        ("courses/dl/archive", {"archived": "1"}),
        ("courses/dl/enrol", {"names": "stu"}),
        ("courses/dl/stop", {"user": "ana", "server": ""}),
    ):
        r = stu.submit(path, data)
        assert r.status_code == 403 and "for the instructors of a course" in r.text, (
            path,
            r.status_code,
            r.text,
        )

    prof2 = Client(hub, "prof2")
    # only their own courses listed
    assert "Vision" in prof2.page() and "Deep Learning" not in prof2.page()
    prof2.page("courses/dl/", status=403)
    r = prof2.submit(
        "courses/dl/", {"mode": "yaml", "yaml": DL.replace("Deep Learning", "Mine now")}
    )
    assert r.status_code == 403
    r = prof2.submit("courses/dl/enrol", {"names": "prof2"})
    assert r.status_code == 403
    assert {p.name: p.read_text() for p in hub.courses.iterdir()} == before
    assert members(hub, "course-dl") == []

    # a form without the XSRF token is refused by the service itself (prof owns dl)
    prof = Client(hub, "prof")
    r = prof.submit(
        "courses/dl/", {"mode": "yaml", "yaml": DL.replace("Deep Learning", "Forged")}, xsrf=False
    )
    assert r.status_code == 403 and "_xsrf" in r.text
    assert (hub.courses / "dl.yaml").read_text() == DL
    # a crafted link cannot make the page say something: notes are signed by the service
    assert "Call 555" not in prof.page(
        "courses/dl/?done=Call+555+to+keep+your+course&failed=Call+555"
    )


def test_edits_within_the_caps_go_live_keep_comments_and_are_recorded(course_hub):
    hub = course_hub
    prof = Client(hub, "prof")
    html = prof.page("courses/dl/")
    form = form_of(html)
    assert form["title"] == ["Deep Learning"] and form["gpus_max"] == ["1"]

    refusals = {
        "gpus_max": ("3", "gpus.max: 3 is more than instructors may set (1)"),
        "mem_limit": ("8G", "resources.mem_limit"),
        "gpus_weekly_hours": ("50", "gpus.weekly_hours"),
        "mounts": (
            f"{hub.data_root}/exam -> /data/exam",
            "outside the data roots instructors may use",
        ),
        "env": ("JUPYTERHUB_API_TOKEN=stolen", "env.JUPYTERHUB_API_TOKEN: reserved"),
    }
    for field, (value, message) in refusals.items():
        r = prof.submit("courses/dl/", dict(form, **{field: [value]}, mode="form"), status=400)
        assert message in _unescape(r.text), (field, r.text[:3000])
        assert "Not saved" in r.text
    # an image outside the admin's list, and who may use the course, through the YAML view
    for change, message in (
        (DL.replace(f'"{TEST_IMAGE}"', '"evil/miner:latest"'), "evil/miner:latest"),
        (DL.replace("groups: [course-dl]", "groups: [course-dl, tas]"), "groups: set by an admin"),
        (DL.replace("instructors: [prof]", "instructors: [prof, stu]"), "instructors: set by an"),
    ):
        r = prof.submit(
            "courses/dl/", {"mode": "yaml", "yaml": change, "revision": revision(html)}, status=400
        )
        assert message in _unescape(r.text), r.text[:3000]
    assert (hub.courses / "dl.yaml").read_text() == DL

    # an escaped title, a mount under the instructors' root: saved, comments kept, live for the hub
    evil = "<script>alert('x')</script> DL"
    mount = f"{hub.data_root}/open/mnist -> /data/mnist"
    r = prof.submit("courses/dl/", dict(form, title=[evil], mounts=[mount], mode="form"))
    assert r.status_code == 200 and "Saved dl" in r.text, r.text[:3000]
    assert "<script>alert" not in r.text and "&lt;script&gt;alert" in r.text
    text = (hub.courses / "dl.yaml").read_text()
    assert (
        "# Deep learning: the instructors keep this comment" in text and "# the lab image" in text
    )
    assert "/data/mnist" in text
    history = prof.page("courses/dl/")
    assert re.search(r'<tr data-action="edited"><td>[^<]+</td><td>prof</td>', history)
    assert "title:" in _unescape(history) and "mounts: added" in history

    # two editors on the same version: the second save is refused and names the first
    boss = Client(hub, "boss")
    stale = revision(boss.page("courses/dl/"))
    r = prof.submit(
        "courses/dl/", dict(form_of(prof.page("courses/dl/")), description=["by prof"], mode="form")
    )
    assert "Saved dl" in r.text
    r = boss.submit(
        "courses/dl/",
        dict(form_of(history), description=["by boss"], revision=[stale], mode="form"),
        status=409,
    )
    assert re.search(r"Changed by prof at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", r.text), r.text[:3000]
    assert "by prof" in (hub.courses / "dl.yaml").read_text()
    # boss's edit is kept, prof's version is shown beside it, and saving again is boss's choice
    current = re.search(r'<details open id="current-version">.*?</details>', r.text, re.S)
    assert current and "by prof" in current.group(0)
    assert form_of(r.text)["description"] == ["by boss"]
    assert revision(r.text) != stale
    r = boss.submit("courses/dl/", dict(form_of(r.text), mode="form"))
    assert "Saved dl" in r.text and "by boss" in (hub.courses / "dl.yaml").read_text()


def test_enrolment_and_stops_reach_only_the_course_s_own_group_and_servers(course_hub):
    hub = course_hub
    prof = Client(hub, "prof")
    r = prof.submit(
        "courses/dl/enrol", {"names": "ana, ben\nnobody-here", "action": "add"}, status=200
    )
    assert (
        "Enrolled 2: ana, ben" in _unescape(r.text)
        and "no such hub user yet" in _unescape(r.text)
        and "nobody-here" in _unescape(r.text)
    )
    assert sorted(members(hub, "course-dl")) == ["ana", "ben"]
    # the note was signed for prof: the same link shows nothing to anyone else
    link = r.history[0].headers["Location"]
    assert "Enrolled 2" not in _unescape(Client(hub, "boss").get(hub.url + link, timeout=30).text)
    # a new course never takes over a group that exists already
    hub.session.post(f"{hub.api}/groups/course-taken", json={"users": ["stu"]})
    r = prof.submit("courses/", {"id": "taken", "title": "Taken"}, status=400)
    assert "the hub group 'course-taken' exists already" in _unescape(r.text)
    assert not (hub.courses / "taken.yaml").exists()
    r = prof.submit("courses/borrowed/enrol", {"names": "stu", "action": "add"}, status=200)
    assert "also used by the course 'vision'" in _unescape(r.text)
    r = prof.submit("courses/ta-room/enrol", {"names": "stu", "action": "add"}, status=200)
    assert "carries hub roles" in _unescape(r.text)
    assert members(hub, "vision-students") == [] and members(hub, "tas") == []

    # ana starts dl, stu starts vision (an admin opened it to everyone): prof sees and may stop only
    # ana
    (hub.courses / "vision.yaml").write_text(VISION.replace("groups: [vision-students]\n", ""))
    # ana's start names no course (the REST API): she gets her first, and it is named for her
    hub.spawn_ready("ana", {})
    assert hub.server("ana")["user_options"]["course"] == "dl"
    hub.spawn_ready("stu", {"course": "vision"})
    html = prof.page("courses/dl/")
    assert 'data-server="ana"' in html and 'data-server="stu"' not in html
    r = prof.submit("courses/dl/stop", {"user": "stu", "server": ""}, status=200)
    assert "does not run a server of dl" in _unescape(r.text)
    assert hub.server("stu")["ready"]
    r = prof.submit("courses/dl/stop", {"user": "ana", "server": ""}, status=200)
    assert "Stopping ana" in _unescape(r.text)
    wait_until(lambda: hub.server("ana") is None, 60, "ana's server was not stopped")
    r = prof.submit("courses/dl/enrol", {"names": "ben", "action": "remove"}, status=200)
    assert "Unenrolled 1: ben" in _unescape(r.text)
    assert members(hub, "course-dl") == ["ana"]
    history = prof.page("courses/dl/")
    assert 'data-action="enrolled"' in history and 'data-action="unenrolled"' in history
