"""The container spec GPUDockerSpawner hands to DockerSpawner, built without Docker."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

from jupyter_gpuspawn.homes import Identity
from jupyter_gpuspawn.spawner import GPUDockerSpawner
from jupyter_gpuspawn.spec import GPUAssignment


def make_spawner(**config):
    user = SimpleNamespace(name="alice", url="/user/alice/", id=1, escaped_name="alice")
    spawner = GPUDockerSpawner(user=user, **config)
    spawner._assignment = GPUAssignment("alice", "", ("GPU-1",), course="dl", image_key="pt")
    spawner._identity = Identity(200001, 200001, "range")
    spawner._host_home = "/srv/home/alice"
    return spawner


def test_admin_settings_are_merged_with_the_gpu_spec():
    spawner = make_spawner(
        extra_host_config={"cap_add": ["SYS_NICE"], "device_requests": [{"driver": "nvidia", "count": -1,
                                                                        "capabilities": [["gpu"]]}]},
        extra_create_kwargs={"labels": {"site": "lab"}, "user": "0:0"},
    )
    host = asyncio.run(spawner._host_config())
    assert host["device_requests"] == [{"driver": "nvidia", "device_ids": ["GPU-1"], "capabilities": [["gpu"]]}]
    assert host["cap_drop"] == ["ALL"] and host["cap_add"] == ["SYS_NICE"]
    assert host["security_opt"] == ["no-new-privileges:true"]
    assert host["shm_size"] == 1024**3 and host["pids_limit"] == 4096
    create = asyncio.run(spawner._create_kwargs())
    assert create["user"] == "200001:200001"  # never root, whatever the admin wrote
    assert create["labels"]["site"] == "lab"
    assert create["labels"]["org.jupyter.gpuspawn.gpus"] == "GPU-1"
    assert create["working_dir"] == "/home/alice"


def test_async_callable_admin_settings_are_honoured():
    async def host(spawner):
        return {"shm_size": "4g"}

    spawner = make_spawner(extra_host_config=host, shm_size="1G", pids_limit=0)
    merged = asyncio.run(spawner._host_config())
    assert merged["shm_size"] == "4g" and "pids_limit" not in merged


def test_home_bind_is_added_to_admin_volumes():
    spawner = make_spawner(volumes={"/data/shared": {"bind": "/data", "mode": "ro"}})
    binds = spawner.volume_binds
    assert binds["/srv/home/alice"] == {"bind": "/home/alice", "mode": "rw"}
    assert binds["/data/shared"]["mode"] == "ro"
    assert "/home/alice" in spawner.volume_mount_points


def test_state_round_trip():
    spawner = make_spawner()
    spawner.object_id = "abc"
    state = spawner.get_state()
    fresh = make_spawner()
    fresh._assignment = None
    fresh.load_state(state)
    assert fresh._assignment == spawner._assignment
    assert fresh._identity.uid == 200001


def test_load_state_keeps_the_persisted_container_name():
    spawner = make_spawner()
    spawner.object_id = "abc"
    spawner.object_name = "renamed-by-an-old-template"
    state = spawner.get_state()
    fresh = make_spawner()
    fresh.load_state(state)
    assert fresh.object_name == "renamed-by-an-old-template"
    assert fresh.image == state["gpuspawn"]["image"]
