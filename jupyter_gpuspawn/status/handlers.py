"""GET {base_url}gpuspawn/status: this container and its GPUs, as JSON. Authenticated like every
server API."""

from __future__ import annotations

import json

from jupyter_server.base.handlers import APIHandler
from tornado import web


class StatusHandler(APIHandler):
    # The Lab status bar polls this every few seconds while a tab is open: a poll is not the user's
    # activity, or an open tab would keep an idle server from jupyterhub-idle-culler for ever
    # (jupyter_server's own /api/status does the same). GPU work counts through activity.py.
    _track_activity = False

    def initialize(self, collector):
        self.collector = collector

    @web.authenticated
    async def get(self):
        try:
            status = await self.collector.status()
        except Exception as e:  # degrade, never 500: the panel shows the error in plain words
            self.log.exception("gpuspawn status collection failed")
            status = {
                "container": {},
                "gpus": [],
                "reclaim": None,
                "errors": [f"Status collection failed: {e}"],
            }
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(status))
