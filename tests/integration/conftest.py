"""Integration fixtures: a real Docker engine and a real JupyterHub. In CI a missing engine is a
failure."""

from __future__ import annotations

import os
import subprocess

import pytest

from .hub import CONTAINER_PREFIX, TEST_IMAGE, Hub, simulated_gpus

pytestmark = pytest.mark.integration


def _docker(*args, check=True) -> str:
    return subprocess.run(["docker", *args], check=check, capture_output=True, text=True).stdout


@pytest.fixture(scope="session")
def docker_engine():
    try:
        _docker("info")
        _docker("image", "inspect", TEST_IMAGE)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        # Never a silent skip: CI must have run scripts/setup, which starts dockerd and builds the
        # image.
        pytest.fail(
            f"Docker engine or {TEST_IMAGE} missing ({e}); run scripts/setup first", pytrace=False
        )
    return True


def gpuspawn_containers(all_states=True) -> list:
    out = _docker(
        "ps",
        "-a" if all_states else "",
        "--filter",
        f"name=^{CONTAINER_PREFIX}-",
        "--format",
        "{{.ID}}",
    )
    return out.split()


def remove_test_containers():
    ids = gpuspawn_containers()
    if ids:
        _docker("rm", "-f", *ids, check=False)


def inspect(container_id) -> dict:
    import json

    return json.loads(_docker("inspect", container_id))[0]


def labelled(user, server="") -> list:
    """Inspect data of this test run's containers for user/server."""
    found = []
    for cid in gpuspawn_containers():
        data = inspect(cid)
        labels = data["Config"]["Labels"] or {}
        if (
            labels.get("org.jupyter.gpuspawn.user") == user
            and labels.get("org.jupyter.gpuspawn.server") == server
        ):
            found.append(data)
    return found


@pytest.fixture
def make_hub(docker_engine, tmp_path):
    hubs = []
    remove_test_containers()

    def make(n_gpus=4, extra_config="", gpus=None, **kwargs):
        workdir = tmp_path / f"hub{len(hubs)}"
        workdir.mkdir()
        os.chmod(tmp_path, 0o755)
        hub = Hub(
            workdir, gpus if gpus is not None else simulated_gpus(n_gpus), extra_config, **kwargs
        )
        hubs.append(hub)
        return hub.start()

    yield make
    for hub in hubs:
        hub.stop()
    remove_test_containers()
