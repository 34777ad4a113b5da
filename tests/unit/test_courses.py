from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

from jupyter_gpuspawn.allocation import GiB, GPUAllocator, GPURequest
from jupyter_gpuspawn.courses import CourseCatalog, CourseError, load_course_file
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
    assert course.mem_limit == 16 * 1024**3 and course.shm_size == 2 * 1024**3 and course.cpu_limit == 4
    assert course.mounts[0].read_only is True  # read-only unless said otherwise
    assert course.env == (("DATASET_DIR", "/data/imagenet"),)


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"colour": "red"}, "dl101.yaml: unknown key(s) 'colour' in (top level); allowed: description, env, gpus,"),
        ({"title": None}, "dl101.yaml: (top level): 'title' is required"),
        ({"id": "DL 101"}, "dl101.yaml: id: 'DL 101' must be lower-case letters, digits, - or _"),
        ({"gpus": {"policy": "fast"}}, "dl101.yaml: gpus.policy: 'fast' is not allowed; use one of 'exclusive', 'shared'"),
        ({"gpus": {"max": "two"}}, "dl101.yaml: gpus.max: expected integer, got str 'two'"),
        ({"gpus": {"default": 3, "max": 2}}, "gpus.default (3) is more than gpus.max (2)"),
        ({"gpus": {"maximum": 2}}, "unknown key(s) 'maximum' in gpus; allowed: default, max, max_users_per_gpu, policy"),
        ({"images": []}, "dl101.yaml: images: [] should be non-empty"),
        ({"images": [{"key": "a", "image": "x"}, {"key": "a", "image": "y"}]}, "images: key 'a' is used twice"),
        ({"resources": {"mem_limit": "lots"}}, "resources.mem_limit: 'lots' must be a size such as 8G or 512M"),
        ({"env": {"NVIDIA_VISIBLE_DEVICES": "all"}}, "env.NVIDIA_VISIBLE_DEVICES: reserved, set by the spawner"),
        ({"env": {"LD_PRELOAD": "/x.so"}}, "env.LD_PRELOAD: reserved"),
        ({"env": {"1BAD": "x"}}, "'1BAD' is not a valid environment variable name"),
        ({"mounts": [{"source": "/etc", "target": "/data/etc"}]}, "mounts.0.source: '/etc' is outside the course data roots"),
        ({"mounts": [{"source": "@DATA@/../../etc", "target": "/data/x"}]}, "is outside the course data roots"),
        ({"mounts": [{"source": "@DATA@/imagenet", "target": "/etc"}]}, "mounts.0.target: '/etc' must be an absolute path"),
        ({"mounts": [{"source": "@DATA@/imagenet", "target": "data"}]}, "mounts.0.target: 'data' must be an absolute path"),
    ],
)
def test_each_kind_of_mistake_names_file_key_and_what_is_allowed(tmp_path, data_root, changes, expected):
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
    assert [c.title for c in view.courses] == ["Deep Learning 101"] and view.errors == ()

    time.sleep(0.01)
    write(tmp_path, "dl101.yaml", course_data(data_root, title="Deep Learning 101 (v2)", gpus={"policy": "nope"}))
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    view = catalog.refresh()
    assert [c.title for c in view.courses] == ["Deep Learning 101"]  # nothing lost, nothing half-applied
    assert len(view.errors) == 1 and "gpus.policy" in view.errors[0]

    write(tmp_path, "dl101.yaml", course_data(data_root, title="Deep Learning 101 (v2)"))
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
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
    write(tmp_path, "bad.yaml", course_data(data_root, id="bad", colour="red", gpus={"policy": "x"}))
    cli = os.path.join(os.path.dirname(sys.executable), "jupyter-gpuspawn")
    r = subprocess.run([cli, "validate", str(tmp_path), "--data-root", data_root], capture_output=True, text=True)
    assert r.returncode == 1
    assert "bad.yaml: unknown key(s) 'colour'" in r.stdout and "bad.yaml: gpus.policy" in r.stdout
    assert "2 course file(s) checked, 2 problem(s)" in r.stderr
    os.remove(os.path.join(tmp_path, "bad.yaml"))
    r = subprocess.run([cli, "validate", str(tmp_path), "--data-root", data_root], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


# ---- form ----------------------------------------------------------------------------------------------------------
def gpus(n):
    return tuple(GPU(f"GPU-{i}", i, "NVIDIA A100 80GB", 80 * GiB) for i in range(n))


def render(courses, previous=None, n_gpus=8, simulated=True, allocator=None, admin_errors=()):
    snapshot = Snapshot("simulated" if simulated else "nvml", gpus(n_gpus))
    return render_form(template_environment([]), courses=courses, previous=previous or {}, snapshot=snapshot,
                       allocator=allocator or GPUAllocator(), admin_errors=admin_errors)


def two_courses(tmp_path, data_root):
    a = load_course_file(write(tmp_path, "a.yaml", course_data(data_root)), [data_root])
    b = load_course_file(write(tmp_path, "b.yaml", course_data(
        data_root, id="cpu", title="Data Science (CPU)", gpus={"max": 0}, mounts=None,
        images=[{"key": "scipy", "image": "local/scipy:1"}, {"key": "r", "image": "local/r:1", "label": "R 4.4"}],
    )), [data_root])
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


def test_form_prefills_the_last_choice(tmp_path, data_root):
    a, b = two_courses(tmp_path, data_root)
    html = render([a, b], previous={"course": "cpu", "image": "r", "gpus": 0})
    assert 'value="cpu" checked' in html and 'value="r" selected' in html
    assert 'value="dl101" checked' not in html
    # stale or hostile saved options fall back to defaults
    html = render([a, b], previous={"course": "gone", "image": "<x>", "gpus": 99})
    assert 'value="dl101" checked' in html and 'value="1" selected' in html


def test_everything_from_course_files_is_escaped(tmp_path, data_root):
    evil = load_course_file(write(tmp_path, "x.yaml", course_data(
        data_root, title="<script>alert(1)</script>", description='"><img src=x onerror=alert(2)>',
        images=[{"key": "k", "image": "local/x:1", "label": "<b>bold</b>"}, {"key": "k2", "image": "local/y:1"}],
    )), [data_root])
    html = render([evil], admin_errors=["<i>bad.yaml</i>"])
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "<b>bold</b>" not in html and "<i>bad.yaml</i>" not in html


def test_form_template_can_be_overridden(tmp_path, data_root):
    site = tmp_path / "site"
    site.mkdir()
    (site / "gpuspawn_form.html").write_text("SITE FORM {{ cards | length }} {{ gpu_free }}")
    a, _ = two_courses(tmp_path, data_root)
    snapshot = Snapshot("nvml", gpus(2))
    html = render_form(template_environment([str(site)]), courses=[a], previous={}, snapshot=snapshot,
                       allocator=GPUAllocator())
    assert html == "SITE FORM 1 2"
