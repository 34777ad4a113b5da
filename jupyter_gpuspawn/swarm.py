"""Docker Swarm: the GPUs each node advertises, and servers as services (read back like containers).

Swarm itself cannot give a service a *specific* GPU (swarmkit takes only counts of generic
resources, and services cannot carry device requests, moby#40133), so the hub's allocator places and
isolates and Swarm runs: each GPU node's dockerd advertises its GPUs as NVIDIA documents
(``--node-generic-resource NVIDIA-GPU=GPU-<uuid>``, or ``node-generic-resources`` in daemon.json),
the manager reports them per node, and a server's service is pinned to its node with the UUIDs in
``NVIDIA_VISIBLE_DEVICES`` (GPU nodes run nvidia as the default runtime). Services reserve no
generic resources: Swarm would then pick the GPUs itself.

Blocking docker-py calls (``docker.APIClient`` on a manager): run them in an executor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from .gpus import GPU, Snapshot, parse_size
from .reconcile import LabelledContainer
from .spec import LABEL_USER, GPUAssignment

GPU_RESOURCE = "NVIDIA-GPU"  # the generic resource kind NVIDIA's documentation uses
# A GPU node's engine labels (dockerd --label) may name its GPUs' model and memory for the spawn
# form; Swarm itself knows only UUIDs.
LABEL_GPU_NAME = "org.jupyter.gpuspawn.gpu-name"
LABEL_GPU_MEMORY = "org.jupyter.gpuspawn.gpu-memory"
DEFAULT_GPU_NAME = "NVIDIA GPU"

# Task states (swarmkit's order): before "running" a task may still start; after it, it has ended.
STARTING_STATES = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting")
ENDED_STATES = ("complete", "shutdown", "failed", "rejected", "remove", "orphaned")


@dataclass(frozen=True)
class SwarmNode:
    id: str
    hostname: str
    addr: str  # where the hub reaches the node's published ports
    state: str  # ready, down, unknown, disconnected
    availability: str  # active, pause, drain
    gpus: tuple[str, ...] = ()  # the UUIDs it advertises

    @property
    def offers(self) -> bool:
        """Whether new servers may go there: ready and active (drained, paused or down nodes offer
        nothing)."""
        return self.state == "ready" and self.availability == "active"


def describe_node(data: dict) -> SwarmNode:
    description = data.get("Description") or {}
    resources = (description.get("Resources") or {}).get("GenericResources") or []
    gpus = tuple(
        spec.get("Value", "")
        for spec in (r.get("NamedResourceSpec") for r in resources)
        if spec and spec.get("Kind") == GPU_RESOURCE and spec.get("Value")
    )
    status = data.get("Status") or {}
    addr = status.get("Addr", "")
    if addr in ("", "0.0.0.0", "127.0.0.1"):
        # some managers report these (moby#35437): their cluster address is the one they advertise
        addr = ((data.get("ManagerStatus") or {}).get("Addr") or "").rsplit(":", 1)[0] or addr
    return SwarmNode(
        id=data.get("ID", ""),
        hostname=description.get("Hostname", ""),
        addr=addr,
        state=status.get("State", "unknown"),
        availability=(data.get("Spec") or {}).get("Availability", "active"),
        gpus=gpus,
    )


def snapshot_from_nodes(nodes_data: list) -> Snapshot:
    """The GPUs of the nodes that offer them (ready, active), from the manager's node list.

    A UUID advertised by two nodes is a configuration mistake (NVIDIA UUIDs are unique): it is
    offered on neither and reported, so the allocator can key GPUs by UUID alone.
    """
    nodes = [describe_node(d) for d in nodes_data]
    errors = []
    seen = {}
    for node in nodes:
        if node.state == "down":
            # a node that left (or rejoined under a new ID) stays listed as down: not a second owner
            continue
        for uuid in node.gpus:
            seen.setdefault(uuid, []).append(node.hostname)
    twice = {uuid for uuid, where in seen.items() if len(where) > 1}
    for uuid in sorted(twice):
        errors.append(
            f"GPU {uuid} is advertised by several nodes ({', '.join(seen[uuid])}); check their "
            "node-generic-resources: it is offered on none of them"
        )
    # servers are placed by hostname: two ready nodes of one name would pass for one node, and a
    # server's GPUs could be taken from both
    hostnames: dict = {}
    for node in nodes:
        if node.state == "ready":
            hostnames[node.hostname] = hostnames.get(node.hostname, 0) + 1
    same_name = {h for h, count in hostnames.items() if count > 1}
    for hostname in sorted(same_name):
        errors.append(
            f"{hostnames[hostname]} ready nodes are named {hostname!r} (docker node ls); give each "
            "node its own hostname: their GPUs are offered on none of them"
        )
    gpus = []
    for node in sorted(nodes, key=lambda n: n.hostname):
        if not node.offers or node.hostname in same_name:
            continue
        labels = _engine_labels(nodes_data, node.id)
        try:
            memory = parse_size(
                labels.get(LABEL_GPU_MEMORY, 0), f"node {node.hostname}: {LABEL_GPU_MEMORY}"
            )
        except ValueError as e:
            errors.append(str(e))
            memory = 0
        name = labels.get(LABEL_GPU_NAME) or DEFAULT_GPU_NAME
        for index, uuid in enumerate(node.gpus):
            if uuid not in twice:
                gpus.append(
                    GPU(
                        uuid=uuid,
                        index=index,
                        name=name[:100],
                        memory_total=memory,
                        node=node.hostname,
                    )
                )
    return Snapshot(source="swarm", gpus=tuple(gpus), errors=tuple(errors), nodes=tuple(nodes))


def _engine_labels(nodes_data: list, node_id: str) -> dict:
    for data in nodes_data:
        if data.get("ID") == node_id:
            return ((data.get("Description") or {}).get("Engine") or {}).get("Labels") or {}
    return {}


def read_swarm(client) -> Snapshot:
    """The swarm's GPUs now (one API call to a manager; blocking)."""
    return snapshot_from_nodes(client.nodes())


# ---- servers as services -------------------------------------------------------------------------


def _current_task(tasks: list) -> dict | None:
    """The task that says what a one-replica service is doing: the newest one."""
    return max(tasks, key=lambda t: t.get("CreatedAt") or "", default=None)


def task_holds_gpus(task: dict, ready=None) -> bool:
    """Whether a task may still use its GPUs: any task that has not ended, unless Swarm gave it up
    (desired state shutdown or remove) before it reached a node, or on a node that is not ready:
    down, disconnected, or gone from the swarm (``ready``: the ready nodes' IDs; None: not asked).
    Swarm stops such a task before any new one starts on that node, should it come back."""
    state = (task.get("Status") or {}).get("State", "")
    if state in ENDED_STATES:
        return False
    if task.get("DesiredState") in ("shutdown", "remove"):
        if state in ("new", "pending"):
            return False
        if ready is not None and task.get("NodeID") not in ready:
            return False
    return True


def service_state(tasks: list, ready=None) -> str:
    """A service's state in Docker's container words (reconcile.HOLDING_STATES): "created" before
    its task runs, "running", "exited" once no task of it may still use its GPUs
    (task_holds_gpus: a task Swarm is stopping still runs until its node reports it ended, or
    until Swarm gives it up on a node that is not ready)."""
    if not tasks:
        return "created"
    holding = [t for t in tasks if task_holds_gpus(t, ready)]
    if not holding:
        return "exited"
    running = any((t.get("Status") or {}).get("State") == "running" for t in holding)
    return "running" if running else "created"


def ready_nodes(client) -> frozenset:
    """IDs of the nodes that answer the manager (blocking). Any other node (down, unknown,
    disconnected, or removed from the swarm, so no longer listed) counts as down."""
    return frozenset(
        n["ID"] for n in client.nodes() if (n.get("Status") or {}).get("State") == "ready"
    )


def _given_up(tasks: list) -> bool:
    """Whether a task is one Swarm is stopping but has not seen end: only then do node states
    matter."""
    return any(
        t.get("DesiredState") in ("shutdown", "remove")
        and (t.get("Status") or {}).get("State") not in ENDED_STATES
        for t in tasks
    )


def list_labelled_services(client) -> list[LabelledContainer]:
    """Every service labelled by jupyter-gpuspawn with its state, and every task of a removed one
    that may still use its GPUs (Swarm lists those until their node reports them ended): two API
    calls (services, tasks), three when a task is being stopped (nodes; blocking)."""
    services = client.services(filters={"label": LABEL_USER})
    tasks_by_service: dict = {}
    for task in client.tasks():
        tasks_by_service.setdefault(task.get("ServiceID"), []).append(task)
    ready = ready_nodes(client) if any(_given_up(t) for t in tasks_by_service.values()) else None
    found = []
    for service in services:
        labels = (service.get("Spec") or {}).get("Labels") or {}
        assignment = GPUAssignment.from_labels(labels)
        if assignment is None:
            continue
        found.append(
            LabelledContainer(
                service["ID"],
                service_state(tasks_by_service.get(service["ID"], []), ready),
                assignment,
                _epoch(service.get("CreatedAt")),
            )
        )
    listed = {service["ID"] for service in services}
    for service_id, tasks in tasks_by_service.items():
        if service_id in listed:
            continue
        # a removed service whose task still runs: its GPUs stay held until the task has ended
        state = service_state(tasks, ready)
        task = _current_task(tasks)
        labels = ((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Labels") or {}
        assignment = GPUAssignment.from_labels(labels)
        if assignment is not None and state != "exited":
            found.append(
                LabelledContainer(service_id, state, assignment, _epoch(task.get("CreatedAt")))
            )
    return found


def _epoch(stamp: str | None) -> float:
    """Docker's RFC 3339 time (nanoseconds, "Z") as epoch seconds; 0 when absent or unreadable."""
    if not stamp:
        return 0.0
    try:
        head, _, rest = stamp.rstrip("Z").partition(".")
        return datetime.fromisoformat(head + "+00:00").timestamp() + (
            float("0." + rest) if rest else 0.0
        )
    except ValueError:
        return 0.0


def remove_service(client, service_id: str, wait: float = 60.0, poll: float = 0.25) -> None:
    """Remove a service and wait until its task has ended (blocking). Unlike a forced container
    removal, removing a service returns at once while the node still stops the task (its stop grace
    period): GPUs freed then would go to the next student while the old kernel still holds them. A
    service already gone counts as removed once no task of it may still run (see _tasks); a task
    still running after ``wait`` seconds raises, so its GPUs stay held and the reconcile tries
    again."""
    import docker.errors

    tasks = [t["ID"] for t in _tasks(client, service_id) or []]
    try:
        client.remove_service(service_id)
    except docker.errors.NotFound:
        pass
    deadline = time.monotonic() + wait
    for task_id in tasks:
        while not _task_over(client, task_id):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the task of service {service_id[:12]} still runs {wait:.0f} s after removal"
                )
            time.sleep(poll)


def _task_over(client, task_id: str) -> bool:
    """Whether a task can no longer use its GPUs: forgotten by the manager, or no longer holding
    them (task_holds_gpus)."""
    import docker.errors

    try:
        task = client.inspect_task(task_id)
    except docker.errors.NotFound:
        return True
    if not task_holds_gpus(task):
        return True
    return not task_holds_gpus(task, ready_nodes(client))  # nodes asked only when they matter


def _tasks(client, service_id_or_name: str) -> list | None:
    """The service's tasks; None when the manager knows neither the service nor a task of it. A
    removed service's tasks stay listed until their node reports them ended: the manager then
    answers 404 for the service (and for a task filter naming it), so they are found among all
    tasks by service ID."""
    import docker.errors

    try:
        service_id_or_name = client.inspect_service(service_id_or_name)["ID"]
        return client.tasks(filters={"service": service_id_or_name})
    except docker.errors.NotFound:
        pass
    tasks = [t for t in client.tasks() if t.get("ServiceID") == service_id_or_name]
    return tasks or None


def _state_of(client, tasks: list) -> str:
    return service_state(tasks, ready_nodes(client) if _given_up(tasks) else None)


def service_holds_gpus(client, service_id: str) -> bool:
    """Whether the service may still use its GPUs; a manager that does not answer counts as yes
    (blocking)."""
    try:
        tasks = _tasks(client, service_id)
    except Exception:
        return True
    return tasks is not None and _state_of(client, tasks) != "exited"


def service_ended(client, service_id_or_name: str) -> str | None:
    """How the service's server ended, once Swarm says for sure: "exited" (its task completed: Lab's
    Shut Down), "crashed" (failed, rejected, shut down by Swarm, or the service removed), None while
    it may still run."""
    try:
        tasks = _tasks(client, service_id_or_name)
    except Exception:
        return None
    if tasks is None:
        return "crashed"
    task = _current_task(tasks)
    if task is None or _state_of(client, tasks) != "exited":
        return None
    return "exited" if (task.get("Status") or {}).get("State") == "complete" else "crashed"


def task_error(tasks: list) -> str:
    """Swarm's words for why the current task did not run ("No such image: …"), or ""."""
    task = _current_task(tasks)
    status = (task or {}).get("Status") or {}
    return status.get("Err") or ""


def service_exit(client, service_id: str, output_lines: int = 20):
    """None while the service's task may still run; otherwise how it ended, as
    readiness.ServerExited (blocking). Swarm keeps the ended task's exit code and error; its output
    comes through the manager when the node still has it."""
    from .readiness import ServerExited

    try:
        tasks = _tasks(client, service_id)
    except Exception:
        return None
    if tasks is None:
        return ServerExited(None)
    if _state_of(client, tasks) != "exited":
        return None
    status = (_current_task(tasks) or {}).get("Status") or {}
    exit_code = (status.get("ContainerStatus") or {}).get("ExitCode")
    try:
        output = b"".join(
            client.service_logs(service_id, stdout=True, stderr=True, tail=output_lines)
        )
        output = output.decode(errors="replace")
    except Exception:  # logs of a task on a node that is gone, or a logging driver without reads
        output = ""
    return ServerExited(
        exit_code, error=status.get("Err") or status.get("Message") or "", output=output
    )
