"""Security regressions for the advisory classes the anchor projects suffered (pure parts; see also
integration)."""

from __future__ import annotations

import pytest

from jupyter_gpuspawn import homes
from jupyter_gpuspawn.allocation import GPUAllocator
from jupyter_gpuspawn.courses import Course, CourseError, CourseImage, parse_course
from jupyter_gpuspawn.form import render_form, template_environment
from jupyter_gpuspawn.gpus import GPU, InventoryError, Snapshot, parse_simulated
from jupyter_gpuspawn.options import OptionsError, validate_options

BASE = {"id": "dl", "title": "x", "images": [{"key": "k", "image": "local/x:1"}]}


@pytest.mark.parametrize(
    "change",
    [
        {"id": "dl\n"},
        {"id": "dl\nother"},
        {"images": [{"key": "k\n", "image": "local/x:1"}]},
        {"images": [{"key": "k", "image": "local/x:1\n"}]},
        {"env": {"FOO\n": "1"}},
        {"resources": {"mem_limit": "1G\n"}},
    ],
)
def test_regex_validation_uses_full_matches_in_course_files(change):
    with pytest.raises(CourseError):
        parse_course(dict(BASE, **change), "x.yaml")


def test_regex_validation_uses_full_matches_elsewhere(tmp_path):
    anything = Course.implicit(
        default_image="d",
        allowed_images="*",
        default_gpus=0,
        max_gpus=0,
        policy="exclusive",
        max_users_per_gpu=1,
    )
    with pytest.raises(OptionsError):
        validate_options({"image": "alpine\n"}, visible=[anything], known_ids=[""], max_gpus=0)
    with pytest.raises(homes.HomeError):
        homes.host_home_path(str(tmp_path) + "/{username}", "alice\n")
    with pytest.raises(InventoryError):
        parse_simulated([{"uuid": "GPU-abc\n", "memory_total": 1}], "test")


@pytest.mark.parametrize("name", ["..", "../x", "a/../../etc", "/etc", "user1/../user10"])
def test_home_path_traversal(tmp_path, name):
    with pytest.raises(homes.HomeError):
        homes.host_home_path(str(tmp_path / "home") + "/{username}", name)


def test_home_sibling_prefix(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home-other").mkdir()
    (tmp_path / "home" / "x").symlink_to(tmp_path / "home-other")
    path = homes.host_home_path(str(tmp_path / "home") + "/{username}", "x")
    with pytest.raises(homes.HomeError, match="symlink"):  # never followed to home-other
        homes.ensure_home(path, homes.Identity(4242, 4242, "range"), str(tmp_path / "home"))


SCRIPT = '"><script>alert({})</script>'


def render_hostile(courses, previous):
    return render_form(
        template_environment([]),
        courses=courses,
        previous=previous,
        snapshot=Snapshot("simulated", (GPU("GPU-1", 0, "<i>gpu</i>", 1),)),
        allocator=GPUAllocator(),
    )


def test_xss_through_course_titles_and_gpu_names():
    course = Course(
        id="c",
        title="<script>alert('title')</script>",
        description="<img src=x onerror=alert(1)>",
        images=(CourseImage("k", "local/x:1", "<b>label</b>"), CourseImage("k2", "local/y:1")),
    )
    html = render_hostile([course], {})
    assert "<script>alert" not in html and "<img src=x" not in html and "<b>label</b>" not in html
    assert "<i>gpu</i>" not in html
    assert (
        "&lt;script&gt;alert(&#39;title&#39;)&lt;/script&gt;" in html
        and "&lt;b&gt;label&lt;/b&gt;" in html
    )
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "&lt;i&gt;gpu&lt;/i&gt;" in html


def test_xss_through_saved_user_options_that_are_rendered():
    """Saved user_options are rendered back as the preselected course and image. Values that match a
    course (one loaded before ids were checked, or built by a site's own code) reach the HTML: they
    must come out escaped."""
    hostile_course, hostile_image = SCRIPT.format(2), SCRIPT.format(3)
    course = Course(
        id=hostile_course,
        title="t",
        images=(CourseImage("plain", "local/x:1"), CourseImage(hostile_image, "local/y:1")),
    )
    other = Course(id="other", title="o", images=(CourseImage("k", "local/z:1"),))
    html = render_hostile(
        [other, course], {"course": hostile_course, "image": hostile_image, "gpus": 0}
    )
    escaped_course = "&#34;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"
    escaped_image = "&#34;&gt;&lt;script&gt;alert(3)&lt;/script&gt;"
    assert f'<input type="radio" name="course" value="{escaped_course}" checked required>' in html
    assert f'<option value="{escaped_image}" selected>{escaped_image}</option>' in html
    assert f'name="image:{escaped_course}"' in html and f'name="gpus:{escaped_course}"' in html
    assert "<script>alert(2)" not in html and "<script>alert(3)" not in html


def test_saved_user_options_that_match_nothing_are_not_rendered():
    course = Course(
        id="c", title="t", images=(CourseImage("k", "local/x:1"), CourseImage("k2", "local/y:1"))
    )
    hostile = {"course": SCRIPT.format(2), "image": SCRIPT.format(3), "gpus": SCRIPT.format(4)}
    html = render_hostile([course], hostile)
    # the default course instead
    assert '<input type="radio" name="course" value="c" checked required>' in html
    assert '<option value="k" selected>k</option>' in html and '<option value="0" selected>' in html
    assert "alert(" not in html


def test_saved_user_options_that_are_not_an_object_preselect_nothing():
    # JupyterHub 5 saves a spawn request's JSON body as the server's options, whatever it is, and
    # hands it back to the form
    course = Course(id="c", title="t", images=(CourseImage("k", "local/x:1"),))
    for saved in ([1, 2], "gpus=1", 7, None):
        html = render_hostile([course], saved)
        assert '<input type="radio" name="course" value="c" checked required>' in html


def test_GHSA_v7m9_9497_p9gr_oauth_client_ids_never_collide():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from jupyter_gpuspawn.spec import oauth_client_id

    assert oauth_client_id("a-b", "") != oauth_client_id("a", "b")
    assert oauth_client_id("a", "b-c") != oauth_client_id("a-b", "c")
    # default servers keep the hub's id
    assert oauth_client_id("alice", "") == "jupyterhub-user-alice"

    names = st.text(min_size=1, max_size=12)

    @settings(max_examples=300, deadline=None)
    @given(u1=names, s1=names | st.just(""), u2=names, s2=names | st.just(""))
    def distinct(u1, s1, u2, s2):
        if (u1, s1) != (u2, s2):
            assert oauth_client_id(u1, s1) != oauth_client_id(u2, s2)

    distinct()


def test_hub_address_waits_for_docker_then_gives_up(monkeypatch, capsys):
    import docker

    from jupyter_gpuspawn import network

    calls = []

    def no_docker(*args, **kwargs):
        calls.append(1)
        raise docker.errors.DockerException("Error while fetching server API version")

    monkeypatch.setattr(docker, "APIClient", no_docker)
    with pytest.raises(docker.errors.DockerException):
        network.hub_address(wait_for_docker=2.5)
    assert len(calls) >= 2  # tried again while waiting, not just once
    assert capsys.readouterr().err.count("Docker does not answer") == 1
