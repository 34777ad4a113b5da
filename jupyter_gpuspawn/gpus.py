"""GPU inventory: what GPUs this host has and how busy they are.

Three sources, chosen by ``GPUDockerSpawner.gpu_inventory``:

- ``nvml``: NVIDIA's NVML through nvidia-ml-py, initialised lazily; every NVMLError is caught and reported.
- ``simulated``: devices read from a YAML/JSON file (demo mode, tests, machines without NVIDIA GPUs).
- ``none``: no GPUs (CPU-only host).
- ``auto``: NVML when a driver answers, otherwise none.

Reads are synchronous here; :class:`GPUInventory` runs them in its own thread and caches a snapshot for about a
second, so a burst of spawns or form renders costs one NVML sweep, not one each.
"""
from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Optional

from .cached import Cached
from .datafiles import DataFileError, read_structured_file
from .options import shorten

INVENTORY_KINDS = ("auto", "nvml", "simulated", "none")


@dataclass(frozen=True)
class GPU:
    uuid: str
    index: int
    name: str
    memory_total: int  # bytes
    memory_used: int = 0  # bytes, all processes on the device
    utilization_pct: Optional[int] = None
    temperature_c: Optional[int] = None
    process_count: int = 0  # compute processes NVML sees on the device
    power_w: Optional[float] = None
    compute_capability: Optional[str] = None
    processes: tuple = ()  # (pid, used_memory bytes or None) as NVML reports them: host PIDs

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class Snapshot:
    source: str  # "nvml", "simulated" or "none"
    gpus: tuple = ()
    errors: tuple = ()

    @property
    def simulated(self) -> bool:
        return self.source == "simulated"

    def by_uuid(self) -> dict:
        return {gpu.uuid: gpu for gpu in self.gpus}


class InventoryError(ValueError):
    """A GPU inventory that cannot be read as configured (bad simulated file, unknown kind)."""


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
# Binary units throughout, as JupyterHub's ByteSpecification and Docker read them: 4G (or 4GB, 4GiB) is 4 GiB.
_SIZE_FACTORS = {"": 1, "B": 1}
for _power, _letter in enumerate("KMGT", start=1):
    for _suffix in (_letter, _letter + "B", _letter + "I", _letter + "IB"):
        _SIZE_FACTORS[_suffix] = 1024**_power


MAX_SIZE = 2**63 - 1  # Docker's limits are int64; a larger number in a file is a mistake, not a size


def parse_size(value, what="size") -> int:
    """Bytes from an int or a string such as ``"80GiB"``, ``"81559MiB"``, ``"512M"`` (binary units)."""
    if isinstance(value, bool):
        raise InventoryError(f"{what} must be a size like 80GiB, got {shorten(value)}")
    if isinstance(value, int):
        if value < 0:
            raise InventoryError(f"{what} must not be negative, got {value}")
        if value > MAX_SIZE:
            raise InventoryError(f"{what} is too large, got {shorten(value)}")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.fullmatch(value)
        if match:
            number, unit = match.groups()
            size = float(number) * _SIZE_FACTORS[(unit or "").upper()]
            if not size <= MAX_SIZE:  # also inf: float("9" * 400) does not fit
                raise InventoryError(f"{what} is too large, got {shorten(value)}")
            return int(size)
    raise InventoryError(f"{what} must be a size like 80GiB or a number of bytes, got {shorten(value)}")


def format_size(n: int) -> str:
    """``n`` bytes in the largest binary unit that keeps it at least 1: "24 MiB", "1.5 GiB", "80 GiB"."""
    for power, unit in ((4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if n >= 1024**power:
            return f"{n / 1024**power:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} B"


def read_simulated(path) -> Snapshot:
    """Read simulated devices from ``path``: a list of devices, or a mapping with a ``gpus`` list.

    Each device needs ``uuid`` (``GPU-…``), ``name`` and ``memory_total``; ``memory_used``, ``utilization``
    (percent), ``temperature`` and ``processes`` (a count, or a list of {pid, used_memory}) are optional and
    mimic a busy GPU. The file is read like a course file: at most 256 KiB, no YAML anchors/aliases.
    """
    try:
        data = read_structured_file(path, kind="simulated GPU files")
    except FileNotFoundError:
        raise InventoryError(f"simulated GPU file {path} does not exist") from None
    except OSError as e:
        raise InventoryError(f"simulated GPU file {path} cannot be read: {e.strerror or e}") from None
    except DataFileError as e:
        raise InventoryError(f"simulated GPU file {path}: {e}") from None
    return parse_simulated(data, f"simulated GPU file {path}")


def _whole(value, what: str) -> int:
    """A non-negative int from a simulated-GPU file; InventoryError (not a bare ValueError) otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InventoryError(f"{what} must be a whole number, got {shorten(value)}")
    return value


def parse_simulated(data, where_file: str) -> Snapshot:
    """Devices from parsed simulated-GPU data. Every problem is an InventoryError naming the file and GPU, with
    values quoted short (the data may come from a hostile or broken file)."""
    if isinstance(data, dict):
        data = data.get("gpus")
    if not isinstance(data, list):
        raise InventoryError(f"{where_file}: expected a list of GPUs (or a 'gpus:' list)")
    allowed = {"uuid", "name", "memory_total", "memory_used", "utilization", "temperature", "processes", "index"}
    gpus, seen = [], set()
    for position, dev in enumerate(data):
        where = f"{where_file}, GPU #{position}"
        if not isinstance(dev, dict):
            raise InventoryError(f"{where}: expected a mapping with uuid, name, memory_total")
        unknown = sorted(str(k)[:30] for k in dev if k not in allowed)
        if unknown:
            raise InventoryError(f"{where}: unknown key(s) {', '.join(unknown[:5])}; "
                                 f"allowed: {', '.join(sorted(allowed))}")
        uuid = dev.get("uuid")
        if not isinstance(uuid, str) or not re.fullmatch(r"(GPU|MIG)-[0-9A-Za-z-]{1,80}", uuid):
            raise InventoryError(f"{where}: uuid must look like GPU-xxxxxxxx, got {shorten(uuid)}")
        if uuid in seen:
            raise InventoryError(f"{where}: duplicate uuid {uuid}")
        seen.add(uuid)
        if "memory_total" not in dev:
            raise InventoryError(f"{where}: memory_total is required")
        util = dev.get("utilization")
        if util is not None and (not isinstance(util, int) or isinstance(util, bool) or not 0 <= util <= 100):
            raise InventoryError(f"{where}: utilization must be an integer percentage 0-100, got {shorten(util)}")
        temperature = dev.get("temperature")
        if temperature is not None:
            temperature = _whole(temperature, f"{where}: temperature")
        processes = dev.get("processes", 0) or 0
        if isinstance(processes, list):
            procs = []
            for p in processes:
                if not isinstance(p, dict) or "pid" not in p:
                    raise InventoryError(f"{where}: each process needs a pid (and optionally used_memory)")
                procs.append((_whole(p["pid"], f"{where}: pid"),
                              parse_size(p.get("used_memory", 0), f"{where}: used_memory")))
            procs, count = tuple(procs), len(procs)
        else:
            procs, count = (), _whole(processes, f"{where}: processes")
        name = dev.get("name") or "Simulated GPU"
        gpus.append(
            GPU(
                uuid=uuid,
                index=_whole(dev.get("index", position), f"{where}: index"),
                name=name if isinstance(name, str) and len(name) <= 100 else shorten(name, 100),
                memory_total=parse_size(dev["memory_total"], f"{where}: memory_total"),
                memory_used=parse_size(dev.get("memory_used", 0), f"{where}: memory_used"),
                utilization_pct=util,
                temperature_c=temperature,
                process_count=count,
                processes=procs,
            )
        )
    return Snapshot(source="simulated", gpus=tuple(gpus))


class NVMLReader:
    """Reads devices through NVML. Initialises on first use; a missing driver is an error entry, not a crash."""

    RETRY_SECONDS = 30.0  # a missing driver is re-checked this often, not on every read

    def __init__(self):
        self._lock = threading.Lock()
        self._initialised = False
        self._pynvml = None
        self._failure = None  # (message, monotonic time) of the last failed nvmlInit

    def available(self) -> bool:
        with self._lock:
            return self._init() is None

    def _init(self) -> Optional[str]:
        """Initialise NVML once; return an error message or None."""
        if self._initialised:
            return None
        if self._failure and time.monotonic() - self._failure[1] < self.RETRY_SECONDS:
            return self._failure[0]
        try:
            import pynvml

            pynvml.nvmlInit()
        except ImportError:
            self._failure = ("nvidia-ml-py is not installed", time.monotonic())
            return self._failure[0]
        except pynvml.NVMLError as e:
            self._failure = (f"NVIDIA driver not available: {e}", time.monotonic())
            return self._failure[0]
        self._pynvml = pynvml
        self._initialised = True
        self._failure = None
        return None

    def read(self) -> Snapshot:
        with self._lock:
            error = self._init()
            if error:
                return Snapshot(source="nvml", errors=(error,))
            nvml = self._pynvml
            errors = []
            try:
                count = nvml.nvmlDeviceGetCount()
            except nvml.NVMLError as e:
                return Snapshot(source="nvml", errors=(f"cannot count GPUs: {e}",))
            gpus = []
            for index in range(count):
                try:
                    gpus.append(self._read_device(nvml, index))
                except nvml.NVMLError as e:
                    errors.append(f"GPU {index} cannot be read: {e}")
            return Snapshot(source="nvml", gpus=tuple(gpus), errors=tuple(errors))

    @staticmethod
    def _read_device(nvml, index) -> GPU:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        uuid = nvml.nvmlDeviceGetUUID(handle)
        name = nvml.nvmlDeviceGetName(handle)
        if isinstance(uuid, bytes):  # older bindings return bytes
            uuid = uuid.decode()
        if isinstance(name, bytes):
            name = name.decode()
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)

        def optional(call, *args):
            # MIG devices and some boards answer NOT_SUPPORTED for single fields: report None, keep the rest.
            try:
                return call(handle, *args)
            except nvml.NVMLError:
                return None

        util = optional(nvml.nvmlDeviceGetUtilizationRates)
        temperature = optional(nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU)
        processes = optional(nvml.nvmlDeviceGetComputeRunningProcesses) or []
        power_mw = optional(nvml.nvmlDeviceGetPowerUsage)
        capability = optional(nvml.nvmlDeviceGetCudaComputeCapability)
        return GPU(
            uuid=uuid,
            index=index,
            name=name,
            memory_total=int(memory.total),
            memory_used=int(memory.used),
            utilization_pct=None if util is None else int(util.gpu),
            temperature_c=temperature,
            process_count=len(processes),
            power_w=None if power_mw is None else power_mw / 1000,
            compute_capability=None if capability is None else f"{capability[0]}.{capability[1]}",
            # usedGpuMemory is None where the driver does not say (e.g. under MIG or on Windows)
            processes=tuple((int(p.pid), getattr(p, "usedGpuMemory", None)) for p in processes),
        )


class GPUInventory:
    """A cached, thread-offloaded view of one GPU source."""

    def __init__(self, kind="auto", simulated_path="", cache_seconds=1.0):
        if kind not in INVENTORY_KINDS:
            raise InventoryError(f"gpu_inventory must be one of {', '.join(INVENTORY_KINDS)}, got {kind!r}")
        if kind == "simulated" and not simulated_path:
            raise InventoryError("gpu_inventory = 'simulated' needs simulated_gpus = '/path/to/gpus.yaml'")
        self.kind = kind
        self.simulated_path = simulated_path
        self._nvml = NVMLReader() if kind in ("auto", "nvml") else None
        self._cached = Cached(self.read, cache_seconds, "inventory")

    def read(self) -> Snapshot:
        """Read the source now (blocking). Never raises for a missing driver; raises InventoryError for bad config."""
        if self.kind == "simulated":
            return read_simulated(self.simulated_path)
        if self.kind == "none":
            return Snapshot(source="none")
        snapshot = self._nvml.read()
        if self.kind == "auto" and not snapshot.gpus and snapshot.errors:
            # auto on a host without a driver: a CPU-only host, not an error.
            return Snapshot(source="none")
        return snapshot

    async def snapshot(self) -> Snapshot:
        """The current snapshot, at most ``cache_seconds`` old; concurrent callers share one read."""
        return await self._cached.get()

    def last_gpus(self) -> Optional[tuple]:
        """The GPUs of the last snapshot taken, however old; None before the first (never reads)."""
        last = self._cached.last
        return last.gpus if last is not None else None


_inventories: dict = {}


def shared_inventory(kind, simulated_path="", cache_seconds=1.0) -> GPUInventory:
    """One inventory per (kind, file) in this process, shared by every spawner so the cache is shared too."""
    key = (kind, os.path.abspath(simulated_path) if simulated_path else "", cache_seconds)
    if key not in _inventories:
        _inventories[key] = GPUInventory(kind, simulated_path, cache_seconds)
    return _inventories[key]


def simulated_description(uuids, snapshot) -> str:
    """In demo mode, the assigned simulated GPUs as JSON for the status extension (it has no driver to ask)."""
    if not snapshot.simulated or not uuids:
        return ""
    gpus = snapshot.by_uuid()
    return json.dumps([
        {"uuid": u, "index": gpus[u].index, "name": gpus[u].name, "memory_total": gpus[u].memory_total,
         "memory_used": gpus[u].memory_used, "utilization": gpus[u].utilization_pct,
         "temperature": gpus[u].temperature_c}
        for u in uuids if u in gpus  # a GPU gone from the inventory meanwhile is left out, not an error
    ])


def _short_uuid(uuid: str) -> str:
    return uuid[:12] if uuid.startswith("GPU-") else uuid[:8]


def assignment_message(uuids, snapshot) -> str:
    """The progress message that tells a student which GPUs they got."""
    if not uuids:
        return "CPU-only server: no GPU assigned"
    gpus = snapshot.by_uuid()
    names = ", ".join(f"GPU {gpus[u].index} ({gpus[u].name}, {_short_uuid(u)})" if u in gpus else _short_uuid(u)
                      for u in uuids)
    return f"Assigned {names}{' [simulated]' if snapshot.simulated else ''}"
