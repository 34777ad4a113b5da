"""GPU work counts as activity: a training run with every browser tab closed keeps its server.

jupyterhub-singleuser reports ``web_app.last_activity()`` to the hub, and jupyter_server counts
every setting whose name ends in ``_last_activity`` (its documented hook for extensions). While this
container's GPUs are busy, that setting is kept at "now", so the hub's idle culler
(``jupyterhub-idle-culler --timeout``) sees a busy server as active and culls it only once it is
idle in every sense.
"""

from __future__ import annotations

from jupyter_server._tz import utcnow
from tornado.ioloop import PeriodicCallback
from traitlets import Float
from traitlets.config import LoggingConfigurable

SETTING = "gpuspawn_gpu_last_activity"


def _measured_utilization(gpu: dict) -> float:
    """The GPU's utilisation, 0 when unknown or made up (a simulated GPU in demo mode, demo.py):
    a demo's moving figures must not keep an idle server from the culler."""
    if "utilization_pct" in (gpu.get("demo_figures") or ()):
        return 0
    return gpu.get("utilization_pct") or 0


def gpus_busy(gpus, utilization_pct: float, cuda_process: bool = False) -> bool:
    """Whether any of this container's GPUs works for us: a process of ours on it, or utilization
    at or above the threshold that is ours.

    On a GPU that also runs processes we cannot name as ours, the utilisation may all be a
    neighbour's (a GPU shared with other students), and a neighbour's training must not keep our
    idle server from the culler: it counts only while a process of this container holds a CUDA
    context (``cuda_process``, the collector's ``container.cuda_process``). NVML names host PIDs,
    which do not resolve inside a container's PID namespace, so there even our own processes are
    "not ours" by PID; an idle kernel that merely holds a context (utilisation 0) is idle."""
    return any(_busy_for_us(gpu, utilization_pct, cuda_process) for gpu in gpus)


def _busy_for_us(gpu: dict, utilization_pct: float, cuda_process: bool) -> bool:
    if gpu.get("processes"):
        return True
    working = _measured_utilization(gpu) >= utilization_pct
    if gpu.get("other_processes"):
        return working and cuda_process
    # nobody else's process: the utilisation is ours (also a GPU whose processes NVML cannot list)
    return working


class GPUActivity(LoggingConfigurable):
    """Settings: ``c.GPUActivity.…`` in the server's config (or ``--GPUActivity.…`` in
    Spawner.args)."""

    interval = Float(
        30,
        config=True,
        help=(
            "Seconds between looks at this container's GPUs (0: GPU work does not count as "
            "activity)."
        ),
    )
    busy_utilization = Float(
        5,
        config=True,
        help=(
            "A GPU at or above this utilization (percent), or running a process of this "
            "container, is busy. On a GPU that also runs others' processes (shared), only a "
            "process of this container counts."
        ),
    )

    def __init__(self, collector, settings: dict, **kwargs):
        super().__init__(**kwargs)
        self.collector = collector
        self.settings = settings
        self._callback = None

    def start(self):
        if self.interval > 0:
            self._callback = PeriodicCallback(self.check, self.interval * 1000)
            self._callback.start()

    async def check(self):
        try:
            status = await self.collector.status()
        # a failed look changes nothing; the status endpoint reports the error
        except Exception as e:
            self.log.debug("GPU activity: cannot read GPUs: %s", e)
            return
        cuda_process = bool((status.get("container") or {}).get("cuda_process"))
        if gpus_busy(status.get("gpus") or [], self.busy_utilization, cuda_process):
            self.settings[SETTING] = utcnow()
