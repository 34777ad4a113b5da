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


def gpus_busy(gpus, utilization_pct: float) -> bool:
    """Whether any of this container's GPUs works: utilization at or above the threshold, or a
    process of ours."""
    return any(
        _measured_utilization(gpu) >= utilization_pct or gpu.get("processes") for gpu in gpus
    )


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
            "container, is busy."
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
        if gpus_busy(status.get("gpus") or [], self.busy_utilization):
            self.settings[SETTING] = utcnow()
