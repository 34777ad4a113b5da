from __future__ import annotations

import asyncio
import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jupyter_gpuspawn.gpus import (
    GPUInventory,
    InventoryError,
    NVMLReader,
    parse_size,
    read_simulated,
)
from jupyter_gpuspawn.spec import (
    GPUAssignment,
    device_requests,
    gpu_env,
    is_protected_env,
    merge_host_config,
)


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
        "device_requests": [
            {"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]},
            {"driver": "other", "capabilities": [["fpga"]]},
        ],
        "cap_drop": ["NET_RAW"],
        "shm_size": "8g",
        "privileged": False,
    }
    ours = {
        "device_requests": device_requests(["GPU-3"]),
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
    }
    merged, warnings = merge_host_config(admin, ours, {"shm_size": 1024, "pids_limit": 10})
    assert merged["device_requests"] == [
        {"driver": "other", "capabilities": [["fpga"]]}
    ] + device_requests(["GPU-3"])
    assert warnings
    assert merged["cap_drop"] == ["NET_RAW", "ALL"]
    assert merged["shm_size"] == "8g"  # the admin's explicit setting wins over our default
    assert merged["pids_limit"] == 10
    assert admin["cap_drop"] == ["NET_RAW"]  # the admin's config is not mutated


# The one documented list (spec.py) of what a course file or the admin's `environment` may not set.
PROTECTED_NAMES = {
    "CUDA_VISIBLE_DEVICES",
    "MEM_LIMIT",
    "CPU_LIMIT",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONHOME",
    "JUPYTER_CONFIG_DIR",
    "JUPYTER_CONFIG_PATH",
    "JUPYTER_PATH",
    "JUPYTER_IMAGE",
    "JUPYTER_IMAGE_SPEC",
    "HOME",
    "USER",
    "PATH",
    "SHELL",
}
PROTECTED_PREFIXES = (
    "LD_",
    "NVIDIA_",
    "JUPYTERHUB_",
    "JPY_",
    "JUPYTER_GPUSPAWN_",
    "DOCKER_RESOURCE_",
)
env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True)


def test_protected_env_is_one_documented_list():
    from jupyter_gpuspawn import spec

    assert (
        set(spec.PROTECTED_ENV) == PROTECTED_NAMES
        and spec.PROTECTED_ENV_PREFIXES == PROTECTED_PREFIXES
    )
    for name in (
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "CUDA_VISIBLE_DEVICES",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
        "JUPYTER_GPUSPAWN_GPUS",
        "JUPYTERHUB_API_TOKEN",
        "JUPYTERHUB_API_URL",
        "JPY_API_TOKEN",
        "MEM_LIMIT",
        "CPU_LIMIT",
        "PYTHONPATH",
        "PYTHONSTARTUP",
        "HOME",
        "PATH",
        "DOCKER_RESOURCE_NVIDIA-GPU",
    ):
        assert is_protected_env(name), name
    for name in (
        "OMP_NUM_THREADS",
        "DATASET_DIR",
        "LD",
        "NVIDIA",
        "JUPYTER_GPUSPAWNX",
        "ld_preload",
        "PYTHONPATHS",
        "CUDA_HOME",
        "TF_CPP_MIN_LOG_LEVEL",
        "MY_LD_PRELOAD",
        "JUPYTERHUB",
    ):
        assert not is_protected_env(name), name


@settings(max_examples=300, deadline=None)
@given(
    prefix=st.sampled_from(PROTECTED_PREFIXES),
    rest=st.from_regex(r"[A-Za-z0-9_]{0,30}", fullmatch=True),
)
def test_every_name_under_a_protected_prefix_is_protected(prefix, rest):
    assert is_protected_env(prefix + rest)


@settings(max_examples=500, deadline=None)
@given(name=env_names)
def test_other_names_are_free(name):
    if name in PROTECTED_NAMES or name.startswith(PROTECTED_PREFIXES):
        assert is_protected_env(name)
    else:
        assert not is_protected_env(name)


@settings(max_examples=300, deadline=None)
@given(name=env_names, value=st.text(max_size=20))
def test_a_key_with_an_equals_sign_counts_as_the_name_before_it(name, value):
    # Docker env is a list of "KEY=VALUE": a key "LD_PRELOAD=/x.so" with any value sets LD_PRELOAD.
    assert is_protected_env(f"{name}={value}") == is_protected_env(name)
    assert is_protected_env(f"LD_PRELOAD={value}") and is_protected_env(f"PATH={value}")


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
    path = write(
        tmp_path,
        [
            {
                "uuid": "GPU-a",
                "name": "A100",
                "memory_total": "80GiB",
                "memory_used": "1GiB",
                "utilization": 30,
            },
            {"uuid": "GPU-b", "name": "A100", "memory_total": 1},
        ],
    )
    snap = read_simulated(path)
    assert snap.simulated and [g.uuid for g in snap.gpus] == ["GPU-a", "GPU-b"]
    assert snap.gpus[0].utilization_pct == 30 and snap.gpus[1].index == 1


def test_simulated_inventory_yaml(tmp_path):
    path = write(
        tmp_path, "gpus:\n  - {uuid: GPU-y, name: H100, memory_total: 80GiB}\n", "gpus.yaml"
    )
    assert read_simulated(path).gpus[0].name == "H100"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"not": "a list"}, "expected a list"),
        ([{"uuid": "nope", "memory_total": 1}], "uuid must look like"),
        ([{"uuid": "GPU-a"}], "memory_total is required"),
        (
            [{"uuid": "GPU-a", "memory_total": 1}, {"uuid": "GPU-a", "memory_total": 1}],
            "duplicate uuid",
        ),
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


def test_simulated_file_alias_bomb_is_refused_at_once(tmp_path):
    from .test_courses import lol_bomb

    path = write(tmp_path, "gpus:\n  - {uuid: GPU-a, memory_total: 1}\n" + lol_bomb(), "gpus.yaml")
    started = time.perf_counter()
    with pytest.raises(InventoryError) as e:
        read_simulated(path)
    assert time.perf_counter() - started < 0.5
    assert str(e.value) == (
        f"simulated GPU file {path}: "
        "YAML anchors/aliases (&, *) are not allowed in simulated GPU files"
    )


def test_simulated_file_is_capped_in_size(tmp_path):
    path = write(
        tmp_path,
        "- {uuid: GPU-a, memory_total: 1}\n" + ("# " + "x" * 1000 + "\n") * 300,
        "gpus.yaml",
    )
    with pytest.raises(InventoryError) as e:
        read_simulated(path)
    assert (
        str(e.value)
        == f"simulated GPU file {path}: is larger than 256 KiB, the limit for simulated GPU files"
    )


@pytest.mark.parametrize(
    "device, message",
    [
        (
            {"uuid": "GPU-" + "a" * 100_000, "memory_total": 1},
            "uuid must look like GPU-xxxxxxxx, got 'GPU-aaa",
        ),
        (
            {"uuid": "GPU-a", "memory_total": "9" * 100_000 + "X"},
            "memory_total must be a size like 80GiB",
        ),
        (
            {"uuid": "GPU-a", "memory_total": 1, "utilization": list(range(30_000))},
            "utilization must be",
        ),
        ({"uuid": "GPU-a", "memory_total": 1, "k" * 100_000: 1}, "unknown key(s) kkkk"),
        (
            {"uuid": "GPU-a", "memory_total": 1, "processes": [{"used_memory": 1}]},
            "each process needs a pid",
        ),
        (
            {"uuid": "GPU-a", "memory_total": 1, "processes": [{"pid": "x" * 100_000}]},
            "pid must be a whole number",
        ),
        (
            {"uuid": "GPU-a", "memory_total": 1, "processes": "many"},
            "processes must be a whole number, got 'many'",
        ),
        (
            {"uuid": "GPU-a", "memory_total": 1, "index": "first"},
            "index must be a whole number, got 'first'",
        ),
        (
            {"uuid": "GPU-a", "memory_total": 1, "temperature": "hot"},
            "temperature must be a whole number",
        ),
    ],
)
def test_bad_simulated_values_are_inventory_errors_quoted_short(tmp_path, device, message):
    path = write(tmp_path, [device])
    with pytest.raises(InventoryError) as e:
        read_simulated(path)
    assert message in str(e.value) and len(str(e.value)) < len(path) + 250, str(e.value)[:500]


simulated_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(["GPU-a", "80GiB", "9" * 400 + "G", 55, 0])
)
simulated_device = st.fixed_dictionaries(
    {
        "uuid": st.sampled_from(["GPU-a", "GPU-b", "MIG-c"]) | simulated_leaf,
        "memory_total": simulated_leaf,
    },
    optional={
        key: simulated_leaf
        for key in ("name", "memory_used", "utilization", "temperature", "index", "x")
    }
    | {
        "processes": simulated_leaf
        | st.lists(
            st.dictionaries(st.sampled_from(["pid", "used_memory", "x"]), simulated_leaf),
            max_size=2,
        )
    },
)
simulated_values = (
    st.lists(simulated_device, max_size=3)
    | st.fixed_dictionaries({"gpus": st.lists(simulated_device)})
    | st.recursive(simulated_leaf, lambda c: st.lists(c, max_size=3), max_leaves=5)
)


@settings(max_examples=300, deadline=None)
@given(data=simulated_values)
def test_hostile_simulated_data_is_a_snapshot_or_an_inventory_error(data):
    from jupyter_gpuspawn.gpus import Snapshot, parse_simulated

    try:
        snapshot = parse_simulated(data, "gpus.yaml")
    except InventoryError as e:  # the hub and the status extension catch this one only
        assert str(e).startswith("gpus.yaml") and len(str(e)) < 400
        return
    assert isinstance(snapshot, Snapshot)


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


def test_format_size_uses_the_largest_binary_unit():
    from jupyter_gpuspawn.gpus import format_size, parse_size

    assert format_size(parse_size("24M")) == "24 MiB"
    assert format_size(parse_size("1.5GiB")) == "1.5 GiB"
    assert format_size(parse_size("80GiB")) == "80 GiB"
    assert format_size(512) == "512 B"
