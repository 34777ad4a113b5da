"""Spawn lifecycle: progress events, failure paths, kept containers, bridge networking."""

from __future__ import annotations

import re
import subprocess
import threading
import time

from .conftest import gpuspawn_containers, labelled


def test_progress_names_the_assigned_gpu(make_hub):
    hub = make_hub(
        n_gpus=2, extra_config='c.JupyterHub.tornado_settings = {"slow_spawn_timeout": 0}\n'
    )
    hub.create_users("pat")
    r = hub.spawn("pat", {"gpus": 1})
    assert r.status_code == 202
    messages = hub.progress_messages("pat")
    [container] = labelled("pat")
    uuid = container["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"]
    assigned = next(m for m in messages if m.startswith("Assigned GPU"))
    assert uuid[:12] in assigned and "[simulated]" in assigned and "A100" in assigned
    assert any("Creating container" in m for m in messages)
    assert any("Starting container" in m for m in messages)


def test_a_spawn_that_fails_after_allocation_releases_its_gpu(make_hub):
    # Docker refuses to start quinn's container (its entrypoint does not exist): the failure comes
    # after the GPU was reserved and the container created.
    hub = make_hub(
        n_gpus=1,
        extra_config="""
def crash_for_quinn(spawner):
    return {"entrypoint": ["/does/not/exist"]} if spawner.user.name == "quinn" else {}
c.DockerSpawner.extra_create_kwargs = crash_for_quinn
""",
    )
    hub.create_users("quinn", "ruth")
    r = hub.spawn("quinn", {"gpus": 1})
    assert r.status_code == 500, r.text
    message = r.json()["message"]
    assert (
        message.startswith("Your server could not be started (") and "/does/not/exist" in message
    ), message
    assert "Traceback" not in r.text
    assert labelled("quinn") == [] and hub.server("quinn") is None
    hub.spawn_ready("ruth", {"gpus": 1})  # the only GPU is free again


def test_a_server_that_exits_while_starting_is_reported_at_once_and_releases_its_gpu(make_hub):
    # the container starts, but its server dies before it ever answers (a broken image, a bad start
    # command)
    hub = make_hub(
        n_gpus=1,
        extra_config="""
def broken_for_sam(spawner):
    if spawner.user.name != "sam":
        return {}
    return {"command": ["sh", "-c", "echo cannot start >&2; exit 3"]}
c.DockerSpawner.extra_create_kwargs = broken_for_sam
""",
    )
    hub.create_users("sam", "tia")
    t0 = time.monotonic()
    r = hub.spawn("sam", {"gpus": 1})
    # noticed by the spawner's exit checks, long before the hub's http_timeout
    assert r.status_code >= 400 and time.monotonic() - t0 < 8, (r.status_code, r.text)
    assert "Your server stopped while starting (exit code 3)" in r.json()["message"], r.text
    assert "Traceback" not in r.text
    # the admin gets the server's last output, which Docker would have discarded with an
    # auto-removed container
    assert re.search(
        r"stopped while starting \(exit code 3\)\. Its last output:\n\s*cannot start",
        hub.log_tail(200),
    )
    assert labelled("sam") == [] and hub.server("sam") is None
    hub.spawn_ready("tia", {"gpus": 1})  # the only GPU is free again


def test_a_server_killed_for_memory_while_starting_says_so(make_hub):
    # mem_limit is below what jupyterhub-singleuser needs to start: the kernel OOM-kills it
    hub = make_hub(n_gpus=1, extra_config='c.GPUDockerSpawner.mem_limit = "24M"\n')
    hub.create_users("uma")
    r = hub.spawn("uma", {"gpus": 1})
    assert r.status_code == 500, r.text
    assert (
        "Your server stopped while starting (it ran out of memory). Its memory limit is 24 MiB."
        in r.json()["message"]
    ), r.text
    assert labelled("uma") == []


def test_kept_container_with_another_assignment_is_recreated(make_hub):
    hub = make_hub(n_gpus=2, extra_config="c.DockerSpawner.remove = False\n")
    hub.create_users("sam")
    hub.spawn_ready("sam", {"gpus": 1})
    [first] = labelled("sam")
    hub.stop_server("sam")
    assert [c["Id"] for c in labelled("sam")] == [first["Id"]]  # kept, stopped

    hub.spawn_ready("sam", {"gpus": 0})
    [second] = labelled("sam")
    assert second["Id"] != first["Id"]
    assert second["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"] == ""
    env = dict(e.split("=", 1) for e in second["Config"]["Env"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"

    hub.stop_server("sam")
    hub.spawn_ready("sam", {"gpus": 0})
    [third] = labelled("sam")
    assert third["Id"] == second["Id"]  # same (empty) assignment: the kept container is reused


def docker_bridge_gateway() -> str:
    """The host's address on Docker's default bridge (docker0), where bridged containers reach the
    hub."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "docker0"], check=True, capture_output=True, text=True
    )
    return out.stdout.split(" inet ", 1)[1].split("/", 1)[0]


def test_bridge_network_works(make_hub):
    gateway = docker_bridge_gateway()
    # The container reaches the hub API on the bridge's gateway address; the hub reaches the server
    # on the loopback port Docker publishes.
    hub = make_hub(
        n_gpus=1,
        extra_config=f"""
c.GPUDockerSpawner.network_name = "bridge"
# Docker's default bridge lets containers talk: an opt-in
c.GPUDockerSpawner.require_isolated_network = False
c.JupyterHub.hub_bind_url = "http://{gateway}:" + str(c.JupyterHub.hub_bind_url).rsplit(":", 1)[1]
c.JupyterHub.hub_connect_url = c.JupyterHub.hub_bind_url
""",
    )
    hub.create_users("tess")
    hub.spawn_ready("tess", {"gpus": 1})
    [container] = labelled("tess")
    assert container["HostConfig"]["NetworkMode"] == "bridge"
    assert container["HostConfig"]["DeviceRequests"][0]["DeviceIDs"] == [hub.gpus[0]["uuid"]]
    r = hub.session.get(hub.user_url("tess") + "api/status")
    assert r.status_code == 200, r.text
    assert len(gpuspawn_containers()) == 1


def test_concurrent_named_servers_respect_the_per_user_cap(make_hub):
    hub = make_hub(n_gpus=4, extra_config="c.GPUDockerSpawner.max_gpus_per_user = 2\n")
    hub.create_users("uma")
    results = {}

    def spawn(name):
        results[name] = hub.spawn("uma", {"gpus": 1}, server=name)

    threads = [threading.Thread(target=spawn, args=(n,)) for n in ("a", "b", "c")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    ok = [n for n, r in results.items() if r.status_code in (201, 202)]
    refused = [r for r in results.values() if r.status_code == 409]
    assert len(ok) == 2 and len(refused) == 1, {
        n: (r.status_code, r.text[:200]) for n, r in results.items()
    }
    assert "limit is 2 per user" in refused[0].json()["message"]
