"""The instructors' course desk on real files and a real SQLite history: who may change what, and
how."""

from __future__ import annotations

import pytest

from jupyter_gpuspawn.admin.desk import CourseDesk, Refused, Who
from jupyter_gpuspawn.course_limits import InstructorLimits

DL = """\
# kept
id: dl
title: Deep Learning
instructors: [prof]
instructor_groups: [dl-staff]
groups: [course-dl]
images: [{key: base, image: "img:1"}]
gpus: {default: 0, max: 1}
"""
PROF, TA, OTHER, BOSS = Who("prof"), Who("ta", ("dl-staff",)), Who("prof2"), Who("boss", (), True)


@pytest.fixture
def desk(tmp_path):
    courses = tmp_path / "courses"
    courses.mkdir()
    (courses / "dl.yaml").write_text(DL)
    (courses / "vision.yaml").write_text(
        DL.replace("id: dl", "id: vision")
        .replace("[prof]", "[prof2]")
        .replace("[dl-staff]", "[]")
        .replace("course-dl", "course-vision")
    )
    limits = InstructorLimits.from_config({"max_gpus": 2, "images": ["img:1"]})
    return CourseDesk(str(courses), [str(tmp_path)], limits, f"sqlite:///{tmp_path}/usage.sqlite")


def test_instructors_reach_only_their_courses_admins_all(desk):
    assert [e.id for e in desk.mine(PROF)] == ["dl"] and [e.id for e in desk.mine(TA)] == ["dl"]
    assert [e.id for e in desk.mine(OTHER)] == ["vision"] and len(desk.mine(BOSS)) == 2
    with pytest.raises(Refused) as e:
        desk.entry("dl", OTHER)
    assert e.value.status == 403
    with pytest.raises(Refused) as e:  # the same answer as for someone else's course: nothing leaks
        desk.entry("nope", PROF)
    assert e.value.status == 403 and "You do not manage a course 'nope'" in e.value.problems[0]
    with pytest.raises(Refused) as e:
        desk.entry("nope", BOSS)
    assert e.value.status == 404


def test_an_edit_is_checked_saved_with_comments_and_recorded(desk):
    entry = desk.entry("dl", PROF)
    new = dict(entry.data, gpus={"default": 0, "max": 2})
    _, changes = desk.save("dl", PROF, new, entry.stored.revision)
    assert changes == ["gpus.max: 1 → 2"]
    assert desk.entry("dl", PROF).stored.text.startswith("# kept\n")
    [change] = desk.history("dl")
    assert (change["user"], change["action"], change["summary"]) == (
        "prof",
        "edited",
        ["gpus.max: 1 → 2"],
    )
    # the same revision again: someone else changed it meanwhile, and the message names them
    with pytest.raises(Refused) as e:
        desk.save("dl", TA, dict(new, title="Other"), entry.stored.revision)
    assert e.value.status == 409 and "Changed by prof at" in e.value.problems[0]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"id": "renamed"}, "a course keeps its id"),
        ({"gpus": {"max": 3}}, "gpus.max: 3 is more than instructors may set (2)"),
        ({"groups": ["everyone"]}, "groups: set by an admin"),
        ({"instructors": ["prof", "stu"]}, "instructors: set by an admin"),
        ({"env": {"NVIDIA_VISIBLE_DEVICES": "all"}}, "env.NVIDIA_VISIBLE_DEVICES: reserved"),
        # a .so beside it in the read-only data mount would run as every student once ssl loads
        (
            {"env": {"OPENSSL_CONF": "/data/dl/course.cnf"}},
            "env.OPENSSL_CONF: instructors may not set it (TLS libraries load modules",
        ),
        ({"env": {"https_proxy": "http://tap:3128"}}, "env.https_proxy: instructors may not set"),
        ({"images": [{"key": "x", "image": "evil:1"}]}, "evil:1"),
    ],
)
def test_refused_edits_change_nothing_and_say_what_to_fix(desk, change, message):
    entry = desk.entry("dl", PROF)
    with pytest.raises(Refused) as e:
        desk.save("dl", PROF, dict(entry.data, **change), entry.stored.revision)
    assert e.value.status == 400 and any(message in p for p in e.value.problems), e.value.problems
    assert desk.entry("dl", PROF).stored.text == DL and desk.history("dl") == []


def test_admins_are_not_capped_and_may_set_who_uses_a_course(desk):
    entry = desk.entry("dl", BOSS)
    desk.save(
        "dl",
        BOSS,
        dict(
            entry.data,
            gpus={"max": 8},
            groups=["course-dl", "tas"],
            env={"OPENSSL_CONF": "/etc/ssl/site.cnf", "HTTPS_PROXY": "http://proxy:3128"},
        ),
        entry.stored.revision,
    )
    assert desk.entry("dl", BOSS).course.gpu_max == 8
    # an instructor may keep what the admin set (editing the title), not change it
    entry = desk.entry("dl", PROF)
    desk.save("dl", PROF, dict(entry.data, title="Renamed"), entry.stored.revision)
    entry = desk.entry("dl", PROF)
    assert dict(entry.course.env)["OPENSSL_CONF"] == "/etc/ssl/site.cnf"
    with pytest.raises(Refused, match="env.OPENSSL_CONF: instructors may not set it"):
        desk.save(
            "dl",
            PROF,
            dict(entry.data, env={"OPENSSL_CONF": "/data/dl/course.cnf"}),
            entry.stored.revision,
        )


def test_create_from_the_template_or_a_copy_of_ones_own_course(desk):
    created = desk.create(PROF, "ml101", "ML 101")
    assert created.course.instructors == ("prof",) and created.course.groups == ("course-ml101",)
    copy = desk.create(TA, "dl2", "DL again", template_id="dl")
    assert copy.course.groups == ("course-dl2",) and "ta" in copy.course.instructors
    for who, args, message in (
        (PROF, ("dl", "Dup"), "exists already"),
        (PROF, ("Bad Id", "x"), "lower-case"),
        (PROF, ("x2", "X", "vision"), "You do not manage"),
    ):
        with pytest.raises(Refused) as e:
            desk.create(who, *args)
        assert message in " ".join(e.value.problems)
    assert [h["action"] for h in desk.history("ml101")] == ["created"]


def test_archiving_hides_and_restoring_shows_again(desk):
    entry = desk.set_archived("dl", PROF, True, desk.entry("dl", PROF).stored.revision)
    assert entry.archived and not entry.course.visible_to("stu", ["course-dl"])
    entry = desk.set_archived("dl", PROF, False, entry.stored.revision)
    assert not entry.archived and entry.course.visible_to("stu", ["course-dl"])
    assert [h["action"] for h in desk.history("dl")] == ["restored", "archived"]


def test_enrolment_goes_only_into_a_group_no_other_course_uses(desk, tmp_path):
    assert desk.enrolment_group(desk.entry("dl", PROF)) == "course-dl"
    (tmp_path / "courses" / "borrow.yaml").write_text(
        DL.replace("id: dl", "id: borrow").replace("course-dl", "course-vision")
    )
    with pytest.raises(Refused, match="also used by the course 'vision'"):
        desk.enrolment_group(desk.entry("borrow", PROF))
    (tmp_path / "courses" / "open.yaml").write_text(
        DL.replace("id: dl", "id: open").replace("groups: [course-dl]\n", "")
    )
    with pytest.raises(Refused, match="open to everyone"):
        desk.enrolment_group(desk.entry("open", PROF))


def test_only_admins_instructors_and_creator_groups_may_create(desk):
    desk.creator_groups = frozenset({"teachers"})
    newcomer, student = Who("newbie", ("teachers",)), Who("stu", ("course-dl",))
    assert (
        desk.may_create(newcomer, [])
        and desk.may_create(PROF, desk.mine(PROF))
        and desk.may_create(BOSS, [])
    )
    assert not desk.may_create(student, desk.mine(student))
    with pytest.raises(Refused) as e:
        desk.create(student, "mine", "Mine")
    assert e.value.status == 403
    assert desk.create(newcomer, "first", "First").course.instructors == ("newbie",)
    assert [e.id for e in desk.mine(newcomer)] == ["first"]


def test_what_an_admin_set_past_the_caps_may_stay_nothing_new_may_come(desk):
    entry = desk.entry("dl", BOSS)
    desk.save("dl", BOSS, dict(entry.data, gpus={"max": 8}), entry.stored.revision)
    entry = desk.entry("dl", PROF)
    desk.save("dl", PROF, dict(entry.data, title="Renamed"), entry.stored.revision)  # the 8 stays
    entry = desk.entry("dl", PROF)
    with pytest.raises(Refused, match="gpus.max: 9 is more than instructors may set"):
        desk.save("dl", PROF, dict(entry.data, gpus={"max": 9}), entry.stored.revision)


def test_a_json_course_file_stays_json(desk, tmp_path):
    import json

    (tmp_path / "courses" / "nb.json").write_text(
        json.dumps(
            {
                "id": "nb",
                "title": "Notebooks",
                "instructors": ["prof"],
                "images": [{"key": "a", "image": "img:1"}],
            }
        )
    )
    entry = desk.entry("nb", PROF)
    desk.save("nb", PROF, dict(entry.data, title="Notebooks 2"), entry.stored.revision)
    assert json.loads((tmp_path / "courses" / "nb.json").read_text())["title"] == "Notebooks 2"
    assert desk.entry("nb", PROF).course.title == "Notebooks 2"


def test_an_admin_s_value_past_the_caps_stays_only_exactly_as_it_is(desk, tmp_path):
    private = tmp_path / "private" / ("p" * 90)
    (private / "exam").mkdir(parents=True)
    entry = desk.entry("dl", BOSS)
    admin_mount = {"source": str(private), "target": "/data/p"}
    desk.save(
        "dl",
        BOSS,
        dict(
            entry.data,
            mounts=[admin_mount],
            env={"PYTHONUSERBASE": "/data/p"},
            images=entry.data["images"] + [{"key": "b", "image": "img:admin-only"}],
        ),
        entry.stored.revision,
    )
    entry = desk.entry("dl", PROF)
    # all of it kept: fine
    desk.save("dl", PROF, dict(entry.data, title="Kept"), entry.stored.revision)
    entry = desk.entry("dl", PROF)
    for change in (
        {"mounts": [dict(admin_mount, read_only=False)]},
        {"mounts": [dict(admin_mount, target="/data/q")]},
        # same long prefix
        {"mounts": [{"source": str(private / "exam"), "target": "/data/p"}]},
        {"env": {"PYTHONUSERBASE": "/data/other"}},
        {"images": entry.data["images"][:1] + [{"key": "b", "image": "img:admin-only2"}]},
    ):
        with pytest.raises(Refused):
            desk.save("dl", PROF, dict(entry.data, **change), entry.stored.revision)


def test_leaving_a_capped_field_out_gets_the_hub_default_which_must_fit_the_cap(desk):
    desk.limits = InstructorLimits.from_config({"max_mem_limit": "2G", "images": ["img:1"]})
    entry = desk.entry("dl", BOSS)
    desk.save("dl", BOSS, dict(entry.data, resources={"mem_limit": "1G"}), entry.stored.revision)
    entry = desk.entry("dl", PROF)
    # the hub sets no memory limit
    with pytest.raises(Refused, match="leaving it out lifts the limit"):
        desk.save(
            "dl",
            PROF,
            {k: v for k, v in entry.data.items() if k != "resources"},
            entry.stored.revision,
        )
    desk.defaults = {"resources.mem_limit": "8G"}
    with pytest.raises(Refused, match="resources.mem_limit: 8G is more than instructors may set"):
        desk.save(
            "dl",
            PROF,
            {k: v for k, v in entry.data.items() if k != "resources"},
            entry.stored.revision,
        )
    desk.defaults = {"resources.mem_limit": "2G"}
    desk.save(
        "dl", PROF, {k: v for k, v in entry.data.items() if k != "resources"}, entry.stored.revision
    )


def test_no_enrolment_into_a_group_that_makes_instructors_or_a_reordered_one(desk, tmp_path):
    entry = desk.entry("dl", BOSS)
    desk.save("dl", BOSS, dict(entry.data, groups=["course-dl", "dl-staff"]), entry.stored.revision)
    entry = desk.entry("dl", PROF)
    # the first group is the enrolment group
    with pytest.raises(Refused, match="groups: set by an admin"):
        desk.save(
            "dl", PROF, dict(entry.data, groups=["dl-staff", "course-dl"]), entry.stored.revision
        )
    entry = desk.entry("dl", BOSS)
    desk.save("dl", BOSS, dict(entry.data, groups=["dl-staff"]), entry.stored.revision)
    with pytest.raises(Refused, match="makes its members instructors"):
        desk.enrolment_group(desk.entry("dl", PROF))
    desk.creator_groups = frozenset({"course-vision"})
    with pytest.raises(Refused, match="makes its members instructors"):
        desk.enrolment_group(desk.entry("vision", OTHER))
    desk.creator_groups = frozenset()
    (tmp_path / "courses" / "broken.yaml").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(Refused, match="cannot be read"):
        desk.enrolment_group(desk.entry("vision", OTHER))


def test_a_new_course_cannot_take_an_unreadable_file_s_id_nor_exceed_the_count(desk, tmp_path):
    (tmp_path / "courses" / "ml.yml").write_bytes(b"\xff not utf-8")
    with pytest.raises(Refused, match="exists already"):
        desk.create(PROF, "ml", "ML")
    with pytest.raises(Refused, match="ml.yml cannot be read"):  # nor any other id meanwhile
        desk.create(PROF, "one", "One")
    (tmp_path / "courses" / "ml.yml").unlink()
    desk.limits = InstructorLimits.from_config({"images": ["img:1"], "max_courses": 2})
    desk.create(PROF, "one", "One")
    with pytest.raises(Refused, match="You manage 2 courses already"):
        desk.create(PROF, "two", "Two")
    desk.create(BOSS, "two", "Two")  # admins are not counted


def test_only_changed_files_are_parsed_again_and_callers_cannot_change_the_kept_parse(
    desk, tmp_path, monkeypatch
):
    import jupyter_gpuspawn.admin.desk as desk_module

    parsed = []
    real = desk_module.parse_course
    monkeypatch.setattr(
        desk_module, "parse_course", lambda data, *a: parsed.append(data["id"]) or real(data, *a)
    )
    desk.entries()
    assert sorted(parsed) == ["dl", "vision"]
    first = desk.entry("dl", PROF)
    first.data["title"] = "changed by a caller"
    first.data["instructors"].append("intruder")
    first.problems.append("a caller's note")
    parsed.clear()
    again = desk.entry("dl", PROF)
    assert parsed == []  # nothing changed on disk: nothing parsed
    assert again.title == "Deep Learning" and again.data["instructors"] == ["prof"]
    assert again.problems == [] and not desk.entry("dl", PROF).owned_by(Who("intruder"))
    # an edit made on the host (same size, same second) is seen at once
    (tmp_path / "courses" / "dl.yaml").write_text(DL.replace("Deep Learning", "Deep Lurning"))
    assert desk.entry("dl", PROF).title == "Deep Lurning" and parsed == ["dl"]
    (tmp_path / "courses" / "vision.yaml").unlink()
    assert [e.id for e in desk.entries()] == ["dl"] and list(desk._parsed) == [
        (str(tmp_path / "courses" / "dl.yaml"), desk.entry("dl", PROF).stored.revision)
    ]


@pytest.mark.parametrize(
    "line",
    [
        "title: 101",
        "title: 2024-09-01",
        "title: yes",
        "title: [a]",
        "title: {a: 1}",
        "title: null",
        "instructor_groups: [{a: 1}]",
        "instructor_groups: [[a]]",
        "instructor_groups: 5",
        "instructors: [1]",
        "instructors: [[prof]]",
        "instructors: {prof: 1}",
        "instructors: 5",
        "instructors: ta",  # a string, not a list: "ta" is not one of its instructors
    ],
)
def test_a_hand_edited_file_of_the_wrong_types_is_listed_and_the_others_still_served(
    desk, tmp_path, line
):
    key = line.split(":")[0]
    text = "".join(f"{line}\n" if old.startswith(key + ":") else old for old in DL.splitlines(True))
    (tmp_path / "courses" / "odd.yaml").write_text(
        text.replace("id: dl", "id: odd").replace("course-dl", "course-odd")
    )
    entries = {e.id: e for e in desk.entries()}  # sorting by title did not raise
    assert set(entries) == {"dl", "vision", "odd"}
    odd = entries["odd"]
    assert odd.problems and odd.course is None, odd.problems  # shown as invalid, with what is wrong
    assert isinstance(odd.title, str) and (odd.title == "odd") == (key == "title")
    # whoever the file still names by a string manages it; nobody by a number or a list
    assert ("odd" in [e.id for e in desk.mine(PROF)]) == (key != "instructors")
    assert ("odd" in [e.id for e in desk.mine(TA)]) == (key != "instructor_groups")
    assert [e.id for e in desk.mine(OTHER)] == ["vision"]
    # the TA manages dl and odd through their group, and is named an instructor of neither
    desk.limits = InstructorLimits.from_config({"images": ["img:1"], "max_courses": 1})
    assert "ta" in desk.create(TA, "ml", "ML").course.instructors  # counted without raising
    entry = desk.entry("dl", PROF)
    desk.save("dl", PROF, dict(entry.data, title="Still served"), entry.stored.revision)
    assert desk.enrolment_group(desk.entry("dl", PROF)) == "course-dl"


@pytest.mark.parametrize(
    "broken",
    [
        "id: ml\ntitle: [unclosed\n",  # a YAML syntax error
        "- id: ml\n",  # not a mapping
        "id: [ml]\ntitle: ML\n",  # an id that is not a string
    ],
)
def test_no_course_is_created_while_a_file_whose_id_the_hub_may_serve_cannot_be_read(
    desk, tmp_path, broken
):
    """ml_2024.yaml said `id: ml` and the hub still serves that last good version; an admin's typo
    leaves the desk knowing it only as ml_2024. A new ml.yaml would sort first and take ml over."""
    courses = tmp_path / "courses"
    (courses / "ml_2024.yaml").write_text(broken)
    (courses / "old.yaml").write_text("id: old\n\ttabs: no\n")
    for who in (PROF, BOSS):
        with pytest.raises(Refused) as e:
            desk.create(who, "ml", "ML")
        [problem] = e.value.problems
        assert e.value.status == 400 and problem.startswith(
            "ml_2024.yaml and old.yaml cannot be read, so it is unknown which course id"
        ), problem
    assert not (courses / "ml.yaml").exists() and desk.history("ml") == []
    # enrolment says the same, in its own words (it needs the groups of a file, not its id)
    with pytest.raises(Refused, match="old.yaml cannot be read, so it is unknown whether it uses"):
        desk.enrolment_group(desk.entry("dl", PROF))
    (courses / "ml_2024.yaml").write_text(DL.replace("id: dl", "id: ml").replace("dl", "ml"))
    (courses / "old.yaml").unlink()
    with pytest.raises(Refused, match="exists already"):
        desk.create(PROF, "ml", "ML")
    assert desk.create(PROF, "ml2", "ML 2").course.id == "ml2"


def test_a_yaml_edit_of_comments_or_layout_only_is_saved_and_recorded(desk, tmp_path):
    path = tmp_path / "courses" / "dl.yaml"
    # as the YAML view sends it back untouched: CRLF line ends, the textarea's first newline gone
    path.write_text("\n" + DL)
    entry = desk.entry("dl", PROF)
    typed = DL.replace("\n", "\r\n")
    assert desk.save("dl", PROF, entry.data, entry.stored.revision, typed) == (entry, [])
    assert path.read_text() == "\n" + DL and desk.history("dl") == []
    # a comment changed, one added, a blank line: no value changed, and still an edit
    typed = DL.replace("# kept", "# kept: ask Ana first").replace("gpus:", "\n# GPUs\ngpus:")
    saved, changes = desk.save("dl", PROF, entry.data, entry.stored.revision, typed)
    assert changes == ["comments or layout only"] and path.read_text() == typed
    assert saved.stored.text == typed and saved.data == entry.data
    [change] = desk.history("dl")
    assert (change["user"], change["action"], change["summary"]) == (
        "prof",
        "edited",
        ["comments or layout only"],
    )
    assert change["revision"] == saved.stored.revision
    # made on the old version: refused like any other edit, nothing written
    with pytest.raises(Refused) as e:
        desk.save("dl", TA, entry.data, entry.stored.revision, typed + "# more\n")
    assert e.value.status == 409 and path.read_text() == typed
    # the form (no text) with nothing changed still writes nothing
    assert desk.save("dl", PROF, saved.data, saved.stored.revision) == (saved, [])
