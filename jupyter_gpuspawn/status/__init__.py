"""jupyter-gpuspawn's server extension: the status endpoint the JupyterLab extension polls."""

from __future__ import annotations

from .collector import StatusCollector

__all__ = ["StatusCollector", "load_jupyter_server_extension"]


def load_jupyter_server_extension(serverapp):
    # jupyter_server is imported here, not above: the collector must import without it (the gpu test
    # tier runs it on GPU hosts that have NVML but no Jupyter).
    from jupyter_server.utils import url_path_join

    from .activity import GPUActivity
    from .handlers import StatusHandler

    collector = StatusCollector(parent=serverapp)
    route = url_path_join(serverapp.web_app.settings["base_url"], "gpuspawn", "status")
    serverapp.web_app.add_handlers(".*$", [(route, StatusHandler, {"collector": collector})])
    serverapp.log.info("jupyter-gpuspawn status endpoint at %s", route)
    GPUActivity(collector, serverapp.web_app.settings, parent=serverapp).start()


_load_jupyter_server_extension = load_jupyter_server_extension
