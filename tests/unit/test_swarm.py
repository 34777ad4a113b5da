"""Swarm pieces without a Swarm: node GPUs from the manager's node list, service states from tasks,
the plan as a service spec, and placement on one node. The real Swarm runs in
tests/integration/test_swarm.py."""

from __future__ import annotations

import asyncio
import logging
from types import SimpleNamespace

import pytest

from jupyter_gpuspawn.allocation import GPUAllocator, GPURequest, NoGPUAvailable, largest_server
from jupyter_gpuspawn.errors import SpawnRefused
from jupyter_gpuspawn.gpus import GPU, InventoryError, Snapshot, assignment_message, parse_simulated
from jupyter_gpuspawn.plan import (
    AdminSettings,
    Bind,
    Hardening,
    plan_container,
    swarm_service_kwargs,
)
from jupyter_gpuspawn.spec import LABEL_NODE, GPUAssignment
from jupyter_gpuspawn.swarm import (
    list_labelled_services,
    remove_service,
    service_ended,
    service_holds_gpus,
    service_state,
    snapshot_from_nodes,
)


def node(hostname, *uuids, state="ready", availability="active", labels=None, node_id=None):
    return {
        "ID": node_id or f"id-{hostname}",
        "Spec": {"Availability": availability},
        "Status": {"State": state, "Addr": f"10.0.0.{hostname[-1]}"},
        "Description": {
            "Hostname": hostname,
            "Engine": {"Labels": labels or {}},
            "Resources": {
                "GenericResources": [
                    {"NamedResourceSpec": {"Kind": "NVIDIA-GPU", "Value": u}} for u in uuids
                ]
                + [{"DiscreteResourceSpec": {"Kind": "other", "Value": 3}}]
            },
        },
    }


# ---- inventory -----------------------------------------------------------------------------------


def test_each_ready_active_node_offers_the_gpus_it_advertises():
    snap = snapshot_from_nodes(
        [
            node(
                "n1",
                "GPU-a",
                "GPU-b",
                labels={
                    "org.jupyter.gpuspawn.gpu-name": "NVIDIA A100",
                    "org.jupyter.gpuspawn.gpu-memory": "80GiB",
                },
            ),
            node("n2", "GPU-c"),
            node("n3", "GPU-d", availability="drain"),
            node("n4", "GPU-e", state="down"),
            node("n5"),  # a CPU node
        ]
    )
    assert [(g.uuid, g.node, g.index) for g in snap.gpus] == [
        ("GPU-a", "n1", 0),
        ("GPU-b", "n1", 1),
        ("GPU-c", "n2", 0),
    ]
    assert snap.gpus[0].name == "NVIDIA A100" and snap.gpus[0].memory_total == 80 * 2**30
    assert snap.gpus[2].name == "NVIDIA GPU"
    assert {n.hostname: n.offers for n in snap.nodes} == {
        "n1": True,
        "n2": True,
        "n3": False,
        "n4": False,
        "n5": True,
    }
    assert snap.errors == () and snap.source == "swarm"


def test_a_uuid_two_nodes_advertise_is_offered_on_neither():
    snap = snapshot_from_nodes([node("n1", "GPU-a", "GPU-b"), node("n2", "GPU-b")])
    assert [g.uuid for g in snap.gpus] == ["GPU-a"]
    assert "GPU-b is advertised by several nodes (n1, n2)" in snap.errors[0]


def test_two_ready_nodes_with_one_hostname_offer_no_gpus():
    # placement goes by hostname: a 2-GPU server would get one UUID from each
    snap = snapshot_from_nodes(
        [
            node("n1", "GPU-a", node_id="one"),
            node("n1", "GPU-b", node_id="two"),
            node("n2", "GPU-c"),
            node("n2", "GPU-d", state="down", node_id="old"),  # left and rejoined: no error
        ]
    )
    assert [g.uuid for g in snap.gpus] == ["GPU-c"]
    assert len(snap.errors) == 1 and "2 ready nodes are named 'n1'" in snap.errors[0]


def test_a_node_that_left_and_rejoined_is_no_second_owner_of_its_gpus():
    snap = snapshot_from_nodes(
        [node("n1", "GPU-a", state="down", node_id="old"), node("n1", "GPU-a", node_id="new")]
    )
    assert [g.uuid for g in snap.gpus] == ["GPU-a"] and snap.errors == ()


def test_a_manager_reporting_no_address_is_reached_at_the_address_it_advertises():
    data = node("n1", "GPU-a")
    data["Status"]["Addr"] = "0.0.0.0"
    data["ManagerStatus"] = {"Addr": "10.0.0.7:2377", "Leader": True}
    assert snapshot_from_nodes([data]).nodes[0].addr == "10.0.0.7"


def test_simulated_gpus_may_name_their_node():
    snap = parse_simulated([{"uuid": "GPU-a", "memory_total": 1, "node": "gpu-node-2"}], "f")
    assert snap.gpus[0].node == "gpu-node-2"
    with pytest.raises(InventoryError, match="node must be a node's hostname"):
        parse_simulated([{"uuid": "GPU-a", "memory_total": 1, "node": "bad node!"}], "f")


# ---- placement: a server's GPUs on one node ------------------------------------------------------


def gpus(*spec):
    return tuple(
        GPU(uuid=u, index=i, name="A100", memory_total=1, node=n) for i, (n, u) in enumerate(spec)
    )


def test_a_request_is_placed_on_one_node_the_fullest_that_fits():
    inventory = gpus(
        ("n1", "GPU-1a"), ("n1", "GPU-1b"), ("n2", "GPU-2a"), ("n2", "GPU-2b"), ("n2", "GPU-2c")
    )
    allocator = GPUAllocator()
    first = allocator.allocate(GPURequest("ana", count=1), inventory)
    assert first == ("GPU-1a",)  # best fit: n1 has fewer free, n2 stays whole for larger requests
    three = allocator.allocate(GPURequest("ben", count=3), inventory)
    assert set(three) == {"GPU-2a", "GPU-2b", "GPU-2c"}
    assert allocator.largest_request(inventory) == 1


def test_no_node_has_that_many_gpus_is_a_clear_refusal():
    inventory = gpus(("n1", "GPU-1a"), ("n1", "GPU-1b"), ("n2", "GPU-2a"))
    with pytest.raises(NoGPUAvailable, match="one node of this cluster has at most 2"):
        GPUAllocator().allocate(GPURequest("ana", count=3), inventory)
    assert largest_server(inventory) == 2


def test_free_gpus_spread_over_nodes_do_not_make_one_large_server():
    inventory = gpus(("n1", "GPU-1a"), ("n1", "GPU-1b"), ("n2", "GPU-2a"), ("n2", "GPU-2b"))
    allocator = GPUAllocator()
    allocator.allocate(GPURequest("ana", count=1), inventory)
    allocator.allocate(GPURequest("ben", count=1), inventory[2:])
    assert allocator.free_count(inventory) == 2 and allocator.largest_request(inventory) == 1
    with pytest.raises(NoGPUAvailable, match="2 GPUs are free, but at most 1 on any one node"):
        allocator.allocate(GPURequest("cleo", count=2), inventory)
    assert allocator.assignment("cleo") == ()


def test_progress_names_the_node():
    snap = Snapshot(source="swarm", gpus=gpus(("gpu-node-2", "GPU-3f2a1b2c-0000")))
    assert (
        assignment_message(["GPU-3f2a1b2c-0000"], snap)
        == "Assigned GPU 0 (A100, GPU-3f2a1b2c…) on gpu-node-2"
    )


# ---- services as servers -------------------------------------------------------------------------


def task(state, created="2026-11-29T10:00:00Z", desired="running", node="id-n1", err=""):
    return {
        "Status": {"State": state, "Err": err},
        "DesiredState": desired,
        "CreatedAt": created,
        "NodeID": node,
    }


@pytest.mark.parametrize(
    "tasks, expected",
    [
        ([], "created"),
        ([task("pending")], "created"),
        ([task("preparing")], "created"),
        ([task("running")], "running"),
        ([task("complete", desired="shutdown")], "exited"),
        ([task("failed", desired="shutdown")], "exited"),
        ([task("rejected", desired="shutdown", err="No such image: x")], "exited"),
        # being stopped: its container may still use the GPUs
        ([task("running", desired="shutdown")], "running"),
        # the newest task counts
        ([task("failed", created="2026-11-29T09:00:00Z"), task("running")], "running"),
    ],
)
def test_a_services_state_in_container_words(tasks, expected):
    assert service_state(tasks) == expected


def test_a_task_swarm_gave_up_on_a_down_node_has_ended():
    assert (
        service_state([task("running", desired="shutdown", node="id-n2")], frozenset({"id-n1"}))
        == "exited"
    )
    # not given up
    assert service_state([task("running", node="id-n2")], frozenset({"id-n1"})) == "running"


class Manager:
    """A manager's API over one service ("svc") and the nodes, answering as Docker does: once the
    service is removed, it (and a task filter naming it) is 404 while its tasks stay listed, desired
    state "remove", until their node reports them ended. ``tasks`` None: no such service, no tasks;
    ``down``: nodes listed as down (a node removed from the swarm is not listed at all)."""

    def __init__(self, tasks, down=(), task_states=None, ready=("id-n1",), labels=None):
        self._tasks = list(tasks or [])
        self._down = down
        self._ready = ready
        self._labels = labels or {}
        self.task_states = list(task_states or [])  # what inspect_task answers, call by call
        self.removed = tasks is None

    def nodes(self):
        return [{"ID": n, "Status": {"State": "down"}} for n in self._down] + [
            {"ID": n, "Status": {"State": "ready"}} for n in self._ready
        ]

    def remove_service(self, service_id):
        import docker.errors

        if self.removed:
            raise docker.errors.NotFound("gone")
        self.removed = True
        self._tasks = [dict(t, DesiredState="remove") for t in self._tasks]

    def inspect_task(self, task_id):
        import docker.errors

        state = self.task_states.pop(0) if len(self.task_states) > 1 else self.task_states[0]
        if state is None:
            raise docker.errors.NotFound("gone")
        desired = "remove" if self.removed else "running"
        return {
            "ID": task_id,
            "NodeID": "id-n1",
            "Status": {"State": state},
            "DesiredState": desired,
        }

    def inspect_service(self, service_id):
        import docker.errors

        if self.removed or service_id not in ("svc", "jupyter-ana"):
            raise docker.errors.NotFound("gone")
        return {"ID": "svc"}

    def services(self, filters=None):
        if self.removed:
            return []
        return [{"ID": "svc", "Spec": {"Labels": self._labels}}]

    def tasks(self, filters=None):
        import docker.errors

        if (filters or {}).get("service") and self.removed:
            raise docker.errors.NotFound("service svc not found")
        spec = {"ContainerSpec": {"Labels": self._labels}}
        other = task("running", node="id-n1")  # another service's
        return [dict(other, ID="other", ServiceID="other-svc")] * (not filters) + [
            dict(t, ID=f"task{i}", ServiceID="svc", Spec=spec) for i, t in enumerate(self._tasks)
        ]


@pytest.mark.parametrize(
    "tasks, expected",
    [
        ([task("running")], None),
        ([task("complete", desired="shutdown")], "exited"),
        ([task("failed", desired="shutdown")], "crashed"),
        (None, "crashed"),
    ],
)
def test_how_a_service_ended(tasks, expected):
    assert service_ended(Manager(tasks), "svc") == expected


def test_a_service_on_a_dead_node_that_swarm_gave_up_has_ended():
    given_up = [task("running", desired="shutdown", node="id-n2")]
    assert service_ended(Manager(given_up, down=("id-n2",)), "svc") == "crashed"
    # its node answers: still stopping
    assert service_ended(Manager(given_up, ready=("id-n1", "id-n2")), "svc") is None


def test_a_task_on_a_node_removed_from_the_swarm_has_ended():
    # docker node rm --force: the node is not listed at all, neither ready nor down
    given_up = [task("running", desired="shutdown", node="id-n2")]
    assert service_ended(Manager(given_up), "svc") == "crashed"
    assert not service_holds_gpus(Manager(given_up), "svc")


def test_removing_a_service_waits_until_its_task_has_ended():
    manager = Manager([task("running")], task_states=["running", "running", "complete"])
    remove_service(manager, "svc", poll=0)
    assert manager.removed and manager.task_states == ["complete"]  # asked until the task ended


def test_a_task_that_will_not_end_keeps_the_service_counted_as_holding():
    with pytest.raises(RuntimeError, match="still runs"):
        remove_service(
            Manager([task("running")], task_states=["running"]), "svc", wait=0.05, poll=0.01
        )
    remove_service(Manager(None), "svc")  # already gone: removed


def test_a_removed_service_whose_task_still_runs_keeps_its_gpus():
    # a kernel in D state, a hung driver: the service is gone (404) but its task runs on
    labels = GPUAssignment("ana", "", ("GPU-1a",), node="n1").labels()
    manager = Manager([task("running")], task_states=["running"], labels=labels)
    with pytest.raises(RuntimeError, match="still runs"):
        remove_service(manager, "svc", wait=0.05, poll=0.01)
    assert manager.removed
    assert service_holds_gpus(manager, "svc")
    assert service_ended(manager, "svc") is None
    with pytest.raises(RuntimeError, match="still runs"):  # the reconcile's retry waits too
        remove_service(manager, "svc", wait=0.05, poll=0.01)
    # the reconcile's list keeps it holding, by the labels of its task
    [held] = list_labelled_services(manager)
    assert (held.id, held.holds_gpus, held.assignment.gpus) == ("svc", True, ("GPU-1a",))
    # once it has ended, or its node is gone, nothing holds
    manager._tasks = [task("complete", desired="remove")]
    assert not service_holds_gpus(manager, "svc") and list_labelled_services(manager) == []
    manager._tasks, manager._ready = [task("running", desired="remove")], ()
    assert not service_holds_gpus(manager, "svc") and list_labelled_services(manager) == []


# ---- the plan as a service -----------------------------------------------------------------------


def test_the_plan_becomes_a_service_pinned_to_its_node_with_the_admins_extras_underneath():
    assignment = GPUAssignment("ana", "", ("GPU-1a",), course="dl", node="n1")
    admin = AdminSettings(
        mem_limit=2**30,
        cpu_limit=2.0,
        shm_size=2**29,
        hardening=Hardening(pids_limit=512, ulimits=(("nofile", 4096),)),
    )
    plan = plan_container(
        assignment=assignment,
        image="img:1",
        uid=1234,
        gid=1234,
        base_env={"A": "1"},
        admin=admin,
        host_home="/home/ana",
        home="/home/jovyan",
    )
    kwargs = swarm_service_kwargs(
        plan,
        name="jupyter-ana",
        command=["jupyterhub-singleuser"],
        port=8888,
        node_id="id-n1",
        network="jupyter-gpuspawn",
        admin_container={
            "user": "0:0",
            "env": ["NVIDIA_VISIBLE_DEVICES=all"],
            "cap_drop": [],
            "hostname": "x",
        },
        admin_placement={"constraints": ["node.labels.gpu==yes"]},
    )
    spec = kwargs["task_template"]
    container = spec["ContainerSpec"]
    # the admin's own keys stay
    assert container["User"] == "1234:1234" and container["Hostname"] == "x"
    assert (
        "NVIDIA_VISIBLE_DEVICES=GPU-1a" in container["Env"]
        and "NVIDIA_VISIBLE_DEVICES=all" not in container["Env"]
    )
    assert container["CapabilityDrop"] == ["ALL"] and container["Dir"] == "/home/jovyan"
    assert container["Ulimits"] == [{"Name": "nofile", "Soft": 4096, "Hard": 4096}]
    mounts = {m["Target"]: m for m in container["Mounts"]}
    assert (
        mounts["/home/jovyan"]["Source"] == "/home/ana" and not mounts["/home/jovyan"]["ReadOnly"]
    )
    assert (
        mounts["/dev/shm"]["Type"] == "tmpfs"
        and mounts["/dev/shm"]["TmpfsOptions"]["SizeBytes"] == 2**29
    )
    assert spec["Placement"]["Constraints"] == ["node.labels.gpu==yes", "node.id==id-n1"]
    assert spec["RestartPolicy"]["Condition"] == "none"
    assert spec["Resources"]["Limits"] == {
        "MemoryBytes": 2**30,
        "NanoCPUs": 2_000_000_000,
        "Pids": 512,
    }
    assert spec["Networks"] == [{"Target": "jupyter-gpuspawn"}]
    assert kwargs["labels"][LABEL_NODE] == "n1" and container["Labels"][LABEL_NODE] == "n1"
    assert kwargs["endpoint_spec"]["Ports"] == [
        {"Protocol": "tcp", "TargetPort": 8888, "PublishMode": "host"}
    ]
    assert "GenericResources" not in str(spec)  # Swarm would pick GPUs itself


def test_a_cpu_only_service_sees_no_gpu_and_read_only_stays_read_only():
    plan = plan_container(
        assignment=GPUAssignment("ana", "", ()),
        image="img",
        uid=1000,
        gid=1000,
        base_env={},
        admin=AdminSettings(
            binds=(
                Bind("/data", "/data", "ro"),
                Bind("/ref", "/ref", "z,ro"),
                Bind("/scratch", "/scratch", "rw"),
            )
        ),
    )
    kwargs = swarm_service_kwargs(
        plan,
        name="s",
        command=[],
        port=8888,
        node_id="n",
        admin_resources={"generic_resources": {"NVIDIA-GPU": 2}},
    )
    container = kwargs["task_template"]["ContainerSpec"]
    assert "NVIDIA_VISIBLE_DEVICES=void" in container["Env"]
    assert [m["ReadOnly"] for m in container["Mounts"]] == [True, True, False]
    assert "GenericResources" not in str(kwargs["task_template"])  # no admin reservation either


# ---- the spawner ---------------------------------------------------------------------------------


def swarm_spawner(**config):
    from jupyter_gpuspawn.swarmspawner import GPUSwarmSpawner

    user = SimpleNamespace(name="ana", url="/user/ana/", id=1, escaped_name="ana")
    return GPUSwarmSpawner(user=user, **config)


@pytest.mark.parametrize(
    "config",
    [
        {"network_name": "jupyterhub"},  # dockerspawner's usual attachable overlay
        {"extra_task_spec": {"networks": ["jupyterhub"]}},
        {"extra_task_spec": {"networks": [{"Target": "jupyterhub"}]}},
    ],
)
def test_a_network_where_students_reach_each_other_is_refused(config, caplog):
    spawner = swarm_spawner(**config)
    with caplog.at_level(logging.ERROR), pytest.raises(SpawnRefused, match="tell the admin") as e:
        asyncio.run(spawner._ensure_network())
    assert e.value.status_code == 500
    assert "'jupyterhub'" in caplog.text and "require_isolated_network = False" in caplog.text
    # trusted users only: the admin's explicit opt-out
    spawner.require_isolated_network = False
    asyncio.run(spawner._ensure_network())


@pytest.mark.parametrize("network", ["", "host"])
def test_each_nodes_default_bridge_is_the_isolated_network(network):
    asyncio.run(swarm_spawner(network_name=network)._ensure_network())


class Nodes:
    """A manager that answers with its node list (an exception: it does not answer)."""

    def __init__(self, nodes):
        self._nodes = nodes

    def nodes(self):
        if isinstance(self._nodes, Exception):
            raise self._nodes
        return self._nodes


def with_manager(monkeypatch, nodes, **config):
    from jupyter_gpuspawn.swarmspawner import GPUSwarmSpawner

    monkeypatch.setattr(GPUSwarmSpawner, "_client", Nodes(nodes))
    spawner = swarm_spawner(gpu_inventory_cache_seconds=0, **config)
    spawner._shared.allocator = GPUAllocator()
    return spawner


def test_a_manager_that_does_not_answer_refuses_the_form_with_503(monkeypatch):
    import requests

    spawner = with_manager(monkeypatch, requests.exceptions.ConnectionError("refused"))
    with pytest.raises(SpawnRefused, match="cluster manager does not answer") as e:
        asyncio.run(spawner.gpu_snapshot())
    assert e.value.status_code == 503


def test_cpu_only_servers_go_to_nodes_without_gpus_first(monkeypatch):
    spawner = with_manager(monkeypatch, [])
    snap = snapshot_from_nodes([node("n1", "GPU-a", "GPU-b"), node("n2", "GPU-c"), node("n3")])
    assert spawner._node_for((), snap) == "n3"
    # then the GPU node with the most GPUs free
    snap = snapshot_from_nodes([node("n1", "GPU-a", "GPU-b"), node("n2", "GPU-c")])
    assert spawner._node_for((), snap) == "n1"


def test_no_gpus_where_only_nodes_lacking_the_image_have_them_names_this_starts_image(monkeypatch):
    from jupyter_gpuspawn import images

    spawner = with_manager(
        monkeypatch,
        [node("n1", "GPU-a"), node("n2")],
        node_docker_hosts={"n1": "tcp://n1:2376", "n2": "tcp://n2:2376"},
    )
    spawner.image = "left-from-the-last-start:1"

    async def node_image(hostname, image):
        return images.ImageReadiness(image, present=hostname == "n2", ready=hostname == "n2")

    spawner._node_image = node_image
    asyncio.run(spawner._preflight_image("course:2"))
    with pytest.raises(SpawnRefused) as e:
        spawner._refuse_gpus(NoGPUAvailable("No GPU is free."))
    assert "Image course:2 is not on node n1" in str(e.value)


def test_a_start_swarm_gave_up_on_a_dead_node_is_refused_at_once(monkeypatch):
    spawner = with_manager(monkeypatch, [node("n1", "GPU-a")])  # n2 is down: no longer listed
    spawner._assignment = GPUAssignment("ana", "", ("GPU-b",), node="n2")

    async def get_task():
        return task("assigned", desired="shutdown", node="id-n2")

    spawner.get_task = get_task
    with pytest.raises(SpawnRefused, match="n2 stopped answering") as e:
        asyncio.run(asyncio.wait_for(spawner.start_object(), 5))
    assert e.value.status_code == 503


def test_a_stop_after_a_cancelled_create_goes_by_the_services_id():
    # its tasks are found by service ID once it is removed; by its name, not
    spawner = swarm_spawner()

    async def stop_after_create():
        spawner._creating = asyncio.get_running_loop().create_future()
        spawner._creating.set_result({"ID": "svc-id"})
        await spawner._settle_create()

    asyncio.run(stop_after_create())
    assert spawner.object_id == "svc-id"
