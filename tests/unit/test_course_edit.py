"""course_edit: the instructors' caps, the course form, and YAML that keeps a file's comments."""

from __future__ import annotations

import copy
import os
import re

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from jupyter_gpuspawn.course_edit import (
    changed_fields,
    data_from_form,
    form_from_data,
    new_course_data,
)
from jupyter_gpuspawn.course_limits import (
    OWNER_FIELDS,
    InstructorLimits,
    check_limits,
    owner_field_changes,
)
from jupyter_gpuspawn.course_yaml import merge_yaml, parse_yaml_text
from jupyter_gpuspawn.courses import COURSE_SCHEMA, ID_PATTERN, CourseError, parse_course
from jupyter_gpuspawn.datafiles import MAX_FILE_BYTES, parse_text
from jupyter_gpuspawn.options import shorten

GiB = 1024**3
NAME = "dl.yaml"

FILE = """\
# Deep learning, spring term. Ask Ana before changing the GPU numbers.
id: dl
title: Deep Learning
description: |
  Labs 1-10.
groups: [dl-students]  # enrolment: admins only
images:
  - {key: pytorch, image: "local/pytorch:24.08", label: PyTorch}  # the NGC build

# GPUs: two for the distributed lab
gpus: {default: 1, max: 2, policy: exclusive}  # see the lab plan
resources: {mem_limit: 32G, cpu_limit: 8}
# the old data set, gone next term
env:
  DATASET: /data/old
# end of file
"""


def read(text):
    return parse_text(text, as_json=False, kind="course files")


def same(a, b):
    """Equal with the same types all the way down (True is not 1, 1 is not 1.0)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=False))
    return type(a) is type(b) and a == b


@pytest.fixture
def roots(tmp_path):
    data = tmp_path / "datasets"
    (data / "imagenet").mkdir(parents=True)
    other = tmp_path / "private"
    other.mkdir()
    (data / "escape").symlink_to(other)  # inside the root by name, outside by realpath
    return str(data), str(other)


def limits(**kw):
    base = dict(
        max_gpus=2,
        max_mem_limit=32 * GiB,
        max_cpu_limit=8,
        max_shm_size=8 * GiB,
        max_weekly_hours=20,
        images=("local/pytorch:24.08", "local/tf:2.16"),
        data_roots=("/srv/datasets",),
    )
    base.update(kw)
    return InstructorLimits(**base)


def course(**kw):
    data = {
        "id": "dl",
        "title": "Deep Learning",
        "images": [{"key": "pytorch", "image": "local/pytorch:24.08"}],
    }
    data.update(kw)
    return data


# ---- InstructorLimits.from_config ----------------------------------------------------------------


def test_from_config_reads_every_key():
    got = InstructorLimits.from_config(
        {
            "max_gpus": 2,
            "max_mem_limit": "32G",
            "max_cpu_limit": 8.5,
            "max_shm_size": 1024,
            "max_weekly_hours": 20,
            "images": {"PyTorch": "local/pytorch:24.08", "TF": "local/tf:2.16"},
            "data_roots": ["/srv/a"],
            "allow_reclaim_never": True,
            "group_prefix": "",
            "max_idle_minutes": 90,
            "allow_read_write_mounts": True,
            "mount_targets": ["/data", "/scratch"],
            "max_courses": 3,
        },
        default_images=("ignored",),
        default_data_roots=("/ignored",),
    )
    assert got == InstructorLimits(
        max_gpus=2,
        max_mem_limit=32 * GiB,
        max_cpu_limit=8.5,
        max_shm_size=1024,
        max_weekly_hours=20,
        images=("local/pytorch:24.08", "local/tf:2.16"),
        data_roots=("/srv/a",),
        allow_reclaim_never=True,
        max_idle_minutes=90,
        allow_read_write_mounts=True,
        mount_targets=("/data", "/scratch"),
        group_prefix="",
        max_courses=3,
    )


def test_from_config_defaults_are_no_caps_and_the_offered_images():
    got = InstructorLimits.from_config(
        {},
        default_images=("a:1", "", "b:2", "a:1", 7, "has space"),
        default_data_roots=("/srv/datasets",),
    )
    assert got == InstructorLimits(images=("a:1", "b:2"), data_roots=("/srv/datasets",))
    assert got.group_prefix == "course-" and not got.allow_reclaim_never and got.max_gpus is None
    assert InstructorLimits.from_config({"max_gpus": None}).max_gpus is None


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("max_gpus", "x", "instructor_limits['max_gpus']: expected a whole number >= 0, got 'x'"),
        ("max_gpus", True, "instructor_limits['max_gpus']: expected a whole number >= 0, got True"),
        ("max_gpus", -1, "instructor_limits['max_gpus']: expected a whole number >= 0, got -1"),
        ("max_gpus", 1.5, "instructor_limits['max_gpus']: expected a whole number >= 0, got 1.5"),
        (
            "max_mem_limit",
            "lots",
            "instructor_limits['max_mem_limit']: expected a size such as 32G",
        ),
        ("max_shm_size", -5, "instructor_limits['max_shm_size']: expected a size such as 32G"),
        ("max_cpu_limit", 0, "instructor_limits['max_cpu_limit']: expected a number > 0, got 0"),
        (
            "max_cpu_limit",
            "8",
            "instructor_limits['max_cpu_limit']: expected a number > 0, got '8'",
        ),
        (
            "max_weekly_hours",
            -1,
            "instructor_limits['max_weekly_hours']: expected a number >= 0, got -1",
        ),
        (
            "max_weekly_hours",
            float("inf"),
            "instructor_limits['max_weekly_hours']: expected a number >= 0",
        ),
        (
            "images",
            "local/pytorch:24.08",
            "instructor_limits['images']: expected a list of image references",
        ),
        ("images", ["ok:1", ""], "instructor_limits['images']: expected image references"),
        ("images", ["two words"], "instructor_limits['images']: expected image references"),
        (
            "data_roots",
            "/srv/datasets",
            "instructor_limits['data_roots']: expected a list of absolute host",
        ),
        (
            "data_roots",
            ["datasets"],
            "instructor_limits['data_roots']: expected absolute host directories",
        ),
        (
            "allow_reclaim_never",
            "yes",
            "instructor_limits['allow_reclaim_never']: expected True or False, got 'yes'",
        ),
        (
            "group_prefix",
            "Course-",
            "instructor_limits['group_prefix']: expected '' or lower-case letters",
        ),
        (
            "group_prefix",
            "-x",
            "instructor_limits['group_prefix']: expected '' or lower-case letters",
        ),
        (
            "group_prefix",
            "x" * 32,
            "instructor_limits['group_prefix']: expected '' or lower-case letters",
        ),
        (
            "group_prefix",
            "c-\n",
            "instructor_limits['group_prefix']: expected '' or lower-case letters",
        ),
        (
            "max_gpu",
            2,
            "instructor_limits: unknown key(s) 'max_gpu'; allowed: allow_read_write_mounts, "
            "allow_reclaim_never",
        ),
    ],
)
def test_from_config_refuses_a_wrong_key_or_value_naming_it(key, value, message):
    with pytest.raises(ValueError) as e:
        InstructorLimits.from_config({key: value})
    assert str(e.value).startswith(message)


def test_from_config_refuses_a_non_mapping():
    with pytest.raises(ValueError, match=r"^instructor_limits: expected a dict"):
        InstructorLimits.from_config(["max_gpus"])


def test_group_prefix_at_its_longest_is_accepted():
    assert InstructorLimits.from_config({"group_prefix": "c" * 31}).group_prefix == "c" * 31


def test_describe_says_each_set_cap():
    assert limits(data_roots=("/srv/a", "/srv/b")).describe() == [
        "At most 2 GPUs per student",
        "Memory at most 32 GiB",
        "CPU at most 8",
        "Shared memory at most 8 GiB",
        "At most 20 GPU-hours per student per week",
        "Images: local/pytorch:24.08, local/tf:2.16",
        "Data mounts under: /srv/a, /srv/b",
        "Mounted under: /data, read-only",
        "idle.reclaim 'never' is not allowed",
        "At most 20 courses per instructor",
    ]
    lines = InstructorLimits(
        max_gpus=1, max_cpu_limit=2.5, images=("a",), allow_reclaim_never=True
    ).describe()
    assert lines == [
        "At most 1 GPU per student",
        "CPU at most 2.5",
        "Images: a",
        "Data mounts: none allowed",
        "At most 20 courses per instructor",
    ]


# ---- check_limits --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "over, at, message",
    [
        (
            {"gpus": {"default": 3}},
            {"gpus": {"default": 2, "max": 2}},
            "dl.yaml: gpus.default: 3 is more than instructors may set (2); ask an admin",
        ),
        (
            {"gpus": {"max": 4}},
            {"gpus": {"max": 2}},
            "dl.yaml: gpus.max: 4 is more than instructors may set (2)",
        ),
        (
            {"resources": {"mem_limit": "33G"}},
            {"resources": {"mem_limit": "32G"}},
            "dl.yaml: resources.mem_limit: 33G is more than instructors may set (32 GiB); ask an "
            "admin",
        ),
        (
            {"resources": {"mem_limit": 32 * GiB + 1}},
            {"resources": {"mem_limit": 32 * GiB}},
            "dl.yaml: resources.mem_limit: 32 GiB is more than instructors may set (32 GiB)",
        ),
        (
            {"resources": {"cpu_limit": 8.5}},
            {"resources": {"cpu_limit": 8}},
            "dl.yaml: resources.cpu_limit: 8.5 is more than instructors may set (8); ask an admin",
        ),
        (
            {"resources": {"shm_size": "9G"}},
            {"resources": {"shm_size": "8GiB"}},
            "dl.yaml: resources.shm_size: 9G is more than instructors may set (8 GiB); ask an "
            "admin",
        ),
        (
            {"gpus": {"weekly_hours": 20.5}},
            {"gpus": {"weekly_hours": 20}},
            "dl.yaml: gpus.weekly_hours: 20.5 is more than instructors may set (20); ask an admin",
        ),
    ],
)
def test_each_cap_refuses_more_and_accepts_the_cap(over, at, message):
    assert check_limits(course(**at), limits(), NAME) == []
    (problem,) = check_limits(course(**over), limits(), NAME)
    assert problem.startswith(message)


def test_both_gpu_numbers_are_capped():
    problems = check_limits(course(gpus={"default": 3, "max": 4}), limits(), NAME)
    assert [p.split(":")[1].strip() for p in problems] == ["gpus.default", "gpus.max"]


def test_fields_a_course_leaves_out_are_not_capped():
    assert check_limits(course(), limits(), NAME) == []
    assert (
        check_limits(
            course(gpus={"max": 64}, resources={"mem_limit": "1T"}),
            InstructorLimits(images=("local/pytorch:24.08",)),
            NAME,
        )
        == []
    )


def test_an_image_outside_the_allowed_list_is_refused_naming_the_allowed_ones():
    data = course(
        images=[{"key": "a", "image": "local/pytorch:24.08"}, {"key": "b", "image": "evil/miner:1"}]
    )
    assert check_limits(data, limits(), NAME) == [
        "dl.yaml: images.1.image: 'evil/miner:1' is not an image instructors may use; use one of "
        "local/pytorch:24.08, local/tf:2.16, or ask an admin"
    ]
    many = limits(images=tuple(f"img{i}:{'x' * 70}" for i in range(12)))
    (problem,) = check_limits(data, many, NAME)[1:]
    assert "and 4 more, or ask an admin" in problem and "x" * 60 not in problem
    (problem,) = check_limits(course(), limits(images=()), NAME)
    assert "no image is open to instructors yet, or ask an admin" in problem


def test_mount_sources_must_lie_inside_a_data_root_by_realpath(roots, monkeypatch):
    root, private = roots
    # a relative source is refused even where it would resolve inside the root
    monkeypatch.chdir(root)
    caps = limits(data_roots=(root,))
    inside = course(
        mounts=[
            {"source": f"{root}/imagenet", "target": "/data/in"},
            {"source": root, "target": "/data/d"},
        ]
    )
    assert check_limits(inside, caps, NAME) == []
    for source in (
        private,
        f"{root}/escape",
        f"{root}-evil",
        f"{root}/../private",
        "imagenet",
        ".",
    ):
        problems = check_limits(course(mounts=[{"source": source, "target": "/data"}]), caps, NAME)
        assert problems == [
            f"dl.yaml: mounts.0.source: {shorten(source, 80)} is outside the data roots "
            f"instructors may use ({root})"
        ], source
    (problem,) = check_limits(inside, limits(data_roots=()), NAME)[:1]
    assert problem.endswith("(none: ask an admin to set some)")


def test_reclaim_never_needs_the_admins_permission():
    data = course(idle={"reclaim": "never"})
    (problem,) = check_limits(data, limits(), NAME)
    assert problem.startswith("dl.yaml: idle.reclaim: 'never' is not allowed for instructors")
    assert "use 'when_queued' or 'always', or ask an admin" in problem
    assert check_limits(data, limits(allow_reclaim_never=True), NAME) == []
    assert check_limits(course(idle={"reclaim": "always"}), limits(), NAME) == []


# ---- owner fields --------------------------------------------------------------------------------


@pytest.mark.parametrize("field", OWNER_FIELDS)
def test_an_owner_field_change_is_refused(field):
    old = course(**{field: ["a", "b"]})
    # order counts too: the first group is the one students are enrolled into
    for new in (
        course(**{field: ["a"]}),
        course(**{field: ["a", "b", "c"]}),
        course(),
        course(**{field: ["b", "a"]}),
    ):
        assert owner_field_changes(old, new, NAME) == [
            f"dl.yaml: {field}: set by an admin (who may use and manage a course); ask an admin to "
            f"change it"
        ]
    # missing and [] are the same
    assert owner_field_changes(course(), course(**{field: []}), NAME) == []


def test_other_changes_are_not_owner_changes():
    assert (
        owner_field_changes(course(), course(title="New", gpus={"max": 1}, archived=True), NAME)
        == []
    )


# ---- parse_yaml_text -----------------------------------------------------------------------------


def test_parse_yaml_text_reads_a_course():
    assert parse_yaml_text(FILE, NAME)["gpus"] == {"default": 1, "max": 2, "policy": "exclusive"}


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "a: &x [1]\nb: *x\n",
            "dl.yaml: YAML anchors/aliases (&, *) are not allowed in course files",
        ),
        (
            "- just\n- a list\n",
            "dl.yaml: expected a mapping of keys (id, title, images, …) at the top level",
        ),
        ("", "dl.yaml: expected a mapping"),
        ("id: [unclosed\n", "dl.yaml: cannot be read as YAML"),
        (
            "é" * (MAX_FILE_BYTES // 2 + 1),
            "dl.yaml: is larger than 256 KiB, the limit for course files",
        ),
    ],
)
def test_parse_yaml_text_refuses(text, message):
    with pytest.raises(CourseError) as e:
        parse_yaml_text(text, NAME)
    assert len(e.value.problems) == 1 and e.value.problems[0].startswith(message)


# ---- merge_yaml ----------------------------------------------------------------------------------


def test_merge_keeps_comments_and_lines_of_what_did_not_change():
    old = read(FILE)
    new = copy.deepcopy(old)
    new["title"] = "Deep Learning II"
    del new["env"]
    text = merge_yaml(FILE, new)
    assert same(read(text), new)
    assert text == FILE.replace("title: Deep Learning", "title: Deep Learning II").replace(
        "# the old data set, gone next term\nenv:\n  DATASET: /data/old\n", ""
    )


def test_merge_of_an_unchanged_course_is_the_file_itself():
    assert merge_yaml(FILE, read(FILE)) == FILE
    # a missing final newline is the only change
    assert merge_yaml(FILE.rstrip("\n"), read(FILE)) == FILE


def test_merge_changes_only_the_changed_value_inside_a_key():
    new = read(FILE)
    new["gpus"]["max"] = 1
    new["images"].append({"key": "tf", "image": "local/tf:2.16"})
    new["resources"] = {"mem_limit": "16G", "cpu_limit": 8, "shm_size": "yes"}
    text = merge_yaml(FILE, new)
    assert same(read(text), new)
    assert "gpus: {default: 1, max: 1, policy: exclusive}  # see the lab plan\n" in text
    assert "# GPUs: two for the distributed lab\n" in text
    assert (
        '  - {key: pytorch, image: "local/pytorch:24.08", label: PyTorch}  # the NGC build\n'
        in text
    )
    # ':' in a flow mapping: quoted as PyYAML does
    assert "  - {key: tf, image: 'local/tf:2.16'}\n" in text
    assert "resources: {mem_limit: 16G, cpu_limit: 8, shm_size: 'yes'}\n" in text


def test_merge_keeps_comments_inside_a_changed_block_mapping():
    original = (
        "id: x\ntitle: T\nimages: [{key: a, image: a}]\ngpus:\n  default: 1  # one to start\n  "
        "max: 2\n"
        "  # keep shared for the lab\n  policy: shared\n"
    )
    new = read(original)
    new["gpus"]["max"] = 3
    del new["gpus"]["default"]
    new["gpus"]["queue"] = False
    text = merge_yaml(original, new)
    assert same(read(text), new)
    assert text.endswith(
        "gpus:\n  max: 3\n  # keep shared for the lab\n  policy: shared\n  queue: false\n"
    )
    new["gpus"]["default"] = 0
    assert "  max: 3\n  # keep shared for the lab\n" in merge_yaml(text, new)


def test_a_kept_final_newline_block_does_not_end_the_file_early():
    new = read(FILE)
    # written "|+": ruamel.yaml would end the document after it ("...")
    new["description"] = "Labs 1-10.\n\n"
    text = merge_yaml(FILE, new)
    assert same(read(text), new) and "# end of file" in text and "\n...\n" not in text


def test_a_merge_that_does_not_read_back_is_written_afresh(monkeypatch):
    """The safety nets: a key whose merge reads back wrong is written afresh, a file that does not
    read back is written plainly. Never expected to be needed; broken here on purpose."""
    from jupyter_gpuspawn import course_yaml

    new = read(FILE)
    new["gpus"]["max"] = 1
    monkeypatch.setattr(course_yaml, "_merge", lambda *args: None)  # merges nothing
    text = merge_yaml(FILE, new)
    assert (
        same(read(text), new)
        and "gpus:\n  default: 1\n  max: 1\n" in text
        and "# end of file" in text
    )
    monkeypatch.setattr(course_yaml, "_merged_segment", lambda yaml, key, body, view, value: body)
    assert merge_yaml(FILE, new) == merge_yaml("", new)


def test_merge_appends_new_keys_and_keeps_the_trailer():
    new = read(FILE)
    new["mounts"] = [{"source": "/srv/datasets/x", "target": "/data/x", "read_only": False}]
    new["archived"] = True
    text = merge_yaml(FILE, new)
    assert same(read(text), new)
    assert text.endswith(
        "mounts:\n  - source: /srv/datasets/x\n    target: /data/x\n    read_only: false\n"
        "archived: true\n# end of file\n"
    )
    assert text.startswith("# Deep learning, spring term.")


def test_merge_keeps_block_style_and_indentation_of_the_file():
    original = "id: x\ntitle: T\nimages:\n- key: a  # first\n  image: a:1\ngroups:\n- g\n"
    new = read(original)
    new["images"].append({"key": "b", "image": "b:1", "label": "B"})
    new["groups"] = ["h"]
    text = merge_yaml(original, new)
    assert (
        text == "id: x\ntitle: T\nimages:\n- key: a  # first\n  image: a:1\n"
        "- key: b\n  image: b:1\n  label: B\n"
        "groups:\n- h\n"
    )


def test_removing_a_list_item_keeps_the_others_comments():
    original = (
        "id: x\ntitle: T\nimages: [{key: a, image: a}]\nmounts:\n"
        "  - {source: /s/a, target: /a}  # A\n  - {source: /s/b, target: /b}  # B\n"
        "  - {source: /s/c, target: /c}  # C\n"
    )
    new = read(original)
    del new["mounts"][1]
    text = merge_yaml(original, new)
    assert same(read(text), new)
    assert "# A" in text and "# C" in text and "/s/b" not in text


TRICKY = [
    "0123",
    "yes",
    "No",
    "on",
    "OFF",
    "y",
    "1e3",
    "1.5",
    "1.0e+3",
    "null",
    "~",
    "true",
    "12:30",
    "0x1F",
    "1_000",
    "2024-01-01",
    "",
    " ",
    "-",
    "#x",
    "a: b",
    "- a",
    "[x]",
    "{x}",
    "*a",
    "&a",
    "!t",
    "%x",
    "@x",
    "`x",
    "|",
    ">",
    "=",
    "<<",
    "?",
    ".inf",
    ".nan",
    "é ✓",
    "a\nb",
    "a\n",
    "\n",
    "  lead",
    "trail ",
    "tab\tx",
    "x\u2028y",
    "x\x85y",
    "nul\x00",
    "\ufeffbom",
    "'q'",
    '"q"',
    "a #b",
    "a:",
    "...",
]


@pytest.mark.parametrize("original", ["", FILE])
def test_strings_that_look_like_other_things_stay_strings(original):
    new = course(description="0123", env={f"V{i}": s for i, s in enumerate(TRICKY)})
    new["title"] = "yes"
    new["images"][0]["label"] = "1e3"
    text = merge_yaml(original, new)
    assert same(read(text), new)
    assert "title: 'yes'\n" in text and "description: '0123'\n" in text and "label: '1e3'" in text


def test_plain_dump_uses_the_schema_order_and_block_style():
    new = {
        "env": {"B": "1", "A": "2"},
        "gpus": {"max": 1, "default": 0},
        "images": [{"image": "i:1", "key": "i"}],
        "title": "T",
        "id": "x",
        "zz_unknown": 1,
        "description": "Line one\nline two\n",
    }
    text = merge_yaml("", new)
    assert text == (
        "id: x\ntitle: T\ndescription: |\n  Line one\n  line two\nimages:\n  - key: i\n    image: "
        "i:1\n"
        "gpus:\n  default: 0\n  max: 1\nenv:\n  B: '1'\n  A: '2'\nzz_unknown: 1\n"
    )
    props = list(COURSE_SCHEMA["properties"])
    assert props.index("id") < props.index("title") < props.index("description")
    for original in ("- a list\n", "{id: x, title: T}", "a: &x 1\nb: *x\n", "not: [valid\n"):
        assert merge_yaml(original, new) == text


def test_merge_writes_floats_pyyaml_reads_as_floats():
    new = course(gpus={"queue_timeout": 1e16, "weekly_hours": 1e-05}, idle={"minutes": 2.0})
    for original in ("", FILE):
        assert same(read(merge_yaml(original, new)), new)


def test_merge_keeps_long_and_unicode_strings_on_one_line():
    new = course(title="Ünïcødé ✓" + " long" * 60)
    text = merge_yaml(FILE, new)
    assert f"title: {new['title']}\n" in text and "\\u" not in text


# Generated schema-valid courses: every kind of value the schema allows, and strings that tempt
# YAML.
TEXT = st.one_of(
    st.sampled_from(TRICKY), st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
)
NONEMPTY = TEXT.filter(bool)
IDENT = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,8}", fullmatch=True)
NOSPACE = st.one_of(
    st.sampled_from(["0123", "yes", "1e3", "a:b", "#x", "-"]),
    st.text(
        st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")), min_size=1, max_size=12
    ),
).filter(lambda s: re.match(r"^[^\s]+\Z", s))
NUMBER = st.one_of(
    st.integers(0, 600),
    st.floats(0, 600, allow_nan=False, allow_infinity=False),
    st.sampled_from([1e-05, 0.1, 599.999999999, 2.0]),
)
SIZE = st.one_of(
    st.integers(1, 2**40), st.from_regex(r"[0-9]{1,3}(\.[0-9])?[KMGTkmgt]?i?[Bb]?", fullmatch=True)
)
NAMES = st.lists(NONEMPTY, max_size=3)


def _optional(**strategies):
    return st.fixed_dictionaries({}, optional=strategies)


COURSES = st.fixed_dictionaries(
    {
        "id": IDENT,
        "title": NONEMPTY,
        "images": st.lists(
            st.fixed_dictionaries({"key": IDENT, "image": NOSPACE}, optional={"label": TEXT}),
            min_size=1,
            max_size=3,
        ),
    },
    optional={
        "description": TEXT,
        "groups": NAMES,
        "users": NAMES,
        "instructors": NAMES,
        "instructor_groups": NAMES,
        "archived": st.booleans(),
        "gpus": _optional(
            default=st.integers(0, 64),
            max=st.integers(0, 64),
            policy=st.sampled_from(["exclusive", "shared"]),
            max_users_per_gpu=st.integers(1, 64),
            queue=st.booleans(),
            queue_timeout=NUMBER,
            weekly_hours=NUMBER,
        ),
        "idle": _optional(
            minutes=NUMBER.filter(bool),
            warn_minutes=NUMBER,
            reclaim=st.sampled_from(["when_queued", "always", "never"]),
        ),
        "resources": _optional(mem_limit=SIZE, cpu_limit=NUMBER.filter(bool), shm_size=SIZE),
        "mounts": st.lists(
            st.fixed_dictionaries(
                {"source": NONEMPTY, "target": NONEMPTY}, optional={"read_only": st.booleans()}
            ),
            max_size=3,
        ),
        "env": st.dictionaries(
            st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True), TEXT, max_size=4
        ),
    },
)


def _mix(draw, old, new):
    """Parts of ``old`` kept, parts taken from ``new``: edits of every size, down to one nested
    value."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = {}
        for key in list(old) + [k for k in new if k not in old]:
            choice = draw(st.sampled_from(["old", "new", "mix", "drop"]))
            if key in old and key in new and choice == "mix":
                out[key] = _mix(draw, old[key], new[key])
            elif key in old and (choice == "old" or key not in new):
                if choice != "drop" or key in ("id", "title", "images"):
                    out[key] = old[key]
            elif key in new:
                out[key] = new[key]
        return out
    if isinstance(old, list) and isinstance(new, list):
        keep = draw(st.lists(st.booleans(), min_size=len(old), max_size=len(old)))
        items = [x for x, k in zip(old, keep, strict=False) if k] + new[
            : draw(st.integers(0, len(new)))
        ]
        return draw(st.permutations(items)) if draw(st.booleans()) else items
    return new


@st.composite
def EDITS(draw):
    old = draw(COURSES)
    return old, _mix(draw, old, draw(COURSES))


def test_generated_courses_are_schema_valid():
    import jsonschema

    @given(COURSES)
    @settings(max_examples=50, deadline=None)
    def check(data):
        jsonschema.validate(data, COURSE_SCHEMA)

    check()


@given(COURSES)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_plain_dump_reads_back_as_the_course(data):
    assert same(read(merge_yaml("", data)), data)


@given(EDITS(), st.sampled_from(["plain", "flow", "comments", "file"]))
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_a_merge_reads_back_as_the_new_course(edit, style):
    old, new = edit
    import yaml

    if style == "plain":
        original = merge_yaml("", old)
    elif style == "flow":
        original = yaml.safe_dump(old, default_flow_style=None, allow_unicode=True, sort_keys=False)
    elif style == "comments":
        original = (
            "# header\n"
            + re.sub(r"(?m)^(\w+):", r"# about \1\n\1:", merge_yaml("", old))
            + "# trailer\n"
        )
    else:
        original, new = FILE, _mix_with_file(new)
    assert same(read(merge_yaml(original, new)), new)
    if style == "comments":  # what did not change keeps its comment
        text = merge_yaml(original, new)
        assert text.startswith("# header\n") and text.endswith("# trailer\n")
        for key in old:
            if key in new and same(old[key], new[key]):
                assert f"# about {key}\n{key}:" in text


@given(EDITS(), st.booleans())
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
def test_the_merge_itself_needs_no_fallback(edit, flow):
    """merge_yaml falls back to writing a key (or the file) afresh when a merge does not read back:
    the merge of ruamel.yaml nodes should not need that, or comments get lost without a test
    noticing."""
    import yaml

    from jupyter_gpuspawn import course_yaml

    old, new = edit
    original = (
        yaml.safe_dump(old, default_flow_style=None, allow_unicode=True)
        if flow
        else merge_yaml("", old)
    )
    rt = course_yaml._yaml()
    holder = {"doc": course_yaml._reader().load(original)}
    course_yaml._exact_floats(holder["doc"])
    course_yaml._merge(holder, "doc", read(original), new)
    assert same(read(course_yaml._dump(rt, holder["doc"])), new)


def _mix_with_file(new):
    data = read(FILE)
    data.update({k: v for k, v in new.items() if k not in ("id", "groups")})
    return data


# ---- changed_fields ------------------------------------------------------------------------------


def test_changed_fields_one_line_per_leaf_sorted():
    old = course(title="A", gpus={"max": 2, "default": 1}, env={"BAR": "x", "KEEP": "k"}, mounts=[])
    new = course(
        title="B", gpus={"max": 1, "default": 1}, env={"FOO": "y", "KEEP": "k"}, mounts=[{"a": 1}]
    )
    new["images"] = [{"key": "tf", "image": "local/tf:2.16"}]
    assert changed_fields(old, new) == [
        "env.BAR: removed",
        "env.FOO: added",
        "gpus.max: 2 → 1",
        "images: changed",
        "mounts: changed",
        "title: 'A' → 'B'",
    ]
    assert changed_fields(old, copy.deepcopy(old)) == []


def test_changed_fields_sees_type_changes_and_shortens_values():
    old = course(gpus={"queue": True}, description="x" * 100)
    new = course(gpus={"queue": 1}, description="y")
    assert changed_fields(old, new) == [
        f"description: {shorten('x' * 100)} → 'y'",
        "gpus.queue: True → 1",
    ]
    assert changed_fields(course(), course(idle={"minutes": 5})) == ["idle.minutes: added"]
    assert changed_fields(course(resources={}), course()) == ["resources: removed"]


# ---- the form ------------------------------------------------------------------------------------


FULL = course(
    description="Labs.\n",
    groups=["g"],
    users=["u"],
    instructors=["ana"],
    instructor_groups=["staff"],
    archived=True,
    something_new={"kept": [1]},
    images=[
        {"key": "pytorch", "image": "local/pytorch:24.08", "label": "PyTorch"},
        {"key": "tf", "image": "tf:2"},
    ],
    gpus={
        "default": 1,
        "max": 2,
        "policy": "shared",
        "max_users_per_gpu": 3,
        "queue": False,
        "queue_timeout": 90,
        "weekly_hours": 10.0,
    },
    idle={"minutes": 30, "warn_minutes": 2.5, "reclaim": "always"},
    resources={"mem_limit": "16G", "cpu_limit": 4.0, "shm_size": 1024},
    mounts=[
        {"source": "/srv/a", "target": "/data/a"},
        {"source": "/srv/b", "target": "/data/b", "read_only": False},
        {"source": "/srv/c", "target": "/data/c", "read_only": True},
    ],
    env={"A": "1", "B": "x=y"},
)


def submission(fields):
    """What a browser sends for a form prefilled with ``fields`` (textareas with CRLF line ends)."""
    form = {
        k: [v.replace("\n", "\r\n") if k in ("env", "mounts", "description") else v]
        for k, v in fields.items()
        if k != "images"
    }
    form["image"] = [image for image, _ in fields["images"]]
    form["image_label"] = [label for _, label in fields["images"]]
    return form


def test_form_from_data_renders_every_field():
    assert form_from_data(FULL) == {
        "title": "Deep Learning",
        "description": "Labs.\n",
        "images": [("local/pytorch:24.08", "PyTorch"), ("tf:2", "")],
        "gpus_default": "1",
        "gpus_max": "2",
        "gpus_policy": "shared",
        "gpus_max_users_per_gpu": "3",
        "gpus_queue": "no",
        "gpus_queue_timeout_minutes": "1.5",
        "gpus_weekly_hours": "10",
        "idle_minutes": "30",
        "idle_warn_minutes": "2.5",
        "idle_reclaim": "always",
        "mem_limit": "16G",
        "cpu_limit": "4",
        "shm_size": "1024",
        "env": "A=1\nB=x=y",
        "mounts": "/srv/a -> /data/a\n/srv/b -> /data/b (read-write)\n/srv/c -> /data/c",
    }
    empty = form_from_data({})
    assert (
        empty["images"] == []
        and empty["gpus_queue"] == ""
        and empty["env"] == ""
        and empty["title"] == ""
    )


def test_an_unchanged_form_gives_back_the_course_exactly():
    data, problems = data_from_form(submission(form_from_data(FULL)), FULL)
    # 10.0 stays 10.0, read_only: true stays, 1024 stays an int
    assert problems == [] and same(data, FULL)
    odd = course(
        images=[
            {"key": "a", "image": "a:1", "label": " spaced "},
            {"image": "no-key:1"},
            "not a mapping",
        ]
    )
    data, problems = data_from_form(submission(form_from_data(odd)), odd)
    # as the file has it, even where the form would write it otherwise
    assert problems == [] and same(data, odd)


def test_the_form_alone_rebuilds_a_course_from_its_owner_fields():
    base = {
        k: v
        for k, v in FULL.items()
        if k in OWNER_FIELDS + ("id", "images", "archived", "something_new")
    }
    data, problems = data_from_form(submission(form_from_data(FULL)), base)
    expected = copy.deepcopy(FULL)
    expected["description"] = "Labs."  # a changed description is stripped
    del expected["mounts"][2]["read_only"]  # read-only is the default: the form does not write it
    assert (
        problems == []
        and data == expected
        and list(data)
        == list(base) + ["title", "description", "gpus", "idle", "resources", "env", "mounts"]
    )


FORM_TEXT = (
    st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=12)
    .map(str.strip)
    .filter(bool)
)
PATH = st.from_regex(r"/[a-z0-9_./-]{0,12}", fullmatch=True).filter(lambda p: "->" not in p)
FORM_COURSES = st.fixed_dictionaries(
    {
        "id": IDENT,
        "title": FORM_TEXT,
        "images": st.lists(
            st.fixed_dictionaries({"key": IDENT, "image": NOSPACE}, optional={"label": FORM_TEXT}),
            min_size=1,
            max_size=3,
            unique_by=lambda i: i["key"],
        ),
    },
    optional={
        "description": FORM_TEXT,
        "groups": NAMES,
        "users": NAMES,
        "instructors": NAMES,
        "instructor_groups": NAMES,
        "gpus": _optional(
            default=st.integers(0, 64),
            max=st.integers(0, 64),
            policy=st.sampled_from(["exclusive", "shared"]),
            max_users_per_gpu=st.integers(1, 64),
            queue=st.booleans(),
            queue_timeout=st.integers(0, 7 * 24 * 3600).map(lambda s: s / 2),
            weekly_hours=NUMBER,
        ),
        "idle": _optional(
            minutes=NUMBER.filter(bool),
            warn_minutes=NUMBER,
            reclaim=st.sampled_from(["when_queued", "always", "never"]),
        ),
        "resources": _optional(mem_limit=SIZE, cpu_limit=NUMBER.filter(bool), shm_size=SIZE),
        "mounts": st.lists(
            st.fixed_dictionaries(
                {"source": PATH, "target": PATH}, optional={"read_only": st.just(False)}
            ),
            min_size=1,
            max_size=3,
        ),
        "env": st.dictionaries(
            st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}", fullmatch=True),
            st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=8),
            min_size=1,
            max_size=4,
        ),
    },
).filter(lambda d: all(d.get(s) != {} for s in ("gpus", "idle", "resources")))


@given(FORM_COURSES)
@settings(max_examples=200, deadline=None)
def test_form_round_trip(data):
    """form_from_data(d) fed back gives d: against d itself exactly, and from its owner fields (and
    images, whose keys the form does not show) by value."""
    got, problems = data_from_form(submission(form_from_data(data)), data)
    assert problems == [] and same(got, data)
    base = {k: v for k, v in data.items() if k in OWNER_FIELDS + ("id", "images")}
    got, problems = data_from_form(submission(form_from_data(data)), base)
    if (
        isinstance(data.get("resources", {}).get("mem_limit"), str)
        and data["resources"]["mem_limit"].isdigit()
    ):
        assume(False)  # "1024" and 1024 are one size: the form cannot tell them apart
    if (
        isinstance(data.get("resources", {}).get("shm_size"), str)
        and data["resources"]["shm_size"].isdigit()
    ):
        assume(False)
    assert problems == [] and got == data


def test_empty_fields_leave_keys_out_and_empty_sections_go():
    fields = form_from_data(FULL)
    for key in (
        "description",
        "gpus_default",
        "gpus_max",
        "gpus_policy",
        "gpus_max_users_per_gpu",
        "gpus_queue",
        "gpus_queue_timeout_minutes",
        "gpus_weekly_hours",
        "idle_minutes",
        "idle_warn_minutes",
        "idle_reclaim",
        "mem_limit",
        "cpu_limit",
        "env",
        "mounts",
    ):
        fields[key] = ""
    data, problems = data_from_form(submission(fields), FULL)
    assert problems == []
    assert data == {
        k: v for k, v in FULL.items() if k not in ("description", "gpus", "idle", "env", "mounts")
    } | {"resources": {"shm_size": 1024}}


def test_fields_the_form_lacks_are_copied_and_missing_fields_keep_their_value():
    data, problems = data_from_form({"title": ["New"], "mode": ["form"], "revision": ["r1"]}, FULL)
    assert problems == [] and data == FULL | {"title": "New"}
    assert list(data) == list(FULL)


def test_changed_values_are_parsed():
    fields = form_from_data(FULL) | {
        "gpus_max": " 4 ",
        "gpus_weekly_hours": "7.5",
        "gpus_queue": "yes",
        "gpus_queue_timeout_minutes": "0.1",
        "idle_minutes": "45",
        "cpu_limit": "2",
        "mem_limit": "8G",
        "shm_size": "2048",
        "title": "  Padded  ",
        "env": "A=1\n\nC= spaced \n",
        "mounts": "/srv/x -> /data/x (read-write)\n",
    }
    data, problems = data_from_form(submission(fields), FULL)
    assert problems == []
    assert data["gpus"] == FULL["gpus"] | {
        "max": 4,
        "weekly_hours": 7.5,
        "queue": True,
        "queue_timeout": 6,
    }
    assert data["idle"]["minutes"] == 45 and type(data["idle"]["minutes"]) is int
    assert data["resources"] == {"mem_limit": "8G", "cpu_limit": 2, "shm_size": 2048}
    assert data["title"] == "Padded" and data["env"] == {"A": "1", "C": " spaced "}
    assert data["mounts"] == [{"source": "/srv/x", "target": "/data/x", "read_only": False}]


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("gpus_max", "two", "gpus.max: 'two' is not a whole number"),
        ("gpus_default", "1.5", "gpus.default: '1.5' is not a whole number"),
        ("gpus_max_users_per_gpu", "1e3", "gpus.max_users_per_gpu: '1e3' is not a whole number"),
        ("gpus_weekly_hours", "ten", "gpus.weekly_hours: 'ten' is not a number"),
        ("idle_minutes", "nan", "idle.minutes: 'nan' is not a number"),
        ("idle_warn_minutes", "1e999", "idle.warn_minutes: '1e999' is not a number"),
        ("cpu_limit", "4 cores", "resources.cpu_limit: '4 cores' is not a number"),
        (
            "gpus_queue_timeout_minutes",
            "soon",
            "gpus.queue_timeout (minutes): 'soon' is not a number",
        ),
        ("gpus_queue", "maybe", "gpus.queue: 'maybe' must be yes, no or empty"),
        ("env", "A=1\n\nnot a pair", "env line 3: expected NAME=value, got 'not a pair'"),
        ("env", "=value", "env line 1: expected NAME=value"),
        ("env", "A=1\nA=2", "env line 2: 'A' is already set on line 1; keep one"),
        (
            "mounts",
            "/srv/a -> /data/a\n/srv/b /data/b",
            "mounts line 2: expected 'source -> target'",
        ),
        ("mounts", "/srv/a -> ", "mounts line 1: expected 'source -> target'"),
        ("mounts", "/a -> /b -> /c", "mounts line 1: expected 'source -> target'"),
    ],
)
def test_values_that_cannot_be_read_are_problems(field, value, message):
    data, problems = data_from_form(submission(form_from_data(FULL) | {field: value}), FULL)
    assert len(problems) == 1 and problems[0].startswith(message)


def test_image_rows_keep_keys_and_new_images_get_unique_slugs():
    base = course(
        images=[
            {"key": "main", "image": "ghcr.io/org/pytorch:24.08", "label": "Old label"},
            {"key": "pytorch", "image": "local/other:1"},
        ]
    )
    form = {
        "image": [
            "local/new/PyTorch:25.01",
            "ghcr.io/org/pytorch:24.08",
            "",
            "reg.io:5000/PyTorch@sha256:ab",
            " tf:1 ",
            "localhost:5000/Ü nicode!!:x",
            "x/" + "a" * 80 + ":1",
            "x/" + "a" * 80 + ":2",
            "local/other:1",
        ],
        "image_label": ["New", "", "dropped row", "", " TF "],
    }
    data, problems = data_from_form(form, base)
    assert problems == []
    assert data["images"] == [
        # "pytorch" is in use
        {"key": "pytorch-2", "image": "local/new/PyTorch:25.01", "label": "New"},
        {"key": "main", "image": "ghcr.io/org/pytorch:24.08"},  # kept key, label cleared
        {"key": "pytorch-3", "image": "reg.io:5000/PyTorch@sha256:ab"},
        {"key": "tf", "image": "tf:1", "label": "TF"},
        {"key": "nicode", "image": "localhost:5000/Ü nicode!!:x"},
        {"key": "a" * 64, "image": "x/" + "a" * 80 + ":1"},
        {"key": "a" * 62 + "-2", "image": "x/" + "a" * 80 + ":2"},
        {"key": "pytorch", "image": "local/other:1"},
    ]
    assert all(re.match(ID_PATTERN, i["key"]) for i in data["images"])
    data, _ = data_from_form({"image": ["!!!", "???", "local/pytorch:1"], "image_label": []}, base)
    # a key no image keeps is free
    assert [i["key"] for i in data["images"]] == ["image", "image-2", "pytorch"]


def test_the_same_image_twice_keeps_one_key_and_slugs_the_other():
    base = course(images=[{"key": "a", "image": "img:1", "label": "A"}])
    data, _ = data_from_form({"image": ["img:1", "img:1"], "image_label": ["A", "B"]}, base)
    assert data["images"] == [
        {"key": "a", "image": "img:1", "label": "A"},
        {"key": "img", "image": "img:1", "label": "B"},
    ]


# ---- new courses ---------------------------------------------------------------------------------


def test_a_blank_new_course_is_cpu_only_with_the_first_image(tmp_path):
    data = new_course_data(
        "ml",
        "Machine Learning",
        template=None,
        creator="ana",
        creator_is_admin=False,
        limits=limits(),
    )
    assert data == {
        "id": "ml",
        "title": "Machine Learning",
        "groups": ["course-ml"],
        "instructors": ["ana"],
        "images": [{"key": "pytorch", "image": "local/pytorch:24.08"}],
        "gpus": {"default": 0, "max": 1},
    }
    parse_course(data, str(tmp_path / "ml.yaml"))
    assert check_limits(data, limits(), "ml.yaml") == []
    assert new_course_data(
        "ml",
        "M",
        template=None,
        creator="root",
        creator_is_admin=True,
        limits=limits(max_gpus=0, group_prefix=""),
    )["gpus"] == {"default": 0, "max": 0}
    admin = new_course_data(
        "ml", "M", template=None, creator="root", creator_is_admin=True, limits=limits()
    )
    assert "instructors" not in admin and admin["groups"] == ["course-ml"]
    assert new_course_data(
        "ml",
        "M",
        template=None,
        creator="a",
        creator_is_admin=False,
        limits=InstructorLimits(images=("x:1",), group_prefix=""),
    )["groups"] == ["ml"]


def test_a_blank_new_course_needs_an_image():
    with pytest.raises(CourseError, match="no image is open to instructors yet"):
        new_course_data(
            "ml", "M", template=None, creator="a", creator_is_admin=False, limits=limits(images=())
        )


def test_a_copied_course_gets_a_fresh_group_and_its_creator():
    template = copy.deepcopy(FULL)
    data = new_course_data(
        "dl2",
        "Deep Learning 2",
        template=template,
        creator="bo",
        creator_is_admin=False,
        limits=limits(),
    )
    assert template == FULL  # the template is not touched
    assert (
        data["id"] == "dl2"
        and data["title"] == "Deep Learning 2"
        and data["groups"] == ["course-dl2"]
    )
    assert "users" not in data and "archived" not in data
    assert data["instructors"] == ["ana", "bo"] and data["instructor_groups"] == ["staff"]
    assert (
        data["gpus"] == FULL["gpus"]
        and data["images"] == FULL["images"]
        and data["something_new"] == {"kept": [1]}
    )
    again = new_course_data(
        "dl3", "T", template=template, creator="ana", creator_is_admin=False, limits=limits()
    )
    assert again["instructors"] == ["ana"]
    by_admin = new_course_data(
        "dl3", "T", template=course(), creator="root", creator_is_admin=True, limits=limits()
    )
    assert "instructors" not in by_admin and by_admin["groups"] == ["course-dl3"]


def test_the_pyproject_declares_ruamel_yaml():
    path = os.path.join(os.path.dirname(__file__), "..", "..", "pyproject.toml")
    with open(path) as f:
        assert '"ruamel.yaml>=0.18"' in f.read()


def test_instructors_mount_read_only_under_the_mount_targets_and_set_no_code_loading_env():
    caps = limits(data_roots=("/",))
    rw = course(mounts=[{"source": "/srv", "target": "/data/x", "read_only": False}])
    assert check_limits(rw, caps, NAME) == [
        "dl.yaml: mounts.0.read_only: course data is mounted read-only "
        "(students could change or delete it otherwise); ask an admin"
    ]
    assert check_limits(rw, limits(data_roots=("/",), allow_read_write_mounts=True), NAME) == []
    over_image = course(
        mounts=[{"source": "/srv", "target": "/opt/conda/lib/python3.11/site-packages/x"}]
    )
    [problem] = check_limits(over_image, caps, NAME)
    assert "mounts.0.target" in problem and "must be under /data" in problem
    assert (
        check_limits(course(mounts=[{"source": "/srv", "target": "/data/../opt"}]), caps, NAME)
        != []
    )
    for var in (
        "BASH_ENV",
        "PYTHONUSERBASE",
        "IPYTHONDIR",
        "JUPYTER_DATA_DIR",
        "GIT_SSH_COMMAND",
        "PROMPT_COMMAND",
    ):
        [problem] = check_limits(course(env={var: "x"}), caps, NAME)
        assert problem.startswith(f"dl.yaml: env.{var}: instructors may not set it"), problem
    assert (
        check_limits(course(env={"TORCH_HOME": "/data/x", "ENVIRONMENT": "lab"}), caps, NAME) == []
    )


# each makes a runtime in the image load code, config or trust from where the course points it
CODE_LOADING_ENV = {
    "OPENSSL_CONF": "TLS libraries load modules",  # a .so in the data mount runs as each student
    "OPENSSL_MODULES": "TLS libraries",
    "OPENSSL_ENGINES": "TLS libraries",
    "REQUESTS_CA_BUNDLE": "trusted certificates",
    "SSL_CERT_FILE": "trusted certificates",
    "SSL_CERT_DIR": "trusted certificates",
    "CURL_CA_BUNDLE": "trusted certificates",
    "NODE_EXTRA_CA_CERTS": "runtime of another language",
    "GIT_SSL_CAINFO": "git or ssh",
    "GIT_CONFIG_GLOBAL": "git or ssh",
    "GIT_EXEC_PATH": "git or ssh",
    "SSLKEYLOGFILE": "write their keys",
    "JAVA_TOOL_OPTIONS": "another language",
    "_JAVA_OPTIONS": "another language",
    "JDK_JAVA_OPTIONS": "another language",
    "ZDOTDIR": "the shell",
    "PS1": "the shell",
    "BASH_LOADABLES_PATH": "the shell",
    "VIMINIT": "an editor",
    "EXINIT": "an editor",
    "LESSOPEN": "less runs commands",
    "HTTPS_PROXY": "proxy of the course's choosing",
    "https_proxy": "proxy",
    "HTTP_PROXY": "proxy",
    "http_proxy": "proxy",
    "ALL_PROXY": "proxy",
    "all_proxy": "proxy",
    "NO_PROXY": "proxy",
    "no_proxy": "proxy",
    "npm_config_registry": "another language",
    "NODE_OPTIONS": "another language",
    "PERL5OPT": "another language",
    "RUBYOPT": "another language",
    "R_PROFILE_USER": "another language",
    "JULIA_DEPOT_PATH": "another language",
    "PYTHONSTARTUP": "Python",
    "PYTEST_ADDOPTS": "Python tool",
    "DASK_DISTRIBUTED__WORKER__PRELOAD": "Python tool",
    "MATPLOTLIBRC": "Python",
    "GCONV_PATH": "the C library",
    "LOCPATH": "the C library",
    "XDG_CONFIG_HOME": "the desktop",
    "PAGER": "pager",
    "GIT_PAGER": "git or ssh",
    "MANPAGER": "pager",
    "EDITOR": "editor",
    "VISUAL": "editor",
    "BROWSER": "browser",
    "SUDO_ASKPASS": "password prompt",
    "VK_ICD_FILENAMES": "drivers or plugins",
    "__EGL_VENDOR_LIBRARY_FILENAMES": "drivers or plugins",
    "NCCL_NET_PLUGIN": "drivers or plugins",
    "CFLAGS": "compiler",
    "TEXMFCNF": "LaTeX",
    "KUBECONFIG": "runs the commands its config names",
}


@pytest.mark.parametrize("var", sorted(CODE_LOADING_ENV))
def test_instructors_set_no_env_that_loads_code_config_or_trust_and_hear_which_and_why(var):
    [problem] = check_limits(course(env={var: "/data/dl/course.cnf"}), limits(), NAME)
    assert problem.startswith(f"dl.yaml: env.{var}: instructors may not set it ("), problem
    assert CODE_LOADING_ENV[var] in problem and problem.endswith("; ask an admin"), problem


def test_instructors_keep_free_form_env_names_of_their_own():
    own = {
        name: "x"
        for name in (
            "DATA_DIR",
            "HF_HOME",
            "HF_DATASETS_CACHE",
            "TORCH_HOME",
            "OMP_NUM_THREADS",
            "WANDB_MODE",
            "NCCL_DEBUG",
            "JULIA_NUM_THREADS",
            "MPLBACKEND",
            "TF_CPP_MIN_LOG_LEVEL",
            "KERAS_BACKEND",
            "TOKENIZERS_PARALLELISM",
            "CUDA_LAUNCH_BLOCKING",
            "ENVIRONMENT",
            "LESSON_DIR",
            "COURSE_URL",
            "MLFLOW_TRACKING_URI",
        )
    }
    assert check_limits(course(env=own), limits(), NAME) == []


def test_the_idle_minutes_are_capped_so_never_cannot_come_back_as_a_year():
    caps = limits(max_idle_minutes=120)
    assert check_limits(course(idle={"minutes": 120}), caps, NAME) == []
    assert check_limits(course(idle={"minutes": 525600}), caps, NAME) == [
        "dl.yaml: idle.minutes: 525600 is more than instructors may set (120); ask an admin"
    ]
