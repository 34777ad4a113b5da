from __future__ import annotations

import asyncio
import json

import pytest

from jupyter_gpuspawn import gpus as gpus_mod
from jupyter_gpuspawn.gpus import GPUInventory, InventoryError, NVMLReader, parse_size, read_simulated
from jupyter_gpuspawn.spec import GPUAssignment, device_requests, gpu_env, is_protected_env, merge_host_config


def test_labels_round_trip():
    a = GPUAssignment("a-b", "srv", ("GPU-1", "GPU-2"), "shared", 3, "dl101", "pytorch")
    assert GPUAssignment.from_labels(a.labels()) == a
    cpu = GPUAssignment("c", "", ())
    assert cpu.labels()["org.jupyter.gpuspawn.gpus"] == ""
    assert GPUAssignment.from_labels(cpu.labels()).gpus == ()
    assert GPUAssignment.from_labels({"other": "x"}) is None


def test_env_void_for_cpu_only_and_uuids_otherwise():
    assert gpu_env([], "", "img")["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert gpu_env(["GPU-1", "GPU-2"], "c", "img")["NVIDIA_VISIBLE_DEVICES"] == "GPU-1,GPU-2"


def test_device_requests_name_uuids_never_a_count():
    [req] = device_requests(["GPU-1"])
    assert req["device_ids"] == ["GPU-1"] and "count" not in req
    assert device_requests([]) == []


def test_merge_replaces_admin_gpu_requests_and_keeps_the_rest():
    admin = {
        "device_requests": [{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]},
                            {"driver": "other", "capabilities": [["fpga"]]}],
        "cap_drop": ["NET_RAW"],
        "shm_size": "8g",
        "privileged": False,
    }
    ours = {"device_requests": device_requests(["GPU-3"]), "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"]}
    merged, warnings = merge_host_config(admin, ours, {"shm_size": 1024, "pids_limit": 10})
    assert merged["device_requests"] == [{"driver": "other", "capabilities": [["fpga"]]}] + device_requests(["GPU-3"])
    assert warnings
    assert merged["cap_drop"] == ["NET_RAW", "ALL"]
    assert merged["shm_size"] == "8g"  # the admin's explicit setting wins over our default
    assert merged["pids_limit"] == 10
    assert admin["cap_drop"] == ["NET_RAW"]  # the admin's config is not mutated


def test_protected_env_names():
    for name in ("NVIDIA_VISIBLE_DEVICES", "NVIDIA_DRIVER_CAPABILITIES", "CUDA_VISIBLE_DEVICES", "LD_PRELOAD",
                 "JUPYTER_GPUSPAWN_GPUS", "JUPYTERHUB_API_TOKEN"):
        assert is_protected_env(name)
    assert not is_protected_env("OMP_NUM_THREADS")


def test_parse_size():
    assert parse_size("80GiB") == 80 * 1024**3
    assert parse_size("512M") == parse_size("512MB") == 512 * 1024**2
    assert parse_size(123) == 123
    for bad in ("lots", -1, True, "1XB"):
        with pytest.raises(InventoryError):
            parse_size(bad)


def write(tmp_path, data, name="gpus.json"):
    p = tmp_path / name
    p.write_text(json.dumps(data) if name.endswith(".json") else data)
    return str(p)


def test_simulated_inventory(tmp_path):
    path = write(tmp_path, [{"uuid": "GPU-a", "name": "A100", "memory_total": "80GiB", "memory_used": "1GiB",
                             "utilization": 30}, {"uuid": "GPU-b", "name": "A100", "memory_total": 1}])
    snap = read_simulated(path)
    assert snap.simulated and [g.uuid for g in snap.gpus] == ["GPU-a", "GPU-b"]
    assert snap.gpus[0].utilization_pct == 30 and snap.gpus[1].index == 1


def test_simulated_inventory_yaml(tmp_path):
    path = write(tmp_path, "gpus:\n  - {uuid: GPU-y, name: H100, memory_total: 80GiB}\n", "gpus.yaml")
    assert read_simulated(path).gpus[0].name == "H100"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"not": "a list"}, "expected a list"),
        ([{"uuid": "nope", "memory_total": 1}], "uuid must look like"),
        ([{"uuid": "GPU-a"}], "memory_total is required"),
        ([{"uuid": "GPU-a", "memory_total": 1}, {"uuid": "GPU-a", "memory_total": 1}], "duplicate uuid"),
        ([{"uuid": "GPU-a", "memory_total": 1, "colour": "red"}], "unknown key(s) colour"),
        ([{"uuid": "GPU-a", "memory_total": 1, "utilization": 101}], "utilization"),
    ],
)
def test_simulated_inventory_errors_name_file_and_problem(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(InventoryError) as e:
        read_simulated(path)
    assert path in str(e.value) and message in str(e.value)


def test_missing_simulated_file(tmp_path):
    with pytest.raises(InventoryError, match="does not exist"):
        read_simulated(str(tmp_path / "nope.yaml"))


class FakeNVMLError(Exception):
    pass


class NoDriverNVML:
    NVMLError = FakeNVMLError

    @staticmethod
    def nvmlInit():
        raise FakeNVMLError("Driver Not Loaded")


def test_nvml_without_driver_is_an_error_entry_and_auto_means_no_gpus(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pynvml", NoDriverNVML)
    snap = NVMLReader().read()
    assert snap.gpus == () and "Driver Not Loaded" in snap.errors[0]
    assert GPUInventory("nvml").read().errors
    auto = GPUInventory("auto").read()
    assert auto.source == "none" and auto.gpus == () and auto.errors == ()


def test_inventory_caches_and_shares_one_read(tmp_path):
    path = write(tmp_path, [{"uuid": "GPU-a", "memory_total": 1}])
    inv = GPUInventory("simulated", path, cache_seconds=60)
    calls = []
    real_read = inv._cached._read
    inv._cached._read = lambda: calls.append(1) or real_read()

    async def burst():
        return await asyncio.gather(*(inv.snapshot() for _ in range(20)))

    snaps = asyncio.run(burst())
    assert len(calls) == 1 and all(s is snaps[0] for s in snaps)


def test_bad_inventory_config():
    with pytest.raises(InventoryError, match="needs simulated_gpus"):
        GPUInventory("simulated")
    with pytest.raises(InventoryError, match="must be one of"):
        GPUInventory("cuda")
    assert gpus_mod.shared_inventory("none") is gpus_mod.shared_inventory("none")


def test_format_size_uses_the_largest_binary_unit():
    from jupyter_gpuspawn.gpus import format_size, parse_size

    assert format_size(parse_size("24M")) == "24 MiB"
    assert format_size(parse_size("1.5GiB")) == "1.5 GiB"
    assert format_size(parse_size("80GiB")) == "80 GiB"
    assert format_size(512) == "512 B"
