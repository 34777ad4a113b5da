"""Demo mode: a simulated GPU whose file leaves its figures out gets plausible, moving ones."""

from __future__ import annotations

import copy
import json

import pytest

from jupyter_gpuspawn.status import demo
from jupyter_gpuspawn.status.activity import gpus_busy
from jupyter_gpuspawn.status.collector import StatusCollector

GIB = 1024**3
GPU_DEMO = "GPU-dddddddd-0000-4000-8000-000000000003"
GPU_OTHER = "GPU-eeeeeeee-0000-4000-8000-000000000004"
MIG = "MIG-ffffffff-0000-4000-8000-000000000005"
PARENT = "GPU-ffffffff-0000-4000-8000-000000000000"

# as a hub's demo file describes GPUs: name and memory only
DEMO = [
    {"uuid": GPU_DEMO, "index": 0, "name": "NVIDIA A100 80GB PCIe", "memory_total": "80GiB"},
    {"uuid": GPU_OTHER, "index": 1, "name": "NVIDIA A100 80GB PCIe", "memory_total": "80GiB"},
    {
        "uuid": MIG,
        "index": 2,
        "name": "NVIDIA A100 80GB PCIe",
        "mig_profile": "1g.10gb",
        "parent_uuid": PARENT,
        "memory_total": "10GiB",
        "memory_used": "512MiB",
    },
]
T0 = 1_800_000_000.0


def collector(uuids, gpus=DEMO, **kwargs) -> StatusCollector:
    env = {"JUPYTER_GPUSPAWN_GPUS": ",".join(uuids)}
    return StatusCollector(
        env=env,
        gpu_source="simulated",
        simulated_gpus=json.dumps(gpus),
        cache_seconds=0,
        **kwargs,
    )


def gpus_at(c: StatusCollector, t: float, monkeypatch) -> list:
    monkeypatch.setattr("jupyter_gpuspawn.status.collector.time.time", lambda: t)
    return c.collect()["gpus"]


def test_figures_are_a_function_of_the_uuid_and_the_time():
    assert demo.utilization(GPU_DEMO, T0) == demo.utilization(GPU_DEMO, T0)
    assert demo.temperature(GPU_DEMO, T0) == demo.temperature(GPU_DEMO, T0)
    assert demo.memory_used(GPU_DEMO, T0, 80 * GIB) == demo.memory_used(GPU_DEMO, T0, 80 * GIB)
    # two GPUs do not move in step
    ours = [demo.utilization(GPU_DEMO, T0 + s) for s in range(0, 600, 2)]
    other = [demo.utilization(GPU_OTHER, T0 + s) for s in range(0, 600, 2)]
    assert ours != other


def test_figures_are_plausible_and_move_smoothly():
    times = [T0 + s for s in range(0, 3600, 2)]  # an hour of polls, 2 s apart
    util = [demo.utilization(GPU_DEMO, t) for t in times]
    temp = [demo.temperature(GPU_DEMO, t) for t in times]
    mem = [demo.memory_used(GPU_DEMO, t, 80 * GIB) for t in times]
    assert all(3 <= u <= 99 for u in util) and max(util) - min(util) >= 30  # it works, and swings
    assert all(30 <= c <= 85 for c in temp)
    assert all(0.2 * 80 * GIB <= m <= 0.65 * 80 * GIB and m % 1024**2 == 0 for m in mem)
    # smooth, not noise: no poll jumps by more than a few percent, most polls move
    steps = [abs(a - b) for a, b in zip(util, util[1:], strict=False)]
    assert max(steps) <= 10
    assert sum(1 for s in steps if s) > 0.8 * len(steps)
    assert max(abs(a - b) for a, b in zip(temp, temp[1:], strict=False)) <= 3

    # and the temperature follows the load of the last half minute
    def load_before(i):
        return sum(demo.utilization(GPU_DEMO, times[i] - s) for s in range(10, 36, 5))

    hot = max(range(len(times)), key=lambda i: temp[i])
    cold = min(range(len(times)), key=lambda i: temp[i])
    assert load_before(hot) > load_before(cold) + 6 * 20


def test_the_status_of_a_demo_gpu_moves_between_polls_and_says_what_is_made_up(monkeypatch):
    c = collector([GPU_DEMO])
    [first] = gpus_at(c, T0, monkeypatch)
    [later] = gpus_at(c, T0 + 10, monkeypatch)
    assert first["simulated"] is True
    assert first["demo_figures"] == ["utilization_pct", "temperature_c", "memory_used"]
    assert first["utilization_pct"] == demo.utilization(GPU_DEMO, T0)
    assert first["temperature_c"] == demo.temperature(GPU_DEMO, T0)
    assert first["memory_used"] == demo.memory_used(GPU_DEMO, T0, 80 * GIB)
    assert first["memory_total"] == 80 * GIB
    assert first["utilization_pct"] != later["utilization_pct"]
    assert first["memory_used"] != later["memory_used"]


def test_figures_the_file_gives_are_shown_as_written(monkeypatch):
    fixed = [dict(DEMO[0], utilization=0, memory_used="1GiB")]  # e.g. an idle GPU for a demo
    [idle] = gpus_at(collector([GPU_DEMO], fixed), T0, monkeypatch)
    assert (idle["utilization_pct"], idle["memory_used"]) == (0, GIB)
    # only the temperature the file leaves out is made up, and it matches the idle GPU
    assert idle["demo_figures"] == ["temperature_c"] and 33 <= idle["temperature_c"] <= 38
    busy = [dict(DEMO[0], utilization=100, temperature=80)]
    [gpu] = gpus_at(collector([GPU_DEMO], busy), T0, monkeypatch)
    assert (gpu["utilization_pct"], gpu["temperature_c"]) == (100, 80)
    assert gpu["memory_used"] == 0 and gpu["demo_figures"] == []  # a scene: nothing made up


def test_a_mig_slice_gets_no_utilisation_and_its_parents_temperature(monkeypatch):
    [gpu] = gpus_at(collector([MIG]), T0, monkeypatch)
    assert gpu["utilization_pct"] is None  # NVML has none per slice
    assert gpu["memory_used"] == 512 * 1024**2  # the file's
    assert gpu["temperature_c"] == demo.temperature(PARENT, T0)
    assert gpu["demo_figures"] == ["temperature_c"]


def test_demo_figures_can_be_turned_off(monkeypatch):
    [gpu] = gpus_at(collector([GPU_DEMO], demo_figures=False), T0, monkeypatch)
    assert gpu["utilization_pct"] is None and gpu["demo_figures"] == []


def test_a_made_up_utilisation_is_no_gpu_activity():
    made_up = {"utilization_pct": 80, "processes": [], "demo_figures": ["utilization_pct"]}
    assert not gpus_busy([made_up], 5)
    assert gpus_busy([dict(made_up, demo_figures=[])], 5)


@pytest.fixture
def gpu_env():
    return {"JUPYTER_GPUSPAWN_GPUS": GPU_DEMO, "NVIDIA_VISIBLE_DEVICES": GPU_DEMO}


@pytest.fixture
def jp_server_config(jp_server_config):
    config = copy.deepcopy(jp_server_config)
    config["StatusCollector"]["simulated_gpus"] = json.dumps(DEMO)
    return config


async def test_the_status_endpoint_serves_demo_figures(jp_fetch):
    r = await jp_fetch("gpuspawn", "status")
    [gpu] = json.loads(r.body)["gpus"]
    assert gpu["uuid"] == GPU_DEMO and gpu["simulated"] is True
    assert isinstance(gpu["utilization_pct"], int) and isinstance(gpu["temperature_c"], int)
    assert "utilization_pct" in gpu["demo_figures"]
