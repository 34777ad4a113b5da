"""GPU inventory: what GPUs this host has and how busy they are.

Three sources, chosen by ``GPUDockerSpawner.gpu_inventory``:

- ``nvml``: NVIDIA's NVML through nvidia-ml-py, initialised lazily; every NVMLError is caught and
  reported.
- ``simulated``: devices read from a YAML/JSON file (demo mode, tests, machines without NVIDIA
  GPUs).
- ``none``: no GPUs (CPU-only host).
- ``auto``: NVML when a driver answers, otherwise none.
- ``swarm``: the GPUs each node of a Docker Swarm advertises (GPUSwarmSpawner; see swarm.py).

Reads are synchronous here; :class:`GPUInventory` runs them in its own thread and caches a snapshot
for about a second, so a burst of spawns or form renders costs one NVML sweep, not one each.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import asdict, dataclass, replace

from .cached import Cached
from .datafiles import DataFileError, read_structured_file
from .options import shorten

INVENTORY_KINDS = ("auto", "nvml", "simulated", "none", "swarm")


@dataclass(frozen=True)
class GPU:
    uuid: str
    index: int
    name: str
    memory_total: int  # bytes
    memory_used: int = 0  # bytes, all processes on the device
    utilization_pct: int | None = None
    temperature_c: int | None = None
    process_count: int = 0  # compute processes NVML sees on the device
    power_w: float | None = None
    compute_capability: str | None = None
    processes: tuple = ()  # (pid, used_memory bytes or None) as NVML reports them: host PIDs
    # A MIG device (uuid "MIG-…") is one slice of a physical GPU, allocated like a GPU. ``name`` and
    # ``index`` are then the physical GPU's; ``mig_profile`` is NVIDIA's profile name ("1g.10gb");
    # None for a whole GPU.
    mig_profile: str | None = None
    parent_uuid: str | None = None
    # The Swarm node (hostname) the GPU sits in; None on one host. A server's GPUs are all on one
    # node.
    node: str | None = None

    @property
    def label(self) -> str:
        """What students read: the model, or "1g.10gb slice of NVIDIA A100 80GB PCIe (9.8 GiB)" for
        a MIG device."""
        if self.mig_profile is None:
            return self.name
        return f"{self.mig_profile} slice of {self.name} ({format_size(self.memory_total)})"

    def to_dict(self):
        return asdict(self)


@dataclass(frozen=True)
class Snapshot:
    source: str  # "nvml", "simulated", "swarm" or "none"
    gpus: tuple = ()
    errors: tuple = ()
    nodes: tuple = ()  # swarm.SwarmNode of every node, GPUs or not (Swarm only)

    @property
    def simulated(self) -> bool:
        return self.source == "simulated"

    def by_uuid(self) -> dict:
        return {gpu.uuid: gpu for gpu in self.gpus}


class InventoryError(ValueError):
    """A GPU inventory that cannot be read as configured (bad simulated file, unknown kind)."""


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
# Binary units throughout, as JupyterHub's ByteSpecification and Docker read them: 4G (or 4GB, 4GiB)
# is 4 GiB.
_SIZE_FACTORS = {"": 1, "B": 1}
for _power, _letter in enumerate("KMGT", start=1):
    for _suffix in (_letter, _letter + "B", _letter + "I", _letter + "IB"):
        _SIZE_FACTORS[_suffix] = 1024**_power


# Docker's limits are int64; a larger number in a file is a mistake, not a size
MAX_SIZE = 2**63 - 1


def parse_size(value, what="size") -> int:
    """Bytes from an int or a string such as ``"80GiB"``, ``"81559MiB"``, ``"512M"`` (binary
    units)."""
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
    raise InventoryError(
        f"{what} must be a size like 80GiB or a number of bytes, got {shorten(value)}"
    )


def format_size(n: int) -> str:
    """``n`` bytes in the largest binary unit that keeps it at least 1: "24 MiB", "1.5 GiB", "80
    GiB"."""
    for power, unit in ((4, "TiB"), (3, "GiB"), (2, "MiB"), (1, "KiB")):
        if n >= 1024**power:
            return f"{n / 1024**power:.1f}".removesuffix(".0") + f" {unit}"
    return f"{n} B"


def read_simulated(path) -> Snapshot:
    """Read simulated devices from ``path``: a list of devices, or a mapping with a ``gpus`` list.

    Each device needs ``uuid`` (``GPU-…``), ``name`` and ``memory_total``; ``memory_used``,
    ``utilization`` (percent), ``temperature`` and ``processes`` (a count, or a list of {pid,
    used_memory}) are optional and mimic a busy GPU. The file is read like a course file: at most
    256 KiB, no YAML anchors/aliases.
    """
    try:
        data = read_structured_file(path, kind="simulated GPU files")
    except FileNotFoundError:
        raise InventoryError(f"simulated GPU file {path} does not exist") from None
    except OSError as e:
        raise InventoryError(
            f"simulated GPU file {path} cannot be read: {e.strerror or e}"
        ) from None
    except DataFileError as e:
        raise InventoryError(f"simulated GPU file {path}: {e}") from None
    return parse_simulated(data, f"simulated GPU file {path}")


def _whole(value, what: str) -> int:
    """A non-negative int from a simulated-GPU file; InventoryError (not a bare ValueError)
    otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InventoryError(f"{what} must be a whole number, got {shorten(value)}")
    return value


_SIMULATED_KEYS = {
    "uuid",
    "name",
    "memory_total",
    "memory_used",
    "utilization",
    "temperature",
    "processes",
    "index",
    "mig_profile",
    "parent_uuid",
    "node",
}
_NODE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]{0,62}")  # a hostname, as Swarm names nodes
# NVIDIA's names: 1g.10gb, 3g.40gb, 1g.20gb+me
_MIG_PROFILE_RE = re.compile(r"[0-9a-z][0-9a-z.+]{0,30}")


def parse_simulated(data, where_file: str) -> Snapshot:
    """Devices from parsed simulated-GPU data. Every problem is an InventoryError naming the file
    and GPU, with values quoted short (the data may come from a hostile or broken file).

    A MIG device is listed by itself, like a GPU: ``uuid: MIG-…``, ``mig_profile: 1g.10gb``,
    ``parent_uuid`` (the physical GPU, which is then not listed whole: in MIG mode only its slices
    are offered), ``name`` and
    ``index`` of the physical GPU, and the slice's own memory. NVML has no utilisation for MIG
    devices, so a simulated one has none either. ``node`` (a Swarm node's hostname) places a GPU on
    that node, for demos of GPUSwarmSpawner.
    """
    if isinstance(data, dict):
        data = data.get("gpus")
    if not isinstance(data, list):
        raise InventoryError(f"{where_file}: expected a list of GPUs (or a 'gpus:' list)")
    allowed = _SIMULATED_KEYS
    gpus, seen = [], set()
    for position, dev in enumerate(data):
        where = f"{where_file}, GPU #{position}"
        if not isinstance(dev, dict):
            raise InventoryError(f"{where}: expected a mapping with uuid, name, memory_total")
        unknown = sorted(str(k)[:30] for k in dev if k not in allowed)
        if unknown:
            raise InventoryError(
                f"{where}: unknown key(s) {', '.join(unknown[:5])}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
        uuid = dev.get("uuid")
        if not isinstance(uuid, str) or not re.fullmatch(r"(GPU|MIG)-[0-9A-Za-z-]{1,80}", uuid):
            raise InventoryError(f"{where}: uuid must look like GPU-xxxxxxxx, got {shorten(uuid)}")
        if uuid in seen:
            raise InventoryError(f"{where}: duplicate uuid {uuid}")
        seen.add(uuid)
        if "memory_total" not in dev:
            raise InventoryError(f"{where}: memory_total is required")
        util = dev.get("utilization")
        if util is not None and (
            not isinstance(util, int) or isinstance(util, bool) or not 0 <= util <= 100
        ):
            raise InventoryError(
                f"{where}: utilization must be an integer percentage 0-100, got {shorten(util)}"
            )
        temperature = dev.get("temperature")
        if temperature is not None:
            temperature = _whole(temperature, f"{where}: temperature")
        processes = dev.get("processes", 0) or 0
        if isinstance(processes, list):
            procs = []
            for p in processes:
                if not isinstance(p, dict) or "pid" not in p:
                    raise InventoryError(
                        f"{where}: each process needs a pid (and optionally used_memory)"
                    )
                procs.append(
                    (
                        _whole(p["pid"], f"{where}: pid"),
                        parse_size(p.get("used_memory", 0), f"{where}: used_memory"),
                    )
                )
            procs, count = tuple(procs), len(procs)
        else:
            procs, count = (), _whole(processes, f"{where}: processes")
        mig_profile, parent_uuid = _simulated_mig(dev, uuid, where)
        node = dev.get("node")
        if node is not None and (not isinstance(node, str) or not _NODE_RE.fullmatch(node)):
            raise InventoryError(f"{where}: node must be a node's hostname, got {shorten(node)}")
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
                mig_profile=mig_profile,
                parent_uuid=parent_uuid,
                node=node,
            )
        )
    parents = {gpu.parent_uuid: gpu.uuid for gpu in gpus if gpu.parent_uuid}
    for gpu in gpus:
        if gpu.uuid in parents:
            raise InventoryError(
                f"{where_file}: {gpu.uuid} is listed whole and as the parent of MIG device "
                f"{parents[gpu.uuid]}; a GPU in MIG mode is offered only as its MIG devices"
            )
    return Snapshot(source="simulated", gpus=tuple(gpus))


def _simulated_mig(dev: dict, uuid: str, where: str):
    """(mig_profile, parent_uuid) of a simulated device: both or neither, and both only for a
    ``MIG-`` uuid (a
    ``MIG-`` entry without them is a plain device, as files written before MIG support have
    them)."""
    profile, parent = dev.get("mig_profile"), dev.get("parent_uuid")
    if profile is None and parent is None:
        return None, None
    if not uuid.startswith("MIG-"):
        raise InventoryError(
            f"{where}: mig_profile and parent_uuid belong to MIG devices (uuid MIG-…)"
        )
    if not isinstance(profile, str) or not _MIG_PROFILE_RE.fullmatch(profile):
        raise InventoryError(
            f"{where}: a MIG device needs mig_profile like 1g.10gb, got {shorten(profile)}"
        )
    if not isinstance(parent, str) or not re.fullmatch(r"GPU-[0-9A-Za-z-]{1,80}", parent):
        raise InventoryError(
            f"{where}: a MIG device needs parent_uuid (its GPU-…), got {shorten(parent)}"
        )
    if dev.get("utilization") is not None:
        raise InventoryError(
            f"{where}: NVML has no utilisation for MIG devices; leave utilization out"
        )
    return profile, parent


class NVMLReader:
    """Reads devices through NVML. Initialises on first use; a missing driver is an error entry, not
    a crash."""

    RETRY_SECONDS = 30.0  # a missing driver is re-checked this often, not on every read

    def __init__(self):
        self._lock = threading.Lock()
        self._initialised = False
        self._pynvml = None
        self._failure = None  # (message, monotonic time) of the last failed nvmlInit

    def available(self) -> bool:
        with self._lock:
            return self._init() is None

    def _init(self) -> str | None:
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
                    devices, problems = self._read_gpu(nvml, index)
                except nvml.NVMLError as e:
                    errors.append(f"GPU {index} cannot be read: {e}")
                    continue
                gpus += devices
                errors += problems
            return Snapshot(source="nvml", gpus=tuple(gpus), errors=tuple(errors))

    @classmethod
    def _read_gpu(cls, nvml, index):
        """([devices], [problems]) of physical GPU ``index``: the GPU itself, or its MIG devices in
        MIG mode."""
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        gpu = cls._read_device(nvml, handle, index)
        # NOT_SUPPORTED on GPUs without MIG
        mode = _optional(nvml, nvml.nvmlDeviceGetMigMode, handle)
        if not mode or mode[0] != nvml.NVML_DEVICE_MIG_ENABLE:
            return [gpu], []
        slices, problems = [], []
        for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
                slices.append(cls._read_mig_device(nvml, mig, gpu, handle))
            # an empty slot: fewer MIG devices than the GPU could hold
            except nvml.NVMLError_NotFound:
                continue
            except nvml.NVMLError as e:
                problems.append(f"MIG device {slot} of GPU {index} cannot be read: {e}")
        if not slices and not problems:
            problems.append(
                f"GPU {index} ({gpu.name}) is in MIG mode but has no MIG devices, so it offers "
                f"nothing: "
                "create MIG devices (nvidia-smi mig -cgi … -C) or disable MIG mode"
            )
        return slices, problems

    @staticmethod
    def _read_device(nvml, handle, index) -> GPU:
        uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        name = _text(nvml.nvmlDeviceGetName(handle))
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        util = _optional(nvml, nvml.nvmlDeviceGetUtilizationRates, handle)
        power_mw = _optional(nvml, nvml.nvmlDeviceGetPowerUsage, handle)
        capability = _optional(nvml, nvml.nvmlDeviceGetCudaComputeCapability, handle)
        processes = _optional(nvml, nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
        return GPU(
            uuid=uuid,
            index=index,
            name=name,
            memory_total=int(memory.total),
            memory_used=int(memory.used),
            utilization_pct=None if util is None else int(util.gpu),
            temperature_c=_optional(
                nvml, nvml.nvmlDeviceGetTemperature, handle, nvml.NVML_TEMPERATURE_GPU
            ),
            process_count=len(processes),
            power_w=None if power_mw is None else power_mw / 1000,
            compute_capability=None if capability is None else f"{capability[0]}.{capability[1]}",
            processes=_process_list(processes),
        )

    @staticmethod
    def _read_mig_device(nvml, handle, parent: GPU, parent_handle) -> GPU:
        """One MIG device. NVML has no utilisation (or power) per MIG device: those stay None, never
        the parent's figure; temperature and compute capability are the physical GPU's, which the
        slice shares."""
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        processes = _optional(nvml, nvml.nvmlDeviceGetComputeRunningProcesses, handle) or []
        return GPU(
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            index=parent.index,
            name=parent.name,
            memory_total=int(memory.total),
            memory_used=int(memory.used),
            temperature_c=parent.temperature_c,
            process_count=len(processes),
            compute_capability=parent.compute_capability,
            processes=_process_list(processes),
            mig_profile=_mig_profile(nvml, handle, parent_handle),
            parent_uuid=parent.uuid,
        )


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value  # older bindings return bytes


def _optional(nvml, call, handle, *args):
    """``call(handle, *args)``, or None where the device does not support it: MIG devices and some
    boards answer NOT_SUPPORTED for single fields; report None and keep the rest."""
    try:
        return call(handle, *args)
    except nvml.NVMLError:
        return None


def _process_list(processes) -> tuple:
    # usedGpuMemory is None where the driver does not say (e.g. under MIG or on Windows)
    return tuple((int(p.pid), getattr(p, "usedGpuMemory", None)) for p in processes)


def _mig_profile(nvml, handle, parent_handle) -> str:
    """The MIG profile ("1g.10gb"): the end of NVML's name for the device ("NVIDIA A100-SXM4-80GB
    MIG 1g.10gb"), else the parent's GPU instance profile with the device's slice count and memory.
    The name cannot be computed from those figures: NVIDIA names memory in fractions of the marketed
    size (an H200's 1g.18gb has 16384 MB)."""
    name = _text(_optional(nvml, nvml.nvmlDeviceGetName, handle) or "")
    match = re.search(r"\bMIG\s+(\S+)$", name)
    if match:
        return match.group(1)
    attributes = _optional(nvml, nvml.nvmlDeviceGetAttributes, handle)
    if attributes is None:
        return "MIG"
    for profile, slices, memory_mb in instance_profiles(nvml, parent_handle):
        if (slices, memory_mb) == (attributes.gpuInstanceSliceCount, attributes.memorySizeMB):
            return profile
    return f"{attributes.gpuInstanceSliceCount}g"


def instance_profiles(nvml, handle) -> list:
    """[(name, slice count, memory MB)] of the GPU instance profiles the driver describes for a GPU
    ("1g.18gb", 1, 16384); empty for GPUs without MIG."""
    found = []
    for slices in range(1, 9):
        profile_id = getattr(nvml, f"NVML_GPU_INSTANCE_PROFILE_{slices}_SLICE", None)
        info = (
            None
            if profile_id is None
            else _optional(nvml, nvml.nvmlDeviceGetGpuInstanceProfileInfo, handle, profile_id)
        )
        if info is not None:
            found.append(
                (_text(info.name).removeprefix("MIG "), info.sliceCount, info.memorySizeMB)
            )
    return found


# longest a caller waits for an inventory read (an NVML call on a GPU that fell off the bus can hang
# for good): then the last snapshot, noting it, or ReadTimeout before the first
INVENTORY_READ_TIMEOUT = 10.0


def _stale_snapshot(snapshot: Snapshot, note: str) -> Snapshot:
    return replace(snapshot, errors=(*snapshot.errors, f"GPU inventory: {note}"))


class GPUInventory:
    """A cached, thread-offloaded view of one GPU source."""

    def __init__(
        self,
        kind="auto",
        simulated_path="",
        cache_seconds=1.0,
        swarm_reader=None,
        read_timeout=INVENTORY_READ_TIMEOUT,
    ):
        if kind not in INVENTORY_KINDS:
            raise InventoryError(
                f"gpu_inventory must be one of {', '.join(INVENTORY_KINDS)}, got {kind!r}"
            )
        if kind == "simulated" and not simulated_path:
            raise InventoryError(
                "gpu_inventory = 'simulated' needs simulated_gpus = '/path/to/gpus.yaml'"
            )
        if kind == "swarm" and swarm_reader is None:
            raise InventoryError(
                "gpu_inventory = 'swarm' needs a Docker Swarm: use GPUSwarmSpawner"
            )
        self.kind = kind
        self.simulated_path = simulated_path
        self._swarm_reader = swarm_reader  # () -> Snapshot, blocking (a manager's node list)
        self._nvml = NVMLReader() if kind in ("auto", "nvml") else None
        self._cached = Cached(
            self.read, cache_seconds, "inventory", timeout=read_timeout, stale=_stale_snapshot
        )

    def read(self) -> Snapshot:
        """Read the source now (blocking). Never raises for a missing driver; raises InventoryError
        for bad config."""
        if self.kind == "simulated":
            return read_simulated(self.simulated_path)
        if self.kind == "none":
            return Snapshot(source="none")
        if self.kind == "swarm":
            return self._swarm_reader()
        snapshot = self._nvml.read()
        if (
            self.kind == "auto"
            and not snapshot.gpus
            and snapshot.errors
            and not self._nvml.available()
        ):
            # auto on a host without a driver: a CPU-only host, not an error (a driver that answers
            # with problems, such as a MIG-mode GPU without slices, is reported)
            return Snapshot(source="none")
        return snapshot

    async def snapshot(self) -> Snapshot:
        """The current snapshot, at most ``cache_seconds`` old; concurrent callers share one
        read."""
        return await self._cached.get()

    def last_snapshot(self) -> Snapshot | None:
        """The last snapshot taken, however old; None before the first (never reads)."""
        return self._cached.last

    def last_gpus(self) -> tuple | None:
        """The GPUs of the last snapshot taken, however old; None before the first (never reads)."""
        last = self._cached.last
        return last.gpus if last is not None else None


def simulated_description(uuids, snapshot) -> str:
    """In demo mode, the assigned simulated GPUs as JSON for the status extension (it has no driver
    to ask)."""
    if not snapshot.simulated or not uuids:
        return ""
    gpus = snapshot.by_uuid()
    # a GPU gone meanwhile: left out
    return json.dumps([_simulated_entry(gpus[u]) for u in uuids if u in gpus])


def _simulated_entry(gpu: GPU) -> dict:
    """``gpu`` as an entry of a simulated-GPU file (what parse_simulated reads back)."""
    entry = {
        "uuid": gpu.uuid,
        "index": gpu.index,
        "name": gpu.name,
        "memory_total": gpu.memory_total,
        "memory_used": gpu.memory_used,
        "utilization": gpu.utilization_pct,
        "temperature": gpu.temperature_c,
    }
    if gpu.mig_profile is not None:
        entry.update(mig_profile=gpu.mig_profile, parent_uuid=gpu.parent_uuid)
    if gpu.node is not None:
        entry["node"] = gpu.node
    return entry


def _short_uuid(uuid: str) -> str:
    return uuid[:12] + "…"


def _describe(gpu: GPU) -> str:
    if gpu.mig_profile is not None:
        return f"MIG {gpu.label} on GPU {gpu.index}, {_short_uuid(gpu.uuid)}"
    return f"GPU {gpu.index} ({gpu.name}, {_short_uuid(gpu.uuid)})"


def _on_node(uuids, gpus: dict) -> str:
    nodes = {gpus[u].node for u in uuids if u in gpus} - {None}
    return f" on {nodes.pop()}" if len(nodes) == 1 else ""


def assignment_message(uuids, snapshot) -> str:
    """The progress message that tells a student which GPUs they got."""
    if not uuids:
        return "CPU-only server: no GPU assigned"
    gpus = snapshot.by_uuid()
    names = ", ".join(_describe(gpus[u]) if u in gpus else _short_uuid(u) for u in uuids)
    return f"Assigned {names}{_on_node(uuids, gpus)}{' [simulated]' if snapshot.simulated else ''}"
