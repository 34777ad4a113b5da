"""Server-extension tests: a real jupyter_server (pytest-jupyter) with laid-out cgroup and proc
trees."""

from __future__ import annotations

import json
import os

import pytest

# pytest-jupyter's fixtures and hooks for this directory only: its autouse event-loop fixtures would
# fight Playwright's loop in the browser tier.
from pytest_jupyter.jupyter_core import *  # noqa: F401,F403
from pytest_jupyter.jupyter_server import *  # noqa: F401,F403

GPU_A = "GPU-aaaaaaaa-0000-4000-8000-000000000001"
GPU_B = "GPU-bbbbbbbb-0000-4000-8000-000000000002"
MY_CGROUP = "/docker/1111111111111111111111111111111111111111111111111111111111111111"
OTHER_CGROUP = "/docker/2222222222222222222222222222222222222222222222222222222222222222"


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def cgroup_v2(root):
    write(f"{root}/cgroup.controllers", "cpu memory pids\n")
    write(f"{root}/memory.max", "2147483648\n")
    write(f"{root}/memory.current", "1073741824\n")
    write(f"{root}/cpu.max", "150000 100000\n")
    write(f"{root}/cpu.stat", "usage_usec 5000000\nuser_usec 4000000\n")
    write(f"{root}/pids.current", "12\n")
    write(f"{root}/pids.max", "4096\n")


def cgroup_v1(root):
    write(f"{root}/memory/memory.limit_in_bytes", "4294967296\n")
    write(f"{root}/memory/memory.usage_in_bytes", "3221225472\n")
    write(f"{root}/memory/memory.stat", "cache 1\ntotal_inactive_file 1073741824\n")
    write(f"{root}/cpu/cpu.cfs_quota_us", "200000\n")
    write(f"{root}/cpu/cpu.cfs_period_us", "100000\n")
    write(f"{root}/cpuacct/cpuacct.usage", "7000000000\n")
    write(f"{root}/pids/pids.current", "7\n")
    write(f"{root}/pids/pids.max", "max\n")


def proc_tree(root):
    """/proc as a container sees it: itself, one GPU process of its own (101), one of another cgroup
    (202)."""
    write(f"{root}/self/cgroup", f"0::{MY_CGROUP}\n")
    write(
        f"{root}/self/mountinfo",
        "1 0 0:1 /var/lib/docker/containers/"
        + "1" * 64
        + "/hostname /etc/hostname rw - ext4 /dev/vda rw\n",
    )
    write(f"{root}/uptime", "1000.00 500.00\n")
    ticks = os.sysconf("SC_CLK_TCK")
    write(f"{root}/1/stat", "1 (tini) S " + " ".join(["0"] * 18) + f" {400 * ticks} 0 0\n")
    write(f"{root}/101/cgroup", f"0::{MY_CGROUP}\n")
    write(f"{root}/101/comm", "python\n")
    write(f"{root}/202/cgroup", f"0::{OTHER_CGROUP}\n")
    write(f"{root}/202/comm", "someone-else\n")


SIMULATED = [
    {
        "uuid": GPU_A,
        "index": 2,
        "name": "NVIDIA A100 80GB PCIe",
        "memory_total": "80GiB",
        "memory_used": "12GiB",
        "utilization": 37,
        "temperature": 55,
        "processes": [
            {"pid": 101, "used_memory": "10GiB"},
            {"pid": 202, "used_memory": "2GiB"},
            {"pid": 303, "used_memory": "1GiB"},
        ],
    },
    {
        "uuid": GPU_B,
        "index": 3,
        "name": "NVIDIA A100 80GB PCIe",
        "memory_total": "80GiB",
        "utilization": 99,
    },
]


@pytest.fixture
def layout(tmp_path):
    return {
        "v2": str(tmp_path / "cg2"),
        "v1": str(tmp_path / "cg1"),
        "proc": str(tmp_path / "proc"),
    }


@pytest.fixture
def cgroup_kind():
    return "v2"


@pytest.fixture
def gpu_env():
    return {"JUPYTER_GPUSPAWN_GPUS": GPU_A, "NVIDIA_VISIBLE_DEVICES": GPU_A}


@pytest.fixture
def gpu_source():
    return "simulated"


@pytest.fixture
def jp_server_config(layout, cgroup_kind, gpu_env, gpu_source, monkeypatch):
    cgroup_v2(layout["v2"])
    cgroup_v1(layout["v1"])
    proc_tree(layout["proc"])
    for key in (
        "JUPYTER_GPUSPAWN_GPUS",
        "NVIDIA_VISIBLE_DEVICES",
        "MEM_LIMIT",
        "CPU_LIMIT",
        "JUPYTER_GPUSPAWN_NOTICE_FILE",
    ):
        monkeypatch.delenv(key, raising=False)
    for key, value in gpu_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("JUPYTER_GPUSPAWN_IMAGE", "local/pytorch-hub:24.08")
    monkeypatch.setenv("JUPYTER_GPUSPAWN_COURSE", "dl101")
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_gpuspawn": True},
            "allow_unauthenticated_access": False,
        },
        "StatusCollector": {
            "cgroup_root": layout[cgroup_kind],
            "proc_root": layout["proc"],
            "gpu_source": gpu_source,
            "simulated_gpus": json.dumps(SIMULATED),
        },
    }
