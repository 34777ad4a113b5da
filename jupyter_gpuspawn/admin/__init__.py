"""The GPU admin page and the instructors' course pages: one JupyterHub-managed service (Services
menu).

In jupyterhub_config.py::

    from jupyter_gpuspawn.admin import admin_service, instructor_access_role
    service, role = admin_service(__file__)
    c.JupyterHub.services.append(service)
    c.JupyterHub.load_roles.append(role)
    # instructors (named in course files, so not known to the hub's roles) need to reach the
    service: c.JupyterHub.load_roles.append(instructor_access_role())

The pages authenticate with HubOAuth (scope access:services!service=gpu-admin, which JupyterHub's
admin role has;
``instructor_access_role`` gives it to every user, as the hub's default "user" role plus that
scope). The service then decides: the GPU page is for admins; "My courses" for admins and for the
users a course file names as instructors (``instructors``, ``instructor_groups``); everyone else
gets 403. It reads what the hub writes (runtime_dir/gpu-activity.json, every
gpu_idle_check_seconds), the usage records and the course files, and acts through the hub's REST API
with its own token.
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
        "command": [
            sys.executable,
            "-m",
            "jupyter_gpuspawn.admin",
            "-f",
            os.path.abspath(config_file),
        ],
        "oauth_no_confirm": True,
        "display": True,
        # the hub hands services a bare environment: the budget week is in the hub's time zone
        "environment": {k: os.environ[k] for k in ("TZ",) if k in os.environ},
    }
    # what the pages do through the hub's API: see who runs what and check that a start still waits
    # (read:servers), stop a server or cancel a start (delete:servers), check enrolled names exist
    # (list:users), create a course's group and change its members (admin:groups). The hub cannot
    # scope groups to courses made later: the service only ever touches the group of a course the
    # signed-in instructor manages (see desk.enrolment_group).
    role = {
        "name": f"{name}-service",
        "services": [name],
        "scopes": ["read:servers", "delete:servers", "list:users", "admin:groups"],
    }
    return service, role


def instructor_access_role(name: str = NAME) -> dict:
    """JupyterHub's default "user" role plus access to this service, for c.JupyterHub.load_roles. A
    site that already redefines "user" adds the scope access:services!service=gpu-admin to its own
    definition instead."""
    return {"name": "user", "scopes": ["self", f"access:services!service={name}"]}
