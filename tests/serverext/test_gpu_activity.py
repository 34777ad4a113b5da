"""GPU work is server activity: the hook jupyter_server offers extensions (``*_last_activity``
settings)."""

from __future__ import annotations

import asyncio
import datetime
import json
import os

from jupyter_gpuspawn.status.activity import SETTING, GPUActivity, gpus_busy
from jupyter_gpuspawn.status.collector import StatusCollector

from .conftest import GPU_A, cgroup_v2, proc_tree


class Collector:
    def __init__(self, gpus):
        self.gpus = gpus

    async def status(self):
        return {"gpus": self.gpus}


def test_busy_gpus_refresh_the_activity_setting_and_idle_ones_leave_it(jp_serverapp):
    settings = jp_serverapp.web_app.settings
    before = jp_serverapp.web_app.last_activity()
    collector = Collector([{"uuid": "GPU-1", "utilization_pct": 0, "processes": []}])
    activity = GPUActivity(collector, settings, parent=jp_serverapp)
    asyncio.run(activity.check())
    assert SETTING not in settings and jp_serverapp.web_app.last_activity() == before
    collector.gpus = [{"uuid": "GPU-1", "utilization_pct": 87, "processes": []}]
    asyncio.run(activity.check())
    assert isinstance(settings[SETTING], datetime.datetime)
    # what singleuser reports
    assert jp_serverapp.web_app.last_activity() == settings[SETTING] > before


def test_what_counts_as_busy():
    assert not gpus_busy([], 5)
    assert not gpus_busy([{"utilization_pct": None, "processes": []}], 5)
    assert not gpus_busy([{"utilization_pct": 4, "processes": []}], 5)
    assert gpus_busy([{"utilization_pct": 5, "processes": []}], 5)
    # a process of ours, between kernels
    assert gpus_busy([{"utilization_pct": 0, "processes": [{"pid": 7}]}], 5)


# ---- a GPU shared with other students: only our own work counts ---------------------------------
NEIGHBOUR_AT_90 = {"uuid": "GPU-1", "utilization_pct": 90, "processes": [], "other_processes": 1}


def test_a_neighbours_work_on_a_shared_gpu_is_not_our_activity():
    # student B trains at 90 % on the GPU student A shares: A's container sees the whole GPU busy
    assert not gpus_busy([NEIGHBOUR_AT_90], 5)
    assert not gpus_busy([NEIGHBOUR_AT_90], 5, cuda_process=False)
    # a process of ours on it counts, whatever the utilisation (as on a GPU of our own)
    ours = {**NEIGHBOUR_AT_90, "processes": [{"pid": 7}]}
    assert gpus_busy([ours], 5) and gpus_busy([{**ours, "utilization_pct": 0}], 5)
    # ours behind the PID namespace (NVML names host PIDs): a CUDA process of this container, while
    # the GPU works; an idle kernel that merely holds its CUDA context is idle
    assert gpus_busy([NEIGHBOUR_AT_90], 5, cuda_process=True)
    assert not gpus_busy([{**NEIGHBOUR_AT_90, "utilization_pct": 0}], 5, cuda_process=True)
    # the rules without anyone else's process stay: utilisation alone, MIG (no utilisation)
    assert gpus_busy([{"utilization_pct": 90, "processes": [], "other_processes": 0}], 5)
    assert not gpus_busy([{"utilization_pct": None, "processes": [], "other_processes": 0}], 5)
    assert gpus_busy([{"utilization_pct": None, "processes": [{"pid": 7}]}], 5)
    # one GPU of ours busy among several is enough
    assert gpus_busy([NEIGHBOUR_AT_90, {"utilization_pct": 50, "processes": []}], 5)


def test_the_activity_check_on_a_shared_gpu(jp_serverapp):
    settings = jp_serverapp.web_app.settings
    collector = Collector([NEIGHBOUR_AT_90])
    activity = GPUActivity(collector, settings, parent=jp_serverapp)
    asyncio.run(activity.check())
    assert SETTING not in settings  # the neighbour's 90 % did not refresh it
    collector.gpus = [{**NEIGHBOUR_AT_90, "processes": [{"pid": 101}]}]
    asyncio.run(activity.check())
    assert isinstance(settings[SETTING], datetime.datetime)


def shared_collector(layout, utilization=90, processes=(202,)):
    """A StatusCollector over the laid-out cgroup and /proc trees (conftest), on GPU_A shared with
    another container's process 202."""
    cgroup_v2(layout["v2"])
    proc_tree(layout["proc"])
    gpu = {
        "uuid": GPU_A,
        "index": 0,
        "name": "NVIDIA A100 80GB PCIe",
        "memory_total": "80GiB",
        "utilization": utilization,
        "processes": [{"pid": pid, "used_memory": "1GiB"} for pid in processes],
    }
    return StatusCollector(
        env={"JUPYTER_GPUSPAWN_GPUS": GPU_A},
        gpu_source="simulated",
        simulated_gpus=json.dumps([gpu]),
        cgroup_root=layout["v2"],
        proc_root=layout["proc"],
        demo_figures=False,
        cache_seconds=0,
    )


def open_fd(proc_root, pid, fd, target):
    os.makedirs(f"{proc_root}/{pid}/fd", exist_ok=True)
    os.symlink(target, f"{proc_root}/{pid}/fd/{fd}")


def test_the_collector_tells_our_cuda_work_from_a_neighbours(layout):
    collector = shared_collector(layout)
    status = collector.collect()
    [gpu] = status["gpus"]
    assert gpu["processes"] == [] and gpu["other_processes"] == 1
    assert status["container"]["cuda_process"] is False
    activity = GPUActivity(collector, settings := {})
    asyncio.run(activity.check())
    assert SETTING not in settings

    # the neighbour's process holds CUDA too, but in its own cgroup: still not ours
    open_fd(layout["proc"], 202, 3, "/dev/nvidia-uvm")
    open_fd(layout["proc"], 101, 1, "/dev/pts/0")
    open_fd(layout["proc"], 101, 2, "/dev/nvidiactl")  # NVML alone (nvidia-smi) is not CUDA work
    assert collector.collect()["container"]["cuda_process"] is False

    # our python (101) starts CUDA: NVML still lists only a PID we cannot resolve (host PIDs)
    open_fd(layout["proc"], 101, 7, "/dev/nvidia-uvm")
    status = collector.collect()
    assert status["gpus"][0]["processes"] == []
    assert status["container"]["cuda_process"] is True
    activity = GPUActivity(collector, settings := {})
    asyncio.run(activity.check())
    assert isinstance(settings[SETTING], datetime.datetime)


def test_the_collector_looks_for_cuda_only_where_it_must(layout):
    # a GPU of our own, nobody else on it: utilisation is ours and no /proc walk is needed
    collector = shared_collector(layout, processes=())
    status = collector.collect()
    assert status["gpus"][0]["other_processes"] == 0
    assert status["container"]["cuda_process"] is None
    activity = GPUActivity(collector, settings := {})
    asyncio.run(activity.check())
    assert isinstance(settings[SETTING], datetime.datetime)
