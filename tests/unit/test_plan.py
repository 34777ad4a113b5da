"""The container plan and its Docker rendering, built from plain values (no spawner, no Docker)."""

from __future__ import annotations

from jupyter_gpuspawn.courses import Course, CourseImage, Mount
from jupyter_gpuspawn.plan import (
    AdminSettings,
    Bind,
    Hardening,
    docker_create_kwargs,
    plan_container,
)
from jupyter_gpuspawn.spec import GPUAssignment

GPU = GPUAssignment("alice", "", ("GPU-1",), course="dl", image_key="pt")
CPU = GPUAssignment("alice", "", (), course="dl")
ADMIN = AdminSettings(
    mem_limit=4 * 2**30,
    cpu_limit=2.0,
    shm_size=2**30,
    hardening=Hardening(pids_limit=4096, cap_add=("SYS_NICE",)),
    environment_names=frozenset({"NVIDIA_VISIBLE_DEVICES", "LD_PRELOAD", "SITE"}),
    binds=(Bind("/data/shared", "/shared", "ro"),),
)
BASE_ENV = {
    "JUPYTERHUB_API_TOKEN": "t",
    "NVIDIA_VISIBLE_DEVICES": "all",
    "LD_PRELOAD": "/x.so",
    "SITE": "lab",
    "MEM_LIMIT": "1",
}
COURSE = Course(
    id="dl",
    title="DL",
    images=(CourseImage("pt", "img:1"),),
    mem_limit=8 * 2**30,
    shm_size=4 * 2**30,
    mounts=(Mount("/srv/ds/mnist", "/data/mnist"),),
    env=(("TORCH_HOME", "/data/mnist"),),
)


def plan(assignment=GPU, course=COURSE, **kw):
    args = dict(
        assignment=assignment,
        image="img:1",
        uid=200001,
        gid=200001,
        base_env=BASE_ENV,
        admin=ADMIN,
        course=course,
        host_home="/srv/home/alice",
        home="/home/alice",
    )
    args.update(kw)
    return plan_container(**args)


def render(p, **kw):
    args = dict(name="jupyter-alice", command=["start"], port=8888, network="jupyter-gpuspawn")
    args.update(kw)
    return docker_create_kwargs(p, **args)


def test_the_plan_holds_the_course_s_limits_env_and_mounts_and_only_the_spawner_s_gpu_env():
    p = plan()
    env = p.env_dict()
    assert env["NVIDIA_VISIBLE_DEVICES"] == "GPU-1" and env["JUPYTER_GPUSPAWN_GPUS"] == "GPU-1"
    assert (
        env["SITE"] == "lab" and env["TORCH_HOME"] == "/data/mnist" and env["HOME"] == "/home/alice"
    )
    # the course's memory, the admin's CPU
    assert env["MEM_LIMIT"] == str(8 * 2**30) and env["CPU_LIMIT"] == "2.0"
    assert p.ignored_env == ("LD_PRELOAD", "NVIDIA_VISIBLE_DEVICES") and "LD_PRELOAD" not in env
    assert (p.mem_limit, p.cpu_limit, p.shm_size) == (8 * 2**30, 2.0, 4 * 2**30)
    assert [(b.source, b.target, b.mode) for b in p.binds] == [
        ("/data/shared", "/shared", "ro"),
        ("/srv/ds/mnist", "/data/mnist", "ro"),
        ("/srv/home/alice", "/home/alice", "rw"),
    ]
    cpu = plan(assignment=CPU, course=None)
    assert cpu.env_dict()["NVIDIA_VISIBLE_DEVICES"] == "void" and cpu.mem_limit == 4 * 2**30


def test_notices_and_the_simulated_inventory_are_mounted_read_only_with_their_env():
    p = plan(
        notice_dir="/run/gpuspawn/notices/ab",
        notice_file="notice.json",
        simulated_file="/etc/gpus.json",
        simulated_env="GPU-1: A100",
    )
    env = p.env_dict()
    assert env["JUPYTER_GPUSPAWN_NOTICE_FILE"] == "/etc/jupyter-gpuspawn/notices/notice.json"
    assert env["JUPYTER_GPUSPAWN_SIMULATED_FILE"] == "/etc/jupyter-gpuspawn/simulated-gpus.json"
    assert Bind("/run/gpuspawn/notices/ab", "/etc/jupyter-gpuspawn/notices", "ro") in p.binds
    assert Bind("/etc/gpus.json", "/etc/jupyter-gpuspawn/simulated-gpus.json", "ro") in p.binds


def test_the_admin_s_settings_are_merged_under_the_plan_whatever_a_hook_assigned():
    create, host, warnings = render(
        plan(),
        admin_create={"labels": {"site": "lab"}, "user": "0:0"},
        admin_host={
            "cap_add": ["NET_ADMIN"],
            "privileged": False,
            "device_requests": [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}],
        },
    )
    assert host["device_requests"] == [
        {"driver": "nvidia", "device_ids": ["GPU-1"], "capabilities": [["gpu"]]}
    ]
    assert warnings and "GPUs are assigned by UUID" in warnings[0]
    assert host["cap_drop"] == ["ALL"] and host["cap_add"] == ["NET_ADMIN", "SYS_NICE"]
    assert host["security_opt"] == ["no-new-privileges:true"] and host["auto_remove"] is False
    assert (
        host["shm_size"] == 4 * 2**30
        and host["pids_limit"] == 4096
        and host["mem_limit"] == 8 * 2**30
    )
    assert host["cpu_quota"] == 200_000 and host["network_mode"] == "jupyter-gpuspawn"
    assert host["binds"]["/srv/home/alice"] == {"bind": "/home/alice", "mode": "rw"}
    assert create["user"] == "200001:200001"  # never root, whatever the admin wrote
    assert (
        create["labels"]["site"] == "lab"
        and create["labels"]["org.jupyter.gpuspawn.gpus"] == "GPU-1"
    )
    assert (
        create["working_dir"] == "/home/alice"
        and create["environment"]["NVIDIA_VISIBLE_DEVICES"] == "GPU-1"
    )
    assert create["volumes"] == ["/shared", "/data/mnist", "/home/alice"] and create["ports"] == {
        "8888/tcp": None
    }
    # a hook that empties the admin's settings still gets the plan's isolation
    _, bare, _ = render(plan(assignment=CPU), admin_create=None, admin_host=None)
    assert bare["device_requests"] == [] and bare["cap_drop"] == ["ALL"]


def test_the_admin_may_change_defaults_but_not_isolation():
    _, host, _ = render(
        plan(course=None),
        admin_host={
            "shm_size": "8g",
            "cpu_period": 50_000,
            "auto_remove": True,
            "restart_policy": {"Name": "unless-stopped"},
        },
    )
    assert (
        host["shm_size"] == "8g" and host["cpu_quota"] == 100_000 and host["auto_remove"] is False
    )
    assert host["restart_policy"] == {"Name": "no"}
    _, published, _ = render(plan(), use_internal_ip=False, host_ip="127.0.0.1")
    assert published["port_bindings"] == {8888: ("127.0.0.1",)}
