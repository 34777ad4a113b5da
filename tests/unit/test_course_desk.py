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
        dict(entry.data, gpus={"max": 8}, groups=["course-dl", "tas"]),
        entry.stored.revision,
    )
    assert desk.entry("dl", BOSS).course.gpu_max == 8


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
