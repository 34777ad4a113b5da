"""Allocations survive a hub crash; a burst never double-books a GPU."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor

from .conftest import gpuspawn_containers, inspect, labelled


def held_uuids(user, server=""):
    [container] = labelled(user, server)
    return set(filter(None, container["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"].split(",")))


def test_hub_kill9_restart_rebuilds_allocations_from_labels(make_hub):
    hub = make_hub(n_gpus=4)
    hub.create_users("alice", "bob", "carol", "dave", "erin", "frank")
    for user in ("alice", "bob", "carol"):
        hub.spawn_ready(user, {"gpus": 1})
    alice, bob = held_uuids("alice"), held_uuids("bob")
    [carol_container] = labelled("carol")

    hub.kill9()
    # while the hub is down, an admin deletes carol's container by hand: her GPU must come back
    subprocess.run(["docker", "rm", "-f", carol_container["Id"]], check=True, capture_output=True)
    hub.start()

    # alice and bob still run and keep their GPUs
    assert hub.wait_ready("alice") and hub.wait_ready("bob")
    hub.spawn_ready("dave", {"gpus": 1})
    hub.spawn_ready("erin", {"gpus": 1})
    dave, erin = held_uuids("dave"), held_uuids("erin")
    assert not (dave | erin) & (alice | bob), (
        "a restarted hub handed out a GPU a running container holds"
    )
    assert dave != erin
    assert alice | bob | dave | erin == {g["uuid"] for g in hub.gpus}

    # all four are now held: the next request is refused clearly
    r = hub.spawn("frank", {"gpus": 1})
    assert r.status_code == 409 and "All 4 GPUs are in use" in r.json()["message"]
    # carol's record was cleaned up by the restarted hub (her container is gone)
    assert hub.server("carol") is None


def test_ten_concurrent_spawns_on_four_gpus(make_hub):
    hub = make_hub(n_gpus=4)
    users = [f"burst{i}" for i in range(10)]
    hub.create_users(*users)
    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(lambda u: hub.spawn(u, {"gpus": 1}), users))
    started = [u for u, r in zip(users, responses, strict=False) if r.status_code in (201, 202)]
    refused = [r for r in responses if r.status_code not in (201, 202)]
    assert len(started) == 4, [r.status_code for r in responses]
    assert len(refused) == 6
    for r in refused:
        assert r.status_code == 409 and "All 4 GPUs are in use" in r.json()["message"], r.text
    for user in started:
        hub.wait_ready(user)

    handed_out = [
        uuid
        for cid in gpuspawn_containers()
        for uuid in inspect(cid)["Config"]["Labels"]["org.jupyter.gpuspawn.gpus"].split(",")
    ]
    assert len(handed_out) == 4 and len(set(handed_out)) == 4
    assert len(gpuspawn_containers()) == 4  # refused spawns left no container
