"""The engine calls the GPU bookkeeping needs, for containers on one Docker host and for services on
a Swarm.

Each is a blocking function of a docker-py ``APIClient``: the spawner and the reconcile run them in
an executor. Everything above them (allocator, reconcile, usage records, reclaim) is the same on
both engines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import readiness, reconcile, swarm


@dataclass(frozen=True)
class Engine:
    kind: str  # "container" or "service": what one server runs as
    # client -> [reconcile.LabelledContainer]: every labelled server, any state
    list_labelled: Callable
    remove: Callable  # (client, id): force-remove; already gone counts as removed
    holds_gpus: Callable  # (client, id) -> bool: may it still use its GPUs? (no answer: yes)
    ended: Callable  # (client, id or name) -> "exited" / "crashed" / None while it may still run
    exit_info: Callable  # (client, id) -> readiness.ServerExited or None while it runs


CONTAINERS = Engine(
    "container",
    reconcile.list_labelled,
    reconcile.remove_container,
    reconcile.container_holds_gpus,
    reconcile.container_ended,
    readiness.container_exit,
)
SERVICES = Engine(
    "service",
    swarm.list_labelled_services,
    swarm.remove_service,
    swarm.service_holds_gpus,
    swarm.service_ended,
    swarm.service_exit,
)
