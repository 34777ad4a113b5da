"""One start's container, decided once: the ContainerPlan (pure, frozen) and its rendering for
Docker.

Everything that isolates a server and that the reconcile, the status extension and the usage records
rely on is decided here, from the validated choice, the GPU assignment, the identity, the home, the
course and the admin's settings, before anything is created: image, user, env, mounts, limits, shm,
hardening, labels, devices. Engines only render a plan (``docker_create_kwargs``; a Swarm service
spec later), so what a server gets never depends on which spawner method ran last or on what a
site's hook assigned to a trait in between.

The admin's ``extra_create_kwargs`` / ``extra_host_config`` are merged in when rendering, under the
plan: a site's ``pre_spawn_hook`` may change them (or replace them), and still cannot drop the
device requests, the dropped capabilities, the uid or the labels.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .spec import (
    GPUAssignment,
    device_requests,
    gpu_env,
    is_protected_env,
    is_spawner_env,
    merge_host_config,
)

NOTICE_MOUNT = "/etc/jupyter-gpuspawn/notices"
SIMULATED_MOUNT = "/etc/jupyter-gpuspawn/simulated-gpus"


@dataclass(frozen=True)
class Bind:
    """A host path (or a named volume) mounted into the container; ``mode`` as Docker takes it
    ("ro", "rw,z")."""

    source: str
    target: str
    mode: str = "ro"


@dataclass(frozen=True)
class Hardening:
    """The admin's process limits and privileges for every container (no course changes these)."""

    pids_limit: int = 0
    ulimits: tuple[tuple[str, int], ...] = ()
    cap_add: tuple[str, ...] = ()
    no_new_privileges: bool = True


@dataclass(frozen=True)
class AdminSettings:
    """The admin's spawner settings that shape every container (read from the spawner once per
    start)."""

    mem_limit: int | None = None
    cpu_limit: float | None = None
    shm_size: int | None = None
    hardening: Hardening = Hardening()
    environment_names: frozenset[str] = frozenset()  # names the admin set in Spawner.environment
    binds: tuple[Bind, ...] = ()  # the admin's volumes, as DockerSpawner renders them


@dataclass(frozen=True)
class ContainerPlan:
    assignment: GPUAssignment
    image: str
    uid: int
    gid: int
    home: str  # the container's home: HOME and the working directory ("" when no home is mounted)
    env: tuple[tuple[str, str], ...]
    # every bind: the admin's, then notices, simulated GPUs, course data, the home
    binds: tuple[Bind, ...]
    mem_limit: int | None = None  # the course's, else the admin's
    cpu_limit: float | None = None
    shm_size: int | None = None
    hardening: Hardening = Hardening()
    # admin environment names the spawner alone sets
    ignored_env: tuple[str, ...] = field(default=())

    @property
    def gpus(self) -> tuple[str, ...]:
        return self.assignment.gpus

    def labels(self) -> dict:
        return self.assignment.labels()

    def env_dict(self) -> dict:
        return dict(self.env)

    def create_kwargs(self, admin: Mapping | None) -> dict:
        """The admin's extra_create_kwargs with the plan's user, working directory and labels on
        top."""
        kwargs = copy.deepcopy(dict(admin or {}))
        kwargs["user"] = f"{self.uid}:{self.gid}"
        if self.home:
            kwargs["working_dir"] = self.home
        kwargs["labels"] = {**dict(kwargs.get("labels") or {}), **self.labels()}
        return kwargs

    def host_config(self, admin: Mapping | None) -> tuple[dict, list]:
        """The admin's extra_host_config under the plan's isolation (always applies) and over its
        defaults (apply unless the admin set them). Returns the merged dict and warnings for the
        log."""
        hardening = {
            "cap_drop": ["ALL"],
            "device_requests": device_requests(self.gpus),
            # removal is the spawner's (on stop, on failure, before a re-create): a container Docker
            # removed by itself would take its exit code, OOM flag and last output with it
            "auto_remove": False,
            # a container that ended has given its GPUs back: Docker restarting it by itself (an
            # admin's "always" or "unless-stopped") would run it on GPUs now someone else's
            "restart_policy": {"Name": "no"},
        }
        limits = self.hardening
        if limits.no_new_privileges:
            hardening["security_opt"] = ["no-new-privileges:true"]
        if limits.cap_add:
            hardening["cap_add"] = list(limits.cap_add)
        defaults = {"shm_size": self.shm_size} if self.shm_size else {}
        if limits.pids_limit:
            defaults["pids_limit"] = limits.pids_limit
        if limits.ulimits:
            defaults["ulimits"] = [
                {"Name": name, "Soft": limit, "Hard": limit} for name, limit in limits.ulimits
            ]
        return merge_host_config(admin, hardening, defaults)


def plan_container(
    *,
    assignment: GPUAssignment,
    image: str,
    uid: int,
    gid: int,
    base_env: Mapping,
    admin: AdminSettings,
    course=None,
    host_home: str = "",
    home: str = "",
    notice_dir: str = "",
    notice_file: str = "",
    simulated_file: str = "",
    simulated_env: str = "",
) -> ContainerPlan:
    """The plan for one start. ``base_env`` is JupyterHub's env for the server (API token, URLs, the
    admin's
    ``environment``); ``course`` a courses.Course or None; ``notice_dir`` the host directory of the
    server's notices (GPU servers); ``simulated_file`` / ``simulated_env`` the demo inventory the
    container sees."""
    mem_limit = (
        course.mem_limit if course is not None and course.mem_limit is not None else admin.mem_limit
    )
    cpu_limit = (
        course.cpu_limit if course is not None and course.cpu_limit is not None else admin.cpu_limit
    )
    shm_size = (course.shm_size if course is not None else None) or admin.shm_size

    env = dict(base_env)
    # the NVIDIA runtime and our status extension trust these: only the spawner sets them, whatever
    # the admin's
    # `environment` says (a course's env cannot hold protected names at all; checked on load too)
    ignored = sorted(
        name for name in env if name in admin.environment_names and is_spawner_env(name)
    )
    for name in ignored:
        del env[name]
    if course is not None:
        env.update({k: v for k, v in course.env if not is_protected_env(k)})
    if mem_limit:
        env["MEM_LIMIT"] = str(mem_limit)
    if cpu_limit:
        env["CPU_LIMIT"] = str(cpu_limit)
    env.update(gpu_env(assignment.gpus, assignment.course, image))
    binds = list(admin.binds)
    if notice_dir:
        env["JUPYTER_GPUSPAWN_NOTICE_FILE"] = f"{NOTICE_MOUNT}/{notice_file}"
        binds.append(Bind(notice_dir, NOTICE_MOUNT))
    if simulated_env:
        env["JUPYTER_GPUSPAWN_SIMULATED_GPUS"] = simulated_env
        env["JUPYTER_GPUSPAWN_SIMULATED_FILE"] = simulated_target(simulated_file)
        binds.append(Bind(simulated_file, simulated_target(simulated_file)))
    for mount in course.mounts if course is not None else ():
        binds.append(Bind(mount.source, mount.target, "ro" if mount.read_only else "rw"))
    if host_home:
        env["HOME"] = home
        binds.append(Bind(host_home, home, "rw"))
    return ContainerPlan(
        assignment=assignment,
        image=image,
        uid=uid,
        gid=gid,
        home=home if host_home else "",
        env=tuple(env.items()),
        binds=_one_per_source(binds),
        mem_limit=mem_limit,
        cpu_limit=cpu_limit,
        shm_size=shm_size,
        hardening=admin.hardening,
        ignored_env=tuple(ignored),
    )


def simulated_target(simulated_file: str) -> str:
    """Where the container sees the hub's simulated-GPU file (read-only; an edit shows live in the
    Lab panel)."""
    suffix = (
        "." + simulated_file.rsplit(".", 1)[-1]
        if "." in simulated_file.rsplit("/", 1)[-1]
        else ".yaml"
    )
    return SIMULATED_MOUNT + suffix


def _one_per_source(binds: Sequence[Bind]) -> tuple[Bind, ...]:
    """Docker keys binds by host path: the later bind of a source wins (in the order the plan adds
    them), kept in the place of the first."""
    by_source = {}
    for bind in binds:
        by_source[bind.source] = bind
    return tuple(by_source.values())


def docker_create_kwargs(
    plan: ContainerPlan,
    *,
    name: str,
    command,
    port: int,
    network: str,
    admin_create=None,
    admin_host=None,
    use_internal_ip: bool = True,
    host_ip: str = "127.0.0.1",
    links=None,
    mounts=None,
) -> tuple[dict, dict, list]:
    """(create kwargs without the host config, host config kwargs for docker-py's
    create_host_config, warnings): what DockerSpawner.create_object builds, from the plan."""
    create = {
        "image": plan.image,
        "environment": plan.env_dict(),
        "volumes": [b.target for b in plan.binds],
        "name": name,
        "command": command,
        "ports": {f"{port}/tcp": None},
    }
    _deep_merge(create, plan.create_kwargs(admin_create))
    admin_host = dict(admin_host or {})
    extra, warnings = plan.host_config(admin_host)
    host = {
        "auto_remove": False,
        "binds": {b.source: {"bind": b.target, "mode": b.mode} for b in plan.binds},
        "links": links,
        "mounts": mounts,
    }
    if plan.mem_limit is not None:
        host["mem_limit"] = plan.mem_limit
    if plan.cpu_limit is not None:
        # Docker counts CPU in microseconds
        period = host["cpu_period"] = admin_host.get("cpu_period", 100_000)
        host["cpu_quota"] = int(plan.cpu_limit * period)
    if not use_internal_ip:
        host["port_bindings"] = {port: (host_ip,)}
    _deep_merge(host, extra)
    host.setdefault("network_mode", network)
    return create, host, warnings


def _deep_merge(dest: dict, source: Mapping) -> None:
    """DockerSpawner's merge: mappings merged key by key, anything else replaced."""
    for key, value in source.items():
        if isinstance(dest.get(key), dict) and isinstance(value, Mapping):
            _deep_merge(dest[key], value)
        else:
            dest[key] = value


def swarm_service_kwargs(
    plan: ContainerPlan,
    *,
    name: str,
    command,
    port: int,
    node_id: str,
    network: str = "",
    publish: bool = True,
    admin_container=None,
    admin_resources=None,
    admin_placement=None,
    admin_task=None,
    admin_endpoint=None,
) -> dict:
    """Keyword arguments for docker-py's ``create_service``: the plan as a one-task Swarm service
    pinned to its GPUs' node. The admin's SwarmSpawner extras (``extra_container_spec`` …) are
    merged under the plan, as on one host: they cannot change the user, the GPU env, the mounts, the
    labels, the dropped capabilities or the node.

    What a service cannot carry is left to the node's dockerd, which the admin configures
    (docs/admin/swarm.md): device requests (moby#40133: GPU nodes run nvidia as the default runtime
    and read NVIDIA_VISIBLE_DEVICES) and
    ``no-new-privileges`` (services get it in API 1.44; dockerd ``--no-new-privileges`` sets it for
    all).
    """
    from docker.types import (
        ContainerSpec,
        EndpointSpec,
        Mount,
        Placement,
        Resources,
        RestartPolicy,
        TaskTemplate,
    )

    mounts = [
        Mount(target=b.target, source=b.source, type="bind", read_only="ro" in b.mode.split(","))
        for b in plan.binds
    ]
    # services have no shm_size: a tmpfs of that size at /dev/shm is what Docker makes of it
    if plan.shm_size:
        mounts.append(Mount(target="/dev/shm", source="", type="tmpfs", tmpfs_size=plan.shm_size))
    hardening = plan.hardening
    container = dict(admin_container or {})
    container.update(
        image=plan.image,
        args=command,
        env=[f"{k}={v}" for k, v in plan.env],
        user=f"{plan.uid}:{plan.gid}",
        mounts=mounts,
        labels={**dict(container.get("labels") or {}), **plan.labels()},
        cap_drop=["ALL"],
        cap_add=list(hardening.cap_add) or None,
    )
    if plan.home:
        container["workdir"] = plan.home
    container_spec = ContainerSpec(**container)
    if hardening.ulimits:
        container_spec["Ulimits"] = [
            {"Name": n, "Soft": v, "Hard": v} for n, v in hardening.ulimits
        ]

    resources = dict(admin_resources or {})
    # a generic-resource reservation would let Swarm pick GPUs itself (and, with the NVIDIA
    # runtime's swarm-resource setting, override NVIDIA_VISIBLE_DEVICES through DOCKER_RESOURCE_*)
    resources.pop("generic_resources", None)
    if plan.mem_limit is not None:
        resources["mem_limit"] = plan.mem_limit
    if plan.cpu_limit is not None:
        resources["cpu_limit"] = int(plan.cpu_limit * 1e9)  # nano-CPUs
    resources_spec = Resources(**resources)
    if hardening.pids_limit:
        resources_spec.setdefault("Limits", {})["Pids"] = hardening.pids_limit

    placement = dict(admin_placement or {})
    placement["constraints"] = list(placement.get("constraints") or []) + [f"node.id=={node_id}"]
    task = dict(admin_task or {})
    task.update(
        container_spec=container_spec,
        resources=resources_spec,
        placement=Placement(**placement),
        # one run per start, like a container: a task that ends ends the server, and Swarm never
        # restarts it elsewhere or later (its GPUs may have gone to someone else meanwhile)
        restart_policy=RestartPolicy(condition="none"),
        networks=[network] if network else task.get("networks"),
    )
    endpoint = dict(admin_endpoint or {})
    endpoint_spec = EndpointSpec(**endpoint)
    if publish:  # host mode: on the node's own address, at a port Swarm picks there
        endpoint_spec["Ports"] = [{"Protocol": "tcp", "TargetPort": port, "PublishMode": "host"}]
    return {
        "task_template": TaskTemplate(**task),
        "name": name,
        "labels": plan.labels(),
        "endpoint_spec": endpoint_spec,
    }
