"""MIG devices as allocatable GPUs: the simulated file, the NVML reader (against a stand-in NVML
module shaped like nvidia-ml-py, since no MIG hardware exists here; the gpu tier reads the real
one), labels, the status collector and the allocator."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest

from jupyter_gpuspawn.allocation import GPUAllocator, GPURequest, NoGPUAvailable, largest_server
from jupyter_gpuspawn.form import gpu_models
from jupyter_gpuspawn.gpus import (
    InventoryError,
    NVMLReader,
    assignment_message,
    parse_simulated,
    simulated_description,
)
from jupyter_gpuspawn.status.collector import StatusCollector

GiB = 1024**3
A100 = "GPU-a100a100-0000-4000-8000-000000000000"
H100 = "GPU-h100h100-0000-4000-8000-000000000000"
SLICE_1 = "MIG-11111111-0000-4000-8000-000000000000"
SLICE_2 = "MIG-22222222-0000-4000-8000-000000000000"


def mig(uuid, profile="1g.10gb", parent=A100, memory="10GiB", **more):
    return {
        "uuid": uuid,
        "name": "NVIDIA A100 80GB PCIe",
        "index": 0,
        "mig_profile": profile,
        "parent_uuid": parent,
        "memory_total": memory,
        **more,
    }


# ---- the simulated file --------------------------------------------------------------------------


def test_simulated_mig_devices_are_gpus_with_a_profile_and_a_parent():
    snap = parse_simulated(
        [
            mig(SLICE_1),
            mig(SLICE_2, "3g.40gb", memory="40GiB"),
            {"uuid": H100, "name": "NVIDIA H100", "index": 1, "memory_total": "80GiB"},
        ],
        "f",
    )
    one, three, whole = snap.gpus
    assert (one.mig_profile, one.parent_uuid, one.index, one.utilization_pct) == (
        "1g.10gb",
        A100,
        0,
        None,
    )
    assert one.label == "1g.10gb slice of NVIDIA A100 80GB PCIe (10 GiB)"
    assert three.label == "3g.40gb slice of NVIDIA A100 80GB PCIe (40 GiB)"
    assert whole.mig_profile is None and whole.label == "NVIDIA H100"


@pytest.mark.parametrize(
    "devices, message",
    [
        (
            [mig(SLICE_1), {"uuid": A100, "memory_total": "80GiB"}],
            "listed whole and as the parent of MIG device",
        ),
        ([mig(SLICE_1, profile=None)], "needs mig_profile like 1g.10gb"),
        ([mig(SLICE_1, profile="1g 10gb<script>")], "needs mig_profile like 1g.10gb"),
        ([mig(SLICE_1, parent=None)], "needs parent_uuid"),
        ([mig(SLICE_1, parent=SLICE_2)], "needs parent_uuid"),
        ([mig(SLICE_1, utilization=40)], "no utilisation for MIG devices"),
        ([{"uuid": H100, "memory_total": 1, "mig_profile": "1g.10gb"}], "belong to MIG devices"),
    ],
)
def test_simulated_mig_mistakes_are_named(devices, message):
    with pytest.raises(InventoryError, match=message):
        parse_simulated(devices, "gpus.yaml")


def test_the_description_handed_to_the_container_keeps_the_slice():
    snap = parse_simulated(
        [mig(SLICE_1, memory_used="2GiB"), {"uuid": H100, "memory_total": "80GiB"}], "f"
    )
    back = parse_simulated(json.loads(simulated_description([SLICE_1], snap)), "env")
    assert back.gpus == (snap.gpus[0],)


# ---- NVML (stand-in module shaped like nvidia-ml-py) ---------------------------------------------


class NVMLError(Exception):
    pass


class NVMLError_NotFound(NVMLError):
    pass


class NVMLError_NotSupported(NVMLError):
    pass


class Device:
    def __init__(
        self, uuid, name, memory, used=0, util=None, temp=None, procs=(), mig_mode=None, slots=()
    ):
        self.uuid, self.name, self.memory, self.used = uuid, name, memory, used
        self.util, self.temp, self.procs, self.mig_mode, self.slots = (
            util,
            temp,
            procs,
            mig_mode,
            list(slots),
        )


def nvml_module(devices):
    """A module object with the nvidia-ml-py functions the reader calls, over ``devices``."""

    def supported(value):
        if value is None:
            raise NVMLError_NotSupported("Not Supported")
        return value

    def slot(dev, i):
        found = dev.slots[i]
        if isinstance(found, Exception):
            raise found
        if found is None:
            raise NVMLError_NotFound("Not Found")
        return found

    return SimpleNamespace(
        NVMLError=NVMLError,
        NVMLError_NotFound=NVMLError_NotFound,
        NVML_DEVICE_MIG_ENABLE=1,
        NVML_TEMPERATURE_GPU=0,
        nvmlInit=lambda: None,
        nvmlDeviceGetCount=lambda: len(devices),
        nvmlDeviceGetHandleByIndex=lambda i: devices[i],
        nvmlDeviceGetUUID=lambda d: d.uuid.encode(),  # older bindings answer bytes
        nvmlDeviceGetName=lambda d: d.name,
        nvmlDeviceGetMemoryInfo=lambda d: SimpleNamespace(total=d.memory, used=d.used),
        nvmlDeviceGetUtilizationRates=lambda d: SimpleNamespace(gpu=supported(d.util)),
        nvmlDeviceGetTemperature=lambda d, sensor: supported(d.temp),
        nvmlDeviceGetComputeRunningProcesses=lambda d: [
            SimpleNamespace(pid=p, usedGpuMemory=None) for p in d.procs
        ],
        nvmlDeviceGetPowerUsage=lambda d: 250_000,
        nvmlDeviceGetCudaComputeCapability=lambda d: (8, 0),
        nvmlDeviceGetMigMode=lambda d: supported(d.mig_mode),
        nvmlDeviceGetMaxMigDeviceCount=lambda d: len(d.slots),
        nvmlDeviceGetMigDeviceHandleByIndex=slot,
        nvmlDeviceGetAttributes=lambda d: SimpleNamespace(
            gpuInstanceSliceCount=2, memorySizeMB=d.memory // 2**20
        ),
        # the profile table an H200 describes (read on one by the gpu tier): names are not
        # computable from memory
        NVML_GPU_INSTANCE_PROFILE_1_SLICE=0,
        NVML_GPU_INSTANCE_PROFILE_2_SLICE=1,
        nvmlDeviceGetGpuInstanceProfileInfo=lambda d, p: supported(
            {
                0: SimpleNamespace(name=b"MIG 1g.18gb", sliceCount=1, memorySizeMB=16384),
                1: SimpleNamespace(name=b"MIG 2g.35gb", sliceCount=2, memorySizeMB=33280),
            }.get(p)
        ),
    )


def read_with(monkeypatch, devices):
    monkeypatch.setitem(sys.modules, "pynvml", nvml_module(devices))
    return NVMLReader().read()


def a_slice(uuid, name="NVIDIA A100-SXM4-80GB MIG 1g.10gb", memory=10 * GiB, used=0, procs=()):
    return Device(uuid, name, memory, used, util=None, temp=None, procs=procs)


def test_a_gpu_in_mig_mode_is_offered_as_its_mig_devices_only(monkeypatch):
    mig_gpu = Device(
        A100,
        "NVIDIA A100-SXM4-80GB",
        80 * GiB,
        util=37,
        temp=51,
        mig_mode=(1, 1),
        slots=[
            a_slice(SLICE_1, used=3 * GiB, procs=(4242,)),
            None,
            a_slice(SLICE_2, name="NVIDIA A100-SXM4-80GB", memory=33280 * 2**20),
        ],
    )
    whole = Device(H100, "NVIDIA H100 80GB HBM3", 80 * GiB, util=12, temp=40, mig_mode=(0, 0))
    snap = read_with(monkeypatch, [mig_gpu, whole])
    assert snap.errors == ()
    first, second, h100 = snap.gpus
    assert [g.uuid for g in snap.gpus] == [SLICE_1, SLICE_2, H100]  # the A100 itself is not offered
    assert (first.mig_profile, first.parent_uuid, first.index, first.name) == (
        "1g.10gb",
        A100,
        0,
        "NVIDIA A100-SXM4-80GB",
    )
    # NVML has no utilisation or power per MIG device: None, never the parent's 37 % or 250 W
    assert first.utilization_pct is None and first.power_w is None
    # the die the slice shares
    assert first.temperature_c == 51 and first.compute_capability == "8.0"
    assert (first.memory_used, first.processes, first.process_count) == (
        3 * GiB,
        ((4242, None),),
        1,
    )
    # no profile in its name: the parent's profile with its slices and memory
    assert second.mig_profile == "2g.35gb"
    assert h100.mig_profile is None and h100.utilization_pct == 12 and h100.power_w == 250


def test_a_slice_no_profile_describes_is_named_by_its_slice_count(monkeypatch):
    odd = a_slice(SLICE_1, name="", memory=20 * GiB)
    snap = read_with(
        monkeypatch, [Device(A100, "NVIDIA A100", 80 * GiB, mig_mode=(1, 1), slots=[odd])]
    )
    assert (
        snap.gpus[0].mig_profile == "2g"
        and snap.gpus[0].label == "2g slice of NVIDIA A100 (20 GiB)"
    )


def test_a_gpu_without_mig_support_is_offered_whole(monkeypatch):
    snap = read_with(
        monkeypatch, [Device(H100, "Tesla T4", 16 * GiB, util=0, temp=30, mig_mode=None)]
    )
    assert [(g.uuid, g.mig_profile) for g in snap.gpus] == [(H100, None)] and snap.errors == ()


def test_mig_mode_without_mig_devices_offers_nothing_and_says_why(monkeypatch):
    snap = read_with(
        monkeypatch, [Device(A100, "NVIDIA A100", 80 * GiB, mig_mode=(1, 1), slots=[None, None])]
    )
    assert snap.gpus == ()
    assert "GPU 0 (NVIDIA A100) is in MIG mode but has no MIG devices" in snap.errors[0]


def test_a_mig_device_that_cannot_be_read_is_reported_and_the_others_kept(monkeypatch):
    broken = NVMLError("Unknown Error")
    snap = read_with(
        monkeypatch,
        [Device(A100, "NVIDIA A100", 80 * GiB, mig_mode=(1, 1), slots=[broken, a_slice(SLICE_2)])],
    )
    assert [g.uuid for g in snap.gpus] == [SLICE_2]
    assert snap.errors == ("MIG device 0 of GPU 0 cannot be read: Unknown Error",)


# ---- what people read, and allocation ------------------------------------------------------------


def test_form_and_progress_name_the_slice_with_its_memory():
    snap = parse_simulated(
        [
            mig(SLICE_1),
            mig(SLICE_2),
            {"uuid": H100, "name": "NVIDIA H100", "index": 1, "memory_total": "80GiB"},
        ],
        "f",
    )
    assert (
        gpu_models(snap.gpus)
        == "2× 1g.10gb slice of NVIDIA A100 80GB PCIe (10 GiB), 1× NVIDIA H100"
    )
    message = assignment_message([SLICE_2], snap)
    assert (
        message == "Assigned MIG 1g.10gb slice of NVIDIA A100 80GB PCIe (10 GiB) on GPU 0, "
        "MIG-22222222… [simulated]"
    )


def test_slices_are_allocated_like_gpus_each_to_one_server():
    gpus = parse_simulated([mig(SLICE_1), mig(SLICE_2)], "f").gpus
    allocator = GPUAllocator()
    first = allocator.allocate(GPURequest("ana", count=1), gpus)
    second = allocator.allocate(GPURequest("ben", count=1), gpus)
    assert {first[0], second[0]} == {SLICE_1, SLICE_2}
    assert allocator.free_count(gpus) == 0


def test_the_status_document_reports_a_slice_with_null_utilisation(tmp_path):
    path = tmp_path / "gpus.json"
    path.write_text(json.dumps([mig(SLICE_1, memory_used="1GiB", temperature=48)]))
    collector = StatusCollector(
        env={"JUPYTER_GPUSPAWN_GPUS": SLICE_1}, gpu_source="simulated", simulated_file=str(path)
    )
    [gpu] = collector.collect()["gpus"]
    assert gpu["utilization_pct"] is None and gpu["power_w"] is None
    assert (gpu["mig_profile"], gpu["parent_uuid"], gpu["temperature_c"]) == ("1g.10gb", A100, 48)
    assert gpu["name"] == "1g.10gb slice of NVIDIA A100 80GB PCIe (10 GiB)"


def test_a_server_gets_at_most_one_slice_and_never_slices_beside_whole_gpus():
    # CUDA sees one MIG device per process: a second slice would be held and never used
    gpus = parse_simulated(
        [
            mig(SLICE_1),
            mig(SLICE_2),
            {"uuid": H100, "name": "NVIDIA H100", "index": 1, "memory_total": "80GiB"},
        ],
        "f",
    ).gpus
    allocator = GPUAllocator()
    assert largest_server(gpus) == 1 and allocator.largest_request(gpus) == 1
    with pytest.raises(NoGPUAvailable, match="at most one MIG slice"):
        allocator.allocate(GPURequest("ana", count=2), gpus)
    assert allocator.assignment("ana") == ()
    assert len(allocator.allocate(GPURequest("ana", count=1), gpus)) == 1
    other = "GPU-b200b200-0000-4000-8000-000000000000"
    whole = parse_simulated(
        [
            mig(SLICE_1),
            {"uuid": H100, "memory_total": 1, "index": 1},
            {"uuid": other, "memory_total": 1, "index": 2},
        ],
        "f",
    ).gpus
    assert set(GPUAllocator().allocate(GPURequest("ben", count=2), whole)) == {H100, other}


def test_auto_reports_a_mig_gpu_without_slices_instead_of_calling_the_host_cpu_only(monkeypatch):
    from jupyter_gpuspawn.gpus import GPUInventory

    monkeypatch.setitem(
        sys.modules,
        "pynvml",
        nvml_module([Device(A100, "NVIDIA A100", 80 * GiB, mig_mode=(1, 1), slots=[None])]),
    )
    snap = GPUInventory("auto", cache_seconds=0).read()
    assert snap.source == "nvml" and "in MIG mode but has no MIG devices" in snap.errors[0]


def test_a_mig_uuid_without_a_profile_is_a_plain_device_as_before():
    [gpu] = parse_simulated(
        [{"uuid": SLICE_1, "memory_total": "10GiB", "utilization": 5}], "f"
    ).gpus
    assert gpu.mig_profile is None and gpu.utilization_pct == 5
