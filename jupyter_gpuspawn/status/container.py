"""What this container is and uses: cgroup v2 or v1 limits and usage, /dev/shm, uptime, identity.

Every reader takes a root directory so tests can lay out cgroup and proc trees; nothing here raises
for a missing file: unknown values are None.
"""

from __future__ import annotations

import os
import re
import time

UNLIMITED_V1 = 1 << 60  # cgroup v1 reports "no limit" as a huge number near 2**63


def _read(path) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _int(text) -> int | None:
    try:
        return int(text)
    except (TypeError, ValueError):
        return None


def cgroup_version(root: str) -> int | None:
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return 2
    if os.path.isdir(os.path.join(root, "memory")):
        return 1
    return None


def read_cgroup(root: str) -> dict:
    """Limits and counters of the cgroup mounted at ``root`` (the container's own)."""
    version = cgroup_version(root)
    out = {
        "cgroup_version": version,
        "memory_limit": None,
        "memory_used": None,
        "cpu_limit": None,
        "cpu_usage_seconds": None,
        "pids": None,
        "pids_limit": None,
    }
    if version == 2:
        limit = _read(os.path.join(root, "memory.max"))
        out["memory_limit"] = None if limit in (None, "max") else _int(limit)
        out["memory_used"] = _int(_read(os.path.join(root, "memory.current")))
        cpu_max = (_read(os.path.join(root, "cpu.max")) or "").split()
        if len(cpu_max) == 2 and cpu_max[0] != "max":
            out["cpu_limit"] = int(cpu_max[0]) / int(cpu_max[1])
        stat = _read(os.path.join(root, "cpu.stat")) or ""
        match = re.search(r"^usage_usec (\d+)", stat, re.M)
        out["cpu_usage_seconds"] = int(match.group(1)) / 1e6 if match else None
        out["pids"] = _int(_read(os.path.join(root, "pids.current")))
        pids_max = _read(os.path.join(root, "pids.max"))
        out["pids_limit"] = None if pids_max in (None, "max") else _int(pids_max)
    elif version == 1:
        limit = _int(_read(os.path.join(root, "memory", "memory.limit_in_bytes")))
        out["memory_limit"] = limit if limit is not None and limit < UNLIMITED_V1 else None
        usage = _int(_read(os.path.join(root, "memory", "memory.usage_in_bytes")))
        # usage_in_bytes counts page cache; what the OOM killer weighs is closer to usage -
        # inactive_file
        stat = _read(os.path.join(root, "memory", "memory.stat")) or ""
        match = re.search(r"^total_inactive_file (\d+)", stat, re.M)
        out["memory_used"] = (
            None if usage is None else max(0, usage - (int(match.group(1)) if match else 0))
        )
        quota = _int(_read(os.path.join(root, "cpu", "cpu.cfs_quota_us")))
        period = _int(_read(os.path.join(root, "cpu", "cpu.cfs_period_us")))
        if quota and quota > 0 and period:
            out["cpu_limit"] = quota / period
        usage_ns = _int(_read(os.path.join(root, "cpuacct", "cpuacct.usage")))
        out["cpu_usage_seconds"] = usage_ns / 1e9 if usage_ns is not None else None
        out["pids"] = _int(_read(os.path.join(root, "pids", "pids.current")))
        pids_max = _read(os.path.join(root, "pids", "pids.max"))
        out["pids_limit"] = None if pids_max in (None, "max") else _int(pids_max)
    return out


def shm_usage(path="/dev/shm") -> dict:
    try:
        st = os.statvfs(path)
    except OSError:
        return {"shm_size": None, "shm_used": None}
    return {
        "shm_size": st.f_blocks * st.f_frsize,
        "shm_used": (st.f_blocks - st.f_bfree) * st.f_frsize,
    }


def uptime_seconds(proc_root="/proc") -> float | None:
    """Seconds since this container's first process started."""
    uptime = _read(os.path.join(proc_root, "uptime"))
    stat = _read(os.path.join(proc_root, "1", "stat"))
    if not uptime or not stat:
        return None
    try:
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        return max(0.0, float(uptime.split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (IndexError, ValueError):
        return None


def container_id(proc_root="/proc") -> str | None:
    """Docker's container id, from the mounts Docker makes (works in host network mode too)."""
    text = _read(os.path.join(proc_root, "self", "mountinfo")) or ""
    match = re.search(r"/containers/([0-9a-f]{64})/", text)
    return match.group(1) if match else None


def own_cgroup(proc_root="/proc", pid="self") -> str | None:
    """The cgroup path of a process as this container sees it (to tell our processes from
    others')."""
    text = _read(os.path.join(proc_root, str(pid), "cgroup"))
    if text is None:
        return None
    # v2: a single "0::/path" line; v1: one line per hierarchy: use the memory one
    lines = text.splitlines()
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3 and (parts[0] == "0" or "memory" in parts[1].split(",")):
            return parts[2]
    return lines[0].split(":", 2)[-1] if lines else None


class CPUMeter:
    """CPU use in cores between two samples of the cgroup's cumulative CPU seconds."""

    def __init__(self):
        self._last = None

    def sample(self, usage_seconds: float | None) -> float | None:
        now = time.monotonic()
        if usage_seconds is None:
            return None
        last, self._last = self._last, (now, usage_seconds)
        if last is None or now <= last[0]:
            return None
        return max(0.0, (usage_seconds - last[1]) / (now - last[0]))


UVM_DEVICE = "/dev/nvidia-uvm"


def has_cuda_process(proc_root="/proc", cgroup=None, exclude=()) -> bool:
    """Whether a process of this container (in ``cgroup``, when given) holds a CUDA context: an open
    /dev/nvidia-uvm, which the CUDA driver opens when it starts and NVML (this extension's own GPU
    reader) does not. NVML's process list names host PIDs, which do not resolve inside a
    container's PID namespace; this needs no PIDs from outside. Processes of other users (and the
    ``exclude`` PIDs) are skipped."""
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return False
    for name in entries:
        if not name.isdigit() or int(name) in exclude:
            continue
        if cgroup is not None and own_cgroup(proc_root, name) != cgroup:
            continue
        fd_dir = os.path.join(proc_root, name, "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone meanwhile, or not ours to read
            continue
        for fd in fds:
            try:
                if os.readlink(os.path.join(fd_dir, fd)) == UVM_DEVICE:
                    return True
            except OSError:
                continue
    return False
