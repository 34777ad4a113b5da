"""Read GPU assignments back from the labels of running containers (hub restart, the `gpus` command)."""
from __future__ import annotations

from .spec import LABEL_USER, GPUAssignment


def list_assignments(client) -> list:
    """GPUAssignments of every running container labelled by jupyter-gpuspawn (docker-py APIClient; blocking)."""
    containers = client.containers(filters={"label": LABEL_USER, "status": "running"})
    found = []
    for container in containers:
        assignment = GPUAssignment.from_labels(container.get("Labels") or {})
        if assignment is not None:
            found.append(assignment)
    return found
