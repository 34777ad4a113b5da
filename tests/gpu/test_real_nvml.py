"""The gpu tier: the real NVML path on a real NVIDIA GPU (run by scripts/gpu-tier on a GPU host).

Skipped as a whole where no driver answers (CI has none); nothing else in the suite may skip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import textwrap
import time

import pytest

from jupyter_gpuspawn.allocation import GPUAllocator, GPURequest, NoGPUAvailable
from jupyter_gpuspawn.gpus import GPUInventory, NVMLReader, instance_profiles
from jupyter_gpuspawn.status.collector import StatusCollector

pytestmark = pytest.mark.gpu

if not NVMLReader().available():
    pytest.skip(
        "no NVIDIA driver on this machine (gpu tier runs on a GPU host)", allow_module_level=True
    )

import pynvml  # noqa: E402  (importable: the reader just initialised it)

GiB = 1024**3


def read():
    return GPUInventory("nvml", cache_seconds=0).read()


def test_inventory_reads_real_devices():
    snapshot = read()
    assert snapshot.source == "nvml" and snapshot.errors == ()
    assert snapshot.gpus
    for gpu in snapshot.gpus:
        assert gpu.uuid.startswith(("GPU-", "MIG-")) and gpu.memory_total > 0 and gpu.name
        assert 0 <= gpu.memory_used <= gpu.memory_total
        print(
            f"GPU {gpu.index}: {gpu.label} {gpu.uuid} "
            f"{gpu.memory_used / GiB:.1f}/{gpu.memory_total / GiB:.1f} "
            f"GiB util={gpu.utilization_pct}% temp={gpu.temperature_c}C power={gpu.power_w}W "
            f"cc={gpu.compute_capability} procs={gpu.process_count} mig={gpu.mig_profile}"
        )


def test_each_gpu_is_offered_whole_or_as_its_mig_devices_as_its_mig_mode_says():
    offered = read().gpus
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        try:
            current, pending = pynvml.nvmlDeviceGetMigMode(handle)
        except pynvml.NVMLError as e:
            current = pending = None
            print(f"GPU {index}: MIG mode not supported ({e})")
        else:
            print(f"GPU {index}: MIG mode current={current} pending={pending}")
        slices = [gpu for gpu in offered if gpu.parent_uuid == uuid]
        whole = [gpu for gpu in offered if gpu.uuid == uuid]
        if current == pynvml.NVML_DEVICE_MIG_ENABLE:
            assert not whole, "a GPU in MIG mode must be offered only as its MIG devices"
            for gpu in slices:
                assert (
                    gpu.uuid.startswith("MIG-") and gpu.mig_profile and gpu.utilization_pct is None
                )
                assert (
                    gpu.power_w is None
                    and 0 < gpu.memory_total < pynvml.nvmlDeviceGetMemoryInfo(handle).total
                )
                print(f"  MIG device {gpu.uuid}: {gpu.label}")
        else:
            assert whole and not slices and whole[0].mig_profile is None


def test_the_drivers_mig_profiles_read_as_the_reader_names_slices():
    """The profile table the reader falls back on when a MIG device's name carries no profile. NVML
    describes the profiles whether or not MIG mode is on, so this runs on any MIG-capable GPU."""
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    profiles = instance_profiles(pynvml, handle)
    for name, slices, memory_mb in profiles:
        print(f"profile {name}: {slices} slice(s), {memory_mb} MB")
    if not profiles:
        pytest.skip(
            f"{pynvml.nvmlDeviceGetName(handle)} describes no MIG profiles (no MIG on this GPU)"
        )
    assert all(
        re.fullmatch(r"\d+g\.\d+gb(\+\w+)?", name)
        and name.startswith(f"{slices}g.")
        and memory_mb > 0
        for name, slices, memory_mb in profiles
    ), profiles


def test_one_inventory_sweep_is_cheap_and_the_cache_shares_it():
    reader = NVMLReader()
    reader.read()
    times = []
    for _ in range(20):
        started = time.perf_counter()
        reader.read()
        times.append(time.perf_counter() - started)
    print(
        f"NVML sweep of {len(read().gpus)} device(s): median {statistics.median(times) * 1000:.2f} "
        f"ms, "
        f"max {max(times) * 1000:.2f} ms over 20 reads"
    )
    # generous: a spawn burst shares one sweep per second anyway
    assert statistics.median(times) < 0.5


def test_status_collector_reports_real_metrics_for_the_assigned_gpu_only():
    gpus = read().gpus
    mine = gpus[0].uuid
    collector = StatusCollector(env={"JUPYTER_GPUSPAWN_GPUS": mine}, gpu_source="nvml")
    status = collector.collect()
    assert status["errors"] == []
    [gpu] = status["gpus"]
    assert gpu["uuid"] == mine and gpu["simulated"] is False
    assert gpu["memory_total"] > 0 and gpu["temperature_c"] is not None
    assert gpu["compute_capability"]
    if gpu["mig_profile"] is None:
        assert gpu["utilization_pct"] is not None
    else:
        # NVML has none per MIG device: null, never a wrong number
        assert gpu["utilization_pct"] is None
    print(status["gpus"])


# A real CUDA process: 2 GiB on the device and kernels running, as a student's training loop would.
WORKLOAD = textwrap.dedent("""
    import sys, time
    try:
        import torch
        x = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
        a = torch.randn(4096, 4096, device="cuda")
        step = lambda: (a @ a).sum().item()
    except ImportError:
        import cupy
        x = cupy.empty(2 * 1024**3, dtype=cupy.uint8)
        a = cupy.random.randn(4096, 4096, dtype=cupy.float32)
        step = lambda: float((a @ a).sum())
    print("ready", flush=True)
    end = time.time() + float(sys.argv[1])
    while time.time() < end:
        step()
""")


@pytest.fixture
def cuda_worker():
    if importlib.util.find_spec("torch") is None:
        pytest.importorskip("cupy", reason="the workload needs torch or cupy on the GPU host")
    visible = read().gpus[0]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=visible.uuid)
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKLOAD, "60"], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready", "the CUDA workload did not start"
        yield proc, visible.uuid
    finally:
        proc.kill()
        proc.wait()


def _until(check, seconds=15.0):
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_a_real_cuda_process_is_seen_and_keeps_students_off_the_gpu(cuda_worker):
    proc, uuid = cuda_worker

    def busy_gpu():
        gpu = read().by_uuid()[uuid]
        return gpu if gpu.process_count and (gpu.utilization_pct or 0) > 0 else None

    gpu = _until(busy_gpu)
    assert gpu is not None, f"NVML never showed the workload on {uuid}: {read().by_uuid()[uuid]}"
    print(
        f"busy: util={gpu.utilization_pct}% mem={gpu.memory_used / GiB:.1f} GiB "
        f"procs={gpu.processes}"
    )
    assert gpu.memory_used >= 2 * GiB
    pids = [pid for pid, _ in gpu.processes]
    print(f"worker pid {proc.pid}, NVML pids {pids}")
    # Work the hub did not start is "outside the hub": no student is put on that GPU.
    allocator = GPUAllocator()
    assert allocator.busy_outside_hub(gpu)
    others = [g for g in read().gpus if g.uuid != uuid]
    with pytest.raises(NoGPUAvailable, match="busy with work outside JupyterHub"):
        allocator.allocate(GPURequest("student", count=len(others) + 1), read().gpus)


def test_the_status_panel_lists_our_own_cuda_process(cuda_worker):
    proc, uuid = cuda_worker
    collector = StatusCollector(env={"JUPYTER_GPUSPAWN_GPUS": uuid}, gpu_source="nvml")

    def ours():
        [gpu] = collector.collect()["gpus"]
        return gpu if gpu["processes"] else None

    gpu = _until(ours)
    assert gpu is not None, "the worker (same cgroup as this test) was not listed as ours"
    [mine] = gpu["processes"]
    print(f"status panel process: {mine}, others {gpu['other_processes']}")
    assert mine["pid"] == proc.pid and mine["command"].startswith("python")


NAMESPACED_PANEL = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from jupyter_gpuspawn.status.collector import StatusCollector
    uuid, workload = sys.argv[1], sys.argv[2]
    worker = subprocess.Popen(
        [sys.executable, "-c", workload, "30"], stdout=subprocess.PIPE, text=True,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=uuid),
    )
    assert worker.stdout.readline().strip() == "ready"
    collector = StatusCollector(env={"JUPYTER_GPUSPAWN_GPUS": uuid}, gpu_source="nvml")
    end, gpu = time.time() + 15, None
    while time.time() < end:
        [gpu] = collector.collect()["gpus"]
        if gpu["processes"] or gpu["other_processes"]:
            break
        time.sleep(0.5)
    worker.kill()
    print(json.dumps({"worker": worker.pid, "processes": gpu["processes"],
                      "others": gpu["other_processes"]}))
""")


def test_the_status_panel_finds_our_cuda_process_from_inside_a_pid_namespace(tmp_path):
    # a student's server runs in its container's own PID namespace: NVML may report host PIDs
    # there, which the container's /proc does not have (or has as some other process)
    if importlib.util.find_spec("torch") is None:
        pytest.importorskip("cupy", reason="the workload needs torch or cupy on the GPU host")
    uuid = read().gpus[0].uuid
    script = tmp_path / "panel.py"
    script.write_text(NAMESPACED_PANEL)
    r = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, str(script), uuid, WORKLOAD],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, f"unshare --pid (needs root) or the script failed:\n{r.stderr}"
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"inside a PID namespace: {seen}")
    assert [p["pid"] for p in seen["processes"]] == [seen["worker"]], (
        "NVML's PIDs are not this namespace's: the panel cannot tell our processes from others'"
    )


def test_a_cuda_process_holds_nvidia_uvm_and_nvml_alone_does_not(cuda_worker):
    """What the idle culler's "a process of ours" rests on inside a PID namespace
    (status/container.has_cuda_process): CUDA opens /dev/nvidia-uvm, NVML (this process) does
    not."""
    from jupyter_gpuspawn.status import container

    proc, _uuid = cuda_worker
    read()  # this process: NVML only
    mine = {os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
    assert container.UVM_DEVICE not in mine
    theirs = {os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")}
    print(f"CUDA worker's device files: {sorted(p for p in theirs if p.startswith('/dev/nv'))}")
    assert container.UVM_DEVICE in theirs
    assert container.has_cuda_process("/proc", container.own_cgroup(), exclude={os.getpid()})
