"""GPUSwarmSpawner on a real 3-node Docker Swarm built on this machine (scripts/swarm-testbed: one
dockerd per network namespace, GPUs advertised as NVIDIA-GPU generic resources), through a real
hub's REST API."""

from __future__ import annotations

import concurrent.futures
import json
import os
import subprocess
import sys
import time

import pytest

from .hub import TEST_IMAGE, wait_until

pytestmark = pytest.mark.integration

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TESTBED = os.path.join(ROOT, "scripts", "swarm-testbed")
MANAGER = "unix:///run/gsnode1/docker.sock"
HUB_ADDRESS = "10.231.0.1"  # the root namespace on the nodes' bridge: where nodes reach the hub
MISSING_ON = "gsnode3"  # the test bed leaves this node without the image
HOST_ONLY_IMAGE = "local/gpuspawn-singleuser:host-only"


def run_testbed(*args, env=None) -> str:
    result = subprocess.run(
        [TESTBED, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if result.returncode:
        pytest.fail(
            f"swarm-testbed {' '.join(args)} failed:\n{result.stderr[-3000:]}", pytrace=False
        )
    return result.stdout


@pytest.fixture(scope="module")
def swarm(docker_engine):
    """The 3-node swarm: {hostname: {"addr", "socket", "gpus"}}; gsnode3 lacks the image (the
    hubs' image, GPUSPAWN_SINGLEUSER_IMAGE)."""
    env = {"SWARM_IMAGES": TEST_IMAGE, "SWARM_SKIP_IMAGE_ON": MISSING_ON[-1]}
    line = run_testbed("up", env=env).strip().splitlines()[-1]
    fields = dict(part.split("=", 1) for part in line.split()[1:])
    nodes = {}
    for entry in fields["nodes"].split(","):
        hostname, addr = entry.split(":")
        nodes[hostname] = {
            "addr": addr,
            "socket": f"unix:///run/{hostname}/docker.sock",
            "gpus": [],
        }
    for entry in fields["gpus"].split(","):
        hostname, uuid = entry.split(":", 1)
        nodes[hostname]["gpus"].append(uuid)
    yield nodes
    remove_services()
    # a developer keeps it for the next run (`up` then takes 0.3 s); CI leaves nothing
    if os.environ.get("CI"):
        run_testbed("down")


def node_docker(hostname, *args) -> str:
    return subprocess.run(
        ["docker", "-H", f"unix:///run/{hostname}/docker.sock", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def manager(*args, check=True) -> str:
    return subprocess.run(
        ["docker", "-H", MANAGER, *args], check=check, capture_output=True, text=True
    ).stdout


def remove_services():
    ids = manager(
        "service", "ls", "-q", "--filter", "label=org.jupyter.gpuspawn.user", check=False
    ).split()
    if ids:
        manager("service", "rm", *ids, check=False)


def service_of(user, server="") -> dict:
    """The user's service with its current task (node hostname, state, container env)."""
    for sid in manager(
        "service", "ls", "-q", "--filter", f"label=org.jupyter.gpuspawn.user={user}"
    ).split():
        spec = json.loads(manager("service", "inspect", sid))[0]
        if spec["Spec"]["Labels"].get("org.jupyter.gpuspawn.server", "") != server:
            continue
        tasks = json.loads(
            manager("inspect", *manager("service", "ps", "-q", "--no-trunc", sid).split()) or "[]"
        )
        task = max(tasks, key=lambda t: t["CreatedAt"])
        node = json.loads(manager("node", "inspect", task["NodeID"]))[0]["Description"]["Hostname"]
        return {"spec": spec, "task": task, "node": node, "labels": spec["Spec"]["Labels"]}
    return {}


def container_env(service) -> dict:
    """The env of the service's task container, read on its node (what the process really got)."""
    cid = service["task"]["Status"]["ContainerStatus"]["ContainerID"]
    env = json.loads(node_docker(service["node"], "inspect", cid))[0]["Config"]["Env"]
    return dict(item.split("=", 1) for item in env)


@pytest.fixture
def swarm_hub(make_hub, swarm):
    remove_services()

    def make(extra_config=""):
        hosts = {name: node["socket"] for name, node in swarm.items()}
        return make_hub(
            gpus=[],
            spawner_class="gpuswarm",
            extra_config=f"""
c.JupyterHub.hub_bind_url = "http://{HUB_ADDRESS}:" + c.JupyterHub.hub_bind_url.rsplit(":", 1)[1]
c.DockerSpawner.client_kwargs = {{"base_url": {MANAGER!r}}}
c.GPUSwarmSpawner.node_docker_hosts = {hosts!r}
c.GPUSwarmSpawner.gpu_inventory = "swarm"
# each node's default bridge, isolated by the node settings (docs/admin/swarm.md)
c.GPUSwarmSpawner.network_name = ""
"""
            + extra_config,
        )

    yield make
    remove_services()


def test_servers_go_to_the_node_of_their_gpus_with_exactly_those_gpus(swarm_hub, swarm):
    hub = swarm_hub(
        'c.GPUDockerSpawner.mem_limit = "1G"\nc.GPUDockerSpawner.cpu_limit = 1.5\n'
        'c.GPUDockerSpawner.shm_size = "256M"\nc.GPUDockerSpawner.pids_limit = 300\n'
    )
    hub.create_users("ana", "ben", "cleo")
    hub.spawn_ready("ana", {"gpus": 2})
    hub.spawn_ready("ben", {"gpus": 1})
    hub.spawn_ready("cleo", {"gpus": 0})
    held = []
    for user, count in (("ana", 2), ("ben", 1)):
        service = service_of(user)
        uuids = service["labels"]["org.jupyter.gpuspawn.gpus"].split(",")
        assert len(uuids) == count and service["task"]["Status"]["State"] == "running"
        node = service["labels"]["org.jupyter.gpuspawn.node"]
        assert service["node"] == node and set(uuids) <= set(swarm[node]["gpus"]), (
            service["node"],
            uuids,
        )
        env = container_env(service)
        assert env["NVIDIA_VISIBLE_DEVICES"] == ",".join(uuids) == env["JUPYTER_GPUSPAWN_GPUS"]
        held += uuids
    assert len(set(held)) == 3
    cpu = service_of("cleo")
    assert container_env(cpu)["NVIDIA_VISIBLE_DEVICES"] == "void" and cpu["node"] != MISSING_ON
    # the hub reaches each server on its node's address; the image goes by ID (no registry lookup on
    # the node)
    for user in ("ana", "ben", "cleo"):
        assert hub.session.get(hub.user_url(user) + "api/status", timeout=30).status_code == 200
        assert service_of(user)["spec"]["Spec"]["TaskTemplate"]["ContainerSpec"][
            "Image"
        ].startswith("sha256:")
    assert (
        f"Assigned GPU 0 (NVIDIA GPU, "
        f"{service_of('ben')['labels']['org.jupyter.gpuspawn.gpus'][:12]}…) on "
        f"{service_of('ben')['node']}" in hub.log_tail(400)
    )
    # the form: availability over all nodes, and no more GPUs than one node can give
    from .test_reclaim import spawn_page

    hub.create_users("dan")
    page = spawn_page(hub, "dan")
    assert "2 of 5 GPUs free" in page and "only 1 free now" in page and 'value="3"' not in page, (
        page
    )
    # the test nodes run runc (no NVIDIA here): the student and the admin are told, not left
    # guessing
    assert "runs containers with the runc runtime, not nvidia" in hub.log_tail(400)
    # the plan's limits and hardening reach the container on the node (what Docker made of the
    # service spec)
    ana = service_of("ana")
    cid = ana["task"]["Status"]["ContainerStatus"]["ContainerID"]
    container = json.loads(node_docker(ana["node"], "inspect", cid))[0]
    host = container["HostConfig"]
    assert (
        host["Memory"] == 2**30 and host["NanoCpus"] == 1_500_000_000 and host["PidsLimit"] == 300
    )
    assert host["CapDrop"] == ["ALL"] and container["Config"]["User"] != "0:0"
    shm = next(m for m in host["Mounts"] if m["Target"] == "/dev/shm")
    assert shm["Type"] == "tmpfs" and shm["TmpfsOptions"]["SizeBytes"] == 256 * 2**20
    assert "NoNewPrivs:\t1" in node_docker(ana["node"], "exec", cid, "cat", "/proc/self/status")
    # the admin's view: every node's GPUs and who holds them, read from the manager and the service
    # labels
    cli = [
        os.path.join(os.path.dirname(sys.executable), "jupyter-gpuspawn"),
        "gpus",
        "-f",
        hub.config_file,
    ]
    out = subprocess.run(cli, check=True, capture_output=True, text=True).stdout
    assert "GPUs on 3 Swarm nodes: 5" in out, out
    for user in ("ana", "ben"):
        service = service_of(user)
        for uuid in service["labels"]["org.jupyter.gpuspawn.gpus"].split(","):
            line = next(line for line in out.splitlines() if uuid in line)
            assert line.startswith(service["node"]) and f"  {user}" in line, line
    # a stop returns once the task's container is gone from its node, not when the manager took the
    # removal: the GPUs it frees must not reach the next student while the old kernel still holds
    # them
    node = service_of("ana")["node"]
    hub.stop_server("ana")
    assert node_docker(node, "ps", "-q", "--filter", "label=org.jupyter.gpuspawn.user=ana") == ""


def test_a_concurrent_burst_books_nothing_twice(swarm_hub, swarm):
    hub = swarm_hub()
    users = [f"burst{i}" for i in range(5)]
    hub.create_users(*users)
    # gsnode3 lacks the image: its GPU is never used, so 4 GPUs for 5 students
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        answers = list(pool.map(lambda u: hub.spawn(u, {"gpus": 1}), users))
    started = [u for u, r in zip(users, answers, strict=False) if r.status_code in (201, 202)]
    for user in started:
        hub.wait_ready(user)
    refused = [r for r in answers if r.status_code == 409]
    assert len(started) == 4 and len(refused) == 1, [r.status_code for r in answers]
    assert (
        "lacks the image" in refused[0].json()["message"]
        and MISSING_ON in refused[0].json()["message"]
    )
    uuids = [service_of(u)["labels"]["org.jupyter.gpuspawn.gpus"] for u in started]
    assert len(set(uuids)) == 4


def test_an_image_no_node_has_is_refused_with_the_hint_before_anything_is_held(swarm_hub, swarm):
    # on the hub's host, on no node
    subprocess.run(["docker", "tag", TEST_IMAGE, HOST_ONLY_IMAGE], check=True)
    hub = swarm_hub(
        extra_config=f'c.DockerSpawner.allowed_images = {{"lab": {TEST_IMAGE!r}, '
        f'"new": {HOST_ONLY_IMAGE!r}}}\n'
    )
    hub.create_users("dora")
    r = hub.spawn("dora", {"gpus": 1, "image": "new"})
    assert r.status_code == 400, r.text
    message = r.json()["message"]
    assert f"{HOST_ONLY_IMAGE} is not on nodes gsnode1, gsnode2, gsnode3" in message, message
    assert f"docker save {HOST_ONLY_IMAGE} | ssh gsnode1 docker load" in message
    assert service_of("dora") == {}
    # nothing was held: both GPUs of a node are free
    hub.spawn_ready("dora", {"gpus": 2, "image": "lab"})


def test_hub_restart_rebuilds_holds_from_service_labels(swarm_hub, swarm):
    hub = swarm_hub()
    hub.create_users("eve", "fay")
    hub.spawn_ready("eve", {"gpus": 2})
    eve = service_of("eve")["labels"]["org.jupyter.gpuspawn.gpus"].split(",")
    hub.kill9()
    hub.start()
    # 4 usable GPUs, eve holds 2 of them: fay can get 2 (the other node), never one of eve's
    hub.spawn_ready("fay", {"gpus": 2})
    fay = service_of("fay")["labels"]["org.jupyter.gpuspawn.gpus"].split(",")
    assert not set(fay) & set(eve)
    assert hub.server("eve") is not None


def test_a_node_that_dies_frees_its_holders_once_swarm_reports_it(swarm_hub, swarm):
    hub = swarm_hub("c.GPUDockerSpawner.reconcile_interval = 1\nc.Spawner.poll_interval = 2\n")
    hub.create_users("ivy", "gus", "hal")
    hub.spawn_ready("ivy", {"gpus": 2})
    hub.spawn_ready("gus", {"gpus": 2})
    node = service_of("gus")["node"]
    # a worker dies
    assert node not in ("gsnode1", MISSING_ON) and service_of("ivy")["node"] == "gsnode1"
    try:
        run_testbed("stop-node", node[-1], "KILL")
        killed = time.monotonic()
        # the reconcile or the hub's poll, whichever looks first once Swarm gives the task up, ends
        # the server and frees its GPUs (the poll only ends it once the engine says it ended, which
        # is what frees them)
        wait_until(lambda: hub.server("gus") is None, 120, "the hub saw gus's server end")
        print(f"ended {time.monotonic() - killed:.1f} s after the node's dockerd was killed")
        # the dead node offers nothing meanwhile: no node has 2 free GPUs with the image
        r = hub.spawn("hal", {"gpus": 2})
        assert r.status_code == 409, r.text
    finally:
        run_testbed("start-node", node[-1])
    wait_until(
        lambda: (
            "Ready" in manager("node", "inspect", node, "--format", "{{.Status.State}}").title()
        ),
        60,
        "the node came back",
    )
    # back: its GPUs are offered again once Swarm reports the old task ended. Until the node's agent
    # says so, the task still reads "running" on a ready node and its GPUs stay held (the node may
    # only have been cut off, its container still working): a start meanwhile is refused, not
    # doubled up
    wait_until(
        lambda: hub.spawn("hal", {"gpus": 2}).status_code in (201, 202),
        60,
        "the returned node's GPUs were never offered again",
    )
    hub.wait_ready("hal")
    assert service_of("hal")["node"] == node


def connects_from(service, host, port) -> bool:
    """Whether a process in the service's task container opens a TCP connection to host:port
    (within 2 s)."""
    cid = service["task"]["Status"]["ContainerStatus"]["ContainerID"]
    script = (
        f"import socket\ntry:\n    socket.create_connection(({host!r}, {port:d}), timeout=2)\n"
        "    print('open')\nexcept OSError:\n    print('closed')\n"
    )
    out = node_docker(service["node"], "exec", cid, "python3", "-c", script).strip()
    assert out in ("open", "closed"), out
    return out == "open"


def published_port(service) -> int:
    return service["task"]["Status"]["PortStatus"]["Ports"][0]["PublishedPort"]


def test_students_reach_no_other_student_on_any_node_and_the_hub_reaches_all(swarm_hub, swarm):
    hub = swarm_hub()
    hub.create_users("amy", "bo", "cy")
    hub.spawn_ready("amy", {"gpus": 1})
    hub.spawn_ready("bo", {"gpus": 1})
    hub.spawn_ready("cy", {"gpus": 2})
    amy, bo, cy = service_of("amy"), service_of("bo"), service_of("cy")
    # best fit: amy and bo share a node
    assert amy["node"] == bo["node"] == "gsnode1" and cy["node"] == "gsnode2"
    bo_cid = bo["task"]["Status"]["ContainerStatus"]["ContainerID"]
    bo_ip = json.loads(node_docker("gsnode1", "inspect", bo_cid))[0]["NetworkSettings"]["IPAddress"]
    # bo's own TensorBoard
    node_docker("gsnode1", "exec", "-d", bo_cid, "python3", "-m", "http.server", "9000")
    wait_until(lambda: connects_from(bo, "127.0.0.1", 9000), 10, "bo's own service came up")
    gsnode1, gsnode2 = swarm["gsnode1"]["addr"], swarm["gsnode2"]["addr"]
    for host, port in [
        (bo_ip, 8888),
        (bo_ip, 9000),
        (gsnode1, published_port(bo)),
        ("127.0.0.1", published_port(bo)),
        ("172.17.0.1", published_port(bo)),
        (gsnode2, published_port(cy)),
        (gsnode1, 2377),
    ]:
        assert not connects_from(amy, host, port), f"amy reached {host}:{port}"
    assert not connects_from(cy, gsnode1, published_port(amy))  # across nodes, the other way
    # the hub (its proxy) reaches every server on its node's address (and each server reached the
    # hub's API to become ready)
    for user in ("amy", "bo", "cy"):
        assert hub.session.get(hub.user_url(user) + "api/status", timeout=30).status_code == 200
    # the node's dockerd gave the container no-new-privileges, which a service cannot ask for in API
    # 1.41
    status = node_docker("gsnode1", "exec", bo_cid, "cat", "/proc/self/status")
    assert "NoNewPrivs:\t1" in status


def test_a_server_whose_container_dies_on_its_node_gives_its_gpus_back(swarm_hub, swarm):
    hub = swarm_hub("c.GPUDockerSpawner.reconcile_interval = 1\nc.Spawner.poll_interval = 2\n")
    hub.create_users("kim", "lou")
    hub.spawn_ready("kim", {"gpus": 2})
    hub.spawn_ready("lou", {"gpus": 2})  # the two nodes with the image are full
    kim = service_of("kim")
    gpus = kim["labels"]["org.jupyter.gpuspawn.gpus"]
    # an OOM, a crash
    node_docker(kim["node"], "kill", kim["task"]["Status"]["ContainerStatus"]["ContainerID"])
    wait_until(lambda: hub.server("kim") is None, 30, "the hub saw kim's server end")
    hub.create_users("max")
    # Swarm did not restart the task: kim's GPUs are free for someone else
    hub.spawn_ready("max", {"gpus": 2})
    assert service_of("max")["labels"]["org.jupyter.gpuspawn.gpus"] == gpus
    assert len(manager("service", "ps", "-q", kim["spec"]["ID"], check=False).split()) <= 1
