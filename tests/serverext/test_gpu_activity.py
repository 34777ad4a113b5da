"""GPU work is server activity: the hook jupyter_server offers extensions (``*_last_activity``
settings)."""

from __future__ import annotations

import asyncio
import datetime

from jupyter_gpuspawn.status.activity import SETTING, GPUActivity, gpus_busy


class Collector:
    def __init__(self, gpus):
        self.gpus = gpus

    async def status(self):
        return {"gpus": self.gpus}


def test_busy_gpus_refresh_the_activity_setting_and_idle_ones_leave_it(jp_serverapp):
    settings = jp_serverapp.web_app.settings
    before = jp_serverapp.web_app.last_activity()
    collector = Collector([{"uuid": "GPU-1", "utilization_pct": 0, "processes": []}])
    activity = GPUActivity(collector, settings, parent=jp_serverapp)
    asyncio.run(activity.check())
    assert SETTING not in settings and jp_serverapp.web_app.last_activity() == before
    collector.gpus = [{"uuid": "GPU-1", "utilization_pct": 87, "processes": []}]
    asyncio.run(activity.check())
    assert isinstance(settings[SETTING], datetime.datetime)
    # what singleuser reports
    assert jp_serverapp.web_app.last_activity() == settings[SETTING] > before


def test_what_counts_as_busy():
    assert not gpus_busy([], 5)
    assert not gpus_busy([{"utilization_pct": None, "processes": []}], 5)
    assert not gpus_busy([{"utilization_pct": 4, "processes": []}], 5)
    assert gpus_busy([{"utilization_pct": 5, "processes": []}], 5)
    # a process of ours, between kernels
    assert gpus_busy([{"utilization_pct": 0, "processes": [{"pid": 7}]}], 5)
