"""Security regressions, one per advisory class the anchor projects suffered, through a real hub and
Docker.

Pure parts (full-match regexes, home traversal, XSS in the form) are in
tests/unit/test_security_regressions.py.
"""

from __future__ import annotations

import subprocess

import requests

from .conftest import gpuspawn_containers, labelled
from .hub import TEST_IMAGE


def env_of(container) -> dict:
    return dict(e.split("=", 1) for e in container["Config"]["Env"])


def inside(container, script) -> str:
    return subprocess.run(
        ["docker", "exec", container["Id"], "sh", "-c", script],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_GHSA_hfgr_h3vc_p6c2_user_chosen_image_outside_the_allow_list(make_hub):
    # dockerspawner GHSA-hfgr-h3vc-p6c2: users could start any image through the REST API
    hub = make_hub(
        n_gpus=1, extra_config=f"c.GPUDockerSpawner.allowed_images = {{'ok': {TEST_IMAGE!r}}}\n"
    )
    hub.create_users("mallory")
    for image in (
        "local/base:bookworm",
        TEST_IMAGE,
        "docker.io/library/alpine:latest",
        "ok:latest",
    ):
        r = hub.spawn("mallory", {"image": image})
        assert r.status_code == 400, (image, r.text)
        assert "not offered here" in r.json()["message"]
    assert gpuspawn_containers() == []
    hub.spawn_ready("mallory", {"image": "ok"})  # the key, and only the key, works
    assert labelled("mallory")[0]["Config"]["Image"] == TEST_IMAGE


def test_GHSA_v7m9_9497_p9gr_user_and_server_names_do_not_collide(make_hub):
    # kubespawner GHSA-v7m9-9497-p9gr: user "a-b" and user "a"'s server "b" mapped to the same pod
    hub = make_hub(n_gpus=2)
    hub.create_users("a-b", "a")
    hub.spawn_ready("a-b", {"gpus": 1})
    hub.spawn_ready("a", {"gpus": 1}, server="b")
    [ab] = labelled("a-b")
    [a_b] = labelled("a", "b")
    assert ab["Id"] != a_b["Id"] and ab["Name"] != a_b["Name"]
    assert (
        ab["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"]
        != a_b["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"]
    )
    hub.stop_server("a", "b")
    assert hub.wait_ready("a-b") and len(labelled("a-b")) == 1


def test_env_override_of_nvidia_visible_devices_and_ld_preload(make_hub):
    # users have no way to set env; even the admin's `environment` cannot loosen GPU isolation
    hub = make_hub(
        n_gpus=2,
        extra_config="""
c.Spawner.environment = {"NVIDIA_VISIBLE_DEVICES": "all", "CUDA_VISIBLE_DEVICES": "0,1",
                         "LD_PRELOAD": "/tmp/evil.so", "JUPYTER_GPUSPAWN_GPUS": "GPU-forged",
                         "NVIDIA_DRIVER_CAPABILITIES": "all", "MEM_LIMIT": "1",
                         "SITE_SETTING": "kept"}
c.GPUDockerSpawner.mem_limit = "2G"
""",
    )
    hub.create_users("eve")
    for options in (
        {"env": {"NVIDIA_VISIBLE_DEVICES": "all"}},
        {"NVIDIA_VISIBLE_DEVICES": "all"},
        {"LD_PRELOAD": "/tmp/x.so"},
        {"environment": {"LD_PRELOAD": "/tmp/x.so"}},
    ):
        assert hub.spawn("eve", options).status_code == 400
    hub.spawn_ready("eve", {"gpus": 1})
    [container] = labelled("eve")
    env = env_of(container)
    assigned = container["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"]
    assert env["NVIDIA_VISIBLE_DEVICES"] == assigned and env["JUPYTER_GPUSPAWN_GPUS"] == assigned
    assert "LD_PRELOAD" not in env and "CUDA_VISIBLE_DEVICES" not in env
    assert env["NVIDIA_DRIVER_CAPABILITIES"] != "all"  # the image's own value, not the admin's
    assert env["MEM_LIMIT"] == str(2 * 1024**3) and env["SITE_SETTING"] == "kept"
    assert inside(container, "echo ${LD_PRELOAD:-unset} $NVIDIA_VISIBLE_DEVICES").split() == [
        "unset",
        assigned,
    ]


def test_cpu_only_container_under_an_image_that_bakes_all_gpus(make_hub):
    baked = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{json .Config.Env}}", TEST_IMAGE],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert "NVIDIA_VISIBLE_DEVICES=all" in baked  # the premise: like NGC images
    hub = make_hub(n_gpus=2)
    hub.create_users("cpu")
    hub.spawn_ready("cpu", {"gpus": 0})
    [container] = labelled("cpu")
    assert env_of(container)["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert not container["HostConfig"]["DeviceRequests"]
    assert inside(container, "echo $NVIDIA_VISIBLE_DEVICES").strip() == "void"


def test_status_endpoint_without_a_token(make_hub):
    hub = make_hub(n_gpus=1)
    hub.create_users("quiet")
    hub.spawn_ready("quiet", {"gpus": 1})
    uuid = labelled("quiet")[0]["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"]
    r = requests.get(hub.user_url("quiet") + "gpuspawn/status", allow_redirects=False)
    assert r.status_code in (302, 401, 403) and uuid not in r.text
    if r.status_code == 302:
        assert "/hub/" in r.headers["Location"]  # sent to log in, nothing disclosed
    assert (
        hub.session.get(hub.user_url("quiet") + "gpuspawn/status").json()["gpus"][0]["uuid"] == uuid
    )


def test_container_runs_non_root_no_new_privileges_no_capabilities_with_limits(make_hub):
    hub = make_hub(
        n_gpus=1,
        extra_config='c.GPUDockerSpawner.mem_limit = "512M"\nc.GPUDockerSpawner.pids_limit = 256\n'
        # Docker restarting an ended container would run it on GPUs given back to the pool
        'c.GPUDockerSpawner.extra_host_config = {"restart_policy": {"Name": "always"}}\n',
    )
    hub.create_users("hardy")
    hub.spawn_ready("hardy", {"gpus": 1})
    [container] = labelled("hardy")
    host = container["HostConfig"]
    assert container["Config"]["User"] and not container["Config"]["User"].startswith("0:")
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"] and host["Privileged"] is False
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["PidsLimit"] == 256 and host["Memory"] == 512 * 1024**2
    assert host["RestartPolicy"]["Name"] in ("no", "")
    status = inside(container, "id -u; grep -E '^(NoNewPrivs|CapEff|CapPrm):' /proc/1/status")
    lines = status.split("\n")
    assert lines[0] != "0"
    fields = dict(line.split(":\t") for line in lines[1:] if line)
    assert fields["NoNewPrivs"].strip() == "1"
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0


SUID_IMAGE = "local/gpuspawn-suid-test:latest"


def test_a_setuid_root_program_in_the_image_gives_no_root(make_hub):
    # An image may ship setuid-root programs (NGC images carry several). The probe is one that needs
    # no password: a setuid-root copy of `id`. Without no-new-privileges it runs as root; with it,
    # the kernel ignores the bit.
    dockerfile = (
        f"FROM {TEST_IMAGE}\nUSER root\n"
        "RUN cp /usr/bin/id /usr/local/bin/suid-id && chmod 4755 /usr/local/bin/suid-id\n"
    )
    subprocess.run(
        ["docker", "build", "-q", "-t", SUID_IMAGE, "-"],
        input=dockerfile,
        text=True,
        check=True,
        capture_output=True,
    )
    hub = make_hub(
        n_gpus=1,
        extra_config=f"""
c.DockerSpawner.image = {SUID_IMAGE!r}
def control_without_the_guard(spawner):
    # the control server shows the probe works: it must reach root when the guard is off
    spawner.no_new_privileges = spawner.user.name != "control"
c.Spawner.pre_spawn_hook = control_without_the_guard
""",
    )
    hub.create_users("student", "control")
    hub.spawn_ready("student", {"gpus": 1})
    hub.spawn_ready("control", {"gpus": 0})
    [student], [control] = labelled("student"), labelled("control")
    assert inside(control, "/usr/local/bin/suid-id -u").strip() == "0"
    euid = inside(student, "/usr/local/bin/suid-id -u").strip()
    assert euid == student["Config"]["User"].split(":")[0] and euid != "0"


HOOK = """
def _hook(spawner):
    # a site's hook that replaces the admin's settings outright (as many pre_spawn_hook examples do)
    spawner.extra_host_config = {"shm_size": "256m"}
    spawner.extra_create_kwargs = {"user": "0:0", "labels": {"site": "physics"}}
c.Spawner.pre_spawn_hook = _hook
"""


def test_a_pre_spawn_hook_that_replaces_the_admin_settings_cannot_drop_the_isolation(make_hub):
    hub = make_hub(n_gpus=1, extra_config=HOOK)
    hub.create_users("hooked")
    hub.spawn_ready("hooked", {"gpus": 1})
    [container] = labelled("hooked")
    host, labels = container["HostConfig"], container["Config"]["Labels"]
    gpu = labels["org.jupyter.gpuspawn.gpus"]
    assert gpu and [r["DeviceIDs"] for r in host["DeviceRequests"]] == [[gpu]]
    assert host["CapDrop"] == ["ALL"] and "no-new-privileges:true" in host["SecurityOpt"]
    assert not container["Config"]["User"].startswith("0:")
    assert labels["site"] == "physics" and labels["org.jupyter.gpuspawn.user"] == "hooked"
    assert host["ShmSize"] == 256 * 1024**2  # the hook's own setting applies
    assert env_of(container)["NVIDIA_VISIBLE_DEVICES"] == gpu
