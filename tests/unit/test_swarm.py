"""Swarm pieces without a Swarm: node GPUs from the manager's node list, service states from tasks,
the plan as a service spec, and placement on one node. The real Swarm runs in
tests/integration/test_swarm.py."""

from __future__ import annotations

import pytest

from jupyter_gpuspawn.allocation import GPUAllocator, GPURequest, NoGPUAvailable, largest_server
from jupyter_gpuspawn.gpus import GPU, InventoryError, Snapshot, assignment_message, parse_simulated
from jupyter_gpuspawn.plan import (
    AdminSettings,
    Bind,
    Hardening,
    plan_container,
    swarm_service_kwargs,
)
from jupyter_gpuspawn.spec import LABEL_NODE, GPUAssignment
from jupyter_gpuspawn.swarm import remove_service, service_ended, service_state, snapshot_from_nodes


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
        service_state([task("running", desired="shutdown", node="id-n2")], frozenset({"id-n2"}))
        == "exited"
    )
    # not given up
    assert service_state([task("running", node="id-n2")], frozenset({"id-n2"})) == "running"


class Manager:
    """A manager's API over one service's tasks (None: the service is gone) and the nodes that are
    down."""

    def __init__(self, tasks, down=(), task_states=None):
        self._tasks = tasks
        self._down = down
        self.task_states = list(task_states or [])  # what inspect_task answers, call by call
        self.removed = False

    def nodes(self):
        return [{"ID": n, "Status": {"State": "down"}} for n in self._down] + [
            {"ID": "id-n1", "Status": {"State": "ready"}}
        ]

    def remove_service(self, service_id):
        self.removed = True

    def inspect_task(self, task_id):
        import docker.errors

        state = self.task_states.pop(0) if len(self.task_states) > 1 else self.task_states[0]
        if state is None:
            raise docker.errors.NotFound("gone")
        return {"ID": task_id, "NodeID": "id-n1", "Status": {"State": state}}

    def inspect_service(self, service_id):
        import docker.errors

        if self._tasks is None:
            raise docker.errors.NotFound("gone")
        return {"ID": service_id}

    def tasks(self, filters=None):
        import docker.errors

        if self._tasks is None:
            raise docker.errors.NotFound("gone")
        return [dict(t, ID=f"task{i}") for i, t in enumerate(self._tasks)]


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
    assert service_ended(Manager(given_up), "svc") is None  # its node answers: still stopping


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
