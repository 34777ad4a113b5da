"""Students cannot reach each other: not on the container address, not on loopback, not through the
gateway.

A user name is not proof of a host account: a non-PAM login named like a host account gets a range
uid, and a home that belongs to someone else is never mounted.
"""

from __future__ import annotations

import json
import subprocess
import textwrap

import pytest

from .conftest import gpuspawn_containers, labelled, remove_test_containers
from .hub import TEST_NETWORK

PROBE_PORT = 9000


def exec_in(container, script, user=None) -> subprocess.CompletedProcess:
    args = (
        ["docker", "exec"]
        + (["-u", user] if user else [])
        + [container["Id"], "python3", "-c", script]
    )
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def connects(container, host, port) -> bool:
    script = textwrap.dedent(f"""
        import socket
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(({host!r}, {port}))
            print("open")
        except OSError:
            print("closed")
    """)
    out = exec_in(container, script).stdout.strip()
    assert out in ("open", "closed"), out
    return out == "open"


def address_on(container, network) -> str:
    return container["NetworkSettings"]["Networks"][network]["IPAddress"]


def gateway_of(network) -> str:
    data = json.loads(
        subprocess.run(
            ["docker", "network", "inspect", network], check=True, capture_output=True, text=True
        ).stdout
    )[0]
    return data["IPAM"]["Config"][0]["Gateway"]


def test_students_cannot_reach_each_others_ports(make_hub):
    hub = make_hub(n_gpus=2)
    hub.create_users("amy", "bo")
    hub.spawn_ready("amy", {"gpus": 1})
    hub.spawn_ready("bo", {"gpus": 1})
    amy, bo = labelled("amy")[0], labelled("bo")[0]
    # bo runs a service of their own (TensorBoard, a Dask scheduler, http.server) on every address
    # of the container
    subprocess.run(
        ["docker", "exec", "-d", bo["Id"], "python3", "-m", "http.server", str(PROBE_PORT)],
        check=True,
    )
    assert _eventually(lambda: connects(bo, "127.0.0.1", PROBE_PORT)), (
        "bo's own service did not come up"
    )
    bo_ip, gateway = address_on(bo, TEST_NETWORK), gateway_of(TEST_NETWORK)
    for host, port in [
        (bo_ip, PROBE_PORT),
        (bo_ip, 8888),
        ("127.0.0.1", PROBE_PORT),
        (gateway, PROBE_PORT),
    ]:
        assert not connects(amy, host, port), f"amy reached {host}:{port}"
    # nor the other way round
    subprocess.run(
        ["docker", "exec", "-d", amy["Id"], "python3", "-m", "http.server", str(PROBE_PORT)],
        check=True,
    )
    assert _eventually(lambda: connects(amy, "127.0.0.1", PROBE_PORT))
    assert not connects(bo, address_on(amy, TEST_NETWORK), PROBE_PORT)
    assert not connects(bo, address_on(amy, TEST_NETWORK), 8888)
    # and both servers still work through the proxy
    for user in ("amy", "bo"):
        r = hub.session.get(hub.user_url(user) + "api/status")
        assert r.status_code == 200, (user, r.text)
    for container in (amy, bo):
        assert container["HostConfig"]["NetworkMode"] == TEST_NETWORK
        assert not container["HostConfig"]["PortBindings"]  # nothing published on the host


def _eventually(check, tries=20):
    import time

    for _ in range(tries):
        if check():
            return True
        time.sleep(0.25)
    return False


OPEN_NETWORK = "gpuspawn-test-open"


@pytest.fixture
def open_network():
    subprocess.run(["docker", "network", "rm", OPEN_NETWORK], capture_output=True)
    subprocess.run(
        ["docker", "network", "create", "--internal", OPEN_NETWORK], check=True, capture_output=True
    )
    yield OPEN_NETWORK
    # before make_hub's teardown: a network with containers attached cannot go
    remove_test_containers()
    subprocess.run(["docker", "network", "rm", OPEN_NETWORK], capture_output=True)


def test_a_network_where_containers_reach_each_other_is_refused(make_hub, open_network):
    hub = make_hub(n_gpus=1, extra_config=f"c.GPUDockerSpawner.network_name = {open_network!r}\n")
    hub.create_users("cy", "di")
    r = hub.spawn("cy", {"gpus": 1})
    assert r.status_code == 500, r.text
    assert r.json()["message"] == "The network for user servers is misconfigured; tell the admin."
    assert "lets containers reach each other" in hub.log_tail(100)
    assert gpuspawn_containers() == []
    # nothing held: once the admin fixes the network, the GPU is there
    subprocess.run(["docker", "network", "rm", open_network], check=True, capture_output=True)
    hub.spawn_ready("di", {"gpus": 1})
    options = json.loads(
        subprocess.run(
            ["docker", "network", "inspect", open_network],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )[0]["Options"]
    # re-created isolated by the spawner
    assert options["com.docker.network.bridge.enable_icc"] == "false"


HOST_ACCOUNT, HOST_UID = "gsacct", 61500


@pytest.fixture
def host_account():
    subprocess.run(["userdel", HOST_ACCOUNT], capture_output=True)
    subprocess.run(
        ["useradd", "--no-create-home", "--uid", str(HOST_UID), HOST_ACCOUNT], check=True
    )
    yield HOST_ACCOUNT
    subprocess.run(["userdel", HOST_ACCOUNT], capture_output=True)


def test_a_login_named_like_a_host_account_does_not_get_that_account(make_hub, host_account):
    # the default user_id_source ("auto") with a dummy login, as with shared-password or OAuth
    # logins
    hub = make_hub(n_gpus=1, extra_config='c.GPUDockerSpawner.user_id_source = "auto"\n')
    hub.create_users(host_account)
    hub.spawn_ready(host_account, {"gpus": 0})
    [container] = labelled(host_account)
    uid = int(container["Config"]["User"].split(":")[0])
    assert uid != HOST_UID and uid >= 200000, container["Config"]["User"]


def test_a_home_owned_by_another_uid_is_never_mounted(make_hub, host_account):
    hub = make_hub(n_gpus=1, extra_config='c.GPUDockerSpawner.user_id_source = "auto"\n')
    home = f"{hub.home_root}/{host_account}"
    # the account's home
    subprocess.run(["install", "-d", "-o", str(HOST_UID), "-m", "700", home], check=True)
    hub.create_users(host_account)
    r = hub.spawn(host_account, {"gpus": 1})
    assert r.status_code == 500, r.text
    message = r.json()["message"]
    assert f"belongs to uid {HOST_UID}" in message and "refusing to mount it" in message
    assert gpuspawn_containers() == []
    hub.create_users("other")
    hub.spawn_ready("other", {"gpus": 1})  # the refused spawn held no GPU


def test_the_network_keeps_its_subnet_and_networks_that_let_containers_talk_are_refused(
    docker_engine,
):
    import docker

    from jupyter_gpuspawn.network import NetworkError, ensure_network

    client = docker.APIClient(version="auto")
    name = "gpuspawn-test-subnet"
    subprocess.run(["docker", "network", "rm", name], capture_output=True)
    try:
        network = ensure_network(client, name, internal=True, subnet="10.213.250.0/24")
        assert (network.gateway, network.subnet, network.isolated, network.internal) == (
            "10.213.250.1",
            "10.213.250.0/24",
            True,
            True,
        )
        # used as is
        assert ensure_network(client, name, internal=True, subnet="10.213.250.0/24") == network
        with pytest.raises(
            NetworkError, match="exists with subnet 10.213.250.0/24, not the configured"
        ):
            ensure_network(client, name, internal=True, subnet="10.213.251.0/24")
        # an exam hub (internal) never runs on a network that routes off the host, nor the reverse
        with pytest.raises(NetworkError, match="exists internal .* network_internal is False"):
            ensure_network(client, name, internal=False, subnet="10.213.250.0/24")
        client.remove_network(name)
        ensure_network(client, name, subnet="10.213.250.0/24")
        with pytest.raises(NetworkError, match="exists routed off this host.*docker network rm"):
            ensure_network(client, name, internal=True, subnet="10.213.250.0/24")
    finally:
        client.remove_network(name)
    # Docker's own default bridge lets containers talk: refused unless the admin opts out
    with pytest.raises(NetworkError, match="'bridge' lets containers reach each other"):
        ensure_network(client, "bridge")
    assert ensure_network(client, "bridge", require_isolated=False).name == "bridge"
