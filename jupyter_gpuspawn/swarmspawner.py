"""GPUSwarmSpawner: GPUDockerSpawner's servers as Docker Swarm services, on the GPU node the
allocator picked.

Everything students, instructors and admins see is GPUDockerSpawner's (courses, form, queue,
reclaim, budgets, homes, the Lab extension); what differs is where a server runs: the allocator
places it on one node's GPUs (by UUID), the plan becomes a one-task service pinned to that node
(``node.id==…``), and the hub reaches it on the node's address at the port Swarm published there.
See swarm.py for what Swarm can and cannot do with GPUs.
"""

from __future__ import annotations

import asyncio
import dataclasses

from dockerspawner import SwarmSpawner
from traitlets import Bool, Float, default
from traitlets import Dict as DictTrait

from . import images
from .engines import SERVICES
from .errors import SpawnRefused, engine_error_text
from .gpus import GPUInventory, Snapshot
from .plan import swarm_service_kwargs
from .spawner import GPUDockerSpawner
from .swarm import STARTING_STATES, read_swarm, ready_nodes, task_error, task_holds_gpus

# how long a task may stay pending with "no suitable node" before the start gives up
UNPLACEABLE_SECONDS = 5.0
# seconds a node's engine has to answer an image check (they are asked in parallel, and a failure is
# remembered)
NODE_TIMEOUT = 5


class GPUSwarmSpawner(GPUDockerSpawner, SwarmSpawner):
    """Spawns single-user servers as Docker Swarm services on the node that holds their GPUs (by
    UUID).

    The hub talks to a Swarm manager (DockerSpawner's ``client_kwargs`` / ``DOCKER_HOST``).
    Requirements for the nodes (docs/admin/swarm.md): GPUs advertised as
    ``NVIDIA-GPU`` generic resources, nvidia as the default runtime, ``--no-new-privileges``, homes
    on storage every node mounts at the same path.
    """

    engine = SERVICES

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # this start: nodes that have the image (None: not checked, any node)
        self._image_nodes = None
        self._image_lacking = set()  # this start: nodes whose engine said the image is missing
        self._start_image = ""  # this start's image
        # the create_service call of this start, while it may still be running
        self._creating = None

    node_docker_hosts = DictTrait(
        config=True,
        help="""Docker engines of the nodes, by node hostname, for checks the manager cannot make:
        whether a node
        has the image (before anything is held for a start). Values as DOCKER_HOST takes them
        ("tcp://gpu-node-2:2376" with DockerSpawner.tls_config, or "unix:///run/…/docker.sock"). A
        node left out is not checked: a start there that finds no image fails with the same
        hint.""",
    )

    image_check_seconds = Float(
        30.0,
        config=True,
        help="How long a node's answer about an image is trusted before it is asked again.",
    )

    require_node_image = Bool(
        True,
        config=True,
        help="""Refuse to place a server on a node whose engine (node_docker_hosts) says it lacks
        the image. Off:
        place by GPUs alone and let the node fail the start.""",
    )

    @default("gpu_inventory")
    def _default_gpu_inventory(self):
        return "swarm"

    @default("network_name")
    def _default_network_name(self):
        # each node's default bridge, which the node settings of docs/admin/swarm.md isolate (icc
        # off, no userland proxy, two iptables rules). Not a swarm-scoped bridge: after a node's
        # dockerd crashes, Docker 20.10 rejects every task on it (moby#37087); not an overlay:
        # students would reach each other across nodes.
        return ""

    @default("use_internal_ip")
    def _default_use_internal_ip(self):
        return False  # published on the node's own address: the hub is not on the nodes' networks

    @default("pull_policy")
    def _default_pull_policy(self):
        # nodes of an offline cluster have no registry; each node's dockerd pulls by itself anyway
        return "skip"

    # ---- inventory: the manager's nodes ----------------------------------------------------------
    def _make_inventory(self) -> GPUInventory:
        if self.gpu_inventory != "swarm":
            return super()._make_inventory()
        return GPUInventory(
            "swarm",
            cache_seconds=self.gpu_inventory_cache_seconds,
            swarm_reader=lambda: read_swarm(self.client),
        )

    async def gpu_snapshot(self):
        """The swarm's GPUs; a manager that does not answer refuses the form or the start (503),
        as an engine that does not answer does on one host."""
        import docker.errors

        try:
            return await super().gpu_snapshot()
        except (OSError, docker.errors.DockerException) as e:  # requests' errors are OSErrors
            self.log.error(
                "Cannot read the swarm's nodes from the manager: %s", engine_error_text(e)
            )
            raise SpawnRefused(
                503,
                "The cluster manager does not answer right now. Try again in a minute; if it keeps "
                "happening, tell the admin the time of this attempt.",
            ) from None

    def _node(self, snapshot: Snapshot, hostname: str):
        """The node of that hostname that takes servers (a node that left and rejoined is listed
        twice)."""
        return next((n for n in snapshot.nodes if n.hostname == hostname and n.offers), None)

    def _placeable_gpus(self, snapshot) -> tuple:
        if self._image_nodes is None:
            return snapshot.gpus
        return tuple(gpu for gpu in snapshot.gpus if gpu.node in self._image_nodes)

    def _node_for(self, uuids, snapshot) -> str:
        gpus = snapshot.by_uuid()
        nodes = {gpus[u].node for u in uuids if u in gpus}
        if len(nodes) == 1:
            return nodes.pop()
        # CPU-only: a node without GPUs, else the offering node (with the image) that has the most
        # GPUs free, so GPU nodes fill last
        free = {}
        for gpu in self._placeable_gpus(snapshot):
            if not self.allocator.holders_of(gpu.uuid):
                free[gpu.node] = free.get(gpu.node, 0) + 1
        offering = [
            n
            for n in snapshot.nodes
            if n.offers and (self._image_nodes is None or n.hostname in self._image_nodes)
        ]
        if not offering:
            raise SpawnRefused(503, "No node of the cluster can take a server now; tell the admin.")
        best = min(offering, key=lambda n: (bool(n.gpus), -free.get(n.hostname, 0), n.hostname))
        return best.hostname

    # ---- image: on the nodes, before anything is held --------------------------------------------
    async def _preflight_image(self, image):
        """Which nodes have a usable ``image`` (asked of each node's engine in node_docker_hosts).
        Starts go only to those; with none, the start is refused naming the nodes and the way to
        copy it there."""
        self._image_nodes, self._image_lacking = None, set()
        self._start_image = image  # self.image is this start's only once it has its GPUs
        if not self.node_docker_hosts or not self.require_node_image:
            return
        snapshot = await self.gpu_snapshot()
        offering = [n.hostname for n in snapshot.nodes if n.offers]
        answers = await asyncio.gather(
            *(self._node_image(hostname, image) for hostname in offering)
        )
        checked: dict[str, images.ImageReadiness | None] = dict(
            zip(offering, answers, strict=False)
        )
        ready = {h for h, s in checked.items() if s is None or (s.present and s.ready)}
        self._image_nodes = ready
        lacking = sorted(h for h, s in checked.items() if s is not None and not s.present)
        self._image_lacking = set(lacking)
        if not ready:
            raise SpawnRefused(400, self._missing_image_text(image, lacking or offering))
        if lacking:
            self.log.warning(
                "Image %s is missing on node(s) %s: servers go to the others",
                image,
                ", ".join(lacking),
            )

    def _refuse_gpus(self, error, reason: str = ""):
        """No GPUs for this start; where free GPUs sit only on nodes without the image, say which
        and how to fix it (an admin copies the image there)."""
        lacking = sorted(self._image_lacking)
        if lacking:
            snapshot = self.inventory.last_snapshot()
            free = [
                g
                for g in (snapshot.gpus if snapshot else ())
                if g.node in lacking and not self.allocator.holders_of(g.uuid)
            ]
            if free:
                nodes = sorted({g.node for g in free})
                error.message = (
                    f"{error.message} {len(free)} more free on {', '.join(nodes)}, which "
                    f"{'lacks' if len(nodes) == 1 else 'lack'} the image: "
                    f"{self._missing_image_text(self._start_image, nodes)}"
                )
        super()._refuse_gpus(error, reason)

    def _missing_image_text(self, image, nodes) -> str:
        where = ("node " if len(nodes) == 1 else "nodes ") + ", ".join(nodes)
        return (
            f"Image {image} is not on {where}. An admin can copy it there without a registry: "
            f"docker save {image} | ssh {nodes[0] if nodes else 'NODE'} docker load"
        )

    async def _node_image(self, hostname: str, image: str) -> images.ImageReadiness | None:
        """The image's readiness on a node, None when its engine is not configured or does not
        answer."""
        url = self.node_docker_hosts.get(hostname)
        if not url:
            return None
        now = asyncio.get_running_loop().time()
        cache = self._shared.node_images
        known = cache.get((hostname, image))
        if known is not None and now - known[1] < self.image_check_seconds:
            return known[0]

        def check():
            import docker

            kwargs = {"base_url": url, "version": "auto", "timeout": NODE_TIMEOUT}
            if self.tls_config and url.startswith("tcp://"):
                kwargs["tls"] = docker.tls.TLSConfig(**self.tls_config)
            client = docker.APIClient(**kwargs)
            try:
                # the default runtime must be nvidia for NVIDIA_VISIBLE_DEVICES to mount GPUs
                # (services cannot carry device requests); only the node's engine can tell
                self._shared.node_runtimes[hostname] = client.info().get("DefaultRuntime", "")
                return images.inspect_readiness(client, image, self._shared.probed_images)
            finally:
                client.close()

        try:
            status = await self._blocking(check)
        except Exception as e:
            self.log.warning("Cannot ask node %s (%s) about image %s: %s", hostname, url, image, e)
            # not asked again for image_check_seconds: a dead engine must not slow every start
            status = None
        cache[(hostname, image)] = (status, now)
        return status

    async def _ensure_network(self):
        """Servers run on each node's default bridge, which the node settings of
        docs/admin/swarm.md isolate ("host" is taken as that bridge too). Any other network (an
        attachable overlay, dockerspawner's usual Swarm recipe, or a swarm-scoped bridge) lets every
        student reach every other, so it is refused unless require_isolated_network is off. Whether
        the network exists is checked with the service: Swarm refuses one on a network it lacks."""
        if not self.require_isolated_network:
            return
        networks = [self.network_name] if self.network_name not in ("", "host") else []
        if not networks:  # extra_task_spec's networks count only without network_name
            task = await self._admin_value(self.extra_task_spec)
            networks = [
                n.get("Target", "") if isinstance(n, dict) else str(n)
                for n in task.get("networks") or []
            ]
        if networks:
            self.log.error(
                "GPUSwarmSpawner: servers would join network(s) %s (network_name or "
                "extra_task_spec['networks']), where students reach each other's servers (an "
                "overlay spans the nodes). Leave both unset: servers then run on each node's "
                "default bridge, which docs/admin/swarm.md isolates. Only for trusted users, set "
                "GPUDockerSpawner.require_isolated_network = False.",
                ", ".join(repr(n) for n in networks),
            )
            raise SpawnRefused(
                500, "The network for user servers is misconfigured; tell the admin."
            )

    # ---- the service -----------------------------------------------------------------------------
    async def create_object(self):
        node = self._node(await self.gpu_snapshot(), self._assignment.node)
        if node is None:
            raise SpawnRefused(
                503,
                f"Node {self._assignment.node} takes no new servers now (down, drained or gone); "
                "try again.",
            )
        runtime = self._shared.node_runtimes.get(node.hostname)
        if self._assignment.gpus and runtime not in (None, "nvidia"):
            warning = (
                f"{node.hostname} runs containers with the {runtime} runtime, not nvidia: the GPUs "
                f"are not "
                "mounted in them (set default-runtime nvidia in that node's daemon.json)"
            )
            self.log.warning("%s: %s", self._log_name, warning)
            self._event(f"Warning: {warning}; tell the admin", 25)
        self._event(f"Creating service from {self.image} on {node.hostname}", 30)
        plan = self._plan
        known = self._shared.node_images.get((node.hostname, self.image))
        if known and known[0] is not None and known[0].image_id:
            # by ID: a node tries to pull a named image before every task (a registry lookup an
            # offline cluster waits on); an ID it has is used as it is. The env still names the
            # image.
            plan = dataclasses.replace(plan, image=known[0].image_id)
        kwargs = swarm_service_kwargs(
            plan,
            name=self.object_name,
            command=await self.get_command(),
            port=self.port,
            node_id=node.id,
            network=self.network_name if self.network_name not in ("", "host") else "",
            admin_container=await self._admin_value(self.extra_container_spec),
            admin_resources=await self._admin_value(self.extra_resources_spec),
            admin_placement=await self._admin_value(self.extra_placement_spec),
            admin_task=await self._admin_value(self.extra_task_spec),
            admin_endpoint=await self._admin_value(self.extra_endpoint_spec),
        )
        # shielded: a start cancelled now (start_timeout) must not leave a service created after its
        # stop removed nothing; the stop waits for this create to settle (_settle_create)
        self._creating = asyncio.ensure_future(self.docker("create_service", **kwargs))
        return await asyncio.shield(self._creating)

    async def _settle_create(self):
        creating, self._creating = self._creating, None
        if creating is not None and not creating.done():
            await asyncio.wait([creating], timeout=60)
        if (
            not self.object_id
            and creating is not None
            and creating.done()
            and not creating.cancelled()
            and creating.exception() is None
        ):
            # a start cancelled during its create: stop the service by its ID, by which its tasks
            # are still found once it is removed (its name is not)
            self.object_id = creating.result()["ID"]

    async def start_object(self):
        """Wait until the service's task runs (or ended without running: rejected for a missing
        image, failed)."""
        self._event(f"Starting on {self._assignment.node}", 60)
        delay, task, state = 0.1, None, ""
        unplaceable_since = None
        while True:
            task = await self.get_task()
            status = (task or {}).get("Status") or {}
            state = status.get("State", "")
            if task is not None and state not in STARTING_STATES:
                break
            if task is not None and task.get("DesiredState") in ("shutdown", "remove"):
                # Swarm gave the task up (its node died while it was assigned or preparing): it
                # never runs, whatever start_timeout says
                if not task_holds_gpus(task, await self.docker_call(ready_nodes)):
                    raise SpawnRefused(
                        503,
                        f"Node {self._assignment.node} stopped answering while your server was "
                        "starting there; try again.",
                    )
            if state == "pending" and "no suitable node" in (status.get("Err") or ""):
                # the node went down or was drained after it was chosen: the task would wait forever
                now = asyncio.get_running_loop().time()
                unplaceable_since = unplaceable_since or now
                if now - unplaceable_since > UNPLACEABLE_SECONDS:
                    raise SpawnRefused(
                        503, f"Node {self._assignment.node} takes no new servers now; try again."
                    )
            await asyncio.sleep(delay)
            # quick at first: a task on a node with the image runs in about 0.5 s
            delay = min(delay * 1.5, 1.0)
        if state != "running":
            tasks = [task] if task else []
            error = task_error(tasks) or state or "no task"
            if "No such image" in error:
                raise SpawnRefused(
                    400, self._missing_image_text(self.image, [self._assignment.node])
                )
            raise SpawnRefused(
                500,
                f"Your server did not start on {self._assignment.node} ({error}). Try again; "
                "if it keeps happening, tell the admin the time of this attempt.",
            )
        self._event("Container started; waiting for Jupyter to answer", 80)

    async def _object_status(self):
        """None while the service's task may run; otherwise how it ended. A removed service has
        ended; a task on a node that is down, which Swarm gave up, too (swarm.service_state); a
        manager that does not answer proves nothing."""
        ended = await self.docker_call(self.engine.ended, self.object_id or self.object_name)
        return None if ended is None else f"service {ended}"

    async def get_ip_and_port(self):
        task = await self.get_task()
        status = (task or {}).get("Status") or {}
        ports = (status.get("PortStatus") or {}).get("Ports") or []
        published = next(
            (p.get("PublishedPort") for p in ports if p.get("TargetPort") == self.port), None
        )
        node = (
            self._node(await self.gpu_snapshot(), self._assignment.node)
            if self._assignment
            else None
        )
        if node is None and task:
            data = await self.docker("inspect_node", task["NodeID"])
            addr = (data.get("Status") or {}).get("Addr")
        else:
            addr = node.addr if node else None
        if not published or not addr:
            raise RuntimeError(f"Swarm published no port for {self.object_name} ({ports})")
        return addr, published
