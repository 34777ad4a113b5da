"""The GPU admin page: a JupyterHub-managed service, listed in the hub's Services menu, for admins only.

In jupyterhub_config.py::

    from jupyter_gpuspawn.admin import admin_service
    service, role = admin_service(__file__)
    c.JupyterHub.services.append(service)
    c.JupyterHub.load_roles.append(role)

The page authenticates with HubOAuth and needs the scope access:services!service=gpu-admin, which JupyterHub's
admin role has and other users do not (they get 403). It reads what the hub writes (runtime_dir/gpu-activity.json,
every gpu_idle_check_seconds) and the usage records, and acts through the hub's REST API with its own token.
"""
from __future__ import annotations

import os
import sys

NAME = "gpu-admin"
PORT = 10101


def admin_service(config_file: str, port: int = PORT, name: str = NAME) -> tuple:
    """(service, role) for c.JupyterHub.services and c.JupyterHub.load_roles."""
    service = {
        "name": name,
        "url": f"http://127.0.0.1:{port}",
        "command": [sys.executable, "-m", "jupyter_gpuspawn.admin", "-f", os.path.abspath(config_file)],
        "oauth_no_confirm": True,
        "display": True,
        # the hub hands services a bare environment: the budget week is in the hub's time zone
        "environment": {k: os.environ[k] for k in ("TZ",) if k in os.environ},
    }
    # what the page does through the hub's API: check that a start still waits, stop a server or cancel that start
    role = {"name": f"{name}-service", "services": [name], "scopes": ["read:servers", "delete:servers"]}
    return service, role
