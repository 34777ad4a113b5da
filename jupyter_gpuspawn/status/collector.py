"""One status document for this container and its GPUs, collected off the event loop and shared by
all tabs."""

from __future__ import annotations

import json
import os
import socket
import time

from traitlets import Bool, CaselessStrEnum, Float, Unicode, default
from traitlets.config import LoggingConfigurable

from ..cached import Cached
from ..gpus import GPU, InventoryError, NVMLReader, parse_simulated, read_simulated
from . import container, demo
from .notice import read_reclaim


def assigned_gpus(env) -> list | None:
    """UUIDs this container was given; [] for CPU-only; None when unknown
    (NVIDIA_VISIBLE_DEVICES=all)."""
    ours = env.get("JUPYTER_GPUSPAWN_GPUS")
    if ours is not None:
        return [u for u in ours.split(",") if u]
    visible = env.get("NVIDIA_VISIBLE_DEVICES", "").strip()
    if visible in ("", "void", "none", "NoDevFiles"):
        return []
    if visible == "all":
        return None
    return [u for u in visible.split(",") if u]


def _env_size(value) -> int | None:
    try:
        return int(float(value)) if value else None
    except ValueError:
        return None


def _with_note(status: dict, note: str) -> dict:
    """The last collection, answered again while a newer one hangs: its age in ``errors``."""
    return {**status, "errors": [*status.get("errors", ()), note]}


class StatusCollector(LoggingConfigurable):
    """Settings: ``c.StatusCollector.…`` in the server's config (defaults fit a jupyter-gpuspawn
    container)."""

    gpu_source = CaselessStrEnum(
        ["auto", "nvml", "simulated", "none"],
        default_value="auto",
        config=True,
        help=(
            "auto: NVML when a driver answers, else the simulated GPUs the spawner described, "
            "else none."
        ),
    )
    cgroup_root = Unicode(
        "/sys/fs/cgroup", config=True, help="Where this container's cgroup is mounted."
    )
    proc_root = Unicode("/proc", config=True, help="procfs of this container.")
    shm_path = Unicode("/dev/shm", config=True, help="Shared memory mount to report.")
    cache_seconds = Float(
        1.0, config=True, help="How long one collection is shared by all requests."
    )
    read_timeout = Float(
        5.0,
        config=True,
        help="""Seconds a request (and the GPU activity check) waits for a collection. A GPU that
        fell off the bus can hang an NVML call for good: after this long the last collection is
        answered, with a note in ``errors`` (an error before the first), and the hung one is not
        started again while it runs. 0: wait for ever.""",
    )
    simulated_gpus = Unicode(
        config=True, help="JSON list of simulated GPUs (default: JUPYTER_GPUSPAWN_SIMULATED_GPUS)."
    )

    simulated_file = Unicode(
        config=True,
        help="""The hub's simulated-GPU file, mounted read-only by the spawner in demo mode
        (default:
        JUPYTER_GPUSPAWN_SIMULATED_FILE). Read at every collection, so an edited file shows live;
        preferred over simulated_gpus, the description taken at start.""",
    )

    demo_figures = Bool(
        True,
        config=True,
        help="""Demo mode: give a simulated GPU whose file leaves its utilisation out made-up
        figures that move smoothly over time (utilisation, temperature, memory; see
        jupyter_gpuspawn/status/demo.py), named in its ``demo_figures``. False: show only what
        the file says.""",
    )

    notice_file = Unicode(
        config=True,
        help="""The hub's notice file for this server, a small JSON file in a directory the spawner
        mounts read-only
        (default: JUPYTER_GPUSPAWN_NOTICE_FILE; empty: none). Its ``reclaim`` object (deadline,
        reason, message, idle_since, waiting) is the hub's warning that it will stop this server,
        e.g. because its GPUs stayed idle while others wait; the status document carries it as
        ``reclaim`` with ``seconds_left``. Read at every collection, so a notice the hub replaces
        shows at once; a missing or broken file means no warning.""",
    )

    @default("simulated_gpus")
    def _default_simulated(self):
        return os.environ.get("JUPYTER_GPUSPAWN_SIMULATED_GPUS", "")

    @default("simulated_file")
    def _default_simulated_file(self):
        return os.environ.get("JUPYTER_GPUSPAWN_SIMULATED_FILE", "")

    @default("notice_file")
    def _default_notice_file(self):
        return os.environ.get("JUPYTER_GPUSPAWN_NOTICE_FILE", "")

    def __init__(self, env=None, **kwargs):
        super().__init__(**kwargs)
        self.env = dict(os.environ if env is None else env)
        self._nvml = NVMLReader()
        self._cpu = container.CPUMeter()
        self._cached = Cached(
            self.collect, self.cache_seconds, "status", self.read_timeout, _with_note
        )

    async def status(self) -> dict:
        return await self._cached.get()

    # ---- one collection (blocking) ---------------------------------------------------------------
    def collect(self) -> dict:
        errors = []
        now = time.time()
        info = self._container()
        gpus, gpu_errors = self._gpus(now)
        errors += gpu_errors
        # A GPU with processes that are not resolved as ours: a neighbour's on a shared GPU, or our
        # own behind the PID namespace (NVML names host PIDs). Whether this container runs CUDA
        # tells the activity check which (None: not looked, no such GPU).
        info["cuda_process"] = None
        if any(gpu.get("other_processes") and not gpu["processes"] for gpu in gpus):
            info["cuda_process"] = container.has_cuda_process(
                self.proc_root, container.own_cgroup(self.proc_root), exclude={os.getpid()}
            )
        reclaim = read_reclaim(self.notice_file, now, self.log)
        return {
            "container": info,
            "gpus": gpus,
            "reclaim": reclaim,
            "errors": errors,
            "collected_at": now,
        }

    def _container(self) -> dict:
        cg = container.read_cgroup(self.cgroup_root)
        env = self.env
        memory_limit = cg["memory_limit"] or _env_size(env.get("MEM_LIMIT"))
        cpu_limit = cg["cpu_limit"]
        if cpu_limit is None and env.get("CPU_LIMIT"):
            try:
                cpu_limit = float(env["CPU_LIMIT"])
            except ValueError:
                pass
        cid = container.container_id(self.proc_root)
        return {
            "image": env.get("JUPYTER_GPUSPAWN_IMAGE") or env.get("JUPYTER_IMAGE_SPEC"),
            "course": env.get("JUPYTER_GPUSPAWN_COURSE") or None,
            "user": env.get("JUPYTERHUB_USER"),
            "server_name": env.get("JUPYTERHUB_SERVER_NAME") or None,
            "container_id": cid[:12] if cid else None,
            "hostname": socket.gethostname(),
            "uptime_seconds": container.uptime_seconds(self.proc_root),
            "memory_limit": memory_limit,
            "memory_used": cg["memory_used"],
            "cpu_limit": cpu_limit,
            "cpu_used": self._cpu.sample(cg["cpu_usage_seconds"]),
            "pids": cg["pids"],
            "pids_limit": cg["pids_limit"],
            "cgroup_version": cg["cgroup_version"],
            **container.shm_usage(self.shm_path),
        }

    def _device_snapshot(self):
        """(devices, source, errors) from NVML or the spawner's description of simulated GPUs."""
        errors = []
        if self.gpu_source in ("auto", "nvml"):
            snap = self._nvml.read()
            if snap.gpus or self.gpu_source == "nvml":
                return snap.gpus, "nvml", list(snap.errors)
            errors += list(snap.errors)
        if self.gpu_source in ("auto", "simulated") and self.simulated_file:
            try:
                return read_simulated(self.simulated_file).gpus, "simulated", []
            except InventoryError as e:
                errors.append(f"simulated GPUs cannot be read: {e}")
        if self.gpu_source in ("auto", "simulated") and self.simulated_gpus:
            try:
                snap = parse_simulated(json.loads(self.simulated_gpus), "simulated GPUs")
                return snap.gpus, "simulated", []
            except (ValueError, InventoryError) as e:
                errors.append(f"simulated GPUs cannot be read: {e}")
        return (), "none", errors

    def _gpus(self, now: float):
        wanted = assigned_gpus(self.env)
        if wanted == []:
            return [], []
        devices, source, errors = self._device_snapshot()
        found = {gpu.uuid: gpu for gpu in devices}
        # NVIDIA_VISIBLE_DEVICES=all: every device this container can see is its own
        if wanted is None:
            wanted = list(found)
        out = []
        missing = []
        my_cgroup = container.own_cgroup(self.proc_root)
        for uuid in wanted:
            gpu = found.get(uuid)
            if gpu is None:
                missing.append(uuid)
                out.append(
                    {
                        "uuid": uuid,
                        "index": None,
                        "name": None,
                        "utilization_pct": None,
                        "memory_used": None,
                        "memory_total": None,
                        "temperature_c": None,
                        "power_w": None,
                        "compute_capability": None,
                        "mig_profile": None,
                        "parent_uuid": None,
                        "processes": [],
                        "simulated": source == "simulated",
                        "demo_figures": [],
                    }
                )
                continue
            entry = self._gpu_entry(gpu, my_cgroup, source)
            if source == "simulated" and self.demo_figures:
                entry = demo.fill(entry, now)
            out.append(entry)
        if missing and not errors:
            errors.append(
                f"No metrics for {', '.join(missing)}: the GPU is not visible to this container."
            )
        elif missing:
            errors = [
                f"GPU metrics are unavailable ({e}). Your GPUs are still assigned: "
                f"{', '.join(missing)}."
                for e in errors
            ]
        return out, errors

    def _gpu_entry(self, gpu: GPU, my_cgroup, source) -> dict:
        processes, unattributed = [], 0
        for pid, used in gpu.processes:
            # NVML reports host PIDs; a process counts as ours only if it resolves in our /proc
            # *and* sits in our cgroup. Anything else is never shown: on a shared GPU it may be
            # another student's.
            cg = container.own_cgroup(self.proc_root, pid)
            if cg is not None and cg == my_cgroup:
                comm = container._read(os.path.join(self.proc_root, str(pid), "comm"))
                processes.append({"pid": pid, "used_memory": used, "command": comm})
            else:
                unattributed += 1
        # A MIG device: name is "1g.10gb slice of …"; utilisation and power stay null (NVML has none
        # per slice).
        return {
            "uuid": gpu.uuid,
            "index": gpu.index,
            "name": gpu.label,
            "utilization_pct": gpu.utilization_pct,
            "memory_used": gpu.memory_used,
            "memory_total": gpu.memory_total,
            "temperature_c": gpu.temperature_c,
            "power_w": gpu.power_w,
            "compute_capability": gpu.compute_capability,
            "mig_profile": gpu.mig_profile,
            "parent_uuid": gpu.parent_uuid,
            "processes": processes,
            "other_processes": unattributed,
            "simulated": source == "simulated",
            "demo_figures": [],  # demo mode: the figures made up for a simulated GPU (demo.py)
        }
