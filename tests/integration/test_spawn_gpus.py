"""GPU isolation, CPU-only servers and home ownership, through a real hub's REST API on a real
Docker engine."""

from __future__ import annotations

import json
import os
import subprocess
import time

from .conftest import labelled


def container_env(container: dict) -> dict:
    return dict(item.split("=", 1) for item in container["Config"]["Env"])


def exec_in(container: dict, *cmd) -> str:
    return subprocess.run(
        ["docker", "exec", container["Id"], *cmd], check=True, capture_output=True, text=True
    ).stdout


def test_each_server_gets_exactly_its_gpus_by_uuid(make_hub):
    hub = make_hub(n_gpus=4)
    hub.create_users("alice", "bob", "carol")
    hub.spawn_ready("alice", {"gpus": 1})
    hub.spawn_ready("bob", {"gpus": 1})
    hub.spawn_ready("carol", {"gpus": 0})

    uuids = {}
    for user in ("alice", "bob"):
        [container] = labelled(user)
        labels = container["Config"]["Labels"]
        assigned = labels["org.jupyter.gpuspawn.gpus"].split(",")
        assert len(assigned) == 1 and assigned[0] in {g["uuid"] for g in hub.gpus}
        # the device request names the UUID, never a count
        [request] = container["HostConfig"]["DeviceRequests"]
        assert request["DeviceIDs"] == assigned and request["Count"] == 0
        # inside the container the NVIDIA runtime sees exactly this UUID
        inside = exec_in(container, "sh", "-c", "echo $NVIDIA_VISIBLE_DEVICES").strip()
        assert inside == assigned[0]
        uuids[user] = assigned[0]
    assert uuids["alice"] != uuids["bob"]

    [cpu_only] = labelled("carol")
    assert not cpu_only["HostConfig"]["DeviceRequests"]
    # the test image bakes NVIDIA_VISIBLE_DEVICES=all, like NGC images; a CPU-only server must see
    # void
    assert exec_in(cpu_only, "sh", "-c", "echo $NVIDIA_VISIBLE_DEVICES").strip() == "void"
    assert cpu_only["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"] == ""
    # JupyterHub >= 5.3 warns about user_options no hook applied; ours are applied in start()
    assert "unhandled user_options" not in hub.log_tail(400)


def test_home_is_mounted_and_files_belong_to_the_user(make_hub):
    hub = make_hub(n_gpus=1)
    hub.create_users("dana")
    hub.spawn_ready("dana", {"gpus": 1})
    uid = json.load(open(hub.uid_map))["users"]["dana"]
    home = os.path.join(hub.home_root, "dana")
    assert os.stat(home).st_uid == uid

    # write a file through the proxy and the user's own Jupyter server (contents API)
    r = hub.session.put(
        hub.user_url("dana") + "api/contents/from-jupyter.txt",
        json={"type": "file", "format": "text", "content": "hello"},
    )
    assert r.status_code == 201, r.text
    written = os.path.join(home, "from-jupyter.txt")
    assert open(written).read() == "hello"
    assert (os.stat(written).st_uid, os.stat(written).st_gid) == (uid, uid)

    [container] = labelled("dana")
    assert container["Config"]["User"] == f"{uid}:{uid}"
    # dana's uid is in no passwd of the image: the entrypoint made her a named user with the mounted
    # HOME
    assert exec_in(container, "sh", "-c", "id -u; id -un; echo $HOME").split() == [
        str(uid),
        "dana",
        "/home/dana",
    ]
    # hardening defaults
    host = container["HostConfig"]
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["PidsLimit"] == 4096
    assert host["ShmSize"] == 1024**3
    assert exec_in(container, "sh", "-c", "grep NoNewPrivs /proc/self/status").split()[-1] == "1"


def test_no_free_gpu_is_a_clear_error_and_holds_nothing(make_hub):
    hub = make_hub(n_gpus=2)
    hub.create_users("erin", "finn")
    r = hub.spawn("erin", {"gpus": 3})
    assert r.status_code == 400
    assert "from 0 to 2" in r.json()["message"]
    hub.spawn_ready("erin", {"gpus": 2})

    r = hub.spawn("finn", {"gpus": 1})
    assert r.status_code == 409
    assert "All 2 GPUs are in use" in r.json()["message"]
    assert labelled("finn") == []
    assert hub.server("finn") is None

    hub.stop_server("erin")
    hub.spawn_ready("finn", {"gpus": 2})
    [container] = labelled("finn")
    assert len(container["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"].split(",")) == 2


def test_gpus_command_shows_who_holds_what_without_the_hub(make_hub):
    hub = make_hub(n_gpus=3, extra_config="c.GPUDockerSpawner.gpu_idle_check_seconds = 1\n")
    hub.create_users("gina", "hal")
    hub.spawn_ready("gina", {"gpus": 1})
    hub.spawn_ready("hal", {"gpus": 2}, server="big")
    time.sleep(2.5)  # an idle check or two: the hub records each holder's idle time
    hub.stop()  # the admin's view must not need a running hub
    cli = [os.path.join(os.path.dirname(__import__("sys").executable), "jupyter-gpuspawn"), "gpus"]
    out = subprocess.run(
        cli + ["-f", hub.config_file], check=True, capture_output=True, text=True
    ).stdout
    assert "GPUs on this host (simulated): 3" in out
    [gina] = labelled("gina")
    gina_uuid = gina["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"]
    line = next(line for line in out.splitlines() if gina_uuid in line)
    # the hub sampled the GPUs until it stopped: each holder's idle time (simulated GPUs at 0 %)
    assert line.rstrip().endswith("gina (idle 0 min)"), out
    assert (
        sum(1 for line in out.splitlines() if line.rstrip().endswith("hal/big (idle 0 min)")) == 2
    ), out

    data = json.loads(
        subprocess.run(
            cli + ["-f", hub.config_file, "--json"], check=True, capture_output=True, text=True
        ).stdout
    )
    held = {g["uuid"]: [h["user"] for h in g["held_by"]] for g in data["gpus"]}
    assert held[gina_uuid] == ["gina"] and sorted(sum(held.values(), [])) == ["gina", "hal", "hal"]
    [gina_hold] = next(g["held_by"] for g in data["gpus"] if g["uuid"] == gina_uuid)
    assert 0 <= gina_hold["idle_seconds"] < 600 and gina_hold["reclaim_deadline"] is None


def test_mig_slices_are_servers_gpus_by_their_own_uuid(make_hub):
    """A GPU in MIG mode is offered as its slices: each server gets one slice's MIG UUID (device
    request and NVIDIA_VISIBLE_DEVICES), the progress names the slice, the status panel reports it
    with no utilisation, and the whole parent GPU is never handed out."""
    parent = "GPU-a100a100-5eed-4a11-9b00-000000000000"
    slices = [
        {
            "uuid": f"MIG-{i:08x}-5eed-4a11-9b00-000000000000",
            "name": "NVIDIA A100 80GB PCIe",
            "index": 0,
            "mig_profile": "3g.40gb",
            "parent_uuid": parent,
            "memory_total": "40GiB",
        }
        for i in range(2)
    ]
    hub = make_hub(
        gpus=slices, extra_config='c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}\n'
    )
    hub.create_users("mia", "noel", "olga")
    assert hub.spawn("mia", {"gpus": 1}).status_code == 202
    messages = hub.progress_messages("mia")
    assert any(
        m.startswith("Assigned MIG 3g.40gb slice of NVIDIA A100 80GB PCIe (40 GiB) on GPU 0, MIG-")
        for m in messages
    ), messages
    hub.wait_ready("mia")
    hub.spawn_ready("noel", {"gpus": 1})
    given = {}
    for user in ("mia", "noel"):
        [container] = labelled(user)
        [request] = container["HostConfig"]["DeviceRequests"]
        given[user] = request["DeviceIDs"]
        assert container_env(container)["NVIDIA_VISIBLE_DEVICES"] == request["DeviceIDs"][0]
    assert sorted(sum(given.values(), [])) == sorted(s["uuid"] for s in slices)

    # slow_spawn_timeout 0: the refusal comes as an event
    assert hub.spawn("olga", {"gpus": 1}).status_code == 202
    # both slices are held; the parent GPU is not a third device
    last = hub.progress_events("olga")[-1]
    assert last.get("failed") and "All 2 GPUs are in use" in last["message"], last
    assert labelled("olga") == []

    [gpu] = hub.session.get(hub.user_url("mia") + "gpuspawn/status", timeout=30).json()["gpus"]
    assert gpu["uuid"] == given["mia"][0] and gpu["utilization_pct"] is None
    assert (gpu["mig_profile"], gpu["parent_uuid"]) == ("3g.40gb", parent)
