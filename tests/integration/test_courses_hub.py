"""Courses through a real hub: visibility enforced for API spawns, settings applied to the
container, live reload."""

from __future__ import annotations

import os
import subprocess
import time

import yaml

from .conftest import gpuspawn_containers, labelled
from .hub import TEST_IMAGE


def write_course(directory, data):
    path = os.path.join(directory, f"{data['id']}.yaml")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        yaml.safe_dump(data, f)
    os.replace(tmp, path)


def course(cid, **extra):
    data = {
        "id": cid,
        "title": f"Course {cid.upper()}",
        "images": [{"key": "default", "image": TEST_IMAGE}],
        "gpus": {"default": 0, "max": 1},
    }
    data.update(extra)
    return data


def courses_hub(make_hub, tmp_path, n_gpus=2, courses=()):
    courses_dir = tmp_path / "courses"
    data_root = tmp_path / "datasets"
    (data_root / "course-c").mkdir(parents=True)
    (data_root / "course-c" / "README").write_text("read me\n")
    os.chmod(tmp_path, 0o755)
    courses_dir.mkdir()
    for data in courses:
        write_course(courses_dir, data)
    hub = make_hub(
        n_gpus=n_gpus,
        extra_config=f"""
c.GPUDockerSpawner.courses_dir = {str(courses_dir)!r}
c.GPUDockerSpawner.course_data_roots = [{str(data_root)!r}]
""",
    )
    return hub, str(courses_dir), str(data_root)


def add_group(hub, group, *users):
    r = hub.session.post(f"{hub.api}/groups/{group}", json={"users": list(users)})
    assert r.status_code in (201, 409), r.text


def docker_exec(container, script, check=True):
    return subprocess.run(
        ["docker", "exec", container["Id"], "sh", "-c", script],
        capture_output=True,
        text=True,
        check=check,
    )


def test_students_only_reach_their_courses_and_changes_apply_without_restart(make_hub, tmp_path):
    hub, courses_dir, _ = courses_hub(
        make_hub,
        tmp_path,
        courses=[
            course("a", groups=["group-a"]),
            course("b", groups=["group-b"]),
        ],
    )
    hub.create_users("stu-a", "stu-b")
    add_group(hub, "group-a", "stu-a")
    add_group(hub, "group-b", "stu-b")

    r = hub.spawn("stu-a", {"course": "b"})
    assert r.status_code == 403 and "not enrolled in course 'b'" in r.json()["message"]
    r = hub.spawn("stu-a", {"course": "nope"})
    assert r.status_code == 400 and "Your courses: a" in r.json()["message"]
    assert gpuspawn_containers() == []

    hub.spawn_ready("stu-a", {"course": "a", "gpus": 1})
    [container] = labelled("stu-a")
    assert container["Config"]["Labels"]["org.jupyter.gpuspawn.course"] == "a"
    hub.stop_server("stu-a")

    # the instructor opens course b to stu-a by editing its file: no hub restart
    write_course(courses_dir, course("b", groups=["group-b"], users=["stu-a"]))
    deadline = time.monotonic() + 10
    while (
        r := hub.spawn("stu-a", {"course": "b"})
    ).status_code == 403 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert r.status_code in (201, 202), r.text
    hub.wait_ready("stu-a")

    # a file that turns invalid keeps its last good version live: the old version is what starts
    write_course(courses_dir, course("a", groups=["group-a"], env={"COURSE_VERSION": "1"}))
    time.sleep(1.2)
    # any request that consults the catalog loads version 1 (here one refused for its GPU count)
    assert hub.spawn("stu-a", {"course": "a", "gpus": 9}, server="again").status_code == 400
    write_course(
        courses_dir, course("a", groups=["group-a"], env={"COURSE_VERSION": "2"}, colour="red")
    )
    time.sleep(1.2)
    hub.spawn_ready("stu-a", {"course": "a"}, server="again")
    [container] = labelled("stu-a", "again")
    env = dict(e.split("=", 1) for e in container["Config"]["Env"])
    assert env["COURSE_VERSION"] == "1" and env["JUPYTER_GPUSPAWN_COURSE"] == "a"


def test_course_settings_reach_the_container(make_hub, tmp_path):
    hub, _, data_root = courses_hub(
        make_hub,
        tmp_path,
        courses=[
            course(
                "c",
                resources={"mem_limit": "1G", "cpu_limit": 1.5, "shm_size": "256M"},
                mounts=[
                    {
                        "source": os.path.join(str(tmp_path), "datasets", "course-c"),
                        "target": "/data/course",
                    }
                ],
                env={"COURSE_GREETING": "hello c", "OMP_NUM_THREADS": "2"},
            )
        ],
    )
    hub.create_users("stu-c")
    hub.spawn_ready("stu-c", {"course": "c", "gpus": 1})
    [container] = labelled("stu-c")
    host = container["HostConfig"]
    assert host["Memory"] == 1024**3
    assert host["CpuQuota"] == 150_000 and host["CpuPeriod"] == 100_000
    assert host["ShmSize"] == 256 * 1024**2
    assert f"{data_root}/course-c:/data/course:ro" in host["Binds"]

    env = dict(e.split("=", 1) for e in container["Config"]["Env"])
    assert env["COURSE_GREETING"] == "hello c" and env["OMP_NUM_THREADS"] == "2"
    assert env["JUPYTER_GPUSPAWN_COURSE"] == "c" and env["MEM_LIMIT"] == str(1024**3)

    inside = docker_exec(
        container, "echo $COURSE_GREETING; cat /data/course/README; df -k /dev/shm | tail -1"
    )
    lines = inside.stdout.splitlines()
    assert lines[0] == "hello c" and lines[1] == "read me"
    assert lines[2].split()[1] == str(256 * 1024)  # /dev/shm size in KiB
    write = docker_exec(container, "touch /data/course/new-file", check=False)
    assert write.returncode != 0 and "Read-only file system" in write.stderr


def test_shared_course_puts_students_on_one_gpu_up_to_its_limit(make_hub, tmp_path):
    hub, _, _ = courses_hub(
        make_hub,
        tmp_path,
        n_gpus=1,
        courses=[
            course(
                "lab", gpus={"default": 1, "max": 1, "policy": "shared", "max_users_per_gpu": 2}
            ),
        ],
    )
    hub.create_users("s1", "s2", "s3")
    hub.spawn_ready("s1", {"course": "lab"})
    hub.spawn_ready("s2", {"course": "lab"})
    [c1], [c2] = labelled("s1"), labelled("s2")
    assert (
        c1["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"]
        == c2["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"]
    )
    assert c1["Config"]["Labels"]["org.jupyter.gpuspawn.gpu-policy"] == "shared"
    r = hub.spawn("s3", {"course": "lab"})
    assert r.status_code == 409 and "The only GPU is in use" in r.json()["message"]


def test_missing_course_data_is_a_clear_error_that_holds_nothing(make_hub, tmp_path):
    hub, _, data_root = courses_hub(
        make_hub,
        tmp_path,
        n_gpus=1,
        courses=[
            course(
                "d",
                mounts=[
                    {
                        "source": os.path.join(str(tmp_path), "datasets", "not-there"),
                        "target": "/data/d",
                    }
                ],
            ),
        ],
    )
    hub.create_users("stu-d")
    r = hub.spawn("stu-d", {"course": "d", "gpus": 1})
    assert (
        r.status_code == 500
        and "course data for Course D (/data/d) is not available" in r.json()["message"]
    )
    assert gpuspawn_containers() == []


def test_course_data_swapped_for_a_symlink_after_the_check_is_refused(make_hub, tmp_path):
    hub, _, data_root = courses_hub(
        make_hub,
        tmp_path,
        n_gpus=1,
        courses=[
            course(
                "d",
                mounts=[
                    {
                        "source": os.path.join(str(tmp_path), "datasets", "course-c"),
                        "target": "/data/d",
                    }
                ],
            ),
        ],
    )
    hub.create_users("stu-d")
    # the catalog has checked the file (and resolved the source) once the form or a start read it
    assert hub.spawn("stu-d", {"course": "d", "gpus": 9}).status_code == 400
    source = os.path.join(data_root, "course-c")
    os.rename(source, source + "-old")
    os.symlink("/", source)  # the course file is unchanged: the catalog keeps its old check
    r = hub.spawn("stu-d", {"course": "d"})
    assert (
        r.status_code == 500 and "course data for Course D (/data/d) changed" in r.json()["message"]
    )
    assert gpuspawn_containers() == []


def test_a_course_mount_cannot_take_over_an_admin_volume(make_hub, tmp_path):
    # The admin mounts /datasets read-only for everyone; a course that mounts the same host path
    # read-write would replace that bind (Docker keys binds by host path) and hand students write
    # access.
    data_root = tmp_path / "datasets"
    courses_dir = tmp_path / "courses"
    (data_root / "shared").mkdir(parents=True)
    (data_root / "course").mkdir()
    courses_dir.mkdir()
    os.chmod(tmp_path, 0o755)
    write_course(
        str(courses_dir),
        course(
            "rw",
            mounts=[
                {"source": str(data_root / "shared"), "target": "/course-data", "read_only": False}
            ],
        ),
    )
    write_course(
        str(courses_dir),
        course(
            "ok",
            mounts=[
                {"source": str(data_root / "course"), "target": "/course-data", "read_only": True}
            ],
        ),
    )
    hub = make_hub(
        n_gpus=1,
        extra_config=f"""
c.GPUDockerSpawner.courses_dir = {str(courses_dir)!r}
c.GPUDockerSpawner.course_data_roots = [{str(data_root)!r}]
c.GPUDockerSpawner.volumes = {{
    {str(data_root / "shared")!r}: {{"bind": "/datasets", "mode": "ro"}}
}}
""",
    )
    hub.create_users("pia")
    r = hub.spawn("pia", {"course": "rw", "gpus": 1})
    assert r.status_code == 500, r.text
    assert (
        r.json()["message"]
        == "The data mounts of Course RW clash with the server's own volumes; tell the admin."
    )
    assert "is an admin volume" in hub.log_tail(50)
    assert gpuspawn_containers() == []
    hub.spawn_ready("pia", {"course": "ok", "gpus": 1})  # nothing was held by the refused start
    [container] = labelled("pia")
    mounts = {m["Destination"]: m for m in container["Mounts"]}
    assert mounts["/datasets"]["RW"] is False and mounts["/course-data"]["RW"] is False
