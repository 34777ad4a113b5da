"""Demo mode: plausible figures, moving smoothly, for simulated GPUs whose file leaves them out.

A simulated GPU has no driver to ask. Its file may fix its figures (``utilization``,
``temperature``, ``memory_used``): a scene the admin set up, shown as written. Where the file
leaves them out, the status endpoint makes the figures up here, so that a demo's panel reads
like a GPU at work (utilisation swinging between ~10 and ~95 %, a temperature that follows it,
memory that drifts) instead of "?" and flat sparklines. The GPU stays badged "simulated", and each
made-up figure is named in the GPU's ``demo_figures``, so nothing takes it for a measurement: GPU
activity (activity.py) ignores a made-up utilisation.

Every figure is a pure function of the GPU's UUID and the time: a few sine waves whose periods and
phases come from a hash of the UUID. Two GPUs move differently, every tab and request sees the same
figure at the same moment, and tests can compute what to expect.
"""

from __future__ import annotations

import hashlib
import math

MIB = 1024**2


def _shape(uuid: str) -> list[float]:
    """Eight numbers in [0, 1) drawn from ``uuid``: this GPU's own periods, phases and levels."""
    digest = hashlib.sha256(uuid.encode()).digest()
    return [b / 256 for b in digest[:8]]


def _wave(t: float, period: float, phase: float) -> float:
    return math.sin(2 * math.pi * (t / period + phase))


def _load(uuid: str, t: float) -> float:
    """Utilisation in percent, not rounded: a slow swing (2-3 minutes: epochs, evaluations) and a
    quicker one (20-35 s: batches) around a level of 45-70 %."""
    s = _shape(uuid)
    level = 45 + 25 * s[0]
    slow = 22 * _wave(t, 120 + 60 * s[1], s[2])
    quick = 12 * _wave(t, 20 + 15 * s[3], s[4])
    return min(99.0, max(3.0, level + slow + quick))


def utilization(uuid: str, t: float) -> int:
    return round(_load(uuid, t))


def temperature(uuid: str, t: float, load: float | None = None) -> int:
    """Degrees Celsius, following the load of the last half minute (a die warms and cools slowly):
    about 45-75 °C at work. ``load``: a fixed utilisation (the file's) instead of the moving one."""
    if load is None:
        warmth = sum(_load(uuid, t - 10 - 5 * k) for k in range(6)) / 6
    else:
        warmth = load + 2 * _wave(t, 90, _shape(uuid)[6])  # a fan's small swing
    return round(34 + 0.45 * warmth + 2 * _shape(uuid)[5])


def memory_used(uuid: str, t: float, memory_total: int) -> int:
    """Bytes, whole MiB: a model and its batches, 25-60 % of the memory, drifting a few percent."""
    s = _shape(uuid)
    fraction = 0.25 + 0.35 * s[6] + 0.04 * _wave(t, 300, s[7]) + 0.01 * _wave(t, 45, s[2])
    return int(memory_total * fraction) // MIB * MIB


def fill(entry: dict, t: float) -> dict:
    """``entry`` (a GPU of the status document, from a simulated file) with made-up figures where
    the file left them out, and ``demo_figures`` naming them.

    A file that gives a utilisation sets the scene (an idle GPU, a busy one): it stays as written,
    and only a missing temperature is made up, to match it. A MIG slice has no utilisation (NVML has
    none per slice, so a simulated one has none either); its temperature is its physical GPU's (the
    same for all its slices), its memory its own.
    """
    out = dict(entry)
    made_up = []
    uuid = entry["uuid"]
    mig = bool(entry.get("mig_profile"))
    scene = entry.get("utilization_pct")
    if scene is None and not mig:
        out["utilization_pct"] = utilization(uuid, t)
        made_up.append("utilization_pct")
    if entry.get("temperature_c") is None:
        physical = (entry.get("parent_uuid") or uuid) if mig else uuid
        out["temperature_c"] = temperature(physical, t, scene)
        made_up.append("temperature_c")
    total = entry.get("memory_total")
    busy = entry.get("processes") or entry.get("other_processes")
    if scene is None and not entry.get("memory_used") and not busy and total:
        out["memory_used"] = memory_used(uuid, t, total)
        made_up.append("memory_used")
    out["demo_figures"] = made_up
    return out
