"""Real NVML on a real NVIDIA GPU (run on the lent GPU machine). The only tests allowed to skip elsewhere."""
from __future__ import annotations

import pytest

from jupyter_gpuspawn.gpus import GPUInventory, NVMLReader
from jupyter_gpuspawn.status.collector import StatusCollector

pytestmark = pytest.mark.gpu

if not NVMLReader().available():
    pytest.skip("no NVIDIA driver on this machine (gpu tier runs on a GPU host)", allow_module_level=True)


def test_inventory_reads_real_devices():
    snapshot = GPUInventory("nvml", cache_seconds=0).read()
    assert snapshot.source == "nvml" and snapshot.errors == ()
    assert snapshot.gpus
    for gpu in snapshot.gpus:
        assert gpu.uuid.startswith(("GPU-", "MIG-")) and gpu.memory_total > 0 and gpu.name
        print(f"GPU {gpu.index}: {gpu.name} {gpu.uuid} {gpu.memory_used / 2**30:.1f}/{gpu.memory_total / 2**30:.1f} "
              f"GiB util={gpu.utilization_pct}% temp={gpu.temperature_c}C power={gpu.power_w}W "
              f"cc={gpu.compute_capability} procs={gpu.process_count}")


def test_status_collector_reports_real_metrics_for_the_assigned_gpu_only():
    gpus = GPUInventory("nvml", cache_seconds=0).read().gpus
    mine = gpus[0].uuid
    collector = StatusCollector(env={"JUPYTER_GPUSPAWN_GPUS": mine}, gpu_source="nvml")
    status = collector.collect()
    assert status["errors"] == []
    [gpu] = status["gpus"]
    assert gpu["uuid"] == mine and gpu["simulated"] is False
    assert gpu["memory_total"] > 0 and gpu["utilization_pct"] is not None and gpu["temperature_c"] is not None
    assert gpu["compute_capability"]
    print(status["gpus"])
