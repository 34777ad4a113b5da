from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_gpuspawn.allocation import GiB, GPUAllocator, GPURequest
from jupyter_gpuspawn.courses import (
    Course,
    CourseCatalog,
    CourseError,
    Mount,
    conflicting_mounts,
    load_course_file,
    normalize_mount_target,
    parse_course,
)
from jupyter_gpuspawn.form import render_form, template_environment
from jupyter_gpuspawn.gpus import GPU, Snapshot

GOOD = {
    "id": "dl101",
    "title": "Deep Learning 101",
    "description": "Week 1: tensors",
    "groups": ["dl101-students"],
    "images": [{"key": "pytorch", "image": "local/pytorch-hub:24.08", "label": "PyTorch 24.08"}],
    "gpus": {"default": 1, "max": 2, "policy": "exclusive"},
    "resources": {"mem_limit": "16G", "cpu_limit": 4, "shm_size": "2G"},
    "mounts": [{"source": "@DATA@/imagenet", "target": "/data/imagenet"}],
    "env": {"DATASET_DIR": "/data/imagenet"},
}


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "datasets"
    (root / "imagenet").mkdir(parents=True)
    return str(root)


def write(directory, name, data):
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        f.write(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def course_data(data_root, **changes):
    data = yaml.safe_load(yaml.safe_dump(GOOD).replace("@DATA@", data_root))
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def test_good_course_loads(tmp_path, data_root):
    course = load_course_file(write(tmp_path, "dl101.yaml", course_data(data_root)), [data_root])
    assert course.id == "dl101" and course.gpu_default == 1 and course.gpu_max == 2
    assert (
        course.mem_limit == 16 * 1024**3
        and course.shm_size == 2 * 1024**3
        and course.cpu_limit == 4
    )
    assert course.mounts[0].read_only is True  # read-only unless said otherwise
    assert course.env == (("DATASET_DIR", "/data/imagenet"),)


@pytest.mark.parametrize(
    "changes, expected",
    [
        (
            {"colour": "red"},
            "dl101.yaml: unknown key(s) 'colour' in (top level); allowed: archived, description, "
            "env, gpus,",
        ),
        ({"title": None}, "dl101.yaml: (top level): 'title' is required"),
        ({"id": "DL 101"}, "dl101.yaml: id: 'DL 101' must be lower-case letters, digits, - or _"),
        (
            {"gpus": {"policy": "fast"}},
            "dl101.yaml: gpus.policy: 'fast' is not allowed; use one of 'exclusive', 'shared'",
        ),
        ({"gpus": {"max": "two"}}, "dl101.yaml: gpus.max: expected integer, got str 'two'"),
        ({"gpus": {"default": 3, "max": 2}}, "gpus.default (3) is more than gpus.max (2)"),
        (
            {"gpus": {"maximum": 2}},
            "unknown key(s) 'maximum' in gpus; allowed: default, max, max_users_per_gpu, policy",
        ),
        ({"images": []}, "dl101.yaml: images: [] should be non-empty"),
        (
            {"images": [{"key": "a", "image": "x"}, {"key": "a", "image": "y"}]},
            "images: key 'a' is used twice",
        ),
        (
            {"resources": {"mem_limit": "lots"}},
            "resources.mem_limit: 'lots' must be a size such as 8G or 512M",
        ),
        (
            {"resources": {"mem_limit": "9" * 400 + "G"}},
            "resources.mem_limit is too large, got '99999",
        ),
        (
            {"resources": {"shm_size": 2**64}},
            "resources.shm_size is too large, got 18446744073709551616",
        ),
        (
            {"env": {"NVIDIA_VISIBLE_DEVICES": "all"}},
            "env.NVIDIA_VISIBLE_DEVICES: reserved, set by the spawner",
        ),
        ({"env": {"LD_PRELOAD": "/x.so"}}, "env.LD_PRELOAD: reserved"),
        ({"env": {"LD_AUDIT": "/x.so"}}, "env.LD_AUDIT: reserved"),
        ({"env": {"JPY_API_TOKEN": "x"}}, "env.JPY_API_TOKEN: reserved"),
        ({"env": {"JUPYTERHUB_API_URL": "http://evil"}}, "env.JUPYTERHUB_API_URL: reserved"),
        ({"env": {"PYTHONPATH": "/data"}}, "env.PYTHONPATH: reserved"),
        ({"env": {"MEM_LIMIT": "1"}}, "env.MEM_LIMIT: reserved"),
        ({"instructors": "prof"}, "instructors: expected array, got str 'prof'"),
        ({"instructor_groups": [""]}, "instructor_groups.0"),
        ({"env": {"HOME": "/tmp"}}, "env.HOME: reserved"),
        ({"env": {"1BAD": "x"}}, "'1BAD' is not a valid environment variable name"),
        (
            {"mounts": [{"source": "/etc", "target": "/data/etc"}]},
            "mounts.0.source: '/etc' is outside the course data roots",
        ),
        (
            {"mounts": [{"source": "@DATA@/../../etc", "target": "/data/x"}]},
            "is outside the course data roots",
        ),
        (
            {"mounts": [{"source": "@DATA@/imagenet", "target": "/etc"}]},
            "mounts.0.target: '/etc' must be an absolute path",
        ),
        (
            {"mounts": [{"source": "@DATA@/imagenet", "target": "data"}]},
            "mounts.0.target: 'data' must be an absolute path",
        ),
        (
            {"mounts": [{"source": "@DATA@/imagenet", "target": "/data:/etc"}]},
            "mounts.0.target: '/data:/etc' must not",
        ),
        (
            {
                "mounts": [
                    {"source": "@DATA@/imagenet", "target": "/data/a"},
                    {"source": "@DATA@/imagenet", "target": "/data//a/"},
                ]
            },
            "mounts.1.target: /data/a is already the target of mounts.0",
        ),
    ],
)
def test_each_kind_of_mistake_names_file_key_and_what_is_allowed(
    tmp_path, data_root, changes, expected
):
    changes = yaml.safe_load(yaml.safe_dump(changes).replace("@DATA@", data_root))
    path = write(tmp_path, "dl101.yaml", course_data(data_root, **changes))
    with pytest.raises(CourseError) as e:
        load_course_file(path, [data_root])
    assert expected in str(e.value), str(e.value)


def test_unparseable_yaml(tmp_path):
    with pytest.raises(CourseError, match="broken.yaml: cannot be read as YAML"):
        load_course_file(write(tmp_path, "broken.yaml", "id: [unclosed\n"))


def test_reload_valid_invalid_valid_keeps_last_good(tmp_path, data_root):
    catalog = CourseCatalog(str(tmp_path), [data_root])
    path = write(tmp_path, "dl101.yaml", course_data(data_root))
    view = catalog.refresh()
    [first] = view.courses
    assert first.title == "Deep Learning 101" and view.errors == ()

    # v2 changes title, image and GPUs, but has one mistake: none of it may apply, the old course
    # stays whole
    write(
        tmp_path,
        "dl101.yaml",
        course_data(
            data_root,
            title="Deep Learning 101 (v2)",
            images=[{"key": "tf", "image": "local/tf:2"}],
            gpus={"default": 0, "max": 8, "policy": "nope"},
        ),
    )
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    view = catalog.refresh()
    [kept] = view.courses
    # the same title, images, GPUs, mounts, env: what a student starts is the old version
    assert kept == first
    assert [(i.key, i.image) for i in kept.images] == [("pytorch", "local/pytorch-hub:24.08")]
    assert (kept.gpu_default, kept.gpu_max, kept.policy) == (1, 2, "exclusive")
    assert (
        len(view.errors) == 1 and "dl101.yaml: gpus.policy: 'nope' is not allowed" in view.errors[0]
    )
    # still the old version on the next refresh (nothing changed on disk), and after another bad
    # edit
    assert catalog.refresh().courses == (first,)
    write(tmp_path, "dl101.yaml", "id: [unclosed\n")
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    view = catalog.refresh()
    assert view.courses == (first,) and "cannot be read as YAML" in view.errors[0]

    write(tmp_path, "dl101.yaml", course_data(data_root, title="Deep Learning 101 (v2)"))
    os.utime(path, ns=(time.time_ns() + 2 * 10**9, time.time_ns() + 2 * 10**9))
    view = catalog.refresh()
    assert [c.title for c in view.courses] == ["Deep Learning 101 (v2)"] and view.errors == ()

    os.remove(path)
    assert catalog.refresh().courses == ()


def test_duplicate_ids_keep_the_first_file(tmp_path, data_root):
    write(tmp_path, "a.yaml", course_data(data_root))
    write(tmp_path, "b.yaml", course_data(data_root, title="Impostor"))
    view = CourseCatalog(str(tmp_path), [data_root]).refresh()
    assert [c.title for c in view.courses] == ["Deep Learning 101"]
    assert "b.yaml: id 'dl101' is already used by a.yaml" in view.errors[0]


def test_validate_command_prints_all_errors_and_fails(tmp_path, data_root):
    write(tmp_path, "good.yaml", course_data(data_root))
    write(
        tmp_path, "bad.yaml", course_data(data_root, id="bad", colour="red", gpus={"policy": "x"})
    )
    cli = os.path.join(os.path.dirname(sys.executable), "jupyter-gpuspawn")
    r = subprocess.run(
        [cli, "validate", str(tmp_path), "--data-root", data_root], capture_output=True, text=True
    )
    assert r.returncode == 1
    assert "bad.yaml: unknown key(s) 'colour'" in r.stdout and "bad.yaml: gpus.policy" in r.stdout
    # each problem once, on stdout; stderr has the count alone (no second copy through the logger)
    assert r.stderr.strip() == "2 course file(s) checked, 2 problem(s)", r.stderr
    os.remove(os.path.join(tmp_path, "bad.yaml"))
    r = subprocess.run(
        [cli, "validate", str(tmp_path), "--data-root", data_root], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout


# ---- hostile course files ------------------------------------------------------------------------
def lol_bomb(levels=9, width=9):
    """The "billion laughs" YAML: ~400 bytes whose aliases stand for width**levels (387 million)
    strings."""
    names = "abcdefghijklmnop"[:levels]
    lines = [f"{names[0]}: &{names[0]} [" + ", ".join(['"lol"'] * width) + "]"]
    for prev, name in zip(names, names[1:], strict=False):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * width) + "]")
    return "\n".join(lines) + "\n"


ANCHORS = "bomb.yaml: YAML anchors/aliases (&, *) are not allowed in course files"


def test_alias_bomb_is_refused_at_once(tmp_path):
    path = write(tmp_path, "bomb.yaml", lol_bomb())
    assert os.path.getsize(path) < 500
    started = time.perf_counter()
    with pytest.raises(CourseError) as e:
        load_course_file(path)
    assert time.perf_counter() - started < 0.5
    assert e.value.problems == [ANCHORS]


def test_alias_bomb_does_not_block_the_catalog_refresh(tmp_path, data_root):
    write(tmp_path, "good.yaml", course_data(data_root))
    # Not used by any key the schema checks: without the guard this file would give other errors at
    # once instead of hanging this process (test_validate_command_refuses_an_alias_bomb_quickly
    # shows the hang, in a child).
    write(tmp_path, "bomb.yaml", lol_bomb())
    started = time.perf_counter()
    view = CourseCatalog(str(tmp_path), [data_root]).refresh()
    assert time.perf_counter() - started < 1
    assert [c.id for c in view.courses] == ["dl101"] and view.errors == (ANCHORS,)


def test_validate_command_refuses_an_alias_bomb_quickly(tmp_path):
    """The reproduction: `jupyter-gpuspawn validate` on a directory with an alias bomb (capped in
    time and memory, so a regression fails here instead of hanging the machine)."""
    import resource

    write(
        tmp_path,
        "bomb.yaml",
        "id: bomb\ntitle: Bomb\n" + lol_bomb() + "description: *i\nimages: *i\n",
    )
    cli = os.path.join(os.path.dirname(sys.executable), "jupyter-gpuspawn")

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (2 * 1024**3, 2 * 1024**3))

    r = subprocess.run(
        [cli, "validate", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=limit_memory,
    )
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stdout == ANCHORS + "\n"
    assert "1 course file(s) checked, 1 problem(s)" in r.stderr


def test_anchors_are_refused_even_when_harmless(tmp_path, data_root):
    text = yaml.safe_dump(course_data(data_root)) + "description: &d hello\n"
    with pytest.raises(CourseError) as e:
        load_course_file(write(tmp_path, "bomb.yaml", text), [data_root])
    assert e.value.problems == [ANCHORS]


def test_course_files_are_capped_in_size(tmp_path, data_root):
    body = yaml.safe_dump(course_data(data_root))
    comment = "# " + "x" * 1000 + "\n"
    near = body + comment * (250 * 1024 // len(comment))
    assert len(near) < 256 * 1024
    assert load_course_file(write(tmp_path, "big.yaml", near), [data_root]).id == "dl101"
    over = body + comment * (257 * 1024 // len(comment) + 1)
    with pytest.raises(CourseError) as e:
        load_course_file(write(tmp_path, "big.yaml", over), [data_root])
    assert e.value.problems == ["big.yaml: is larger than 256 KiB, the limit for course files"]


@pytest.mark.parametrize(
    "changes",
    [
        # jsonschema's own "... is too long" message quotes the whole value
        {"description": "x" * 200_000},
        {"title": list(range(30_000))},  # a type error quotes the value
        {"gpus": {"policy": "p" * 100_000}},  # an enum error quotes the value
        {"id": "I" * 100_000},
        {"env": {"X" * 100_000: "1"}},
        {"images": [{"key": "k", "image": "x", "y" * 100_000: 1}]},
    ],
)
def test_errors_quote_huge_values_short(tmp_path, data_root, changes):
    with pytest.raises(CourseError) as e:
        load_course_file(
            write(tmp_path, "huge.yaml", course_data(data_root, **changes)), [data_root]
        )
    assert all(p.startswith("huge.yaml: ") and len(p) < 400 for p in e.value.problems), str(
        e.value
    )[:1000]


def test_a_thousand_bad_items_give_a_short_list(tmp_path, data_root):
    env = {f"BAD-{i}": "x" for i in range(2000)}
    with pytest.raises(CourseError) as e:
        load_course_file(write(tmp_path, "many.yaml", course_data(data_root, env=env)), [data_root])
    assert len(e.value.problems) == 21 and "more problems not shown" in e.value.problems[-1]


def test_thousands_of_images_or_mounts_are_refused(tmp_path, data_root):
    # all the same key: quadratic to check
    images = [{"key": "k", "image": "local/x:1"} for i in range(8000)]
    mounts = [{"source": f"{data_root}/imagenet", "target": f"/data/{i}"} for i in range(51)]
    with pytest.raises(CourseError) as e:
        load_course_file(
            write(tmp_path, "many.yaml", course_data(data_root, images=images, mounts=mounts)),
            [data_root],
        )
    assert e.value.problems == [
        "many.yaml: images: at most 100 entries are allowed, found 8000",
        "many.yaml: mounts: at most 50 entries are allowed, found 51",
    ]


def test_a_fifo_named_like_a_course_file_does_not_block_the_catalog(tmp_path, data_root):
    import threading

    write(tmp_path, "good.yaml", course_data(data_root))
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    result = []
    worker = threading.Thread(
        target=lambda: result.append(CourseCatalog(str(tmp_path), [data_root]).refresh()),
        daemon=True,
    )
    worker.start()
    worker.join(10)
    if worker.is_alive():  # unblock the reader before failing
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("reading a FIFO course file blocked the catalog refresh")
    [view] = result
    assert [c.id for c in view.courses] == ["dl101"]
    assert view.errors == ("fifo.yaml: is not a regular file",)


course_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(
        ["/etc", "//data", "/data/x", "8G", "9" * 400 + "G", "shared", "k", "local/x:1"]
    )
)
course_values = st.recursive(
    course_leaf,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.text(max_size=8)
            | st.sampled_from(
                [
                    "key",
                    "image",
                    "source",
                    "target",
                    "read_only",
                    "default",
                    "max",
                    "policy",
                    "mem_limit",
                    "shm_size",
                    "LD_PRELOAD",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)
course_sections = {  # each section mostly well-formed, with hostile values where it matters
    "resources": st.fixed_dictionaries(
        {}, optional={k: course_leaf for k in ("mem_limit", "cpu_limit", "shm_size")}
    ),
    "mounts": st.lists(
        st.fixed_dictionaries(
            {
                "source": st.sampled_from(["/data", "/data/x", "/etc"]) | course_leaf,
                "target": course_leaf,
            }
        ),
        max_size=3,
    ),
    "gpus": st.fixed_dictionaries(
        {}, optional={k: course_leaf for k in ("default", "max", "policy")}
    ),
    "env": st.dictionaries(
        st.text(max_size=10) | st.sampled_from(["LD_PRELOAD", "OK"]), course_leaf, max_size=3
    ),
}


@settings(max_examples=300, deadline=None)
@given(
    data=st.dictionaries(
        st.sampled_from(
            [
                "id",
                "title",
                "description",
                "groups",
                "users",
                "images",
                "gpus",
                "resources",
                "mounts",
                "env",
            ]
        ),
        course_values,
        max_size=10,
    ),
    sections=st.fixed_dictionaries({}, optional=course_sections),
    complete=st.booleans(),
)
def test_hostile_course_data_is_a_course_or_a_course_error(data, sections, complete):
    data = dict(data, **sections)
    if complete:
        data = dict(
            {"id": "x", "title": "t", "images": [{"key": "k", "image": "local/x:1"}]}, **data
        )
    try:
        course = parse_course(data, "f.yaml", ["/data"])
    # never another exception: the hub's catalog refresh only expects this one
    except CourseError as e:
        assert e.problems and all(p.startswith("f.yaml: ") and len(p) < 500 for p in e.problems)
        return
    assert isinstance(course, Course)
    assert all(m.target.startswith("/") and not m.target.startswith("//") for m in course.mounts)


# ---- mounts --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "target, normal",
    [
        ("//etc", "/etc"),
        ("///etc", "/etc"),
        ("/etc/", "/etc"),
        ("/./etc", "/etc"),
        ("/data/../etc", "/etc"),
        ("//data//x/./", "/data/x"),
        ("/", "/"),
        ("//", "/"),
        ("data/x", "data/x"),
        ("/../..", "/"),
    ],
)
def test_mount_targets_are_normalised(target, normal):
    assert normalize_mount_target(target) == normal


@pytest.mark.parametrize(
    "target",
    [
        "//etc",
        "/etc/",
        "/./etc",
        "/data/../etc",
        "//",
        "/usr//",
        "//home",
        "/proc/sys",
        "/proc/1/root",
        "/sys/fs/cgroup",
        "/dev/nvidia0",
        "//dev/shm",
        "/dev/shm/x",
        "/opt/jupyter-gpuspawn/",
    ],
)
def test_system_directories_cannot_be_mount_targets_however_written(tmp_path, data_root, target):
    mounts = [{"source": f"{data_root}/imagenet", "target": target}]
    with pytest.raises(CourseError) as e:
        load_course_file(
            write(tmp_path, "c.yaml", course_data(data_root, mounts=mounts)), [data_root]
        )
    assert e.value.problems == [
        f"c.yaml: mounts.0.target: {target!r} must be an absolute path that is not a "
        "system directory (e.g. /data/course)"
    ]


def test_mount_targets_are_stored_normalised(tmp_path, data_root):
    mounts = [
        {"source": f"{data_root}/imagenet/", "target": "//data//imagenet/"},
        {"source": f"{data_root}/imagenet", "target": "/devices", "read_only": False},
    ]
    course = load_course_file(
        write(tmp_path, "c.yaml", course_data(data_root, mounts=mounts)), [data_root]
    )
    assert course.mounts == (
        Mount(f"{data_root}/imagenet", "/data/imagenet", True),
        Mount(f"{data_root}/imagenet", "/devices", False),
    )


def test_course_mounts_may_not_take_over_admin_volumes(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (tmp_path / "link").symlink_to(shared)
    # a symlink: compared by realpath
    admin = {
        str(tmp_path / "link"): {"bind": "/srv/shared/", "mode": "ro"},
        "jupyterhub-user-alice": {"bind": "/home/jovyan/work", "mode": "rw"},  # a named volume
        "/opt/tools": "//opt/tools",
    }  # DockerSpawner's short form: host -> container path
    same_source = Mount(str(shared), "/data/shared", read_only=False)
    same_target = Mount(str(tmp_path / "other"), "/srv/shared", read_only=True)
    same_target_spelled_differently = Mount(str(tmp_path / "tools"), "/opt/./tools/")
    fine = Mount(str(tmp_path / "other"), "/data/other")
    # a part of it, read-write elsewhere
    inside = Mount(str(shared / "part"), "/data/part", read_only=False)
    holding = Mount(str(tmp_path), "/data/all")  # a directory that holds it
    problems = conflicting_mounts(
        [same_source, same_target, same_target_spelled_differently, fine], admin
    )
    assert problems == [
        f"course mount {shared} -> /data/shared: {tmp_path / 'link'} is an admin volume (mounted "
        f"at "
        "/srv/shared); a course cannot mount it, a part of it or a directory holding it again, "
        "nor change its mode",
        f"course mount {tmp_path / 'other'} -> /srv/shared: /srv/shared is already the target of "
        f"the admin volume "
        f"{tmp_path / 'link'}",
        f"course mount {tmp_path / 'tools'} -> /opt/tools: /opt/tools is already the target of the "
        f"admin volume "
        "/opt/tools",
    ]
    assert conflicting_mounts([fine], admin) == [] and conflicting_mounts([same_source], {}) == []
    assert (
        len(conflicting_mounts([inside], admin)) == 1
        and len(conflicting_mounts([holding], admin)) == 1
    )
    # not a prefix match
    assert conflicting_mounts([Mount(str(tmp_path / "shared-other"), "/data/x")], admin) == []


# ---- form ----------------------------------------------------------------------------------------
def gpus(n):
    return tuple(GPU(f"GPU-{i}", i, "NVIDIA A100 80GB", 80 * GiB) for i in range(n))


def render(courses, previous=None, n_gpus=8, simulated=True, allocator=None, admin_errors=()):
    snapshot = Snapshot("simulated" if simulated else "nvml", gpus(n_gpus))
    return render_form(
        template_environment([]),
        courses=courses,
        previous=previous or {},
        snapshot=snapshot,
        allocator=allocator or GPUAllocator(),
        admin_errors=admin_errors,
    )


def two_courses(tmp_path, data_root):
    a = load_course_file(write(tmp_path, "a.yaml", course_data(data_root)), [data_root])
    b = load_course_file(
        write(
            tmp_path,
            "b.yaml",
            course_data(
                data_root,
                id="cpu",
                title="Data Science (CPU)",
                gpus={"max": 0},
                mounts=None,
                images=[
                    {"key": "scipy", "image": "local/scipy:1"},
                    {"key": "r", "image": "local/r:1", "label": "R 4.4"},
                ],
            ),
        ),
        [data_root],
    )
    return a, b


def test_form_shows_live_availability_and_the_simulated_badge(tmp_path, data_root):
    a, b = two_courses(tmp_path, data_root)
    allocator = GPUAllocator()
    allocator.allocate(GPURequest("someone", count=5), gpus(8))
    html = render([a, b], allocator=allocator)
    assert "3 of 8 GPUs free — NVIDIA A100 80GB" in html
    assert "simulated GPUs" in html
    assert "Deep Learning 101" in html and "Data Science (CPU)" in html
    assert 'name="gpus:dl101"' in html and 'name="image:cpu"' in html
    assert "No GPUs" not in html and "CPU only" in html  # the CPU course offers no GPUs
    assert "simulated GPUs" not in render([a], simulated=False)


def test_form_shows_the_queue_when_every_gpu_is_taken_and_still_offers_cpu_only(
    tmp_path, data_root
):
    a, b = two_courses(tmp_path, data_root)
    allocator = GPUAllocator()
    allocator.allocate(GPURequest("someone", count=8), gpus(8))
    html = render_form(
        template_environment([]),
        courses=[a, b],
        previous={},
        snapshot=Snapshot("nvml", gpus(8)),
        allocator=allocator,
        queue_line=lambda course: "3 waiting · you would be 4th",
    )
    assert "All 8 GPUs are in use — NVIDIA A100 80GB · 3 waiting · you would be 4th" in html
    assert "(only 0 free now, you would wait)" in html
    # the CPU course is still there to pick
    assert "Data Science (CPU)" in html and "CPU only" in html
    without_queue = render([a], allocator=allocator)
    assert (
        "All 8 GPUs are in use — NVIDIA A100 80GB · no queue here: try again later" in without_queue
    )


def test_form_prefills_the_last_choice(tmp_path, data_root):
    a, b = two_courses(tmp_path, data_root)
    html = render([a, b], previous={"course": "cpu", "image": "r", "gpus": 0})
    assert 'value="cpu" checked' in html and 'value="r" selected' in html
    assert 'value="dl101" checked' not in html
    # stale or hostile saved options fall back to defaults
    html = render([a, b], previous={"course": "gone", "image": "<x>", "gpus": 99})
    assert 'value="dl101" checked' in html and 'value="1" selected' in html


def test_everything_from_course_files_is_escaped(tmp_path, data_root):
    evil = load_course_file(
        write(
            tmp_path,
            "x.yaml",
            course_data(
                data_root,
                title="<script>alert(1)</script>",
                description='"><img src=x onerror=alert(2)>',
                images=[
                    {"key": "k", "image": "local/x:1", "label": "<b>bold</b>"},
                    {"key": "k2", "image": "local/y:1"},
                ],
            ),
        ),
        [data_root],
    )
    html = render([evil], admin_errors=["<i>bad.yaml</i>"])
    assert (
        "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    )
    assert "<img src=x" not in html and "<b>bold</b>" not in html and "<i>bad.yaml</i>" not in html


def test_form_template_can_be_overridden(tmp_path, data_root):
    site = tmp_path / "site"
    site.mkdir()
    (site / "gpuspawn_form.html").write_text("SITE FORM {{ cards | length }} {{ gpu_free }}")
    a, _ = two_courses(tmp_path, data_root)
    snapshot = Snapshot("nvml", gpus(2))
    html = render_form(
        template_environment([str(site)]),
        courses=[a],
        previous={},
        snapshot=snapshot,
        allocator=GPUAllocator(),
    )
    assert html == "SITE FORM 1 2"


def test_instructors_own_their_course_and_may_start_it_admins_own_all(tmp_path, data_root):
    data = course_data(data_root, instructors=["prof"], instructor_groups=["dl-staff"])
    course = load_course_file(write(tmp_path, "dl101.yaml", data), [data_root])
    assert course.instructors == ("prof",) and course.instructor_groups == ("dl-staff",)
    assert (
        course.owned_by("prof", [])
        and course.owned_by("ta", ["dl-staff"])
        and course.owned_by("root", [], True)
    )
    assert not course.owned_by("student", ["dl101-students"]) and not course.owned_by(
        "prof2", ["staff"]
    )
    # instructors see the course in the spawn form although they are not in its student group
    assert course.visible_to("prof", []) and course.visible_to("ta", ["dl-staff"])
    assert course.visible_to("student", ["dl101-students"]) and not course.visible_to("other", [])
    plain = load_course_file(
        write(tmp_path, "plain.yaml", course_data(data_root, id="plain")), [data_root]
    )
    assert plain.instructors == () and not plain.owned_by("prof", [])


def test_an_archived_course_is_hidden_from_every_form_and_kept_valid(tmp_path, data_root):
    data = course_data(data_root, instructors=["prof"], archived=True)
    course = load_course_file(write(tmp_path, "dl101.yaml", data), [data_root])
    assert course.archived
    for user, groups, admin in (
        ("student", ["dl101-students"], False),
        ("prof", [], False),
        ("root", [], True),
    ):
        assert not course.visible_to(user, groups, admin), user
    assert course.owned_by("prof", [])  # its instructor still manages (and may restore) it
    with pytest.raises(CourseError, match="archived: expected boolean"):
        load_course_file(
            write(tmp_path, "bad.yaml", course_data(data_root, archived="yes")), [data_root]
        )


@pytest.mark.parametrize(
    "section, key", [("gpus", "weekly_hours"), ("idle", "minutes"), ("resources", "cpu_limit")]
)
def test_nan_and_infinity_are_refused_where_numbers_are_capped(tmp_path, data_root, section, key):
    for value, message in ((".nan", "is not a number"), (".inf", "greater than the maximum")):
        path = tmp_path / "dl101.yaml"
        path.write_text(
            f"id: dl101\ntitle: DL\nimages: [{{key: a, image: 'img:1'}}]\n{section}: "
            f"{{{key}: {value}}}\n"
        )
        with pytest.raises(CourseError, match=f"{section}.{key}: .*{message}"):
            load_course_file(str(path), [data_root])


def test_env_names_must_be_strings_and_few(tmp_path, data_root):
    path = tmp_path / "dl101.yaml"
    path.write_text("id: dl101\ntitle: DL\nimages: [{key: a, image: 'img:1'}]\nenv: {1: x}\n")
    with pytest.raises(CourseError, match="env"):
        load_course_file(str(path), [data_root])


def test_the_rules_a_running_server_keeps_survive_json_and_bad_values_fall_back(
    tmp_path, data_root
):
    import json

    course = load_course_file(
        write(
            tmp_path,
            "dl101.yaml",
            course_data(
                data_root,
                gpus={"default": 1, "max": 2, "weekly_hours": 20},
                idle={"minutes": 90, "warn_minutes": 10, "reclaim": "never"},
            ),
        ),
        [data_root],
    )
    kept = json.loads(json.dumps(course.kept_rules()))
    assert kept == {
        "title": "Deep Learning 101",
        "weekly_hours": 20,
        "idle_minutes": 90,
        "idle_warn_minutes": 10,
        "idle_reclaim": "never",
    }
    back = Course.from_kept_rules("dl101", kept)
    assert back.kept_rules() == kept and back.id == "dl101"
    # a course that sets none of them keeps None: the spawner's settings, as for the live course
    plain = load_course_file(write(tmp_path, "p.yaml", course_data(data_root)), [data_root])
    assert set(Course.from_kept_rules("dl101", plain.kept_rules()).kept_rules().values()) == {
        "Deep Learning 101",
        None,
    }
    # no kept rules (a server started before they were kept), or no course: nothing to judge by
    for rules in (None, [], "x"):
        assert Course.from_kept_rules("dl101", rules) is None
    assert Course.from_kept_rules("", kept) is None
    # values the state should never hold fall back to the spawner's settings, one by one
    odd = Course.from_kept_rules(
        "dl101",
        {
            "title": 7,
            "weekly_hours": True,
            "idle_minutes": 0,
            "idle_warn_minutes": float("nan"),
            "idle_reclaim": "sometimes",
        },
    )
    assert odd.title == "dl101"
    assert (odd.weekly_hours, odd.idle_minutes, odd.idle_warn_minutes, odd.idle_reclaim) == (
        None,
        None,
        None,
        None,
    )
    assert Course.from_kept_rules("dl101", {"weekly_hours": 0}).weekly_hours == 0
